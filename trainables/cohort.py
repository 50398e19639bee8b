"""What a trial receives: the cohort arrays (`images`, `labels`, `patients`, `split`).

`split` holds these codes, in the order of `orchestrator.data.split.SPLITS`. HELD_OUT marks
training patients left out of all training by `data.train_fraction` (the data-scarcity
control); only the oracle arm of stage 3 reads them.
"""
import numpy as np

TRAIN, VAL, TEST, HELD_OUT = 0, 1, 2, 3


def num_classes(labels: np.ndarray) -> int:
    """How many classes a cohort's labels (0, 1, ...) hold: what the GAN's label inputs are sized by."""
    return int(np.max(labels)) + 1
