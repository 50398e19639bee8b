"""Stage 2's model side: load a stage-1 checkpoint's generator and draw a labelled set from it."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from trainables.gan.evaluate import generate_images
from trainables.gan.loop import CHECKPOINT_FILE
from trainables.gan.models import build_gan


def load_generator(checkpoint_dir: Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """The checkpoint's generator (its EMA copy when it has one: what the trial was scored on) and config."""
    cfg = json.loads((checkpoint_dir / "config.json").read_text())
    state = torch.load(checkpoint_dir / CHECKPOINT_FILE, map_location=device, weights_only=True)
    generator = build_gan(cfg).generator.to(device)
    generator.load_state_dict(state["ema"] if state.get("ema") is not None else state["generator"])
    return generator, cfg


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
