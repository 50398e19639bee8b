"""Synthetic images exported as DICOM: marked synthetic and derived, fresh UIDs, no patient in them."""
from __future__ import annotations

import numpy as np
import pydicom

from orchestrator.data.synthetic_dicom import write_secondary_captures


def test_secondary_captures_round_trip_and_say_they_are_synthetic(tmp_path, phantom_identifiers):
    images = np.random.default_rng(0).random((3, 32, 32)).astype(np.float32)
    paths = write_secondary_captures(images, np.array([0, 1, 0]), "cgan-abc", tmp_path)
    datasets = [pydicom.dcmread(p) for p in paths]
    for image, ds in zip(images, datasets):
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture
        assert ds.ConversionType == "SYN" and list(ds.ImageType) == ["DERIVED", "SECONDARY"]
        assert ds.PatientID == "SYNTHETIC-cgan-abc" and str(ds.PatientName) == "SYNTHETIC"
        np.testing.assert_allclose(ds.pixel_array / 65535, image, atol=1 / 65535)
        text = str(ds)
        assert not any(identifier and identifier in text for identifier in phantom_identifiers)
    assert "malignant" in datasets[1].ImageComments
    assert len({ds.SOPInstanceUID for ds in datasets}) == 3  # fresh UIDs, one study and series for the set
    assert len({ds.StudyInstanceUID for ds in datasets}) == len({ds.SeriesInstanceUID for ds in datasets}) == 1
