"""GAN training throughput: a full WGAN-GP step (n_critic critic steps + 1 generator step).

    python -m bench.gan_step [--sizes 64 256] [--batch 32] [--steps 4] [--precision fp32 bf16]
                                 [--arch cgan] [--channels 64] [--no-ray]

For each image size and precision it runs `trainables.gan.loop.fit` for two epochs of
`--steps` generator steps on random images and prints the second epoch's images/s
(images through generator and critic: batch x (n_critic + 1) per step) and steps/s.
bf16 runs only on CUDA. Then the same step inside a 1-worker Ray Train `TorchTrainer`
(GPU when there is one) against the plain loop, as a ratio; the Train run's fixed start-up
is printed separately because a real trial pays it once.
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import torch

from orchestrator.config import GanConfig
from trainables.gan.loop import fit, train_gan_worker

VAL_IMAGES = 16


def random_cohort(size: int, train_images: int) -> dict[str, np.ndarray]:
    n = train_images + VAL_IMAGES
    rng = np.random.default_rng(0)
    return {"images": rng.random((n, size, size), dtype=np.float32).astype(np.float16),
            "labels": (np.arange(n) % 2).astype(np.int8),
            "patients": np.arange(n, dtype=np.int32),
            "split": np.array([0] * train_images + [1] * VAL_IMAGES, np.int8)}


def bench_config(size: int, arch: str = "cgan", batch: int = 32, channels: int = GanConfig.g_channels,
                 epochs: int = 2, **settings) -> dict:
    """The GAN settings of a throughput run: defaults but for these, one evaluation at the end, of few
    images; `settings` are further GanConfig fields (bf16, channels_last, compile)."""
    return {**dataclasses.asdict(GanConfig()), "arch": arch, "image_size": size, "batch_size": batch,
            "g_channels": channels, "d_channels": channels, "epochs": epochs, "eval_every": epochs,
            "eval_images": 8, **settings}


def plain_run(cfg: dict, data: dict, device: str) -> float:
    """images/s of the second epoch, `fit` called directly."""
    return fit(cfg, data, lambda metrics, folder: None, device=device)["images_per_s"]


def ray_train_run(cfg: dict, data: dict, use_gpu: bool) -> tuple[float, float]:
    """(images/s of the second epoch, wall seconds of the whole fit) inside a Ray Train worker."""
    import tempfile

    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    with tempfile.TemporaryDirectory() as storage:
        start = time.perf_counter()
        result = TorchTrainer(train_gan_worker, train_loop_config={**cfg, "data": ray.put(data)},
                              scaling_config=ScalingConfig(num_workers=1, use_gpu=use_gpu),
                              run_config=RunConfig(storage_path=storage, name="bench")).fit()
        return result.metrics["images_per_s"], time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=4, help="generator steps per epoch")
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--arch", default="cgan")
    parser.add_argument("--channels", type=int, default=GanConfig.g_channels)
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray Train comparison")
    args = parser.parse_args()

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    name = torch.cuda.get_device_name() if cuda else f"CPU, {torch.get_num_threads()} threads"
    n_critic = GanConfig.n_critic
    print(f"device: {name}; arch {args.arch}, width {args.channels}, batch {args.batch}, n_critic {n_critic}")
    print(f"{'size':>5} {'precision':>9} {'images/s':>10} {'steps/s':>8}")
    for size in args.sizes:
        data = random_cohort(size, args.batch * args.steps)
        for precision in args.precision:
            if precision == "bf16" and not cuda:
                continue
            cfg = bench_config(size, args.arch, args.batch, args.channels, bf16=precision == "bf16")
            rate = plain_run(cfg, data, device)
            print(f"{size:>5} {precision:>9} {rate:>10.1f} {rate / (args.batch * (n_critic + 1)):>8.2f}")

    if args.no_ray:
        return
    import ray

    size = args.sizes[0]
    cfg, data = bench_config(size, args.arch, args.batch, args.channels), random_cohort(size, args.batch * args.steps)
    ray.init(include_dashboard=False, log_to_driver=False)
    try:
        plain = plain_run(cfg, data, device)
        inside, wall = ray_train_run(cfg, data, use_gpu=cuda)
    finally:
        ray.shutdown()
    print(f"{size} px fp32: plain loop {plain:.1f} images/s, inside a Ray Train worker {inside:.1f} images/s: "
          f"ratio {inside / plain:.2f}; the whole Train fit took {wall:.1f} s (start-up included)")


if __name__ == "__main__":
    main()
