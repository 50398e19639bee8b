"""The FID floor: real slices scored the way a trial scores its generator."""
from __future__ import annotations


import torch

from orchestrator.config import load_config
from trainables.gan.evaluate import fid_floor, validation_evaluator
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
