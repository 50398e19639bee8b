"""The phantom task is learnable but data-hungry: the laptop preset's share of the training patients
scores clearly lower than all of them, as the oracle's learning curve needs.

A small CNN on 32 px PET nodule crops (the default cohort's shape: series, nodules.csv, 50 mm
crops; the laptop preset's 200 patients and split), trained for a fixed number of steps on (a)
all 120 training patients and (b) the laptop preset's share of them (`data.train_fraction`,
stratified), five seeds each, scored on the 80 validation and test patients; the difference
and its interval come from the sweep's own patient-level statistics. Measured: all patients
0.73, 15 % (18 patients) 0.57; an ideal observer on the recorded nodule parameters 0.93
(tests/orchestrator/data/test_phantom.py).

What this shows is narrow: one phantom draw (seed 11), the central slice of each nodule. The
same regime on the sweep's own default draw (seed 0, 3 mm slab) gains nothing, and other draws
gain from nothing to +0.17 (bench/results.md, "learning curve"): the phantom's data-hunger depends
on the draw, so a pass here does not mean the default run's oracle can see a gain.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from orchestrator.config import load_config
from orchestrator.data.ingest import ingest
from orchestrator.data.phantom import write_phantom_cohort
from orchestrator.statistics import utility
from trainables.classify.arms import Arm
from trainables.cohort import TEST, TRAIN, VAL

LAPTOP = load_config("pet", "laptop").data
PATIENTS, SLICES, SIZE = LAPTOP.phantom_patients, LAPTOP.phantom_slices, LAPTOP.size
STEPS, BATCH, SEEDS = 500, 32, 5


def small_cnn() -> nn.Module:
    def block(cin: int, cout: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))

    return nn.Sequential(block(1, 16), block(16, 32), block(32, 64),
                         nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(64, 1))


def train_and_score(x_train, y_train, x_val, seed: int) -> np.ndarray:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = small_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x_train, y_train = torch.from_numpy(x_train)[:, None], torch.from_numpy(y_train).float()
    for _ in range(STEPS):
        idx = torch.from_numpy(rng.integers(0, len(x_train), BATCH))
        x = x_train[idx]
        x = torch.where(torch.rand(BATCH, 1, 1, 1) < 0.5, x.flip(-1), x)  # flips keep it honest on few patients
        loss = nn.functional.binary_cross_entropy_with_logits(model(x).squeeze(1), y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return torch.sigmoid(model(torch.from_numpy(x_val)[:, None]).squeeze(1)).numpy()


def stratified_patients(patients: np.ndarray, labels: np.ndarray, share: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    chosen = []
    for label in (0, 1):
        # in order of first appearance (file order), not pseudonym order: pseudonyms are
        # salted per cache, and the draw must not change with the salt
        of_label = patients[labels == label]
        ids = of_label[np.sort(np.unique(of_label, return_index=True)[1])]
        chosen += list(rng.choice(ids, max(1, round(share * len(ids))), replace=False))
    return np.isin(patients, chosen)


@pytest.mark.slow
def test_all_training_patients_beat_the_laptop_share_of_them(tmp_path, data_cfg):
    write_phantom_cohort(tmp_path / "data", patients=PATIENTS, modality="pet", seed=11, slices=SLICES)
    cohort = ingest(tmp_path / "data", replace(data_cfg, size=SIZE, split=LAPTOP.split))
    arrays = cohort.as_arrays()
    train, scored = arrays["split"] == TRAIN, np.isin(arrays["split"], (VAL, TEST))  # validation and test patients
    x, y, patients = arrays["images"].astype(np.float32), arrays["labels"].astype(np.int64), arrays["patients"]

    rows = np.flatnonzero(train)
    trials = []
    for seed in range(SEEDS):
        few = rows[stratified_patients(patients[rows], y[rows], LAPTOP.train_fraction, seed)]
        every = Arm("oracle", ratio=(len(np.unique(patients[rows])) / len(np.unique(patients[few])) - 1)).id
        for arm, chosen in (("real", few), (every, rows)):
            trials.append({"classifier": "cnn", "arm_id": arm, "seed": seed, "threshold": 0.5, "degenerate": "",
                           "test_scores": train_and_score(x[chosen], y[chosen], x[scored], seed),
                           "test_labels": y[scored], "test_patients": patients[scored]})
    summary = utility(pd.DataFrame(trials), min_patients_per_label=10)
    scarce, full = summary.arms
    gain = full.deltas["roc_auc"]
    print(f"AUC on {summary.cases.describe()}: all training patients {full.metrics['roc_auc'].interval()}, "
          f"{LAPTOP.train_fraction:.0%} of them {scarce.metrics['roc_auc'].interval()}; gain {gain.interval()}")
    assert full.metrics["roc_auc"].value >= 0.65, "the task should be learnable from the full training split"
    assert gain.value >= 0.10 and gain.low > 0, "more patients should clearly help"
    assert full.metrics["roc_auc"].value < 0.95, "the task should not be trivial"
