"""Stage 3's grid: which arms a config asks for, and the settings each trial gets."""
from __future__ import annotations

import numpy as np
import pytest

from orchestrator.config import ConfigError, load_config
from orchestrator.stages.classify import fit_ladder, grid_cells, grid_trials, ladder_note, recipe_note
from orchestrator.sweep import caveats
from trainables.classify.arms import oracle_patients
from trainables.classify.trial import trial_settings
from trainables.cohort import HELD_OUT, TRAIN


def test_controls_join_the_grid_oracle_only_when_training_patients_are_held_out():
    cfg = load_config("pet", "smoke", overrides=["classify.ratios=[0.5]", "classify.classifiers=[mobilenet]"])
    assert [c["arm_id"] for c in grid_cells(cfg, ["cgan-1"])] == [
        "real", "classic", "synthetic:cgan-1:0.5", "permuted:cgan-1:0.5", "tstr:cgan-1"]
    scarce = load_config("pet", "smoke", overrides=["classify.ratios=[0.5, 1.0]", "classify.classifiers=[mobilenet]",
                                                    "synth.size_factor=1.0", "data.train_fraction=0.5",
                                                    "classify.oracle_rungs=[0.5, 1]"])
    arms = [c["arm_id"] for c in grid_cells(scarce, ["cgan-1"])]
    assert arms[-3:-1] == ["oracle:0.5", "oracle:1"] and "permuted:cgan-1:1" in arms


def test_a_classifiers_own_settings_apply_to_it_only_and_must_name_a_trained_classifier_and_a_recipe_setting():
    own = "classify.per_classifier={vgg16: {epochs: 3, lr: 1e-4, input_px: 64}}"
    cfg = load_config("pet", "smoke", overrides=["classify.classifiers=[vgg16, resnet]", own])
    assert cfg.classify.recipe("vgg16")["lr"] == 1e-4 and cfg.classify.recipe("resnet")["lr"] == cfg.classify.lr
    config = {"cell": {"classifier": "vgg16", "arm_id": "real"}, "epochs": 15, "lr": 1e-3, "weights": {},
              "per_classifier": {"vgg16": cfg.classify.own_settings("vgg16")}, "seed": 0}
    assert (trial_settings(config)["epochs"], trial_settings(config)["lr"]) == (3, 1e-4)
    resnet = trial_settings({**config, "cell": {"classifier": "resnet", "arm_id": "real"}})
    assert (resnet["epochs"], resnet["lr"]) == (15, 1e-3)
    assert "vgg16: 3 passes, images at 64 px, lr 0.0001" in recipe_note(cfg.classify)
    assert "images at the cohort's size" in recipe_note(cfg.classify).split("vgg16:")[0]  # every other classifier's
    with pytest.raises(ConfigError, match=r"per_classifier names \['vgg16'\]"):
        load_config("pet", "smoke", overrides=["classify.per_classifier={vgg16: {epochs: 3}}"])
    with pytest.raises(ConfigError, match=r"per_classifier.mobilenet sets \['classifiers'\]"):
        load_config("pet", "smoke", overrides=["classify.per_classifier={mobilenet: {classifiers: []}}"])
    with pytest.raises(ConfigError, match=r"per_classifier.mobilenet.epochs must be an integer"):
        load_config("pet", "smoke", overrides=["classify.per_classifier={mobilenet: {epochs: many}}"])


def test_a_classifier_with_seeds_of_its_own_trains_each_of_its_arms_at_each_of_them():
    cfg = load_config("pet", "smoke", overrides=["classify.classifiers=[yolov8, resnet]", "classify.seeds=[0, 1]",
                                                 "classify.per_classifier={yolov8: {seeds: [0, 1, 2, 3], epochs: 5}}"])
    trials = grid_trials(cfg, ["cgan-1"])
    seeds = {(t["classifier"], t["arm_id"]): [u["seed"] for u in trials if u["classifier"] == t["classifier"]
                                              and u["arm_id"] == t["arm_id"]] for t in trials}
    assert all(s == ([0, 1, 2, 3] if classifier == "yolov8" else [0, 1]) for (classifier, _), s in seeds.items())
    assert list(seeds) == [(c["classifier"], c["arm_id"]) for c in grid_cells(cfg, ["cgan-1"])]  # TSTR too
    assert cfg.classify.own_settings("yolov8") == {"epochs": 5}  # seeds are the grid's, not the recipe's
    assert "yolov8: 5 passes, 4 seeds" in recipe_note(cfg.classify) and "2 seeds" in recipe_note(cfg.classify)
    every = load_config("pet", "smoke", overrides=["classify.classifiers=[yolov8]",
                                                   "classify.per_classifier={yolov8: {epochs: 5}}"])
    assert "every other classifier" not in recipe_note(every.classify)  # no classifier runs the shared recipe
    for seeds in ("[]", "[one]"):
        with pytest.raises(ConfigError, match=r"per_classifier.yolov8.seeds"):
            load_config("pet", "smoke", overrides=[f"classify.per_classifier={{yolov8: {{seeds: {seeds}}}}}"])


def test_oracle_rungs_the_held_out_pool_cannot_supply_are_dropped_before_training_with_the_numbers(smoke_arrays):
    """The smoke cohort with half its training patients held out: rung 1 fits (as many held-out patients as
    training ones, per label, give or take one), rung 4 cannot."""
    split, patients, labels = smoke_arrays["split"].copy(), smoke_arrays["patients"], smoke_arrays["labels"]
    for label in (0, 1):
        of_label = np.unique(patients[(split == TRAIN) & (labels == label)])
        split[(split == TRAIN) & np.isin(patients, of_label[1::2])] = HELD_OUT
    scarce = {**smoke_arrays, "split": split}
    cfg = load_config("pet", "smoke", overrides=["data.train_fraction=0.5", "classify.oracle_rungs=[0.5, 1, 4]"])
    fitted, note = fit_ladder(cfg, scarce)
    assert fitted.classify.oracle_rungs == [0.5, 1.0]
    assert "oracle rung 4x needs" in note and "runs to rung 1x" in note
    # the report says how the rungs and the steps follow from this cohort's counts
    said = ladder_note(fitted, scarce)
    held_out, train = (len(np.unique(patients[split == code])) for code in (HELD_OUT, TRAIN))
    assert "(classify.oracle_rungs 0.5x, 1x) add that multiple of the scarce set's patients" in said
    assert f"drawn from the {held_out} held out: " in said
    added = [len(oracle_patients(scarce, rung, seed=0)) for rung in (0.5, 1.0)]
    assert f": {added[0]}, {added[1]} more patients" in said and added[1] in (train - 1, train, train + 1)
    recipe = fitted.classify.recipe("yolov8")
    steps = recipe["epochs"] * -(-int((split == TRAIN).sum()) // recipe["batch_size"])
    assert f"yolov8 {steps}" in said and said in caveats(fitted, scarce)
    with pytest.raises(ConfigError, match="positive and increasing"):
        load_config("pet", "smoke", overrides=["classify.oracle_rungs=[2, 1]"])
