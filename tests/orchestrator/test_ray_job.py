"""The sweep submitted to a Ray cluster as a job (Ray's Jobs API), the way the README's cluster section does."""
from __future__ import annotations

import secrets
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ray.job_submission import JobStatus, JobSubmissionClient

from sweeps import REPO, free_port, sweep_args, sweep_runs

RAY = str(Path(sys.executable).parent / "ray")  # the CLI of the Ray this interpreter has
JOB_TIMEOUT_S = 600


@pytest.fixture
def head_jobs(monkeypatch):
    """A local Ray head started as on a cluster's head node (`ray start --head`, dashboard on 127.0.0.1, token
    authentication, which this Ray asks of its Jobs API): a Jobs API client of it. The token lives in the
    head's environment only; the client sends it as its Authorization header."""
    token = secrets.token_hex(32)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", token)
    dashboard = free_port()
    subprocess.run([RAY, "start", "--head", f"--port={free_port()}", "--num-cpus=2", "--dashboard-host=127.0.0.1",
                    f"--dashboard-port={dashboard}", "--include-dashboard=true", "--disable-usage-stats"],
                   check=True, capture_output=True, timeout=180)
    monkeypatch.delenv("RAY_AUTH_TOKEN")  # what the head has: the client below is told it, as a user's would be
    try:
        yield JobSubmissionClient(f"http://127.0.0.1:{dashboard}", headers={"Authorization": f"Bearer {token}"})
    finally:
        subprocess.run([RAY, "stop", "--force"], capture_output=True, timeout=180)


@pytest.mark.slow
def test_a_sweep_submitted_as_a_ray_job_runs_on_the_cluster_and_is_recorded_in_mlflow(head_jobs, mlflow_server,
                                                                                        tmp_path):
    jobs = head_jobs
    command = [sys.executable, "-m", "orchestrator.sweep", *sweep_args(tmp_path, mlflow_server, trials=1),
               "--address", "auto"]
    # --working-dir .: this checkout travels with the job, less what .gitignore lists (a .venv of several GB in
    # the checkout would exceed Ray's upload limit otherwise)
    job = jobs.submit_job(entrypoint=shlex.join(command), runtime_env={"working_dir": str(REPO)})
    deadline = time.time() + JOB_TIMEOUT_S
    while (status := jobs.get_job_status(job)) not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
        assert time.time() < deadline, f"the job is still {status} after {JOB_TIMEOUT_S} s"
        time.sleep(2)
    logs = jobs.get_job_logs(job)
    assert status == JobStatus.SUCCEEDED, logs[-4000:]
    assert "stage 1: 1 ranked trial(s), 0 failed" in logs

    # the job's sweep is in MLflow as one run from a laptop is: its parent, its trial, finished
    client, (parent,), (trial,) = sweep_runs(mlflow_server, tmp_path, stage="gan")
    assert parent.info.status == trial.info.status == "FINISHED"
    assert parent.data.tags["best_run_id"] == trial.info.run_id
    # the uploaded copy is no git checkout: its code version is a digest of the sources, which reproduce reads
    assert parent.data.tags["git_commit"].startswith("source-sha256:")
