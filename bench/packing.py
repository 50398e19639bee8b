"""2. Trial packing: the same small classifier trials one at a time, and packed with fractional CPUs.

Stage 3's own Tuner (`orchestrator.stages.classify.build_tuner`) over N seeds of the smoke
grid's mobilenet on real data (32 px, the smoke recipe). The baseline runs them one at a time
on one CPU (Ray given 1 CPU, 1 thread per trial); then Ray is given every core and each trial
`cpus_per_trial` of them, so that many run at once (Ray sets each trial's thread count to its
CPUs, at least 1). On a machine with C cores the throughput ratio can reach C. One trial at a
time with all cores (more threads, no packing) is shown for comparison.

    python -m bench.packing --laptop

measures instead the laptop preset's own grid on its real data (real only, classic and the
oracle's rungs, each classifier at its own recipe and seeds; no synthetic set), packed two
single-thread trials per core (the baseline) and one trial per core.
"""
from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import replace
from pathlib import Path

from bench.common import Section, phantom_arrays, smoke_config, timed_stage3
from orchestrator.config import load_config
from orchestrator.stages import classify as classify_stage


def timed_grid(cfg, arrays, storage: Path, ray_cpus: int, cpus_per_trial: float) -> float:
    import ray

    cfg = replace(cfg, classify=replace(cfg.classify, cpus_per_trial=cpus_per_trial))
    ray.init(num_cpus=ray_cpus, include_dashboard=False, log_to_driver=False)
    try:
        return timed_stage3(cfg, arrays, storage)
    finally:
        ray.shutdown()


def measure(quick: bool) -> Section:
    cores = os.cpu_count() or 1
    trials = 4 if quick else 8
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        cfg = smoke_config(tmp, "classify.classifiers=[mobilenet]", "classify.classic=false",
                           f"classify.seeds={list(range(trials))}", "classify.gpus_per_trial=0")
        arrays = phantom_arrays(cfg)
        layouts = [("one at a time, 1 CPU each (baseline)", 1, 1.0),
                   (f"one at a time, {cores} CPUs each", cores, float(cores)),
                   (f"packed: {cores} at a time, 1 CPU each", cores, 1.0),
                   (f"packed: {2 * cores} at a time, 0.5 CPU each", cores, 0.5)]
        rows = []
        for name, ray_cpus, cpus in layouts:
            seconds = timed_grid(cfg, arrays, tmp / f"tune-{len(rows)}", ray_cpus, cpus)
            rows.append({"layout": name, "wall s": seconds, "trials / min": trials / seconds * 60})
    baseline = rows[0]["wall s"]
    return Section(
        title="2. Trial packing (classifier trials: one at a time vs fractional CPUs)",
        method=__doc__.split("\n\n", 1)[1].strip() + f"\n\n{trials} trials, {cores} cores.",
        rows=rows,
        ratios={f"throughput, {row['layout']} / baseline (limit {cores}.0)": baseline / row["wall s"]
                for row in rows[1:]})


def laptop_grid() -> Section:
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        cfg = load_config("pet", "laptop", overrides=[f"data.cache_dir={tmp / 'cache'}"])
        arrays = phantom_arrays(cfg)
        trials = len(classify_stage.grid_trials(cfg, []))
        rows = [{"layout": f"{2 * cores} at a time, 0.5 CPU each (baseline)",
                 "wall s": timed_grid(cfg, arrays, tmp / "tune-half", cores, 0.5)},
                {"layout": f"{cores} at a time, 1 CPU each",
                 "wall s": timed_grid(cfg, arrays, tmp / "tune-one", cores, 1.0)}]
    return Section(
        title="2. Trial packing: the laptop preset's grid",
        method=f"`python -m bench.packing --laptop`: {trials} trials of the laptop grid's real-data arms, "
               f"{cores} cores.",
        rows=rows, ratios={"wall time, half a CPU / one CPU per trial": rows[0]["wall s"] / rows[1]["wall s"]})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--laptop", action="store_true", help="the laptop preset's grid, half a CPU or one per trial")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print((laptop_grid() if args.laptop else measure(args.quick)).markdown())
