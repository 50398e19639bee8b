"""Stage 1 pieces that need a Ray cluster but no trial: how trials are given resources."""
from __future__ import annotations

import dataclasses

import pytest
import ray
import torch

from orchestrator.config import SearchConfig, load_config
from orchestrator.stages.gan import gpus_per_worker


@pytest.fixture(scope="module")
def ray_with_a_gpu():
    """A local Ray that advertises one GPU (a logical resource: nothing runs on it here)."""
    ray.init(num_cpus=1, num_gpus=1, include_dashboard=False)
    yield
    ray.shutdown()


def test_unset_gpus_follow_the_cluster_and_a_set_value_wins(ray_with_a_gpu):
    assert SearchConfig().gpus_per_worker is None
    assert gpus_per_worker(SearchConfig()) == 1.0
    assert gpus_per_worker(dataclasses.replace(SearchConfig(), gpus_per_worker=0.25)) == 0.25  # 4 trials per GPU
    assert gpus_per_worker(dataclasses.replace(SearchConfig(), gpus_per_worker=0.0)) == 0.0  # CPU on purpose


def test_gpus_per_worker_reads_from_the_command_line():
    assert load_config("pet", "smoke", overrides=["search.gpus_per_worker=0.5"]).search.gpus_per_worker == 0.5
    assert load_config("pet", "smoke", overrides=["search.gpus_per_worker=null"]).search.gpus_per_worker is None


def test_auto_preset_is_full_on_a_cluster_with_gpus_and_laptop_without(ray_with_a_gpu):
    from orchestrator.sweep import resolve_preset

    assert resolve_preset("auto", "auto") == ("full", "the Ray cluster has 1 GPU(s)")  # joins the running one
    assert resolve_preset("smoke", "auto") == ("smoke", "asked for with --preset")
    assert resolve_preset("auto", None)[0] == ("full" if torch.cuda.is_available() else "laptop")
