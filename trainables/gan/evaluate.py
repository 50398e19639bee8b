"""Evaluating a generator against the validation split, the same way at every interval.

One `GanEvaluator` per trial: it holds the validation images, their FID / KID features
(extracted once: the Inception pass is the expensive part), and fixed noise, so the figures
of different epochs differ only because the generator did.

Per evaluation, `num_images` class-balanced images are generated from the fixed noise and
scored with the shared metric definitions in `trainables.metrics`: SSIM / PSNR / MSE under
the class-matched pairing, FID and KID, and MS-SSIM among the generated images (diversity).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchvision.utils import save_image

from trainables.cohort import HELD_OUT, TRAIN, VAL, num_classes
from trainables.metrics import (
    ADDED_METRICS,
    extract_features,
    fid_kid_from_features,
    evaluation_metrics,
    load_fid_extractor,
    ms_ssim_diversity,
    paired_similarity,
)

GRID_PER_LABEL = 8  # sample grid: one row of 8 per label
GENERATE_BATCH = 64


class GanEvaluator:
    def __init__(self, val_images: torch.Tensor, val_labels: torch.Tensor, num_images: int, latent_dim: int,
                 seed: int, fid_weights: str = "", device: torch.device | str = "cpu", num_classes: int = 2):
        """`val_images` [N, 1, S, S] in [0, 1] with int64 `val_labels` [N]."""
        self.device = torch.device(device)
        self.val_images, self.val_labels = val_images, val_labels
        self.seed, self.latent_dim, self.num_classes = seed, latent_dim, num_classes
        self.extractor = load_fid_extractor(fid_weights)
        self.val_features = extract_features(val_images, self.extractor, self.device)
        # Class-balanced labels 0, 1, 0, 1, ... and noise that never changes during the trial.
        self.labels = torch.arange(num_images) % num_classes
        self.noise = self.fixed_noise(num_images)

    def fixed_noise(self, n: int) -> torch.Tensor:
        """The first n rows of the trial's fixed noise (a generator of its own: training RNG untouched)."""
        return torch.randn(n, self.latent_dim, generator=torch.Generator().manual_seed(self.seed + 7919))

    def generate(self, generator: nn.Module, noise: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return generate_images(generator, noise, labels, self.device)

    def evaluate(self, generator: nn.Module) -> dict:
        fake = self.generate(generator, self.noise, self.labels)
        fake_features = extract_features(fake, self.extractor, self.device)
        return {
            **paired_similarity(fake, self.labels, self.val_images, self.val_labels, seed=self.seed),
            **fid_kid_from_features(fake_features, self.val_features, self.extractor, seed=self.seed),
            "ms_ssim": ms_ssim_diversity(fake, seed=self.seed),
            **{key: float(m.compute(fake, self.labels, self.val_images, self.val_labels, self.seed))
               for key, m in ADDED_METRICS.items()},
        }

    def score_real(self, images: torch.Tensor) -> dict:
        """FID / KID of real images [N, 1, S, S] against the validation split, and their MS-SSIM
        diversity, exactly as `evaluate` scores generated ones: the real-vs-real values a generator
        is read against when the images come from other patients."""
        features = extract_features(images, self.extractor, self.device)
        return {**fid_kid_from_features(features, self.val_features, self.extractor, seed=self.seed),
                "ms_ssim": ms_ssim_diversity(images, seed=self.seed)}

    def not_evaluated(self) -> dict:
        """The keys of `evaluate`, every figure NaN: for a run that stopped before it could be
        evaluated. Every report then carries the same metrics (Tune's schedulers require it),
        and NaN ranks below any real figure."""
        keys = [m.key for m in evaluation_metrics(self.extractor.name)]
        return {**dict.fromkeys(keys, math.nan), "fid_weights_sha256": self.extractor.weights_sha256}

    def save_sample_grid(self, generator: nn.Module, path: Path) -> None:
        """One row per label from the same noise every time, so grids compare across epochs."""
        noise = self.fixed_noise(GRID_PER_LABEL).repeat(self.num_classes, 1)
        labels = torch.arange(self.num_classes).repeat_interleave(GRID_PER_LABEL)
        save_image(self.generate(generator, noise, labels), path, nrow=GRID_PER_LABEL, padding=2, pad_value=1.0)


def validation_evaluator(cfg: Mapping, data: Mapping[str, np.ndarray], device: torch.device | str) -> GanEvaluator:
    """The evaluator of a trial with settings `cfg` (eval_images, latent_dim, seed, fid_weights)."""
    val = data["split"] == VAL
    images = torch.from_numpy(np.asarray(data["images"][val], np.float32)).unsqueeze(1)
    labels = torch.from_numpy(np.asarray(data["labels"][val], np.int64))
    return GanEvaluator(images, labels, num_images=cfg["eval_images"], latent_dim=cfg["latent_dim"],
                        seed=cfg["seed"], fid_weights=cfg["fid_weights"], device=device,
                        num_classes=num_classes(data["labels"]))


def fid_floor(cfg: Mapping, data: Mapping[str, np.ndarray], device: torch.device | str = "cpu") -> dict:
    """The real-vs-real floor of a trial's FID-type metrics: what a generator that drew real slices
    of the training distribution would score.

    `eval_images` real slices (class-balanced, seeded) of training-pool patients (train and held
    out: patient-disjoint from validation) are scored against the validation split with the same
    extractor, features and KID subsets as a trial's evaluation. Keys: each FID / KID key with
    `_floor`, plus `floor_images` and `floor_patients` (fewer images when the pool is smaller).
    """
    evaluator = validation_evaluator(cfg, data, device)
    pool = np.flatnonzero(np.isin(np.asarray(data["split"]), (TRAIN, HELD_OUT)))
    rng = np.random.default_rng(cfg["seed"])
    labels = np.asarray(data["labels"])[pool]
    per_label = [rng.permutation(pool[labels == label])[: cfg["eval_images"] // 2] for label in (0, 1)]
    chosen = np.sort(np.concatenate(per_label))
    images = torch.from_numpy(np.asarray(data["images"][chosen], np.float32)).unsqueeze(1)
    scores = evaluator.score_real(images)
    floor = {f"{key}_floor": value for key, value in scores.items() if key != "fid_weights_sha256"}
    return {**floor, "floor_images": len(chosen), "floor_patients": len(np.unique(np.asarray(data["patients"])[chosen])),
            "fid_weights_sha256": scores["fid_weights_sha256"]}


@torch.no_grad()
def generate_images(generator: nn.Module, noise: torch.Tensor, labels: torch.Tensor,
                    device: torch.device | str = "cpu") -> torch.Tensor:
    """Images [N, 1, S, S] in [0, 1] on the CPU, from `generator` in eval mode (BN running statistics)."""
    was_training = generator.training
    generator.eval()
    images = [generator(z.to(device), y.to(device)).float().cpu()
              for z, y in zip(noise.split(GENERATE_BATCH), labels.split(GENERATE_BATCH))]
    generator.train(was_training)
    return ((torch.cat(images) + 1) / 2).clamp(0, 1)
