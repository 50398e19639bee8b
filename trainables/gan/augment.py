"""Differentiable augmentation (DiffAugment, Zhao et al. 2020) for GANs trained on little data.

The critic sees every image, real or generated, through the same random transformations, and
the generator's gradients flow back through them. With few training images the critic can
otherwise memorise the real set, and its gradients stop telling the generator anything. The
transformations keep a slice's label: small shifts, a cut-out square, brightness and contrast.

Images are in [-1, 1] with -1 as the background (air, no uptake): shifted-in borders and
cut-out squares are filled with -1, not grey. Random draws come from torch's global generator
(on the images' device), which the GAN checkpoint saves, so a resumed run continues exactly.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

BACKGROUND = -1.0


def brightness(x: torch.Tensor) -> torch.Tensor:
    """Add one offset in [-0.5, 0.5) per image."""
    return x + (torch.rand(len(x), 1, 1, 1, device=x.device, dtype=x.dtype) - 0.5)


def contrast(x: torch.Tensor) -> torch.Tensor:
    """Scale each image about its mean by a factor in [0.5, 1.5)."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (torch.rand(len(x), 1, 1, 1, device=x.device, dtype=x.dtype) + 0.5) + mean


def translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to `ratio` of its side in each direction, whole pixels, background in."""
    n, _, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sy, sy + 1, (n, 1, 1), device=x.device)
    dx = torch.randint(-sx, sx + 1, (n, 1, 1), device=x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1) + dy  # source row of each output row
    cols = torch.arange(w, device=x.device).view(1, 1, w) + dx
    padded = F.pad(x, (1, 1, 1, 1), value=BACKGROUND)  # index 0 / -1: background
    rows = (rows + 1).clamp(0, h + 1).expand(n, h, w)
    cols = (cols + 1).clamp(0, w + 1).expand(n, h, w)
    batch = torch.arange(n, device=x.device).view(n, 1, 1).expand(n, h, w)
    return padded[batch, 0, rows, cols].unsqueeze(1)


def cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Fill one square of `ratio` x the side, at a random place per image, with background."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top = torch.randint(0, h - ch + 1, (n, 1, 1), device=x.device)
    left = torch.randint(0, w - cw + 1, (n, 1, 1), device=x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (rows >= top) & (rows < top + ch) & (cols >= left) & (cols < left + cw)
    return torch.where(inside.unsqueeze(1), torch.full_like(x, BACKGROUND), x)


POLICIES: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], ...]] = {
    "color": (brightness, contrast),
    "translation": (translation,),
    "cutout": (cutout,),
}


def diff_augment(policy: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The augmentation for a comma-separated `policy` (e.g. "color,translation,cutout"); '' is none."""
    names = [name.strip() for name in policy.split(",") if name.strip()]
    unknown = [name for name in names if name not in POLICIES]
    if unknown:
        raise ValueError(f"unknown DiffAugment policy {unknown}; choose from {sorted(POLICIES)}")
    steps = [step for name in names for step in POLICIES[name]]

    def augment(x: torch.Tensor) -> torch.Tensor:
        for step in steps:
            x = step(x)
        return x

    return augment
