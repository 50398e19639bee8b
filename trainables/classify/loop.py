"""One training recipe for every classifier and every arm; only the training data differs
(`trainables.classify.arms`: what each arm trains on).

Equal training effort: every arm takes the same number of optimiser steps, `epochs` passes over
the *real* training split's batches (samples seen = steps x batch size), whatever the size of its
own training set; batches are drawn from reshuffled passes over the arm's set. So an arm with
more images does not also get more training, and a difference between arms is one of data.

The recipe: inputs standardised with the real training split's mean and standard deviation
(one pair per cohort, so every arm's images, synthetic ones included, are seen on the same
scale; without it VGG-16 and MobileNet gave flat scores on 32 px PET crops), AdamW, cosine
schedule over the steps, and either (`keep` "best") validation after every pass (an "epoch" in
the reports) and early stopping on validation ROC-AUC (`patience` epochs) with the best epoch's
weights kept, or (`keep` "final") the whole schedule with the last epoch's weights kept, validated
after about `FINAL_VALIDATIONS` evenly spaced passes and the last. An epoch whose validation
scores are degenerate (constant, or AUC not above chance) is never kept while a non-degenerate
one exists; a run with none is reported `degenerate`. The
decision threshold is fixed on the validation split (Youden's J); the test split is scored once,
at the end, with that model and threshold, and steers nothing. Validation and test sets are
built from real slices only, and the provenance of every training image is checked before
training starts.

`fit_classifier(cfg, data, synthetic, report)` runs anywhere: in a Tune trial, a test, or
`reproduce`. `report(metrics)` is called once per epoch and once at the end, with the final
figures (FINAL_METRICS, FINAL_TAGS) and, under "predictions", the test split's per-slice
scores, labels and patient codes (what the patient-level statistics need: a file, not metrics). It computes on the
GPU its trial holds (`cfg["gpus"]`), with every split moved there once and kept there, and in
bf16 autocast when `cfg["bf16"]`; the final report says which device it ran on.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.functional.classification import binary_auroc, binary_roc

from trainables.classify.arms import (HELD_OUT_REAL, SYNTHETIC, Arm, classic_augment, real_patients, real_split,
                                     training_set)
from trainables.classify.models import build_classifier
from trainables.cohort import TEST, TRAIN, VAL
from trainables.device import autocast, trial_device
from trainables.metrics import classification_metrics, degenerate_reason
from trainables.system import SystemSampler

# The figures a trial ends with, one number each, and its descriptive strings
FINAL_METRICS = ("test_accuracy", "test_sensitivity", "test_specificity", "test_roc_auc", "best_val_auc", "best_epoch",
                 "threshold", "train_images", "real_patients", "synthetic_images", "held_out_images", "steps", "samples_seen")
FINAL_TAGS = ("init", "device", "torch_threads", "degenerate")
PREDICTIONS = "predictions"  # the final report's per-slice test scores, and the file that holds them
# Under `keep` "final" validation only draws the curve and guards against a degenerate last pass, so a
# run validates (and reports) this many evenly spaced passes, not all: validating every pass was a sixth
# of a laptop trial (YOLOv8 at 100 passes: 1.4 s of 8.2 s).
FINAL_VALIDATIONS = 10


def fit_classifier(cfg: Mapping, data: Mapping[str, np.ndarray], synthetic: Mapping[str, np.ndarray] | None,
                   report: Callable[[dict], None]) -> dict:
    arm = Arm.of(cfg)
    device = trial_device(cfg.get("gpus", 0))
    precision = autocast(device, cfg.get("bf16", False))
    torch.manual_seed(cfg["seed"])
    rng = torch.Generator().manual_seed(cfg["seed"])

    x_train, y_train, source = training_set(arm, data, synthetic, cfg["seed"])
    x_val, y_val = real_split(data, VAL)
    x_test, y_test = real_split(data, TEST)
    x_train, y_train, x_val, x_test = (t.to(device) for t in (x_train, y_train, x_val, x_test))
    steps_per_epoch = steps_per_pass(data, cfg["batch_size"])
    classifier = build_classifier(cfg["classifier"], cfg.get("weights", ""))
    real_train = real_split(data, TRAIN)[0]
    model = nn.Sequential(Standardise(real_train.mean(), real_train.std()), Resize(cfg.get("input_px", 0)),
                          classifier.model).to(device)
    # fused: one kernel over all parameters (VGG-16's AdamW step 1.5 s -> 0.1 s on one CPU thread)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"], fused=True)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg["epochs"] * steps_per_epoch)
    batches = batch_indices(len(x_train), cfg["batch_size"], rng)

    best = {"val_auc": math.nan, "epoch": 0, "state": None, "degenerate": "no epoch was evaluated"}
    keep_final = cfg.get("keep", "best") == "final"  # recipes recorded before `keep` existed kept the best
    every = math.ceil(cfg["epochs"] / FINAL_VALIDATIONS) if keep_final else 1
    steps = since_report = 0
    system = SystemSampler(device)
    loss_sum = torch.zeros((), device=device)
    for epoch in range(1, cfg["epochs"] + 1):
        model.train()
        for _ in range(steps_per_epoch):
            idx = next(batches).to(device)
            x = x_train[idx]
            if arm.spec.augments:
                x = classic_augment(x, rng)
            with precision:
                loss = F.cross_entropy(model(x).float(), y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            loss_sum += loss.detach()
        steps += steps_per_epoch
        since_report += steps_per_epoch
        if epoch % every and epoch < cfg["epochs"]:
            continue

        val_scores = predict(model, x_val, cfg["batch_size"], precision)
        val_auc = auroc(val_scores, y_val)
        degenerate = degenerate_reason(val_scores, val_auc, "validation")
        report({"epoch": epoch, "train_loss": float(loss_sum) / since_report, "val_auc": val_auc,
                "steps": steps, "val_degenerate": int(bool(degenerate)), **system.sample()})
        loss_sum, since_report = torch.zeros((), device=device), 0
        if better_candidate(val_auc, degenerate, best, final=keep_final):
            best = {"val_auc": val_auc, "epoch": epoch, "state": snapshot(model, best["state"]),
                    "degenerate": degenerate, "val_scores": val_scores}
        elif not keep_final and not best["degenerate"] and epoch - best["epoch"] >= cfg["patience"]:
            break  # early stopping on validation AUC (only once a non-degenerate epoch is kept)

    model.load_state_dict(best["state"])
    threshold = youden_threshold(best["val_scores"], y_val)
    test_scores = predict(model, x_test, cfg["batch_size"], precision)
    test = classification_metrics(y_test, test_scores, threshold)
    fpr, tpr, _ = binary_roc(test_scores, y_test)
    degenerate = best["degenerate"] or degenerate_reason(test_scores, test["roc_auc"], "test")
    confusion = test.pop("confusion_matrix")
    final = {
        "epoch": best["epoch"], "best_epoch": best["epoch"], "best_val_auc": best["val_auc"], "threshold": threshold,
        "init": classifier.init, "device": str(device), "torch_threads": torch.get_num_threads(),
        "train_images": len(x_train), "real_patients": real_patients(arm, data, cfg["seed"]),
        "synthetic_images": int((source == SYNTHETIC).sum()), "held_out_images": int((source == HELD_OUT_REAL).sum()),
        "steps": steps, "samples_seen": steps * cfg["batch_size"], "degenerate": degenerate,
        **{f"test_{key}": value for key, value in test.items()},
        "final": True,  # the last report: test figures (Tune reserves "done")
        # per test slice, for the patient-level statistics across arms (patients are integer codes)
        PREDICTIONS: {"scores": test_scores.tolist(), "labels": y_test.tolist(),
                      "patients": np.asarray(data["patients"])[np.asarray(data["split"]) == TEST].tolist(),
                      "threshold": threshold, "confusion_matrix": confusion,
                      "roc": {"fpr": fpr.tolist(), "tpr": tpr.tolist()}},
    }
    report(final)
    return final


def steps_per_pass(data: Mapping[str, np.ndarray], batch_size: int) -> int:
    """The optimiser steps of one pass (an "epoch") for every arm: the real training split's batches."""
    return math.ceil(int((np.asarray(data["split"]) == TRAIN).sum()) / batch_size)


class Standardise(nn.Module):
    """(x - mean) / std with the real training split's figures: the model's first layer, so training,
    validation and test images all pass through it (and the classic arm's rotations fill with black)."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean.reshape(()).float())
        self.register_buffer("std", std.reshape(()).float().clamp_min(1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Resize(nn.Module):
    """Bilinear resize to `px` x `px` (0: as given): the side a classifier sees its images at. MobileNetV3
    halves the side five times, so from a 32 px crop its later blocks see 2 x 2 and 1 x 1 positions and it
    learnt only the nodule's size and brightness (`python -m bench.learning_curve`: 120 real patients
    gained nothing over 30); at 64 px the same steps learnt more (bench/results.md, the learning curve)."""

    def __init__(self, px: int):
        super().__init__()
        self.px = px

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.px or tuple(x.shape[-2:]) == (self.px, self.px):
            return x
        return F.interpolate(x, size=(self.px, self.px), mode="bilinear", align_corners=False)


def snapshot(model: nn.Module, into: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    """A copy of the model's weights and buffers, written into `into`'s tensors when given: a fresh copy
    of VGG-16's 134 M weights at every validated pass took 0.2-0.4 s, mostly the new memory's first touch;
    copying into the same tensors again takes 0.08 s."""
    state = model.state_dict()
    if into is None:
        return {name: tensor.detach().clone() for name, tensor in state.items()}
    for name, tensor in state.items():
        into[name].copy_(tensor)
    return into


def better_candidate(val_auc: float, degenerate: str, best: dict, final: bool = False) -> bool:
    """Whether this epoch replaces the kept one: a non-degenerate epoch beats any degenerate one;
    among epochs of the same kind, the later one (`final`) or the higher validation AUC wins (the
    first is kept whatever it is)."""
    if best["state"] is None:
        return True
    if bool(degenerate) != bool(best["degenerate"]):
        return not degenerate
    return final or val_auc > best["val_auc"]


def batch_indices(n: int, batch_size: int, rng: torch.Generator):
    """Endless batches of indices into a set of n: reshuffled passes, the last short batch of a pass kept
    unless it holds one image (BatchNorm cannot train on a batch of one: a set of 33 at batch 32 crashed
    ResNet; that image is drawn again in the next pass)."""
    while True:
        order = torch.randperm(n, generator=rng)
        yield from (batch for batch in order.split(batch_size) if len(batch) > 1 or n == 1)


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, batch_size: int,
            precision: AbstractContextManager | None = None) -> torch.Tensor:
    """P(malignant) per image, on the CPU (where the metrics are computed)."""
    model.eval()
    with precision or nullcontext():
        logits = torch.cat([model(x[i:i + batch_size]).float() for i in range(0, len(x), batch_size)])
    return logits.softmax(1)[:, 1].cpu()


def auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    return float(binary_auroc(scores, labels)) if 0 < int(labels.sum()) < len(labels) else math.nan


def youden_threshold(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """The score cut that maximises sensitivity + specificity - 1 on these (validation) cases."""
    fpr, tpr, thresholds = binary_roc(scores, labels)
    best = int(torch.argmax(tpr - fpr))
    return float(min(thresholds[best], 1.0))
