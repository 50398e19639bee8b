"""Compressed transfer syntaxes decode through the installed pixel-data plugins: each lossless
file to exactly the values of its uncompressed twin, each lossy one to within its bound.
Twins are encoded with pydicom where it can encode, else with GDCM (JPEG Lossless), else
with Pillow (8-bit JPEG Baseline)."""
from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import gdcm
import numpy as np
import pydicom
import pytest
from PIL import Image as PILImage
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder
from pydicom.uid import (JPEG2000, HTJ2K, JPEG2000Lossless, JPEGBaseline8Bit, JPEGLossless, JPEGLosslessSV1,
                         JPEGLSLossless, JPEGLSNearLossless, RLELossless, HTJ2KLossless)

from orchestrator.data.dicom import Rejected, read_image
from orchestrator.data.ingest import ingest
from series_files import Series, write_nodules


@pytest.fixture(scope="module")
def twin(tmp_path_factory) -> Path:
    """One uncompressed CT slice (16-bit, a nodule against air and tissue)."""
    series = Series()
    series.hu[:, 30:, :] = 40.0
    series.paint_ball(series.origin + 20 * series.row + 20 * series.column + 10 * series.normal, 5.0, hu=300.0)
    return series.write(tmp_path_factory.mktemp("twin"))[4]


@pytest.fixture
def ct_cfg(data_cfg):
    return replace(data_cfg, modality="ct")


def _gdcm_transcode(source: Path, target: Path, syntax) -> Path:
    reader = gdcm.ImageReader()
    reader.SetFileName(str(source))
    assert reader.Read()
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(syntax))
    change.SetInput(reader.GetImage())
    assert change.Change()
    writer = gdcm.ImageWriter()
    writer.SetFileName(str(target))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    assert writer.Write()
    return target


def _compressed(twin: Path, tmp_path: Path, syntax: str, **options) -> Path:
    target = tmp_path / f"{syntax}.dcm"
    if syntax in (JPEGLosslessSV1, JPEGLossless):
        code = {JPEGLosslessSV1: gdcm.TransferSyntax.JPEGLosslessProcess14_1,
                JPEGLossless: gdcm.TransferSyntax.JPEGLosslessProcess14}[syntax]
        return _gdcm_transcode(twin, target, code)
    ds = pydicom.dcmread(twin)
    ds.compress(syntax, **options)
    ds.save_as(target)
    return target


def _values(path: Path, cfg) -> np.ndarray:
    return read_image(path, cfg).frames[0].values


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless, JPEGLosslessSV1, JPEGLossless])
def test_a_lossless_file_decodes_to_its_uncompressed_twin(twin, tmp_path, ct_cfg, syntax):
    path = _compressed(twin, tmp_path, syntax)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == syntax
    np.testing.assert_array_equal(_values(path, ct_cfg), _values(twin, ct_cfg))


@pytest.mark.parametrize("syntax, options, bound", [(JPEGLSNearLossless, {"jls_error": 2}, "max 2"),
                                                     (JPEG2000, {"j2k_cr": [20]}, "mean 20")])
def test_a_lossy_file_decodes_to_within_its_bound(twin, tmp_path, ct_cfg, syntax, options, bound):
    error = np.abs(_values(_compressed(twin, tmp_path, syntax, **options), ct_cfg) - _values(twin, ct_cfg))
    kind, limit = bound.split()
    assert (error.max() if kind == "max" else error.mean()) <= float(limit)


def test_an_8_bit_jpeg_baseline_file_decodes_close_to_what_was_encoded(twin, tmp_path, ct_cfg):
    ds = pydicom.dcmread(twin)
    grey = (np.clip((ds.pixel_array.astype(float) - 200) / 1400, 0, 1) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    PILImage.fromarray(grey).save(buffer, format="JPEG", quality=95)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.save_as(tmp_path / "baseline.dcm")
    decoded = _values(tmp_path / "baseline.dcm", ct_cfg) + 1024  # undo the intercept
    assert np.abs(decoded - grey).mean() < 2.0


def test_htj2k_has_a_decoder_though_nothing_here_encodes_a_twin():
    assert get_decoder(HTJ2KLossless).is_available and get_decoder(HTJ2K).is_available


def test_12_bit_jpeg_extended_is_named_with_the_decoder_that_would_read_it(twin, tmp_path, ct_cfg):
    path = _gdcm_transcode(twin, tmp_path / "extended.dcm", gdcm.TransferSyntax.JPEGExtendedProcess2_4)
    with pytest.raises(Rejected) as caught:
        read_image(path, ct_cfg)
    assert caught.value.reason == "compressed_no_decoder" and "pylibjpeg-libjpeg" in caught.value.detail


def test_a_jpeg_lossless_series_ingests_to_the_same_crops(tmp_path, data_cfg):
    cfg = replace(data_cfg, modality="ct", size=32, roi_mm=32.0)
    rows = []
    for name in ("plain", "compressed"):
        rows = []
        for p in range(6):
            series = Series()
            series.series_uid = f"1.2.826.0.1.3680043.8.498.{p + 1}"  # the same series in both folders
            centre = series.origin + (18 + p) * series.row + 22 * series.column + 10 * series.normal
            series.paint_ball(centre, 4.0)
            for path in series.write(tmp_path / name / f"p{p}", patient_id=f"PAT-{p}"):
                if name == "compressed":
                    _gdcm_transcode(path, path, gdcm.TransferSyntax.JPEGLosslessProcess14_1)
            rows.append({"series_uid": series.series_uid, "coord_x": centre[0], "coord_y": centre[1],
                         "coord_z": centre[2], "label": "malignant" if p % 2 else "benign"})
        write_nodules(tmp_path / name / "nodules.csv", rows)
    plain, compressed = (ingest(tmp_path / name, cfg) for name in ("plain", "compressed"))
    assert pydicom.dcmread(next((tmp_path / "compressed").rglob("*.dcm"))).file_meta.TransferSyntaxUID == \
        JPEGLosslessSV1
    np.testing.assert_array_equal(np.asarray(plain.images), np.asarray(compressed.images))
