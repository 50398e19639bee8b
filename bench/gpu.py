"""6. GPU: what the GPU gives each stage, and which settings pay there.

    python -m bench --only gpu                  on a GPU machine: every part (estimated 8 min on one GPU)
    python -m bench.gpu --parts a --out F.md    some parts (a run that must fit a time limit)
    python -m bench.gpu --cpu                   every part, tiny, on the CPU: checks the script runs

a. WGAN-GP step: `trainables.gan.loop.fit` (n_critic critic steps and one generator step; the full
   preset's widths, batch 32, random images), images per second over the steady epochs at 64, 128
   and 256 px, fp32 / bf16 autocast x contiguous / channels_last, each against fp32 contiguous at
   its size; then, at 256 px only (each compile costs minutes), `torch.compile` on for bf16 in the
   faster layout, its compile time (first epoch minus a steady one) reported apart from its rate.
b. Inside a Tune trial: stage 1's own Tuner runs one GAN trial at 128 px on one GPU while
   nvidia-smi samples the GPU every 200 ms: mean utilisation while the GPU was in use and over the
   whole trial (Ray Train's start included), and the trial's images/s against the plain loop's
   (fp32 contiguous, measured beside it).
c. Packing: stage 3's own Tuner runs 8 resnet trials on the phantom cohort at 128 px, 1, 2 and 4 at
   a time on one GPU (`classify.gpus_per_trial` 1, 0.5, 0.25): trials per minute against 1 per GPU.
d. One stage-3 trial on the GPU against the same trial on every CPU core.

With `--cpu` the same code runs at 32 px, narrow and short, without the compiled row, and packing
shares the CPUs instead (`classify.cpus_per_trial`); its figures say nothing of a GPU.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from bench.common import Section, phantom_arrays, timed_stage3
from bench.gan_step import bench_config, random_cohort
from orchestrator.config import load_config
from trainables.gan.loop import fit

TITLE = "6. GPU (WGAN-GP step settings, a Tune trial's GPU use, classifier packing, a stage-3 trial on GPU vs CPU)"
PARTS = ("a", "b", "c", "d")
BATCH = 32


@dataclass(frozen=True)
class Scale:
    """How big each part is: the GPU run's sizes, or the CPU check's."""
    preset: str  # the preset whose cohort and GAN settings the Tune parts start from
    sizes: tuple[int, ...]  # part a
    compile_size: int  # part a's torch.compile run (0: none)
    channels: int  # GAN widths, parts a and b
    gan_steps: int  # generator steps per epoch, parts a and b
    tune_size: int
    tune_epochs: int
    classify_size: int
    classify_epochs: int
    packed_trials: int
    per_device: tuple[int, ...]


GPU_SCALE = Scale(preset="full", sizes=(64, 128, 256), compile_size=256, channels=64, gan_steps=16, tune_size=128,
                  tune_epochs=20, classify_size=128, classify_epochs=3, packed_trials=8, per_device=(1, 2, 4))
# The CPU check leaves torch.compile out (80 s of a 4-minute check): the compiled GAN steps are checked
# on the CPU by tests/trainables/gan/test_loop.py, and the GPU run's compiled row is the same `fit` call.
CPU_SCALE = Scale(preset="smoke", sizes=(32,), compile_size=0, channels=8, gan_steps=2, tune_size=32,
                  tune_epochs=2, classify_size=32, classify_epochs=1, packed_trials=2, per_device=(1, 2))


@dataclass
class Figures:
    """What the parts measured: one table each, and ratios and notes for the section."""
    tables: dict[str, list[dict]] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def measure(quick: bool) -> Section:
    if not torch.cuda.is_available():
        return Section(title=TITLE, method=method(), notes=["not measured: this machine has no CUDA GPU"])
    scale = GPU_SCALE if not quick else replace(GPU_SCALE, sizes=(64,), compile_size=64, tune_epochs=4)
    return measure_on("cuda", scale)


def method() -> str:
    """What is measured, against what: the docstring past its usage lines."""
    return __doc__.split("\n\n", 2)[2].strip()


def measure_on(device: str, scale: Scale, parts: tuple[str, ...] = PARTS) -> Section:
    """The `parts` on `device` ("cuda", or "cpu" to check the script), printing each row as it comes."""
    import ray

    figures = Figures()
    if "a" in parts:
        step_settings(device, scale, figures)
        if device == "cuda":
            torch.cuda.empty_cache()  # the Ray parts' trials get the GPU's memory, not this process's cache
    on_ray = {"b": tune_trial_use, "c": classifier_packing, "d": stage3_trial}
    if set(parts) & set(on_ray):
        ray.init(include_dashboard=False, log_to_driver=False)  # once for them all: each start costs seconds
        try:
            for part in (part for part in parts if part in on_ray):
                on_ray[part](device, scale, figures)
        finally:
            ray.shutdown()
    name = torch.cuda.get_device_name() if device == "cuda" else f"CPU check ({os.cpu_count()} cores): not GPU figures"
    return Section(title=TITLE, method=method() + f"\n\n{name}; parts {', '.join(parts)}.", tables=figures.tables,
                   ratios=figures.ratios, notes=figures.notes)


def printed(row: dict) -> dict:
    print(row, flush=True)  # a run cut short by its time limit still shows what it measured
    return row


# ----------------------------------------------------------------------------- a. the WGAN-GP step


def step_settings(device: str, scale: Scale, figures: Figures) -> None:
    rows = figures.tables.setdefault("a. WGAN-GP step, images / s over the steady epochs", [])
    for size in scale.sizes:
        data = random_cohort(size, BATCH * scale.gan_steps)
        size_rows = [step_row(device, scale, size, data, bf16=bf16, channels_last=channels_last)
                     for bf16 in (False, True) for channels_last in (False, True)]
        if size == scale.compile_size:
            bf16_rows = [row for row in size_rows if row["precision"] == "bf16"]
            layout = max(bf16_rows, key=lambda row: row["images / s"])["layout"]
            compiled = step_row(device, scale, size, data, bf16=True, channels_last=layout == "channels_last",
                                compile=True)
            figures.notes.append(f"{size} px: torch.compile took {compiled['first epoch s'] - compiled['epoch s']:.1f} s "
                                 "(its first epoch minus a steady one)")
            size_rows.append(compiled)
        for row in size_rows:
            row["/ fp32 contiguous"] = row["images / s"] / size_rows[0]["images / s"]
        fastest = max(size_rows, key=lambda row: row["images / s"])
        figures.ratios[f"{size} px: fastest ({fastest['precision']} {fastest['layout']} {fastest['compile']}".rstrip()
                       + ") / fp32 contiguous"] = fastest["/ fp32 contiguous"]
        rows += size_rows


def step_row(device: str, scale: Scale, size: int, data: dict, bf16: bool, channels_last: bool,
             compile: bool = False) -> dict:
    """One setting's steady images/s: epochs 2 and 3 of `fit` (the first warms up, or compiles)."""
    cfg = {**bench_config(size, batch=BATCH, channels=scale.channels, epochs=3, bf16=bf16,
                          channels_last=channels_last, compile=compile), "eval_every": 1}
    epochs = []
    fit(cfg, data, lambda metrics, folder: epochs.append(metrics), device=device)
    steady = epochs[1:]
    row = {"size": size, "precision": "bf16" if bf16 else "fp32",
           "layout": "channels_last" if channels_last else "contiguous", "compile": "compiled" if compile else "",
           "images / s": statistics.mean(m["images_per_s"] for m in steady),
           "epoch s": statistics.mean(m["epoch_s"] for m in steady)}
    if compile:
        row["first epoch s"] = epochs[0]["epoch_s"]
    return printed(row)


# ----------------------------------------------------------------------------- b. inside a Tune trial


class GpuSampler:
    """nvidia-smi's utilisation (%) of GPU 0 every 200 ms, in the background; no samples without it."""

    def __enter__(self) -> GpuSampler:
        self.samples: list[float] = []
        try:
            self._process = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "--loop-ms=200",
                 "--id=0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        except FileNotFoundError:
            self._process = None
            return self
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self) -> None:
        for line in self._process.stdout:
            try:
                self.samples.append(float(line.strip()))
            except ValueError:
                pass  # "[N/A]" and the like

    def __exit__(self, *exc) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait()

    def busy_mean(self) -> float | str:
        """Mean over the span from the first to the last non-zero sample (the GPU in use)."""
        busy = [i for i, value in enumerate(self.samples) if value > 0]
        return statistics.mean(self.samples[busy[0]:busy[-1] + 1]) if busy else "no samples"

    def mean(self) -> float | str:
        return statistics.mean(self.samples) if self.samples else "no samples"


def tune_trial_use(device: str, scale: Scale, figures: Figures) -> None:
    """One stage-1 trial through stage 1's own Tuner, the GPU sampled while it runs; the plain loop beside."""
    import ray

    from orchestrator.stages import gan as gan_stage

    size = scale.tune_size
    data = random_cohort(size, BATCH * scale.gan_steps)
    plain = step_row(device, scale, size, data, bf16=False, channels_last=False)
    cfg = load_config("pet", scale.preset, overrides=[
        f"data.size={size}", f"gan.epochs={scale.tune_epochs}", f"gan.eval_every={scale.tune_epochs}",
        "gan.eval_images=16", f"gan.batch_size={BATCH}", f"gan.g_channels={scale.channels}",
        f"gan.d_channels={scale.channels}", "search.num_samples=1", "search.grace_epochs=1",
        f"search.gpus_per_worker={1 if device == 'cuda' else 0}"])
    cfg = replace(cfg, search=replace(cfg.search, space={"arch": {"type": "choice", "values": ["cgan"]}}))
    with tempfile.TemporaryDirectory() as folder:
        tuner = gan_stage.build_tuner(cfg, ray.put(data), folder, callbacks=[], resume=False)
        started = time.perf_counter()
        with GpuSampler() as sampler:
            result = tuner.fit()[0]
        wall = time.perf_counter() - started
    if result.error:
        raise RuntimeError(f"the stage-1 trial failed: {result.error}")
    row = printed({"size": size, "epochs": scale.tune_epochs, "trial device": result.metrics["device"],
                   "images / s": result.metrics["images_per_s"], "plain loop images / s": plain["images / s"],
                   "wall s": wall, "GPU use while in use %": sampler.busy_mean(),
                   "GPU use over the trial %": sampler.mean()})
    figures.tables["b. one stage-1 Tune trial (fp32, contiguous)"] = [row]
    figures.ratios[f"{size} px images/s inside a Tune trial / plain loop"] = row["images / s"] / plain["images / s"]


# ----------------------------------------------------------------------------- c, d. stage-3 trials


def classify_config(folder: Path, scale: Scale, trials: int):
    """The phantom cohort at the scale's size; resnet trials of the real arm, `trials` seeds."""
    return load_config("pet", scale.preset, overrides=[
        f"data.cache_dir={folder / 'cache'}", f"data.size={scale.classify_size}", "classify.classifiers=[resnet]",
        "classify.classic=false", f"classify.seeds={list(range(trials))}",
        f"classify.epochs={scale.classify_epochs}", f"classify.patience={scale.classify_epochs}"])


def timed_trials(cfg, gpus: float, cpus: float, storage: Path) -> float:
    """Wall seconds of stage 3's grid over `cfg`'s phantom cohort, each trial holding `gpus` and `cpus`."""
    cfg = replace(cfg, classify=replace(cfg.classify, gpus_per_trial=gpus, cpus_per_trial=cpus))
    return timed_stage3(cfg, phantom_arrays(cfg), storage)


def classifier_packing(device: str, scale: Scale, figures: Figures) -> None:
    """Trials per minute at 1, 2, 4 trials per GPU (per CPU in the CPU check)."""
    rows = figures.tables.setdefault(f"c. {scale.packed_trials} resnet trials at {scale.classify_size} px, packed", [])
    unit = "GPU" if device == "cuda" else "CPU"
    with tempfile.TemporaryDirectory() as folder:
        cfg = classify_config(Path(folder), scale, scale.packed_trials)
        for n in scale.per_device:
            gpus, cpus = (1 / n, 1.0) if device == "cuda" else (0.0, 1 / n)
            seconds = timed_trials(cfg, gpus, cpus, Path(folder) / f"packed-{n}")
            rows.append(printed({"trials at a time": f"{n} per {unit}", "wall s": seconds,
                                 "trials / min": scale.packed_trials / seconds * 60}))
    for row in rows[1:]:
        figures.ratios[f"classifier trials per minute, {row['trials at a time']} / 1 per {unit}"] = (
            row["trials / min"] / rows[0]["trials / min"])


def stage3_trial(device: str, scale: Scale, figures: Figures) -> None:
    """One classifier trial's wall time on every CPU core, then on `device` (one GPU, one CPU)."""
    cores = float(os.cpu_count() or 1)
    rows = figures.tables.setdefault(f"d. one resnet trial at {scale.classify_size} px", [])
    with tempfile.TemporaryDirectory() as folder:
        cfg = classify_config(Path(folder), scale, 1)
        for name, gpus, cpus in ((f"{cores:g} CPU cores", 0.0, cores), (f"{device}, 1 CPU", float(device == "cuda"), 1.0)):
            rows.append(printed({"on": name, "wall s": timed_trials(cfg, gpus, cpus, Path(folder) / f"{gpus:g}")}))
    figures.ratios[f"one stage-3 trial's wall time, {rows[0]['on']} / {rows[1]['on']}"] = (
        rows[0]["wall s"] / rows[1]["wall s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="the CPU check: every part, tiny")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--out", type=Path, help="also write the section (markdown) here")
    args = parser.parse_args()
    if args.cpu:
        section = measure_on("cpu", CPU_SCALE, tuple(args.parts))
    elif torch.cuda.is_available():
        section = measure_on("cuda", GPU_SCALE, tuple(args.parts))
    else:
        section = measure(quick=False)
    print(section.markdown())
    if args.out:
        args.out.write_text(section.markdown())


if __name__ == "__main__":
    main()
