"""Does more real data help each product classifier at the laptop recipe? The learning curve the
oracle arm relies on, measured outside Ray.

    python -m bench.learning_curve [--classifiers yolov8,resnet] [--epochs 100] [--seeds 0,1,2]

In `python -m bench`: yolov8, mobilenet and resnet at 100 passes (200 optimiser steps, about 7x the
laptop preset's), 3 seeds, about 4 minutes on 2 cores; VGG-16 is left out there (about 13 minutes
more at one thread per trial) and runs with `--classifiers vgg16`.

For each classifier: stage 3's own training (`fit_classifier`, the laptop preset's recipe and
cohort, one torch thread per trial as a packed trial has) on (a) the laptop preset's scarce
training split and (b) all training patients (the oracle arm with every held-out patient), per
seed; then the sweep's own patient-level statistics on the test split. The baseline is (a): the
ratio is each classifier's test AUC with all patients over the scarce split's. Also printed:
the validation AUC after each pass, mean over seeds, which is what the training budget is
chosen from (a budget at which the larger set has not stopped improving cannot show what
more data gives).
"""
from __future__ import annotations

import argparse
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from bench.common import Section, phantom_arrays
from orchestrator.config import load_config
from orchestrator.statistics import utility
from trainables.classify.arms import Arm, patient_labels
from trainables.classify.loop import fit_classifier
from trainables.cohort import HELD_OUT, TRAIN


def all_patients_ratio(arrays: dict) -> float:
    """The oracle multiple that adds every held-out patient of the scarcer label."""
    split, patients = np.asarray(arrays["split"]), np.asarray(arrays["patients"])
    label_of = patient_labels(patients, np.asarray(arrays["labels"]))
    def count(code, label):
        return sum(1 for p in np.unique(patients[split == code]) if label_of[p] == label)
    return min(count(HELD_OUT, label) / count(TRAIN, label) for label in (0, 1))


def one_trial(job: tuple) -> dict:
    import torch
    torch.set_num_threads(1)  # a packed stage-3 trial's share
    settings, arrays = job
    curve = []
    final = fit_classifier(settings, arrays, None, lambda m: curve.append(m.get("val_auc")) if "final" not in m
                           else None)
    predictions = final["predictions"]
    return {"classifier": settings["classifier"], "arm_id": settings["arm_id"], "seed": settings["seed"],
            "threshold": predictions["threshold"], "degenerate": final["degenerate"],
            "test_scores": np.asarray(predictions["scores"]), "test_labels": np.asarray(predictions["labels"]),
            "test_patients": np.asarray(predictions["patients"]), "val_curve": curve,
            "best_epoch": final["best_epoch"], "real_patients": final["real_patients"]}


def measure(quick: bool = False) -> Section:
    """The suite's run: three classifiers at 100 passes and 3 seeds (`quick`: yolov8, 2 passes, 2 seeds)."""
    if quick:
        return learning_curve(["yolov8"], 2, [0, 1], [])
    return learning_curve(["yolov8", "mobilenet", "resnet"], 100, [0, 1, 2], [])


def learning_curve(classifiers: list[str], epochs: int | None, seeds: list[int], overrides: list[str],
                   workers: int = 2) -> Section:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config("pet", "laptop", overrides=[f"data.cache_dir={Path(tmp) / 'cache'}", *overrides])
        arrays = phantom_arrays(cfg)
    c = cfg.classify
    recipe = c.recipe()
    ratio = all_patients_ratio(arrays)
    jobs = []
    for classifier in classifiers:
        passes = epochs or c.epochs_per_classifier.get(classifier, c.epochs)
        for seed in seeds:
            for arm in (Arm("real"), Arm("oracle", ratio=ratio)):  # the scarce split; every training patient
                settings = {**recipe, "classifier": classifier, **arm.settings(), "arm_id": arm.id,
                            "seed": seed, "epochs": passes, "patience": passes, "weights": ""}
                jobs.append((settings, arrays))
    with ProcessPoolExecutor(workers) as pool:
        trials = pd.DataFrame(list(pool.map(one_trial, jobs)))
    summary = utility(trials, c.min_test_patients_per_label)
    rows, curves = [], []
    for arm in summary.arms:
        if arm.arm_id == "real":
            continue
        scarce = next(a for a in summary.arms if a.classifier == arm.classifier and a.arm_id == "real")
        group = trials[trials.classifier == arm.classifier]
        rows.append({"classifier": arm.classifier,
                     "scarce AUC": scarce.metrics["roc_auc"].interval(),
                     "all patients AUC": arm.metrics["roc_auc"].interval(),
                     "gain": arm.deltas["roc_auc"].interval(),
                     "patients": f"{int(group[group.arm_id == 'real'].real_patients.iloc[0])} / "
                                 f"{int(group[group.arm_id != 'real'].real_patients.iloc[0])}",
                     "degenerate": "; ".join(filter(None, [scarce.degenerate, arm.degenerate])) or "no",
                     "best epochs": f"{list(group[group.arm_id == 'real'].best_epoch)} / "
                                    f"{list(group[group.arm_id != 'real'].best_epoch)}"})
        for arm_id, trials_of in group.groupby("arm_id"):
            mean = np.nanmean(np.array(list(trials_of.val_curve), dtype=float), axis=0)
            curves.append({"classifier": arm.classifier, "arm": arm_id,
                           "validation AUC by pass": " ".join(f"{v:.2f}" for v in mean)})
    return Section(
        title="Stage 3: learning curve of each classifier at the laptop recipe (scarce split vs all patients)",
        method=(f"`python -m bench.learning_curve`: stage 3's training (`fit_classifier`) on the laptop preset's "
                f"cohort, one thread per trial, {len(seeds)} seeds; test split {summary.cases.describe()}. "
                "Baseline: the scarce training split (real only)."),
        rows=rows, tables={"validation AUC after each pass, mean over seeds": curves},
        ratios={f"{r['classifier']}: all patients / scarce test AUC":
                next(a for a in summary.arms if a.classifier == r["classifier"] and a.arm_id != "real")
                .metrics["roc_auc"].value /
                next(a for a in summary.arms if a.classifier == r["classifier"] and a.arm_id == "real")
                .metrics["roc_auc"].value for r in rows})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classifiers", default="yolov8,vgg16,resnet,mobilenet")
    parser.add_argument("--epochs", type=int, default=None, help="passes for every classifier (default: the preset's)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--set", action="append", default=[], help="config override key=value (repeatable)")
    args = parser.parse_args()
    section = learning_curve(args.classifiers.split(","), args.epochs, [int(s) for s in args.seeds.split(",")],
                             args.set)
    print(section.markdown())


if __name__ == "__main__":
    main()
