"""The classifier recipe: honest test figures, repeatable, and synthetic images only where they belong."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, recall_score, roc_auc_score

from trainables.classify.loop import balanced_take, fit_classifier, training_set
from trainables.cohort import TEST, TRAIN


def recipe(**changes) -> dict:
    return {"classifier": "mobilenet", "arm": "real", "ratio": 0.5, "seed": 0, "epochs": 3, "batch_size": 16,
            "lr": 1e-3, "weight_decay": 1e-4, "patience": 2, **changes}


@pytest.fixture(scope="module")
def synthetic(smoke_arrays) -> dict:
    """A stand-in synthetic set: marked images (all pixels 0.123) so they can be recognised anywhere."""
    size = smoke_arrays["images"].shape[-1]
    return {"images": np.full((80, size, size), 0.123, np.float32), "labels": np.tile([0, 1], 40)}


def test_test_metrics_match_scikit_learn_on_the_same_predictions(smoke_arrays):
    reports = []
    final = fit_classifier(recipe(), smoke_arrays, None, reports.append)
    y, scores = np.array(final["test_labels"]), np.array(final["test_scores"])
    predicted = (scores >= final["threshold"]).astype(int)
    assert final["test_accuracy"] == pytest.approx(accuracy_score(y, predicted))
    assert final["test_sensitivity"] == pytest.approx(recall_score(y, predicted, pos_label=1))
    assert final["test_specificity"] == pytest.approx(recall_score(y, predicted, pos_label=0))
    assert final["test_roc_auc"] == pytest.approx(roc_auc_score(y, scores))
    assert final["test_confusion_matrix"] == confusion_matrix(y, predicted).tolist()
    assert len(y) == int((smoke_arrays["split"] == TEST).sum())
    # one report per epoch run, then the final one
    assert [r["epoch"] for r in reports[:-1]] == list(range(1, len(reports)))
    assert reports[-1] is final and final["init"] == "random"


def test_same_seed_same_numbers_on_cpu(smoke_arrays):
    first = fit_classifier(recipe(arm="classic"), smoke_arrays, None, lambda m: None)
    second = fit_classifier(recipe(arm="classic"), smoke_arrays, None, lambda m: None)
    assert first == second


def test_synthetic_images_enter_training_only_at_the_asked_ratio(smoke_arrays, synthetic):
    n_train = int((smoke_arrays["split"] == TRAIN).sum())
    x, y, source = training_set(recipe(arm="synthetic", ratio=0.5), smoke_arrays, synthetic)
    marked = (x == np.float32(0.123)).flatten(1).all(1)
    assert int(marked.sum()) == int(source.sum()) == round(0.5 * n_train)
    assert abs(int(y[source == 1].sum()) * 2 - int(source.sum())) <= 1  # half of each label
    final = fit_classifier(recipe(arm="synthetic", epochs=1), smoke_arrays, synthetic, lambda m: None)
    assert final["synthetic_images"] == round(0.5 * n_train)
    # the test set is the real test split, whatever the arm
    assert len(final["test_labels"]) == int((smoke_arrays["split"] == TEST).sum())


def test_train_synthetic_test_real_uses_no_real_training_image(smoke_arrays, synthetic):
    x, _, source = training_set(recipe(arm="tstr"), smoke_arrays, synthetic)
    assert bool(source.all()) and bool((x == np.float32(0.123)).all())
    assert len(x) == len(synthetic["labels"])  # the whole set, whatever the real split's size


def test_a_set_too_small_for_the_ratio_is_an_error(synthetic):
    with pytest.raises(ValueError, match="needs 100"):
        balanced_take(synthetic, 100)
