"""Series assembly, world <-> voxel geometry and nodule crops, on real files written with
pydicom and SimpleITK: a nodule painted at a known world position must land at the centre
of its crop."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from orchestrator.data.crop import nodule_centre, nodule_crops
from orchestrator.data.dicom import read_image
from orchestrator.data.ingest import format_summary, ingest
from orchestrator.data.nodules import NoduleTableError, read_nodule_table
from orchestrator.data.series import SeriesRejected, assemble_series
from orchestrator.ingest import main as ingest_main
from series_files import AIR_HU, Series, write_nodules

SIZE, ROI_MM = 32, 32.0  # 1 mm per crop pixel


@pytest.fixture
def ct_cfg(data_cfg):
    return replace(data_cfg, modality="ct", size=SIZE, roi_mm=ROI_MM, slab_mm=3.0)


def _volume(paths, cfg):
    return assemble_series([(p.name, read_image(p, cfg)) for p in paths])


def _bright_centroid(image: np.ndarray) -> np.ndarray:
    """(row, col) of the crop's nodule pixels (HU 40 against air at -800, after the lung window)."""
    rows, cols = np.nonzero(image > 0.65)
    return np.array([rows.mean(), cols.mean()])


def _row(**place) -> dict:
    return {"label": "malignant", **place}


def _table(tmp_path, **place):
    return read_nodule_table(write_nodules(tmp_path / "nodules.csv", [_row(**place)]))[0]


# ---------------------------------------------------------------- geometry


@pytest.mark.parametrize("orientation", ["axial", "oblique"])
def test_a_nodule_at_a_world_position_lands_at_the_crop_centre(tmp_path, ct_cfg, orientation):
    axes = {"axial": ((1, 0, 0), (0, 1, 0)),
            # rotated 30 degrees about the left-right axis: handled, not rejected
            "oblique": ((1, 0, 0), (0, np.cos(np.pi / 6), -np.sin(np.pi / 6)))}[orientation]
    series = Series(row=axes[0], column=axes[1])
    centre = series.origin + 20.3 * series.row + 22.1 * series.column + 11.2 * series.normal
    series.paint_ball(centre, 4.0)
    volume = _volume(series.write(tmp_path / "s"), ct_cfg)  # files named and numbered in reverse
    row = _table(tmp_path, series_uid=series.series_uid, coord_x=centre[0], coord_y=centre[1], coord_z=centre[2])
    ijk = nodule_centre(row, volume)
    np.testing.assert_allclose(volume.geometry.to_world(ijk), centre, atol=1e-3)
    np.testing.assert_allclose(ijk[2], 11.2 / 2.5, atol=1e-4)  # slice order from positions, not names
    crops = nodule_crops(volume, ijk, ct_cfg)
    assert [c.slice_index for c in crops] == [4, 5]  # within 3 mm of z index 4.48
    central = min(crops, key=lambda c: abs(c.offset_mm))
    np.testing.assert_allclose(_bright_centroid(central.image), [(SIZE - 1) / 2] * 2, atol=1.0)
    assert central.padded == 0.0


def test_voxel_and_box_rows_place_the_nodule_where_the_world_row_does(tmp_path, ct_cfg):
    series = Series()
    centre = series.origin + 12.0 * series.row + 20.3 * series.column + 10.0 * series.normal  # on slice 4
    series.paint_ball(centre, 4.0)
    paths = series.write(tmp_path / "s")
    volume = _volume(paths, ct_cfg)
    i, j = 12.0 / 0.8, 20.3 / 0.7
    world = nodule_centre(_table(tmp_path, series_uid=series.series_uid, coord_x=centre[0], coord_y=centre[1],
                                 coord_z=centre[2]), volume)
    voxel = nodule_centre(_table(tmp_path, series_uid=series.series_uid, slice=4, row=j, col=i), volume)
    by_uid = nodule_centre(_table(tmp_path, series_uid=series.series_uid, slice=volume.slice_uids[4], row=j, col=i),
                           volume)
    box = nodule_centre(_table(tmp_path, sop_uid=volume.slice_uids[4], x_min=i - 5, y_min=j - 5, x_max=i + 5,
                               y_max=j + 5), volume)
    for other in (voxel, by_uid, box):
        np.testing.assert_allclose(other, world, atol=1e-6)


def test_a_crop_past_the_image_edge_is_padded_with_air_and_says_how_much(tmp_path, ct_cfg):
    series = Series()
    centre = series.origin + 2.0 * series.row + 2.0 * series.column + 10.0 * series.normal  # near a corner
    series.paint_ball(centre, 3.0)
    volume = _volume(series.write(tmp_path / "s"), ct_cfg)
    row = _table(tmp_path, series_uid=series.series_uid, coord_x=centre[0], coord_y=centre[1], coord_z=centre[2])
    crop = nodule_crops(volume, nodule_centre(row, volume), ct_cfg)[0]
    # 2 mm into a 32 mm crop centred there: about (14 + 0.4) / 32 of each side lies outside
    assert 0.45 < crop.padded < 0.75
    air = (AIR_HU + 1350) / 1500  # the lung window of -800 HU; the padding is -1000 HU
    assert np.isclose(crop.image[0, 0], (-1000 + 1350) / 1500, atol=1e-3) and crop.image[-1, -1] == pytest.approx(
        air, abs=0.02)
    np.testing.assert_allclose(_bright_centroid(crop.image), [(SIZE - 1) / 2] * 2, atol=1.0)


def test_a_nodule_outside_its_image_is_refused(tmp_path, ct_cfg):
    series = Series()
    volume = _volume(series.write(tmp_path / "s"), ct_cfg)
    far = series.origin + 500 * series.row
    row = _table(tmp_path, series_uid=series.series_uid, coord_x=far[0], coord_y=far[1], coord_z=far[2])
    with pytest.raises(ValueError, match="outside the image"):
        nodule_centre(row, volume)


def test_ct_at_a_coarse_spacing_gives_the_same_anatomy_as_at_a_fine_one(tmp_path, ct_cfg):
    """Physical sizes: a 8 mm ball fills the same crop pixels at 0.5 mm and at 2 mm voxels."""
    images = []
    for name, spacing in [("fine", 0.5), ("coarse", 2.0)]:
        n = int(80 / spacing)
        series = Series(shape_kji=(5, n, n), spacing_ijk=(spacing, spacing, 2.0))
        centre = series.origin + 40 * series.row + 40 * series.column + 4 * series.normal
        series.paint_ball(centre, 8.0)
        volume = _volume(series.write(tmp_path / name), ct_cfg)
        row = _table(tmp_path, series_uid=series.series_uid, coord_x=centre[0], coord_y=centre[1], coord_z=centre[2])
        images.append(min(nodule_crops(volume, nodule_centre(row, volume), ct_cfg), key=lambda c: abs(c.offset_mm)))
    fine, coarse = ((c.image > 0.65).sum() for c in images)
    assert abs(fine - coarse) <= 0.15 * fine and fine > 150  # pi * 8^2 ~ 200 px at 1 mm


# ---------------------------------------------------------------- series assembly


def test_a_series_with_a_missing_slice_is_rejected_naming_the_files_around_the_gap(tmp_path, ct_cfg):
    series = Series()
    with pytest.raises(SeriesRejected) as caught:
        _volume(series.write(tmp_path / "s", skip=(4,)), ct_cfg)
    assert caught.value.reason == "spacing_gap" and "2.500 mm" in caught.value.detail
    assert caught.value.files == ["img_006.dcm", "img_004.dcm"]  # the slices either side of the gap


def test_an_exact_copy_of_a_slice_is_set_aside_and_the_series_goes_on(tmp_path, ct_cfg):
    series = Series()
    paths = series.write(tmp_path / "s")
    copy = series.write_slice(tmp_path / "s" / "copy.dcm", 4)  # the same slice again, under a SOP UID of its own
    volume = _volume([*paths, copy], ct_cfg)
    assert volume.values.shape[0] == series.shape[0] and "copy.dcm" not in volume.slice_files
    ((rel, why),) = volume.set_aside
    assert rel == "copy.dcm" and "exact copy of img_005.dcm" in why


def test_a_repeated_position_and_a_stray_orientation_are_rejected(tmp_path, ct_cfg):
    series = Series()
    paths = series.write(tmp_path / "s")
    again = Series()
    again.series_uid, again.origin = series.series_uid, series.origin  # same series and place, other pixels
    again.paint_ball(again.position(0), 5.0)  # on the slice written below
    extra = again.write(tmp_path / "dup")[:1]
    with pytest.raises(SeriesRejected, match="same position") as caught:
        _volume(paths + extra, ct_cfg)
    assert caught.value.reason == "duplicate_position"
    tilted = Series(row=(1, 0, 0), column=(0, 0.96, 0.28))
    tilted.series_uid = series.series_uid
    with pytest.raises(SeriesRejected) as caught:
        _volume(paths + tilted.write(tmp_path / "tilt")[:1], ct_cfg)
    assert caught.value.reason == "inconsistent_orientation" and caught.value.files == ["img_009.dcm"]


def test_an_enhanced_multiframe_file_is_the_same_series(tmp_path, ct_cfg):
    series = Series()
    centre = series.origin + 15 * series.row + 16 * series.column + 9 * series.normal
    series.paint_ball(centre, 4.0)
    single = _volume(series.write(tmp_path / "s"), ct_cfg)
    path = series.write_enhanced(tmp_path / "enhanced.dcm")
    image = read_image(path, ct_cfg)
    assert len(image.frames) == series.shape[0]
    enhanced = assemble_series([(path.name, image)])
    np.testing.assert_array_equal(enhanced.values, single.values)
    np.testing.assert_allclose(enhanced.geometry.to_world((3, 4, 5)), single.geometry.to_world((3, 4, 5)), atol=1e-6)


# ---------------------------------------------------------------- the nodule table


def test_luna16_column_names_are_read_as_they_are(tmp_path):
    path = tmp_path / "annotations.csv"
    path.write_text("seriesuid,coordX,coordY,coordZ,diameter_mm,label\n1.2.3,-100.5,67.2,-231.9,5.6,benign\n")
    row = read_nodule_table(path)[0]
    assert (row.form, row.key_column, row.key, row.place, row.diameter_mm, row.label) == \
        ("world", "series_uid", "1.2.3", (-100.5, 67.2, -231.9), 5.6, 0)


@pytest.mark.parametrize("text, message", [
    ("series_uid,slice,row,col\n1.2,1,2,3\n", "needs a 'label' column"),
    ("seriesuid,coordX,coordY,coordZ,class\n1.2,1,2,3,0\n", "LUNA16's candidates.csv"),
    ("series_uid,coord_x,coord_y,label\n1.2,1,2,benign\n", "exactly one form"),
    ("coord_x,coord_y,coord_z,label\n1,2,3,benign\n", "needs one of"),
    ("series_uid,coord_x,coord_y,coord_z,label\n1.2,1,2,3,maybe\n", "row 2: label 'maybe'"),
    ("series_uid,coord_x,coord_y,coord_z,label\n1.2,1,two,3,benign\n", "coord_y is not a number"),
])
def test_a_bad_nodule_table_says_which_row_and_why(tmp_path, text, message):
    path = tmp_path / "nodules.csv"
    path.write_text(text)
    with pytest.raises(NoduleTableError, match=message):
        read_nodule_table(path)


# ---------------------------------------------------------------- through ingest


def _cohort(root: Path, patients: int = 6, nodules_per_patient: int = 1) -> list[dict]:
    """`patients` CT series, labels alternating, each with its nodules at varied places."""
    rows = []
    for p in range(patients):
        series = Series()
        for n in range(nodules_per_patient):
            centre = series.origin + (10 + 6 * p % 20 + 14 * n) * series.row + (12 + 3 * p) * series.column \
                + (5 + 2 * n + 0.4 * p) * series.normal
            series.paint_ball(centre, 3.0 + p % 3)
            rows.append({"series_uid": series.series_uid, "coord_x": centre[0], "coord_y": centre[1],
                         "coord_z": centre[2], "label": "malignant" if p % 2 else "benign"})
        series.write(root / f"patient{p}", patient_id=f"PAT-{p}")
    write_nodules(root / "nodules.csv", rows)
    return rows


def test_ingest_crops_every_nodule_and_accounts_for_every_file_and_row(tmp_path, ct_cfg, capsys):
    rows = _cohort(tmp_path / "data")
    Series().write(tmp_path / "data" / "no_nodule", patient_id="PAT-9")  # a series no row names
    broken = Series()
    broken.write(tmp_path / "data" / "gap", patient_id="PAT-8", skip=(3,))
    rows.append({"series_uid": broken.series_uid, "coord_x": 0, "coord_y": 0, "coord_z": 0, "label": "benign"})
    write_nodules(tmp_path / "data" / "nodules.csv", rows)
    cohort = ingest(tmp_path / "data", ct_cfg)
    report = json.loads((cohort.path / "ingest_report.json").read_text())
    assert report["label_source"] == "nodules.csv"
    assert report["accepted"] == 6 * 9 and report["rejected_by_reason"] == {"no_nodule": 9, "spacing_gap": 8}
    assert report["accepted"] + report["rejected"] == report["files_found"] == len(report["files"])
    assert [r["status"] for r in report["nodules"]] == ["used"] * 6 + ["unmatched"]
    assert report["crops"]["nodule_rows"] == {"used": 6, "unmatched": 1}
    assert cohort.images.shape[1:] == (SIZE, SIZE) and len(cohort.images) == report["crops"]["crops"]
    provenance = json.loads((cohort.path / "crops.json").read_text())
    assert len(provenance) == len(cohort.images)
    assert {p["nodule_row"] for p in provenance} == set(range(2, 8))
    assert all(p["volume"].startswith("se-") and p["pixel_mm"] == 1.0 for p in provenance)
    text = json.dumps(report) + json.dumps(provenance) + (cohort.path / "meta.json").read_text()
    assert "PAT-" not in text and "TEST^PATIENT" not in text and rows[0]["series_uid"] not in text
    print(format_summary(cohort))
    assert "nodule crops:" in capsys.readouterr().out


def test_a_patient_with_two_nodules_gives_crops_of_both_in_one_split(tmp_path, ct_cfg):
    _cohort(tmp_path / "data", nodules_per_patient=2)
    cohort = ingest(tmp_path / "data", ct_cfg)
    provenance = json.loads((cohort.path / "crops.json").read_text())
    rows_of = {}
    for patient, split, origin in zip(cohort.patients, cohort.split, provenance):
        rows_of.setdefault(int(patient), set()).add(origin["nodule_row"])
        assert len({int(s) for p, s in zip(cohort.patients, cohort.split) if p == patient}) == 1
    assert all(len(rows) == 2 for rows in rows_of.values()) and len(rows_of) == 6


@pytest.mark.parametrize("suffix, files", [(".mhd", 12), (".nii.gz", 6)])
def test_volumes_with_a_luna16_style_table(tmp_path, ct_cfg, suffix, files):
    """LUNA16: <seriesuid>.mhd + .raw, annotations in world mm; here with labels joined and a patient_id.
    NIfTI the same way: SimpleITK turns its RAS header into the LPS geometry DICOM uses."""
    data = tmp_path / "data"
    data.mkdir()
    lines = ["seriesuid,coordX,coordY,coordZ,diameter_mm,label,patient_id"]
    for p in range(6):
        series = Series(origin=(-100.0 + p, 30.0, -200.0))
        centre = series.origin + 14 * series.row + 15 * series.column + 9.5 * series.normal
        series.paint_ball(centre, 4.0)
        image = sitk.GetImageFromArray(series.hu.astype(np.int16))  # (k, j, i), HU as LUNA16 stores it
        image.SetOrigin(tuple(series.origin))
        image.SetSpacing(tuple(series.spacing))
        image.SetDirection(np.stack([series.row, series.column, series.normal], axis=1).ravel().tolist())
        uid = f"1.3.6.1.4.1.14519.5.2.1.{p}"
        sitk.WriteImage(image, str(data / f"{uid}{suffix}"))
        lines.append(f"{uid},{centre[0]},{centre[1]},{centre[2]},8.0,{'malignant' if p % 2 else 'benign'},P{p}")
    (data / "nodules.csv").write_text("\n".join(lines) + "\n")
    cohort = ingest(data, ct_cfg)
    report = json.loads((cohort.path / "ingest_report.json").read_text())
    assert report["accepted"] == report["files_found"] == files  # each .raw counted with its .mhd
    assert report["crops"]["series_standing_in_for_patients"] == 0 and len(cohort.meta["patients"]) == 6
    provenance = json.loads((cohort.path / "crops.json").read_text())
    central = [i for i, p in enumerate(provenance) if abs(p["offset_mm"]) < 1.3]
    for i in central:
        np.testing.assert_allclose(_bright_centroid(np.asarray(cohort.images[i], np.float32)),
                                   [(SIZE - 1) / 2] * 2, atol=1.0)


def test_the_ingest_command_takes_a_nodule_table_from_elsewhere(tmp_path, capsys):
    _cohort(tmp_path / "data")
    (tmp_path / "data" / "nodules.csv").rename(tmp_path / "table.csv")
    code = ingest_main([str(tmp_path / "data"), "--modality", "ct", "--size", "32", "--nodules",
                        str(tmp_path / "table.csv"), "--cache", str(tmp_path / "cache"), "--preset", "smoke"])
    out = capsys.readouterr().out
    assert code == 0 and "nodule crops:" in out and "(6 used)" in out


def test_anisotropic_pixels_give_a_round_nodule_in_the_crop(tmp_path, ct_cfg):
    """Columns 0.5 mm apart, rows 1.0 mm: each axis must be resampled by its own spacing."""
    series = Series(shape_kji=(5, 64, 128), spacing_ijk=(0.5, 1.0, 2.0))
    centre = series.origin + 32 * series.row + 32 * series.column + 4 * series.normal
    series.paint_ball(centre, 6.0)
    volume = _volume(series.write(tmp_path / "s"), ct_cfg)
    row = _table(tmp_path, series_uid=series.series_uid, coord_x=centre[0], coord_y=centre[1], coord_z=centre[2])
    crop = min(nodule_crops(volume, nodule_centre(row, volume), ct_cfg), key=lambda c: abs(c.offset_mm))
    rows, cols = np.nonzero(crop.image > 0.65)
    height, width = np.ptp(rows) + 1, np.ptp(cols) + 1
    assert abs(height - width) <= 1 and 10 <= width <= 13  # a 12 mm ball at 1 mm per crop pixel
