"""How fast does the GAN learn on a CPU? FID against the real-vs-real floor per minute of training.

    python -m bench.gan_budget [--minutes 5] [--only NAME ...] [--out DIR]

On the laptop preset's cohort (32 px PET phantom, `data.train_fraction` of the training
patients: the scarce-data regime the preset runs in), each setting trains the cgan for a fixed
wall-clock budget with `trainables.gan.loop.fit`, two settings at a time in their own processes
with one torch thread each (as stage 1 runs two trials on 2 cores). Every evaluation (the
preset's image count, against the validation split) is timed from the start of the run, so the
figures include evaluation cost as a trial pays it. The baseline is the paper's recipe at the
preset's widths (n_critic 5, no augmentation); the ratio is each setting's FID above the floor
at the end of the budget over the baseline's. Sample grids of each run's last evaluation are
written to `--out` to look at.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from bench.common import REPO, Section, phantom_arrays
from trainables.gan.checkpoint import GRID_FILE

SETTINGS = {  # name -> gan settings over the laptop preset's
    "paper recipe: n_critic 5, no augmentation (baseline)": {"n_critic": 5, "diffaugment": ""},
    "n_critic 2": {"n_critic": 2, "diffaugment": ""},
    "n_critic 2 + DiffAugment": {"n_critic": 2, "diffaugment": "color,translation,cutout"},
    "n_critic 2 + DiffAugment, widths 32": {"n_critic": 2, "diffaugment": "color,translation,cutout",
                                             "g_channels": 32, "d_channels": 32},
    # no residual blocks: 2.3x cheaper steps at these widths; then more generator steps per minute
    "no res blocks, n_critic 2": {"res_blocks": 0, "n_critic": 2, "diffaugment": "", "eval_every": 50},
    "no res blocks, n_critic 1, lr_g 2e-4": {"res_blocks": 0, "n_critic": 1, "lr_g": 2e-4, "diffaugment": "",
                                             "eval_every": 100},
    "no res blocks, n_critic 1, lr_g 2e-4 + DiffAugment translation": {
        "res_blocks": 0, "n_critic": 1, "lr_g": 2e-4, "diffaugment": "translation", "eval_every": 100},
    "no res blocks, n_critic 1, lr_g 4e-4, lr_d 8e-4": {"res_blocks": 0, "n_critic": 1, "lr_g": 4e-4, "lr_d": 8e-4,
                                                        "diffaugment": "", "eval_every": 100},
    "no res blocks, n_critic 1, lr_g 2e-4, no spectral norm": {"res_blocks": 0, "n_critic": 1, "lr_g": 2e-4,
                                                               "spectral_norm": False, "diffaugment": "",
                                                               "eval_every": 100},
}
BASELINE = next(iter(SETTINGS))


class Budget(Exception):
    """The run's wall-clock budget is spent."""


def laptop_config(tmp: Path):
    from orchestrator.config import load_config

    return load_config("pet", "laptop", overrides=[f"data.cache_dir={tmp / 'cache'}"])


def train_for(name: str, changes: dict, minutes: float, tmp: Path, out: Path) -> dict:
    """One setting, for `minutes` of wall clock: its evaluations as (minutes, FID) and images/s."""
    import torch

    from trainables.gan.loop import fit

    torch.set_num_threads(1)
    cfg = laptop_config(tmp)
    gan = {**cfg.gan_settings(), "arch": "cgan", "epochs": 10**6,
           "eval_every": 25, "res_blocks": 1, **changes}
    arrays = phantom_arrays(cfg)
    started, curve, speed = time.perf_counter(), [], []

    def report(metrics: dict, folder: Path | None) -> None:
        elapsed = (time.perf_counter() - started) / 60
        curve.append((elapsed, metrics["fid"], metrics["epoch"]))
        speed.append(metrics["images_per_s"])
        if folder is not None:  # None: the run diverged
            shutil.copy(folder / GRID_FILE, out / f"{_slug(name)}.png")
        if elapsed >= minutes:
            raise Budget

    try:
        fit(gan, arrays, report)
    except Budget:
        pass
    return {"curve": curve, "images_per_s": sum(speed) / len(speed)}


def measure(quick: bool, minutes: float = 5.0, only: list[str] | None = None, out: Path | None = None) -> Section:
    from trainables.gan.evaluate import fid_floor

    minutes = 0.5 if quick else minutes
    names = [n for n in SETTINGS if not only or n in only or n == BASELINE]
    out = out or REPO / "runs" / "bench" / "gan_budget"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg = laptop_config(tmp)
        arrays = phantom_arrays(cfg)  # made once here, read by the workers from the same cache
        floor = fid_floor(cfg.gan_settings(), arrays)["fid_floor"]
        with ProcessPoolExecutor(max_workers=2) as pool:
            runs = dict(zip(names, pool.map(train_for, names, [SETTINGS[n] for n in names], [minutes] * len(names),
                                            [tmp] * len(names), [out] * len(names))))
    marks = [round(minutes * f, 2) for f in (0.4, 0.7, 1.0)]
    rows = [{"setting": name, "images/s": run["images_per_s"], "epochs": run["curve"][-1][2],
             **{f"FID at {m:g} min": _at(run["curve"], m) for m in marks}, "FID floor": floor}
            for name, run in runs.items()]
    base = _at(runs[BASELINE]["curve"], minutes) - floor
    return Section(
        title="GAN learning per minute on a CPU (laptop preset, scarce data)",
        method=(f"cgan on the laptop cohort ({int((arrays['split'] == 0).sum())} training slices at "
                f"{cfg.data.size} px), {minutes:g} min of wall clock per setting, two settings at a time, one "
                f"torch thread each; {cfg.gan.eval_images} images per evaluation every 25 epochs (unless the "
                "setting says otherwise), timed from the start (evaluation included). FID at a time: the last "
                "evaluation before it. Settings not named keep the laptop preset's (residual blocks 1)."),
        rows=rows,
        ratios={f"(FID - floor) at {minutes:g} min, {name} / baseline": (_at(run["curve"], minutes) - floor) / base
                for name, run in runs.items() if name != BASELINE},
        notes=[f"sample grids of each run's last evaluation: {out.relative_to(REPO) if out.is_relative_to(REPO) else out}"])


def _at(curve: list[tuple[float, float, int]], minutes: float) -> float:
    before = [fid for t, fid, _ in curve if t <= minutes + 1e-9]
    return before[-1] if before else float("nan")


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)[:40]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--only", nargs="+", choices=list(SETTINGS), help="these settings (and the baseline)")
    parser.add_argument("--out", type=Path, help="where the sample grids go (default runs/bench/gan_budget/)")
    args = parser.parse_args()
    print(measure(False, args.minutes, args.only, args.out).markdown())


if __name__ == "__main__":
    main()
