"""Synthetic images as DICOM Secondary Capture: marked derived and synthetic, nothing from a patient.

Every UID is fresh, the patient module holds only the words "SYNTHETIC" and the set's name,
and no attribute of any real file is read or copied. `ConversionType` SYN is DICOM's own code
for a synthetic image.
"""
from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from trainables.cohort import LABEL_NAMES

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def write_secondary_captures(images: np.ndarray, labels: np.ndarray, set_name: str, out: Path) -> list[Path]:
    """One file per image (float [N, S, S] in [0, 1] -> 16-bit), in one study and series per set."""
    out.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    today = datetime.date.today().strftime("%Y%m%d")
    paths = []
    for index, (image, label) in enumerate(zip(images, labels)):
        ds = _dataset(set_name, study, series, index, today)
        ds.ImageComments = f"synthetic {LABEL_NAMES[int(label)]} (label {int(label)}) from {set_name}"
        stored = np.round(np.clip(image, 0, 1) * 65535).astype(np.uint16)
        ds.set_pixel_data(stored, "MONOCHROME2", 16)
        path = out / f"synthetic_{index:05d}.dcm"
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)
    return paths


def _dataset(set_name: str, study: str, series: str, index: int, today: str) -> Dataset:
    sop_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SECONDARY_CAPTURE, sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = SECONDARY_CAPTURE, sop_uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.PatientName, ds.PatientID = "SYNTHETIC", f"SYNTHETIC-{set_name}"
    ds.PatientBirthDate, ds.PatientSex = "", ""
    ds.StudyDate = ds.ContentDate = today
    ds.StudyTime = ds.ContentTime = ""
    ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "", "", ""
    ds.Modality, ds.ConversionType = "OT", "SYN"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.SeriesNumber, ds.InstanceNumber = 1, index + 1
    ds.SeriesDescription = f"synthetic images from {set_name}"
    ds.BurnedInAnnotation = "NO"
    ds.PatientOrientation = ""
    ds.Manufacturer = "medgan-sweep"
    return ds
