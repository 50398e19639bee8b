"""The nodule table: one row per nodule, its label and its place in one of three forms.

  world  series_uid or file, coord_x, coord_y, coord_z (mm, DICOM patient LPS), diameter_mm optional
         (LUNA16's own names, seriesuid / coordX / coordY / coordZ, are accepted as they are)
  voxel  series_uid or file, slice (index in the sorted series, or a SOP Instance UID), row, col
  box    sop_uid or file (of that slice), x_min, y_min, x_max, y_max in pixels
Optional: patient_id (needed where a volume has none), nodule_id, modality (pet / ct: a row of
another modality than the ingest's is set aside, which is how one table serves PET and CT volumes).

A row that cannot be read is an error with its row number; a row that matches no image is
reported by ingest. Values are never copied into reports: they may identify a patient.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from orchestrator.data.labels import LabelError, parse_label

ALIASES = {"seriesuid": "series_uid", "coordx": "coord_x", "coordy": "coord_y", "coordz": "coord_z"}
FORMS = {
    "world": ("coord_x", "coord_y", "coord_z"),
    "voxel": ("slice", "row", "col"),
    "box": ("x_min", "y_min", "x_max", "y_max"),
}
KEYS = {"world": ("series_uid", "file"), "voxel": ("series_uid", "file"), "box": ("sop_uid", "file")}


class NoduleTableError(LabelError):
    """The nodule table cannot be used as it is."""


@dataclass(frozen=True)
class NoduleRow:
    row: int  # CSV row number: the nodule's provenance
    label: int | None  # None: LUNA16's annotations.csv, labelled later from LIDC-IDRI's reader annotations
    form: str  # "world" | "voxel" | "box"
    key_column: str  # which column names the image: series_uid, file or sop_uid
    key: str
    place: tuple  # the form's columns, as floats (a voxel row's slice may be a SOP Instance UID)
    diameter_mm: float | None
    patient_id: str
    nodule_id: str
    modality: str  # "" when the table does not say
    features: dict | None = None  # what readers said of the nodule (LIDC: ratings), kept with its crops


def read_nodule_table(path: Path) -> list[NoduleRow]:
    """The table's rows. A table without a `label` column is LUNA16's annotations.csv (world centres by
    series): its rows have label None, for LIDC-IDRI's reader annotations to label (orchestrator.data.lidc)."""
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = {_column(c) for c in reader.fieldnames or []}
        labelled = "label" in columns
        if not labelled and "class" in columns and set(FORMS["world"]) <= columns:
            raise NoduleTableError(f"{path}: this is LUNA16's candidates.csv, candidate locations for detection "
                                   "(class 1: near a nodule), not a nodule table; give LUNA16's annotations.csv with "
                                   "the LIDC-IDRI XML of the same series in the data folder, or a table with labels")
        if not labelled and not {"series_uid", *FORMS["world"]} <= columns:
            raise NoduleTableError(f"{path}: needs a 'label' column (benign / malignant / 0 / 1), or to be LUNA16's "
                                   "annotations.csv (seriesuid, coordX, coordY, coordZ) with the LIDC-IDRI XML of the "
                                   "same series in the data folder to label it")
        rows = [_parse_row(path, n, {_column(k): (v or "").strip() for k, v in row.items() if k}, labelled)
                for n, row in enumerate(reader, start=2)]
    if not rows:
        raise NoduleTableError(f"{path}: no nodule rows")
    return rows


def _column(name: str) -> str:
    name = name.strip()
    return ALIASES.get(name.lower(), name.lower())


def _parse_row(path: Path, n: int, row: dict[str, str], labelled: bool = True) -> NoduleRow:
    where = f"{path} row {n}"
    label = parse_label(row.get("label", "")) if labelled else None
    if labelled and label is None:
        raise NoduleTableError(f"{where}: label {row.get('label')!r} is not benign / malignant / 0 / 1")
    forms = [form for form, columns in FORMS.items() if all(row.get(c) for c in columns)]
    if len(forms) != 1:
        raise NoduleTableError(f"{where}: give the nodule's place in exactly one form "
                               f"({'; '.join(f'{f}: ' + ', '.join(c) for f, c in FORMS.items())}), "
                               f"found {len(forms) or 'none'}")
    form = forms[0]
    key_column = next((c for c in KEYS[form] if row.get(c)), None)
    if key_column is None:
        raise NoduleTableError(f"{where}: a {form} position needs one of {list(KEYS[form])}")
    place = tuple(_number(where, c, row[c], allow_uid=(form, c) == ("voxel", "slice")) for c in FORMS[form])
    diameter = _number(where, "diameter_mm", row["diameter_mm"]) if row.get("diameter_mm") else None
    key = row[key_column]
    return NoduleRow(row=n, label=label, form=form, key_column=key_column,
                     key=Path(key).as_posix() if key_column == "file" else key, place=place,
                     diameter_mm=diameter, patient_id=row.get("patient_id", ""), nodule_id=row.get("nodule_id", ""),
                     modality=row.get("modality", "").lower())


def _number(where: str, column: str, raw: str, allow_uid: bool = False) -> float | str:
    try:
        return float(raw)
    except ValueError:
        if allow_uid and all(part.isdigit() for part in raw.split(".")):
            return raw  # a SOP Instance UID naming the slice
        raise NoduleTableError(f"{where}: {column} is not a number") from None
