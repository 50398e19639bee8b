import csv
import hashlib
from dataclasses import replace

import numpy as np
import pydicom
import pytest

from orchestrator.data.ingest import ingest
from orchestrator.data.phantom import (
    F18_HALF_LIFE_S,
    ideal_observer_auc,
    make_patients,
    recorded_ceiling,
    nodule_parameters,
    truth_path,
    write_phantom_cohort,
)
from orchestrator.phantom import main as phantom_main


def _digest(folder):
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            h.update(path.relative_to(folder).as_posix().encode() + path.read_bytes())
    return h.hexdigest()


def test_same_seed_gives_the_same_bytes_and_another_seed_does_not(tmp_path):
    for name, seed in [("a", 3), ("b", 3), ("c", 4)]:
        assert phantom_main(["--out", str(tmp_path / name), "--patients", "4", "--size", "32",
                             "--slices", "2", "--seed", str(seed)]) == 0
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_files_are_real_dicom_with_unique_uids(phantom_dir):
    files = sorted(phantom_dir.rglob("*.dcm"))
    assert len(files) == 12 * 2 * 2
    datasets = [pydicom.dcmread(f) for f in files]
    assert {ds.Modality for ds in datasets} == {"PT", "CT"}
    assert len({ds.SOPInstanceUID for ds in datasets}) == len(files)
    for ds in datasets:
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.pixel_array.shape == (64, 64)
        assert float(ds.PixelSpacing[0]) == pytest.approx(160 / 64, rel=1e-4)
        for uid in (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID):
            assert uid.is_valid
    by_patient = {}
    for ds in datasets:
        by_patient.setdefault(ds.PatientID, set()).add((ds.StudyInstanceUID, ds.Modality, ds.SeriesInstanceUID))
    assert len(by_patient) == 12
    for series in by_patient.values():  # one study, one PT and one CT series per patient
        assert len({s[0] for s in series}) == 1 and len(series) == 2


def test_ct_is_in_hounsfield_units(phantom_dir):
    ds = pydicom.dcmread(next(phantom_dir.glob("ct/p000/*.dcm")))
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert ds.RescaleType == "HU"
    assert hu.min() >= -1024 and -1100 < np.median(hu) < 200  # air, lung and soft tissue
    assert (hu < -700).mean() > 0.2  # a lung field is in view


def test_pet_is_in_bq_per_ml_with_the_tags_suv_needs(phantom_dir):
    ds = pydicom.dcmread(next(phantom_dir.glob("pet/p000/*.dcm")))
    assert ds.Units == "BQML" and ds.DecayCorrection == "START"
    drug = ds.RadiopharmaceuticalInformationSequence[0]
    assert float(drug.RadionuclideHalfLife) == F18_HALF_LIFE_S
    assert float(drug.RadionuclideTotalDose) > 1e8 and float(ds.PatientWeight) > 0
    bq_ml = ds.pixel_array * float(ds.RescaleSlope)
    # body-weight SUV computed independently: tissue ~1, never absurd
    def seconds(tm):
        return int(tm[:2]) * 3600 + int(tm[2:4]) * 60 + float(tm[4:])
    elapsed = seconds(ds.SeriesTime) - seconds(drug.RadiopharmaceuticalStartTime)
    dose = float(drug.RadionuclideTotalDose) * 2 ** (-elapsed / F18_HALF_LIFE_S)
    suv = bq_ml * float(ds.PatientWeight) * 1000 / dose
    assert 0.5 < np.median(suv[suv > 0.2]) < 2.0 and suv.max() < 20


def test_labels_csv_is_balanced_and_names_every_patient(phantom_dir):
    rows = list(csv.DictReader((phantom_dir / "labels.csv").open()))
    ids = {pydicom.dcmread(f).PatientID for f in phantom_dir.rglob("*.dcm")}
    assert {r["patient_id"] for r in rows} == ids
    assert sum(r["label"] == "malignant" for r in rows) == 6


def test_size_and_uptake_overlap_and_point_in_opposite_directions_by_subtype():
    rows = [nodule_parameters(p) for p in make_patients(1000, seed=1)]

    def malignant_share(where) -> float:
        chosen = [r["label"] == "malignant" for r in rows if where(r)]
        assert len(chosen) > 50, "each group should hold many nodules"
        return float(np.mean(chosen))

    for key in ("diameter_mm", "suv_max"):  # the labels' interquartile ranges overlap
        quartiles = {label: np.percentile([r[key] for r in rows if r["label"] == label], [25, 75])
                     for label in ("benign", "malignant")}
        assert quartiles["malignant"][0] < quartiles["benign"][1], (key, quartiles)
    # avid is malignant when small, mostly benign when large and even: no single rule holds
    assert malignant_share(lambda r: r["diameter_mm"] < 12 and r["suv_max"] > 4.5) > 0.9
    assert malignant_share(lambda r: r["diameter_mm"] > 16 and r["suv_max"] > 4.5 and r["necrosis"] < 0.5) < 0.35
    assert malignant_share(lambda r: r["diameter_mm"] < 12 and r["suv_max"] < 2.5) < 0.1
    assert malignant_share(lambda r: r["diameter_mm"] > 16 and r["suv_max"] < 2.5) > 0.4
    # a ring of uptake marks a cancer; an irregular margin mostly does
    assert malignant_share(lambda r: r["necrosis"] > 0.5) == 1.0
    assert malignant_share(lambda r: r["lobulation"] > 0.25) > 0.65


def test_an_ideal_observer_on_the_recorded_parameters_is_the_ceiling_and_size_and_uptake_are_not_enough():
    """A logistic regression on the parameters (5-fold, 2,000 patients): the ceiling that the classifiers'
    learning curve is read against (the images, with their noise and PET's resolution, allow less)."""
    rows = [nodule_parameters(p) for p in make_patients(2000, seed=3)]
    assert ideal_observer_auc(rows) > 0.95
    size_and_uptake = ideal_observer_auc([{k: r[k] for k in ("diameter_mm", "suv_max", "label")} for r in rows])
    assert size_and_uptake < 0.8  # a straight rule on size and uptake misses the subtypes


def test_the_ceiling_is_read_from_the_parameters_beside_the_cohort_for_its_modality(phantom_dir, tmp_path):
    rows = list(csv.DictReader(truth_path(phantom_dir).open()))
    pet = [{k: v for k, v in r.items() if k not in ("series_uid", "modality")} for r in rows if r["modality"] == "pet"]
    ceiling = recorded_ceiling(phantom_dir, "pet")
    assert ceiling.patients == len(pet) == len(rows) // 2 and ceiling.auc == ideal_observer_auc(pet)
    assert f"the {len(pet)} patients' recorded nodule parameters" in ceiling.describe()
    assert recorded_ceiling(tmp_path, "pet") is None  # a cohort with nothing recorded beside it has no ceiling


def test_the_ground_truth_lies_beside_the_cohort_and_names_no_patient(tmp_path):
    table = write_phantom_cohort(tmp_path / "data", patients=4, modality="pet", seed=2, slices=2)
    truth = list(csv.DictReader(truth_path(tmp_path / "data").open()))
    series = {r["series_uid"] for r in csv.DictReader(table.open())}
    assert {r["series_uid"] for r in truth} == series and truth_path(tmp_path / "data").parent == tmp_path
    ids = {str(pydicom.dcmread(f).PatientID) for f in (tmp_path / "data").rglob("*.dcm")}
    names = {str(pydicom.dcmread(f).PatientName) for f in (tmp_path / "data").rglob("*.dcm")}
    text = truth_path(tmp_path / "data").read_text()
    assert not any(i in text for i in ids | names)


def test_the_brightest_pixel_is_not_the_answer(tmp_path):
    write_phantom_cohort(tmp_path, patients=40, modality="pet", size=64, seed=1, slices=1, layout="slices")
    labels = {r["patient_id"]: r["label"] for r in csv.DictReader((tmp_path / "labels.csv").open())}
    peak = {"benign": [], "malignant": []}
    for f in tmp_path.rglob("*.dcm"):
        ds = pydicom.dcmread(f)
        peak[labels[ds.PatientID]].append(float((ds.pixel_array * float(ds.RescaleSlope)).max()))
    # physiological hot spots outside the lungs make the slice maximum overlap between labels
    assert max(peak["benign"]) > np.median(peak["malignant"])


# ---------------------------------------------------------------- the default, real-shaped layout


@pytest.fixture(scope="module")
def series_dir(tmp_path_factory):
    """6 patients, a PET and a CT series of 6 slices each, and nodules.csv (the sweep's default shape)."""
    out = tmp_path_factory.mktemp("series")
    write_phantom_cohort(out, patients=6, modality="both", seed=5, slices=6)
    return out


def test_a_series_phantom_is_shaped_like_a_download(series_dir):
    rows = list(csv.DictReader((series_dir / "nodules.csv").open()))
    assert len(rows) == 12 and {r["modality"] for r in rows} == {"pet", "ct"}
    assert set(rows[0]) == {"series_uid", "coord_x", "coord_y", "coord_z", "diameter_mm", "label", "modality"}
    for modality, spacing, step in [("pet", 4.0, 3.0), ("ct", 1.25, 2.5)]:
        for folder in sorted((series_dir / modality).iterdir()):
            datasets = [pydicom.dcmread(f) for f in sorted(folder.glob("*.dcm"))]
            assert len(datasets) == 6 and len({ds.SeriesInstanceUID for ds in datasets}) == 1
            assert {float(ds.PixelSpacing[0]) for ds in datasets} == {spacing}
            z = [float(ds.ImagePositionPatient[2]) for ds in datasets]
            np.testing.assert_allclose(np.diff(z), step, atol=1e-3)


def test_each_nodule_lies_where_nodules_csv_says(series_dir):
    """At the world position of the table, the CT voxel holds the nodule, not lung."""
    for row in csv.DictReader((series_dir / "nodules.csv").open()):
        if row["modality"] != "ct":
            continue
        datasets = [pydicom.dcmread(f) for f in (series_dir / "ct").rglob("*.dcm")]
        series = [ds for ds in datasets if ds.SeriesInstanceUID == row["series_uid"]]
        nearest = min(series, key=lambda ds: abs(float(ds.ImagePositionPatient[2]) - float(row["coord_z"])))
        x0, y0 = (float(v) for v in nearest.ImagePositionPatient[:2])
        i = round((float(row["coord_x"]) - x0) / float(nearest.PixelSpacing[1]))
        j = round((float(row["coord_y"]) - y0) / float(nearest.PixelSpacing[0]))
        hu = nearest.pixel_array.astype(float) * float(nearest.RescaleSlope) + float(nearest.RescaleIntercept)
        assert hu[j, i] > -650, f"row for {row['label']}: {hu[j, i]:.0f} HU at the nodule centre"


@pytest.mark.parametrize("modality", ["ct", "pet"])
def test_an_enhanced_phantom_ingests_to_the_same_crops(tmp_path, data_cfg, modality):
    """One enhanced multi-frame file per series (PET: a rescale slope per frame) against one file per slice."""
    cfg = replace(data_cfg, modality=modality, size=32)
    cohorts = []
    for name, enhanced in [("single", False), ("enhanced", True)]:
        write_phantom_cohort(tmp_path / name, patients=6, modality=modality, seed=5, slices=4, enhanced=enhanced)
        cohorts.append(ingest(tmp_path / name, cfg))
    assert len(list((tmp_path / "enhanced").rglob("*.dcm"))) == 6
    assert pydicom.dcmread(next((tmp_path / "enhanced").rglob("*.dcm"))).NumberOfFrames == 4
    np.testing.assert_array_equal(np.asarray(cohorts[0].images), np.asarray(cohorts[1].images))
    assert len(cohorts[0].images) >= 6
    assert cohorts[1].meta["normalisation"] == ({"suv": len(cohorts[1].images)} if modality == "pet"
                                                else {"ct_lung_window": len(cohorts[1].images)})
