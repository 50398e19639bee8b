"""Sweep storage: a local folder or an `s3://bucket/prefix` URI, laid out one folder per sweep.

    <storage>/<modality>-<YYYYmmdd-HHMMSS>/
        sweep.json       the resolved config the sweep runs with (what --resume reads)
        gan/             stage 1's Tune experiment state
        gan-train/       one Ray Train run (checkpoints) per stage-1 trial

pyarrow's filesystems, as Ray uses them, so the same code reads local disk and S3.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs

from orchestrator.config import Config, config_from_dict

SWEEP_RECORD = "sweep.json"


def absolute(storage: str) -> str:
    """A URI as given; a local path made absolute (Ray workers change directory)."""
    return storage if "://" in storage else str(Path(storage).expanduser().resolve())


def new_sweep_id(modality: str, when: float | None = None) -> str:
    """`<modality>-YYYYmmdd-HHMMSS` of `when` (seconds since the epoch; now by default), local time: ids of
    one modality sort as their sweeps started (what `latest_sweep_id` relies on)."""
    return f"{modality}-{time.strftime('%Y%m%d-%H%M%S', time.localtime(when))}"


def latest_sweep_id(storage: str, modality: str) -> str | None:
    """The newest sweep of `modality` under `storage` (ids sort by start time), or None."""
    fs, root = pyarrow.fs.FileSystem.from_uri(storage)
    entries = fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))
    ids = sorted(e.base_name for e in entries
                 if e.type == pyarrow.fs.FileType.Directory and e.base_name.startswith(f"{modality}-"))
    return ids[-1] if ids else None


@dataclass
class SweepRecord:
    """What a sweep runs on, kept as `sweep.json` in its storage folder: `--resume` continues with it and
    `reproduce` rebuilds a trial's data from it."""
    sweep_id: str
    config: Config
    data_dir: Path
    labels: Path | None = None
    nodules: Path | None = None
    fingerprint: str = ""  # of the ingested cohort; a resumed sweep checks it
    preset: str = ""  # the resolved preset (never "auto")
    tracking_uri: str = ""

    def write(self, sweep_path: str) -> None:
        fs, path = pyarrow.fs.FileSystem.from_uri(sweep_path)
        fs.create_dir(path, recursive=True)
        record = {"sweep_id": self.sweep_id, "preset": self.preset, "config": self.config.to_dict(),
                  "data_dir": str(self.data_dir), "labels": _str_or_none(self.labels),
                  "nodules": _str_or_none(self.nodules), "dataset_fingerprint": self.fingerprint,
                  "tracking_uri": self.tracking_uri}
        with fs.open_output_stream(f"{path}/{SWEEP_RECORD}") as out:
            out.write(json.dumps(record, indent=1).encode())

    @classmethod
    def read(cls, sweep_path: str) -> SweepRecord:
        fs, path = pyarrow.fs.FileSystem.from_uri(sweep_path)
        try:
            with fs.open_input_stream(f"{path}/{SWEEP_RECORD}") as stream:
                record = json.loads(stream.read())
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{sweep_path} has no {SWEEP_RECORD}: not a sweep folder") from err
        return cls(record["sweep_id"], config_from_dict(record["config"], source=f"{sweep_path}/{SWEEP_RECORD}"),
                   Path(record["data_dir"]), _path_or_none(record.get("labels")), _path_or_none(record.get("nodules")),
                   record.get("dataset_fingerprint", ""), record.get("preset", ""), record.get("tracking_uri", ""))


def _str_or_none(path: Path | None) -> str | None:
    return str(path) if path else None


def _path_or_none(value: str | None) -> Path | None:
    return Path(value) if value else None


def read_file(uri: str) -> bytes:
    """One file of a storage folder (local or S3), without fetching its neighbours."""
    fs, path = pyarrow.fs.FileSystem.from_uri(uri)
    with fs.open_input_stream(path) as stream:
        return stream.read()


def checkpoint_uri(storage: str, path: str) -> str:
    """A reported checkpoint as a URI Ray's `Checkpoint` opens anywhere.

    `TuneReportCallback` forwards `Checkpoint.path`, which drops the filesystem's scheme: on
    S3 it is `bucket/prefix/...`. Put the storage's scheme back.
    """
    if "://" in storage and "://" not in path:
        return f"{storage.split('://', 1)[0]}://{path}"
    return path
