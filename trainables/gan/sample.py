"""Stage 2's model side: draw a labelled set from a stage-1 generator (trainables/gan/checkpoint.py loads it),
and load a checkpoint's generator as a model of its own (`ImageSampler`: noise and label in, image out)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from trainables.gan.checkpoint import load_generator
from trainables.gan.evaluate import generate_images
from trainables.gan.models import ImageSampler


def load_sampler(folder: Path) -> tuple[ImageSampler, dict]:
    """The checkpoint's (EMA) generator as an `ImageSampler` on the CPU, and its config."""
    generator, cfg = load_generator(folder, "cpu")
    return ImageSampler(generator, cfg["latent_dim"]), cfg


def sample_set(generator: nn.Module, latent_dim: int, per_label: dict[int, int], seed: int,
               device: torch.device | str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """`per_label[label]` images of each label: float32 [N, S, S] in [0, 1] and int64 labels [N].

    Labels are interleaved (0, 1, 0, 1, ...) while both remain, so any prefix of the set is as
    balanced as it can be. Same generator and seed, same images.
    """
    remaining, order = dict(per_label), []
    while any(remaining.values()):
        for label in sorted(remaining):
            if remaining[label]:
                order.append(label)
                remaining[label] -= 1
    labels = torch.tensor(order, dtype=torch.long)
    noise = torch.randn(len(labels), latent_dim, generator=torch.Generator().manual_seed(seed))
    images = generate_images(generator, noise, labels, device)
    return images.squeeze(1).numpy(), labels.numpy()
