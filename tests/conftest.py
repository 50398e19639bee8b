"""Shared fixtures: a small phantom cohort written once per test session."""
from __future__ import annotations

import shutil
import socket
from dataclasses import replace
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from orchestrator.config import DataConfig, load_config
from orchestrator.data.ingest import ingest
from orchestrator.data.phantom import make_patients, write_phantom_cohort

PHANTOM_PATIENTS = 12
PHANTOM_SEED = 7
S3_BUCKET = "medgan-test"


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory) -> Path:
    """12 patients x 2 slices, PET and CT, 64 px. Read-only: copy it before changing it."""
    out = tmp_path_factory.mktemp("phantom")
    write_phantom_cohort(out, patients=PHANTOM_PATIENTS, modality="both", size=64, seed=PHANTOM_SEED, slices=2)
    return out


@pytest.fixture(scope="session")
def phantom_identifiers() -> list[str]:
    """Every patient identifier the phantom writes: none may leave the data layer."""
    values = []
    for p in make_patients(PHANTOM_PATIENTS, PHANTOM_SEED):
        values += [p.patient_id, p.name, p.name.replace("^", " "), p.birth_date]
    return values


@pytest.fixture
def data_copy(phantom_dir, tmp_path) -> Path:
    """A private, writable copy of the phantom cohort."""
    return Path(shutil.copytree(phantom_dir, tmp_path / "data"))


@pytest.fixture
def data_cfg(tmp_path) -> DataConfig:
    """The smoke preset's data settings, with a cache private to the test."""
    cfg = load_config("pet", "smoke").data
    return replace(cfg, cache_dir=str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def smoke_arrays(tmp_path_factory) -> dict:
    """The smoke cohort (30 patients x 3 slices, PET) ingested at 32 px."""
    root = tmp_path_factory.mktemp("smoke")
    cfg = load_config("pet", "smoke").data
    write_phantom_cohort(root / "data", patients=cfg.phantom_patients, modality="pet", size=cfg.phantom_size,
                         slices=cfg.phantom_slices, seed=0)
    data_cfg = replace(cfg, cache_dir=str(root / "cache"))
    return ingest(root / "data", data_cfg, labels_file=root / "data" / "labels.csv").as_arrays()


@pytest.fixture
def s3(monkeypatch):
    """An S3-compatible server on loopback (moto's server mode) with bucket S3_BUCKET; yields a boto3 client."""
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
    client.create_bucket(Bucket=S3_BUCKET)
    yield client
    server.stop()
