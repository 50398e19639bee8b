"""`python -m orchestrator.reproduce RUN_ID`: run one recorded trial again, locally, and compare.

    python -m orchestrator.reproduce RUN_ID                          # any GAN or classifier trial
    python -m orchestrator.reproduce --best pet                      # the latest pet sweep's best GAN trial
    python -m orchestrator.reproduce models:/medgan-pet-cgan@champion  # the trial a registered generator came from

Reads from MLflow the trial's exact config (`trial_config.json`), its thread count, and from
its sweep's parent run the dataset fingerprint, code version and the sweep record (data
folder, data settings). Warns when the local data or code differ, re-runs the trial in this
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
from orchestrator.tracking import (PARENT_TAG, REPRODUCES_TAG, STAGE_TAG, TRIAL_CONFIG, code_version,
                                   code_version_as, default_tracking_uri)
from trainables.classify.loop import FINAL_METRICS
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
                       help="the best GAN trial of the latest sweep of this modality (by its ranking metric)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///runs/mlflow.db)")
    parser.add_argument("--epochs", type=int, help="train this many epochs instead (the figures then differ)")
    return parser.parse_args(argv)


def trial_run_id(client: MlflowClient, trial: str | None, best: str | None) -> str:
    """The run id that `trial` or `--best` names; LookupError saying what was not found."""
    if best:
        experiment = client.get_experiment_by_name(f"medgan-sweep-{best}")
        sweeps = client.search_runs([experiment.experiment_id], f"tags.`{BEST_RUN_TAG}` != ''",
                                    order_by=["attributes.start_time DESC"], max_results=1) if experiment else []
        if not sweeps:
            raise LookupError(f"no {best} sweep with a ranked GAN trial in this tracking store")
        return sweeps[0].data.tags[BEST_RUN_TAG]
    if trial.startswith("models:/"):
        name, _, version = trial.removeprefix("models:/").partition("/")
        name, _, alias = name.partition("@")
        found = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
        return found.run_id
    return trial


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    client = MlflowClient(args.tracking_uri or default_tracking_uri(Path("runs")))
    try:
        run_id = trial_run_id(client, args.trial, args.best)
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
    record = SweepRecord.read(parent.data.tags["sweep_path"])
    cohort = ingest(record.data_dir, record.config.data, labels_file=record.labels, nodules_file=record.nodules)
    warn_if_different("dataset fingerprint", parent.data.tags["dataset_fingerprint"], cohort.fingerprint)
    recorded_version = parent.data.tags.get("git_commit", "")
    warn_if_different("code version", recorded_version, code_version_as(recorded_version))
    threads = int(run.data.tags.get("torch_threads", torch.get_num_threads()))
    torch.set_num_threads(threads)  # CPU reductions depend on it

    started = time.perf_counter()
    if stage == "gan":
        reproduced = rerun_gan(trial, cohort.as_arrays(), args.epochs or int(run.data.metrics["epoch"]))
    else:
        reproduced = rerun_classifier(client, parent_id, trial, cohort.as_arrays(), args.epochs)
    new_id = log_reproduction(client, run, reproduced, COMPARED[stage])
    print(f"reproduced {stage} trial {run_id} ({run.info.run_name}) as run {new_id} in "
          f"{time.perf_counter() - started:.0f} s ({threads} torch thread(s)):")
    print(side_by_side(run.data.metrics, reproduced, COMPARED[stage]))
    return 0


def rerun_gan(trial: dict, data: dict, epochs: int) -> dict:
    from trainables.gan.loop import fit

    reports = []
    fit({**trial, "epochs": epochs}, data, lambda metrics, folder: reports.append(metrics), device="cpu")
    return reports[-1]


def rerun_classifier(client: MlflowClient, parent_id: str, trial: dict, data: dict, epochs: int | None) -> dict:
    from orchestrator.stages.classify import trial_settings
    from trainables.classify.loop import fit_classifier

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
