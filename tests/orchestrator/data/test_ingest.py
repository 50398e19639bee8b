"""Ingest: real DICOM round trips, one test per kind of bad input, cache, privacy."""
import csv
import json
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import generate_uid

from orchestrator.data.ingest import IngestError, format_summary, ingest
from trainables.classify.arms import HELD_OUT_REAL, Arm, training_set
from trainables.cohort import HELD_OUT, SPLITS, VAL
from orchestrator.ingest import main as ingest_main

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
PET_FILES_PER_PATIENT = 2


def _report(cohort) -> dict:
    return json.loads((cohort.path / "ingest_report.json").read_text())


def _outcome(cohort, rel: str) -> dict:
    return next(f for f in _report(cohort)["files"] if f["file"] == rel)


def _a_pet_file(data: Path) -> Path:
    return sorted((data / "pet").rglob("*.dcm"))[0]


# ---------------------------------------------------------------- the normal path


def test_phantom_pet_round_trip(phantom_dir, data_cfg):
    cohort = ingest(phantom_dir, data_cfg)
    assert cohort.images.shape == (12 * PET_FILES_PER_PATIENT, 32, 32)
    assert cohort.images.dtype == np.float16
    assert 0.0 <= float(cohort.images.min()) and float(cohort.images.max()) <= 1.0
    assert sorted(np.unique(cohort.labels)) == [0, 1]
    assert cohort.meta["normalisation"] == {"suv": 24}
    report = _report(cohort)
    assert report["accepted"] == 24 and report["rejected_by_reason"] == {"other_modality": 24}
    assert report["accepted"] + report["rejected"] == report["files_found"] == len(report["files"]) == 48


def test_ct_ingest_applies_the_lung_window(phantom_dir, data_cfg):
    cohort = ingest(phantom_dir, replace(data_cfg, modality="ct", size=64))  # 64 px: no resize
    assert cohort.meta["normalisation"] == {"ct_lung_window": 24}
    ds = pydicom.dcmread(phantom_dir / "ct/p000/slice_00.dcm")
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    expected = np.clip((hu - (-600 - 1500 / 2)) / 1500, 0, 1)  # centre -600, width 1500
    accepted = [f["file"] for f in _report(cohort)["files"] if f["status"] == "accepted"]
    got = np.asarray(cohort.images[accepted.index("ct/p000/slice_00.dcm")], np.float32)
    np.testing.assert_allclose(got, expected, atol=1e-3)


def test_pet_without_suv_tags_falls_back_to_per_slice_and_says_so(data_copy, data_cfg):
    for path in (data_copy / "pet").rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        del ds.PatientWeight
        ds.save_as(path)
    cohort = ingest(data_copy, replace(data_cfg, size=64))  # 64 px: no resize after normalising
    assert cohort.meta["normalisation"] == {"minmax": 24}
    assert _outcome(cohort, "pet/p000/slice_00.dcm")["detail"] == "minmax: no usable PatientWeight"
    images = np.asarray(cohort.images, np.float32).reshape(24, -1)
    assert np.allclose(images.max(1), 1.0, atol=1e-3) and np.allclose(images.min(1), 0.0, atol=1e-3)


def test_labels_from_benign_and_malignant_folders(phantom_dir, tmp_path, data_cfg):
    labels = {r["patient_id"]: r["label"] for r in csv.DictReader((phantom_dir / "labels.csv").open())}
    for path in (phantom_dir / "pet").rglob("*.dcm"):
        label = labels[pydicom.dcmread(path, stop_before_pixels=True).PatientID]
        target = tmp_path / "byfolder" / label / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    cohort = ingest(tmp_path / "byfolder", data_cfg)
    assert _report(cohort)["label_source"] == "folders"
    assert len(cohort.labels) == 24 and int(cohort.labels.sum()) == 12


def test_labels_csv_by_file_overrides_patient_row(data_copy, data_cfg):
    with (data_copy / "labels.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    first = pydicom.dcmread(data_copy / "pet/p000/slice_00.dcm", stop_before_pixels=True)
    patient_label = next(r["label"] for r in rows if r["patient_id"] == first.PatientID)
    flipped = "benign" if patient_label == "malignant" else "malignant"
    with (data_copy / "labels.csv").open("a", newline="") as fh:
        fh.write(f",{flipped},pet/p000/slice_00.dcm\n")
    text = (data_copy / "labels.csv").read_text().replace("patient_id,label\n", "patient_id,label,file\n", 1)
    (data_copy / "labels.csv").write_text(text)
    cohort = ingest(data_copy, data_cfg)
    files = [f["file"] for f in _report(cohort)["files"] if f["status"] == "accepted"]
    assert cohort.labels[files.index("pet/p000/slice_00.dcm")] == (1 if flipped == "malignant" else 0)


# ---------------------------------------------------------------- bad input, one test each


def test_truncated_file_is_rejected_by_name(data_copy, data_cfg):
    path = _a_pet_file(data_copy)
    path.write_bytes(path.read_bytes()[:-500])
    outcome = _outcome(ingest(data_copy, data_cfg), "pet/p000/slice_00.dcm")
    assert outcome["status"] == "rejected" and outcome["reason"] == "truncated"
    assert "7FE0,0010" in outcome["detail"]


def test_unreadable_header_is_rejected(data_copy, data_cfg):
    path = _a_pet_file(data_copy)
    path.write_bytes(path.read_bytes()[:200])
    assert _outcome(ingest(data_copy, data_cfg), "pet/p000/slice_00.dcm")["reason"] == "truncated"


def test_non_dicom_files_are_rejected(data_copy, data_cfg):
    (data_copy / "notes.txt").write_text("scanner log, not an image\n")
    (data_copy / "pet" / "thumb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    shutil.copy(PYDICOM_FILES / "rtstruct.dcm", data_copy / "bare_dataset.dcm")  # no preamble, no meta
    cohort = ingest(data_copy, data_cfg)
    assert _outcome(cohort, "notes.txt")["reason"] == "not_dicom"
    assert "re-saved" in _outcome(cohort, "bare_dataset.dcm")["detail"]
    assert _outcome(cohort, "pet/thumb.png")["reason"] == "not_dicom"


def test_dicom_without_pixel_data_is_rejected(data_copy, data_cfg):
    ds = pydicom.dcmread(_a_pet_file(data_copy))
    del ds.PixelData
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(data_copy / "pet" / "header_only.dcm")
    assert _outcome(ingest(data_copy, data_cfg), "pet/header_only.dcm")["reason"] == "no_pixel_data"


@pytest.mark.parametrize("name, kind", [("rtstruct.dcm", "RTSTRUCT"), ("test-SR.dcm", "SR"), ("rtdose.dcm", "RTDOSE")])
def test_non_image_objects_are_rejected(data_copy, data_cfg, name, kind):
    ds = pydicom.dcmread(PYDICOM_FILES / name, force=True)  # rtstruct.dcm ships without a preamble
    ds.file_meta.TransferSyntaxUID = ds.file_meta.get("TransferSyntaxUID", pydicom.uid.ImplicitVRLittleEndian)
    ds.save_as(data_copy / name, enforce_file_format=True)
    outcome = _outcome(ingest(data_copy, data_cfg), name)
    assert outcome["reason"] == "non_image_object" and kind in outcome["detail"]


def test_other_modalities_are_rejected(data_copy, data_cfg):
    shutil.copy(PYDICOM_FILES / "MR_small.dcm", data_copy / "mr.dcm")
    cohort = ingest(data_copy, data_cfg)
    assert _outcome(cohort, "mr.dcm") == {"file": "mr.dcm", "status": "rejected", "reason": "other_modality",
                                          "detail": "Modality is MR, this ingest wants PT"}
    assert _outcome(cohort, "ct/p000/slice_00.dcm")["reason"] == "other_modality"


def test_compressed_syntax_without_decoder_is_rejected(data_copy, data_cfg):
    ds = pydicom.dcmread(_a_pet_file(data_copy))
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3not-really-compressed"])
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: nothing decodes video here
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(data_copy / "pet" / "video.dcm")
    outcome = _outcome(ingest(data_copy, data_cfg), "pet/video.dcm")
    assert outcome["reason"] == "compressed_no_decoder" and "MPEG2" in outcome["detail"]


def test_slices_of_unexpected_shape_are_rejected(data_copy, data_cfg):
    ds = pydicom.dcmread(_a_pet_file(data_copy))
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.set_pixel_data(np.zeros((3, 64, 64), np.uint16), "MONOCHROME2", 16, generate_instance_uid=False)
    ds.save_as(data_copy / "pet" / "multiframe.dcm")
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.set_pixel_data(np.zeros((8, 8), np.uint16), "MONOCHROME2", 16, generate_instance_uid=False)
    ds.save_as(data_copy / "pet" / "tiny.dcm")
    cohort = ingest(data_copy, data_cfg)
    assert _outcome(cohort, "pet/multiframe.dcm")["reason"] == "unexpected_shape"
    assert "3 frame(s)" in _outcome(cohort, "pet/multiframe.dcm")["detail"]
    assert _outcome(cohort, "pet/tiny.dcm")["reason"] == "unexpected_shape"


def test_duplicate_sop_instance_uids_keep_the_first_and_reject_the_copy(data_copy, data_cfg):
    shutil.copy(data_copy / "pet/p000/slice_00.dcm", data_copy / "pet/p000/slice_99_copy.dcm")
    cohort = ingest(data_copy, data_cfg)
    assert _outcome(cohort, "pet/p000/slice_00.dcm")["status"] == "accepted"
    copy = _outcome(cohort, "pet/p000/slice_99_copy.dcm")
    assert copy["reason"] == "duplicate_sop_uid" and "pet/p000/slice_00.dcm" in copy["detail"]
    assert len(cohort.labels) == 24


def test_files_with_no_label_are_rejected(data_copy, data_cfg):
    lines = (data_copy / "labels.csv").read_text().splitlines()
    first_id = pydicom.dcmread(data_copy / "pet/p000/slice_00.dcm", stop_before_pixels=True).PatientID
    (data_copy / "labels.csv").write_text("\n".join(l for l in lines if not l.startswith(first_id)) + "\n")
    cohort = ingest(data_copy, data_cfg)
    assert _outcome(cohort, "pet/p000/slice_00.dcm")["reason"] == "no_label"
    assert _report(cohort)["rejected_by_reason"]["no_label"] == PET_FILES_PER_PATIENT


def test_label_rows_with_no_files_are_reported_without_their_values(data_copy, data_cfg, capsys):
    with (data_copy / "labels.csv").open("a") as fh:
        fh.write("MRN-NOT-IN-DATA,malignant\n")
    cohort = ingest(data_copy, data_cfg)
    assert _report(cohort)["unused_label_rows"] == [{"row": 14, "key": "patient_id"}]
    assert "MRN-NOT-IN-DATA" not in (cohort.path / "ingest_report.json").read_text()
    assert ingest_main([str(data_copy), "--cache", data_cfg.cache_dir, "--size", "32"]) == 0
    assert "label rows that matched no accepted slice: 1" in capsys.readouterr().out


def test_nothing_usable_exits_non_zero_with_the_reasons(tmp_path, data_cfg, capsys):
    (tmp_path / "data").mkdir()
    shutil.copy(PYDICOM_FILES / "CT_small.dcm", tmp_path / "data" / "ct.dcm")
    (tmp_path / "data" / "readme.txt").write_text("hello")
    code = ingest_main([str(tmp_path / "data"), "--modality", "pet", "--cache", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert code == 2
    assert "no usable PET samples" in err and "1 other_modality" in err and "1 not_dicom" in err
    with pytest.raises(IngestError, match="2 file\\(s\\) found, none used"):
        ingest(tmp_path / "data", data_cfg)


def test_too_few_patients_for_a_split_is_a_clear_error(phantom_dir, tmp_path, data_cfg):
    rows = list(csv.DictReader((phantom_dir / "labels.csv").open()))
    keep = [r for r in rows if r["label"] == "benign"][:2] + [r for r in rows if r["label"] == "malignant"][:4]
    (tmp_path / "few").mkdir()
    with (tmp_path / "few" / "labels.csv").open("w") as fh:
        fh.write("patient_id,label\n" + "".join(f"{r['patient_id']},{r['label']}\n" for r in keep))
    for path in (phantom_dir / "pet").rglob("*.dcm"):
        shutil.copy(path, tmp_path / "few" / f"{path.parent.name}_{path.name}")
    with pytest.raises(ValueError, match="only 2 patient\\(s\\) with label 0: need at least 3"):
        ingest(tmp_path / "few", data_cfg)


# ---------------------------------------------------------------- cache


def test_second_run_reads_the_cache(phantom_dir, data_cfg):
    first = ingest(phantom_dir, data_cfg)
    started = time.perf_counter()
    second = ingest(phantom_dir, data_cfg)
    assert (first.from_cache, second.from_cache) == (False, True)
    assert time.perf_counter() - started < 1.0
    assert second.path == first.path
    np.testing.assert_array_equal(np.asarray(first.images), np.asarray(second.images))
    np.testing.assert_array_equal(first.split, second.split)


def test_changing_a_file_invalidates_the_cache(data_copy, data_cfg):
    first = ingest(data_copy, data_cfg)
    path = data_copy / "pet/p001/slice_00.dcm"
    ds = pydicom.dcmread(path)
    ds.PixelData = (ds.pixel_array // 2).astype(np.uint16).tobytes()
    ds.save_as(path)
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000))
    second = ingest(data_copy, data_cfg)
    assert not second.from_cache and second.path != first.path
    assert second.fingerprint != first.fingerprint


def test_changing_a_preprocessing_setting_invalidates_the_cache(phantom_dir, data_cfg):
    first = ingest(phantom_dir, data_cfg)
    assert ingest(phantom_dir, data_cfg).from_cache
    for changed in (replace(data_cfg, size=48), replace(data_cfg, pet_suv_max=5.0), replace(data_cfg, seed=1)):
        other = ingest(phantom_dir, changed)
        assert not other.from_cache and other.path != first.path
    # a setting that does not change what ingest makes keeps the entry
    assert ingest(phantom_dir, replace(data_cfg, phantom_patients=5)).from_cache


def test_split_is_stable_for_the_same_inputs_and_seed(phantom_dir, tmp_path, data_cfg):
    first = ingest(phantom_dir, data_cfg)
    # a different cache (so a different pseudonym salt) must give the same split
    again = ingest(phantom_dir, replace(data_cfg, cache_dir=str(tmp_path / "elsewhere")))
    assert not again.from_cache
    np.testing.assert_array_equal(first.split, again.split)
    assert set(first.meta["patients"]).isdisjoint(again.meta["patients"])  # salts differ
    other_seed = ingest(phantom_dir, replace(data_cfg, seed=5))
    assert not np.array_equal(first.split, other_seed.split)


def test_an_oracle_rung_draws_the_same_patients_on_any_machine(phantom_dir, tmp_path, data_cfg):
    """Another cache has another pseudonym salt, so other patient codes in another order: the rung must
    still add the same patients (their images), as `reproduce` elsewhere needs."""
    scarce = replace(data_cfg, train_fraction=0.5)
    here, there = (ingest(phantom_dir, replace(scarce, cache_dir=str(tmp_path / name))).as_arrays()
                   for name in ("here", "there"))
    for seed in range(4):
        added = [sorted(x[source == HELD_OUT_REAL].flatten(1).sum(1).tolist())
                 for x, _, source in (training_set(Arm("oracle", ratio=0.5), arrays, None, seed)
                                      for arrays in (here, there))]
        assert added[0] == added[1] and 0 < len(added[0]) < int((here["split"] == HELD_OUT).sum())
    np.testing.assert_array_equal(np.sort(here["draw_order"]), np.sort(there["draw_order"]))


def test_split_keeps_each_patient_in_one_set_with_both_labels_everywhere(phantom_dir, data_cfg):
    cohort = ingest(phantom_dir, data_cfg)
    for patient in np.unique(cohort.patients):
        assert len(np.unique(cohort.split[cohort.patients == patient])) == 1
    for s, name in enumerate(SPLITS[:3]):  # train, val, test; nothing is held out by default
        assert set(cohort.labels[cohort.split == s]) == {0, 1}, name
    assert not (cohort.split == SPLITS.index("held_out")).any()
    images, labels = cohort.subset("val")
    assert len(images) == len(labels) == int((cohort.split == VAL).sum())


def test_train_fraction_holds_out_training_patients_and_moves_no_other(phantom_dir, data_cfg, capsys):
    full = ingest(phantom_dir, data_cfg)
    scarce = ingest(phantom_dir, replace(data_cfg, train_fraction=0.5))
    assert scarce.path != full.path  # a setting of the cache key
    held, train = SPLITS.index("held_out"), SPLITS.index("train")
    assert set(scarce.labels[scarce.split == held]) == {0, 1}
    np.testing.assert_array_equal(scarce.split[full.split != train], full.split[full.split != train])
    assert set(np.unique(scarce.split[full.split == train])) == {train, held}
    print(format_summary(scarce))
    assert "held_out: training patients left out of all training (data.train_fraction 0.5)" in capsys.readouterr().out


# ---------------------------------------------------------------- privacy


def test_no_patient_identifier_leaves_ingest(phantom_dir, data_cfg, phantom_identifiers, capsys):
    assert ingest_main([str(phantom_dir), "--cache", data_cfg.cache_dir, "--size", "32"]) == 0
    assert ingest_main([str(phantom_dir), "--cache", data_cfg.cache_dir, "--size", "32"]) == 0
    printed = capsys.readouterr()
    cohort = ingest(phantom_dir, data_cfg)
    blobs = [printed.out, printed.err]
    blobs += [p.read_bytes().decode("latin-1") for p in Path(data_cfg.cache_dir).rglob("*") if p.is_file()]
    blobs.append(json.dumps(cohort.meta))
    for identifier in phantom_identifiers:
        for blob in blobs:
            assert identifier not in blob
    assert all(p.startswith("pt-") for p in cohort.meta["patients"])


def test_id_salt_is_private_to_its_owner(phantom_dir, data_cfg):
    ingest(phantom_dir, data_cfg)
    assert (Path(data_cfg.cache_dir) / "id_salt").stat().st_mode & 0o077 == 0


def test_cohort_arrays_carry_no_strings(phantom_dir, data_cfg):
    arrays = ingest(phantom_dir, data_cfg).as_arrays()
    assert set(arrays) == {"images", "labels", "patients", "split", "draw_order"}
    assert all(a.dtype.kind in "fiu" for a in arrays.values())

