"""MLflow writes that survive the tracking server going away in the middle of a sweep.

Every write a sweep makes goes through `Writes`. While the server answers, a write is made at
once. When one fails and the server's /health does not answer either, the server is marked
away: that write and every later one are appended, in order, to a spool folder on the driver
(files copied in; a run created meanwhile gets a placeholder id) and training goes on. At most
every `PROBE_EVERY` seconds a write asks /health again; once the server is back the spool is
replayed in order and writes are made at once again. What is still spooled when the sweep
ends is reported with the command that replays it:

    python -m orchestrator.mlflow_writes SPOOL_FOLDER --tracking-uri URI

A write that fails while /health answers is a real error (a bad value, a conflict): it is raised.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

PROBE_EVERY = 15.0  # seconds between /health probes while the server is away
PLACEHOLDER = "pending-"  # prefix of a run id handed out while the server is away
OPS_FILE = "ops.jsonl"


def unreachable_reason(tracking_uri: str, timeout: float = 5.0) -> str:
    """Why the tracking server at `tracking_uri` does not answer, or '' when it does (or is a local store)."""
    if not tracking_uri.startswith(("http://", "https://")):
        return ""
    try:
        with urllib.request.urlopen(f"{tracking_uri.rstrip('/')}/health", timeout=timeout) as response:
            return "" if response.status == 200 else f"/health answered {response.status}"
    except OSError as err:
        return f"/health: {err}"


def alias_moves(holder, tags: dict, rule: dict) -> tuple[bool, str]:
    """Whether a new version with `tags` takes an alias from the version that holds it (`holder`, a
    ModelVersion or None), and what to say of it ('' when nothing needs saying).

    `rule` ({"same": [tag, ...], "value": tag, "mode": "min" | "max"}; empty: always move): between
    versions that agree on every `same` tag (the cohort, the metric) the alias moves only to a version
    at least as good by `value`; across them the figures do not compare, so it moves to the newer one
    and says which version it leaves and why.
    """
    if holder is None or not rule:
        return True, ""
    differs = [f"{key} {holder.tags.get(key, 'none')} -> {tags.get(key, 'none')}" for key in rule["same"]
               if holder.tags.get(key) != tags.get(key)]
    if differs:
        return True, (f"moves from version {holder.version} to this one although their figures do not compare "
                      f"({'; '.join(differs)}): the newest sweep on other data or by another metric wins")
    old, new = float(holder.tags.get(rule["value"], "nan")), float(tags[rule["value"]])
    if math.isnan(old) or (new >= old if rule["mode"] == "max" else new <= old):
        return True, ""
    return False, (f"stays on version {holder.version}: its {rule['value']} {old:.4g} on the same data is better than "
                   f"this version's {new:.4g}")


class Writes:
    """The sweep's MLflow writes, made now or, while the server is away, spooled and made later.

    Runs are referred to by id; `run()` hands out a placeholder id when it cannot create the
    run now, and every later write to that placeholder goes to the real run once it exists.
    """

    def __init__(self, client: MlflowClient, spool: Path):
        self.client, self.spool = client, Path(spool)
        self.tracking_uri = client.tracking_uri
        self.ids: dict[str, str] = {}  # placeholder -> the run id the server gave it
        self.pending = self._read_spool()  # a spool left by an earlier process goes first
        self.away = bool(self.pending)
        self.last_probe = 0.0
        self.made_late = 0

    # -- the writes

    def run(self, experiment_id: str, run_name: str, tags: dict[str, str], find: dict[str, str] | None = None,
            params: dict[str, str] | None = None) -> str:
        """The id of the run tagged with all of `find` if there is one, else of a new run with `tags` and `params`."""
        placeholder = f"{PLACEHOLDER}{uuid.uuid4().hex}"
        made = self._write("run", placeholder, experiment_id=experiment_id, run_name=run_name, tags=tags,
                           find=find or {}, params=params or {})
        return made or placeholder

    def log_batch(self, run: str, metrics: list[Metric] = (), params: dict[str, str] | None = None,
                  tags: dict[str, str] | None = None) -> None:
        self._write("log_batch", run, metrics=[[m.key, m.value, m.timestamp, m.step] for m in metrics],
                    params=params or {}, tags=tags or {})

    def log_artifacts(self, run: str, path: str | Path, artifact_path: str | None = None) -> None:
        """A file, or a folder's contents, under `artifact_path`."""
        self._write("log_artifacts", run, path=str(path), artifact_path=artifact_path)

    def log_dict(self, run: str, value: dict, name: str) -> None:
        folder = Path(name).parent.as_posix()  # "data/x.json" goes to the artifact folder data/
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(name).name
            path.write_text(json.dumps(value, indent=2, default=str))
            self.log_artifacts(run, path, None if folder == "." else folder)

    def log_image(self, run: str, path: Path, key: str, step: int) -> None:
        """A PNG in the run's image view under `key`, at `step` (browsable across steps)."""
        self._write("log_image", run, path=str(path), key=key, step=step)

    def log_input(self, run: str, dataset: dict, context: str) -> None:
        """A dataset input of the run (`dataset`: the fields of mlflow.entities.Dataset)."""
        self._write("log_input", run, dataset=dataset, context=context)

    def log_model(self, run: str, path: Path, name: str, registered_name: str, signature: dict,
                  description: str = "", tags: dict | None = None, alias: str = "", alias_rule: dict | None = None,
                  linked_metrics: dict | None = None) -> None:
        """The torch module saved whole at `path` as an MLflow PyTorch model of the run, registered under
        `registered_name` (`signature`: a ModelSignature's to_dict()); the version gets `description` and
        `tags`. `alias` moves to it as `alias_moves` decides under `alias_rule`. `linked_metrics`
        ({"step", "keys", "dataset_name", "dataset_digest"}): the run's figures at that step, linked to the
        logged model and the dataset they were measured on (the model page's metrics and datasets)."""
        self._write("log_model", run, path=str(path), name=name, registered_name=registered_name,
                    signature=signature, description=description, tags=tags or {}, alias=alias,
                    alias_rule=alias_rule or {}, linked_metrics=linked_metrics or {})

    def set_status(self, run: str, status: str) -> None:
        self._write("set_status", run, status=status)

    def terminate(self, run: str, status: str) -> None:
        self._write("terminate", run, status=status)

    # -- now, or later

    def _write(self, op: str, run: str, **kwargs):
        if self.away and not self._back():
            self._spool(op, run, kwargs)
            return None
        try:
            return self._apply(op, run, kwargs)
        except Exception as err:
            reason = unreachable_reason(self.tracking_uri)
            if not reason:
                raise  # the server answers: this write itself is wrong
            self.away, self.last_probe = True, time.time()
            print(f"MLflow: {self.tracking_uri} is unreachable ({reason}; the write failed with "
                  f"{type(err).__name__}). Training goes on; MLflow writes are kept in {self.spool} and made "
                  f"when the server answers again.", file=sys.stderr, flush=True)
            self._spool(op, run, kwargs)
            return None

    def _back(self) -> bool:
        """Whether the server answers again and the spool is replayed (asked at most every PROBE_EVERY s)."""
        if time.time() - self.last_probe < PROBE_EVERY:
            return False
        self.last_probe = time.time()
        if unreachable_reason(self.tracking_uri):
            return False
        return self.replay()

    def replay(self) -> bool:
        """Make the spooled writes in order; True when none is left. Stops at the first one that fails."""
        count = len(self.pending)
        while self.pending:
            op = self.pending[0]
            try:
                self._apply(op["op"], op["run"], op["kwargs"])
            except Exception as err:
                if not unreachable_reason(self.tracking_uri):
                    raise
                print(f"MLflow: replay stopped, server unreachable again ({type(err).__name__}); "
                      f"{len(self.pending)} write(s) left in {self.spool}", file=sys.stderr, flush=True)
                self._write_spool()
                return False
            self.pending.pop(0)
        self.made_late += count
        if count:
            print(f"MLflow: {self.tracking_uri} answers again; {count} spooled write(s) made", file=sys.stderr,
                  flush=True)
        shutil.rmtree(self.spool, ignore_errors=True)
        self.away = False
        return True

    def finish(self) -> int:
        """At the end of a sweep: one last try at the spool; the number of writes still not made."""
        if self.away:
            self.last_probe = 0.0
            self._back()
        return len(self.pending)

    def _apply(self, op: str, run: str, kwargs: dict):
        run_id = self.ids.get(run, run)
        client = self.client
        if op == "run":
            return self._find_or_create(run, **kwargs)
        if op == "log_batch":
            client.log_batch(run_id, metrics=[Metric(*m) for m in kwargs["metrics"]],
                             params=[Param(k, v) for k, v in kwargs["params"].items()],
                             tags=[RunTag(k, v) for k, v in kwargs["tags"].items()])
        elif op == "log_artifacts":
            path = Path(kwargs["path"])
            if path.is_dir():
                client.log_artifacts(run_id, str(path), kwargs["artifact_path"])
            else:
                client.log_artifact(run_id, str(path), kwargs["artifact_path"])
        elif op == "log_image":
            from PIL import Image

            if self._image_logged(run_id, kwargs["key"], kwargs["step"]):
                return None  # an earlier try reached the server though its answer was lost: not a second copy
            with Image.open(kwargs["path"]) as image:
                client.log_image(run_id, image.convert("RGB"), key=kwargs["key"], step=kwargs["step"])
        elif op == "log_input":
            from mlflow.entities import Dataset, DatasetInput, InputTag

            client.log_inputs(run_id, [DatasetInput(Dataset(**kwargs["dataset"]),
                                                    [InputTag("mlflow.data.context", kwargs["context"])])])
        elif op == "log_model":
            self._log_model(run_id, **kwargs)
        elif op == "set_status":
            client.update_run(run_id, status=kwargs["status"])
        elif op == "terminate":
            client.set_terminated(run_id, kwargs["status"])
        else:
            raise ValueError(f"unknown MLflow write {op!r}")
        return None

    def _image_logged(self, run_id: str, key: str, step: int) -> bool:
        """Whether the run's image view holds `key` at `step` (MLflow names the file `key+step+N+...`)."""
        return any(Path(a.path).name.startswith(f"{key}+step+{step}+")
                   for a in self.client.list_artifacts(run_id, "images"))

    def _log_model(self, run_id: str, path: str, name: str, registered_name: str, signature: dict,
                   description: str = "", tags: dict | None = None, alias: str = "", alias_rule: dict | None = None,
                   linked_metrics: dict | None = None) -> None:
        query = f"name = '{registered_name}' and run_id = '{run_id}'"
        if not self.client.search_model_versions(query):  # else registered by this run already (a resumed sweep)
            model_id = self._register_model(run_id, path, name, registered_name, signature)
            if linked_metrics:
                self._link_metrics(run_id, model_id, **linked_metrics)
        version = max(self.client.search_model_versions(query), key=lambda v: int(v.version)).version
        if description:
            self.client.update_model_version(registered_name, version, description=description)
        for key, value in (tags or {}).items():
            self.client.set_model_version_tag(registered_name, version, key, value)
        if alias:
            self._move_alias(registered_name, alias, version, tags or {}, alias_rule or {})

    def _move_alias(self, registered_name: str, alias: str, version: str, tags: dict, rule: dict) -> None:
        try:
            holder = self.client.get_model_version_by_alias(registered_name, alias)
        except MlflowException:
            holder = None  # no version holds it yet
        moves, why = alias_moves(holder, tags, rule)
        if moves:
            self.client.set_registered_model_alias(registered_name, alias, version)
        if why:
            print(f"MLflow: {registered_name}@{alias} {why}", flush=True)
            self.client.set_model_version_tag(registered_name, version, f"{alias}_decision", why)

    def _link_metrics(self, run_id: str, model_id: str, step: int, keys: list[str], dataset_name: str,
                      dataset_digest: str) -> None:
        """The run's figures at `step` once more, with the model and dataset they belong to. Same key, step,
        value and timestamp as the run's own: the store keeps one point, so the run's curves do not change."""
        linked = [Metric(m.key, m.value, m.timestamp, m.step, model_id=model_id, dataset_name=dataset_name,
                         dataset_digest=dataset_digest)
                  for key in keys for m in self.client.get_metric_history(run_id, key) if m.step == step]
        if linked:
            self.client.log_batch(run_id, metrics=linked)

    def _register_model(self, run_id: str, path: str, name: str, registered_name: str, signature: dict) -> str:
        """Logs and registers the model; its logged model's id."""
        import mlflow
        import mlflow.pytorch
        import torch
        from mlflow.models import ModelSignature

        import trainables

        model = torch.load(path, weights_only=False)
        status = self.client.get_run(run_id).info.status
        mlflow.set_tracking_uri(self.tracking_uri)  # the fluent API logs models; it is told where, every time
        with mlflow.start_run(run_id=run_id):
            # pickle: the module as it is (torch.export's pt2 would trace a two-input forward)
            logged = mlflow.pytorch.log_model(
                model, name=name, signature=ModelSignature.from_dict(signature),
                registered_model_name=registered_name, serialization_format="pickle",
                # the package the pickle names travels with it: it loads where only torch is installed
                # (MLflow puts code/ on sys.path)
                code_paths=[str(Path(trainables.__file__).parent)],
                # named, not inferred: inference loads the model in a subprocess
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"])
        self.client.update_run(run_id, status=status)  # start_run / end reopened and closed it: its own status back
        return logged.model_id

    def _find_or_create(self, placeholder: str, experiment_id: str, run_name: str, tags: dict, find: dict,
                        params: dict) -> str:
        # found again by its tags: a resumed sweep or a replayed spool does not make a second run
        query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in find.items())
        found = self.client.search_runs([experiment_id], query, max_results=1) if find else []
        if found:
            run_id = found[0].info.run_id
        else:
            run_id = self.client.create_run(experiment_id, run_name=run_name, tags=tags).info.run_id
            if params:
                self.client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])
        self.ids[placeholder] = run_id
        return run_id

    # -- the spool on disk: one JSON line per write, files copied under files/

    def _spool(self, op: str, run: str, kwargs: dict) -> None:
        if op in ("log_artifacts", "log_image", "log_model"):  # the file may be temporary: copy it
            source = Path(kwargs["path"])
            target = self.spool / "files" / uuid.uuid4().hex / source.name
            target.parent.mkdir(parents=True)
            (shutil.copytree if source.is_dir() else shutil.copy2)(source, target)
            kwargs = {**kwargs, "path": str(target)}
        self.pending.append({"op": op, "run": run, "kwargs": kwargs})
        self.spool.mkdir(parents=True, exist_ok=True)
        with (self.spool / OPS_FILE).open("a") as f:
            f.write(json.dumps(self.pending[-1]) + "\n")

    def _write_spool(self) -> None:
        # placeholders the server has given ids to meanwhile are written as those ids
        lines = [json.dumps({**op, "run": self.ids.get(op["run"], op["run"])}) for op in self.pending]
        (self.spool / OPS_FILE).write_text("".join(line + "\n" for line in lines))

    def _read_spool(self) -> list[dict]:
        path = self.spool / OPS_FILE
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.mlflow_writes",
                                     description="Make the MLflow writes a sweep spooled while its server was away.")
    parser.add_argument("spool", type=Path, help="the spool folder the sweep named (runs/<sweep>/mlflow_spool)")
    parser.add_argument("--tracking-uri", required=True, help="the MLflow tracking server to write to")
    args = parser.parse_args(argv)
    writes = Writes(MlflowClient(args.tracking_uri), args.spool)
    count = len(writes.pending)
    if not count:
        print(f"nothing to replay in {args.spool}")
        return 0
    reason = unreachable_reason(args.tracking_uri)
    if reason:
        print(f"{args.tracking_uri} does not answer ({reason}); nothing replayed", file=sys.stderr)
        return 1
    done = writes.replay()
    print(f"{count - len(writes.pending)} of {count} write(s) made" + ("" if done else f"; the rest stay in {args.spool}"))
    return 0 if done else 1


if __name__ == "__main__":
    raise SystemExit(main())
