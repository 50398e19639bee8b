"""DiffAugment: label-keeping transformations the generator's gradients flow through."""
from __future__ import annotations

import pytest
import torch

from orchestrator.config import ConfigError, load_config
from trainables.gan.augment import cutout, diff_augment, translation


def test_translation_shifts_whole_pixels_and_brings_in_background():
    x = torch.arange(16.0).view(1, 1, 4, 4) / 16
    torch.manual_seed(0)
    shifted = translation(x.repeat(64, 1, 1, 1), ratio=0.25)  # up to one pixel each way
    for image in shifted[:, 0]:
        inside = image[image != -1.0]
        assert set(inside.tolist()) <= set(x.flatten().tolist())  # values moved, never blended
        assert len(inside) in (9, 12, 16)  # a 3x3, 3x4 or the whole 4x4 window of the original
    assert (shifted == -1.0).any() and not (shifted == -1.0).all(dim=(1, 2, 3)).any()


def test_cutout_fills_one_square_of_half_the_side_with_background():
    torch.manual_seed(1)
    out = cutout(torch.zeros(8, 1, 32, 32))
    assert ((out == -1.0).sum(dim=(1, 2, 3)) == 16 * 16).all()


def test_gradients_flow_through_every_policy_and_an_empty_policy_is_the_identity():
    x = torch.rand(4, 1, 16, 16, requires_grad=True)
    diff_augment("color,translation,cutout")(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert diff_augment("")(x) is x


def test_an_unknown_policy_fails_at_config_time_with_the_known_names():
    with pytest.raises(ConfigError, match=r"gan.diffaugment: unknown DiffAugment policy \['flip'\].*color"):
        load_config("pet", "smoke", overrides=["gan.diffaugment=translation,flip"])
