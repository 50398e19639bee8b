"""Stage 2's model side: draw a labelled set from a stage-1 generator (trainables/gan/checkpoint.py loads it),
and the generator as a model of its own: noise and label in, image out."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from trainables.gan.checkpoint import load_generator
from trainables.gan.evaluate import generate_images


class ImageSampler(nn.Module):
    """A generator as users load it (MLflow's model registry): `sampler(noise [N, latent_dim] float32,
    label [N] int64)` -> images [N, 1, S, S] in [0, 1], in eval mode, as the sweep's sets were drawn."""

    def __init__(self, generator: nn.Module, latent_dim: int):
        super().__init__()
        self.generator, self.latent_dim = generator.eval(), latent_dim

    def forward(self, noise: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return ((self.generator(noise, label).float() + 1) / 2).clamp(0, 1)

    def train(self, mode: bool = True) -> ImageSampler:
        return super().train(False)  # batch norm keeps its running statistics whatever the caller does


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
