"""Helpers for the tests that run `python -m orchestrator.sweep` (in process or as a process to kill)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

EPOCHS = 1
REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sweep_overrides(tmp: Path, trials: int, epochs: int = EPOCHS) -> list[str]:
    # grace_epochs = epochs: ASHA stops no trial early, so every trial's history is complete
    return [f"data.cache_dir={tmp / 'cache'}", f"search.num_samples={trials}", f"gan.epochs={epochs}",
            f"search.grace_epochs={epochs}"]


def sweep_args(tmp: Path, url: str, trials: int, epochs: int = EPOCHS, stages: str = "gan") -> list[str]:
    """The command line of a smoke sweep under `tmp`, tracked at `url`."""
    sets = [arg for override in sweep_overrides(tmp, trials, epochs) for arg in ("--set", override)]
    return ["pet", "--preset", "smoke", "--stages", stages, "--tracking-uri", url, "--runs-dir", str(tmp / "runs"),
            "--storage", str(tmp / "tune"), *sets]


def sweep_runs(url: str, tmp: Path | str, stage: str = "gan"):
    """The parent and the `stage` child runs of the sweeps stored under `tmp` (tests share one server)."""
    client = MlflowClient(url)
    experiment = client.get_experiment_by_name("medgan-sweep-pet")
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    parents = [r for r in runs if r.data.tags.get("sweep_path", "").startswith(str(tmp))]
    ids = {p.info.run_id for p in parents}
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") in ids
                and r.data.tags.get("medgan.stage") == stage]
    return client, parents, children


def start_sweep_process(args: list[str], log: Path) -> subprocess.Popen:
    """The sweep CLI as its own process group (so the test can kill the driver and its local Ray)."""
    return subprocess.Popen([sys.executable, "-m", "orchestrator.sweep", *args], stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO)


def wait_for(condition, driver: subprocess.Popen, log: Path, timeout: float = 600):
    """Poll `condition` until it returns something truthy; fail if the driver exits first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = condition()
        if found:
            return found
        if driver.poll() is not None:
            pytest.fail(f"the sweep exited ({driver.returncode}) before the test could act:\n{log.read_text()[-3000:]}")
        time.sleep(1)
    pytest.fail(f"timed out after {timeout} s:\n{log.read_text()[-3000:]}")


def steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def kill_process_group(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    # the local Ray it started shares its fate (give its processes a moment to go)
    time.sleep(5)
