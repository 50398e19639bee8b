"""5. Search efficiency: Optuna TPE + ASHA against random search without early stopping, same budget.

On the phantom at 32 px (the smoke preset, evaluation every epoch on 16 images), over a
five-dimensional space (arch, lr_g, lr_d, gp_lambda, n_critic) with trials of a fixed number of
epochs, each search gets the same budget of trial-epochs (a Tune stopper ends it there; reports
past it are not counted) and runs two trials at a time. TPE + ASHA is stage 1's own searcher
and scheduler (`orchestrator.search`); the baseline is Tune's random sampling of the same space,
every trial run to its end. Trials run `fit` in the Tune trial's process (no Ray Train): the
searches are compared, not the orchestration. Reported per search and seed: the best validation
SSIM within the budget, and the trial-epochs spent before it first reached a level L, the
median of all runs' best.
"""
from __future__ import annotations

import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import Section, phantom_arrays, smoke_config

SPACE = {
    "arch": {"type": "choice", "values": ["dcgan", "cgan"]},
    "lr_g": {"type": "loguniform", "low": 2.0e-5, "high": 5.0e-4},
    "lr_d": {"type": "loguniform", "low": 5.0e-5, "high": 1.0e-3},
    "gp_lambda": {"type": "uniform", "low": 5.0, "high": 15.0},
    "n_critic": {"type": "int", "low": 1, "high": 5},
}


def gan_epochs(config: dict, data: list) -> None:
    """A Tune trial: the GAN loop in this process, one report per evaluated epoch."""
    import ray
    from ray import tune

    from trainables.gan.loop import fit

    def report(metrics: dict, checkpoint) -> None:
        tune.report({**{k: v for k, v in metrics.items() if isinstance(v, (int, float))},
                     "reported_at": time.time()})

    fit(config, ray.get(data[0]), report)


def run_search(algorithm: str, seed: int, cfg, data_ref, epochs: int, budget: int, storage: Path) -> list[float]:
    """The validation metric of every report of one search, in the order they came."""
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from orchestrator.search import make_scheduler, make_searcher, to_tune_space

    class TrialEpochBudget(tune.Stopper):
        def __init__(self):
            self.spent = 0

        def __call__(self, trial_id, result):
            self.spent += 1
            return False

        def stop_all(self):
            return self.spent >= budget

    search = dataclasses.replace(cfg.search, space=SPACE, seed=seed, max_concurrent=2)
    if algorithm == "tpe_asha":  # every trial takes at least one epoch: at most `budget` trials
        tune_config = tune.TuneConfig(search_alg=make_searcher(search), scheduler=make_scheduler(search, epochs),
                                      num_samples=budget)  # two at a time: make_searcher's limiter
    else:  # every trial runs to its end: the budget holds ceil(budget / epochs) of them
        tune_config = tune.TuneConfig(search_alg=BasicVariantGenerator(random_state=seed),
                                      num_samples=-(-budget // epochs), max_concurrent_trials=2)
    param_space = {**cfg.gan_settings(), "epochs": epochs,
                   "seed": seed, **to_tune_space(SPACE)}
    results = tune.Tuner(
        tune.with_resources(tune.with_parameters(gan_epochs, data=[data_ref]), {"cpu": 1}),
        param_space=param_space, tune_config=tune_config,
        run_config=tune.RunConfig(name=f"{algorithm}-{seed}", storage_path=str(storage), stop=TrialEpochBudget(),
                                  verbose=0)).fit()
    reports = [(row["reported_at"], row[cfg.search.metric]) for result in results
               if result.metrics_dataframe is not None for _, row in result.metrics_dataframe.iterrows()
               if cfg.search.metric in row]
    return [value for _, value in sorted(reports)][:budget]


def first_reaching(values: list[float], level: float) -> int | None:
    best = float("-inf")
    for spent, value in enumerate(values, start=1):
        best = max(best, value)
        if best >= level:
            return spent
    return None


def measure(quick: bool) -> Section:
    import ray

    seeds, epochs, budget = ([0], 3, 12) if quick else ([0, 1, 2], 6, 36)
    algorithms = {"random": "random search, no early stopping (baseline)", "tpe_asha": "Optuna TPE + ASHA"}
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        cfg = smoke_config(tmp, "gan.eval_images=16")
        arrays = phantom_arrays(cfg)
        ray.init(include_dashboard=False, log_to_driver=False)
        try:
            data_ref = ray.put(arrays)
            runs, seconds = {}, {}
            for algorithm in algorithms:
                started = time.perf_counter()
                for seed in seeds:
                    runs[algorithm, seed] = run_search(algorithm, seed, cfg, data_ref, epochs, budget, tmp / "tune")
                seconds[algorithm] = time.perf_counter() - started
        finally:
            ray.shutdown()
    best = {key: max(values) for key, values in runs.items()}
    level = statistics.median(best.values())
    rows, means = [], {}
    for algorithm, name in algorithms.items():
        bests = [best[algorithm, seed] for seed in seeds]
        reached = [first_reaching(runs[algorithm, seed], level) for seed in seeds]
        means[algorithm] = statistics.mean(bests)
        rows.append({"search": name,
                     "best SSIM per seed": ", ".join(f"{b:.4f}" for b in bests),
                     "mean best": means[algorithm],
                     "trial-epochs to reach L, per seed": ", ".join(str(r) if r else f"not in {budget}"
                                                                   for r in reached),
                     "wall s (all seeds)": seconds[algorithm]})
    return Section(
        title="5. Search efficiency (TPE + ASHA vs random search, fixed trial-epoch budget)",
        method=__doc__.split("\n\n", 1)[1].strip() + f"\n\nSeeds {seeds}; {epochs} epochs per trial; budget "
               f"{budget} trial-epochs per search; L = {level:.4f}.",
        rows=rows,
        ratios={"mean best SSIM, TPE + ASHA / random": means["tpe_asha"] / means["random"]})
