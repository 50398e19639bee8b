"""The modality registry: what a modality means to the project, in one entry each.

Config, ingest, the phantom and the CLIs read their choices from `MODALITIES`, so adding
one (MR, say) is one `Modality(...)` here: its DICOM code and storage classes, the value
that pads a crop beyond the image, how its header scales values, and how its values are
normalised to [0, 1].
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
from pydicom.dataset import Dataset

if TYPE_CHECKING:
    from orchestrator.config import DataConfig


@dataclass(frozen=True)
class Scale:
    """What a normaliser needs beyond the values: a header's calibration, or why it has none."""

    factor: float | None = None  # PET: body-weight SUV per Bq/ml
    note: str = ""  # why `factor` is unavailable
    # The value range a min-max fallback maps to [0, 1]: a whole series' for crops (a crop's own
    # range would erase uptake differences); None: the values' own range (a whole slice).
    reference: tuple[float, float] | None = None


Normaliser = Callable[[np.ndarray, Scale, "DataConfig"], tuple[np.ndarray, str, str]]


@dataclass(frozen=True)
class Modality:
    name: str  # the config / CLI name
    dicom_code: str  # Modality (0008,0060)
    image_storage: str  # SOP class of one slice per file
    enhanced_storage: str  # SOP class of the enhanced multi-frame object (one file per series)
    units: str  # what rescaled stored values mean
    background: float  # value outside the body, in `units`: pads crops that run past the image
    scale_from_header: Callable[[Dataset], Scale]
    normalise: Normaliser  # (values, scale, data config) -> (image in [0, 1], norm name, note)
    scanner_spacing_mm: tuple[float, float]  # typical (in-plane, between slices): what the phantom writes


def _no_scale(ds: Dataset) -> Scale:
    return Scale()


def _ct_lung_window(hu: np.ndarray, scale: Scale, cfg: DataConfig) -> tuple[np.ndarray, str, str]:
    centre, width = cfg.ct_window
    return np.clip((hu - (centre - width / 2)) / width, 0.0, 1.0).astype(np.float32), "ct_lung_window", ""


def _pet_suv(bq_ml: np.ndarray, scale: Scale, cfg: DataConfig) -> tuple[np.ndarray, str, str]:
    """SUV / suv_max clipped to [0, 1] when the header allows SUV, else min-max of what is given
    (one slice, or a whole series for crops, where a crop's own range would erase uptake)."""
    if scale.factor is not None:
        return np.clip(bq_ml * scale.factor / cfg.pet_suv_max, 0.0, 1.0).astype(np.float32), "suv", ""
    low, high = scale.reference or (float(bq_ml.min()), float(bq_ml.max()))
    scaled = np.clip((bq_ml - low) / (high - low), 0.0, 1.0) if high > low else np.zeros_like(bq_ml)
    return scaled.astype(np.float32), "minmax", scale.note


def suv_scale(ds: Dataset) -> Scale:
    """Body-weight SUV factor (g/Bq) of a PET header, or the reason it is unavailable."""
    if str(ds.get("Units", "")).upper() != "BQML":
        return Scale(note=f"Units is {ds.get('Units', 'missing')!r}, SUV needs BQML")
    drugs = ds.get("RadiopharmaceuticalInformationSequence") or [Dataset()]
    try:
        weight_kg = float(ds.get("PatientWeight") or 0)
        dose_bq = float(drugs[0].get("RadionuclideTotalDose") or 0)
        half_life_s = float(drugs[0].get("RadionuclideHalfLife") or 0)
        injected = drugs[0].get("RadiopharmaceuticalStartTime")
        series_start = ds.get("SeriesTime")
        if not (injected and series_start):
            return Scale(note="no RadiopharmaceuticalStartTime or SeriesTime")
        injected_s, series_start_s = _time_of_day_s(str(injected)), _time_of_day_s(str(series_start))
    except (TypeError, ValueError) as err:
        return Scale(note=f"an SUV tag is unreadable ({err})")
    for value, keyword in [(weight_kg, "PatientWeight"), (dose_bq, "RadionuclideTotalDose"),
                           (half_life_s, "RadionuclideHalfLife")]:
        if value <= 0:
            return Scale(note=f"no usable {keyword}")
    correction = str(ds.get("DecayCorrection", "")).upper()
    if correction == "ADMIN":
        decay = 1.0
    elif correction == "START":
        elapsed = (series_start_s - injected_s) % 86400  # an injection before midnight still works
        decay = 2.0 ** (-elapsed / half_life_s)
    else:
        return Scale(note=f"DecayCorrection {correction or 'missing'!r}: only START and ADMIN are handled")
    return Scale(factor=weight_kg * 1000.0 / (dose_bq * decay))


def _time_of_day_s(tm: str) -> float:
    """DICOM TM ('HHMMSS.FFFFFF', parts optional) -> seconds since midnight."""
    tm = tm.strip().replace(":", "")
    hours, minutes = int(tm[0:2]), int(tm[2:4] or 0)
    seconds = float(tm[4:] or 0)
    return dt.timedelta(hours=hours, minutes=minutes, seconds=seconds).total_seconds()


MODALITIES: dict[str, Modality] = {m.name: m for m in (
    Modality("pet", "PT", "1.2.840.10008.5.1.4.1.1.128", "1.2.840.10008.5.1.4.1.1.130", "BQML", 0.0,
             suv_scale, _pet_suv, (4.0, 3.0)),
    Modality("ct", "CT", "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1", "HU", -1000.0,
             _no_scale, _ct_lung_window, (1.25, 2.5)),
)}
