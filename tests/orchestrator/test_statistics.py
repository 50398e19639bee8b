"""Stage-3 statistics: patient-level bootstrap, paired differences, Holm, degenerate arms, DeLong.

Worked cases with known answers: metrics equal scikit-learn's, copies of a patient's slices add
no evidence, a constant-score classifier never comes out significant, p-values under the null of
two identical arms are uniform, and a planted difference is found.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from sklearn.metrics import accuracy_score, recall_score, roc_auc_score

from orchestrator.statistics import (
    Resampling,
    Cases,
    delong_test,
    estimate,
    holm,
    metric_draws,
    point_values,
    utility,
    weighted_metrics,
)

PATIENTS, SLICES = 40, 3


def cohort(rng):
    labels = np.repeat(rng.permutation(np.arange(PATIENTS) % 2), SLICES)
    return labels, np.repeat(np.arange(PATIENTS), SLICES)


def trials(rng, labels, patients, strength: dict[str, float], seeds=3, seed_sd=0.0) -> pd.DataFrame:
    """One classifier's arms; each slice's score carries the patient's own effect (slices of one
    patient are alike) plus the arm's label signal `strength` (varying per seed by `seed_sd`)."""
    patient_effect = rng.normal(0, 1, PATIENTS)[patients]
    rows = []
    for arm_id, beta in strength.items():
        for seed in range(seeds):
            b = beta + rng.normal(0, seed_sd)
            logit = b * (labels - 0.5) * 2 + patient_effect + rng.normal(0, 1, len(labels))
            rows.append({"classifier": "resnet", "arm_id": arm_id, "seed": seed, "threshold": 0.5,
                         "test_scores": (1 / (1 + np.exp(-logit))).tolist(), "test_labels": labels.tolist(),
                         "test_patients": patients.tolist(), "degenerate": ""})
    return pd.DataFrame(rows)


def test_metrics_on_unit_weights_equal_scikit_learn():
    rng = np.random.default_rng(0)
    labels, patients = cohort(rng)
    scores = labels + rng.normal(0, 1, len(labels))
    got = weighted_metrics(Cases.of(labels, patients), scores, 0.5, np.ones((1, PATIENTS)))
    predicted = scores >= 0.5
    assert got["roc_auc"][0] == pytest.approx(roc_auc_score(labels, scores))
    assert got["accuracy"][0] == pytest.approx(accuracy_score(labels, predicted))
    assert got["sensitivity"][0] == pytest.approx(recall_score(labels, predicted))
    assert got["specificity"][0] == pytest.approx(recall_score(labels, predicted, pos_label=0))


def test_a_drawn_patient_counts_with_all_its_slices_as_often_as_drawn():
    rng = np.random.default_rng(1)
    labels, patients = cohort(rng)
    scores = labels + rng.normal(0, 1, len(labels))
    weights = np.zeros((1, PATIENTS))
    weights[0, [0, 1, 5, 6]] = [1, 2, 1, 3]
    keep = np.concatenate([np.flatnonzero(patients == p).repeat(int(w)) for p, w in enumerate(weights[0]) if w])
    assert weighted_metrics(Cases.of(labels, patients), scores, 0.5, weights)["roc_auc"][0] == pytest.approx(
        roc_auc_score(labels[keep], scores[keep]))


def test_copies_of_a_patients_slices_add_no_evidence():
    """The interval is by patient: three copies of every slice give exactly the same interval (a
    slice-level bootstrap would shrink it by about sqrt(3))."""
    rng = np.random.default_rng(2)
    labels, patients = cohort(rng)
    scores = (labels + rng.normal(0, 1.5, len(labels)))[None]
    intervals = []
    for copies in (1, 3):
        cases = Cases.of(labels.repeat(copies), patients.repeat(copies))
        resampling = Resampling.draw(cases, n_seeds=1, draws=500, seed=0)
        s = scores.repeat(copies, axis=1)
        drawn = metric_draws(cases, s, np.array([0.5]), resampling)["roc_auc"]
        e = estimate(point_values(cases, s, np.array([0.5]))["roc_auc"], drawn, resampling)
        intervals.append((e.low, e.high))
    assert intervals[0] == pytest.approx(intervals[1])


def test_a_constant_score_classifier_is_degenerate_and_never_significant():
    rng = np.random.default_rng(3)
    labels, patients = cohort(rng)
    results = trials(rng, labels, patients, {"real": 1.5})
    constant = results.copy()
    constant["arm_id"] = "synthetic:x:1"
    # the smoke sweep's case: scores that differ in the fifth decimal, no flag from the trial
    constant["test_scores"] = [(0.4779 + 1e-5 * rng.random(len(labels))).tolist() for _ in range(len(constant))]
    summary = utility(pd.concat([results, constant], ignore_index=True), min_patients_per_label=10)
    arm = summary.arms[1]
    assert "constant test scores" in arm.degenerate
    assert math.isnan(arm.deltas["roc_auc"].p) and math.isnan(arm.holm_p) and math.isnan(arm.delong_p)
    assert summary.family_size() == 0


def test_p_values_under_the_null_of_two_identical_arms_are_uniform():
    rng = np.random.default_rng(4)
    p_values = []
    for i in range(150):
        labels, patients = cohort(rng)
        summary = utility(trials(rng, labels, patients, {"real": 1.0, "synthetic:x:1": 1.0}, seed_sd=0.5),
                          min_patients_per_label=10, draws=500, seed=i)
        p_values.append(summary.arms[1].deltas["roc_auc"].p)
    assert 0.01 <= np.mean(np.array(p_values) < 0.05) <= 0.10
    assert scipy.stats.kstest(p_values, "uniform").pvalue > 0.001


def test_a_planted_difference_is_found_and_survives_holm():
    rng = np.random.default_rng(5)
    labels, patients = cohort(rng)
    summary = utility(trials(rng, labels, patients, {"real": 0.5, "synthetic:x:1": 2.0, "classic": 0.5}),
                      min_patients_per_label=10)
    by_arm = {a.arm_id: a for a in summary.arms}
    planted = by_arm["synthetic:x:1"]
    assert planted.deltas["roc_auc"].low > 0 and planted.holm_p < 0.05 and planted.delong_p < 0.05
    assert by_arm["classic"].deltas["roc_auc"].low < 0 < by_arm["classic"].deltas["roc_auc"].high
    assert summary.family_size() == 2


def test_a_test_split_with_few_patients_per_label_gets_figures_but_no_inference():
    rng = np.random.default_rng(6)
    labels, patients = cohort(rng)
    small = patients < 8  # 4 benign, 4 malignant patients
    results = trials(rng, labels[small], patients[small], {"real": 0.5, "synthetic:x:1": 3.0})
    summary = utility(results, min_patients_per_label=10)
    assert "4 benign and 4 malignant patients, fewer than 10 per label" in summary.blocker
    arm = summary.arms[1]
    assert not math.isnan(arm.deltas["roc_auc"].value) and math.isnan(arm.deltas["roc_auc"].low)
    assert math.isnan(arm.holm_p) and summary.family_size() == 0


def test_holm_adjusts_the_worked_example_and_ignores_missing_values():
    adjusted = holm([0.01, 0.04, 0.03, 0.005, math.nan])
    assert adjusted[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02]) and math.isnan(adjusted[4])


def test_delong_aucs_match_scikit_learn_and_identical_models_do_not_differ():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    a, b = y + rng.normal(0, 1.0, 200), y + rng.normal(0, 1.5, 200)
    result = delong_test(y, a, b)
    assert result["auc_a"] == pytest.approx(roc_auc_score(y, a))
    assert result["auc_b"] == pytest.approx(roc_auc_score(y, b))
    assert delong_test(y, a, a)["p"] == 1.0
    assert delong_test(y, a, b)["p"] == pytest.approx(delong_test(y, b, a)["p"])


def test_delong_is_undefined_not_zero_when_the_variance_vanishes():
    y = np.array([0, 0, 0, 1, 1, 1])
    perfect, constant = y.astype(float), np.full(6, 0.4779)
    assert math.isnan(delong_test(y, perfect, constant)["p"])


def test_delong_separates_a_good_model_from_noise_but_not_two_draws_of_the_same_quality():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    good, noise = y + rng.normal(0, 0.5, 300), rng.normal(0, 1, 300)
    assert delong_test(y, good, noise)["p"] < 1e-6
    p_same = [delong_test(y, y + rng.normal(0, 1, 300), y + rng.normal(0, 1, 300))["p"] for _ in range(200)]
    assert 0.01 <= np.mean(np.array(p_same) < 0.05) <= 0.12
