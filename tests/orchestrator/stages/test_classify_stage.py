"""Stage 3's grid: which arms a config asks for, and the settings each trial gets."""
from __future__ import annotations

import pytest

from orchestrator.config import ConfigError, load_config
from orchestrator.stages.classify import grid_cells, parse_arm, trial_settings


def test_controls_join_the_grid_oracle_only_when_training_patients_are_held_out():
    cfg = load_config("pet", "smoke", overrides=["classify.ratios=[0.5]", "classify.classifiers=[mobilenet]"])
    assert [c["arm_id"] for c in grid_cells(cfg, ["cgan-1"])] == [
        "real", "classic", "synthetic:cgan-1:0.5", "permuted:cgan-1:0.5", "tstr:cgan-1"]
    scarce = load_config("pet", "smoke", overrides=["classify.ratios=[0.5, 1.0]", "classify.classifiers=[mobilenet]",
                                                    "synth.size_factor=1.0", "data.train_fraction=0.5"])
    arms = [c["arm_id"] for c in grid_cells(scarce, ["cgan-1"])]
    assert arms[-3:-1] == ["oracle:0.5", "oracle:1"] and "permuted:cgan-1:1" in arms
    assert parse_arm("oracle:0.5") == {"arm": "oracle", "set": "", "ratio": 0.5}
    assert parse_arm("permuted:cgan-1:2") == {"arm": "permuted", "set": "cgan-1", "ratio": 2.0}


def test_a_shortened_schedule_applies_to_its_classifier_only_and_must_name_a_trained_one():
    config = {"cell": {"classifier": "vgg16", "arm_id": "real"}, "epochs": 15, "weights": {},
              "epochs_per_classifier": {"vgg16": 3}, "seed": 0}
    assert trial_settings(config)["epochs"] == 3
    assert trial_settings({**config, "cell": {"classifier": "resnet", "arm_id": "real"}})["epochs"] == 15
    with pytest.raises(ConfigError, match=r"epochs_per_classifier names \['vgg16'\]"):
        load_config("pet", "smoke", overrides=["classify.epochs_per_classifier={vgg16: 3}"])
