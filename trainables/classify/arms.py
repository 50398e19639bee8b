"""Stage 3's arms: what a classifier trains on, besides the recipe every arm shares.

An arm is a kind from `ARM_KINDS` with, where the kind takes them, the synthetic set it draws on
and a ratio. `Arm.id` (`kind[:set][:ratio]`, e.g. `synthetic:cgan-1a2b:0.5`, `oracle:2`) names
it in Tune's grid, MLflow and the report; `Arm.parse` is the one place that reads it back.

Kinds:
    real          the real training split
    classic       the real training split with flips and small rotations
    synthetic     the real training split plus `ratio` x as many synthetic images (class-balanced)
    permuted      as synthetic, with the synthetic images' labels shuffled: "more pictures" without
                  "pictures that carry the label" (the negative control)
    oracle        the real training split plus all slices of `ratio` x as many held-out training patients
                  of each label (`data.train_fraction` < 1): what more real patients give (the positive
                  control). Its rungs (ratios) draw the learning curve that other arms are placed on;
                  a larger rung holds a smaller one's patients
    tstr          the whole synthetic set only: train-synthetic-test-real, a cheap utility proxy

Adding a kind is one `ArmKind` entry here with its training-set builder; the grid, MLflow tags,
the report's rows and its plot colours all read this registry.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from trainables.cohort import HELD_OUT, TRAIN

MAX_ROTATION_DEG = 10.0  # "small rotations" of the classic arm
REAL, SYNTHETIC, HELD_OUT_REAL = 0, 1, 2  # where a training image came from (`source`)

# (images [N, 1, S, S], labels [N], source [N]) for one arm, from the cohort, the synthetic set and the seed
TrainingSet = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
Builder = Callable[["Arm", Mapping[str, np.ndarray], "Mapping[str, np.ndarray] | None", int], TrainingSet]


@dataclass(frozen=True)
class ArmKind:
    name: str
    build: Builder  # the arm's training set
    uses_set: bool  # draws on a synthetic set (its id names the set)
    uses_ratio: bool  # takes a ratio (synthetic : real, or the oracle's multiple of the training patients)
    role: str  # what the report calls it
    colour: str  # in the report's figures
    compared: bool = True  # its difference to real only joins the family of comparisons (Holm)
    placed_on_curve: bool = False  # the report says what it is worth in real patients (the oracle's curve)
    augments: bool = False  # flips and small rotations at every training step
    trains_on_real: bool = True  # holds the real training split (every kind but train-synthetic-test-real)
    uses_held_out: bool = False  # adds real slices of the held-out patients (the oracle)
    # what it trains on, in words (`{ratio}` filled in): MLflow's dataset context on the arm's inputs
    trains_on: str = "training split"


ARM_KINDS: dict[str, ArmKind] = {}


def register_arm_kind(kind: ArmKind) -> ArmKind:
    if kind.name in ARM_KINDS:
        raise ValueError(f"arm kind {kind.name!r} registered twice")
    ARM_KINDS[kind.name] = kind
    return kind


@dataclass(frozen=True)
class Arm:
    kind: str
    set: str = ""  # the synthetic set's name, for kinds that use one
    ratio: float = 0.0  # for kinds that take one

    def __post_init__(self):
        if self.kind not in ARM_KINDS:
            raise ValueError(f"unknown arm kind {self.kind!r}; choose from {sorted(ARM_KINDS)}")
        spec = ARM_KINDS[self.kind]
        if spec.uses_set != bool(self.set):
            raise ValueError(f"arm kind {self.kind!r} {'needs' if spec.uses_set else 'takes no'} synthetic set "
                             f"(got {self.set!r})")
        if spec.uses_ratio != bool(self.ratio):
            raise ValueError(f"arm kind {self.kind!r} {'needs a positive' if spec.uses_ratio else 'takes no'} ratio "
                             f"(got {self.ratio!r})")

    @property
    def spec(self) -> ArmKind:
        return ARM_KINDS[self.kind]

    def parts(self, ratio_unit: str = "") -> list[str]:
        """Kind, then the set and the ratio where the kind takes them."""
        return [self.kind, *([self.set] if self.set else []), *([f"{self.ratio:g}{ratio_unit}"] if self.ratio else [])]

    @property
    def id(self) -> str:
        return ":".join(self.parts())

    @property
    def trains_on(self) -> str:
        """What this arm trains on, in words: `training split + synthetic 2x`."""
        return self.spec.trains_on.format(ratio=self.ratio)

    @property
    def title(self) -> str:
        """The arm as a person reads it: `synthetic cgan-1a2b 0.5x`, `oracle 2x`, `real`."""
        return " ".join(self.parts("x"))

    @classmethod
    def parse(cls, arm_id: str) -> Arm:
        """`synthetic:cgan-1a2b:0.5` -> Arm("synthetic", "cgan-1a2b", 0.5); `oracle:2` -> Arm("oracle", ratio=2.0)."""
        kind, *rest = arm_id.split(":")
        spec = ARM_KINDS.get(kind)
        if spec is None or len(rest) != spec.uses_set + spec.uses_ratio:
            raise ValueError(f"not an arm id: {arm_id!r}")
        return cls(kind, rest[0] if spec.uses_set else "", float(rest[-1]) if spec.uses_ratio else 0.0)

    def settings(self) -> dict:
        """What a trial's settings carry of the arm (flat, as MLflow shows them)."""
        return {"arm": self.kind, "set": self.set, "ratio": self.ratio}

    @classmethod
    def of(cls, settings: Mapping) -> Arm:
        """The arm of a trial's settings (the inverse of `settings`; what its kind does not take is ignored)."""
        spec = ARM_KINDS.get(settings["arm"])
        if spec is None:
            raise ValueError(f"unknown arm kind {settings['arm']!r}; choose from {sorted(ARM_KINDS)}")
        return cls(spec.name, settings.get("set", "") if spec.uses_set else "",
                   float(settings.get("ratio", 0.0)) if spec.uses_ratio else 0.0)


def label_counts(total: int, malignant_fraction: float = 0.5) -> dict[int, int]:
    """How many images of each label a set of `total` holds: the one rule for stage 2's sets and the arms
    that take from them (an odd image goes to malignant when the fraction is a half)."""
    malignant = math.floor(total * malignant_fraction + 0.5)
    return {0: total - malignant, 1: malignant}


# --- The training sets ------------------------------------------------------------------------------

def real_split(data: Mapping[str, np.ndarray], code: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The real slices of one split. Synthetic images live in another mapping and never get here."""
    mask = np.asarray(data["split"]) == code
    images = torch.from_numpy(np.asarray(data["images"][mask], np.float32)).unsqueeze(1)
    return images, torch.from_numpy(np.asarray(data["labels"][mask], np.int64))


def _real(arm: Arm, data, synthetic, seed: int) -> TrainingSet:
    x_real, y_real = real_split(data, TRAIN)
    return x_real, y_real, torch.full((len(x_real),), REAL)


def _with_synthetic(arm: Arm, data, synthetic, seed: int) -> TrainingSet:
    x_real, y_real = real_split(data, TRAIN)
    x_syn, y_syn = balanced_take(_needs(synthetic, arm), round(arm.ratio * len(x_real)), "synthetic")
    if arm.kind == "permuted":  # same images, labels shuffled: the label is no longer in them
        y_syn = y_syn[torch.randperm(len(y_syn), generator=torch.Generator().manual_seed(seed))]
    return _join(x_real, y_real, x_syn, y_syn, SYNTHETIC)


def _oracle(arm: Arm, data, synthetic, seed: int) -> TrainingSet:
    x_real, y_real = real_split(data, TRAIN)
    where = np.flatnonzero(np.isin(data["patients"], oracle_patients(data, arm.ratio, seed))
                           & (np.asarray(data["split"]) == HELD_OUT))
    x_add = torch.from_numpy(np.asarray(data["images"][where], np.float32)).unsqueeze(1)
    return _join(x_real, y_real, x_add, torch.from_numpy(np.asarray(data["labels"][where], np.int64)), HELD_OUT_REAL)


def _synthetic_only(arm: Arm, data, synthetic, seed: int) -> TrainingSet:
    synthetic = _needs(synthetic, arm)  # the whole set, as generated (its class ratio included)
    x_syn = torch.from_numpy(np.asarray(synthetic["images"], np.float32)).unsqueeze(1)
    y_syn = torch.from_numpy(np.asarray(synthetic["labels"], np.int64))
    return x_syn, y_syn, torch.full((len(x_syn),), SYNTHETIC)


def _needs(synthetic, arm: Arm):
    if synthetic is None:
        raise ValueError(f"arm {arm.id!r} needs a synthetic set")
    return synthetic


def _join(x_real, y_real, x_add, y_add, kind: int) -> TrainingSet:
    source = torch.cat([torch.full((len(x_real),), REAL), torch.full((len(x_add),), kind)])
    return torch.cat([x_real, x_add]), torch.cat([y_real, y_add]), source


for _kind in (
    ArmKind("real", _real, uses_set=False, uses_ratio=False, role="baseline", colour="black", compared=False),
    ArmKind("classic", _real, uses_set=False, uses_ratio=False, role="classic augmentation", colour="tab:orange",
            placed_on_curve=True, augments=True, trains_on="training split, flipped and rotated"),
    ArmKind("synthetic", _with_synthetic, uses_set=True, uses_ratio=True, role="GAN augmentation", colour="tab:blue",
            placed_on_curve=True, trains_on="training split + synthetic {ratio:g}x"),
    # The controls check the instrument and claim nothing about augmentation, so they stay out of the family
    # too: in it, the laptop's 12 control comparisons beside 8 claims would make Holm multiply a p by up to
    # 20, and at 3 seeds no p goes much below 0.003. They are read by their intervals (orchestrator/report.py).
    ArmKind("permuted", _with_synthetic, uses_set=True, uses_ratio=True, role="negative control",
            colour="tab:purple", compared=False, trains_on="training split + synthetic {ratio:g}x, labels permuted"),
    ArmKind("oracle", _oracle, uses_set=False, uses_ratio=True, role="positive control", colour="tab:green",
            compared=False, uses_held_out=True, trains_on="training split + held-out patients {ratio:g}x"),
    # a proxy, not a claim: kept out of the comparison family so it costs the real comparisons no power
    ArmKind("tstr", _synthetic_only, uses_set=True, uses_ratio=False, role="utility proxy", colour="tab:brown",
            compared=False, trains_on_real=False, trains_on="synthetic set only"),
):
    register_arm_kind(_kind)


def training_set(arm: Arm, data: Mapping[str, np.ndarray], synthetic: Mapping[str, np.ndarray] | None,
                 seed: int) -> TrainingSet:
    """Images [N, 1, S, S], labels [N] and source [N] (REAL, SYNTHETIC or HELD_OUT_REAL) for this arm."""
    return arm.spec.build(arm, data, synthetic, seed)


def balanced_take(pool: Mapping[str, np.ndarray], count: int, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `count` images of `pool`, split between the labels by `label_counts` (a synthetic set's
    order is its sampling order)."""
    labels = np.asarray(pool["labels"])
    wanted = label_counts(count)
    per_label = [np.flatnonzero(labels == label)[: wanted[label]] for label in (0, 1)]
    if any(len(taken) < wanted[label] for label, taken in enumerate(per_label)):
        raise ValueError(f"the {what} set has {len(labels)} images ({int((labels == 1).sum())} malignant); this arm "
                         f"needs {count}: {wanted[0]} benign and {wanted[1]} malignant")
    keep = np.sort(np.concatenate(per_label))
    images = torch.from_numpy(np.asarray(pool["images"][keep], np.float32)).unsqueeze(1)
    return images, torch.from_numpy(labels[keep].astype(np.int64))


def classic_augment(x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """Random horizontal / vertical flips and a rotation of at most MAX_ROTATION_DEG, per image."""
    out = []
    for image in x:
        if torch.rand((), generator=rng) < 0.5:
            image = image.flip(-1)
        if torch.rand((), generator=rng) < 0.5:
            image = image.flip(-2)
        angle = float((torch.rand((), generator=rng) * 2 - 1) * MAX_ROTATION_DEG)
        out.append(TF.rotate(image, angle))
    return torch.stack(out)


# --- The oracle's patients --------------------------------------------------------------------------

def patient_labels(patients: np.ndarray, labels: np.ndarray) -> dict:
    """{patient: label}: the majority label of the patient's slices (malignant on a tie)."""
    codes, inverse = np.unique(patients, return_inverse=True)
    share = np.bincount(inverse, weights=labels) / np.bincount(inverse)
    return dict(zip(codes.tolist(), (share >= 0.5).astype(int).tolist()))


def oracle_patients(data: Mapping[str, np.ndarray], multiple: float, seed: int) -> np.ndarray:
    """The held-out patients an oracle rung adds: round(`multiple` x the training split's patients) of
    each label, the first of a seeded order of the held-out pool (so a larger rung holds a smaller one's).
    The pool is ranked by the cohort's draw order before the seed shuffles it, not by patient code: the
    codes follow salted pseudonyms, so on another machine they would pick other patients."""
    split, patients = np.asarray(data["split"]), np.asarray(data["patients"])
    label_of = patient_labels(patients, np.asarray(data["labels"]))
    rank = dict(zip(patients.tolist(), np.asarray(data["draw_order"]).tolist()))
    chosen = []
    for label in (0, 1):
        n_train = sum(1 for p in np.unique(patients[split == TRAIN]) if label_of[p] == label)
        pool = np.array(sorted((p for p in np.unique(patients[split == HELD_OUT]) if label_of[p] == label),
                               key=rank.__getitem__), dtype=patients.dtype)
        need = round(multiple * n_train)
        if need > len(pool):
            raise ValueError(f"the oracle rung {multiple:g}x needs {need} held-out patients of label {label} "
                             f"({multiple:g} x {n_train} training patients); the cohort holds {len(pool)}")
        chosen.append(pool[np.random.default_rng([seed, label]).permutation(len(pool))[:need]])
    return np.concatenate(chosen)


def real_patients(arm: Arm, data: Mapping[str, np.ndarray], seed: int) -> int:
    """How many real patients an arm trains on: the training split's, plus an oracle rung's."""
    split = np.asarray(data["split"])
    n_train = len(np.unique(np.asarray(data["patients"])[split == TRAIN]))
    if arm.kind == "oracle":
        return n_train + len(oracle_patients(data, arm.ratio, seed))
    return n_train if arm.spec.trains_on_real else 0
