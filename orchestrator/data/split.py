"""Patient-level, label-stratified, seeded train / validation / test split."""
from __future__ import annotations

import numpy as np

from trainables.cohort import HELD_OUT, TRAIN



class SplitError(ValueError):
    """The cohort is too small or too one-sided for a stratified patient split."""


def split_patients(patient_labels: dict[str, int], fractions: tuple[float, float, float], seed: int) -> dict[str, int]:
    """Assign each patient to 0 (train), 1 (val) or 2 (test).

    Stratified by the patient's label; every split gets at least one patient of each label,
    so validation and test AUC are defined. The result depends only on the patient keys,
    their labels, the fractions and the seed (not on input order).
    """
    if abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) <= 0:
        raise SplitError(f"split fractions {fractions} must be positive and sum to 1")
    by_label: dict[int, list[str]] = {}
    for patient, label in sorted(patient_labels.items()):
        by_label.setdefault(label, []).append(patient)
    if len(by_label) < 2:
        raise SplitError(f"all {len(patient_labels)} patients have the same label: nothing to classify")
    rng = np.random.default_rng(seed)
    assignment: dict[str, int] = {}
    for label in sorted(by_label):
        patients = by_label[label]
        if len(patients) < 3:
            raise SplitError(f"only {len(patients)} patient(s) with label {label}: need at least 3 "
                             "(one each for train, validation and test)")
        order = rng.permutation(len(patients))
        n_val, n_test = _split_counts(len(patients), fractions)
        for rank, index in enumerate(order):
            assignment[patients[index]] = 1 if rank < n_val else 2 if rank < n_val + n_test else 0
    return assignment


def _split_counts(n: int, fractions: tuple[float, float, float]) -> tuple[int, int]:
    n_val = max(1, round(n * fractions[1]))
    n_test = max(1, round(n * fractions[2]))
    while n - n_val - n_test < 1:  # keep at least one training patient
        if n_val >= n_test and n_val > 1:
            n_val -= 1
        else:
            n_test -= 1
    return n_val, n_test


def hold_out_training(assignment: dict[str, int], patient_labels: dict[str, int], fraction: float,
                      seed: int) -> dict[str, int]:
    """Keep a seeded, label-stratified `fraction` of the training patients (code 0); the others
    become held out (code 3), left out of all training. Like the split, it depends only on the raw
    patient keys, their labels, the fraction and the seed, so every machine draws the same patients.
    At least one training patient of each label stays."""
    if fraction >= 1:
        return dict(assignment)
    rng = np.random.default_rng([seed, 1])  # a stream of its own: the split above does not move
    result = dict(assignment)
    for label in sorted(set(patient_labels.values())):
        train = sorted(p for p, code in assignment.items() if code == TRAIN and patient_labels[p] == label)
        keep = max(1, round(len(train) * fraction))
        for rank, index in enumerate(rng.permutation(len(train))):
            if rank >= keep:
                result[train[index]] = HELD_OUT
    return result


def draw_order(patients: list[str], seed: int) -> dict[str, int]:
    """Each patient's rank in a seeded order of the raw patient keys: the order in which trials draw
    patients from a pool (an oracle rung takes the first of the held-out ones). The patient codes
    index salted pseudonyms, so drawing in code order would pick other patients on another machine;
    this rank, like the split, is the same on every machine, and being a seeded shuffle it does not
    follow how the patients happen to be named."""
    keys = sorted(set(patients))
    rng = np.random.default_rng([seed, 2])  # a stream of its own: the split and hold-out do not move
    return {keys[index]: rank for rank, index in enumerate(rng.permutation(len(keys)))}
