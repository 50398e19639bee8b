"""Does more real data help each product classifier at the laptop recipe? The oracle's learning
curve, measured outside Ray.

    python -m bench.learning_curve [--classifiers yolov8,resnet] [--epochs 20] [--seeds 0,1,2]

For each classifier: stage 3's own training (`fit_classifier`, the laptop preset's recipe with each
classifier's own settings, its cohort, one torch thread per trial as a packed trial has) on the
scarce training split (real only, the baseline) and on each oracle rung of the preset (the scarce
split plus that many times its patients from the held-out ones), per seed; then the sweep's own
patient-level statistics on the test split. Printed: each rung's test AUC and its gain over the
scarce split with their intervals, each seed's AUC, the ratio of the largest rung's AUC to the
scarce split's, the validation AUC at each validated pass (mean over seeds: what the training budget is
chosen from; a budget at which the largest rung has not stopped improving cannot show what more
data gives), and the ideal observer on the cohort's recorded nodule parameters (what they allow; the
images allow less).

In `python -m bench`: yolov8, resnet and mobilenet, 3 seeds (a few minutes on 2 cores); VGG-16
runs with `--classifiers vgg16` (about 6 minutes more).
"""
from __future__ import annotations

import argparse
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bench.common import Section, phantom_arrays
from orchestrator.config import load_config
from orchestrator.data.phantom import recorded_ceiling
from orchestrator.stages.classify import fit_ladder
from orchestrator.statistics import utility
from orchestrator.sweep import phantom_folder
from trainables.classify.arms import Arm
from trainables.classify.loop import auroc, fit_classifier


def one_trial(job: tuple) -> dict:
    torch.set_num_threads(1)  # a packed stage-3 trial's share
    settings, arrays = job
    curve = []
    final = fit_classifier(settings, arrays, None, lambda m: curve.append((m["epoch"], m.get("val_auc")))
                           if "final" not in m else None)
    predictions = final["predictions"]
    return {"classifier": settings["classifier"], "arm_id": settings["arm_id"], "seed": settings["seed"],
            "threshold": predictions["threshold"], "degenerate": final["degenerate"],
            "test_scores": np.asarray(predictions["scores"]), "test_labels": np.asarray(predictions["labels"]),
            "test_patients": np.asarray(predictions["patients"]), "val_curve": curve,
            "best_epoch": final["best_epoch"], "real_patients": final["real_patients"]}


def seed_auc(trial) -> float:
    return auroc(torch.as_tensor(trial.test_scores), torch.as_tensor(trial.test_labels))


def measure(quick: bool = False) -> Section:
    """The suite's run: three classifiers, 3 seeds (`quick`: yolov8, 2 passes, 2 seeds)."""
    if quick:
        return learning_curve(["yolov8"], 2, [0, 1], [])
    return learning_curve(["yolov8", "resnet", "mobilenet"], None, [0, 1, 2], [])


def learning_curve(classifiers: list[str], epochs: int | None, seeds: list[int], overrides: list[str],
                   workers: int = 2) -> Section:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config("pet", "laptop", overrides=[f"data.cache_dir={Path(tmp) / 'cache'}", *overrides])
        arrays = phantom_arrays(cfg)
        ceiling = recorded_ceiling(phantom_folder(cfg), cfg.data.modality)
    cfg, dropped = fit_ladder(cfg, arrays)
    c = cfg.classify
    arms = [Arm("real"), *(Arm("oracle", ratio=rung) for rung in c.oracle_rungs)]
    jobs = []
    for classifier in classifiers:
        recipe = {**c.recipe(classifier), **({"epochs": epochs} if epochs else {})}
        jobs += [({**recipe, "classifier": classifier, **arm.settings(), "arm_id": arm.id, "seed": seed, "weights": ""},
                  arrays) for seed in seeds for arm in arms]
    with ProcessPoolExecutor(workers) as pool:
        trials = pd.DataFrame(list(pool.map(one_trial, jobs)))
    summary = utility(trials, c.min_test_patients_per_label)
    rows, curves, ratios = [], [], {}
    for arm in summary.arms:
        group = trials[(trials.classifier == arm.classifier) & (trials.arm_id == arm.arm_id)]
        gain = arm.deltas.get("roc_auc")
        rows.append({"classifier": arm.classifier, "arm": arm.arm_id, "real patients": int(group.real_patients.iloc[0]),
                     "test AUC": arm.metrics["roc_auc"].interval(), "gain over scarce": gain.interval() if gain else "",
                     "each seed's AUC": " ".join(f"{seed_auc(t):.2f}" for t in group.itertuples()),
                     "degenerate": arm.degenerate or "no"})
        by_pass = pd.DataFrame([point for curve in group.val_curve for point in curve], columns=["pass", "auc"])
        mean = by_pass.groupby("pass").auc.mean()
        curves.append({"classifier": arm.classifier, "arm": arm.arm_id,
                       "validation AUC (pass: AUC)": " ".join(f"{n}: {v:.2f}" for n, v in mean.items())})
    for classifier in classifiers:
        auc = {a.arm_id: a.metrics["roc_auc"].value for a in summary.arms if a.classifier == classifier}
        ratios[f"{classifier}: largest rung / scarce test AUC"] = auc[arms[-1].id] / auc["real"]
    return Section(
        title="Stage 3: the oracle's learning curve of each classifier at the laptop recipe",
        method=(f"`python -m bench.learning_curve`: stage 3's training (`fit_classifier`) on the laptop preset's "
                f"cohort and recipe, one thread per trial, {len(seeds)} seeds; the scarce split and each oracle rung "
                f"({', '.join(a.title for a in arms[1:])}); test split {summary.cases.describe()}. Baseline: the "
                f"scarce training split (real only).{' ' + dropped if dropped else ''}"),
        rows=rows, tables={"validation AUC at each validated pass, mean over seeds": curves}, ratios=ratios,
        notes=[f"The ceiling: {ceiling.describe()}."])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classifiers", default="yolov8,vgg16,resnet,mobilenet")
    parser.add_argument("--epochs", type=int, default=None, help="passes for every classifier (default: its recipe's)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--set", action="append", default=[], help="config override key=value (repeatable)")
    args = parser.parse_args()
    section = learning_curve(args.classifiers.split(","), args.epochs, [int(s) for s in args.seeds.split(",")],
                             args.set)
    print(section.markdown())


if __name__ == "__main__":
    main()
