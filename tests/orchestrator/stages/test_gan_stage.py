"""Stage 1 pieces that need a Ray cluster but no trial: how trials are given resources."""
from __future__ import annotations

import pytest
import ray
import torch

from orchestrator.config import load_config
from orchestrator.stages import classify as classify_stage
from orchestrator.stages import gan as gan_stage
from orchestrator.storage import SweepRecord
from orchestrator.sweep import resolve_resources
from trainables.device import trial_device


@pytest.fixture(scope="module")
def ray_with_a_gpu():
    """A local Ray that advertises one GPU (a logical resource: nothing runs on it here)."""
    ray.init(num_cpus=1, num_gpus=1, include_dashboard=False)
    yield
    ray.shutdown()


def test_resources_are_resolved_once_from_the_cluster_and_the_stages_request_just_that(ray_with_a_gpu, tmp_path):
    cfg = load_config("pet", "smoke")
    assert (cfg.search.gpus_per_worker, cfg.synth.gpus_per_task, cfg.classify.gpus_per_trial) == (None, None, None)
    resolved = resolve_resources(cfg)
    assert (resolved.search.gpus_per_worker, resolved.synth.gpus_per_task, resolved.classify.gpus_per_trial) == \
        (1.0, 1.0, 0.25)
    assert gan_stage.train_settings(resolved, "/tmp/sweep")["scaling"] == {
        "num_workers": 1, "use_gpu": True, "resources_per_worker": {"CPU": 1.0, "GPU": 1.0}}
    assert classify_stage.trial_resources(resolved.classify) == {"cpu": resolved.classify.cpus_per_trial, "gpu": 0.25}
    chosen = resolve_resources(load_config("pet", "smoke", overrides=["search.gpus_per_worker=0.25",
                                                                        "classify.gpus_per_trial=0"]))
    assert chosen.search.gpus_per_worker == 0.25 and chosen.classify.gpus_per_trial == 0.0  # a set value wins
    assert resolve_resources(resolved) == resolved  # a resumed sweep's recorded values stay as they are
    # what sweep.json records is what a resumed sweep's stages request
    SweepRecord("pet-1", resolved, tmp_path).write(str(tmp_path))
    recorded = SweepRecord.read(str(tmp_path)).config
    assert gan_stage.train_settings(recorded, "/tmp/sweep") == gan_stage.train_settings(resolved, "/tmp/sweep")
    assert classify_stage.trial_resources(recorded.classify) == classify_stage.trial_resources(resolved.classify)
    assert recorded.synth.gpus_per_task == 1.0


def test_a_trial_holding_a_gpu_it_cannot_see_fails_instead_of_training_on_the_cpu():
    assert trial_device(0) == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="holds 1 GPU.*refusing to train on the CPU"):
            trial_device(1)
        with pytest.raises(RuntimeError, match="refusing"):
            trial_device(0.25, torch.device("cpu"))  # what Ray Train picks when torch sees no GPU


def test_gpus_per_worker_reads_from_the_command_line():
    assert load_config("pet", "smoke", overrides=["search.gpus_per_worker=0.5"]).search.gpus_per_worker == 0.5
    assert load_config("pet", "smoke", overrides=["search.gpus_per_worker=null"]).search.gpus_per_worker is None


def test_auto_preset_is_full_on_a_cluster_with_gpus_and_laptop_without(ray_with_a_gpu):
    from orchestrator.sweep import resolve_preset

    assert resolve_preset("auto", "auto") == ("full", "the Ray cluster has 1 GPU(s)")  # joins the running one
    assert resolve_preset("smoke", "auto") == ("smoke", "asked for with --preset")
    assert resolve_preset("auto", None)[0] == ("full" if torch.cuda.is_available() else "laptop")
