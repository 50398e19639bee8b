"""Read one DICOM file into a preprocessed slice, or say precisely why it cannot be used.

This is the only module that reads patient DICOM. The raw PatientID leaves it only inside
`Slice.patient_id`, which `ingest` turns into a salted pseudonym before anything is stored.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import get_decoder

from orchestrator.config import DataConfig

DICOM_MODALITY = {"pet": "PT", "ct": "CT"}
# Objects that are not image slices even when they carry pixel data or a modality.
UNDEFINED_LENGTH = 0xFFFFFFFF
NON_IMAGE_MODALITIES = {"SR", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "KO", "PR", "REG", "SEG", "DOC"}


class Rejected(Exception):
    """A file that cannot become a slice; `reason` is a short code, `detail` says why."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class Slice:
    image: np.ndarray  # float32, (size, size), in [0, 1]
    patient_id: str  # raw identifier: pseudonymised by ingest, never stored
    study_uid: str
    series_uid: str
    sop_uid: str
    norm: str  # "ct_lung_window" | "suv" | "slice_minmax"
    norm_note: str  # for PET: why SUV could not be used, else ""


def read_slice(path: Path, cfg: DataConfig) -> Slice:
    """Read, check and preprocess one file for `cfg.modality`; raise Rejected otherwise."""
    ds = _read_dataset(path)
    _check_is_wanted_image(ds, cfg.modality)
    patient_id = str(ds.get("PatientID", "") or "").strip()
    if not patient_id:
        raise Rejected("missing_patient_id", "no PatientID: slices cannot be split by patient")
    sop_uid = str(ds.get("SOPInstanceUID", "") or "").strip()
    if not sop_uid:
        raise Rejected("invalid_header", "no SOPInstanceUID")
    pixels = _decode_pixels(ds, cfg.min_slice_px)
    values = pixels * _number(ds, "RescaleSlope", 1.0) + _number(ds, "RescaleIntercept", 0.0)
    if cfg.modality == "ct":
        image, norm, note = _ct_lung_window(values, *cfg.ct_window), "ct_lung_window", ""
    else:
        image, norm, note = _pet_normalise(values, ds, cfg.pet_suv_max)
    return Slice(
        image=_resize_square(image, cfg.size),
        patient_id=patient_id,
        study_uid=str(ds.get("StudyInstanceUID", "")),
        series_uid=str(ds.get("SeriesInstanceUID", "")),
        sop_uid=sop_uid,
        norm=norm,
        norm_note=note,
    )


def _read_dataset(path: Path) -> pydicom.Dataset:
    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError:
        raise Rejected("not_dicom", "no DICOM file header (no 'DICM' after the 128-byte preamble); "
                       "a bare dataset without it must be re-saved as a DICOM file") from None
    except Exception as err:  # pydicom raises many types for garbled files
        raise Rejected("unreadable", f"pydicom could not parse the file: {type(err).__name__}: {err}") from None
    _check_not_truncated(ds)
    return ds


def _check_not_truncated(ds: pydicom.Dataset) -> None:
    """pydicom reads a cut-off file without complaint: the last element comes back short."""
    if "TransferSyntaxUID" not in ds.file_meta:
        raise Rejected("truncated", "the file meta header ends before its Transfer Syntax UID")
    if not len(ds):
        raise Rejected("truncated", "the file ends after its meta header")
    last = ds.get_item(max(ds.keys()))
    declared = getattr(last, "length", 0)
    value = getattr(last, "value", None)
    if isinstance(value, bytes) and declared != UNDEFINED_LENGTH and len(value) < declared:
        raise Rejected("truncated", f"the file ends inside element {last.tag} ({len(value)} of {declared} bytes)")


def _check_is_wanted_image(ds: pydicom.Dataset, modality: str) -> None:
    found = str(ds.get("Modality", "") or "").upper()
    if found in NON_IMAGE_MODALITIES:
        sop = ds.get("SOPClassUID")
        kind = getattr(sop, "name", None) or str(sop or "unknown SOP class")
        raise Rejected("non_image_object", f"{found} object ({kind}), not an image slice")
    wanted = DICOM_MODALITY[modality]
    if not found:
        raise Rejected("missing_modality", "no Modality element (a damaged or truncated file, or not an image)")
    if found != wanted:
        raise Rejected("other_modality", f"Modality is {found}, this ingest wants {wanted}")
    if "PixelData" not in ds:
        raise Rejected("no_pixel_data", f"a {found} dataset without PixelData (cut short, if it should hold an image)")


def _decode_pixels(ds: pydicom.Dataset, min_px: int) -> np.ndarray:
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if syntax is not None and syntax.is_compressed and not get_decoder(syntax).is_available:
        missing = "; ".join(get_decoder(syntax).missing_dependencies)
        raise Rejected("compressed_no_decoder", f"{syntax.name} needs a decoder that is not installed ({missing})")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if frames != 1 or samples != 1:
        raise Rejected("unexpected_shape", f"{frames} frame(s) x {samples} sample(s) per pixel; expected one grey slice")
    try:
        pixels = ds.pixel_array
    except Exception as err:
        short = "pixel data shorter than Rows x Columns says" if "length" in str(err) or "bytes" in str(err) else str(err)
        raise Rejected("bad_pixel_data", f"{type(err).__name__}: {short}") from None
    if pixels.ndim != 2 or min(pixels.shape) < min_px:
        raise Rejected("unexpected_shape", f"pixel array of shape {pixels.shape}; expected 2-D, at least {min_px} px a side")
    return pixels.astype(np.float32)


def _number(ds: pydicom.Dataset, keyword: str, default: float) -> float:
    try:
        value = ds.get(keyword)
        return default if value in (None, "") else float(value)
    except (TypeError, ValueError) as err:
        raise Rejected("invalid_value", f"{keyword} is not a number ({err})") from None


def _ct_lung_window(hu: np.ndarray, centre: float, width: float) -> np.ndarray:
    return np.clip((hu - (centre - width / 2)) / width, 0.0, 1.0)


def _pet_normalise(bq_ml: np.ndarray, ds: pydicom.Dataset, suv_max: float) -> tuple[np.ndarray, str, str]:
    """SUV / suv_max clipped to [0, 1] when the tags allow SUV, else per-slice min-max."""
    factor, why_not = suv_factor(ds)
    if factor is not None:
        return np.clip(bq_ml * factor / suv_max, 0.0, 1.0), "suv", ""
    low, high = float(bq_ml.min()), float(bq_ml.max())
    scaled = (bq_ml - low) / (high - low) if high > low else np.zeros_like(bq_ml)
    return scaled, "slice_minmax", why_not


def suv_factor(ds: pydicom.Dataset) -> tuple[float | None, str]:
    """Body-weight SUV factor (g/Bq) for a PET slice, or (None, the reason it is unavailable)."""
    if str(ds.get("Units", "")).upper() != "BQML":
        return None, f"Units is {ds.get('Units', 'missing')!r}, SUV needs BQML"
    drugs = ds.get("RadiopharmaceuticalInformationSequence") or [Dataset()]
    try:
        weight_kg = float(ds.get("PatientWeight") or 0)
        dose_bq = float(drugs[0].get("RadionuclideTotalDose") or 0)
        half_life_s = float(drugs[0].get("RadionuclideHalfLife") or 0)
        injected = drugs[0].get("RadiopharmaceuticalStartTime")
        series_start = ds.get("SeriesTime")
        if not (injected and series_start):
            return None, "no RadiopharmaceuticalStartTime or SeriesTime"
        injected_s, series_start_s = _time_of_day_s(str(injected)), _time_of_day_s(str(series_start))
    except (TypeError, ValueError) as err:
        return None, f"an SUV tag is unreadable ({err})"
    for value, keyword in [(weight_kg, "PatientWeight"), (dose_bq, "RadionuclideTotalDose"),
                           (half_life_s, "RadionuclideHalfLife")]:
        if value <= 0:
            return None, f"no usable {keyword}"
    correction = str(ds.get("DecayCorrection", "")).upper()
    if correction == "ADMIN":
        decay = 1.0
    elif correction == "START":
        elapsed = (series_start_s - injected_s) % 86400  # an injection before midnight still works
        decay = 2.0 ** (-elapsed / half_life_s)
    else:
        return None, f"DecayCorrection {correction or 'missing'!r}: only START and ADMIN are handled"
    return weight_kg * 1000.0 / (dose_bq * decay), ""


def _time_of_day_s(tm: str) -> float:
    """DICOM TM ('HHMMSS.FFFFFF', parts optional) -> seconds since midnight."""
    tm = tm.strip().replace(":", "")
    hours, minutes = int(tm[0:2]), int(tm[2:4] or 0)
    seconds = float(tm[4:] or 0)
    return dt.timedelta(hours=hours, minutes=minutes, seconds=seconds).total_seconds()


def _resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Pad to a square with 0 (background after normalisation), then resize (antialiased)."""
    h, w = image.shape
    side = max(h, w)
    if h != w:
        padded = np.zeros((side, side), np.float32)
        top, left = (side - h) // 2, (side - w) // 2
        padded[top:top + h, left:left + w] = image
        image = padded
    if side != size:
        # Pillow's bilinear resize widens its kernel when shrinking, so it does not alias.
        image = np.asarray(Image.fromarray(image.astype(np.float32)).resize((size, size), Image.BILINEAR))
    return np.clip(image, 0.0, 1.0).astype(np.float32)
