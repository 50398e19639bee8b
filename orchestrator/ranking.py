"""Which GAN checkpoint is best: one rule for Ray Train's checkpoint keeping, the MLflow record of each
trial, the ranking table, model registration, the report and stage 2.

The rule: by the ranking metric (`search.metric`, on the validation split; its direction from
`trainables.metrics.EVAL_METRICS`). An evaluation ranks only with a value for the metric and a
checkpoint, and never once its trial has diverged. Among equal scores the later evaluation wins,
which is the one Ray Train's checkpoint manager keeps (`CheckpointConfig` with the same metric and
order), so the checkpoint ranked best is always one that Train kept. Among trials with equal best
scores, the trial id decides (ascending), so a table ranks the same way every time it is built.
"""
from __future__ import annotations

import pandas as pd

from trainables.metrics import EVAL_METRICS


def metric_mode(metric: str) -> str:
    """"max" or "min": which way `metric` is better, from the one table of evaluation metrics."""
    return EVAL_METRICS[metric].mode


def rank_evaluations(history: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One trial's evaluations that can rank (rows with `metric`, `checkpoint_path` and, where reported,
    `diverged`), best first."""
    if metric not in history or "checkpoint_path" not in history:
        return history.iloc[0:0]
    usable = history.dropna(subset=[metric, "checkpoint_path"])
    if "diverged" in usable:
        usable = usable[usable["diverged"].fillna(0) != 1]
    order = pd.Series(range(len(usable)), index=usable.index)  # report order: later wins a tie
    ranked = usable.assign(_later=order).sort_values([metric, "_later"], kind="stable",
                                                     ascending=[metric_mode(metric) == "min", False])
    return ranked.drop(columns="_later")


def best_evaluation(history: pd.DataFrame, metric: str) -> pd.Series | None:
    """A trial's best evaluation (its checkpoint is the trial's best), None when none can rank."""
    ranked = rank_evaluations(history, metric)
    return ranked.iloc[0] if len(ranked) else None


def rank_trials(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Rows of one best checkpoint per trial (with `trial_id`), best first."""
    return table.sort_values([metric, "trial_id"], ascending=[metric_mode(metric) == "min", True],
                             kind="stable").reset_index(drop=True)


def best_per_architecture(table: pd.DataFrame, per_arch: int = 1) -> pd.DataFrame:
    """The best `per_arch` checkpoints of each architecture from a table ranked by `rank_trials`: what is
    registered (one per architecture), reported (the paper's Tables 1-2) and sampled by stage 2."""
    return table.groupby("arch", sort=False).head(per_arch).reset_index(drop=True)
