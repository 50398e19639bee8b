"""The phantom task is learnable but data-hungry: on the laptop preset's own cohort and split, a
product classifier trained with the laptop preset's own recipe scores clearly higher with all
training patients than with the preset's share of them, as the oracle's learning curve needs.

Stage 3's own training (`fit_classifier`, the laptop recipe with the classifier's own settings and
seeds) on (a) the scarce split (30 patients, the preset's `data.train_fraction`) and (b) the
preset's largest oracle rung (all 120 training patients), scored on the 60 test patients with the
sweep's own patient-level statistics. Measured (bench/results.md, the learning curve): ResNet-18
at 100 optimiser steps, 3 seeds, 0.74 against 0.93, gain +0.19 [0.09, 0.29]; YOLOv8 at 200 steps,
5 seeds, 0.80 against 0.92, gain +0.12 [0.04, 0.21].

What this does not show: VGG-16 and MobileNetV3 at their laptop budgets (12 and 40 steps, 3 seeds)
do not see the gain: the task takes them more steps or seeds than the default run can give on 2
cores (bench/results.md).
"""
from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor

import pandas as pd
import pytest

from bench.common import phantom_arrays
from bench.learning_curve import one_trial
from orchestrator.config import load_config
from orchestrator.statistics import utility
from trainables.classify.arms import Arm


@pytest.mark.slow
@pytest.mark.parametrize("classifier", ["resnet", "yolov8"])
def test_all_training_patients_beat_the_laptop_share_of_them_at_the_laptop_recipe(tmp_path, classifier):
    cfg = load_config("pet", "laptop", overrides=[f"data.cache_dir={tmp_path / 'cache'}"])
    arrays = phantom_arrays(cfg)
    recipe = {**cfg.classify.recipe(classifier), "classifier": classifier, "weights": ""}
    arms = (Arm("real"), Arm("oracle", ratio=cfg.classify.oracle_rungs[-1]))
    jobs = [({**recipe, **arm.settings(), "arm_id": arm.id, "seed": seed}, arrays)
            for seed in cfg.classify.seeds_of(classifier) for arm in arms]
    with ProcessPoolExecutor(2) as pool:  # one torch thread each, as a packed stage-3 trial has
        trials = pd.DataFrame(list(pool.map(one_trial, jobs)))
    summary = utility(trials, cfg.classify.min_test_patients_per_label)
    scarce, full = summary.arms
    gain = full.deltas["roc_auc"]
    print(f"{classifier} AUC on {summary.cases.describe()}: {trials.real_patients.min()} patients "
          f"{scarce.metrics['roc_auc'].interval()}, {trials.real_patients.max()} patients "
          f"{full.metrics['roc_auc'].interval()}; gain {gain.interval()}")
    assert not scarce.degenerate and not full.degenerate
    assert scarce.metrics["roc_auc"].value >= 0.6, "the scarce split should learn something"
    assert gain.value >= 0.10 and gain.low > 0, "more patients should clearly help"
    assert full.metrics["roc_auc"].value < 0.98, "the task should not be trivial"
