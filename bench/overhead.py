"""1. Orchestration overhead: the same GAN trial as a plain PyTorch loop and as a Ray Tune trial running Ray Train.

Same config (the smoke preset at 64 px, the paper's defaults as the searcher's first point),
same phantom arrays, same epochs and torch threads. The plain loop calls
`trainables.gan.loop.fit` in this process; the Tune trial is stage 1 exactly as a sweep builds
it (`orchestrator.stages.gan.build_tuner`: a Tune function trial that fits a TorchTrainer with
one worker, checkpoints persisted to storage after every evaluation). Ray's start-up is timed
separately: a sweep pays it once, not per trial.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from bench.common import Section, phantom_arrays, smoke_config


def measure(quick: bool) -> Section:
    import ray

    from orchestrator.stages import gan as gan_stage
    from orchestrator.sweep import start_ray
    from trainables.gan.loop import fit

    epochs = 2 if quick else 6
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        cfg = smoke_config(tmp, "data.size=64", f"gan.epochs={epochs}", "search.num_samples=1")
        arrays = phantom_arrays(cfg, tmp)

        started = time.perf_counter()
        start_ray(None)
        ray_start_s = time.perf_counter() - started
        try:
            tuner = gan_stage.build_tuner(cfg, ray.put(arrays), str(tmp / "sweep"), callbacks=[], resume=False)
            started = time.perf_counter()
            (result,) = tuner.fit()
            trial_s = time.perf_counter() - started
        finally:
            ray.shutdown()
        if result.error:
            raise RuntimeError(f"the Tune trial failed: {result.error}")
        threads = int(result.metrics["torch_threads"])

        settings = {key: value for key, value in result.config.items() if key != "_train"}
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)  # as inside the Train worker
        try:
            started = time.perf_counter()
            fit(settings, arrays, lambda metrics, checkpoint: None)
            plain_s = time.perf_counter() - started
        finally:
            torch.set_num_threads(previous)

    return Section(
        title="1. Orchestration overhead (GAN trial: plain loop vs Ray Tune + Ray Train)",
        method=__doc__.split("\n\n", 1)[1].strip() + f"\n\n{epochs} epochs at 64 px, {threads} torch thread(s), "
               f"arch {settings['arch']}, evaluation every epoch.",
        rows=[{"run": "plain PyTorch loop (baseline)", "wall s": plain_s},
              {"run": "one Ray Tune trial running Ray Train", "wall s": trial_s},
              {"run": "Ray start-up (once per sweep)", "wall s": ray_start_s}],
        ratios={"Tune + Train trial / plain loop (wall time; aim <= 1.10)": trial_s / plain_s},
        notes=[f"per-trial overhead: {trial_s - plain_s:.1f} s"])
