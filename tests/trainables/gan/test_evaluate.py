"""The FID floor: real slices scored the way a trial scores its generator; the validation features a sweep
extracts once for all its trials."""
from __future__ import annotations

import numpy as np
import torch

from orchestrator.config import load_config
from trainables.gan.evaluate import VAL_FEATURES, fid_floor, validation_evaluator, with_validation_features
from trainables.gan.models import build_gan


def test_the_floor_is_real_training_slices_against_validation_and_below_an_untrained_generator(smoke_arrays):
    cfg = load_config("pet", "smoke")
    gan = {**cfg.gan_settings(), "eval_images": 16}
    floor = fid_floor(gan, smoke_arrays)
    assert floor["floor_images"] == 16 and floor["floor_patients"] >= 2
    assert {"fid_floor", "kid_mean_floor", "kid_std_floor"} <= floor.keys() and len(floor["fid_weights_sha256"]) == 64
    torch.manual_seed(0)
    untrained = validation_evaluator(gan, smoke_arrays, "cpu").evaluate(build_gan({**gan, "num_classes": 2}).generator)
    assert 0 < floor["fid_floor"] < untrained["fid"]
    assert 0 < floor["ms_ssim_floor"] < 1  # real slices of different patients: diverse, never copies
    # a second real sample is realistic and covers the data: far above an untrained generator
    assert floor["recall_floor"] > untrained["recall"] and floor["precision_floor"] > untrained["precision"]
    assert 0 < floor["fid_benign_floor"] < untrained["fid_benign"] and 0 < floor["fid_malignant_floor"]


def test_features_extracted_once_score_a_generator_as_a_trial_s_own_would(smoke_arrays):
    gan = {**load_config("pet", "smoke").gan_settings(), "eval_images": 16}
    shared = with_validation_features(gan, smoke_arrays)
    torch.manual_seed(0)
    generator = build_gan({**gan, "num_classes": 2}).generator
    own, reused = (validation_evaluator(gan, data, "cpu").evaluate(generator) for data in (smoke_arrays, shared))
    assert abs(own["fid"] - reused["fid"]) < 1e-3 * own["fid"] and abs(own["kid_mean"] - reused["kid_mean"]) < 1e-6

    # they are what the evaluator reads, and only when the same weights made them
    zeros = {**shared[VAL_FEATURES], "features": np.zeros_like(shared[VAL_FEATURES]["features"])}
    assert not validation_evaluator(gan, {**shared, VAL_FEATURES: zeros}, "cpu").val_features.any()
    other = {**zeros, "weights_sha256": "0" * 64}
    assert validation_evaluator(gan, {**shared, VAL_FEATURES: other}, "cpu").val_features.any()
