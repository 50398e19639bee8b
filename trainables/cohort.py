"""What a trial receives: the cohort arrays (`images`, `labels`, `patients`, `split`), and the one home
of the codes they hold.

`split` holds the codes below (SPLITS names them, in code order). HELD_OUT marks training patients
left out of all training by `data.train_fraction` (the data-scarcity control); only the oracle arm
of stage 3 reads them. `labels` holds 0 / 1 (LABEL_NAMES names them).
"""
import numpy as np

TRAIN, VAL, TEST, HELD_OUT = 0, 1, 2, 3
SPLITS = ("train", "val", "test", "held_out")  # SPLITS[code]
BENIGN, MALIGNANT = 0, 1
LABEL_NAMES = ("benign", "malignant")  # LABEL_NAMES[label]


def num_classes(labels: np.ndarray) -> int:
    """How many classes a cohort's labels (0, 1, ...) hold: what the GAN's label inputs are sized by."""
    return int(np.max(labels)) + 1
