"""Does the EMA generator help? FID / SSIM of the EMA copy vs the raw generator, same run.

    python -m bench.gan_ema [--epochs 30] [--seeds 0 1 2] [--arch cgan] [--images 128]

EMA never feeds back into training, so one run per seed gives both generators on the same
trajectory: the last checkpoint is evaluated twice, on the smoke phantom (32 px PET,
validation split), with the same fixed noise. Prints the per-seed figures and the mean
ratio EMA / raw (FID: below 1 means EMA helps).
"""
from __future__ import annotations

import argparse
import dataclasses
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from orchestrator.config import load_config
from orchestrator.data.ingest import ingest
from orchestrator.data.phantom import write_phantom_cohort
from trainables.gan.evaluate import GanEvaluator
from trainables.gan import checkpoint
from trainables.gan.loop import fit
from trainables.gan.models import build_gan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arch", default="cgan")
    parser.add_argument("--images", type=int, default=128, help="generated images per evaluation")
    args = parser.parse_args()

    config = load_config("pet", "smoke")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_phantom_cohort(tmp / "data", patients=config.data.phantom_patients, modality="pet",
                             size=config.data.phantom_size, slices=3, layout="slices")
        data_cfg = dataclasses.replace(config.data, cache_dir=str(tmp / "cache"))
        data = ingest(tmp / "data", data_cfg, labels_file=tmp / "data" / "labels.csv").as_arrays()
        val = data["split"] == 1
        val_images = torch.from_numpy(data["images"][val].astype(np.float32)).unsqueeze(1)
        val_labels = torch.from_numpy(data["labels"][val].astype(np.int64))

        ratios = []
        print(f"{args.arch}, {args.epochs} epochs, ema_decay {config.gan.ema_decay}, {args.images} images vs "
              f"{len(val_labels)} validation slices")
        for seed in args.seeds:
            cfg = {**config.gan_settings(), "arch": args.arch,
                   "epochs": args.epochs, "eval_every": args.epochs, "eval_images": args.images, "seed": seed}
            kept = tmp / f"seed{seed}"
            fit(cfg, data, lambda metrics, folder: shutil.copytree(folder, kept))
            state = checkpoint.load(kept)
            evaluator = GanEvaluator(val_images, val_labels, num_images=args.images,
                                     latent_dim=cfg["latent_dim"], seed=seed)
            scores = {}
            for name in ("generator", "ema"):
                generator = build_gan({**cfg, "num_classes": 2}).generator
                generator.load_state_dict(getattr(state, name))
                scores[name] = evaluator.evaluate(generator)
            raw, ema = scores["generator"], scores["ema"]
            ratios.append(ema["fid"] / raw["fid"])
            print(f"seed {seed}: FID raw {raw['fid']:.1f} ema {ema['fid']:.1f} (ratio {ratios[-1]:.3f}); "
                  f"SSIM raw {raw['ssim']:.4f} ema {ema['ssim']:.4f}; MS-SSIM raw {raw['ms_ssim']:.3f} "
                  f"ema {ema['ms_ssim']:.3f}")
    print(f"mean FID ratio EMA / raw: {np.mean(ratios):.3f} over {len(ratios)} seeds")


if __name__ == "__main__":
    main()
