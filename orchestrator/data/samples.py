"""What reading produces: one outcome per file found, and the samples the models will see."""
from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from orchestrator.config import DataConfig
from orchestrator.data.dicom import Image, Rejected, read_image


@dataclass
class Outcome:
    file: str  # path relative to the data folder
    status: str  # "accepted" | "rejected"
    reason: str = ""
    detail: str = ""

    def as_dict(self) -> dict[str, str]:
        return {k: v for k, v in vars(self).items() if v}


@dataclass(frozen=True)
class Sample:
    image: np.ndarray  # float32 (size, size) in [0, 1]
    label: int
    patient_id: str  # raw identifier: ingest pseudonymises it and stores nothing else of it
    norm: str  # the modality normaliser's name for what it did ("suv", "minmax", "ct_lung_window")
    norm_note: str  # why the preferred normalisation could not be used, else ""
    provenance: dict | None = None  # a crop's origin (no identifiers); None for a whole slice


def pseudonym(identifier: str, salt: bytes, prefix: str = "pt") -> str:
    """A salted, keyed hash: stable on one machine, meaningless without its salt."""
    return f"{prefix}-" + hmac.new(salt, identifier.encode(), hashlib.sha256).hexdigest()[:16]


def read_images(data_dir: Path, files: list[Path], cfg: DataConfig,
                 outcomes: list[Outcome]) -> list[tuple[str, Image]]:
    """The readable images of `cfg.modality` (the first of each SOP Instance UID); the outcome of
    every other file goes to `outcomes`."""
    images: list[tuple[str, Image]] = []
    first_seen: dict[str, str] = {}  # SOPInstanceUID -> file
    for path in files:
        rel = path.relative_to(data_dir).as_posix()
        try:
            image = read_image(path, cfg)
            if image.sop_uid in first_seen:
                raise Rejected("duplicate_sop_uid", f"same SOPInstanceUID as {first_seen[image.sop_uid]}")
        except Rejected as rejection:
            outcomes.append(Outcome(rel, "rejected", rejection.reason, rejection.detail))
            continue
        first_seen[image.sop_uid] = rel
        images.append((rel, image))
    return images
