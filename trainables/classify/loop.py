"""One training recipe for every classifier and every arm; only the training data differs.

Arms (`cfg["arm"]`):
    real          the real training split
    classic       the real training split with flips and small rotations
    synthetic     the real training split plus `ratio` x as many synthetic images (class-balanced)
    tstr          the whole synthetic set only: train-synthetic-test-real, a cheap utility proxy

The recipe: AdamW, cosine schedule over `epochs`, early stopping on validation ROC-AUC
(`patience` epochs), the best epoch's weights kept. The decision threshold is fixed on the
validation split (Youden's J); the test split is scored once, at the end, with that model and
threshold, and steers nothing. Validation and test sets are built from real slices only, and
the provenance of every training image is checked before training starts.

`fit_classifier(cfg, data, synthetic, report)` runs anywhere: in a Tune trial, a test, or
`reproduce`. `report(metrics)` is called once per epoch and once at the end.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import binary_auroc, binary_roc
from torchvision.transforms.v2 import functional as TF

from trainables.classify.models import build_classifier
from trainables.cohort import TEST, TRAIN, VAL
from trainables.metrics import classification_metrics

ARMS = ("real", "classic", "synthetic", "tstr")
MAX_ROTATION_DEG = 10.0  # "small rotations" of the classic arm


def fit_classifier(cfg: Mapping, data: Mapping[str, np.ndarray], synthetic: Mapping[str, np.ndarray] | None,
                   report: Callable[[dict], None]) -> dict:
    if cfg["arm"] not in ARMS:
        raise ValueError(f"unknown arm {cfg['arm']!r}; choose from {ARMS}")
    torch.manual_seed(cfg["seed"])
    rng = torch.Generator().manual_seed(cfg["seed"])

    x_train, y_train, source = training_set(cfg, data, synthetic)
    x_val, y_val = real_split(data, VAL)
    x_test, y_test = real_split(data, TEST)
    classifier = build_classifier(cfg["classifier"], cfg.get("weights", ""))
    model = classifier.model
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg["epochs"])

    best = {"val_auc": math.nan, "epoch": 0, "state": None}
    for epoch in range(1, cfg["epochs"] + 1):
        model.train()
        order = torch.randperm(len(x_train), generator=rng)
        loss_sum = torch.zeros(())
        batches = range(0, len(order), cfg["batch_size"])
        for start in batches:
            idx = order[start:start + cfg["batch_size"]]
            x = x_train[idx]
            if cfg["arm"] == "classic":
                x = classic_augment(x, rng)
            loss = F.cross_entropy(model(x), y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach()
        schedule.step()

        val_scores = predict(model, x_val, cfg["batch_size"])
        val_auc = auroc(val_scores, y_val)
        report({"epoch": epoch, "train_loss": float(loss_sum) / len(batches), "val_auc": val_auc})
        if best["state"] is None or val_auc > best["val_auc"]:
            best = {"val_auc": val_auc, "epoch": epoch, "state": copy.deepcopy(model.state_dict())}
        elif epoch - best["epoch"] >= cfg["patience"]:
            break  # early stopping on validation AUC

    model.load_state_dict(best["state"])
    threshold = youden_threshold(predict(model, x_val, cfg["batch_size"]), y_val)
    test_scores = predict(model, x_test, cfg["batch_size"])
    test = classification_metrics(y_test, test_scores, threshold)
    fpr, tpr, _ = binary_roc(test_scores, y_test)
    final = {
        "epoch": best["epoch"], "best_epoch": best["epoch"], "best_val_auc": best["val_auc"], "threshold": threshold,
        "init": classifier.init, "torch_threads": torch.get_num_threads(), "train_images": len(x_train), "synthetic_images": int((source > 0).sum()),
        **{f"test_{key}": value for key, value in test.items()},
        "test_roc": {"fpr": fpr.tolist(), "tpr": tpr.tolist()},
        "test_scores": test_scores.tolist(), "test_labels": y_test.tolist(),  # for paired tests across arms
        "final": True,  # the last report: test figures (Tune reserves "done")
    }
    report(final)
    return final


def training_set(cfg: Mapping, data: Mapping[str, np.ndarray], synthetic: Mapping[str, np.ndarray] | None):
    """Images [N, 1, S, S], labels [N] and source [N] (0 real, 1 synthetic) for this arm."""
    x_real, y_real = real_split(data, TRAIN)
    if cfg["arm"] in ("real", "classic"):
        return x_real, y_real, torch.zeros(len(x_real), dtype=torch.long)
    if synthetic is None:
        raise ValueError(f"arm {cfg['arm']!r} needs a synthetic set")
    if cfg["arm"] == "tstr":  # the whole set, as generated (its class ratio included)
        x_syn = torch.from_numpy(np.asarray(synthetic["images"], np.float32)).unsqueeze(1)
        y_syn = torch.from_numpy(np.asarray(synthetic["labels"], np.int64))
        return x_syn, y_syn, torch.ones(len(x_syn), dtype=torch.long)
    x_syn, y_syn = balanced_take(synthetic, round(cfg["ratio"] * len(x_real)))
    source = torch.cat([torch.zeros(len(x_real), dtype=torch.long), torch.ones(len(x_syn), dtype=torch.long)])
    return torch.cat([x_real, x_syn]), torch.cat([y_real, y_syn]), source


def real_split(data: Mapping[str, np.ndarray], code: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The real slices of one split. Synthetic images live in another mapping and never get here."""
    mask = np.asarray(data["split"]) == code
    images = torch.from_numpy(np.asarray(data["images"][mask], np.float32)).unsqueeze(1)
    return images, torch.from_numpy(np.asarray(data["labels"][mask], np.int64))


def balanced_take(synthetic: Mapping[str, np.ndarray], count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `count` synthetic images, half of each label (the set's order is its sampling order)."""
    labels = np.asarray(synthetic["labels"])
    per_label = [np.flatnonzero(labels == label)[: count // 2 + (label < count % 2)] for label in (0, 1)]
    if sum(len(p) for p in per_label) < count:
        raise ValueError(f"the synthetic set has {len(labels)} images; this arm needs {count}, half per label")
    keep = np.sort(np.concatenate(per_label))
    images = torch.from_numpy(np.asarray(synthetic["images"][keep], np.float32)).unsqueeze(1)
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


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """P(malignant) per image."""
    model.eval()
    logits = torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
    return logits.softmax(1)[:, 1]


def auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    return float(binary_auroc(scores, labels)) if 0 < int(labels.sum()) < len(labels) else math.nan


def youden_threshold(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """The score cut that maximises sensitivity + specificity - 1 on these (validation) cases."""
    fpr, tpr, thresholds = binary_roc(scores, labels)
    best = int(torch.argmax(tpr - fpr))
    return float(min(thresholds[best], 1.0))
