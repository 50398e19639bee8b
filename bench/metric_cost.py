"""4. Metric cost: seconds per 1,000 images for each stage-1 metric, and its share of a trial.

For 32 and 64 px: class-matched SSIM / PSNR / MSE pairing, FID-feature extraction (the TF-FID
InceptionV3 at 299 px: the dominant cost on CPU) and MS-SSIM diversity, on random images, as
seconds per 1,000 images. The baseline in the same run: a training epoch of 1,000 images at
the smoke preset's width (the full preset's width and 256 px need a GPU), and from the two the
share of a trial that evaluating `eval_images` images every `eval_every` epochs takes at the
smoke and full presets' settings.

Then the distances computed on the features, per evaluation: the Fréchet distance of 2048-d features
as `trainables.metrics.frechet_distance` computes it (an SVD in the samples' space), against
torchmetrics' FrechetInceptionDistance on the same features (eigenvalues of a 2048 x 2048 product:
the baseline), at the sizes of a pooled and a per-label FID; and precision / recall / density /
coverage.
"""
from __future__ import annotations

import dataclasses
import time

import torch

from orchestrator.config import load_config
from torchmetrics.image.fid import FrechetInceptionDistance

from trainables.metrics import (CPU_FEATURE_BATCH, extract_features, frechet_distance, load_fid_extractor,
                                ms_ssim_diversity, paired_similarity, prdc)

from bench.common import Section
from bench.gan_step import random_cohort


def seconds_per_1000(fn, n: int) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) / n * 1000


def measure(quick: bool) -> Section:
    images = 64 if quick else 256
    device = "cuda" if torch.cuda.is_available() else "cpu"
    extractor = load_fid_extractor("")
    rows, shares, layout = [], {}, {}
    for size in (32, 64):
        gen = torch.Generator().manual_seed(0)
        fake, real = (torch.rand(images, 1, size, size, generator=gen) for _ in range(2))
        labels = torch.arange(images) % 2
        costs = {
            "SSIM / PSNR / MSE pairing": seconds_per_1000(
                lambda: paired_similarity(fake, labels, real, labels, seed=0), images),
            f"FID features ({extractor.name})": seconds_per_1000(
                lambda: extract_features(fake, extractor, device), images),
            "MS-SSIM diversity": seconds_per_1000(lambda: ms_ssim_diversity(fake, seed=0), images),
        }
        if device == "cpu" and hasattr(extractor.backbone, "channels_last"):
            costs["FID features, 64 contiguous images at a time (baseline)"] = seconds_per_1000(
                lambda: contiguous_features(fake, extractor), images)
            layout[f"FID features at {size} px, 64 contiguous / {CPU_FEATURE_BATCH} channels-last at a time"] = (
                costs["FID features, 64 contiguous images at a time (baseline)"]
                / costs[f"FID features ({extractor.name})"])
        epoch_images = 250 if quick else 1000
        epoch_s = training_epoch_seconds(size, epoch_images) * 1000 / epoch_images  # per 1,000 images
        rows += [{"size": f"{size} px", "what": name, "s per 1,000 images": cost} for name, cost in costs.items()]
        rows.append({"size": f"{size} px", "what": "training epoch, smoke width (baseline)",
                     "s per 1,000 images": epoch_s})
        per_image = sum(cost for name, cost in costs.items() if "baseline" not in name) / 1000
        for preset in ("smoke", "full"):
            gan = load_config("pet", preset).gan
            eval_s = per_image * gan.eval_images
            shares[f"evaluation share of a trial, {preset} preset ({gan.eval_images} images every "
                   f"{gan.eval_every} epoch(s) of 1,000 images), {size} px"] = eval_s / (eval_s + gan.eval_every * epoch_s)
    distances, speedups = distance_costs(extractor.num_features)
    return Section(
        title="4. Metric cost (seconds per 1,000 images; evaluation's share of a trial)",
        method=__doc__.split("\n\n", 2)[1].strip() + f"\n\n{images} random images per metric, device {device}, "
               f"{torch.get_num_threads()} torch threads.",
        rows=rows, ratios=shares | layout | speedups, tables={"Distances on the features (s each)": distances},
        notes=["aim: evaluation under 10 % of a trial at the default (full preset) eval_every"])


def contiguous_features(images: torch.Tensor, extractor) -> torch.Tensor:
    """The features as extracted before: 64 images at a time in the contiguous layout."""
    extractor.backbone.channels_last = False
    try:
        return extract_features(images, extractor, "cpu", batch_size=64)
    finally:
        extractor.backbone.channels_last = True


def distance_costs(dim: int) -> tuple[list[dict], dict[str, float]]:
    """Seconds per Fréchet distance (ours and torchmetrics') and per PRDC, on random features."""
    rows, speedups = [], {}
    for n in (32, 256):  # a per-label FID at the laptop preset's eval_images; a pooled one at the full preset's
        gen = torch.Generator().manual_seed(n)
        fake, real = torch.randn(n, dim, generator=gen), torch.randn(n, dim, generator=gen) + 0.1

        def torchmetrics_fid() -> float:
            fid = FrechetInceptionDistance(feature=_Passthrough(dim))
            fid.update(real, real=True)
            fid.update(fake, real=False)
            return float(fid.compute())

        ours, baseline = seconds(lambda: frechet_distance(fake, real)), seconds(torchmetrics_fid)
        rows += [{"features": f"{n} vs {n}, {dim}-d", "what": "Fréchet distance, samples-space SVD", "s": ours},
                 {"features": f"{n} vs {n}, {dim}-d", "what": "Fréchet distance, torchmetrics (baseline)",
                  "s": baseline},
                 {"features": f"{n} vs {n}, {dim}-d", "what": "precision / recall / density / coverage",
                  "s": seconds(lambda: prdc(fake, real))}]
        speedups[f"Fréchet distance, torchmetrics / ours, {n} vs {n} features"] = baseline / ours
    return rows, speedups


def seconds(fn, repeats: int = 3) -> float:
    fn()  # warm up
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - started) / repeats


class _Passthrough(torch.nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.num_features = dim

    def forward(self, x):
        return x


def training_epoch_seconds(size: int, images: int) -> float:
    from trainables.gan.loop import fit

    gan = load_config("pet", "smoke").gan
    cfg = {**dataclasses.asdict(gan), "image_size": size, "epochs": 2, "eval_every": 100, "eval_images": 16}
    times = []
    fit(cfg, random_cohort(size, images), lambda metrics, folder: times.append(metrics["epoch_s"]))
    return times[-1]


