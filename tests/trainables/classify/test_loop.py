"""The classifier recipe: honest test figures, repeatable, and synthetic images only where they belong."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from sklearn.metrics import accuracy_score, confusion_matrix, recall_score, roc_auc_score

from trainables.classify.arms import (
    HELD_OUT_REAL,
    SYNTHETIC,
    Arm,
    balanced_take,
    oracle_patients,
    patient_labels,
    real_patients,
    training_set,
)
from trainables.classify.loop import batch_indices, better_candidate, fit_classifier, snapshot
from trainables.cohort import HELD_OUT, TEST, TRAIN


def recipe(**changes) -> dict:
    return {"classifier": "mobilenet", "arm": "real", "set": "stand-in", "ratio": 0.5, "seed": 0, "epochs": 3,
            "batch_size": 16, "lr": 1e-3, "weight_decay": 1e-4, "patience": 2, **changes}


def arm_set(data: dict, synthetic: dict | None, **changes):
    """The training set of the arm in `recipe(**changes)`."""
    settings = recipe(**changes)
    return training_set(Arm.of(settings), data, synthetic, settings["seed"])


@pytest.fixture(scope="module")
def synthetic(smoke_arrays) -> dict:
    """A stand-in synthetic set: marked images (all pixels 0.123) so they can be recognised anywhere."""
    size = smoke_arrays["images"].shape[-1]
    return {"images": np.full((80, size, size), 0.123, np.float32), "labels": np.tile([0, 1], 40)}


def test_test_metrics_match_scikit_learn_on_the_same_predictions(smoke_arrays):
    reports = []
    final = fit_classifier(recipe(), smoke_arrays, None, reports.append)
    predictions = final["predictions"]
    y, scores = np.array(predictions["labels"]), np.array(predictions["scores"])
    predicted = (scores >= final["threshold"]).astype(int)
    assert final["test_accuracy"] == pytest.approx(accuracy_score(y, predicted))
    assert final["test_sensitivity"] == pytest.approx(recall_score(y, predicted, pos_label=1))
    assert final["test_specificity"] == pytest.approx(recall_score(y, predicted, pos_label=0))
    assert final["test_roc_auc"] == pytest.approx(roc_auc_score(y, scores))
    assert predictions["confusion_matrix"] == confusion_matrix(y, predicted).tolist()
    assert len(y) == int((smoke_arrays["split"] == TEST).sum())
    # one report per epoch run, then the final one
    assert [r["epoch"] for r in reports[:-1]] == list(range(1, len(reports)))
    assert reports[-1] is final and final["init"] == "random"


def test_the_bf16_path_runs_on_the_cpu_and_gives_the_fp32_model_to_bf16_rounding(smoke_arrays):
    """What a GPU trial runs (bf16 autocast), here on the CPU: a dtype error shows up in CI, not on a GPU. The
    same seed in fp32 gives nearly the same scores: different (bf16 did run), within bf16's rounding carried
    through a pass of training."""
    # resnet: after one pass mobilenet's scores are nearly constant, and bf16 moves them all by one shift
    bf16 = fit_classifier(recipe(classifier="resnet", bf16=True, epochs=1, gpus=0), smoke_arrays, None, lambda m: None)
    fp32 = fit_classifier(recipe(classifier="resnet", epochs=1, gpus=0), smoke_arrays, None, lambda m: None)
    assert bf16["device"] == "cpu" and all(isinstance(v, float) for v in bf16["predictions"]["scores"])
    gap = np.abs(np.subtract(bf16["predictions"]["scores"], fp32["predictions"]["scores"]))
    assert 0 < gap.max() and gap.mean() < 0.02


def test_inputs_are_standardised_on_the_real_training_split(smoke_arrays):
    """The same images on another scale (x * 7 + 3) give the same model: the first layer standardises
    with the real training split's mean and std, so no classifier depends on the cohort's intensity units."""
    rescaled = {**smoke_arrays, "images": np.asarray(smoke_arrays["images"], np.float32) * 7 + 3}
    first = fit_classifier(recipe(epochs=1), smoke_arrays, None, lambda m: None)
    second = fit_classifier(recipe(epochs=1), rescaled, None, lambda m: None)
    # equal up to float32 rounding carried through a pass of training (unstandardised, they differ by far more)
    assert np.abs(np.subtract(first["predictions"]["scores"], second["predictions"]["scores"])).max() < 0.01


def test_a_classifier_with_its_own_input_side_sees_every_split_at_that_side(smoke_arrays, monkeypatch):
    """`input_px` resizes inside the model: the classifier's first layer gets that side in training and in
    scoring, and the cohort's own images are left as they are."""
    import trainables.classify.loop as loop

    seen = []
    build = loop.build_classifier

    def watched(name, weights=""):
        built = build(name, weights)
        built.model.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape[-2:])))
        return built

    monkeypatch.setattr(loop, "build_classifier", watched)
    side = smoke_arrays["images"].shape[-1]
    fit_classifier(recipe(epochs=1, input_px=2 * side), smoke_arrays, None, lambda m: None)
    assert set(seen) == {(2 * side, 2 * side)} and len(seen) > 3  # training batches, validation and test
    seen.clear()
    fit_classifier(recipe(epochs=1), smoke_arrays, None, lambda m: None)
    assert set(seen) == {(side, side)}


def test_same_seed_same_numbers_on_cpu(smoke_arrays):
    first = fit_classifier(recipe(arm="classic"), smoke_arrays, None, lambda m: None)
    second = fit_classifier(recipe(arm="classic"), smoke_arrays, None, lambda m: None)
    assert first == second


def test_synthetic_images_enter_training_only_at_the_asked_ratio(smoke_arrays, synthetic):
    n_train = int((smoke_arrays["split"] == TRAIN).sum())
    x, y, source = arm_set(smoke_arrays, synthetic, arm="synthetic", ratio=0.5)
    marked = (x == np.float32(0.123)).flatten(1).all(1)
    assert int(marked.sum()) == int(source.sum()) == round(0.5 * n_train)
    assert abs(int(y[source == 1].sum()) * 2 - int(source.sum())) <= 1  # half of each label
    final = fit_classifier(recipe(arm="synthetic", epochs=1), smoke_arrays, synthetic, lambda m: None)
    assert final["synthetic_images"] == round(0.5 * n_train)
    # the test set is the real test split, whatever the arm
    assert len(final["predictions"]["labels"]) == int((smoke_arrays["split"] == TEST).sum())


def test_train_synthetic_test_real_uses_no_real_training_image(smoke_arrays, synthetic):
    x, _, source = arm_set(smoke_arrays, synthetic, arm="tstr")
    assert bool(source.all()) and bool((x == np.float32(0.123)).all())
    assert len(x) == len(synthetic["labels"])  # the whole set, whatever the real split's size


def test_a_set_too_small_for_the_ratio_is_an_error(synthetic):
    with pytest.raises(ValueError, match="needs 100"):
        balanced_take(synthetic, 100, "synthetic")


def test_every_arm_takes_the_same_optimiser_steps_whatever_its_training_set(smoke_arrays, synthetic):
    n_train = int((smoke_arrays["split"] == TRAIN).sum())
    runs = {arm: fit_classifier(recipe(arm=arm, ratio=1.0, epochs=2, patience=5), smoke_arrays, synthetic,
                                lambda m: None) for arm in ("real", "synthetic", "tstr")}
    assert runs["synthetic"]["train_images"] == 2 * n_train
    steps = 2 * -(-n_train // 16)  # two passes over the real split's batches of 16
    assert {r["steps"] for r in runs.values()} == {steps}
    assert {r["samples_seen"] for r in runs.values()} == {steps * 16}


@pytest.fixture(scope="module")
def scarce(smoke_arrays) -> dict:
    """The smoke cohort with every other training patient of each label held out (as data.train_fraction
    0.5 would: stratified, so both labels stay on both sides whatever the patients' salted codes order)."""
    split, patients, labels = smoke_arrays["split"].copy(), smoke_arrays["patients"], smoke_arrays["labels"]
    for label in (0, 1):
        of_label = np.unique(patients[(split == TRAIN) & (labels == label)])
        split[(split == TRAIN) & np.isin(patients, of_label[::2])] = HELD_OUT
    return {**smoke_arrays, "split": split}


def test_an_oracle_rung_adds_whole_held_out_patients_of_each_label_and_a_larger_rung_holds_a_smaller_ones(
        scarce, synthetic):
    split, patients, labels = scarce["split"], scarce["patients"], scarce["labels"]
    n_train = int((split == TRAIN).sum())
    x, y, source = arm_set(scarce, None, arm="real")
    assert len(x) == n_train and not bool((source != 0).any())
    train_per_label = [len(np.unique(patients[(split == TRAIN) & (labels == label)])) for label in (0, 1)]
    half = oracle_patients(scarce, 0.5, seed=0)
    assert sorted(patient_labels(patients, labels)[p] for p in half).count(1) == round(0.5 * train_per_label[1])
    assert set(half) <= set(patients[split == HELD_OUT]) and set(half) <= set(oracle_patients(scarce, 1.0, seed=0))
    x, y, source = arm_set(scarce, None, arm="oracle", ratio=0.5)
    added = x[source == HELD_OUT_REAL, 0].numpy()
    assert len(added) == int(np.isin(patients, half).sum())  # every slice of the chosen patients, nothing else
    assert real_patients(Arm("oracle", ratio=0.5), scarce, seed=0) == sum(train_per_label) + len(half)
    with pytest.raises(ValueError, match="oracle rung 3x needs"):
        oracle_patients(scarce, 3.0, seed=0)
    x, _, source = arm_set(scarce, synthetic, arm="synthetic", ratio=0.5)
    assert int((source == SYNTHETIC).sum()) == round(0.5 * n_train)


def test_the_permuted_arm_has_the_synthetic_images_with_their_labels_shuffled(smoke_arrays):
    size = smoke_arrays["images"].shape[-1]
    labels = np.tile([0, 1], 40)
    marked = {"images": labels[:, None, None] * np.ones((80, size, size), np.float32), "labels": labels}
    x, y, source = arm_set(smoke_arrays, marked, arm="permuted", ratio=0.5)
    image_says = x[source == SYNTHETIC].flatten(1)[:, 0].long()  # each image shows its true label
    assert 0.3 < float((image_says == y[source == SYNTHETIC]).float().mean()) < 0.7
    assert sorted(image_says.tolist()) == sorted(y[source == SYNTHETIC].tolist())  # same label counts


def test_no_batch_holds_a_single_image_which_batchnorm_cannot_train_on():
    rng = torch.Generator().manual_seed(0)
    batches = batch_indices(33, 32, rng)
    sizes = [len(next(batches)) for _ in range(6)]
    assert sizes == [32] * 6  # the 33rd image of each pass waits for the next, reshuffled one
    batches = batch_indices(34, 32, rng)
    assert [len(next(batches)) for _ in range(4)] == [32, 2, 32, 2]


def test_a_degenerate_round_is_never_kept_over_a_non_degenerate_one():
    kept = {"state": {}, "val_auc": 0.9, "degenerate": "constant validation scores"}
    assert better_candidate(0.6, "", kept)
    assert not better_candidate(0.45, "validation AUC 0.450 not above chance", {**kept, "degenerate": ""})
    assert better_candidate(0.95, "", {**kept, "degenerate": ""}) and not better_candidate(0.5, "", {**kept,
                                                                                                    "degenerate": ""})
    # keeping the final pass: any later non-degenerate pass replaces the kept one, a degenerate one never does
    assert better_candidate(0.5, "", {**kept, "degenerate": ""}, final=True)
    assert not better_candidate(0.45, "validation AUC 0.450 not above chance", {**kept, "degenerate": ""}, final=True)


def test_a_kept_state_is_a_copy_that_later_training_does_not_change_and_is_rewritten_in_place():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))
    kept = snapshot(model, None)
    first = {name: tensor.clone() for name, tensor in kept.items()}
    model(torch.randn(8, 1, 5, 5)).sum().backward()  # moves the batch-norm buffers
    with torch.no_grad():
        model[0].weight.add_(1.0)
    assert all(torch.equal(kept[name], first[name]) for name in first)
    assert snapshot(model, kept) is kept
    assert all(torch.equal(kept[name], tensor) for name, tensor in model.state_dict().items())
    assert not torch.equal(kept["1.running_mean"], first["1.running_mean"])


def test_keeping_the_final_pass_runs_the_whole_schedule_and_ends_with_its_last_pass(smoke_arrays):
    reports = []
    final = fit_classifier(recipe(classifier="resnet", keep="final", epochs=4, patience=1), smoke_arrays, None,
                           reports.append)
    passes = reports[:-1]
    assert [r["epoch"] for r in passes] == [1, 2, 3, 4]  # patience 1 stops nothing
    last_sound = max(r["epoch"] for r in passes if not r["val_degenerate"]) if any(
        not r["val_degenerate"] for r in passes) else 1
    assert final["best_epoch"] == last_sound


def test_keeping_the_final_pass_validates_about_ten_evenly_spaced_passes_and_the_last(smoke_arrays):
    reports = []
    fit_classifier(recipe(classifier="mobilenet", keep="final", epochs=25, patience=1), smoke_arrays, None,
                   reports.append)
    assert [r["epoch"] for r in reports[:-1]] == [3, 6, 9, 12, 15, 18, 21, 24, 25]
    assert reports[-1]["steps"] == reports[-2]["steps"] == 25 * reports[0]["steps"] // 3  # every pass trained
