"""Sweep storage on S3: an S3-compatible server on loopback (moto's server mode), read back with boto3."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.config import load_config
from orchestrator.storage import SweepRecord, latest_sweep_id

BUCKET = "medgan-test"  # the bucket the `s3` fixture (conftest.py) creates


def test_sweep_records_are_written_found_and_read_on_s3(s3):
    storage = f"s3://{BUCKET}/tune"
    assert latest_sweep_id(storage, "pet") is None
    records = {sweep_id: SweepRecord(sweep_id, load_config("pet", "smoke"), Path("/data/pet"))
               for sweep_id in ("pet-20261101-090000", "pet-20261122-120000", "ct-20261123-080000")}
    for sweep_id, record in records.items():
        record.write(f"{storage}/{sweep_id}")
    assert latest_sweep_id(storage, "pet") == "pet-20261122-120000"
    assert SweepRecord.read(f"{storage}/pet-20261122-120000") == records["pet-20261122-120000"]
    body = s3.get_object(Bucket=BUCKET, Key="tune/ct-20261123-080000/sweep.json")["Body"].read()
    assert json.loads(body)["sweep_id"] == "ct-20261123-080000"
    with pytest.raises(FileNotFoundError, match="not a sweep folder"):
        SweepRecord.read(f"{storage}/pet-19990101-000000")
