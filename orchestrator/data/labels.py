"""Labels for slices: from a CSV (by file, series, study or patient) or from folder names."""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from trainables.cohort import LABEL_NAMES

LABELS = {name: label for label, name in enumerate(LABEL_NAMES)}  # also the folder names that label slices
# Most specific key first: a file's own row wins over its series', study's and patient's.
KEY_COLUMNS = ("file", "series_uid", "study_uid", "patient_id")


class LabelError(ValueError):
    """The label table cannot be used as it is."""


@dataclass
class LabelTable:
    """Maps slice keys to labels and remembers which CSV rows were used."""

    source: str  # "labels.csv" (its file name) or "folders"
    rows: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)  # (column, value) -> (label, row)
    used_rows: set[int] = field(default_factory=set)

    @classmethod
    def from_csv(cls, path: Path) -> LabelTable:
        table = cls(source=path.name)
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = set(reader.fieldnames or ())
            if "label" not in columns or not columns & set(KEY_COLUMNS):
                raise LabelError(f"{path}: needs a 'label' column and at least one of {list(KEY_COLUMNS)}")
            for row_number, row in enumerate(reader, start=2):
                table._add_row(path, row_number, row)
        return table

    def _add_row(self, path: Path, row_number: int, row: dict[str, str]) -> None:
        raw_label = (row.get("label") or "").strip().lower()
        label = parse_label(raw_label)
        if label is None:
            raise LabelError(f"{path} row {row_number}: label {raw_label!r} is not benign / malignant / 0 / 1")
        keys = [(c, (row.get(c) or "").strip()) for c in KEY_COLUMNS if (row.get(c) or "").strip()]
        if not keys:
            raise LabelError(f"{path} row {row_number}: no value in any of {list(KEY_COLUMNS)}")
        column, value = keys[0]  # the most specific key the row gives
        if column == "file":
            value = Path(value).as_posix()
        previous = self.rows.get((column, value))
        if previous and previous[0] != label:
            raise LabelError(f"{path} rows {previous[1]} and {row_number}: the same {column} has two labels")
        self.rows[(column, value)] = (label, row_number)

    def label_for(self, rel_path: str, series_uid: str, study_uid: str, patient_id: str) -> int | None:
        if self.source == "folders":
            return folder_label(rel_path)
        for key in zip(KEY_COLUMNS, (rel_path, series_uid, study_uid, patient_id)):
            hit = self.rows.get(key)
            if hit:
                self.used_rows.add(hit[1])
                return hit[0]
        return None

    def unused_rows(self) -> list[dict[str, object]]:
        """CSV rows that labelled no accepted slice, by row number and key column (no values:
        a value may be a patient identifier)."""
        return [
            {"row": row, "key": column}
            for (column, _), (_, row) in sorted(self.rows.items(), key=lambda kv: kv[1][1])
            if row not in self.used_rows
        ]


def parse_label(raw: str) -> int | None:
    """benign / malignant / 0 / 1 (any case) -> 0 / 1; None for anything else."""
    raw = raw.strip().lower()
    return LABELS.get(raw, {"0": 0, "1": 1}.get(raw))


def folder_label(rel_path: str) -> int | None:
    """The label from a `benign/` or `malignant/` folder anywhere in the path."""
    parts = {part.lower() for part in Path(rel_path).parts[:-1]}
    found = {LABELS[p] for p in parts & set(LABELS)}
    return found.pop() if len(found) == 1 else None
