"""Sweep storage on S3: an S3-compatible server on loopback (moto's server mode), read back with boto3."""
from __future__ import annotations

import json
import socket

import boto3
import pytest
from moto.server import ThreadedMotoServer

from orchestrator.storage import latest_sweep_id, read_record, write_record

BUCKET = "medgan-test"


@pytest.fixture
def s3(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    # pyarrow (as Ray uses it) and boto3 both read the endpoint and credentials from the environment
    for key, value in {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test",
                       "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    yield client
    server.stop()


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
