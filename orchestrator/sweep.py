"""The whole sweep: `python -m orchestrator.sweep pet` on the command line, `run_sweep` from Python.

    from orchestrator.sweep import load_config, run_sweep
    result = run_sweep(load_config("pet", "laptop"), data="my-pet-series/")
    print(result.report, result.run_id)

Ingests the data (the phantom cohort when none is given), starts or joins Ray, opens the sweep's
parent MLflow run, runs the stages in order (gan search, synthesis + audit, classifier grid),
writes the report and ends with where the results are. The command line only parses its
arguments into `run_sweep` (or `resume_sweep`).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from orchestrator.config import PRESETS, Config, ConfigError, load_config
from orchestrator.data.ingest import IngestError, format_summary, ingest
from orchestrator.data.labels import LabelError
from orchestrator.data.modalities import MODALITIES
from orchestrator.data.phantom import recorded_ceiling, write_phantom_cohort
from orchestrator.data.split import SplitError
from orchestrator.mlflow_writes import unreachable_reason
from orchestrator.stages import STAGES
from orchestrator.storage import SweepRecord, absolute, latest_sweep_id, new_sweep_id
from orchestrator.tracking import default_tracking_uri



def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.sweep",
        description="GAN augmentation sweep: stage 1 searches WGAN-GP GANs with Ray Tune + Optuna (each trial a "
                    "Ray Train run) and ranks checkpoints by validation SSIM or FID; stage 2 samples synthetic sets "
                    "from the best and audits them for memorisation; stage 3 trains classifiers on real, classic-"
                    "augmented and real + synthetic data and scores them on real test patients. Everything is "
                    "recorded in MLflow and summed up in a report.")
    parser.add_argument("modality", choices=list(MODALITIES), help="which images to use")
    parser.add_argument("--data", type=Path, help="folder of DICOM series, volumes or slices (default: the built-in "
                        "phantom cohort, made once)")
    parser.add_argument("--nodules", type=Path, help="nodule table CSV, or a folder of LIDC-IDRI reader XML: crops "
                        "around each nodule (default DATA/nodules.csv when present, else LIDC-IDRI XML under DATA)")
    parser.add_argument("--labels", type=Path, help="label CSV for whole-slice input, without a nodule table "
                        "(default DATA/labels.csv or benign/ malignant/ folders)")
    parser.add_argument("--preset", choices=["auto", *PRESETS], default="auto",
                        help="auto (default): full when the Ray cluster has GPUs, else laptop; full: the paper's "
                             "scale (256 px, hundreds of epochs), for GPUs; laptop: the method at CPU scale "
                             "(32 px, scarce training data, all controls), minutes on 2 cores; smoke: tiny, for tests")
    parser.add_argument("--config", type=Path, help="a YAML config laid over the preset")
    parser.add_argument("--stages", default=",".join(STAGES),
                        help="the first N stages, comma-separated: gan | gan,synth | gan,synth,classify (default: all)")
    parser.add_argument("--address", help="Ray cluster to join ('auto' for the running one); default: start a local Ray")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///<runs>/mlflow.db)")
    parser.add_argument("--storage", default="runs/tune",
                        help="Tune / Train storage: a folder or s3://bucket/prefix (default runs/tune)")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"),
                        help="local outputs: MLflow store and artifacts, tables (default runs/)")
    parser.add_argument("--resume", action="store_true", help="continue the latest interrupted sweep of this modality")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config value, e.g. --set gan.epochs=3 (repeatable)")
    return parser.parse_args(argv)


def resolve_preset(preset: str, address: str | None) -> tuple[str, str]:
    """`auto` -> `full` when the Ray cluster has GPUs, else `laptop`; with the reason, for the first lines."""
    if preset != "auto":
        return preset, "asked for with --preset"
    if address:  # a cluster to join: ask it (the sweep joins it anyway)
        import ray

        start_ray(address)
        gpus = ray.cluster_resources().get("GPU", 0)
    else:  # a local Ray sees this machine's GPUs
        import torch

        gpus = torch.cuda.device_count()
    if gpus:
        return "full", f"the Ray cluster has {gpus:g} GPU(s)"
    return "laptop", "the Ray cluster has no GPU (--preset full runs the paper's scale anyway)"


def resumed_record(modality: str, storage: str) -> SweepRecord:
    """The latest sweep of `modality` under `storage`, with the config and data it started with."""
    sweep_id = latest_sweep_id(storage, modality)
    if sweep_id is None:
        raise SweepError(f"--resume: no {modality} sweep under {storage}")
    try:
        return SweepRecord.read(f"{storage}/{sweep_id}")
    except FileNotFoundError as err:
        raise SweepError(f"--resume: {err}") from err


# The parent run's params: the settings users filter and compare sweeps by (the rest is config.yaml)
PARENT_PARAMS = ("data.modality", "data.size", "data.train_fraction", "gan.arch", "gan.epochs", "gan.latent_dim",
                 "search.metric", "search.num_samples", "search.gpus_per_worker", "classify.classifiers",
                 "classify.ratios", "classify.seeds", "classify.epochs")


def filtered_params(cfg: Config) -> dict:
    """PARENT_PARAMS of `cfg`, as dotted keys."""
    values = cfg.to_dict()
    return {key: values[key.split(".")[0]][key.split(".")[1]] for key in PARENT_PARAMS}


def phantom_folder_name(cfg: Config) -> str:
    """The phantom cohort's folder name: the settings it is made from."""
    return f"{cfg.data.modality}-n{cfg.data.phantom_patients}-series{cfg.data.phantom_slices}"


def phantom_folder(cfg: Config) -> Path:
    """The phantom cohort for this config, written once under the cache folder."""
    d = cfg.data
    folder = (Path(d.cache_dir).expanduser() / "phantom" / phantom_folder_name(cfg)).resolve()
    if not (folder / "nodules.csv").exists():  # written last: its presence means the cohort is complete
        print(f"making the phantom cohort in {folder} (once)")
        write_phantom_cohort(folder, patients=d.phantom_patients, modality=d.modality, slices=d.phantom_slices)
    return folder


class SweepError(Exception):
    """Why a sweep cannot start (said before anything is trained)."""


@dataclass(frozen=True)
class SweepResult:
    sweep_id: str
    ranked: bool  # stage 1 ranked at least one checkpoint (else the later stages had nothing to use)
    report: Path  # report.html (report.md beside it)
    run_id: str  # the sweep's parent MLflow run
    tracking_uri: str
    sweep_path: str  # checkpoints and Tune state: a folder or an s3:// URI
    stage3: pd.DataFrame | None  # classifier x arm: figures, Δ against real only, intervals, Holm p (None without)


def run_sweep(config: Config, data: str | Path | None = None, *, labels: str | Path | None = None,
              nodules: str | Path | None = None, tracking_uri: str | None = None, storage: str = "runs/tune",
              runs_dir: str | Path = "runs", address: str | None = None, stages: Sequence[str] = STAGES,
              preset: str = "") -> SweepResult:
    """A new sweep of `config` on the folder `data` (the phantom cohort when None). MLflow goes to
    `tracking_uri` (default: a SQLite store under `runs_dir`), checkpoints and Tune state to `storage` (a
    folder or s3://bucket/prefix); `address` joins a Ray cluster ('auto': the running one), else a local
    Ray starts. `stages`: the first stages in order. Raises SweepError (or ConfigError) before any training
    when the sweep cannot start."""
    clock = Stopwatch()
    stages = checked_stages(stages)
    runs_dir = Path(runs_dir).resolve()
    data_dir = Path(data).resolve() if data else phantom_folder(config)
    plan = SweepRecord(new_sweep_id(config.data.modality), config, data_dir, _resolved(labels), _resolved(nodules),
                       preset=preset)
    return execute(plan, tracking_uri or default_tracking_uri(runs_dir), absolute(storage), runs_dir, address, stages,
                   resume=False, clock=clock)


def resume_sweep(modality: str, *, storage: str = "runs/tune", tracking_uri: str | None = None,
                 runs_dir: str | Path = "runs", address: str | None = None,
                 stages: Sequence[str] = STAGES) -> SweepResult:
    """The latest `modality` sweep under `storage`, continued with the config and data it started with:
    finished trials are not run again, an interrupted one goes on from its last checkpoint."""
    clock = Stopwatch()
    storage = absolute(storage)
    plan = resumed_record(modality, storage)
    return execute(plan, tracking_uri or plan.tracking_uri, storage, Path(runs_dir).resolve(), address,
                   checked_stages(stages), resume=True, clock=clock)


def checked_stages(stages: Sequence[str]) -> list[str]:
    stages = [s.strip() for s in stages if s.strip()]
    if not stages or stages != list(STAGES[:len(stages)]):
        raise SweepError(f"the stages must be the first ones in order (gan | gan,synth | gan,synth,classify), got "
                         f"{','.join(stages)!r}; an interrupted sweep continues with --resume")
    return stages


def _resolved(path: str | Path | None) -> Path | None:
    return Path(path).resolve() if path else None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.resume:
            if args.config or args.overrides or args.data or args.labels or args.nodules:
                print("--resume: using the config and data the sweep started with; --config / --set / --data / "
                      "--labels / --nodules are ignored", file=sys.stderr)
            result = resume_sweep(args.modality, storage=args.storage, tracking_uri=args.tracking_uri,
                                  runs_dir=args.runs_dir, address=args.address, stages=args.stages.split(","))
        else:
            preset, why = resolve_preset(args.preset, args.address)
            print(f"preset: {preset} ({why})")
            result = run_sweep(load_config(args.modality, preset, args.config, args.overrides), args.data,
                               labels=args.labels, nodules=args.nodules, tracking_uri=args.tracking_uri,
                               storage=args.storage, runs_dir=args.runs_dir, address=args.address,
                               stages=args.stages.split(","), preset=preset)
    except (ConfigError, SweepError) as err:
        print(f"sweep failed: {err}", file=sys.stderr)
        return 2
    return 0 if result.ranked else 1


def resolve_resources(cfg: Config) -> Config:
    """Every stage's GPUs, decided once from the config and the cluster: what is unset (None) follows
    whether the cluster has a whole GPU. No stage asks the cluster itself; sweep.json records these."""
    import ray

    has_gpu = ray.cluster_resources().get("GPU", 0) >= 1

    def unset_or(value: float | None, with_gpu: float) -> float:
        return value if value is not None else (with_gpu if has_gpu else 0.0)

    return dataclasses.replace(
        cfg,
        search=dataclasses.replace(cfg.search, gpus_per_worker=unset_or(cfg.search.gpus_per_worker, 1.0)),
        synth=dataclasses.replace(cfg.synth, gpus_per_task=unset_or(cfg.synth.gpus_per_task, 1.0)),
        classify=dataclasses.replace(cfg.classify, gpus_per_trial=unset_or(cfg.classify.gpus_per_trial, 0.25)))


def describe_resources(cfg: Config) -> str:
    s, c = cfg.search, cfg.classify
    return (f"resources: GAN trial {s.workers_per_trial} Train worker(s) x ({s.cpus_per_worker:g} CPU, "
            f"{s.gpus_per_worker:g} GPU); sampling task {cfg.synth.gpus_per_task:g} GPU; classifier trial "
            f"{c.cpus_per_trial:g} CPU, {c.gpus_per_trial:g} GPU")


def start_ray(address: str | None) -> None:
    """Join `address`, or start a local Ray with its dashboard on loopback.

    The dashboard is not decoration: it serves the state API through which Ray Train's
    placement-group cleaner sees that a trial Tune stopped is gone. Without it the stopped
    trial's workers keep their CPUs and later trials wait for them until they time out.
    """
    import ray

    if ray.is_initialized():  # joined already, to see whether the cluster has GPUs
        return
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(include_dashboard=True, dashboard_host="127.0.0.1", log_to_driver=False)


@dataclass
class Stopwatch:
    """Wall seconds per step of a sweep: where the minutes go, printed at the end and on the parent run."""
    laps: dict[str, float] = field(default_factory=dict)
    last: float = field(default_factory=time.perf_counter)

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.laps[step] = self.laps.get(step, 0.0) + now - self.last
        self.last = now

    def summary(self) -> str:
        return ", ".join(f"{step} {seconds:.0f} s" for step, seconds in self.laps.items())


def seeds_tag(cfg: Config) -> str:
    """Every seed of the sweep, one tag: `data=0 gan=0 search=0 synth=0 classify=[0, 1, 2] yolov8=[0, ..., 4]`
    (the last for each classifier with seeds of its own)."""
    own = "".join(f" {name}={cfg.classify.seeds_of(name)}" for name, settings in cfg.classify.per_classifier.items()
                  if "seeds" in settings)
    return (f"data={cfg.data.seed} gan={cfg.gan.seed} search={cfg.search.seed} synth={cfg.synth.seed} "
            f"classify={cfg.classify.seeds}{own}")


def fid_reference(cfg: Config, arrays: dict, tracker) -> tuple[dict, dict]:
    """What the trials read (`arrays` with the validation split's FID features, extracted once here) and the
    real-vs-real FID floor, logged on the parent run and printed. When the features cannot be extracted
    (e.g. a gan.fid_weights file that does not exist) the arrays as they are and {}, with the reason: the
    trials then fail with the same reason."""
    from trainables.gan.evaluate import fid_floor, with_validation_features

    try:
        trial_data = with_validation_features(cfg.gan_settings(), arrays)
        floor = fid_floor(cfg.gan_settings(), trial_data)
    except (OSError, ValueError) as err:
        print(f"FID floor not computed: {err}", file=sys.stderr)
        tracker.log_sweep_figures({}, tags={"fid_floor": f"not computed: {err}"[:4000]})
        return arrays, {}
    tracker.log_sweep_figures({k: v for k, v in floor.items() if k != "fid_weights_sha256"},
                              tags={"fid_floor_weights_sha256": floor["fid_weights_sha256"]})
    print(f"FID floor (real vs real, {floor['floor_images']} training-pool slices of {floor['floor_patients']} "
          f"patients against the validation split): " + ", ".join(
              f"{k} {v:.4g}" for k, v in floor.items() if k.endswith("_floor")))
    return trial_data, floor


def execute(plan: SweepRecord, tracking_uri: str, storage: str, runs_dir: Path, address: str | None,
            stages: list[str], resume: bool, clock: Stopwatch) -> SweepResult:
    """Ingest, check that the data and the tracking server are as they must be, then run the stages."""
    try:
        cohort = ingest(plan.data_dir, plan.config.data, labels_file=plan.labels, nodules_file=plan.nodules)
    except (IngestError, LabelError, SplitError, FileNotFoundError) as err:
        raise SweepError(str(err)) from err
    if plan.fingerprint and plan.fingerprint != cohort.fingerprint:
        raise SweepError(f"the data in {plan.data_dir} changed since sweep {plan.sweep_id} started (fingerprint "
                         f"{cohort.fingerprint}, recorded {plan.fingerprint}); start a new sweep")
    plan.fingerprint = cohort.fingerprint
    reason = unreachable_reason(tracking_uri)
    if reason:
        raise SweepError(f"the MLflow tracking server {tracking_uri} does not answer ({reason}). Start it (README: "
                         "cluster section) or pass another --tracking-uri; nothing was trained")
    print(format_summary(cohort))
    clock.lap("ingest")  # the phantom, when it is made, included
    return run_stages(plan, cohort, tracking_uri, storage, runs_dir, address, stages, resume, clock)


def run_stages(plan: SweepRecord, cohort, tracking_uri: str, storage: str, runs_dir: Path, address: str | None,
               stages: list[str], resume: bool, clock: Stopwatch) -> SweepResult:
    import ray

    from orchestrator.ranking import best_per_architecture
    from orchestrator.report import SweepOutcome, utility_table, verdict, write_report
    from orchestrator.stages import StageContext, classify, gan, synth
    from orchestrator.tracking import SweepTracker, cohort_dataset, runs_page

    from orchestrator.stages.classify import fit_ladder, test_split_note

    start_ray(address)
    plan.config = resolve_resources(plan.config)  # once; a resumed sweep's record holds them already
    print(describe_resources(plan.config))
    arrays = cohort.as_arrays()
    plan.config, ladder_note = fit_ladder(plan.config, arrays)  # before any training, with the numbers
    for note in (ladder_note, test_split_note(plan.config, arrays)):
        if note:
            print(note, file=sys.stderr)
    cfg, sweep_id = plan.config, plan.sweep_id
    sweep_path = f"{storage}/{sweep_id}"
    out_dir = runs_dir / sweep_id
    plan.tracking_uri = tracking_uri
    plan.write(sweep_path)
    tracker = SweepTracker(tracking_uri, f"medgan-sweep-{cfg.data.modality}", runs_dir / "mlartifacts",
                           spool=out_dir / "mlflow_spool")
    tracker.start_sweep(sweep_id, params=filtered_params(cfg), tags={
        "dataset_fingerprint": cohort.fingerprint, "preset": plan.preset, "sweep_path": sweep_path,
        "stages": ",".join(stages), "seeds": seeds_tag(cfg)})
    tracker.log_sweep_dict(cfg.to_dict(), "config.yaml")  # the whole config, as a file a user can reuse
    tracker.log_sweep_dict(cfg.search.space, "search_space.json")
    tracker.log_dataset(cohort_dataset(arrays, cohort.fingerprint, cfg.data.modality))
    clock.lap("setup")  # Ray start, resources, MLflow parent run
    if cohort.meta.get("crops"):  # where every crop came from; pseudonyms and numbers only
        tracker.log_sweep_dict(cohort.meta["crops"], "data/crops_summary.json")
        tracker.log_sweep_file(cohort.path / "crops.json", "data")

    searched = sets = measured = None  # what each stage gave: its result is the next stage's input
    try:
        trial_data, floor = fid_reference(cfg, arrays, tracker)
        data_ref = ray.put(trial_data)  # once; every trial's workers read this copy
        clock.lap("fid_floor")
        context = StageContext(cfg, arrays, data_ref, floor, tracker, storage, sweep_path, out_dir, resume)
        searched = gan.run(context)
        clock.lap("gan")
        if searched and "synth" in stages:  # a stage runs only on what the one before gave
            sets = synth.run(context, searched)
            clock.lap("synth")
        if sets and "classify" in stages:
            measured = classify.run(context, sets)
            clock.lap("classify")
        ceiling = recorded_ceiling(plan.data_dir, cfg.data.modality)
        if ceiling is not None:
            tracker.log_sweep_figures({"ideal_observer_auc": ceiling.auc})
        outcome = SweepOutcome.of(sweep_id, searched, sets, measured, floor, TEST_NOTE, caveats(cfg, arrays),
                                  evaluation_note(cfg, arrays), ceiling)
        for path in write_report(out_dir, outcome):
            tracker.log_sweep_file(path, "report")
        archs = list(best_per_architecture(searched.table).arch) if searched else []
        questions = ui_questions("", tracker.experiment_id, tracker.parent_id, cfg, archs, measured is not None)
        tracker.describe_sweep("\n".join(["**Verdict**", "", *(f"- {line}" for line in verdict(outcome)), "",
                                           f"The report: `{out_dir / 'report.html'}`, and under `report/` here.",
                                           "", "**In this UI**: " + " · ".join(f"[{q}]({link})"
                                                                              for q, link in questions)]))
        for s in outcome.sets:  # the grids the Markdown report shows, at the same relative paths
            for grid in sorted(s.folder.glob("*.png")):
                tracker.log_sweep_file(grid, f"report/synthetic/{s.name}")
        clock.lap("report")
        tracker.log_sweep_figures({f"wall_s.{step}": seconds for step, seconds in clock.laps.items()})
        unlogged = tracker.end_sweep("FINISHED")
    except BaseException:
        tracker.end_sweep("KILLED")
        raise
    finally:
        ray.shutdown()

    print(f"sweep {sweep_id} done in {sum(clock.laps.values()):.0f} s ({clock.summary()})")
    print(f"report:     {out_dir / 'report.html'} (open in a browser; report.md beside it)")
    if tracking_uri.startswith("http"):
        where = runs_page(tracking_uri, tracker.experiment_id)
    else:
        where = (f"`mlflow ui --backend-store-uri {tracking_uri}`, then "
                 + runs_page("http://127.0.0.1:5000", tracker.experiment_id))
    print(f"MLflow:     {tracking_uri}, experiment medgan-sweep-{cfg.data.modality}, run {sweep_id}; the runs: {where}")
    server = tracking_uri if tracking_uri.startswith("http") else "http://127.0.0.1:5000"
    for question, link in ui_questions(server, tracker.experiment_id, tracker.parent_id, cfg, archs,
                                       measured is not None):
        print(f"  {question}: {link}")
    print(f"checkpoints and Tune state: {sweep_path} (continue an interrupted sweep with --resume)")
    if unlogged:
        print(f"MLflow: {unlogged} write(s) could not be made ({tracking_uri} unreachable); they are kept in "
              f"{tracker.writes.spool}: make them with `python -m orchestrator.mlflow_writes {tracker.writes.spool} "
              f"--tracking-uri {tracking_uri}` once the server is back", file=sys.stderr)
    summary = measured.summary if measured is not None else None
    return SweepResult(sweep_id, bool(searched), out_dir / "report.html", tracker.parent_id,
                       tracking_uri, sweep_path, utility_table(summary) if summary is not None else None)


def ui_questions(server: str, experiment_id: str, parent_id: str, cfg: Config, archs: Sequence[str],
                 classified: bool) -> list[tuple[str, str]]:
    """The MLflow UI's answers to what a user asks of a sweep, as (question, link) pairs: its GAN trials best
    first, its arms per classifier by their difference to real only (when stage 3 ran), and the champion of
    each architecture in `archs`."""
    from orchestrator.ranking import metric_mode
    from orchestrator.tracking import PARENT_TAG, STAGE_TAG, registered_model_page, runs_page

    def children(stage: str) -> str:
        return f"tags.`{PARENT_TAG}` = '{parent_id}' and tags.`{STAGE_TAG}` = '{stage}'"

    metric = cfg.search.metric
    links = [(f"GAN trials, best {metric} first",
              runs_page(server, experiment_id, children("gan"), f"metrics.`{metric}`", metric_mode(metric) == "min"))]
    if classified:
        links.append(("each arm per classifier, largest Δ AUC first",
                      runs_page(server, experiment_id, children("summary"), "metrics.`delta_roc_auc`", False)))
    return links + [(f"the {arch} champion", registered_model_page(server, f"medgan-{cfg.data.modality}-{arch}"))
                    for arch in archs]


TEST_NOTE = ("Every figure below is on the real test split, which no model or checkpoint selection saw; "
             "thresholds were fixed on validation. Synthetic images enter training only.")


def split_size(arrays: dict, code: int) -> str:
    """'20 patients, 40 slices': the size of one split of the cohort."""
    where = np.asarray(arrays["split"]) == code
    return f"{len(np.unique(np.asarray(arrays['patients'])[where]))} patients, {int(where.sum())} slices"


def evaluation_note(cfg: Config, arrays: dict) -> str:
    """What each stage-1 validation figure rests on."""
    from trainables.cohort import VAL

    return (f"{cfg.gan.eval_images} generated images against the validation split ({split_size(arrays, VAL)}) "
            f"at {cfg.data.size} px")


def caveats(cfg: Config, arrays: dict) -> list[str]:
    """What the findings rest on that a reader could miss: scarce data by design, coarse FID, short schedules."""
    from orchestrator.stages.classify import ladder_note, recipe_note
    from trainables.cohort import TRAIN

    lines = [f"FID and SSIM come from {evaluation_note(cfg, arrays)}: compare an FID with its floor, not with "
             "published figures."]
    if cfg.data.train_fraction < 1:
        lines.append(f"Scarce data by design (data.train_fraction {cfg.data.train_fraction:g}): every GAN and "
                     f"classifier trains on {split_size(arrays, TRAIN)}; the other training patients are held "
                     "out of all training and feed only the oracle arm.")
    notes = [ladder_note(cfg, arrays), recipe_note(cfg.classify).strip()]
    return lines + [note for note in notes if note]


if __name__ == "__main__":
    raise SystemExit(main())
