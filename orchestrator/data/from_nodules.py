"""Series, volumes and a nodule table -> nodule-centred crops, each file and row accounted for.

DICOM files are grouped into series (orchestrator/data/series.py); MetaImage / NIfTI files
are volumes of their own (orchestrator/data/volumes.py). Each nodule row is placed in the
image it names and cropped (orchestrator/data/crop.py). A file whose series is rejected,
or that no nodule row reaches, is rejected with the reason; a row that finds no image is
listed by row number with the reason.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from orchestrator.config import DataConfig
from orchestrator.data.crop import OutsideVolume, nodule_centre, nodule_crops
from orchestrator.data.dicom import Rejected
from orchestrator.data.lidc import LabelRule, luna16_labels, nodule_rows, read_lidc
from orchestrator.data.nodules import NoduleRow
from orchestrator.data.samples import Outcome, Sample, pseudonym, read_images
from orchestrator.data.series import SeriesRejected, Volume, assemble_series, group_by_series
from orchestrator.data.volumes import is_volume_file, metaimage_data_file, read_volume, volume_series_uid


def read_nodule_crops(data_dir: Path, files: list[Path], rows: list[NoduleRow], cfg: DataConfig,
                      salt: bytes, annotations: dict[str, Path] | None = None
                      ) -> tuple[list[Outcome], list[Sample], dict]:
    """Every file's outcome, the crops, and the report's `nodules` and `crops` sections. The nodules are
    `rows`, and those of LIDC-IDRI `annotations` (relative path -> file, not among `files`), placed in the
    series they name once the series are read."""
    outcomes: list[Outcome] = []
    others = [r for r in rows if r.modality and r.modality != cfg.modality]
    rows = [r for r in rows if r not in others]
    volume_files = {p.relative_to(data_dir).as_posix(): p for p in files if is_volume_file(p)}
    data_files = {p.relative_to(data_dir).as_posix(): metaimage_data_file(p) for p in files}
    data_files = {rel: header for rel, header in data_files.items() if header is not None}
    not_dicom = set(volume_files) | set(data_files)
    dicom = [p for p in files if p.relative_to(data_dir).as_posix() not in not_dicom]
    volumes = _dicom_volumes(data_dir, dicom, cfg, outcomes) + _file_volumes(volume_files, rows, outcomes)
    rows, left_out = _with_lidc(rows, annotations or {}, volumes, LabelRule.of(cfg), outcomes)
    samples, row_report, used = _crop_rows(volumes, rows, cfg, salt)
    row_report += left_out
    row_report += [{"row": r.row, "status": "other_modality", "reason": f"a {r.modality} row; this ingest is "
                    f"{cfg.modality}"} for r in others]
    row_report.sort(key=lambda r: r["row"])
    norms: dict[str, set[str]] = {}
    for sample in samples:
        norms.setdefault(sample.provenance["volume"], set()).add(sample.norm)
    for volume in volumes:
        for rel in volume.files:
            if volume.key in used:
                outcomes.append(Outcome(rel, "accepted", detail=", ".join(sorted(norms[used[volume.key]]))))
            else:
                outcomes.append(Outcome(rel, "rejected", "no_nodule", "no row of the nodule table reaches this "
                                        "file's series or volume"))
    status = {o.file: o for o in outcomes}
    for rel, header in data_files.items():
        owner = status.get(header.relative_to(data_dir).as_posix())
        outcomes.append(Outcome(rel, owner.status if owner else "rejected", owner.reason if owner else "not_dicom",
                                f"pixel data of {header.name}" + (f": {owner.detail}" if owner and owner.detail else "")))
    return outcomes, samples, {"nodules": row_report, "crops": _crop_summary(samples, row_report, volumes, cfg)}


def _with_lidc(rows: list[NoduleRow], annotations: dict[str, Path], volumes: list[Volume], rule: LabelRule,
               outcomes: list[Outcome]) -> tuple[list[NoduleRow], list[dict]]:
    """The nodules to crop and the report of those left out: the table's rows when they carry labels (the
    annotation files then unused), LUNA16's unlabelled rows labelled from the annotations, or, with no
    table, the annotations' own nodules."""
    if not annotations:
        return rows, []
    if rows and all(r.label is not None for r in rows):
        outcomes += [Outcome(rel, "rejected", "not_used", "the nodule table labels the nodules") for rel in annotations]
        return rows, []
    nodules, unplaced, annotation_outcomes = read_lidc(annotations, volumes, rule)
    outcomes += annotation_outcomes
    return luna16_labels(rows, nodules, rule) if rows else nodule_rows(nodules, unplaced, rule)


def _dicom_volumes(data_dir: Path, files: list[Path], cfg: DataConfig, outcomes: list[Outcome]) -> list[Volume]:
    images = read_images(data_dir, files, cfg, outcomes)
    volumes = []
    for members in group_by_series(images).values():
        try:
            volumes.append(assemble_series(members))
            outcomes += [Outcome(rel, "rejected", "duplicate_slice", why) for rel, why in volumes[-1].set_aside]
        except SeriesRejected as rejection:
            for rel in sorted({rel for rel, _ in members}):
                detail = rejection.detail if rel in rejection.files else f"its series was rejected: {rejection.detail}"
                outcomes.append(Outcome(rel, "rejected", rejection.reason, detail))
    return volumes


def _file_volumes(volume_files: dict[str, Path], rows: list[NoduleRow], outcomes: list[Outcome]) -> list[Volume]:
    """The volume files some row names, by `file` or by `series_uid` (LUNA16's <seriesuid>.mhd). The patient
    comes from the rows' patient_id; without one the file stands in for a patient."""
    volumes = []
    for rel, path in volume_files.items():
        naming = [r for r in rows if (r.key_column, r.key) in {("file", rel), ("series_uid", volume_series_uid(path))}]
        if not naming:
            outcomes.append(Outcome(rel, "rejected", "no_nodule", "no row of the nodule table names this file"))
            continue
        patients = {r.patient_id for r in naming}
        try:
            volumes.append(read_volume(path, rel, patients.pop() if len(patients) == 1 and "" not in patients
                                       else f"volume:{rel}"))
        except Rejected as rejection:
            outcomes.append(Outcome(rel, "rejected", rejection.reason, rejection.detail))
    return volumes


def _crop_rows(volumes: list[Volume], rows: list[NoduleRow], cfg: DataConfig,
               salt: bytes) -> tuple[list[Sample], list[dict], dict[str, str]]:
    """Crops of every row that finds its image; the per-row report; volume key -> pseudonym used."""
    index: dict[tuple[str, str], Volume] = {}
    for volume in volumes:
        index[("series_uid", volume.series_uid)] = volume
        index.update({("file", rel): volume for rel in volume.files})
        index.update({("sop_uid", uid): volume for uid in volume.slice_uids if uid})
    samples, report, used = [], [], {}
    for row in rows:
        volume = index.get((row.key_column, row.key))
        if volume is None:
            report.append({"row": row.row, "status": "unmatched", "reason": f"no accepted image has this "
                           f"{row.key_column} (see the files' reasons)"})
            continue
        try:
            centre = nodule_centre(row, volume)
        except OutsideVolume as err:
            report.append({"row": row.row, "status": "outside", "reason": str(err)})
            continue
        used[volume.key] = pseudonym(volume.key, salt, prefix="se")
        crops = nodule_crops(volume, centre, cfg)
        world = volume.geometry.to_world(centre)
        for crop in crops:
            samples.append(Sample(crop.image, row.label, volume.patient_id, crop.norm, crop.norm_note, provenance={
                "volume": used[volume.key], "nodule_row": row.row, "form": row.form,
                "centre_mm": np.round(world, 3).tolist(), "centre_voxel": np.round(centre, 3).tolist(),
                "slice": crop.slice_index, "offset_mm": round(crop.offset_mm, 3),
                "spacing_mm": [round(float(v), 4) for v in volume.geometry.spacing],
                "pixel_mm": round(cfg.roi_mm / cfg.size, 4), "padded": round(crop.padded, 4),
                **({"readers": row.features} if row.features else {})}))
        report.append({"row": row.row, "status": "used", "crops": len(crops)})
    return samples, report, used


def _crop_summary(samples: list[Sample], row_report: list[dict], volumes: list[Volume], cfg: DataConfig) -> dict:
    """What ingest_report.json and the sweep's record say about the crops (each crop's own
    provenance is stored with the cache, in crops.json)."""
    spacing = np.array([s.provenance["spacing_mm"] for s in samples]).reshape(-1, 3)
    return {
        "roi_mm": cfg.roi_mm, "pixel_mm": cfg.roi_mm / cfg.size, "slab_mm": cfg.slab_mm, "size": cfg.size,
        "nodule_rows": dict(Counter(r["status"] for r in row_report)), "crops": len(samples),
        "padded_crops": sum(s.provenance["padded"] > 0 for s in samples),
        "spacing_mm_min": spacing.min(0).round(4).tolist() if len(spacing) else None,
        "spacing_mm_max": spacing.max(0).round(4).tolist() if len(spacing) else None,
        "series_standing_in_for_patients": sum(v.patient_id.startswith("volume:") for v in volumes),
    }
