"""Paired comparisons of two classifiers scored on the same real test cases."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from trainables.metrics import delong_test, mcnemar_exact


def test_delong_aucs_match_scikit_learn_and_identical_models_do_not_differ():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    a, b = y + rng.normal(0, 1.0, 200), y + rng.normal(0, 1.5, 200)
    result = delong_test(y, a, b)
    assert result["auc_a"] == pytest.approx(roc_auc_score(y, a))
    assert result["auc_b"] == pytest.approx(roc_auc_score(y, b))
    assert delong_test(y, a, a)["p"] == 1.0
    assert delong_test(y, a, b)["p"] == pytest.approx(delong_test(y, b, a)["p"])


def test_delong_separates_a_good_model_from_noise_but_not_two_draws_of_the_same_quality():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    good, noise = y + rng.normal(0, 0.5, 300), rng.normal(0, 1, 300)
    assert delong_test(y, good, noise)["p"] < 1e-6
    p_same = [delong_test(y, y + rng.normal(0, 1, 300), y + rng.normal(0, 1, 300))["p"] for _ in range(200)]
    # under the null the p-value is uniform: about 5 % below 0.05
    assert 0.01 <= np.mean(np.array(p_same) < 0.05) <= 0.12


def test_mcnemar_counts_only_the_discordant_cases():
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    a = np.array([1, 1, 1, 1, 0, 0, 0, 1])  # 7 right
    b = np.array([0, 0, 1, 1, 0, 0, 0, 1])  # 5 right; b is never right where a is wrong
    result = mcnemar_exact(y, a, b)
    assert (result["only_a_right"], result["only_b_right"]) == (2, 0)
    assert result["p"] == pytest.approx(0.5)  # two-sided exact binomial, 2 of 2
    assert mcnemar_exact(y, a, a)["p"] == 1.0
