"""4. Metric cost: seconds per 1,000 images for each stage-1 metric, and its share of a trial.

For 32 and 64 px: class-matched SSIM / PSNR / MSE pairing, FID-feature extraction (the TF-FID
InceptionV3 at 299 px: the dominant cost on CPU) and MS-SSIM diversity, on random images, as
seconds per 1,000 images. The baseline in the same run: a training epoch of 1,000 images at
the smoke preset's width (the full preset's width and 256 px need a GPU), and from the two the
share of a trial that evaluating `eval_images` images every `eval_every` epochs takes at the
smoke and full presets' settings.
"""
from __future__ import annotations

import dataclasses
import time

import torch

from orchestrator.config import load_config
from trainables.metrics import extract_features, load_fid_extractor, ms_ssim_diversity, paired_similarity

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
    rows, shares = [], {}
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
        epoch_images = 250 if quick else 1000
        epoch_s = training_epoch_seconds(size, epoch_images) * 1000 / epoch_images  # per 1,000 images
        rows += [{"size": f"{size} px", "what": name, "s per 1,000 images": cost} for name, cost in costs.items()]
        rows.append({"size": f"{size} px", "what": "training epoch, smoke width (baseline)",
                     "s per 1,000 images": epoch_s})
        per_image = sum(costs.values()) / 1000
        for preset in ("smoke", "full"):
            gan = load_config("pet", preset).gan
            eval_s = per_image * gan.eval_images
            shares[f"evaluation share of a trial, {preset} preset ({gan.eval_images} images every "
                   f"{gan.eval_every} epoch(s) of 1,000 images), {size} px"] = eval_s / (eval_s + gan.eval_every * epoch_s)
    return Section(
        title="4. Metric cost (seconds per 1,000 images; evaluation's share of a trial)",
        method=__doc__.split("\n\n", 2)[1].strip() + f"\n\n{images} random images per metric, device {device}, "
               f"{torch.get_num_threads()} torch threads.",
        rows=rows, ratios=shares,
        notes=["aim: evaluation under 10 % of a trial at the default (full preset) eval_every"])


def training_epoch_seconds(size: int, images: int) -> float:
    from trainables.gan.loop import fit

    gan = load_config("pet", "smoke").gan
    cfg = {**dataclasses.asdict(gan), "image_size": size, "epochs": 2, "eval_every": 100, "eval_images": 16}
    times = []
    fit(cfg, random_cohort(size, images), lambda metrics, folder: times.append(metrics["epoch_s"]))
    return times[-1]


