"""The search: the YAML space -> Tune param space, and the searcher / scheduler factories.

The only module that knows Optuna and Tune schedulers. A space in the YAML is

    search:
      space:
        lr_g: {type: loguniform, low: 2.0e-5, high: 5.0e-4}
        n_critic: {type: int, low: 1, high: 5}          # both ends included
        arch: {type: choice, values: [dcgan, cgan]}

and every key is a `gan` setting (checked in config.py).
"""
from __future__ import annotations

import dataclasses
from typing import Any

from ray import tune

from orchestrator.config import GanConfig, SearchConfig
from orchestrator.ranking import metric_mode

# How each declarative distribution becomes a Tune domain.
DISTRIBUTIONS = {
    "loguniform": lambda spec: tune.loguniform(spec["low"], spec["high"]),
    "uniform": lambda spec: tune.uniform(spec["low"], spec["high"]),
    "int": lambda spec: tune.randint(spec["low"], spec["high"] + 1),  # Tune's high is exclusive
    "choice": lambda spec: tune.choice(list(spec["values"])),
}


def to_tune_space(space: dict[str, dict]) -> dict[str, Any]:
    """The declarative space as Tune domains, one per searched gan setting."""
    return {name: DISTRIBUTIONS[spec["type"]](spec) for name, spec in space.items()}


def paper_defaults(space: dict[str, dict]) -> dict[str, Any]:
    """The GanConfig defaults (the paper's settings) for the searched keys that lie inside the space."""
    defaults = dataclasses.asdict(GanConfig())
    point = {}
    for name, spec in space.items():
        value = defaults[name]
        inside = value in spec["values"] if spec["type"] == "choice" else spec["low"] <= value <= spec["high"]
        if inside:
            point[name] = value
    return point


def make_searcher(search: SearchConfig):
    """Optuna TPE, seeded, starting from the paper's defaults, at most `max_concurrent` trials at once."""
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch
    import optuna

    start = paper_defaults(search.space)
    searcher = OptunaSearch(metric=search.metric, mode=metric_mode(search.metric),
                            sampler=optuna.samplers.TPESampler(seed=search.seed),
                            points_to_evaluate=[start] if len(start) == len(search.space) else None)
    return ConcurrencyLimiter(searcher, max_concurrent=search.max_concurrent)


def longest_trial(space: dict[str, dict], epochs: int) -> int:
    """The most epochs any trial can run: the top of a searched `epochs`, else the config's."""
    spec = space.get("epochs")
    if spec is None:
        return epochs
    return max(spec["values"]) if spec["type"] == "choice" else int(spec["high"])


def make_scheduler(search: SearchConfig, epochs: int):
    """ASHA on `epoch`: prunes hopeless trials (Ray's OptunaSearch prunes nothing itself).

    `max_t` lies one past the longest trial, so ASHA never stops a trial at its natural end:
    a trial that ends by itself shuts its Ray Train run down cleanly, while one Tune stops is
    killed and leaves its placement group for Train's cleaner to remove.
    """
    from ray.tune.schedulers import ASHAScheduler

    longest = longest_trial(search.space, epochs)
    return ASHAScheduler(time_attr="epoch", metric=search.metric, mode=metric_mode(search.metric),
                         max_t=longest + 1, grace_period=max(1, min(search.grace_epochs, longest)))
