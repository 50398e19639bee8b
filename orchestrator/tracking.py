"""The sweep's MLflow writer: a parent run per sweep, a nested child run per trial.

It sits below the stages and knows none of them: `SweepTracker` holds the parent run and the
generic writes; `ChildRunLogger` is the Tune callback every stage's trial logger extends (stage 1's
and stage 3's live with their stage, in `orchestrator.stages`). All writes happen on the driver,
so a SQLite store has one writer however many trials run at once, and no Ray worker needs to
reach the tracking server. They go through `orchestrator.mlflow_writes.Writes`, so a server that
goes away mid-sweep costs no training and no record: writes wait in a spool until it answers
again. Children are linked to the parent by its run id (`mlflow.parentRunId`), not by Ray's
MLflow helpers (they do not nest runs). A resumed sweep finds its parent and each trial's child
again by tag, so nothing is logged twice.
"""
from __future__ import annotations

import getpass
import hashlib
import json
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from ray import tune

from orchestrator.mlflow_writes import Writes

SWEEP_TAG, TRIAL_TAG, STAGE_TAG = "medgan.sweep", "medgan.trial_id", "medgan.stage"
REPRODUCES_TAG = "medgan.reproduces"
TRIAL_CONFIG = "trial_config.json"
PARENT_TAG = "mlflow.parentRunId"
NOTE_TAG = "mlflow.note.content"  # a run's description in the MLflow UI


def runs_page(server: str, experiment_id: str, search: str = "", order_by: str = "", ascending: bool = True) -> str:
    """The experiment's runs table in the MLflow UI at `server` ('' for a link inside the UI itself), with only
    the runs `search` finds (MLflow's search syntax) sorted by `order_by` (e.g. metrics.`fid`) when given.
    MLflow 3's UI opens in its GenAI mode (traces) whatever the experiment's kind tag says; `workflowType` is
    the switch to model training. The runs tab reads a filter and an order from its link."""
    query = {"workflowType": "machine_learning"}
    if search:
        query["searchFilter"] = search
    if order_by:
        query.update(orderByKey=order_by, orderByAsc=str(ascending).lower())
    tab = "/runs" if search or order_by else ""
    return f"{server.rstrip('/')}/#/experiments/{experiment_id}{tab}?{urlencode(query, quote_via=quote)}"


def registered_model_page(server: str, name: str) -> str:
    """A registered model's versions, their aliases and sources, in the MLflow UI at `server`."""
    return f"{server.rstrip('/')}/#/models/{quote(name)}"


def default_tracking_uri(runs_dir: Path) -> str:
    """A SQLite store under runs/: works on a fresh machine, `mlflow ui --backend-store-uri` opens it."""
    return f"sqlite:///{(runs_dir / 'mlflow.db').resolve()}"


class SweepTracker:
    """The sweep's parent run, and the writes its trial callbacks make (spooled under `spool` while the
    server is away)."""

    def __init__(self, tracking_uri: str, experiment: str, artifact_root: Path, spool: Path):
        self.client = MlflowClient(tracking_uri)
        self.writes = Writes(self.client, spool)
        found = self.client.get_experiment_by_name(experiment)
        # A local store gets an absolute artifact folder, made here on the driver (made from a
        # Ray worker it would land in that worker's session folder); a server keeps its own.
        local = tracking_uri.startswith(("sqlite:", "file:", "/"))
        location = (artifact_root / experiment).resolve().as_uri() if local else None
        self.experiment_id = found.experiment_id if found else self.client.create_experiment(
            experiment, artifact_location=location, tags=EXPERIMENT_TAGS)
        if found and found.tags.get(EXPERIMENT_KIND) != EXPERIMENT_TAGS[EXPERIMENT_KIND]:
            self.client.set_experiment_tag(self.experiment_id, EXPERIMENT_KIND, EXPERIMENT_TAGS[EXPERIMENT_KIND])
        self.parent_id = ""
        self.dataset: dict | None = None  # the cohort, as an MLflow dataset (log_dataset)
        self.source = source_tags()  # on every run this tracker makes

    def start_sweep(self, sweep_name: str, params: dict[str, Any], tags: dict[str, str]) -> str:
        """Find the parent run of `sweep_name` (a resumed sweep) or create it."""
        self.parent_id = self.writes.run(
            self.experiment_id, sweep_name, tags={SWEEP_TAG: sweep_name, **self.source, **tags},
            find={SWEEP_TAG: sweep_name}, params={k: _param(v) for k, v in _flatten(params).items()})
        self.writes.set_status(self.parent_id, "RUNNING")  # a resumed sweep's parent runs again
        return self.parent_id

    def log_sweep_file(self, path: Path, artifact_path: str | None = None) -> None:
        self.writes.log_artifacts(self.parent_id, path, artifact_path)

    def describe_sweep(self, text: str) -> None:
        """The parent run's description (Markdown, shown on its page in the MLflow UI)."""
        self.writes.log_batch(self.parent_id, tags={NOTE_TAG: text})

    def log_sweep_dict(self, value: dict, name: str) -> None:
        self.writes.log_dict(self.parent_id, value, name)

    def end_sweep(self, status: str = "FINISHED") -> int:
        """Close the parent run; the number of writes that could not be made (kept in the spool)."""
        self.writes.terminate(self.parent_id, status)
        return self.writes.finish()

    def log_dataset(self, dataset: dict) -> None:
        """The cohort as the parent run's dataset input; every trial run gets it too, as its training data."""
        self.dataset = dataset
        self.writes.log_input(self.parent_id, dataset, context="cohort")

    def trial_run(self, trial_id: str, name: str = "", tags: dict | None = None, params: dict | None = None) -> str:
        """The run of a trial (found by its tags, made if new): one per trial, whichever process asks."""
        link = {PARENT_TAG: self.parent_id, TRIAL_TAG: trial_id}
        return self.writes.run(self.experiment_id, name or f"trial-{trial_id}",
                               tags={**link, **self.source, **(tags or {})}, find=link, params=params)

    def log_sweep_figures(self, metrics: dict[str, float], tags: dict[str, str] | None = None) -> None:
        """Sweep-wide figures on the parent run (the FID floor, the test split's size)."""
        now = int(time.time() * 1000)
        self.writes.log_batch(self.parent_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
                              tags=tags)

    def log_stage_run(self, stage: str, name: str, params: dict, metrics: dict, files: list[Path],
                      artifact_path: str, tags: dict | None = None, key: dict | None = None) -> str:
        """A nested run for one stage output (a synthetic set, a summary): its params, figures, files and
        `tags`; with `key` (tags that name the output), a resumed sweep finds the run again instead of
        making a second."""
        link = {PARENT_TAG: self.parent_id, STAGE_TAG: stage}
        run_id = self.writes.run(self.experiment_id, name, tags={**link, **self.source, **(tags or {}), **(key or {})},
                                 find={**link, **key} if key else None,
                                 params={k: _param(v) for k, v in params.items()})
        self.writes.log_batch(run_id, metrics=[Metric(k, float(v), int(time.time() * 1000), 0)
                                               for k, v in metrics.items()])
        for path in files:
            self.writes.log_artifacts(run_id, path, artifact_path)
        self.writes.terminate(run_id, "FINISHED")
        return run_id


class ChildRunLogger(tune.Callback):
    """Tune callback on the driver: one child run per trial, under the sweep's parent run.

    A resumed sweep finds each trial's run again by its tags instead of opening a second one.
    """
    stage = ""

    def __init__(self, tracker: SweepTracker):
        self.tracker, self.writes = tracker, tracker.writes
        self.run_ids: dict[str, str] = {}

    def run_name(self, trial) -> str:
        return f"trial-{trial.trial_id}"

    def run_tags(self, trial) -> dict[str, str]:
        return {}

    def params(self, trial) -> dict:
        """What the runs table shows as params (the trial's exact settings go to TRIAL_CONFIG whole)."""
        return dict(trial.config)

    def child_run(self, trial) -> str:
        if trial.trial_id in self.run_ids:
            return self.run_ids[trial.trial_id]
        run_id = self.tracker.trial_run(trial.trial_id, self.run_name(trial),
                                        tags={STAGE_TAG: self.stage, **self.run_tags(trial)},
                                        params={k: _param(v) for k, v in _flatten(self.params(trial)).items()})
        # the exact, typed config: what `python -m orchestrator.reproduce` runs again
        self.writes.log_dict(run_id, dict(trial.config), TRIAL_CONFIG)
        for dataset, context in self.inputs(trial):
            self.writes.log_input(run_id, dataset, context=context)
        self.run_ids[trial.trial_id] = run_id
        return run_id

    def inputs(self, trial) -> list[tuple[dict, str]]:
        """What the trial trained on, as (MLflow dataset fields, context): the cohort's training split."""
        return [(self.tracker.dataset, "training")] if self.tracker.dataset else []

    def on_trial_start(self, iteration, trials, trial, **info):
        self.writes.set_status(self.child_run(trial), "RUNNING")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.fail(self.child_run(trial), error_text(trial))

    def fail(self, run_id: str, reason: str) -> None:
        self.writes.log_batch(run_id, tags={"failure_reason": reason[-4000:]})
        self.writes.terminate(run_id, "FAILED")

    def log_metrics(self, run_id: str, result: dict, keys: set[str], step: int) -> None:
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, step) for k, v in result.items()
                   if k in keys and isinstance(v, (int, float)) and not isinstance(v, bool)]
        self.writes.log_batch(run_id, metrics=metrics)


# Marks the experiment as model training for MLflow's UI (3.17 still opens in GenAI mode unless the link
# says otherwise: runs_page).
EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_TAGS = {EXPERIMENT_KIND: "custom_model_development"}


def cohort_dataset(arrays: dict, fingerprint: str, modality: str) -> dict:
    """The cohort as the fields of an MLflow dataset: name, digest, schema and a profile of counts per split.
    Counts and shapes only: no patient identifier, not even a pseudonym."""
    import numpy as np

    from trainables.cohort import SPLITS

    split, patients = np.asarray(arrays["split"]), np.asarray(arrays["patients"])
    size = tuple(arrays["images"].shape[1:])
    profile = {name: {"patients": int(len(np.unique(patients[split == code]))), "slices": int((split == code).sum()),
                      "malignant_slices": int(np.asarray(arrays["labels"])[split == code].sum())}
               for code, name in enumerate(SPLITS) if (split == code).any()}
    return {"name": f"{modality}-cohort-{fingerprint[:8]}", "digest": fingerprint[:16], "source_type": "local",
            "source": json.dumps({"uri": f"medgan-cohort://{modality}/{fingerprint}"}),
            "schema": _image_schema(size), "profile": json.dumps({"image_px": list(size), **profile})}


def split_dataset(cohort: dict, arrays: dict, code: int) -> dict:
    """One split of the cohort (`cohort`: its `cohort_dataset`) as an MLflow dataset of its own, e.g. the test
    patients a classifier is scored on: named after the cohort and the split, with a digest of its slices'
    patient codes and labels and its counts."""
    import numpy as np

    from trainables.cohort import SPLITS

    where = np.asarray(arrays["split"]) == code
    patients, labels = np.asarray(arrays["patients"])[where], np.asarray(arrays["labels"], np.int64)[where]
    digest = hashlib.sha256(np.asarray(patients, str).tobytes() + labels.tobytes()).hexdigest()[:16]
    name = SPLITS[code]
    return {"name": f"{cohort['name']}-{name}", "digest": digest, "source_type": "local",
            "source": json.dumps({"uri": f"{json.loads(cohort['source'])['uri']}/{name}"}),
            "schema": cohort["schema"], "profile": json.dumps({"patients": int(len(np.unique(patients))),
                                                               "slices": int(where.sum()),
                                                               "malignant_slices": int(labels.sum())})}


def _image_schema(size: tuple[int, ...]) -> str:
    """The dataset schema of grey images of `size` with integer labels, as MLflow stores it."""
    import numpy as np
    from mlflow.data.schema import TensorDatasetSchema
    from mlflow.types import Schema, TensorSpec

    schema = TensorDatasetSchema(features=Schema([TensorSpec(np.dtype(np.float32), (-1, *size), "image")]),
                                 targets=Schema([TensorSpec(np.dtype(np.int64), (-1,), "label")]))
    return json.dumps(schema.to_dict())


def synthetic_dataset(name: str, images, labels, sweep_id: str) -> dict:
    """A synthetic set as the fields of an MLflow dataset: its name, a digest of its images and labels, and
    its counts."""
    import numpy as np

    images, labels = np.ascontiguousarray(images), np.asarray(labels)
    digest = hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()[:16]
    return {"name": name, "digest": digest, "source_type": "local",
            "source": json.dumps({"uri": f"medgan-synthetic://{sweep_id}/{name}"}),
            "schema": _image_schema(tuple(images.shape[1:])),
            "profile": json.dumps({"images": int(len(labels)), "malignant": int(labels.sum())})}


def error_text(trial) -> str:
    """The trial's error trace: Tune writes it to the trial's local folder before calling back."""
    path = trial.error_file
    if path and Path(path).exists():
        return Path(path).read_text(errors="replace")
    return "trial failed; Tune recorded no error text"


def source_tags() -> dict[str, str]:
    """Where a run comes from, in MLflow's own tags (its UI shows them as Source, User, Git commit), plus
    `git_commit` with '+dirty' when the checkout had local changes (what reproduce compares)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # a container user without a name
        user = "unknown"
    version = code_version()
    commit = {} if version.startswith(SOURCE_DIGEST) else {"mlflow.source.git.commit": version.removesuffix("+dirty")}
    return {"mlflow.source.name": "orchestrator.sweep", "mlflow.source.type": "LOCAL", "mlflow.user": user,
            **commit, "git_commit": version}


SOURCE_DIGEST = "source-sha256:"  # a code version that is not a git commit


def code_version() -> str:
    """The git commit of this checkout, '+dirty' when it has local changes. Outside git (a Ray job's
    uploaded working dir, an unpacked archive): a digest of the project's Python sources, which tells
    the same code from different code just as well."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=here, capture_output=True, text=True).stdout
        return commit + ("+dirty" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return SOURCE_DIGEST + source_digest(here.parent)


def code_version_as(recorded: str) -> str:
    """This code's version in the form of `recorded`: a source digest when a run recorded one (it came from
    outside git), else `code_version()`: what reproduce compares with the run's."""
    if recorded.startswith(SOURCE_DIGEST):
        return SOURCE_DIGEST + source_digest(Path(__file__).resolve().parents[1])
    return code_version()


def source_digest(root: Path) -> str:
    """sha256 over the project's Python sources and presets (paths and bytes, in path order), first 16 hex."""
    digest = hashlib.sha256()
    for folder in ("orchestrator", "trainables", "search_spaces"):
        for path in sorted((root / folder).rglob("*")):
            if path.suffix in (".py", ".yaml") and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _flatten(value: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, item in value.items():
        if isinstance(item, dict) and key != "space":
            flat.update(_flatten(item, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = item
    return flat


def compact(value: Any) -> str:
    """A setting as a run name shows it: `2e-4`, `0.35`, `10`, `none` for an empty choice."""
    if isinstance(value, float) and value != 0 and abs(value) < 0.01:
        mantissa, exponent = f"{value:.2e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    if isinstance(value, float):
        return f"{value:.3g}"
    return _param(value)


def _param(value: Any) -> str:
    """A param's text; an empty choice (DiffAugment off, no weights file) reads `none`, not a blank cell."""
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value)
    return "none" if value == "" else str(value)
