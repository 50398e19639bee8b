"""MLflow writes against a real `mlflow server` that goes away and comes back."""
from __future__ import annotations

import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from orchestrator import mlflow_writes
from orchestrator.mlflow_writes import Writes, unreachable_reason
from orchestrator import MLFLOW_HTTP_DEFAULTS
from orchestrator.sweep import main as sweep_main


@pytest.fixture(autouse=True)
def fail_fast(monkeypatch):
    for key, value in MLFLOW_HTTP_DEFAULTS.items():  # as the sweep sets them
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(mlflow_writes, "PROBE_EVERY", 0.0)  # ask /health on every write


def write_a_trial(writes: Writes, experiment_id: str, tmp_path: Path, name: str) -> str:
    """What a trial's callback writes: a run found by tag or made, metrics per epoch, a file, its end."""
    run = writes.run(experiment_id, name, tags={"trial": name}, find={"trial": name}, params={"lr": "0.001"})
    for epoch in (1, 2):
        writes.log_batch(run, metrics=[Metric("ssim", 0.1 * epoch, int(time.time() * 1000), epoch)],
                         tags={"node_id": "abc"})
    grid = tmp_path / f"{name}.png"
    grid.write_bytes(b"grid " + name.encode())
    writes.log_artifacts(run, grid, "samples")
    grid.unlink()  # a temporary file: the spool must have kept its own copy
    writes.terminate(run, "FINISHED")
    return run


def assert_recorded(client: MlflowClient, experiment_id: str, name: str, tmp_path: Path) -> None:
    (run,) = client.search_runs([experiment_id], f"tags.trial = '{name}'")
    assert run.info.status == "FINISHED" and run.data.params == {"lr": "0.001"}
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "ssim")] == [(1, 0.1), (2, 0.2)]
    grid = client.download_artifacts(run.info.run_id, f"samples/{name}.png", str(tmp_path / "download"))
    assert Path(grid).read_bytes() == b"grid " + name.encode()


@pytest.mark.slow
def test_writes_made_while_the_server_is_away_are_spooled_and_made_when_it_is_back(own_mlflow_server, tmp_path):
    client = MlflowClient(own_mlflow_server.url)
    experiment_id = client.create_experiment("writes")
    writes = Writes(client, tmp_path / "spool")
    write_a_trial(writes, experiment_id, tmp_path, "before")  # made at once
    assert not (tmp_path / "spool").exists()

    own_mlflow_server.stop()
    started = time.perf_counter()
    run = write_a_trial(writes, experiment_id, tmp_path, "during")
    assert run.startswith(mlflow_writes.PLACEHOLDER)  # the server could not give it an id yet
    assert time.perf_counter() - started < 30  # fails fast: training is not held up for minutes
    assert len(writes.pending) == 5 and (tmp_path / "spool" / "ops.jsonl").exists()

    own_mlflow_server.start()
    write_a_trial(writes, experiment_id, tmp_path, "after")  # the first write replays the spool, in order
    assert not writes.pending and not (tmp_path / "spool").exists() and writes.finish() == 0
    for name in ("before", "during", "after"):
        assert_recorded(client, experiment_id, name, tmp_path)


@pytest.mark.slow
def test_a_spool_left_at_the_end_is_replayed_later_once(own_mlflow_server, tmp_path, capsys):
    client = MlflowClient(own_mlflow_server.url)
    experiment_id = client.create_experiment("writes")
    writes = Writes(client, tmp_path / "spool")
    run = writes.run(experiment_id, "early", tags={"trial": "early"}, find={"trial": "early"}, params={"lr": "0.001"})
    own_mlflow_server.stop()
    writes.log_batch(run, metrics=[Metric("ssim", 0.1, 0, 1), Metric("ssim", 0.2, 0, 2)])
    grid = tmp_path / "early.png"
    grid.write_bytes(b"grid early")
    writes.log_artifacts(run, grid, "samples")
    writes.terminate(run, "FINISHED")
    write_a_trial(writes, experiment_id, tmp_path, "late")
    assert writes.finish() == 8  # still away at the end: reported, kept on disk
    assert "unreachable" in capsys.readouterr().err
    assert mlflow_writes.main([str(tmp_path / "spool"), "--tracking-uri", own_mlflow_server.url]) == 1

    own_mlflow_server.start()
    assert mlflow_writes.main([str(tmp_path / "spool"), "--tracking-uri", own_mlflow_server.url]) == 0
    assert "8 of 8 write(s) made" in capsys.readouterr().out
    for name in ("early", "late"):
        assert_recorded(client, experiment_id, name, tmp_path)
    # replaying again makes nothing twice
    assert mlflow_writes.main([str(tmp_path / "spool"), "--tracking-uri", own_mlflow_server.url]) == 0
    assert len(client.search_runs([experiment_id])) == 2


def test_a_wrong_write_to_a_server_that_answers_is_raised_not_spooled(mlflow_server, tmp_path):
    writes = Writes(MlflowClient(mlflow_server), tmp_path / "spool")
    with pytest.raises(MlflowException):
        writes.terminate("0" * 32, "FINISHED")  # no such run
    assert not writes.pending and not (tmp_path / "spool").exists()


def test_a_sweep_whose_tracking_server_does_not_answer_stops_before_training(tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens there
    assert unreachable_reason(url)
    started = time.perf_counter()
    code = sweep_main(["pet", "--preset", "smoke", "--tracking-uri", url, "--runs-dir", str(tmp_path / "runs"),
                       "--storage", str(tmp_path / "tune"), "--set", f"data.cache_dir={tmp_path / 'cache'}"])
    assert code == 2
    assert f"the MLflow tracking server {url} does not answer" in capsys.readouterr().err
    assert time.perf_counter() - started < 120  # the phantom is made; nothing else is
    assert not (tmp_path / "tune").exists() and not (tmp_path / "runs").exists()


def test_an_image_whose_write_is_made_again_is_kept_once(mlflow_server, tmp_path):
    """A write can reach the server while its answer is lost (the server going away mid-request); its replay
    from the spool must not add a second copy of the image at that step."""
    client = MlflowClient(mlflow_server)
    experiment_id = client.create_experiment(f"replayed-image-{tmp_path.name}")
    writes = Writes(client, tmp_path / "spool")
    run = writes.run(experiment_id, "trial", tags={"trial": "t"}, find={"trial": "t"})
    grid = tmp_path / "grid.png"
    Image.new("RGB", (8, 8), "white").save(grid)
    for step in (1, 1, 2):  # step 1 twice: as a replay would make it
        writes.log_image(run, grid, "samples", step)
    steps = sorted(int(Path(a.path).name.split("+")[2]) for a in client.list_artifacts(run, "images")
                   if a.path.endswith(".png"))
    assert steps == [1, 2]


def test_the_champion_moves_to_a_better_version_on_the_same_cohort_and_says_when_the_cohort_changes(
        mlflow_server, tmp_path, capsys):
    client = MlflowClient(mlflow_server)
    experiment_id = client.create_experiment("champion")
    writes = Writes(client, tmp_path / "spool")
    module = tmp_path / "model.pt"
    torch.save(torch.nn.Linear(2, 2), module)
    signature = infer_signature(np.zeros((1, 2), np.float32), np.zeros((1, 2), np.float32)).to_dict()
    rule = {"same": ["dataset_digest", "metric"], "value": "fid", "mode": "min"}

    def register(fid: float, cohort: str) -> str:
        run = writes.run(experiment_id, f"fid {fid}", tags={}, find={}, params={})
        writes.log_batch(run, metrics=[Metric(key, value, 1000 + epoch, epoch)
                                       for epoch in (1, 2) for key, value in (("fid", fid + 2 - epoch), ("ssim", 0.5))])
        writes.log_model(run, module, "generator", "medgan-test-cgan", signature, tags={
            "dataset_digest": cohort, "metric": "fid", "fid": str(fid)}, alias="champion", alias_rule=rule,
            linked_metrics={"step": 2, "keys": ["fid", "ssim"], "dataset_name": f"cohort-{cohort}",
                            "dataset_digest": cohort})
        return run

    def champion():
        return client.get_model_version_by_alias("medgan-test-cgan", "champion")

    first = register(10.0, "aaaa")
    assert champion().run_id == first and "champion_decision" not in champion().tags
    worse = register(12.0, "aaaa")
    assert champion().run_id == first
    (version,) = client.search_model_versions(f"name = 'medgan-test-cgan' and run_id = '{worse}'")
    assert "stays on version 1: its fid 10 on the same data is better than this version's 12" in \
        version.tags["champion_decision"]
    better = register(8.0, "aaaa")
    assert champion().run_id == better
    other_data = register(50.0, "bbbb")
    assert champion().run_id == other_data
    assert "moves from version 3" in champion().tags["champion_decision"] and "dataset_digest aaaa -> bbbb" in \
        champion().tags["champion_decision"]
    assert "medgan-test-cgan@champion moves from version 3" in capsys.readouterr().out

    # the logged model carries its figures at the kept step and the dataset they were measured on ...
    (model,) = client.search_logged_models([experiment_id], filter_string=f"source_run_id = '{other_data}'")
    assert {(m.key, m.value, m.step, m.dataset_name, m.dataset_digest) for m in model.metrics} == {
        ("fid", 50.0, 2, "cohort-bbbb", "bbbb"), ("ssim", 0.5, 2, "cohort-bbbb", "bbbb")}
    # ... without a second point in the run's own curves
    assert [(m.step, m.value) for m in client.get_metric_history(other_data, "fid")] == [(1, 51.0), (2, 50.0)]
