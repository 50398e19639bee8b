"""Shared fixtures: a small phantom cohort written once per test session."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from orchestrator.config import DataConfig, load_config
from orchestrator.data.ingest import ingest
from orchestrator.data.phantom import make_patients, write_phantom_cohort
from sweeps import free_port

PHANTOM_PATIENTS = 12
PHANTOM_SEED = 7
S3_BUCKET = "medgan-test"


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory) -> Path:
    """12 patients x 2 whole slices through the nodule (labels.csv), PET and CT, 64 px. Read-only: copy it
    before changing it."""
    out = tmp_path_factory.mktemp("phantom")
    write_phantom_cohort(out, patients=PHANTOM_PATIENTS, modality="both", size=64, seed=PHANTOM_SEED, slices=2,
                         layout="slices")
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
    """The smoke cohort's patients as whole slices (30 patients x 3 slices, PET), ingested at 32 px."""
    root = tmp_path_factory.mktemp("smoke")
    cfg = load_config("pet", "smoke").data
    write_phantom_cohort(root / "data", patients=cfg.phantom_patients, modality="pet", size=cfg.phantom_size,
                         slices=3, seed=0, layout="slices")
    data_cfg = replace(cfg, cache_dir=str(root / "cache"))
    return ingest(root / "data", data_cfg, labels_file=root / "data" / "labels.csv").as_arrays()


@pytest.fixture
def s3(monkeypatch):
    """An S3-compatible server on loopback (moto's server mode) with bucket S3_BUCKET; yields a boto3 client."""
    port = free_port()
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


class MlflowServer:
    """`mlflow server` on 127.0.0.1 with a SQLite store; it can be stopped and started again on the
    same port and store (a server that goes away mid-sweep and comes back)."""

    def __init__(self, root: Path):
        self.root, self.port = root, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
             "--artifacts-destination", str(self.root / "artifacts"), "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if urllib.request.urlopen(f"{self.url}/health", timeout=2).status == 200:
                    return
            except OSError:
                time.sleep(0.5)
        self.stop()
        pytest.fail("mlflow server did not answer /health within 120 s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=60)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """The URL of an `mlflow server` shared by the session's tests (each keeps to its own runs)."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    server.start()
    yield server.url
    server.stop()


@pytest.fixture
def own_mlflow_server(tmp_path):
    """A server of this test's own, to stop and start again."""
    server = MlflowServer(tmp_path / "mlflow-server")
    server.start()
    yield server
    server.stop()
