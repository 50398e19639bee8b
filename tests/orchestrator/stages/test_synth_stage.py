"""Stage 2's sampling task: flagged near-copies are replaced by fresh draws, so a set keeps its size."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import ray

from orchestrator.config import load_config
from orchestrator.stages.synth import _sample_and_audit
from trainables.cohort import TRAIN
from trainables.gan.loop import fit


@pytest.fixture(scope="module")
def checkpoint(smoke_arrays, tmp_path_factory):
    cfg = load_config("pet", "smoke")
    gan = {**cfg.gan_settings(), "epochs": 1, "eval_images": 8,
           "g_channels": 8, "d_channels": 8, "n_critic": 1}
    kept = tmp_path_factory.mktemp("ckpt") / "checkpoint"
    fit(gan, smoke_arrays, lambda metrics, folder: shutil.copytree(folder, kept))
    ray.init(num_cpus=1, include_dashboard=False)
    yield str(kept)
    ray.shutdown()


def test_flagged_images_are_replaced_until_each_label_has_its_count(checkpoint, smoke_arrays):
    train = np.asarray(smoke_arrays["images"][smoke_arrays["split"] == TRAIN], np.float32)
    per_label = {0: 12, 1: 12}
    _, _, first_r, _ = ray.get(_sample_and_audit.remote(checkpoint, per_label, 0, train, 0, None))
    threshold = float(np.median(first_r))  # about half of each draw is "flagged"
    images, labels, r, nearest = ray.get(_sample_and_audit.remote(checkpoint, per_label, 0, train, 0, threshold))
    passed = r <= threshold
    assert len(images) == len(labels) == len(r) == len(nearest) > 24  # every draw is returned and audited
    assert [int((labels[passed] == label).sum()) for label in (0, 1)] == [12, 12]
    np.testing.assert_array_equal(r[:24], first_r)  # the first round is the draw the seed always gave
