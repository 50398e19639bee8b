"""Sweep storage on S3: an S3-compatible server on loopback (moto's server mode), read back with boto3."""
from __future__ import annotations

import json

import pytest

from orchestrator.storage import latest_sweep_id, read_record, write_record

BUCKET = "medgan-test"  # the bucket the `s3` fixture (conftest.py) creates


def test_sweep_records_are_written_found_and_read_on_s3(s3):
    storage = f"s3://{BUCKET}/tune"
    assert latest_sweep_id(storage, "pet") is None
    for sweep_id in ("pet-20261101-090000", "pet-20261122-120000", "ct-20261123-080000"):
        write_record(f"{storage}/{sweep_id}", {"sweep_id": sweep_id, "labels": None})
    assert latest_sweep_id(storage, "pet") == "pet-20261122-120000"
    assert read_record(f"{storage}/pet-20261122-120000") == {"sweep_id": "pet-20261122-120000", "labels": None}
    body = s3.get_object(Bucket=BUCKET, Key="tune/ct-20261123-080000/sweep.json")["Body"].read()
    assert json.loads(body)["sweep_id"] == "ct-20261123-080000"
    with pytest.raises(FileNotFoundError, match="not a sweep folder"):
        read_record(f"{storage}/pet-19990101-000000")
