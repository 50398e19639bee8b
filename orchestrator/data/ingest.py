"""DICOM folder -> checked, preprocessed, labelled, patient-split, cached cohort.

Every file found ends in `ingest_report.json` as accepted or rejected with a reason; nothing
is dropped silently. Patient identifiers are replaced here by salted pseudonyms, so no
name, ID or date of a patient reaches the cache, the report, logs or anything later.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import json
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from orchestrator.config import DataConfig
from orchestrator.data.cache import PREPROCESSING_FIELDS, Cohort, cache_key, entry_path, load_cohort, save_cohort
from orchestrator.data.dicom import Rejected, Slice, read_slice
from orchestrator.data.labels import LABEL_NAMES, LabelTable
from orchestrator.data.split import SPLITS, hold_out_training, split_patients


class IngestError(RuntimeError):
    """Nothing usable remains, or the inputs cannot be ingested at all."""


@dataclass
class Outcome:
    file: str  # path relative to the data folder
    status: str  # "accepted" | "rejected"
    reason: str = ""
    detail: str = ""

    def as_dict(self) -> dict[str, str]:
        return {k: v for k, v in vars(self).items() if v}


def ingest(data_dir: str | Path, cfg: DataConfig, labels_file: str | Path | None = None,
           cache_root: str | Path | None = None) -> Cohort:
    """Ingest `data_dir` for `cfg.modality`, or return the cached result for the same inputs."""
    data_dir = Path(data_dir).expanduser().resolve()
    if not data_dir.is_dir():
        raise IngestError(f"{data_dir}: no such folder")
    cache_root = Path(cache_root or cfg.cache_dir).expanduser().resolve()
    labels_path = _find_label_table(data_dir, labels_file)
    files = _walk(data_dir, exclude={labels_path})
    if not files:
        raise IngestError(f"{data_dir}: no files found")

    entry = entry_path(cache_root, cache_key(data_dir, files, labels_path, cfg))
    cached = load_cohort(entry)
    if cached is not None:
        return cached
    started = time.perf_counter()
    table = LabelTable.from_csv(labels_path) if labels_path else LabelTable(source="folders")
    outcomes, accepted = _read_all(data_dir, files, table, cfg)
    report = _report(data_dir, files, outcomes, table, cfg)
    if not accepted:
        failed = entry.with_name(entry.name + "-failed_report.json")
        failed.parent.mkdir(parents=True, exist_ok=True)
        failed.write_text(json.dumps(report, indent=1))
        reasons = ", ".join(f"{n} {r}" for r, n in Counter(o.reason for o in outcomes).most_common())
        raise IngestError(f"no usable {cfg.modality.upper()} slices in {data_dir}: {len(files)} file(s) found, "
                          f"all rejected ({reasons}); every file's reason is in {failed}")
    arrays, meta = _assemble(data_dir, accepted, table, cfg, _id_salt(cache_root))
    report["fingerprint"] = meta["fingerprint"]
    meta["rejected"] = report["rejected_by_reason"]
    meta["unused_label_rows"] = len(report["unused_label_rows"])
    meta["ingest_seconds"] = round(time.perf_counter() - started, 3)
    save_cohort(entry, arrays, meta, report)
    return replace(load_cohort(entry), from_cache=False)


def _find_label_table(data_dir: Path, labels_file: str | Path | None) -> Path | None:
    if labels_file is not None:
        path = Path(labels_file).expanduser().resolve()
        if not path.is_file():
            raise IngestError(f"{path}: label table not found")
        return path
    default = data_dir / "labels.csv"
    return default if default.is_file() else None  # None: labels from benign/ malignant/ folders


def _walk(data_dir: Path, exclude: set[Path | None]) -> list[Path]:
    files = []
    for root, dirs, names in os.walk(data_dir):
        dirs.sort()
        files.extend(Path(root) / n for n in sorted(names) if (Path(root) / n) not in exclude)
    return files


def _id_salt(cache_root: Path) -> bytes:
    """A per-machine secret for pseudonyms, made once and kept beside the cache (mode 600)."""
    path = cache_root / "id_salt"
    if not path.exists():
        cache_root.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


def pseudonym(patient_id: str, salt: bytes) -> str:
    return "pt-" + hmac.new(salt, patient_id.encode(), hashlib.sha256).hexdigest()[:16]


def _read_all(data_dir: Path, files: list[Path], table: LabelTable,
              cfg: DataConfig) -> tuple[list[Outcome], list[tuple[Path, Slice, int]]]:
    """Every file's outcome, and the accepted (path, slice, label) triples."""
    outcomes: list[Outcome] = []
    accepted: list[tuple[Path, Slice, int]] = []
    first_seen: dict[str, str] = {}  # SOPInstanceUID -> file
    for path in files:
        rel = path.relative_to(data_dir).as_posix()
        try:
            item = read_slice(path, cfg)
            label = table.label_for(rel, item.series_uid, item.study_uid, item.patient_id)
            if label is None:
                raise Rejected("no_label", f"no row in {table.source} for this file, series, study or patient"
                               if table.source != "folders" else "not under a benign/ or malignant/ folder")
            if item.sop_uid in first_seen:
                raise Rejected("duplicate_sop_uid", f"same SOPInstanceUID as {first_seen[item.sop_uid]}")
        except Rejected as rejection:
            outcomes.append(Outcome(rel, "rejected", rejection.reason, rejection.detail))
            continue
        first_seen[item.sop_uid] = rel
        outcomes.append(Outcome(rel, "accepted", detail=_norm_detail(item)))
        accepted.append((path, item, label))
    return outcomes, accepted


def _assemble(data_dir: Path, accepted: list[tuple[Path, Slice, int]], table: LabelTable, cfg: DataConfig,
              salt: bytes) -> tuple[dict[str, np.ndarray], dict]:
    """Stack the accepted slices, pseudonymise patients, split them; arrays + cache meta."""
    pseudonyms = sorted({pseudonym(item.patient_id, salt) for _, item, _ in accepted})
    index = {p: i for i, p in enumerate(pseudonyms)}
    # A patient is malignant if any of their slices is: that is the label we stratify by.
    patient_label: dict[str, int] = {}
    for _, item, label in accepted:
        patient_label[item.patient_id] = max(label, patient_label.get(item.patient_id, 0))
    # Split on the raw IDs (not the salted pseudonyms) so the split is the same on every machine.
    assignment = hold_out_training(split_patients(patient_label, cfg.split, cfg.seed), patient_label,
                                   cfg.train_fraction, cfg.seed)
    arrays = {
        "images": np.stack([item.image for _, item, _ in accepted]).astype(np.float16),
        "labels": np.array([label for _, _, label in accepted], np.int8),
        "patients": np.array([index[pseudonym(item.patient_id, salt)] for _, item, _ in accepted], np.int32),
        "split": np.array([assignment[item.patient_id] for _, item, _ in accepted], np.int8),
    }
    meta = {
        "fingerprint": _content_fingerprint(data_dir, accepted),
        "settings": {k: getattr(cfg, k) for k in PREPROCESSING_FIELDS},
        "patients": pseudonyms,
        "normalisation": dict(Counter(item.norm for _, item, _ in accepted)),
        "summary": _summary_rows(arrays),
    }
    return arrays, meta


def _content_fingerprint(data_dir: Path, accepted: list[tuple[Path, Slice, int]]) -> str:
    """A hash of what was used (file bytes and labels): the same data gives the same value on
    any machine, which is what MLflow records and reproduction compares."""
    digest = hashlib.sha256()
    for path, _, label in accepted:
        digest.update(path.relative_to(data_dir).as_posix().encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest() + bytes([label]))
    return digest.hexdigest()[:24]


def _norm_detail(item) -> str:
    return f"{item.norm}: {item.norm_note}" if item.norm_note else item.norm


def _report(data_dir: Path, files: list[Path], outcomes: list[Outcome], table: LabelTable, cfg: DataConfig) -> dict:
    rejected = Counter(o.reason for o in outcomes if o.status == "rejected")
    return {
        "data_dir": str(data_dir),
        "modality": cfg.modality,
        "label_source": table.source,
        "files_found": len(files),
        "accepted": sum(o.status == "accepted" for o in outcomes),
        "rejected": sum(rejected.values()),
        "rejected_by_reason": dict(sorted(rejected.items())),
        "unused_label_rows": table.unused_rows(),
        "files": [o.as_dict() for o in outcomes],
    }


def _summary_rows(arrays: dict[str, np.ndarray]) -> list[dict]:
    rows = []
    for s, split in enumerate(SPLITS):
        for label, name in LABEL_NAMES.items():
            mask = (arrays["split"] == s) & (arrays["labels"] == label)
            if split == "held_out" and not (arrays["split"] == s).any():
                continue  # data.train_fraction is 1: nothing held out
            rows.append({"split": split, "label": name, "slices": int(mask.sum()),
                         "patients": int(len(np.unique(arrays["patients"][mask])))})
    return rows


def format_summary(cohort: Cohort) -> str:
    """The table `python -m orchestrator.ingest` prints."""
    meta = cohort.meta
    lines = [f"{'split':<8} {'label':<10} {'slices':>7} {'patients':>9}"]
    lines += [f"{r['split']:<8} {r['label']:<10} {r['slices']:>7} {r['patients']:>9}" for r in meta["summary"]]
    total = len(cohort.labels)
    lines.append(f"{'all':<8} {'':<10} {total:>7} {len(meta['patients']):>9}")
    if "held_out" in {r["split"] for r in meta["summary"]}:
        lines.append(f"held_out: training patients left out of all training (data.train_fraction "
                     f"{meta['settings']['train_fraction']}); only stage 3's oracle arm uses them")
    norm = ", ".join(f"{n} slices {k}" for k, n in sorted(meta["normalisation"].items()))
    lines.append(f"normalisation: {norm}")
    if meta["rejected"]:
        lines.append("rejected files by reason:")
        lines += [f"  {reason:<24} {n:>6}" for reason, n in meta["rejected"].items()]
    else:
        lines.append("rejected files: none")
    if meta["unused_label_rows"]:
        lines.append(f"label rows that matched no accepted slice: {meta['unused_label_rows']} (see the report)")
    lines.append(f"fingerprint {meta['fingerprint']}  cache {cohort.path}"
                 f"{'  (read from cache)' if cohort.from_cache else ''}")
    lines.append(f"report {cohort.path / 'ingest_report.json'}")
    return "\n".join(lines)
