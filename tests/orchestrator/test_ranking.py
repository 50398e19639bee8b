"""One rule picks the best GAN checkpoint: by the ranking metric's direction, never a diverged or
unscored evaluation, the later evaluation on a tie (the one Ray Train keeps), trial ids on a tie between trials."""
from __future__ import annotations

import math

import pandas as pd

from orchestrator.ranking import best_evaluation, best_per_architecture, rank_evaluations, rank_trials


def history(scores: list[float], diverged: list[int] | None = None, metric: str = "fid") -> pd.DataFrame:
    return pd.DataFrame({"epoch": range(1, len(scores) + 1), metric: scores,
                         "checkpoint_path": [f"ckpt-{i}" for i in range(1, len(scores) + 1)],
                         "diverged": diverged or [0] * len(scores)})


def test_the_metric_says_which_way_is_better():
    assert best_evaluation(history([300.0, 120.0, 180.0]), "fid")["epoch"] == 2  # FID: lower is better
    assert best_evaluation(history([0.2, 0.5, 0.4], metric="ssim"), "ssim")["epoch"] == 2  # SSIM: higher


def test_a_diverged_or_unscored_evaluation_never_ranks():
    assert best_evaluation(history([300.0, 5.0, 180.0], diverged=[0, 1, 0]), "fid")["epoch"] == 3
    scored = history([300.0, math.nan, 180.0])
    scored.loc[2, "checkpoint_path"] = None  # reported without a checkpoint
    assert best_evaluation(scored, "fid")["epoch"] == 1
    assert best_evaluation(history([1.0], diverged=[1]), "fid") is None
    assert best_evaluation(pd.DataFrame({"epoch": [1]}), "fid") is None  # never evaluated


def test_on_a_tie_the_later_evaluation_wins_as_ray_train_keeps_it():
    assert best_evaluation(history([150.0, 120.0, 120.0, 200.0]), "fid")["epoch"] == 3
    assert list(rank_evaluations(history([120.0, 120.0, 130.0]), "fid").epoch) == [2, 1, 3]


def test_trials_rank_by_their_best_and_tied_trials_by_id_every_time():
    table = pd.DataFrame({"trial_id": ["c", "a", "b", "d"], "arch": ["cgan", "dcgan", "cgan", "dcgan"],
                          "fid": [150.0, 150.0, 90.0, 200.0]})
    ranked = rank_trials(table, "fid")
    assert list(ranked.trial_id) == ["b", "a", "c", "d"]
    assert list(rank_trials(table.iloc[::-1], "fid").trial_id) == list(ranked.trial_id)
    assert list(best_per_architecture(ranked).trial_id) == ["b", "a"]
    assert list(best_per_architecture(ranked, per_arch=2).trial_id) == ["b", "a", "c", "d"]
