"""End to end: `python -m orchestrator.sweep pet --preset smoke` against a real MLflow server."""
from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from orchestrator.data.phantom import make_patients
from orchestrator.sweep import main as sweep_main

EPOCHS = 1


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """`mlflow server` on 127.0.0.1 with a SQLite store, stopped after the module."""
    root = tmp_path_factory.mktemp("mlflow")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/health", timeout=2).status == 200:
                break
        except OSError:
            time.sleep(1)
    else:
        server.kill()
        pytest.fail("mlflow server did not answer /health within 120 s")
    yield url
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=60)


def sweep_args(tmp: Path, url: str, trials: int) -> list[str]:
    return ["pet", "--preset", "smoke", "--tracking-uri", url, "--runs-dir", str(tmp / "runs"),
            "--storage", str(tmp / "tune"), "--set", f"data.cache_dir={tmp / 'cache'}",
            "--set", f"search.num_samples={trials}", "--set", f"gan.epochs={EPOCHS}"]


def sweep_runs(url: str):
    client = MlflowClient(url)
    experiment = client.get_experiment_by_name("medgan-sweep-pet")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return client, parents, children


@pytest.mark.slow
@pytest.mark.skip(reason="issue 5 open: under pytest the first trial's Train worker group times out waiting "
                         "for its 1 CPU (WorkerGroupStartupTimeoutError) on a 2-CPU local Ray; not yet diagnosed")
def test_smoke_sweep_records_every_trial_in_mlflow(mlflow_server, tmp_path, capsys):
    assert sweep_main(sweep_args(tmp_path, mlflow_server, trials=4)) == 0

    client, parents, children = sweep_runs(mlflow_server)
    (parent,) = parents
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["dataset_fingerprint"] and parent.data.params["search.metric"] == "ssim"
    assert len(children) == 4
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.info.status == "FINISHED"
        assert len(client.get_metric_history(child.info.run_id, "ssim")) == EPOCHS
        assert [a.path for a in client.list_artifacts(child.info.run_id, "samples")] == ["samples/epoch_0001.png"]
        best = {a.path for a in client.list_artifacts(child.info.run_id, "best_checkpoint")}
        assert "best_checkpoint/state.pt" in best
    ranking = {a.path for a in client.list_artifacts(parent.info.run_id, "ranking")}
    assert {"ranking/gan_ranking.csv", "ranking/gan_ranking.md", "ranking/gan_best_per_arch.md"} <= ranking

    rows = list(csv.DictReader((tmp_path / "runs" / "gan-pet" / "gan_ranking.csv").open()))
    assert len(rows) == 4
    assert [float(r["ssim"]) for r in rows] == sorted((float(r["ssim"]) for r in rows), reverse=True)
    assert "best per architecture" in capsys.readouterr().out

    # no patient identifier reaches MLflow
    recorded = str([(r.data.params, r.data.tags) for r in parents + children])
    for patient in make_patients(30, 0):
        assert patient.patient_id not in recorded and patient.name not in recorded
