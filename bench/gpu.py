"""6. GPU: images per second of a full WGAN-GP step at 256 px, fp32 against bf16 autocast.

Runs only where CUDA is available (CI never has a GPU): `trainables.gan.loop.fit` at the full
preset's width on random 256 px images, fp32 as the baseline, bf16 autocast against it.
"""
from __future__ import annotations

import argparse

import torch

from bench.common import Section
from bench.gan_step import bench_config, plain_run, random_cohort
from orchestrator.config import GanConfig


def measure(quick: bool) -> Section:
    title = "6. GPU (WGAN-GP step at 256 px: fp32 vs bf16)"
    if not torch.cuda.is_available():
        return Section(title=title, method=__doc__.split("\n\n", 1)[1].strip(),
                       notes=["not measured: this machine has no CUDA GPU"])
    args = argparse.Namespace(arch="cgan", batch=32, channels=GanConfig.g_channels)
    data = random_cohort(256, args.batch * (2 if quick else 8))
    rates = {precision: plain_run(bench_config(args, 256, precision == "bf16"), data, "cuda")
             for precision in ("fp32", "bf16")}
    return Section(title=title, method=__doc__.split("\n\n", 1)[1].strip() + f"\n\n{torch.cuda.get_device_name()}.",
                   rows=[{"precision": p, "images / s": rate} for p, rate in rates.items()],
                   ratios={"bf16 / fp32 images per second": rates["bf16"] / rates["fp32"]})
