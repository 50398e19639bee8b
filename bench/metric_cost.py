"""Evaluation cost: seconds per 1,000 images for each stage-1 metric, and its share of a trial.

    python bench/metric_cost.py [--sizes 32 64] [--images 256] [--epoch-images 1000]

For each image size: class-matched SSIM / PSNR / MSE pairing, FID-feature extraction (the
TF-FID InceptionV3 at 299 px: the dominant cost on CPU), and MS-SSIM diversity, each on
`--images` random images, as seconds per 1,000 images. Then the baseline in the same run:
one training epoch of `--epoch-images` real images at the smoke preset's width, and the share
of a trial an evaluation of `eval_images` takes at the smoke and full presets' `eval_every`.
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from orchestrator.config import load_config
from trainables.metrics import extract_features, load_fid_extractor, ms_ssim_diversity, paired_similarity

from gan_step import random_cohort  # noqa: E402  (bench/ is run as a folder of scripts)


def seconds_per_1000(fn, n: int) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) / n * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--epoch-images", type=int, default=1000)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"device {device}, {torch.get_num_threads()} torch threads, {args.images} images per metric")
    extractor = load_fid_extractor("")
    for size in args.sizes:
        gen = torch.Generator().manual_seed(0)
        fake, real = torch.rand(args.images, 1, size, size, generator=gen), torch.rand(args.images, 1, size, size,
                                                                                       generator=gen)
        labels = torch.arange(args.images) % 2
        costs = {
            "ssim/psnr/mse pairing": seconds_per_1000(lambda: paired_similarity(fake, labels, real, labels, seed=0), args.images),
            "FID features": seconds_per_1000(lambda: extract_features(fake, extractor, device), args.images),
            "MS-SSIM diversity": seconds_per_1000(lambda: ms_ssim_diversity(fake, seed=0), args.images),
        }
        epoch_s = training_epoch_seconds(size, args.epoch_images)
        print(f"\n{size} px: seconds per 1,000 images")
        for name, cost in costs.items():
            print(f"  {name:<24} {cost:8.2f}")
        per_image = sum(costs.values()) / 1000
        print(f"  training epoch of {args.epoch_images} images (smoke width): {epoch_s:.1f} s")
        for preset in ("smoke", "full"):
            gan = load_config("pet", preset).gan
            eval_s = per_image * gan.eval_images
            share = eval_s / (eval_s + gan.eval_every * epoch_s)
            print(f"  {preset}: eval of {gan.eval_images} images every {gan.eval_every} epoch(s) = "
                  f"{eval_s:.1f} s, {share:.1%} of the trial")


def training_epoch_seconds(size: int, images: int) -> float:
    from trainables.gan.loop import fit

    gan = load_config("pet", "smoke").gan
    cfg = {**dataclasses.asdict(gan), "image_size": size, "epochs": 2, "eval_every": 100, "eval_images": 16}
    times = []
    fit(cfg, random_cohort(size, images), lambda metrics, folder: times.append(metrics["epoch_s"]))
    return times[-1]


if __name__ == "__main__":
    main()
