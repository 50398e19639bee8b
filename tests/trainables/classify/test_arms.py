"""The arm registry: ids that read back, one rule for odd counts, and a new kind in one place."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from trainables.classify.arms import (
    ARM_KINDS,
    REAL,
    Arm,
    ArmKind,
    balanced_take,
    label_counts,
    real_split,
    register_arm_kind,
    training_set,
)
from trainables.classify.loop import fit_classifier
from trainables.cohort import TRAIN

EVERY_KIND = [Arm("real"), Arm("classic"), Arm("synthetic", "cgan-1a2b", 0.5), Arm("permuted", "dcgan-9", 2.0),
              Arm("oracle", ratio=4.0), Arm("tstr", "cgan-1a2b")]


def test_every_kind_has_an_example_and_each_id_reads_back_as_the_same_arm():
    assert {arm.kind for arm in EVERY_KIND} == set(ARM_KINDS)
    for arm in EVERY_KIND:
        assert Arm.parse(arm.id) == arm and Arm.of(arm.settings()) == arm
    assert [arm.id for arm in EVERY_KIND] == ["real", "classic", "synthetic:cgan-1a2b:0.5", "permuted:dcgan-9:2",
                                              "oracle:4", "tstr:cgan-1a2b"]
    # as people read them: run names, and the context of each arm's dataset inputs in MLflow
    assert [arm.title for arm in EVERY_KIND] == ["real", "classic", "synthetic cgan-1a2b 0.5x", "permuted dcgan-9 2x",
                                                 "oracle 4x", "tstr cgan-1a2b"]
    assert [arm.trains_on for arm in EVERY_KIND[2:5]] == [
        "training split + synthetic 0.5x", "training split + synthetic 2x, labels permuted",
        "training split + held-out patients 4x"]


@pytest.mark.parametrize("arm_id", ["", "realistic", "oracle", "synthetic:cgan-1", "real:1", "tstr:a:1", "oracle:0"])
def test_what_is_not_an_arm_id_is_refused(arm_id):
    with pytest.raises(ValueError):
        Arm.parse(arm_id)


def test_a_kind_asks_for_exactly_the_set_and_ratio_it_uses():
    with pytest.raises(ValueError, match="needs synthetic set"):
        Arm("synthetic", ratio=1.0)
    with pytest.raises(ValueError, match="takes no ratio"):
        Arm("classic", ratio=1.0)
    assert Arm.of({"arm": "real", "set": "", "ratio": 0.5}) == Arm("real")  # trial settings carry every field


@pytest.mark.parametrize("total", [0, 1, 22, 23, 24, 25])
def test_an_odd_image_goes_to_one_label_by_one_rule_that_arms_and_sets_share(total):
    counts = label_counts(total)
    assert sum(counts.values()) == total and counts[1] - counts[0] == total % 2
    assert label_counts(total, 0.25)[1] == int(total * 0.25 + 0.5)


@pytest.mark.parametrize("pool_size", [22, 23])
@pytest.mark.parametrize("count", [10, 11, 21, 22])
def test_an_arm_takes_odd_and_even_counts_from_a_set_made_by_the_same_rule(pool_size, count):
    """Stage 2 makes its sets with `label_counts`, so any count up to the set's size can be taken: the
    bug was a set of 23 (12 malignant) asked for 12 benign."""
    wanted = label_counts(pool_size)
    labels = np.array([0] * wanted[0] + [1] * wanted[1])[np.random.default_rng(count).permutation(pool_size)]
    pool = {"images": np.arange(pool_size, dtype=np.float32)[:, None, None] * np.ones((1, 4, 4), np.float32),
            "labels": labels}
    images, taken = balanced_take(pool, count, "synthetic")
    assert len(taken) == count and int(taken.sum()) == label_counts(count)[1]
    first = images[:, 0, 0, 0].long().numpy()  # the first images of each label, in the set's order
    for label in (0, 1):
        assert list(first[taken.numpy() == label]) == list(np.flatnonzero(labels == label)[:label_counts(count)[label]])


def test_a_whole_odd_set_is_taken_as_stage_2_made_it():
    """What failed on CT data: a set of 23 made with 12 malignant, asked for all 23."""
    labels = np.array([0, 1] * 11 + [1])
    images, taken = balanced_take({"images": np.zeros((23, 4, 4), np.float32), "labels": labels}, 23, "synthetic")
    assert len(taken) == 23 and int(taken.sum()) == 12


def test_a_new_arm_kind_registered_in_one_place_trains_end_to_end(smoke_arrays):
    """A kind that doubles the real split with its mirror images: a registry entry, then a trial like any other."""
    def mirrored(arm, data, synthetic, seed):
        x, y = real_split(data, TRAIN)
        return torch.cat([x, x.flip(-1)]), y.repeat(2), torch.full((2 * len(x),), REAL)

    register_arm_kind(ArmKind("mirrored", mirrored, uses_set=False, uses_ratio=False, role="classic augmentation",
                              colour="tab:olive", trains_on="training split and its mirror images"))
    try:
        arm = Arm.parse("mirrored")
        assert arm.title == "mirrored" and arm.trains_on == "training split and its mirror images"
        x, _, _ = training_set(arm, smoke_arrays, None, seed=0)
        assert len(x) == 2 * int((smoke_arrays["split"] == TRAIN).sum())
        final = fit_classifier({"classifier": "mobilenet", **arm.settings(), "seed": 0, "epochs": 1, "batch_size": 16,
                                "lr": 1e-3, "weight_decay": 1e-4, "patience": 1}, smoke_arrays, None, lambda m: None)
        assert final["train_images"] == len(x)
        with pytest.raises(ValueError, match="registered twice"):
            register_arm_kind(ARM_KINDS["mirrored"])
    finally:
        del ARM_KINDS["mirrored"]
