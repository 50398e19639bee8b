"""What a trial receives: the cohort arrays (`images`, `labels`, `patients`, `split`).

`split` holds these codes, in the order of `orchestrator.data.split.SPLITS`. HELD_OUT marks
training patients left out of all training by `data.train_fraction` (the data-scarcity
control); only the oracle arm of stage 3 reads them.
"""
TRAIN, VAL, TEST, HELD_OUT = 0, 1, 2, 3
