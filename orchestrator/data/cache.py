"""The ingest cache: preprocessed arrays + split + report, keyed by inputs and preprocessing.

Layout of one entry, `<cache_dir>/cohorts/<key>/`:
  images.npy (N, S, S) float16 in [0, 1]   labels.npy (N,) int8: 0 benign, 1 malignant
  patients.npy (N,) int32: index into meta["patients"] (salted pseudonyms)
  split.npy (N,) int8: 0 train, 1 val, 2 test, 3 held out   meta.json   ingest_report.json
  draw_order.npy (N,) int32: the patient's rank in a seeded order of raw patient keys (the same on
    every machine, unlike the codes): the order trials draw patients in
  crops.json: per sample, where its crop came from (nodule crops only; no identifiers)

The key hashes every input file's relative path, size and mtime, the label table's bytes
and the preprocessing settings: touching a file or changing a setting makes a new entry.
Entries are written to a temporary folder and renamed into place, so a crashed ingest or
two concurrent ones never leave a half-written entry.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from orchestrator.config import DataConfig
from trainables.cohort import SPLITS

CACHE_FORMAT = 3  # 2: nodule crops and their provenance; 3: the draw order
# The settings that change what ingest produces: every DataConfig field but these, so a field added
# later keys the cache until it is listed here (a needless re-ingest, never a stale cohort).
NOT_PREPROCESSING = ("cache_dir", "phantom_patients", "phantom_slices", "phantom_size")
PREPROCESSING_FIELDS = tuple(f.name for f in dataclasses.fields(DataConfig) if f.name not in NOT_PREPROCESSING)


@dataclass(frozen=True)
class Cohort:
    """One ingested dataset. `images` may be a read-only memory map of the cache file."""

    images: np.ndarray
    labels: np.ndarray
    patients: np.ndarray
    split: np.ndarray
    draw_order: np.ndarray
    meta: dict
    path: Path  # the cache entry folder
    from_cache: bool

    def subset(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Images and labels of one split ('train', 'val' or 'test')."""
        mask = self.split == SPLITS.index(split)
        return self.images[mask], self.labels[mask]

    def as_arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays for `ray.put`: what a trial needs, with no identifiers."""
        return {"images": np.asarray(self.images), "labels": self.labels,
                "patients": self.patients, "split": self.split, "draw_order": self.draw_order}

    @property
    def fingerprint(self) -> str:
        return self.meta["fingerprint"]


def cache_key(data_dir: Path, files: list[Path], tables: list[Path | None], cfg: DataConfig) -> str:
    digest = hashlib.sha256()
    settings = {name: getattr(cfg, name) for name in PREPROCESSING_FIELDS}
    digest.update(json.dumps({"format": CACHE_FORMAT, "settings": settings}, sort_keys=True).encode())
    for path in files:
        stat = path.stat()
        digest.update(f"{path.relative_to(data_dir).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    for table in tables:
        if table is not None:
            digest.update(table.name.encode() + b"\0" + table.read_bytes())
    return digest.hexdigest()[:24]


def entry_path(cache_root: Path, key: str) -> Path:
    return cache_root / "cohorts" / key


def load_cohort(entry: Path) -> Cohort | None:
    """The cached cohort at `entry`, or None if there is no complete entry."""
    meta_file = entry / "meta.json"
    if not meta_file.is_file():
        return None
    meta = json.loads(meta_file.read_text())
    if meta.get("format") != CACHE_FORMAT:
        return None
    return Cohort(
        images=np.load(entry / "images.npy", mmap_mode="r"),
        labels=np.load(entry / "labels.npy"),
        patients=np.load(entry / "patients.npy"),
        split=np.load(entry / "split.npy"),
        draw_order=np.load(entry / "draw_order.npy"),
        meta=meta,
        path=entry,
        from_cache=True,
    )


def save_cohort(entry: Path, arrays: dict[str, np.ndarray], meta: dict, report: dict,
                provenance: list[dict] | None = None) -> Path:
    entry.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=entry.parent))
    try:
        for name, array in arrays.items():
            np.save(staging / f"{name}.npy", array)
        (staging / "ingest_report.json").write_text(json.dumps(report, indent=1))
        if provenance is not None:
            (staging / "crops.json").write_text(json.dumps(provenance))
        (staging / "meta.json").write_text(json.dumps({"format": CACHE_FORMAT, **meta}, indent=1))
        if entry.exists():  # an equal entry written meanwhile by another ingest
            shutil.rmtree(staging)
        else:
            os.replace(staging, entry)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return entry
