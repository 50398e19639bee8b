"""Evaluating a generator against the validation split, the same way at every interval.

One `GanEvaluator` per trial: it holds the validation images, their FID / KID features
(extracted once: the Inception pass is the expensive part), and fixed noise, so the figures
of different epochs differ only because the generator did.

Per evaluation, `num_images` class-balanced images are generated from the fixed noise and
scored with the shared metric definitions in `trainables.metrics`: SSIM / PSNR / MSE under
the class-matched pairing, FID and KID (pooled, and FID per label), precision / recall / density /
coverage in the same feature space, and MS-SSIM among the generated images (diversity).
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import nn
from torchvision.utils import make_grid

from trainables.cohort import HELD_OUT, LABEL_NAMES, TRAIN, VAL, num_classes
from trainables.metrics import (
    ADDED_METRICS,
    evaluation_metrics,
    extract_features,
    feature_metrics,
    load_fid_extractor,
    ms_ssim_diversity,
    paired_similarity,
)

# In a trial's data dict: the validation split's features, extracted once per sweep (`with_validation_features`)
VAL_FEATURES = "val_fid_features"
GRID_SIDE = 8  # the sample grid: 8 x 8 tiles, the rows shared equally among the labels
GRID_TILE_PX = 64  # smaller images are upscaled (nearest neighbour: no smoothing added) to at least this
GENERATE_BATCH = 64


class GanEvaluator:
    def __init__(self, val_images: torch.Tensor, val_labels: torch.Tensor, num_images: int, latent_dim: int,
                 seed: int, fid_weights: str = "", device: torch.device | str = "cpu", num_classes: int = 2,
                 val_features: Mapping | None = None):
        """`val_images` [N, 1, S, S] in [0, 1] with int64 `val_labels` [N]; `val_features` their features as
        `with_validation_features` stores them, used when the same extractor made them (else extracted here)."""
        self.device = torch.device(device)
        self.val_images, self.val_labels = val_images, val_labels
        self.seed, self.latent_dim, self.num_classes = seed, latent_dim, num_classes
        self.extractor = load_fid_extractor(fid_weights)
        if val_features is not None and val_features["weights_sha256"] == self.extractor.weights_sha256:
            self.val_features = torch.as_tensor(val_features["features"]).to(self.device)
        else:
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
            **feature_metrics(fake_features, self.labels, self.val_features, self.val_labels, self.extractor,
                              seed=self.seed),
            "ms_ssim": ms_ssim_diversity(fake, seed=self.seed),
            **{key: float(m.compute(fake, self.labels, self.val_images, self.val_labels, self.seed))
               for key, m in ADDED_METRICS.items()},
        }

    def score_real(self, images: torch.Tensor, labels: torch.Tensor) -> dict:
        """The feature-space figures (FID / KID, FID per label, PRDC) of real images [N, 1, S, S] with
        labels [N] against the validation split, and their MS-SSIM diversity, exactly as `evaluate` scores
        generated ones: the real-vs-real values a generator is read against when the images come from
        other patients."""
        features = extract_features(images, self.extractor, self.device)
        return {**feature_metrics(features, labels, self.val_features, self.val_labels, self.extractor,
                                  seed=self.seed),
                "ms_ssim": ms_ssim_diversity(images, seed=self.seed)}

    def not_evaluated(self) -> dict:
        """The keys of `evaluate`, every figure NaN: for a run that stopped before it could be
        evaluated. Every report then carries the same metrics (Tune's schedulers require it),
        and NaN ranks below any real figure."""
        keys = [m.key for m in evaluation_metrics(self.extractor.name)]
        return {**dict.fromkeys(keys, math.nan), "fid_weights_sha256": self.extractor.weights_sha256}

    def sample_grid(self, generator: nn.Module) -> Image.Image:
        """A square grid, its rows shared among the labels and each label's block titled, from the same
        noise every time (and the same noise for every label), so grids compare across epochs and labels."""
        rows = GRID_SIDE // self.num_classes
        noise = self.fixed_noise(rows * GRID_SIDE).repeat(self.num_classes, 1)
        labels = torch.arange(self.num_classes).repeat_interleave(rows * GRID_SIDE)
        return sample_grid_image(self.generate(generator, noise, labels), rows)


def validation_evaluator(cfg: Mapping, data: Mapping[str, np.ndarray], device: torch.device | str) -> GanEvaluator:
    """The evaluator of a trial with settings `cfg` (eval_images, latent_dim, seed, fid_weights)."""
    val = data["split"] == VAL
    images = torch.from_numpy(np.asarray(data["images"][val], np.float32)).unsqueeze(1)
    labels = torch.from_numpy(np.asarray(data["labels"][val], np.int64))
    return GanEvaluator(images, labels, num_images=cfg["eval_images"], latent_dim=cfg["latent_dim"],
                        seed=cfg["seed"], fid_weights=cfg["fid_weights"], device=device,
                        num_classes=num_classes(data["labels"]), val_features=data.get(VAL_FEATURES))


def with_validation_features(cfg: Mapping, data: Mapping[str, np.ndarray]) -> dict:
    """`data` with the validation split's features under the extractor `cfg` names (`VAL_FEATURES`): the
    Inception pass over the validation split done once for a sweep instead of once per trial (about 10 s
    of a laptop trial at one thread). Raises as `load_fid_extractor` does when the weights are missing."""
    evaluator = validation_evaluator(cfg, data, "cpu")
    features = {"features": evaluator.val_features.numpy(), "weights_sha256": evaluator.extractor.weights_sha256}
    return {**data, VAL_FEATURES: features}


def fid_floor(cfg: Mapping, data: Mapping[str, np.ndarray], device: torch.device | str = "cpu") -> dict:
    """The real-vs-real floor of a trial's FID-type metrics: what a generator that drew real slices
    of the training distribution would score.

    `eval_images` real slices (class-balanced, seeded) of training-pool patients (train and held
    out: patient-disjoint from validation) are scored against the validation split with the same
    extractor, features and KID subsets as a trial's evaluation. Keys: each feature-space key with
    `_floor`, plus `floor_images` and `floor_patients` (fewer images when the pool is smaller).
    """
    evaluator = validation_evaluator(cfg, data, device)
    pool = np.flatnonzero(np.isin(np.asarray(data["split"]), (TRAIN, HELD_OUT)))
    rng = np.random.default_rng(cfg["seed"])
    labels = np.asarray(data["labels"])[pool]
    per_label = [rng.permutation(pool[labels == label])[: cfg["eval_images"] // 2] for label in (0, 1)]
    chosen = np.sort(np.concatenate(per_label))
    images = torch.from_numpy(np.asarray(data["images"][chosen], np.float32)).unsqueeze(1)
    scores = evaluator.score_real(images, torch.from_numpy(np.asarray(data["labels"][chosen], np.int64)))
    floor = {f"{key}_floor": value for key, value in scores.items() if key != "fid_weights_sha256"}
    return {**floor, "floor_images": len(chosen), "floor_patients": len(np.unique(np.asarray(data["patients"])[chosen])),
            "fid_weights_sha256": scores["fid_weights_sha256"]}


def sample_grid_image(images: torch.Tensor, rows_per_label: int) -> Image.Image:
    """Images [N, 1, S, S] in [0, 1], ordered by label with `rows_per_label` rows of GRID_SIDE each, as
    one picture: per label a title band ("benign", "malignant") above its rows, tiles of at least
    GRID_TILE_PX px on a white background."""
    scale = max(1, -(-GRID_TILE_PX // images.shape[-1]))
    tiles = images.repeat_interleave(scale, -1).repeat_interleave(scale, -2)
    per_label = rows_per_label * GRID_SIDE
    font = ImageFont.load_default(size=max(12, tiles.shape[-1] // 4))
    blocks = []
    for start in range(0, len(tiles), per_label):
        grid = make_grid(tiles[start:start + per_label], nrow=GRID_SIDE, padding=2, pad_value=1.0)
        block = Image.fromarray((grid[0] * 255).round().byte().numpy(), "L")
        band = Image.new("L", (block.width, font.size + 8), 255)
        ImageDraw.Draw(band).text((4, 3), LABEL_NAMES[start // per_label], fill=0, font=font)
        blocks += [band, block]
    picture = Image.new("L", (blocks[0].width, sum(b.height for b in blocks)), 255)
    top = 0
    for block in blocks:
        picture.paste(block, (0, top))
        top += block.height
    return picture


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
