"""Property tests of the patient split: for any cohort and seed, no patient crosses sets."""
from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.data.split import SplitError, hold_out_training, split_patients
from trainables.cohort import HELD_OUT, TEST, VAL

FRACTIONS = (0.7, 0.2, 0.1)

patient_ids = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789^- ", min_size=1, max_size=12)


@st.composite
def cohorts(draw) -> dict[str, int]:
    """Patient ID -> label, at least 3 patients per label (the split's documented minimum)."""
    ids = draw(st.lists(patient_ids, min_size=6, max_size=120, unique=True))
    labels = [i % 2 for i in range(len(ids))]
    draw(st.randoms(use_true_random=False)).shuffle(labels)
    if labels.count(0) < 3 or labels.count(1) < 3:
        labels = [i % 2 for i in range(len(ids))]
    return dict(zip(ids, labels))


@st.composite
def slices_of(draw, cohort: dict[str, int]) -> list[str]:
    """A slice list naming each patient one or more times, in any order."""
    per_patient = [p for p in cohort for _ in range(draw(st.integers(1, 5)))]
    draw(st.randoms(use_true_random=False)).shuffle(per_patient)
    return per_patient


@settings(max_examples=200, deadline=None)
@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_split_never_puts_one_patient_in_two_sets(data, seed):
    cohort = data.draw(cohorts())
    slice_patients = data.draw(slices_of(cohort))
    assignment = split_patients(cohort, FRACTIONS, seed)
    slice_split = [assignment[p] for p in slice_patients]  # what ingest stores per slice

    sets = [{p for p, s in zip(slice_patients, slice_split) if s == k} for k in range(3)]
    assert sets[0].isdisjoint(sets[1]) and sets[0].isdisjoint(sets[2]) and sets[1].isdisjoint(sets[2])
    assert set().union(*sets) == set(cohort)
    for k in range(3):  # both labels in every set, so validation and test AUC exist
        assert {cohort[p] for p in sets[k]} == {0, 1}


@settings(max_examples=100, deadline=None)
@given(cohort=cohorts(), seed=st.integers(0, 2**32 - 1), shuffle_seed=st.integers(0, 1000))
def test_split_does_not_depend_on_input_order(cohort, seed, shuffle_seed):
    items = list(cohort.items())
    random.Random(shuffle_seed).shuffle(items)
    assert split_patients(dict(items), FRACTIONS, seed) == split_patients(cohort, FRACTIONS, seed)


@settings(max_examples=100, deadline=None)
@given(cohort=cohorts(), seed=st.integers(0, 2**32 - 1))
def test_split_sizes_follow_the_fractions(cohort, seed):
    assignment = split_patients(cohort, FRACTIONS, seed)
    for label in (0, 1):
        members = [s for p, s in assignment.items() if cohort[p] == label]
        for k, fraction in enumerate(FRACTIONS):
            # per label: val / test are rounded shares (at least one patient each), so off by
            # under 1; train takes the remainder, so off by at most the sum of their errors
            assert abs(members.count(k) - fraction * len(members)) <= 1.5


def test_two_patients_of_a_label_is_a_clear_error():
    with pytest.raises(SplitError, match="only 2 patient"):
        split_patients({"a": 0, "b": 0, "c": 1, "d": 1, "e": 1}, FRACTIONS, 0)


@settings(max_examples=100, deadline=None)
@given(cohort=cohorts(), seed=st.integers(0, 2**32 - 1), fraction=st.floats(0.05, 0.95))
def test_train_fraction_holds_out_training_patients_only_stratified_and_independent_of_order(cohort, seed, fraction):
    split = split_patients(cohort, FRACTIONS, seed)
    kept = hold_out_training(split, cohort, fraction, seed)
    assert {p for p, c in kept.items() if c in (1, 2)} == {p for p, c in split.items() if c in (1, 2)}
    assert all(kept[p] == split[p] for p in split if split[p] in (VAL, TEST))  # validation and test never move
    for label in (0, 1):
        train = [p for p in split if split[p] == 0 and cohort[p] == label]
        stays = [p for p in train if kept[p] == 0]
        assert len(stays) == max(1, round(len(train) * fraction))
        assert all(kept[p] == HELD_OUT for p in train if p not in stays)
    shuffled = dict(random.Random(seed).sample(list(cohort.items()), len(cohort)))
    assert hold_out_training(split_patients(shuffled, FRACTIONS, seed), shuffled, fraction, seed) == kept
    assert hold_out_training(split, cohort, 1.0, seed) == split
