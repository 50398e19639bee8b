"""`python -m orchestrator.reproduce RUN_ID`: run one recorded trial again, locally, and compare.

    python -m orchestrator.reproduce RUN_ID                          # any GAN or classifier trial
    python -m orchestrator.reproduce --best pet                      # the latest pet sweep's best GAN trial
    python -m orchestrator.reproduce --best pet --arch dcgan         # ... its best dcgan trial
    python -m orchestrator.reproduce --best pet --arm real --classifier resnet   # a classifier trial
    python -m orchestrator.reproduce models:/medgan-pet-cgan@champion  # the trial a registered generator came from

Reads from MLflow the trial's exact config (`trial_config.json`), its thread count, and from
its sweep's parent run the dataset fingerprint, code version and the sweep record (data
folder, data settings; `--data` and `--sweep-path` where the sweep ran on another machine; the
built-in phantom is made again here). Warns when the local data or code differ, re-runs the trial in this
process without Ray (a GAN trial through `trainables.gan.loop.fit`, a classifier trial through
`trainables.classify.loop.fit_classifier`), logs a new run tagged as a reproduction of
RUN_ID, and prints original and reproduced metrics side by side. On CPU, with the same data,
code, seed and thread count, they match exactly.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from orchestrator.data.ingest import ingest
from orchestrator.data.modalities import MODALITIES
from orchestrator.stages.gan import BEST_RUN_TAG, GAN_METRICS
from orchestrator.storage import SweepRecord
from orchestrator.sweep import phantom_folder, phantom_folder_name
from orchestrator.tracking import (PARENT_TAG, REPRODUCES_TAG, STAGE_TAG, SWEEP_TAG, TRIAL_CONFIG, code_version,
                                   code_version_as, default_tracking_uri)
from trainables.classify.loop import FINAL_METRICS
from trainables.gan.evaluate import with_validation_features
from trainables.system import SYSTEM_METRICS

COMPARED = {"gan": GAN_METRICS - {"epoch_s", "images_per_s", *SYSTEM_METRICS}, "classify": set(FINAL_METRICS)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.reproduce",
                                     description="Re-run one GAN or classifier trial from its MLflow record, locally.")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("trial", nargs="?", help="the MLflow run id of a trial (a child run of a sweep), or a "
                                                "registered generator: models:/medgan-pet-cgan@champion, "
                                                "models:/medgan-pet-cgan/3")
    which.add_argument("--best", metavar="MODALITY", choices=sorted(MODALITIES),
                       help="a trial of the latest sweep of this modality: its best GAN trial (by its ranking "
                            "metric), of one architecture with --arch, or a classifier trial with --arm")
    parser.add_argument("--arch", help="with --best: the best GAN trial of this architecture")
    parser.add_argument("--arm", metavar="ARM_ID", help="with --best: a classifier trial of this arm (its runs' tag "
                                                       "arm_id, e.g. real or synthetic:cgan-db991b24:2)")
    parser.add_argument("--classifier", help="with --arm: which classifier (needed when the sweep trained several)")
    parser.add_argument("--seed", type=int, help="with --arm: which seed (default: the lowest)")
    parser.add_argument("--data", type=Path, help="the data folder on this machine, where the sweep's is elsewhere")
    parser.add_argument("--sweep-path", help="the sweep's storage folder or URI (its sweep.json), where the one the "
                                             "run recorded is not reachable from here")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///runs/mlflow.db)")
    parser.add_argument("--epochs", type=int, help="train this many epochs instead (the figures then differ)")
    args = parser.parse_args(argv)
    if not args.best and (args.arch or args.arm):
        parser.error("--arch and --arm choose within --best MODALITY")
    if args.arch and args.arm:
        parser.error("--arch picks a GAN trial and --arm a classifier trial: give one")
    return args


def trial_run_id(client: MlflowClient, trial: str | None, best: str | None, arch: str | None = None,
                 arm: str | None = None, classifier: str | None = None, seed: int | None = None) -> str:
    """The run id that `trial` or `--best` (with `arch`, or `arm`, `classifier` and `seed`) names; LookupError
    saying what was not found."""
    if best:
        sweep = latest_sweep(client, best)
        if arm:
            return arm_run_id(client, sweep, arm, classifier, seed)
        return best_gan_run_id(client, sweep, best, arch) if arch else sweep.data.tags[BEST_RUN_TAG]
    if trial.startswith("models:/"):
        name, _, version = trial.removeprefix("models:/").partition("/")
        name, _, alias = name.partition("@")
        found = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
        return found.run_id
    return trial


def latest_sweep(client: MlflowClient, modality: str):
    """The parent run of the latest sweep of `modality` that ranked a GAN trial."""
    experiment = client.get_experiment_by_name(f"medgan-sweep-{modality}")
    sweeps = client.search_runs([experiment.experiment_id], f"tags.`{BEST_RUN_TAG}` != ''",
                                order_by=["attributes.start_time DESC"], max_results=1) if experiment else []
    if not sweeps:
        raise LookupError(f"no {modality} sweep with a ranked GAN trial in this tracking store")
    return sweeps[0]


def best_gan_run_id(client: MlflowClient, sweep, modality: str, arch: str) -> str:
    """The run of the sweep's best `arch` trial: the one its stage 1 registered for that architecture."""
    sweep_id = sweep.data.tags[SWEEP_TAG]
    versions = [v for v in client.search_model_versions(f"name = 'medgan-{modality}-{arch}'")
                if v.tags.get("sweep_id") == sweep_id]
    if not versions:
        raise LookupError(f"sweep {sweep_id} registered no {arch} generator (medgan-{modality}-{arch})")
    return versions[0].run_id


def arm_run_id(client: MlflowClient, sweep, arm: str, classifier: str | None, seed: int | None) -> str:
    """The sweep's classifier trial of `arm` (and `classifier`, `seed`: the lowest seed unless given)."""
    trials = client.search_runs([sweep.info.experiment_id], f"tags.`{PARENT_TAG}` = '{sweep.info.run_id}' and "
                                                            f"tags.`{STAGE_TAG}` = 'classify'")
    arms = sorted({t.data.tags.get("arm_id", "") for t in trials})
    chosen = [t for t in trials if t.data.tags.get("arm_id") == arm]
    if not chosen:
        raise LookupError(f"sweep {sweep.data.tags[SWEEP_TAG]} has no classifier trial of arm {arm!r} "
                          f"(its arms: {', '.join(arms) or 'none'})")
    classifiers = sorted({t.data.tags["classifier"] for t in chosen})
    if classifier is None and len(classifiers) > 1:
        raise LookupError(f"arm {arm!r} was trained with {', '.join(classifiers)}: say which with --classifier")
    chosen = [t for t in chosen if classifier is None or t.data.tags["classifier"] == classifier]
    seeds = sorted(int(t.data.tags["seed"]) for t in chosen)
    if not chosen or (seed is not None and seed not in seeds):
        raise LookupError(f"arm {arm!r} has no {classifier or ''} trial with seed {seed} "
                          f"(classifiers: {', '.join(classifiers)}; seeds: {', '.join(map(str, seeds)) or 'none'})")
    wanted = seeds[0] if seed is None else seed
    return next(t for t in chosen if int(t.data.tags["seed"]) == wanted).info.run_id


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    client = MlflowClient(args.tracking_uri or default_tracking_uri(Path("runs")))
    try:
        run_id = trial_run_id(client, args.trial, args.best, args.arch, args.arm, args.classifier, args.seed)
    except (LookupError, MlflowException) as err:
        print(f"reproduce: {err}", file=sys.stderr)
        return 2
    run = client.get_run(run_id)
    stage, parent_id = run.data.tags.get(STAGE_TAG), run.data.tags.get(PARENT_TAG)
    if stage not in COMPARED or not parent_id:
        print(f"reproduce: run {run_id} is not a GAN or classifier trial of a sweep", file=sys.stderr)
        return 2
    parent = client.get_run(parent_id)
    with tempfile.TemporaryDirectory() as tmp:
        trial = json.loads(Path(client.download_artifacts(run_id, TRIAL_CONFIG, tmp)).read_text())
    try:
        record = SweepRecord.read(args.sweep_path or parent.data.tags["sweep_path"])
        folder = cohort_folder(record, args.data, parent)
        cohort = ingest(folder, record.config.data, labels_file=moved(record.labels, record.data_dir, folder),
                        nodules_file=moved(record.nodules, record.data_dir, folder))
    except FileNotFoundError as err:
        print(f"reproduce: {err}", file=sys.stderr)
        return 2
    warn_if_different("dataset fingerprint", parent.data.tags["dataset_fingerprint"], cohort.fingerprint)
    recorded_version = parent.data.tags.get("git_commit", "")
    warn_if_different("code version", recorded_version, code_version_as(recorded_version))
    started = time.perf_counter()
    if stage == "gan":  # the validation features as the sweep's driver extracted them, at its default threads
        data = with_validation_features(trial, cohort.as_arrays())
    threads = int(run.data.tags.get("torch_threads", torch.get_num_threads()))
    torch.set_num_threads(threads)  # CPU reductions depend on it

    if stage == "gan":
        reproduced = rerun_gan(trial, data, args.epochs or int(run.data.metrics["epoch"]))
    else:
        reproduced = rerun_classifier(client, parent_id, trial, cohort.as_arrays(), args.epochs)
    new_id = log_reproduction(client, run, reproduced, COMPARED[stage])
    print(f"reproduced {stage} trial {run_id} ({run.info.run_name}) as run {new_id} in "
          f"{time.perf_counter() - started:.0f} s ({threads} torch thread(s)):")
    print(side_by_side(run.data.metrics, reproduced, COMPARED[stage]))
    return 0


def cohort_folder(record: SweepRecord, data: Path | None, parent) -> Path:
    """Where the trial's cohort is on this machine: `data` when given, else the recorded folder, else (for a
    sweep on the built-in phantom) the phantom made again here; FileNotFoundError naming the dataset it needs."""
    if data is not None or record.data_dir.is_dir():
        folder = data if data is not None else record.data_dir
        if not folder.is_dir():
            raise FileNotFoundError(f"--data {folder} is not a folder")
        return folder
    if record.data_dir.name == phantom_folder_name(record.config):  # the built-in phantom: deterministic
        return phantom_folder(record.config)
    dataset = parent.inputs.dataset_inputs[0].dataset if parent.inputs.dataset_inputs else None
    needs = f"dataset {dataset.name} (digest {dataset.digest})" if dataset else "the sweep's dataset"
    raise FileNotFoundError(f"the cohort this trial trained on is not on this machine: the sweep read "
                            f"{record.data_dir}, which is not here. It needs {needs}, fingerprint "
                            f"{parent.data.tags.get('dataset_fingerprint', 'unknown')}: pass its folder with --data")


def moved(path: Path | None, recorded_root: Path, root: Path) -> Path | None:
    """A labels or nodules file the sweep named inside its data folder, in that folder's place here."""
    if path is None or path.exists() or not path.is_relative_to(recorded_root):
        return path
    return root / path.relative_to(recorded_root)


def rerun_gan(trial: dict, data: dict, epochs: int) -> dict:
    from trainables.gan.loop import fit

    reports = []
    fit({**trial, "epochs": epochs}, data, lambda metrics, folder: reports.append(metrics), device="cpu")
    return reports[-1]


def rerun_classifier(client: MlflowClient, parent_id: str, trial: dict, data: dict, epochs: int | None) -> dict:
    from trainables.classify.loop import fit_classifier
    from trainables.classify.trial import trial_settings

    settings = {**trial_settings(trial), "gpus": 0}  # locally, on this machine's CPU
    synthetic = load_synthetic_set(client, parent_id, settings["set"]) if settings["set"] else None
    if epochs:
        settings["epochs"] = epochs
    return fit_classifier(settings, data, synthetic, lambda metrics: None)


def load_synthetic_set(client: MlflowClient, parent_id: str, name: str) -> dict:
    """The kept images of synthetic set `name`, from the folder its stage-2 run recorded."""
    runs = client.search_runs([client.get_run(parent_id).info.experiment_id],
                              f"tags.`{PARENT_TAG}` = '{parent_id}' and tags.`{STAGE_TAG}` = 'synth' "
                              f"and params.set = '{name}'")
    if not runs:
        raise FileNotFoundError(f"no stage-2 run records the synthetic set {name!r}")
    folder = Path(runs[0].data.params["folder"])
    return {"images": np.load(folder / "images.npy"), "labels": np.load(folder / "labels.npy")}


def log_reproduction(client: MlflowClient, original, reproduced: dict, keys: set[str]) -> str:
    run = client.create_run(original.info.experiment_id, run_name=f"reproduce-{original.info.run_name}",
                            tags={REPRODUCES_TAG: original.info.run_id, STAGE_TAG: "reproduce",
                                  "git_commit": code_version()})
    now = int(time.time() * 1000)
    client.log_batch(run.info.run_id, metrics=[Metric(k, float(v), now, 0) for k, v in reproduced.items()
                                               if k in keys and isinstance(v, (int, float))])
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def side_by_side(original: dict, reproduced: dict, keys: set[str]) -> str:
    lines = [f"{'metric':<20} {'original':>14} {'reproduced':>14}"]
    for key in sorted(keys & original.keys()):
        value = reproduced.get(key)
        shown = f"{value:>14.6g}" if isinstance(value, (int, float)) else f"{'-':>14}"
        same = "" if value == original[key] else "  differs"
        lines.append(f"{key:<20} {original[key]:>14.6g} {shown}{same}")
    return "\n".join(lines)


def warn_if_different(what: str, recorded: str, local: str) -> None:
    if recorded != local:
        print(f"warning: the {what} differs from the sweep's (recorded {recorded}, here {local}); "
              f"figures may not match", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
