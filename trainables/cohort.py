"""What a trial receives: the cohort arrays (`images`, `labels`, `patients`, `split`).

`split` holds these codes, in the order of `orchestrator.data.split.SPLITS`.
"""
TRAIN, VAL, TEST = 0, 1, 2
