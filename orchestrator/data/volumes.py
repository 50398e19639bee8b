"""MetaImage (.mhd / .mha) and NIfTI (.nii, .nii.gz) volumes through SimpleITK.

SimpleITK hands back origin, spacing and direction in LPS, the frame DICOM uses, so a
LUNA16 `annotations.csv` (world millimetres) maps onto these volumes as it does onto
DICOM, and a row's `series_uid` matches a file named `<series_uid>.mhd` as LUNA16 names
them. Values are taken as the modality's units (LUNA16 stores HU); a volume has no PET
calibration header, so PET volumes are min-max scaled per volume, and the report says so.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from orchestrator.data.dicom import Rejected
from orchestrator.data.geometry import Geometry
from orchestrator.data.modalities import Scale
from orchestrator.data.series import Volume

VOLUME_SUFFIXES = (".mhd", ".mha", ".nii", ".nii.gz")
# Pixel files a MetaImage header points at: they belong to their .mhd, not separate inputs.
METAIMAGE_DATA_SUFFIXES = (".raw", ".zraw")


def is_volume_file(path: Path) -> bool:
    return path.name.lower().endswith(VOLUME_SUFFIXES)


def volume_series_uid(path: Path) -> str:
    """A volume file's name without its suffix: LUNA16 names each file by its series UID."""
    name = path.name
    return next(name[: -len(s)] for s in VOLUME_SUFFIXES if name.lower().endswith(s))


def metaimage_data_file(path: Path) -> Path | None:
    """The .mhd a .raw / .zraw belongs to, when that header sits beside it."""
    if path.suffix.lower() not in METAIMAGE_DATA_SUFFIXES:
        return None
    header = path.with_suffix(".mhd")
    return header if header.is_file() else None


def read_volume(path: Path, rel: str, patient_id: str) -> Volume:
    """One volume file; `patient_id` comes from the nodule table (or stands in for one)."""
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as err:
        first = str(err).strip().splitlines()[-1] if str(err).strip() else "no message"
        raise Rejected("unreadable_volume", f"SimpleITK could not read it: {first}") from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise Rejected("unexpected_shape", f"a {image.GetDimension()}-D image with "
                       f"{image.GetNumberOfComponentsPerPixel()} component(s); expected a 3-D grey volume")
    values = sitk.GetArrayFromImage(image).astype(np.float32)  # (k, j, i)
    direction = np.asarray(image.GetDirection(), float).reshape(3, 3)  # row-major; columns are the axes
    return Volume(values=values,
                  geometry=Geometry(origin=tuple(image.GetOrigin()), spacing=tuple(image.GetSpacing()),
                                    direction=tuple(map(tuple, direction))),
                  patient_id=patient_id, study_uid="", series_uid=volume_series_uid(path), slice_uids=("",) * len(values),
                  slice_files=(rel,) * len(values),
                  scale=Scale(note="a volume file carries no PET calibration"), key=rel)
