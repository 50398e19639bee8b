"""DICOM folder -> checked, preprocessed, labelled, patient-split, cached cohort.

Every file found ends in `ingest_report.json` as accepted or rejected with a reason; nothing
is dropped silently. Patient identifiers are replaced here by salted pseudonyms, so no
name, ID or date of a patient reaches the cache, the report, logs or anything later.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np

from orchestrator.config import DataConfig
from orchestrator.data.cache import PREPROCESSING_FIELDS, Cohort, cache_key, entry_path, load_cohort, save_cohort
from orchestrator.data.crop import whole_slice
from orchestrator.data.from_nodules import read_nodule_crops
from orchestrator.data.labels import LabelTable
from orchestrator.data.lidc import annotation_kind
from orchestrator.data.nodules import read_nodule_table
from orchestrator.data.samples import Outcome, Sample, pseudonym, read_images
from orchestrator.data.split import draw_order, hold_out_training, split_patients
from trainables.cohort import LABEL_NAMES, SPLITS


class IngestError(RuntimeError):
    """Nothing usable remains, or the inputs cannot be ingested at all."""


def ingest(data_dir: str | Path, cfg: DataConfig, labels_file: str | Path | None = None,
           cache_root: str | Path | None = None, nodules_file: str | Path | None = None) -> Cohort:
    """Ingest `data_dir` for `cfg.modality`, or return the cached result for the same inputs.

    With a nodule table (`nodules_file`, or DATA/nodules.csv) every sample is a crop around a
    nodule (orchestrator/data/crop.py); so with LIDC-IDRI's reader annotations (XML files among the
    data, or in a folder given as `nodules_file`: orchestrator/data/lidc.py). Without either every
    slice is a sample, labelled by the label table (`labels_file`, or DATA/labels.csv) or by benign/
    and malignant/ folders.
    """
    data_dir = Path(data_dir).expanduser().resolve()
    if not data_dir.is_dir():
        raise IngestError(f"{data_dir}: no such folder")
    cache_root = Path(cache_root or cfg.cache_dir).expanduser().resolve()
    annotation_dir = _annotation_folder(nodules_file)
    nodules_path = None if annotation_dir else _find_table(data_dir, nodules_file, "nodules.csv", "nodule table")
    files = _walk(data_dir, exclude={nodules_path, data_dir / "labels.csv"})
    annotations = _lidc_annotations(data_dir, files, annotation_dir)
    files = [f for f in files if f not in annotations.values()]
    labels_path = (None if nodules_path or annotations
                   else _find_table(data_dir, labels_file, "labels.csv", "label table"))
    files = [f for f in files if f != labels_path]
    if not files:
        raise IngestError(f"{data_dir}: no files found")

    entry = entry_path(cache_root, cache_key(data_dir, files, [labels_path, nodules_path, *annotations.values()], cfg))
    cached = load_cohort(entry)
    if cached is not None:
        return cached
    started = time.perf_counter()
    salt = _id_salt(cache_root)
    if nodules_path or annotations:
        rows = read_nodule_table(nodules_path) if nodules_path else []
        if any(r.label is None for r in rows) and not annotations:
            raise IngestError(f"{nodules_path}: LUNA16's annotations.csv has no labels; put the LIDC-IDRI reader XML "
                              f"of the same series inside {data_dir} (any sub-folder) to label its rows from the "
                              "readers' malignancy ratings, or add a label column")
        outcomes, samples, nodule_report = read_nodule_crops(data_dir, files, rows, cfg, salt, annotations)
        source = nodules_path.name if nodules_path else f"LIDC-IDRI annotations ({len(annotations)} file(s))"
    else:
        table = LabelTable.from_csv(labels_path) if labels_path else LabelTable(source="folders")
        outcomes, samples = _read_whole_slices(data_dir, files, table, cfg)
        nodule_report, source = {"unused_label_rows": table.unused_rows()}, table.source
    report = _report(data_dir, files + list(annotations.values()), outcomes, source, cfg) | nodule_report
    report = _without_patient_folders(report, {s.patient_id for s in samples}, salt)
    if not samples:
        failed = entry.with_name(entry.name + "-failed_report.json")
        failed.parent.mkdir(parents=True, exist_ok=True)
        failed.write_text(json.dumps(report, indent=1))
        reasons = ", ".join(f"{n} {r}" for r, n in Counter(o.reason for o in outcomes).most_common())
        raise IngestError(f"no usable {cfg.modality.upper()} samples in {data_dir}: {len(files)} file(s) found, "
                          f"none used ({reasons}); every file's reason is in {failed}")
    tables = [p for p in (labels_path, nodules_path, *annotations.values()) if p]
    arrays, meta = _assemble(data_dir, samples, tables, outcomes, cfg, salt)
    report["fingerprint"] = meta["fingerprint"]
    meta["rejected"] = report["rejected_by_reason"]
    meta["unused_label_rows"] = len(report.get("unused_label_rows", []))
    meta["crops"] = report.get("crops")
    meta["ingest_seconds"] = round(time.perf_counter() - started, 3)
    provenance = [s.provenance for s in samples] if nodules_path or annotations else None
    save_cohort(entry, arrays, meta, report, provenance)
    return replace(load_cohort(entry), from_cache=False)


def _find_table(data_dir: Path, given: str | Path | None, default_name: str, what: str) -> Path | None:
    if given is not None:
        path = Path(given).expanduser().resolve()
        if not path.is_file():
            raise IngestError(f"{path}: {what} not found")
        return path
    default = data_dir / default_name
    return default if default.is_file() else None


def _without_patient_folders(report: dict, patient_ids: set[str], salt: bytes) -> dict:
    """The report with every folder named as a patient's ID (LIDC-IDRI's download names its folders so)
    named by that patient's pseudonym instead: file paths are how the report points at a file, and must
    not carry the identifier with them."""
    text = json.dumps(report)
    for raw in sorted(patient_ids, key=len, reverse=True):
        # a path segment: after the start, a slash or a quote, and followed by a slash
        text = re.sub(rf'(?:^|(?<=[/"\s])){re.escape(json.dumps(raw)[1:-1])}(?=/)', pseudonym(raw, salt), text)
    return json.loads(text)


def _annotation_folder(nodules: str | Path | None) -> Path | None:
    """`--nodules` naming a folder: LIDC-IDRI annotation files kept apart from the images."""
    if nodules is None or not Path(nodules).expanduser().is_dir():
        return None
    return Path(nodules).expanduser().resolve()


def _lidc_annotations(data_dir: Path, files: list[Path], folder: Path | None) -> dict[str, Path]:
    """The LIDC-IDRI annotation files (relative path -> file): those in `folder` when given, else those among
    the data's files. An .xml that does not parse counts among them only beside real ones (then it is
    reported as a bad annotation); elsewhere it is one more file ingest cannot read."""
    if folder is not None:
        found = {f"{folder.name}/{p.relative_to(folder).as_posix()}": p for p in _walk(folder, set())}
    else:
        found = {p.relative_to(data_dir).as_posix(): p for p in files}
    kinds = {rel: annotation_kind(p) for rel, p in found.items()}
    if "lidc" not in kinds.values():
        if folder is not None:
            raise IngestError(f"{folder}: --nodules names a folder, but it holds no LIDC-IDRI annotation XML "
                              "(a LidcReadMessage per series); a nodule table is a CSV file")
        return {}
    return {rel: found[rel] for rel, kind in kinds.items() if kind}


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


def _read_whole_slices(data_dir: Path, files: list[Path], table: LabelTable,
                       cfg: DataConfig) -> tuple[list[Outcome], list[Sample]]:
    """Every file's outcome, and a sample per slice (per frame of a multi-frame file)."""
    outcomes: list[Outcome] = []
    samples: list[Sample] = []
    for rel, image in read_images(data_dir, files, cfg, outcomes):
        label = table.label_for(rel, image.series_uid, image.study_uid, image.patient_id)
        if label is None:
            outcomes.append(Outcome(rel, "rejected", "no_label", f"no row in {table.source} for this file, series, "
                                    "study or patient" if table.source != "folders"
                                    else "not under a benign/ or malignant/ folder"))
            continue
        norms = []
        for frame in image.frames:
            pixels, norm, note = whole_slice(frame.values, image.scale, cfg)
            samples.append(Sample(pixels, label, image.patient_id, norm, note))
            norms.append(f"{norm}: {note}" if note else norm)
        outcomes.append(Outcome(rel, "accepted", detail=", ".join(sorted(set(norms)))))
    return outcomes, samples


def _assemble(data_dir: Path, samples: list[Sample], tables: list[Path], outcomes: list[Outcome],
              cfg: DataConfig, salt: bytes) -> tuple[dict[str, np.ndarray], dict]:
    """Stack the samples, pseudonymise patients, split them; arrays + cache meta."""
    pseudonyms = sorted({pseudonym(s.patient_id, salt) for s in samples})
    index = {p: i for i, p in enumerate(pseudonyms)}
    # A patient is malignant if any of their samples is: that is the label we stratify by.
    patient_label: dict[str, int] = {}
    for s in samples:
        patient_label[s.patient_id] = max(s.label, patient_label.get(s.patient_id, 0))
    # Split on the raw IDs (not the salted pseudonyms) so the split is the same on every machine.
    assignment = hold_out_training(split_patients(patient_label, cfg.split, cfg.seed), patient_label,
                                   cfg.train_fraction, cfg.seed)
    order = draw_order(list(patient_label), cfg.seed)
    arrays = {
        "images": np.stack([s.image for s in samples]).astype(np.float16),
        "labels": np.array([s.label for s in samples], np.int8),
        "patients": np.array([index[pseudonym(s.patient_id, salt)] for s in samples], np.int32),
        "split": np.array([assignment[s.patient_id] for s in samples], np.int8),
        "draw_order": np.array([order[s.patient_id] for s in samples], np.int32),
    }
    meta = {
        "fingerprint": _content_fingerprint(data_dir, outcomes, samples, tables),
        "settings": {k: getattr(cfg, k) for k in PREPROCESSING_FIELDS},
        "patients": pseudonyms,
        "normalisation": dict(Counter(s.norm for s in samples)),
        "summary": _summary_rows(arrays),
    }
    return arrays, meta


def _content_fingerprint(data_dir: Path, outcomes: list[Outcome], samples: list[Sample], tables: list[Path]) -> str:
    """A hash of what was used (accepted files' bytes, the tables, the sample labels): the same
    data gives the same value on any machine, which MLflow records and reproduction compares."""
    digest = hashlib.sha256()
    for rel in sorted(o.file for o in outcomes if o.status == "accepted"):
        if (data_dir / rel).is_file():  # annotations kept in a folder of their own count among the tables
            digest.update(rel.encode() + hashlib.sha256((data_dir / rel).read_bytes()).digest())
    for table in tables:
        digest.update(hashlib.sha256(table.read_bytes()).digest())
    digest.update(bytes(s.label for s in samples))
    return digest.hexdigest()[:24]


def _report(data_dir: Path, files: list[Path], outcomes: list[Outcome], source: str, cfg: DataConfig) -> dict:
    rejected = Counter(o.reason for o in outcomes if o.status == "rejected")
    return {
        "data_dir": str(data_dir),
        "modality": cfg.modality,
        "label_source": source,
        "files_found": len(files),
        "accepted": sum(o.status == "accepted" for o in outcomes),
        "rejected": sum(rejected.values()),
        "rejected_by_reason": dict(sorted(rejected.items())),
        "files": [o.as_dict() for o in sorted(outcomes, key=lambda o: o.file)],
    }


def _summary_rows(arrays: dict[str, np.ndarray]) -> list[dict]:
    rows = []
    for s, split in enumerate(SPLITS):
        for label, name in enumerate(LABEL_NAMES):
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
    if meta.get("crops"):
        lines.append(_crop_line(meta["crops"]))
    norm = ", ".join(f"{n} samples {k}" for k, n in sorted(meta["normalisation"].items()))
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


def _crop_line(crops: dict) -> str:
    rows = ", ".join(f"{n} {status}" for status, n in sorted(crops["nodule_rows"].items()))
    line = (f"nodule crops: {crops['crops']} from the nodules ({rows}); {crops['roi_mm']:g} mm square at "
            f"{crops['pixel_mm']:.3g} mm/px, slices within {crops['slab_mm']:g} mm of each centre; "
            f"{crops['padded_crops']} padded at an image edge")
    if crops["series_standing_in_for_patients"]:
        line += (f"; {crops['series_standing_in_for_patients']} volume(s) without a patient_id stand for a "
                 "patient each")
    return line
