"""Writers of real DICOM series and volumes for the geometry tests, independent of the phantom.

Voxel positions follow the DICOM definition directly (PS3.3 C.7.6.2.1.1): the centre of
pixel (column i, row j) of a slice lies at Image Position + i * column spacing * row
direction + j * row spacing * column direction. The code under test uses its own matrix
form; these writers do not share it.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
AIR_HU, NODULE_HU = -800.0, 40.0


class Series:
    """A CT series in the making: geometry, and HU values painted at world positions."""

    def __init__(self, shape_kji=(9, 64, 56), origin=(-60.0, 20.0, -30.0), spacing_ijk=(0.8, 0.7, 2.5),
                 row=(1.0, 0.0, 0.0), column=(0.0, 1.0, 0.0)):
        self.shape = shape_kji
        self.origin = np.asarray(origin, float)
        self.spacing = np.asarray(spacing_ijk, float)
        self.row, self.column = np.asarray(row, float), np.asarray(column, float)
        self.normal = np.cross(self.row, self.column)
        self.hu = np.full(shape_kji, AIR_HU)
        self.series_uid, self.study_uid = generate_uid(), generate_uid()
        self.sop_uids: dict[int, str] = {}  # slice index -> SOP Instance UID, once written

    def position(self, k: int) -> np.ndarray:
        return self.origin + k * self.spacing[2] * self.normal

    def world(self) -> np.ndarray:
        """(k, j, i, 3) world coordinates of every voxel centre."""
        k, j, i = np.meshgrid(*[np.arange(n) for n in self.shape], indexing="ij")
        return (self.origin + (k * self.spacing[2])[..., None] * self.normal
                + (i * self.spacing[0])[..., None] * self.row + (j * self.spacing[1])[..., None] * self.column)

    def paint_ball(self, centre_mm, radius_mm: float, hu: float = NODULE_HU) -> None:
        inside = np.linalg.norm(self.world() - np.asarray(centre_mm), axis=-1) <= radius_mm
        self.hu[inside] = hu

    def write(self, folder: Path, patient_id: str = "PAT-1", skip: tuple[int, ...] = ()) -> list[Path]:
        """One file per slice, named and numbered against the slice order (so neither can be trusted)."""
        folder.mkdir(parents=True, exist_ok=True)
        return [self.write_slice(folder / f"img_{self.shape[0] - k:03d}.dcm", k, patient_id)
                for k in range(self.shape[0]) if k not in skip]

    def write_slice(self, path: Path, k: int, patient_id: str = "PAT-1") -> Path:
        """Slice k as one file with a SOP Instance UID of its own (written twice: a copy of the slice)."""
        ds = _dataset(CT_STORAGE, patient_id, self.study_uid, self.series_uid)
        self.sop_uids.setdefault(k, ds.SOPInstanceUID)
        ds.InstanceNumber = self.shape[0] - k
        ds.ImagePositionPatient = [f"{v:.6f}" for v in self.position(k)]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*self.row, *self.column)]
        ds.PixelSpacing = [f"{self.spacing[1]:.6f}", f"{self.spacing[0]:.6f}"]
        ds.SliceThickness = f"{self.spacing[2]:.6f}"
        ds.RescaleIntercept, ds.RescaleSlope = "-1024", "1"
        ds.set_pixel_data(self.stored()[k], "MONOCHROME2", 16)
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        return path

    def write_enhanced(self, path: Path, patient_id: str = "PAT-1") -> Path:
        """The same series as one enhanced CT file: geometry per frame, rescale shared."""
        ds = _dataset(ENHANCED_CT_STORAGE, patient_id, self.study_uid, self.series_uid)
        ds.InstanceNumber = 1
        shared = Dataset()
        measures, orientation, rescale = Dataset(), Dataset(), Dataset()
        measures.PixelSpacing = [f"{self.spacing[1]:.6f}", f"{self.spacing[0]:.6f}"]
        measures.SliceThickness = f"{self.spacing[2]:.6f}"
        orientation.ImageOrientationPatient = [f"{v:.6f}" for v in (*self.row, *self.column)]
        rescale.RescaleIntercept, rescale.RescaleSlope, rescale.RescaleType = "-1024", "1", "HU"
        shared.PixelMeasuresSequence = [measures]
        shared.PlaneOrientationSequence = [orientation]
        shared.PixelValueTransformationSequence = [rescale]
        ds.SharedFunctionalGroupsSequence = [shared]
        frames = []
        for k in reversed(range(self.shape[0])):  # frames stored against the slice order, too
            group, plane = Dataset(), Dataset()
            plane.ImagePositionPatient = [f"{v:.6f}" for v in self.position(k)]
            group.PlanePositionSequence = [plane]
            frames.append(group)
        ds.PerFrameFunctionalGroupsSequence = frames
        ds.set_pixel_data(self.stored()[::-1].copy(), "MONOCHROME2", 16)
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        return path

    def stored(self) -> np.ndarray:
        return np.clip(np.round(self.hu + 1024), 0, 4095).astype(np.uint16)


def _dataset(sop_class: str, patient_id: str, study_uid: str, series_uid: str) -> Dataset:
    sop_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    ds.Modality, ds.PatientID, ds.PatientName = "CT", patient_id, "TEST^PATIENT"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.FrameOfReferenceUID = generate_uid()
    return ds


def write_nodules(path: Path, rows: list[dict]) -> Path:
    columns = list(dict.fromkeys(c for row in rows for c in row))
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, columns)
        writer.writeheader()
        writer.writerows(rows)
    return path
