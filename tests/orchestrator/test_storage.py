"""The sweep folder layout: ids, the newest sweep of a modality, the sweep record."""
from __future__ import annotations

import time

import pytest

from orchestrator.config import load_config
from orchestrator.storage import SweepRecord, absolute, checkpoint_uri, latest_sweep_id, new_sweep_id


def test_latest_sweep_is_the_newest_folder_of_that_modality(tmp_path):
    for name in ("pet-20261101-090000", "pet-20261122-120000", "ct-20261123-080000", "pet-notes.txt"):
        (tmp_path / name).mkdir() if name.endswith("0") else (tmp_path / name).write_text("x")
    assert latest_sweep_id(str(tmp_path), "pet") == "pet-20261122-120000"
    assert latest_sweep_id(str(tmp_path), "ct") == "ct-20261123-080000"
    assert latest_sweep_id(str(tmp_path / "absent"), "pet") is None


def test_new_ids_sort_by_start_time_and_the_latest_is_found(tmp_path):
    assert new_sweep_id("pet").startswith("pet-") and len(new_sweep_id("pet")) == len("pet-YYYYmmdd-HHMMSS")
    start = time.mktime((2026, 12, 31, 23, 59, 58, 0, 0, -1))  # across a second, a minute, a day, a year
    times = [start + offset for offset in (0, 1, 3, 61, 86_400, 40 * 86_400)]
    ids = [new_sweep_id("pet", when) for when in times]
    assert sorted(ids) == ids and len(set(ids)) == len(ids)
    for sweep_id in [*ids[::-1], new_sweep_id("ct", times[-1] + 9)]:  # made in any order; another modality
        (tmp_path / sweep_id).mkdir()
    assert latest_sweep_id(str(tmp_path), "pet") == ids[-1]
    assert latest_sweep_id(str(tmp_path / "none-yet"), "pet") is None


def test_record_round_trips_and_a_folder_without_one_is_not_a_sweep(tmp_path):
    record = SweepRecord("pet-1", load_config("pet", "smoke", overrides=["gan.epochs=3"]), tmp_path / "data",
                         nodules=tmp_path / "nodules.csv", fingerprint="abc", preset="smoke",
                         tracking_uri="http://127.0.0.1:5000")
    record.write(str(tmp_path / "pet-1"))
    assert SweepRecord.read(str(tmp_path / "pet-1")) == record
    (tmp_path / "pet-2").mkdir()
    with pytest.raises(FileNotFoundError, match="not a sweep folder"):
        SweepRecord.read(str(tmp_path / "pet-2"))


def test_local_storage_becomes_absolute_and_uris_stay(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert absolute("runs/tune") == str(tmp_path / "runs" / "tune")
    assert absolute("s3://bucket/prefix") == "s3://bucket/prefix"


def test_reported_checkpoints_get_their_storage_scheme_back():
    assert checkpoint_uri("s3://bucket/tune", "bucket/tune/pet-1/gan-train/x/checkpoint_0") == \
        "s3://bucket/tune/pet-1/gan-train/x/checkpoint_0"
    assert checkpoint_uri("/runs/tune", "/runs/tune/pet-1/checkpoint_0") == "/runs/tune/pet-1/checkpoint_0"
    assert checkpoint_uri("s3://bucket/tune", "s3://bucket/tune/c") == "s3://bucket/tune/c"
