"""1. Orchestration overhead: the same GAN trial as a plain PyTorch loop and as a Ray Tune trial running Ray Train.

Same config (the smoke preset at 64 px, the paper's defaults as the searcher's first point),
same phantom arrays, same epochs and torch threads. The plain loop calls
`trainables.gan.loop.fit` in this process; the Tune trial is stage 1 exactly as a sweep builds
it (`orchestrator.stages.gan.build_tuner`: a Tune function trial that fits a TorchTrainer with
one worker, checkpoints persisted to storage after every evaluation). Ray's start-up is timed
separately: a sweep pays it once, not per trial. Then the fixed cost of a trial: empty Tune +
Train trials (a worker that does nothing), three in a row in one Tuner, trial to trial.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from bench.common import Section, phantom_arrays, smoke_config


def _empty_worker(config: dict) -> None:
    Path(config["stamp"]).write_text(str(time.time()))


def _empty_trial(config: dict) -> None:
    from ray import tune
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    started = time.time()
    trial_id = tune.get_context().get_trial_id()
    TorchTrainer(_empty_worker, train_loop_config={"stamp": f"{config['storage']}/{trial_id}.stamp"},
                 scaling_config=ScalingConfig(num_workers=1),
                 run_config=RunConfig(name=f"empty-{trial_id}", storage_path=config["storage"])).fit()
    tune.report({"started": started, "ended": time.time()})


def empty_trial_seconds(storage: Path, trials: int = 3) -> float:
    """Mean wall seconds per empty trial after the first, `trials` in a row in one Tuner."""
    from ray import tune

    from orchestrator.stages.gan import TRIAL_TOKEN

    results = tune.Tuner(
        tune.with_resources(_empty_trial, TRIAL_TOKEN),
        param_space={"storage": str(storage), "i": tune.grid_search(list(range(trials)))},
        tune_config=tune.TuneConfig(max_concurrent_trials=1),
        run_config=tune.RunConfig(name="empty", storage_path=str(storage), verbose=0)).fit()
    ends = sorted(result.metrics["ended"] for result in results)
    return (ends[-1] - ends[0]) / (trials - 1)  # trial to trial: scheduling, start, run, shutdown


def measure(quick: bool) -> Section:
    import ray

    from orchestrator.stages import gan as gan_stage
    from orchestrator.sweep import start_ray
    from trainables.gan.loop import fit

    epochs = 2 if quick else 6
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        cfg = smoke_config(tmp, "data.size=64", f"gan.epochs={epochs}", "search.num_samples=1")
        arrays = phantom_arrays(cfg)

        started = time.perf_counter()
        start_ray(None)
        ray_start_s = time.perf_counter() - started
        try:
            tuner = gan_stage.build_tuner(cfg, ray.put(arrays), str(tmp / "sweep"), callbacks=[], resume=False)
            started = time.perf_counter()
            (result,) = tuner.fit()
            trial_s = time.perf_counter() - started
            fixed_s = empty_trial_seconds(tmp / "empty")
        finally:
            ray.shutdown()
        if result.error:
            raise RuntimeError(f"the Tune trial failed: {result.error}")
        trial_epochs_s = float(result.metrics_dataframe["epoch_s"].sum())
        threads = int(result.metrics["torch_threads"])

        settings = {key: value for key, value in result.config.items() if key != "_train"}
        previous, reports = torch.get_num_threads(), []
        torch.set_num_threads(threads)  # as inside the Train worker
        try:
            started = time.perf_counter()
            fit(settings, arrays, lambda metrics, checkpoint: reports.append(metrics))
            plain_s = time.perf_counter() - started
        finally:
            torch.set_num_threads(previous)
        plain_epochs_s = sum(m["epoch_s"] for m in reports)

    return Section(
        title="1. Orchestration overhead (GAN trial: plain loop vs Ray Tune + Ray Train)",
        method=__doc__.split("\n\n", 1)[1].strip() + f"\n\n{epochs} epochs at 64 px, {threads} torch thread(s), "
               f"arch {settings['arch']}, evaluation every epoch.",
        rows=[{"run": "plain PyTorch loop (baseline)", "wall s": plain_s, "of which training epochs, s": plain_epochs_s},
              {"run": "one Ray Tune trial running Ray Train", "wall s": trial_s,
               "of which training epochs, s": trial_epochs_s},
              {"run": "Ray start-up (once per sweep)", "wall s": ray_start_s},
              {"run": "empty Tune + Train trial (fixed cost per trial)", "wall s": fixed_s}],
        ratios={"Tune + Train trial / plain loop (wall time; aim <= 1.10)": trial_s / plain_s,
                "training epochs inside the Train worker / in the plain loop": trial_epochs_s / plain_epochs_s},
        notes=[f"per-trial overhead: {trial_s - plain_s:.1f} s; an empty trial costs {fixed_s:.1f} s"])
