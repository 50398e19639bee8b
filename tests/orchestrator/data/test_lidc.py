"""LIDC-IDRI as it downloads: DICOM series with one reader-annotation XML each, to labelled nodule crops."""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from lidc_files import ReaderMark, write_lidc_xml
from orchestrator.data.ingest import ingest
from series_files import NODULE_HU, Series

# Two patients, as the collection lays them out: patient / study / series, the XML beside the slices
SPACING = (0.7, 0.7, 1.25)  # mm: columns, rows, slices


def patient_series(origin) -> Series:
    return Series(shape_kji=(14, 112, 112), origin=origin, spacing_ijk=SPACING)


def at(series: Series, dx: float, dy: float, k: int) -> tuple[float, float, float]:
    """A world point dx, dy mm from the series' first voxel, on slice k."""
    return tuple(series.origin + (dx, dy, 0) + k * SPACING[2] * series.normal)


@pytest.fixture(scope="module")
def download(tmp_path_factory) -> dict:
    """Six patients' series at non-trivial positions with files against slice order, their XML, and what was
    painted. Two patients hold a malignant and a benign nodule each, plus an indeterminate one, one under 3 mm
    and a reader's mark on no slice, a copied slice, an XML that does not parse and one naming a series that
    is not there; four more hold one nodule each, so that every split has patients of both labels."""
    root = tmp_path_factory.mktemp("LIDC-IDRI")
    painted = {}
    first = patient_series((-120.3, -85.7, -210.0))
    malignant, benign, unsure = at(first, 22, 25, 6), at(first, 55, 60, 5), at(first, 58, 22, 8)
    for centre, radius in ((malignant, 5.0), (benign, 4.0), (unsure, 3.5)):
        first.paint_ball(centre, radius, NODULE_HU)
    folder = root / "LIDC-IDRI-0001" / "01-01-2000-NA-CT-30178" / "3000566.000000-NA-03192"
    first.write(folder, patient_id="LIDC-IDRI-0001")
    first.write_slice(folder / "copy-of-6.dcm", 6, patient_id="LIDC-IDRI-0001")  # the same slice, twice
    readers = [
        [ReaderMark(malignant, 5.0, 4, hole_mm=1.5), ReaderMark(benign, 4.0, 1), ReaderMark(unsure, 3.5, 3)],
        [ReaderMark(malignant, 5.0, 5), ReaderMark(benign, 4.0, 2, by_z_only=True, z_offset_mm=0.2),
         ReaderMark(unsure, 3.5, 3), ReaderMark(at(first, 40, 75, 3), 1.0, None, small=True)],
        [ReaderMark(malignant, 5.0, 4), ReaderMark(benign, 4.0, 2), ReaderMark(unsure, 3.5, 2),
         ReaderMark(at(first, 40, 75, 3), 1.0, None, small=True)],
        [ReaderMark(malignant, 5.0, 5, extra={"spiculation": 4}), ReaderMark(unsure, 3.5, 4)],  # missed the benign
    ]
    write_lidc_xml(folder / "069.xml", first, readers, seed=1)
    painted["LIDC-IDRI-0001"] = {"malignant": malignant, "benign": benign}

    second = patient_series((-140.0, -95.5, -330.25))
    malignant, benign = at(second, 30, 40, 7), at(second, 60, 45, 6)
    for centre, radius in ((malignant, 6.0), (benign, 4.5)):
        second.paint_ball(centre, radius, NODULE_HU)
    folder = root / "LIDC-IDRI-0002" / "01-01-2000-NA-CT-81203" / "3000522.000000-NA-04919"
    second.write(folder, patient_id="LIDC-IDRI-0002")
    readers = [[ReaderMark(malignant, 6.0, 5), ReaderMark(benign, 4.5, 1)],
               [ReaderMark(malignant, 6.0, 5), ReaderMark(benign, 4.5, 1),
                ReaderMark(benign, 4.5, 2, by_z_only=True, z_offset_mm=40.0)],  # a mark beyond the series
               [ReaderMark(malignant, 6.0, 4), ReaderMark(benign, 4.5, 2)]]
    write_lidc_xml(folder / "158.xml", second, readers, seed=2)
    painted["LIDC-IDRI-0002"] = {"malignant": malignant, "benign": benign}

    for n, label in ((3, 1), (4, 0), (5, 0), (6, 0)):  # one nodule each: three patients of each label in all
        series = patient_series((-100.0 - n, -90.0 + n, -250.0 + 10 * n))
        centre = at(series, 35 + n, 42 - n, 6)
        series.paint_ball(centre, 4.5, NODULE_HU)
        folder = root / f"LIDC-IDRI-000{n}" / "01-01-2000-NA-CT-1" / f"300000{n}.000000-NA-1"
        series.write(folder, patient_id=f"LIDC-IDRI-000{n}")
        write_lidc_xml(folder / f"{n}.xml", series, [[ReaderMark(centre, 4.5, 5 if label else 1)]] * 3, seed=n)
        painted[f"LIDC-IDRI-000{n}"] = {"malignant" if label else "benign": centre}

    (root / "LIDC-IDRI-0002" / "broken.xml").write_text("<LidcReadMessage><ResponseHeader>")
    elsewhere = patient_series((0.0, 0.0, 0.0))
    elsewhere.sop_uids = {k: f"1.2.3.{k}" for k in range(14)}
    write_lidc_xml(root / "LIDC-IDRI-0002" / "orphan.xml", elsewhere, [[ReaderMark(at(elsewhere, 30, 30, 5), 4.0, 5)]])
    return {"root": root, "painted": painted}


@pytest.fixture(scope="module")
def cohort(download, tmp_path_factory):
    from orchestrator.config import load_config

    cfg = replace(load_config("ct", "smoke").data, size=64, cache_dir=str(tmp_path_factory.mktemp("cache")))
    return ingest(download["root"], cfg)


def test_each_nodule_is_cropped_where_it_was_painted_and_labelled_by_its_readers_median(cohort, download):
    crops = json.loads((cohort.path / "crops.json").read_text())
    labels = np.asarray(cohort.as_arrays()["labels"])
    centres = {}
    for crop, label in zip(crops, labels):
        centres.setdefault((tuple(crop["centre_mm"]), int(label)), crop)
    painted = [(centre, int(kind == "malignant")) for nodules in download["painted"].values()
               for kind, centre in nodules.items()]
    assert len(centres) == len(painted) == 8  # the indeterminate and the small one are left out
    for centre, label in painted:
        (found,) = [(c, crop) for (c, lab), crop in centres.items()
                    if lab == label and np.linalg.norm(np.subtract(c, centre)) < 3]
        offset = np.abs(np.subtract(found[0], centre))
        assert offset[0] <= SPACING[0] and offset[1] <= SPACING[1] and offset[2] <= SPACING[2] / 2, offset  # 1 px
        readers = found[1]["readers"]
        assert readers["readers"] == len(readers["ratings"]) >= 2 and all("malignancy" in r for r in readers["ratings"])


def test_every_nodule_left_out_and_every_unusable_file_is_counted_with_its_reason(cohort):
    report = json.loads((cohort.path / "ingest_report.json").read_text())
    assert report["crops"]["nodule_rows"] == {"used": 8, "indeterminate": 1, "under_3mm": 1, "no_matching_slice": 1}
    reasons = {"/".join(Path(f["file"]).parts[-2:]): f.get("reason", f["status"]) for f in report["files"]}
    by_name = {Path(k).name: v for k, v in reasons.items()}
    assert by_name["broken.xml"] == "bad_annotation" and by_name["orphan.xml"] == "no_series"
    series = "3000566.000000-NA-03192"
    assert reasons[f"{series}/069.xml"] == "accepted"
    assert sorted([reasons[f"{series}/copy-of-6.dcm"], reasons[f"{series}/img_008.dcm"]]) == [
        "accepted", "duplicate_slice"]  # one of the two is kept
    (indeterminate,) = [n for n in report["nodules"] if n["status"] == "indeterminate"]
    assert "median malignancy of [2, 3, 3, 4] lies between 2 (benign) and 4 (malignant)" in indeterminate["reason"]


def test_a_patients_nodules_share_one_split_and_no_identifier_leaves_ingest(cohort, download):
    arrays = cohort.as_arrays()
    splits = {p: set(np.asarray(arrays["split"])[np.asarray(arrays["patients"]) == p]) for p in set(arrays["patients"])}
    assert len(splits) == 6 and all(len(s) == 1 for s in splits.values())
    assert Counter(np.asarray(arrays["labels"]).tolist()).keys() == {0, 1}
    for path in Path(cohort.path).rglob("*"):
        if path.is_file():
            text = path.read_bytes().decode("latin-1")
            assert "LIDC-IDRI-000" not in text and "TEST^PATIENT" not in text, path


def test_luna16_annotations_take_their_labels_from_the_lidc_readers_of_the_same_series(tmp_path):
    """LUNA16: <seriesuid>.mhd volumes and annotations.csv (centres, no labels), with LIDC-IDRI's XML of the same
    series in a sub-folder: each row labelled by the readers' nodule it lies on, without a hand-made join."""
    import SimpleITK as sitk
    from orchestrator.config import load_config

    data = tmp_path / "luna16"
    lines = ["seriesuid,coordX,coordY,coordZ,diameter_mm"]
    for p in range(6):
        series = patient_series((-110.0 + p, -90.0, -250.0 - 3 * p))
        series.sop_uids = dict.fromkeys(range(series.shape[0]), "")  # a volume file: slices are known by z only
        nodule, unsure = at(series, 30, 35, 6), at(series, 60, 60, 7)
        series.paint_ball(nodule, 4.5, NODULE_HU)
        series.paint_ball(unsure, 4.0, NODULE_HU)
        image = sitk.GetImageFromArray(series.hu.astype(np.int16))
        image.SetOrigin(tuple(series.origin))
        image.SetSpacing(tuple(series.spacing))
        image.SetDirection(np.stack([series.row, series.column, series.normal], axis=1).ravel().tolist())
        uid = f"1.3.6.1.4.1.14519.5.2.1.6279.6001.{p}"
        series.series_uid = uid
        (data / "subset0").mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(image, str(data / "subset0" / f"{uid}.mhd"))
        marks = [ReaderMark(nodule, 4.5, 5 if p < 3 else 1, by_z_only=True),
                 ReaderMark(unsure, 4.0, 3, by_z_only=True)]
        write_lidc_xml(data / "tcia-lidc-xml" / f"{p}.xml", series, [marks] * 3, seed=p)
        lines += [f"{uid},{nodule[0] + 0.4},{nodule[1] - 0.3},{nodule[2]},9.0",
                  f"{uid},{unsure[0]},{unsure[1]},{unsure[2]},8.0"]
        if p == 1:
            # a row no reader marked
            lines.append(f"{uid},{series.origin[0] + 10},{series.origin[1] + 70},{nodule[2]},6.0")
    (data / "annotations.csv").write_text("\n".join(lines) + "\n")
    cfg = replace(load_config("ct", "smoke").data, size=64, cache_dir=str(tmp_path / "cache"))
    cohort = ingest(data, cfg, nodules_file=data / "annotations.csv")
    report = json.loads((cohort.path / "ingest_report.json").read_text())
    assert report["crops"]["nodule_rows"] == {"used": 6, "indeterminate": 6, "no_lidc_nodule": 1}
    crops = json.loads((cohort.path / "crops.json").read_text())
    label_of_row = {crop["nodule_row"]: int(label) for crop, label in zip(crops, cohort.as_arrays()["labels"])}
    assert label_of_row == {2 + 2 * p + (p > 1): int(p < 3) for p in range(6)}  # each row's series' readers
    assert all(crop["readers"]["readers"] == 3 for crop in crops)


@pytest.mark.slow
def test_a_smoke_sweep_runs_end_to_end_on_a_lidc_download(download, mlflow_server, tmp_path):
    from mlflow.tracking import MlflowClient

    from orchestrator.sweep import main as sweep_main

    args = ["ct", "--data", str(download["root"]), "--preset", "smoke", "--stages", "gan", "--tracking-uri",
            mlflow_server, "--runs-dir", str(tmp_path / "runs"), "--storage", str(tmp_path / "tune"),
            "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "search.num_samples=1", "--set", "gan.epochs=1",
            "--set", "search.grace_epochs=1"]
    assert sweep_main(args) == 0
    client = MlflowClient(mlflow_server)
    (parent,) = [r for r in client.search_runs([client.get_experiment_by_name("medgan-sweep-ct").experiment_id])
                 if r.data.tags.get("sweep_path", "").startswith(str(tmp_path))]
    assert parent.info.status == "FINISHED" and parent.data.tags["best_run_id"]
    summary = json.loads(Path(client.download_artifacts(parent.info.run_id, "data/crops_summary.json",
                                                        str(tmp_path / "dl"))).read_text())
    assert summary["nodule_rows"]["used"] == 8


def test_a_stray_xml_that_does_not_parse_is_one_more_unreadable_file_without_lidc_annotations(data_copy, data_cfg):
    (data_copy / "notes.xml").write_text("<half an xml")
    cohort = ingest(data_copy, data_cfg)
    report = json.loads((cohort.path / "ingest_report.json").read_text())
    (stray,) = [f for f in report["files"] if f["file"] == "notes.xml"]
    assert stray["status"] == "rejected" and stray["reason"] != "bad_annotation"
    assert not report["label_source"].startswith("LIDC")  # the data are read as they were without it
