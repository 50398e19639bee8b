"""Read one DICOM file into frames of physical values with their geometry, or say precisely
why it cannot be used.

This is the only module that reads patient DICOM. The raw PatientID leaves it only inside
`Image.patient_id`, which `ingest` turns into a salted pseudonym before anything is stored.
A file is one slice, or an enhanced multi-frame object whose frames are the slices of a
series, each with its position, orientation and rescale from the functional groups.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import get_decoder

from orchestrator.config import DataConfig
from orchestrator.data.modalities import MODALITIES, Scale

UNDEFINED_LENGTH = 0xFFFFFFFF
# Objects that are not image slices even when they carry pixel data or a modality.
NON_IMAGE_MODALITIES = {"SR", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "KO", "PR", "REG", "SEG", "DOC"}
# What would decode a syntax that nothing installed can: named in the rejection.
DECODER_HINT = "python-gdcm (JPEG, JPEG-LS, JPEG 2000) or pylibjpeg-openjpeg (JPEG 2000, HTJ2K)"


class Rejected(Exception):
    """A file (or series) that cannot be used; `reason` is a short code, `detail` says why."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class Frame:
    """One slice in physical units (HU, Bq/ml) with where it lies in patient space (LPS, mm)."""

    values: np.ndarray  # float32 (rows, columns)
    position: tuple[float, float, float] | None  # Image Position (Patient): centre of the first pixel
    orientation: tuple[float, ...] | None  # Image Orientation (Patient): row direction, column direction
    spacing: tuple[float, float] | None  # Pixel Spacing: between rows, between columns
    uid: str  # SOP Instance UID, with ".f<n>" for the frames of a multi-frame file


@dataclass(frozen=True)
class Image:
    """What one file holds: its frames and the keys that group and label them."""

    frames: list[Frame]
    patient_id: str  # raw identifier: pseudonymised by ingest, never stored
    study_uid: str
    series_uid: str
    sop_uid: str
    scale: Scale  # the modality's header calibration (PET: SUV factor)


def read_image(path: Path, cfg: DataConfig) -> Image:
    """Read and check one file for `cfg.modality`; raise Rejected otherwise."""
    ds = _read_dataset(path)
    _check_is_wanted_image(ds, cfg.modality)
    patient_id = str(ds.get("PatientID", "") or "").strip()
    if not patient_id:
        raise Rejected("missing_patient_id", "no PatientID: slices cannot be split by patient")
    sop_uid = str(ds.get("SOPInstanceUID", "") or "").strip()
    if not sop_uid:
        raise Rejected("invalid_header", "no SOPInstanceUID")
    pixels = _decode_pixels(ds, cfg.min_slice_px)
    frames = _enhanced_frames(ds, pixels, sop_uid) if pixels.ndim == 3 else [_single_frame(ds, pixels, sop_uid)]
    return Image(frames=frames, patient_id=patient_id, study_uid=str(ds.get("StudyInstanceUID", "")),
                 series_uid=str(ds.get("SeriesInstanceUID", "")), sop_uid=sop_uid,
                 scale=MODALITIES[cfg.modality].scale_from_header(ds))


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
    wanted = MODALITIES[modality].dicom_code
    if not found:
        raise Rejected("missing_modality", "no Modality element (a damaged or truncated file, or not an image)")
    if found != wanted:
        raise Rejected("other_modality", f"Modality is {found}, this ingest wants {wanted}")
    if "PixelData" not in ds:
        raise Rejected("no_pixel_data", f"a {found} dataset without PixelData (cut short, if it should hold an image)")


def _decode_pixels(ds: pydicom.Dataset, min_px: int) -> np.ndarray:
    """Stored values, (rows, columns) or (frames, rows, columns), as float32."""
    _check_decodable(ds.file_meta.get("TransferSyntaxUID"))
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples != 1:
        raise Rejected("unexpected_shape", f"{samples} samples per pixel; expected grey slices")
    if frames > 1 and "PerFrameFunctionalGroupsSequence" not in ds:
        raise Rejected("unexpected_shape", f"{frames} frame(s) without per-frame functional groups, so no "
                       "position per frame; expected one slice, or an enhanced multi-frame image")
    try:
        pixels = ds.pixel_array
    except Exception as err:
        syntax = ds.file_meta.get("TransferSyntaxUID")
        if syntax is not None and syntax.is_compressed and "does not support" in str(err):
            # e.g. 12-bit JPEG Extended: GDCM and Pillow decline it, pylibjpeg-libjpeg (GPL-3) reads it
            unsupported = "; ".join(line.strip() for line in str(err).splitlines()[1:] if line.strip())
            raise Rejected("compressed_no_decoder", f"{syntax.name}: no installed decoder handles this variant "
                           f"({unsupported}); pylibjpeg-libjpeg would (GPL-3, so not installed by default)") from None
        short = "pixel data shorter than Rows x Columns says" if "length" in str(err) or "bytes" in str(err) else str(err)
        raise Rejected("bad_pixel_data", f"{type(err).__name__}: {short}") from None
    if pixels.ndim != (3 if frames > 1 else 2) or min(pixels.shape[-2:]) < min_px:
        raise Rejected("unexpected_shape", f"pixel array of shape {pixels.shape}; expected {frames} frame(s) "
                       f"of at least {min_px} px a side")
    return pixels.astype(np.float32)


def _check_decodable(syntax: pydicom.uid.UID | None) -> None:
    if syntax is None:
        return
    try:
        if not syntax.is_compressed:
            return
        decoder = get_decoder(syntax)
    except ValueError:  # a UID pydicom does not know as a transfer syntax (JPEG XL in pydicom 3.0)
        raise Rejected("compressed_no_decoder", f"transfer syntax {syntax} is unknown to pydicom "
                       f"{pydicom.__version__}: nothing installed can decode it") from None
    except NotImplementedError:  # video syntaxes and the like: pydicom has no decoder at all
        raise Rejected("compressed_no_decoder", f"{syntax.name} ({syntax}): pydicom has no decoder for this "
                       "syntax") from None
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies)
        raise Rejected("compressed_no_decoder", f"{syntax.name} ({syntax}) needs a decoder that is not installed "
                       f"({missing}); {DECODER_HINT} would, where they support it")


def _single_frame(ds: Dataset, pixels: np.ndarray, sop_uid: str) -> Frame:
    values = pixels * _number(ds, "RescaleSlope", 1.0) + _number(ds, "RescaleIntercept", 0.0)
    return Frame(values=values, position=_floats(ds, "ImagePositionPatient", 3),
                 orientation=_floats(ds, "ImageOrientationPatient", 6), spacing=_floats(ds, "PixelSpacing", 2),
                 uid=sop_uid)


def _enhanced_frames(ds: Dataset, pixels: np.ndarray, sop_uid: str) -> list[Frame]:
    """Frames of an enhanced image: each attribute from the frame's own functional group, else
    from the shared one (DICOM PS3.3 C.7.6.16)."""
    per_frame = ds.PerFrameFunctionalGroupsSequence
    if len(per_frame) != len(pixels):
        raise Rejected("invalid_header", f"{len(pixels)} frames but {len(per_frame)} per-frame functional groups")
    shared = (ds.get("SharedFunctionalGroupsSequence") or [Dataset()])[0]
    frames = []
    for n, (group, stored) in enumerate(zip(per_frame, pixels)):
        def find(sequence: str) -> Dataset:
            return (group.get(sequence) or shared.get(sequence) or [Dataset()])[0]
        rescale = find("PixelValueTransformationSequence")
        values = stored * _number(rescale, "RescaleSlope", 1.0) + _number(rescale, "RescaleIntercept", 0.0)
        frames.append(Frame(values=values, position=_floats(find("PlanePositionSequence"), "ImagePositionPatient", 3),
                            orientation=_floats(find("PlaneOrientationSequence"), "ImageOrientationPatient", 6),
                            spacing=_floats(find("PixelMeasuresSequence"), "PixelSpacing", 2),
                            uid=f"{sop_uid}.f{n + 1}"))
    return frames


def _number(ds: Dataset, keyword: str, default: float) -> float:
    try:
        value = ds.get(keyword)
        return default if value in (None, "") else float(value)
    except (TypeError, ValueError) as err:
        raise Rejected("invalid_value", f"{keyword} is not a number ({err})") from None


def _floats(ds: Dataset, keyword: str, count: int) -> tuple[float, ...] | None:
    """A multi-valued decimal attribute, None when absent; wrong counts are rejected."""
    value = ds.get(keyword)
    if value in (None, ""):
        return None
    try:
        numbers = tuple(float(v) for v in (value if isinstance(value, (list, tuple, pydicom.multival.MultiValue))
                                           else [value]))
    except (TypeError, ValueError) as err:
        raise Rejected("invalid_value", f"{keyword} is not numeric ({err})") from None
    if len(numbers) != count:
        raise Rejected("invalid_value", f"{keyword} has {len(numbers)} values, expected {count}")
    return numbers
