"""`python -m orchestrator.sweep pet`: the whole sweep, one command.

Builds the Config, ingests the data (the phantom cohort when no --data is given), starts or
joins Ray, opens the sweep's parent MLflow run, runs the stages in order (gan search,
synthesis + audit, classifier grid), writes the report and ends with where the results are.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from orchestrator.config import PRESETS, Config, ConfigError, config_from_dict, load_config
from orchestrator.data.ingest import IngestError, format_summary, ingest
from orchestrator.data.labels import LabelError
from orchestrator.data.modalities import MODALITIES
from orchestrator.data.phantom import write_phantom_cohort
from orchestrator.data.split import SplitError
from orchestrator.mlflow_writes import unreachable_reason
from orchestrator.stages import STAGES
from orchestrator.storage import absolute, latest_sweep_id, new_sweep_id, read_record, write_record
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
    parser.add_argument("--nodules", type=Path, help="nodule table CSV: crops around each nodule (default "
                        "DATA/nodules.csv when present)")
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


@dataclass
class SweepPlan:
    """What a sweep runs on: its id, config and data; recorded in storage so --resume gets the same."""
    sweep_id: str
    config: Config
    data_dir: Path
    labels: Path | None
    nodules: Path | None = None
    fingerprint: str = ""  # of the ingested cohort; a resumed sweep checks it
    preset: str = ""  # the resolved preset (never "auto")

    def record(self, tracking_uri: str) -> dict:
        return {"sweep_id": self.sweep_id, "preset": self.preset, "config": self.config.to_dict(),
                "data_dir": str(self.data_dir),
                "labels": str(self.labels) if self.labels else None,
                "nodules": str(self.nodules) if self.nodules else None, "dataset_fingerprint": self.fingerprint,
                "tracking_uri": tracking_uri}


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


def new_plan(args: argparse.Namespace) -> SweepPlan:
    cfg = load_config(args.modality, args.preset, args.config, args.overrides)
    data_dir = args.data.resolve() if args.data else phantom_folder(cfg)
    return SweepPlan(new_sweep_id(cfg.data.modality), cfg, data_dir, args.labels.resolve() if args.labels else None,
                     args.nodules.resolve() if args.nodules else None, preset=args.preset)


def resumed_plan(args: argparse.Namespace, storage: str) -> tuple[SweepPlan, dict]:
    """The latest sweep of this modality under `storage`, with the config and data it started with."""
    sweep_id = latest_sweep_id(storage, args.modality)
    if sweep_id is None:
        raise FileNotFoundError(f"--resume: no {args.modality} sweep under {storage}")
    record = read_record(f"{storage}/{sweep_id}")
    if args.config or args.overrides or args.data or args.labels or args.nodules:
        print("--resume: using the config and data the sweep started with; --config / --set / --data / "
              "--labels / --nodules are ignored", file=sys.stderr)
    cfg = config_from_dict(record["config"], source=f"{storage}/{sweep_id}/sweep.json")
    labels, nodules = (Path(record[k]) if record.get(k) else None for k in ("labels", "nodules"))
    return SweepPlan(sweep_id, cfg, Path(record["data_dir"]), labels, nodules, record["dataset_fingerprint"],
                     record.get("preset", "")), record


def phantom_folder(cfg: Config) -> Path:
    """The phantom cohort for this config, written once under the cache folder."""
    d = cfg.data
    folder = (Path(d.cache_dir).expanduser() / "phantom" /
              f"{d.modality}-n{d.phantom_patients}-series{d.phantom_slices}").resolve()
    if not (folder / "nodules.csv").exists():  # written last: its presence means the cohort is complete
        print(f"making the phantom cohort in {folder} (once)")
        write_phantom_cohort(folder, patients=d.phantom_patients, modality=d.modality, slices=d.phantom_slices)
    return folder


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    if not stages or stages != list(STAGES[:len(stages)]):
        print(f"sweep: --stages must be the first stages in order (gan | gan,synth | gan,synth,classify), got "
              f"{args.stages!r}; an interrupted sweep continues with --resume", file=sys.stderr)
        return 2
    storage = absolute(args.storage)
    clock = Stopwatch()
    try:
        if args.resume:
            plan, record = resumed_plan(args, storage)
            tracking_uri = args.tracking_uri or record["tracking_uri"]
        else:
            args.preset, why = resolve_preset(args.preset, args.address)
            print(f"preset: {args.preset} ({why})")
            plan = new_plan(args)
            tracking_uri = args.tracking_uri or default_tracking_uri(args.runs_dir.resolve())
        cohort = ingest(plan.data_dir, plan.config.data, labels_file=plan.labels, nodules_file=plan.nodules)
    except (ConfigError, IngestError, LabelError, SplitError, FileNotFoundError) as err:
        print(f"sweep failed: {err}", file=sys.stderr)
        return 2
    if plan.fingerprint and plan.fingerprint != cohort.fingerprint:
        print(f"sweep failed: the data in {plan.data_dir} changed since sweep {plan.sweep_id} started "
              f"(fingerprint {cohort.fingerprint}, recorded {plan.fingerprint}); start a new sweep", file=sys.stderr)
        return 2
    plan.fingerprint = cohort.fingerprint
    reason = unreachable_reason(tracking_uri)
    if reason:
        print(f"sweep failed: the MLflow tracking server {tracking_uri} does not answer ({reason}). Start it "
              f"(README: cluster section) or pass another --tracking-uri; nothing was trained", file=sys.stderr)
        return 2
    print(format_summary(cohort))
    clock.lap("ingest")  # the phantom, when it is made, included
    return run_sweep(plan, cohort, args, storage, tracking_uri, stages, clock)


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


def log_fid_floor(cfg: Config, arrays: dict, tracker) -> dict:
    """The real-vs-real FID floor on the parent run (and printed); {} with the reason when it cannot be
    computed (e.g. a gan.fid_weights file that does not exist: the trials then fail with the same reason)."""
    from trainables.gan.evaluate import fid_floor

    try:
        floor = fid_floor(dataclasses.asdict(cfg.gan), arrays)
    except (OSError, ValueError) as err:
        print(f"FID floor not computed: {err}", file=sys.stderr)
        tracker.log_sweep_figures({}, tags={"fid_floor": f"not computed: {err}"[:4000]})
        return {}
    tracker.log_sweep_figures({k: v for k, v in floor.items() if k != "fid_weights_sha256"},
                              tags={"fid_floor_weights_sha256": floor["fid_weights_sha256"]})
    print(f"FID floor (real vs real, {floor['floor_images']} training-pool slices of {floor['floor_patients']} "
          f"patients against the validation split): " + ", ".join(
              f"{k} {v:.4g}" for k, v in floor.items() if k.endswith("_floor")))
    return floor


def run_sweep(plan: SweepPlan, cohort, args: argparse.Namespace, storage: str, tracking_uri: str,
              stages: list[str], clock: Stopwatch) -> int:
    import ray

    from orchestrator.report import SweepOutcome, write_report
    from orchestrator.stages import StageContext, stage_runner
    from orchestrator.tracking import SweepTracker, cohort_dataset, runs_page

    from orchestrator.stages.classify import fit_ladder, test_split_note

    start_ray(args.address)
    plan.config = resolve_resources(plan.config)  # once; a resumed sweep's record holds them already
    print(describe_resources(plan.config))
    arrays = cohort.as_arrays()
    plan.config, ladder_note = fit_ladder(plan.config, arrays)  # before any training, with the numbers
    for note in (ladder_note, test_split_note(plan.config, arrays)):
        if note:
            print(note, file=sys.stderr)
    cfg, sweep_id = plan.config, plan.sweep_id
    sweep_path = f"{storage}/{sweep_id}"
    out_dir = args.runs_dir.resolve() / sweep_id
    write_record(sweep_path, plan.record(tracking_uri))
    tracker = SweepTracker(tracking_uri, f"medgan-sweep-{cfg.data.modality}", args.runs_dir.resolve() / "mlartifacts",
                           spool=out_dir / "mlflow_spool")
    tracker.start_sweep(sweep_id, params=cfg.to_dict(), tags={
        "dataset_fingerprint": cohort.fingerprint, "preset": plan.preset, "sweep_path": sweep_path,
        "stages": ",".join(stages), "seeds": f"data={cfg.data.seed} gan={cfg.gan.seed} search={cfg.search.seed} "
                                             f"synth={cfg.synth.seed} classify={cfg.classify.seeds}"})
    tracker.log_sweep_dict(cfg.search.space, "search_space.json")
    tracker.log_dataset(cohort_dataset(arrays, cohort.fingerprint, cfg.data.modality))
    clock.lap("setup")  # Ray start, resources, MLflow parent run
    if cohort.meta.get("crops"):  # where every crop came from; pseudonyms and numbers only
        tracker.log_sweep_dict(cohort.meta["crops"], "data/crops_summary.json")
        tracker.log_sweep_file(cohort.path / "crops.json", "data")

    stage_results: dict = {}
    try:
        data_ref = ray.put(arrays)  # once; every trial's workers read this copy
        floor = log_fid_floor(cfg, arrays, tracker)
        clock.lap("fid_floor")
        context = StageContext(cfg, arrays, data_ref, floor, tracker, storage, sweep_path, out_dir, args.resume)
        previous = None
        for name in stages:
            previous = stage_results[name] = stage_runner(name)(context, previous)
            clock.lap(name)
            if not previous:  # nothing for the next stage to work on
                break
        outcome = SweepOutcome.of(sweep_id, stage_results, floor, TEST_NOTE, caveats(cfg, arrays),
                                  evaluation_note(cfg, arrays))
        for path in write_report(out_dir, outcome):
            tracker.log_sweep_file(path, "report")
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
    print(f"checkpoints and Tune state: {sweep_path} (continue an interrupted sweep with --resume)")
    if unlogged:
        print(f"MLflow: {unlogged} write(s) could not be made ({tracking_uri} unreachable); they are kept in "
              f"{tracker.writes.spool}: make them with `python -m orchestrator.mlflow_writes {tracker.writes.spool} "
              f"--tracking-uri {tracking_uri}` once the server is back", file=sys.stderr)
    return 0 if stage_results.get("gan") else 1


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
    from orchestrator.stages.classify import schedule_note
    from trainables.cohort import TRAIN

    lines = [f"FID and SSIM come from {evaluation_note(cfg, arrays)}: compare an FID with its floor, not with "
             "published figures."]
    if cfg.data.train_fraction < 1:
        lines.append(f"Scarce data by design (data.train_fraction {cfg.data.train_fraction:g}): every GAN and "
                     f"classifier trains on {split_size(arrays, TRAIN)}; the other training patients are held "
                     "out of all training and feed only the oracle arm.")
    note = schedule_note(cfg.classify).strip()
    return lines + ([note] if note else [])


if __name__ == "__main__":
    raise SystemExit(main())
