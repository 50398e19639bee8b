"""The sweep on a multi-node Ray cluster (on this machine), and what it survives: a worker node
dying under a trial, and the MLflow server going away mid-sweep."""
from __future__ import annotations

import json

import pytest
from ray.cluster_utils import Cluster

from orchestrator.sweep import main as sweep_main
from sweeps import start_sweep_process, steps, sweep_args, sweep_runs, wait_for


@pytest.fixture
def cluster():
    """Three Ray nodes on loopback, laid out like cluster.yaml's: a head with no CPU for trials
    (the driver and Tune run there), and two worker nodes that fit one Train worker (1 CPU) each.
    The test process does not connect."""
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": True, "dashboard_host": "127.0.0.1"})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    yield cluster, workers
    cluster.shutdown()


@pytest.mark.slow
def test_trials_run_on_both_worker_nodes_and_every_result_is_complete(cluster, mlflow_server, tmp_path):
    cluster, workers = cluster
    epochs = 2
    args = sweep_args(tmp_path, mlflow_server, trials=2, epochs=epochs)
    assert sweep_main([*args, "--address", cluster.address, "--set", "search.max_concurrent=2"]) == 0

    client, (parent,), children = sweep_runs(mlflow_server, tmp_path)
    assert parent.info.status == "FINISHED" and len(children) == 2
    # one Train worker per node fits: the two concurrent trials ran one on each worker node
    assert {c.data.tags["node_id"] for c in children} == {node.node_id for node in workers}
    for child in children:
        assert child.info.status == "FINISHED"
        assert steps(client, child.info.run_id, "epoch") == list(range(1, epochs + 1))
        assert "best_checkpoint/state.pt" in {a.path for a in client.list_artifacts(child.info.run_id,
                                                                                     "best_checkpoint")}


@pytest.mark.slow
def test_a_trial_whose_node_dies_retries_from_its_checkpoint_on_the_other_node(cluster, mlflow_server, tmp_path):
    cluster, workers = cluster
    epochs = 4
    args = sweep_args(tmp_path, mlflow_server, trials=1, epochs=epochs)
    log = tmp_path / "sweep.log"
    driver = start_sweep_process([*args, "--address", cluster.address], log)

    def midway_trial():
        _, _, children = sweep_runs(mlflow_server, tmp_path)
        return [c for c in children if 1 <= c.data.metrics.get("epoch", 0) < epochs and "node_id" in c.data.tags]

    (child,) = wait_for(midway_trial, driver, log)
    (doomed,) = [node for node in workers if node.node_id == child.data.tags["node_id"]]
    cluster.remove_node(doomed, allow_graceful=False)  # its raylet and every worker on it, killed

    assert driver.wait(timeout=600) == 0, log.read_text()[-3000:]
    client, (parent,), (child,) = sweep_runs(mlflow_server, tmp_path)
    assert parent.info.status == "FINISHED" and child.info.status == "FINISHED"
    assert steps(client, child.info.run_id, "epoch") == list(range(1, epochs + 1))  # each epoch once
    assert max(m.value for m in client.get_metric_history(child.info.run_id, "resumed_from")) >= 1
    (survivor,) = [node for node in workers if node is not doomed]
    assert child.data.tags["node_id"] == survivor.node_id


@pytest.mark.slow
def test_training_goes_on_while_mlflow_is_away_and_the_record_is_completed_when_it_is_back(own_mlflow_server,
                                                                                        tmp_path):
    epochs = 5
    args = sweep_args(tmp_path, own_mlflow_server.url, trials=1, epochs=epochs)
    log = tmp_path / "sweep.log"
    driver = start_sweep_process(args, log)

    def first_epoch_recorded():
        _, _, children = sweep_runs(own_mlflow_server.url, tmp_path)
        return [c for c in children if c.data.metrics.get("epoch", 0) >= 1]

    (child,) = wait_for(first_epoch_recorded, driver, log)
    own_mlflow_server.stop()

    def epochs_spooled():  # training goes on: later epochs' metrics wait in the driver's spool
        spooled = [json.loads(line) for path in (tmp_path / "runs").glob("*/mlflow_spool/ops.jsonl")
                   for line in path.read_text().splitlines()]
        return [m for op in spooled if op["op"] == "log_batch" for m in op["kwargs"]["metrics"]
                if m[0] == "epoch" and m[1] >= 3]

    wait_for(epochs_spooled, driver, log)
    own_mlflow_server.start()

    assert driver.wait(timeout=600) == 0, log.read_text()[-3000:]
    output = log.read_text()
    assert "is unreachable" in output and "answers again" in output
    assert not list((tmp_path / "runs").glob("*/mlflow_spool"))  # nothing left unwritten
    client, (parent,), (child,) = sweep_runs(own_mlflow_server.url, tmp_path)
    assert parent.info.status == "FINISHED" and child.info.status == "FINISHED"
    # what was recorded before the outage is still there, and nothing was written twice
    assert steps(client, child.info.run_id, "epoch") == list(range(1, epochs + 1))
    grids = [a.path for a in client.list_artifacts(child.info.run_id, "images") if a.path.endswith(".png")]
    # one per epoch (step), and the untrained generator's at step 0
    assert sorted(int(path.split("+")[2]) for path in grids) == list(range(0, epochs + 1))
    # the dataset inputs, made while the server may have been away, are there too
    assert child.inputs.dataset_inputs and parent.inputs.dataset_inputs
    assert "best_checkpoint/state.pt" in {a.path for a in client.list_artifacts(child.info.run_id, "best_checkpoint")}
