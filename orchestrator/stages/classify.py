"""Stage 3: what the synthetic sets are worth to classifiers, scored on real test patients only.

A Tune grid (Tune's basic variant generator, not a search) over classifier x arm x seed.
Arms: `real`; `classic` (real + flips / small rotations); `synthetic:<set>:<ratio>` for each
synthetic set and mixing ratio; `permuted:<set>:<ratio>`, the set at the largest ratio with
its labels shuffled (a negative control); `oracle:<rung>` when `data.train_fraction` < 1, the
slices of rung x as many held-out training patients per label (the learning curve that says what
more real patients give, and what a synthetic arm is worth in them: `classify.oracle_rungs`);
and `tstr:<set>`, the train-synthetic-test-real proxy, for one small classifier. Every arm of a
classifier trains for the same number of optimiser steps (`trainables.classify.loop`). Each
trial (`trainables.classify.trial`) runs `trainables.classify.loop.fit_classifier`, with the
same recipe for every arm, in its own process with resources from config (fractional GPUs
allowed, so small trials share one) and the host memory its classifier's training takes.
"""
from __future__ import annotations

import dataclasses
import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import ray
from ray import tune

from orchestrator.config import Config
from orchestrator.plots import plot_confusion, plot_roc
from orchestrator.report import arm_worth, conclusions, control_works, markdown_table, utility_table
from orchestrator.stages import StageContext
from orchestrator.statistics import Utility, utility
from orchestrator.tracking import NOTE_TAG, ChildRunLogger, SweepTracker, split_dataset, synthetic_dataset
from trainables.classify.arms import Arm, oracle_patients, real_patients
from trainables.classify.loop import FINAL_METRICS, FINAL_TAGS, steps_per_pass
from trainables.classify.models import training_memory_bytes
from trainables.classify.trial import classifier_trial, read_predictions, trial_settings
from trainables.cohort import HELD_OUT, TEST, TRAIN
from trainables.system import SYSTEM_METRICS

EXPERIMENT = "classify"


@dataclass(frozen=True)
class ClassifyResult:
    results: pd.DataFrame  # one row per finished trial: final figures and per-slice test predictions
    failed: pd.DataFrame  # trials without test figures, with the reason
    summary: Utility | None  # the patient-level statistics (None when no trial finished)

    def __bool__(self) -> bool:
        return self.summary is not None


def run(context: StageContext, sets: list) -> ClassifyResult:
    """Stage 3: the grid over classifier x arm x seed on the synthetic `sets`; the statistics; the test
    split's size on the parent run; the table printed."""
    cfg, tracker = context.cfg, context.tracker
    refs = {s.name: ray.put(s.as_arrays()) for s in sets}
    datasets = {s.name: synthetic_dataset(s.name, s.images, s.labels, context.sweep_id) for s in sets}
    splits = ({code: split_dataset(tracker.dataset, context.arrays, code) for code in (HELD_OUT, TEST)}
              if tracker.dataset else {})
    logger = ClassifierTrialLogger(tracker, datasets, splits)
    grid = build_tuner(cfg, context.data_ref, refs, context.sweep_path, [logger], resume=context.resume).fit()
    results, failed = results_table(grid), failed_trials(grid)
    if len(failed):
        print(f"stage 3: {len(failed)} classifier trial(s) failed; the report lists them with the reason")
    if not len(results):
        return ClassifyResult(results, failed, None)
    summary = utility(results, cfg.classify.min_test_patients_per_label, cfg.classify.bootstrap_draws)
    log_test_split(tracker, summary)
    log_arm_summaries(tracker, summary)
    print(f"stage 3 (real test split: {summary.cases.describe()}; patient-bootstrap 95 % intervals; Δ against "
          "real only, p Holm-adjusted):")
    table = utility_table(summary)
    columns = ["classifier", "arm", "accuracy", "AUC", "Δ AUC", "Δ AUC p (Holm)", "status"]
    print(markdown_table(table[[c for c in columns if c in table]].fillna("")))
    print("\n".join(conclusions(summary)))
    return ClassifyResult(results, failed, summary)


def grid_trials(cfg: Config, set_names: list[str]) -> list[dict]:
    """Every trial of the grid: each (classifier, arm) pair at each of that classifier's seeds."""
    return [{**cell, "seed": seed} for cell in grid_cells(cfg, set_names)
            for seed in cfg.classify.seeds_of(cell["classifier"])]


def grid_cells(cfg: Config, set_names: list[str]) -> list[dict]:
    """Every (classifier, arm) pair of the grid; the TSTR proxy arm only for `tstr_classifier`."""
    c = cfg.classify
    arms = [Arm("real")] + ([Arm("classic")] if c.classic else [])
    arms += [Arm("synthetic", name, ratio) for name in set_names for ratio in c.ratios]
    if c.permuted and c.ratios:
        arms += [Arm("permuted", name, max(c.ratios)) for name in set_names]
    if cfg.data.train_fraction < 1:
        arms += [Arm("oracle", ratio=rung) for rung in c.oracle_rungs]
    cells = [{"classifier": name, "arm_id": arm.id} for name in c.classifiers for arm in arms]
    return cells + [{"classifier": c.tstr_classifier, "arm_id": Arm("tstr", name).id} for name in set_names]


def fit_ladder(cfg: Config, arrays: dict) -> tuple[Config, str]:
    """The config with the oracle rungs the held-out pool can supply, and what was dropped and why ('' when
    nothing was): decided once, before any training."""
    rungs = cfg.classify.oracle_rungs
    if cfg.data.train_fraction >= 1 or not rungs:
        return cfg, ""
    fitting = []
    for rung in rungs:
        try:
            oracle_patients(arrays, rung, seed=0)
        except ValueError as err:
            reason = str(err)
            break
        fitting.append(rung)
    else:
        return cfg, ""
    note = (f"stage 3: {reason}; the oracle's learning curve runs to rung {fitting[-1]:g}x" if fitting else
            f"stage 3: {reason}; the cohort is too small for an oracle ladder and stage 3 runs without one")
    return dataclasses.replace(cfg, classify=dataclasses.replace(cfg.classify, oracle_rungs=fitting)), note


def ladder_note(cfg: Config, arrays: dict) -> str:
    """How the oracle's rungs and each classifier's optimiser steps follow from this cohort's patient and
    slice counts, in the report's words ('' without a ladder)."""
    c = cfg.classify
    if cfg.data.train_fraction >= 1 or not c.oracle_rungs:
        return ""
    split, patients = np.asarray(arrays["split"]), np.asarray(arrays["patients"])
    scarce = len(np.unique(patients[split == TRAIN]))
    added = [real_patients(Arm("oracle", ratio=rung), arrays, seed=0) - scarce for rung in c.oracle_rungs]
    steps = {name: c.recipe(name)["epochs"] * steps_per_pass(arrays, c.recipe(name)["batch_size"])
             for name in dict.fromkeys([*c.classifiers, c.tstr_classifier])}
    return (f"The oracle's rungs (classify.oracle_rungs {', '.join(f'{rung:g}x' for rung in c.oracle_rungs)}) add that "
            f"multiple of the scarce set's patients of each label, drawn from the "
            f"{len(np.unique(patients[split == HELD_OUT]))} held out: {', '.join(map(str, added))} more patients; a "
            "rung they cannot fill is dropped before training. Every arm of a classifier takes the same optimiser "
            "steps, its passes over the scarce set's batches: "
            + ", ".join(f"{name} {n}" for name, n in steps.items()) + ".")


def test_split_note(cfg: Config, arrays: dict) -> str:
    """Said at the start when the test split is too small for intervals and p-values ('' when it is not)."""
    from orchestrator.statistics import Cases, inference_blocker
    from trainables.cohort import TEST

    test = np.asarray(arrays["split"]) == TEST
    blocker = inference_blocker(Cases.of(np.asarray(arrays["labels"])[test], np.asarray(arrays["patients"])[test]),
                                cfg.classify.min_test_patients_per_label)
    return f"stage 3 will give figures only: {blocker}" if blocker else ""


def recipe_note(c) -> str:
    """What the report says of classifiers with recipe settings of their own (or '' if none)."""
    own = {name: {**c.own_settings(name), **({"seeds": c.seeds_of(name)} if "seeds" in settings else {})}
           for name, settings in c.per_classifier.items()}
    if not own:
        return ""
    said = "; ".join(f"{name}: {_settings_words(settings)}" for name, settings in own.items())
    changed = {key for settings in own.values() for key in settings}
    others = _settings_words({key: value for key, value in {**c.recipe(), "seeds": c.seeds}.items() if key in changed})
    # the shared recipe is named only when some trained classifier runs it
    shared = f"; every other classifier {others}" if set(c.classifiers) - set(own) else ""
    shorter = [name for name, settings in own.items() if settings.get("epochs", c.epochs) < c.epochs]
    return (f" Classifiers with settings of their own (classify.per_classifier{shared}): {said}."
            + (f" {', '.join(shorter)} kept at its true architecture, trained for fewer optimiser steps because the "
               "full schedule does not fit this machine: its figures say less than the others'." if shorter else ""))


def _settings_words(settings: dict) -> str:
    return ", ".join(_setting_words(key, value) for key, value in sorted(settings.items()))


def _setting_words(key: str, value) -> str:
    if key == "epochs":
        return f"{value} passes"
    if key == "seeds":
        return f"{len(value)} seeds"
    if key == "input_px":
        return f"images at {value} px" if value else "images at the cohort's size"
    return f"{key} {value:g}" if isinstance(value, float) else f"{key} {value}"


def trial_resources(c) -> dict:
    """A classifier trial's CPUs and GPUs, as resolved at the edge (orchestrator.sweep.resolve_resources)."""
    return {"cpu": c.cpus_per_trial, "gpu": c.gpus_per_trial or 0.0}


def resources_by_classifier(c) -> dict[str, tune.PlacementGroupFactory]:
    """Each classifier's trial request: `trial_resources` plus the host memory its training takes
    (`training_memory_bytes`), so Ray packs no more trials on a node than its memory holds."""
    request = {key.upper(): value for key, value in trial_resources(c).items() if value}
    return {name: tune.PlacementGroupFactory([{**request, "memory": training_memory_bytes(name)}])
            for name in dict.fromkeys([*c.classifiers, c.tstr_classifier])}


def build_tuner(cfg: Config, data_ref, synthetic_refs: dict, sweep_path: str, callbacks: list,
                resume: bool) -> tune.Tuner:
    c = cfg.classify
    # A trial's seed is its cell's (classifiers may have seeds of their own), and a top-level key as well:
    # what its MLflow run, reproduce and the results read
    grid = {"cell": tune.grid_search(grid_trials(cfg, list(synthetic_refs))),
            "seed": tune.sample_from(lambda spec: spec.config.cell["seed"])}
    param_space = {**c.recipe(), "weights": dict(c.weights),
                   "per_classifier": {name: c.own_settings(name) for name in c.per_classifier}, **grid}
    param_space["gpus"] = trial_resources(c)["gpu"]  # what the trial holds: it computes there or fails
    requests = resources_by_classifier(c)
    trainable = tune.with_resources(tune.with_parameters(classifier_trial, data=[data_ref], synthetic=synthetic_refs),
                                    lambda config: requests[config["cell"]["classifier"]])
    if resume and tune.Tuner.can_restore(f"{sweep_path}/{EXPERIMENT}"):
        return tune.Tuner.restore(f"{sweep_path}/{EXPERIMENT}", trainable=trainable, param_space=param_space,
                                  resume_unfinished=True, resume_errored=True)
    # Reusing trial actors saves a process start and the imports per trial: 8 mobilenet trials on
    # 2 cores took 25.6 s instead of 46.1 s (bench/results.md). Safe here, unlike stage 1: a
    # classifier trial is a plain function that has returned when Tune resets its actor.
    return tune.Tuner(trainable, param_space=param_space, tune_config=tune.TuneConfig(reuse_actors=True),
                      run_config=tune.RunConfig(name=EXPERIMENT, storage_path=sweep_path, callbacks=callbacks))


def results_table(results: tune.ResultGrid) -> pd.DataFrame:
    """One row per finished trial: its classifier, arm, seed, final (test) metrics and per-slice predictions."""
    rows = []
    for result in results:
        final = result.metrics or {}
        if not finished(result):
            continue
        cell = result.config["cell"]
        predictions = read_predictions(result.checkpoint)
        rows.append({**cell, "seed": result.config["seed"], **Arm.parse(cell["arm_id"]).settings(),
                     **{k: final.get(k) for k in FINAL_METRICS}, "degenerate": final.get("degenerate", ""),
                     **{f"test_{k}": predictions[k] for k in ("scores", "labels", "patients", "roc")}})
    return pd.DataFrame(rows)


def finished(result) -> bool:
    """A trial that ended with its test figures and predictions."""
    return result.error is None and bool((result.metrics or {}).get("final")) and result.checkpoint is not None


def failed_trials(results: tune.ResultGrid) -> pd.DataFrame:
    """The trials that ended without test figures, with the first line of their error: the report
    lists them, since an arm missing without a word reads as an arm never asked for."""
    rows = []
    for result in results:
        if finished(result):
            continue
        cell = result.config["cell"]
        reason = (str(result.error).strip().splitlines()[-1] if result.error is not None
                  else "no final report with test predictions")
        rows.append({"classifier": cell["classifier"], "arm": cell["arm_id"], "seed": result.config["seed"],
                     "reason": reason[:300]})
    return pd.DataFrame(rows, columns=["classifier", "arm", "seed", "reason"])


def log_test_split(tracker: SweepTracker, summary: Utility) -> None:
    """What every stage-3 figure rests on, on the parent run: test patients and slices per label."""
    groups = summary.cases.patient_groups()
    tracker.log_sweep_figures(
        {"test_patients": summary.cases.n_patients, "test_slices": len(summary.cases.labels),
         **{f"test_patients_{group}": n for group, n in groups.items()}},
        tags={"test_split": summary.cases.describe(), "test_inference": summary.blocker or "yes",
              "degenerate_classifier_arms": str(sum(1 for a in summary.arms if a.degenerate))})


def log_arm_summaries(tracker: SweepTracker, summary: Utility) -> None:
    """One nested run per classifier x arm (tag `medgan.stage` = summary): the report's figures for it, so
    that the MLflow runs table compares arms on its own. The seed mean and patient-bootstrap interval of
    each test metric, the difference to real only with its interval and Holm-adjusted p, the smallest
    difference the split detects and, when the positive control works, the arm's worth in real patients;
    degenerate arms carry the figures with `degenerate` true and the reason, as in the report."""
    for classifier in dict.fromkeys(a.classifier for a in summary.arms):
        arms = [a for a in summary.arms if a.classifier == classifier]
        worth_of = arm_worth(arms) if control_works(arms) else {}
        for a in arms:
            figures = {f"test_{k}{end}": v for k, e in a.metrics.items() for end, v in estimate_parts(e).items()}
            figures |= {f"delta_{k}{end}": v for k, e in a.deltas.items() for end, v in estimate_parts(e).items()}
            figures |= {"p_holm": a.holm_p, "detectable_delta_roc_auc": a.detectable, "seeds": len(a.seeds),
                        "real_patients": a.real_patients}
            if a.arm_id in worth_of and not worth_of[a.arm_id].place:
                w = worth_of[a.arm_id]
                figures |= {"worth_patients": w.patients, "worth_patients_low": w.low, "worth_patients_high": w.high}
            arm = a.arm
            tags = {**arm_tags(arm), "seed": ",".join(map(str, a.seeds)), **degenerate_tags(a.degenerate),
                    **({"worth": worth_of[a.arm_id].describe()} if a.arm_id in worth_of else {}),
                    NOTE_TAG: f"{classifier} on the {arm.title} arm over {len(a.seeds)} seed(s), on "
                              f"{summary.cases.describe()}: seed means with patient-bootstrap 95 % intervals "
                              f"(`_low`, `_high`), the difference to real only (`delta_`) and its Holm-adjusted p: "
                              f"the report's figures for this row."}
            seeds = f"{len(a.seeds)} seed" + ("s" if len(a.seeds) != 1 else "")
            tracker.log_stage_run("summary", f"{classifier} | {arm.title} | {seeds}", {},
                                  {k: v for k, v in figures.items() if not math.isnan(v)}, [], "", tags=tags,
                                  key={"classifier": classifier, "arm_id": a.arm_id})


def arm_tags(arm: Arm) -> dict[str, str]:
    """What the runs table groups an arm's runs by (trials and summaries alike)."""
    return {"arm": arm.kind, "arm_role": arm.spec.role, "synthetic_set": arm.set or "none",
            "ratio": f"{arm.ratio:g}" if arm.ratio else "none"}


def degenerate_tags(reason: str) -> dict[str, str]:
    """`degenerate` as true / false, with the reason beside it when true."""
    return {"degenerate": str(bool(reason)).lower(), **({"degenerate_reason": reason} if reason else {})}


def estimate_parts(estimate) -> dict[str, float]:
    """An estimate's value and interval as metric suffixes: '', '_low', '_high'."""
    return {"": estimate.value, "_low": estimate.low, "_high": estimate.high}


class ClassifierTrialLogger(ChildRunLogger):
    """Stage 3: validation metrics per epoch; at the end the test figures, confusion matrix and ROC."""
    stage = "classify"

    def __init__(self, tracker: SweepTracker, synthetic: dict[str, dict], splits: dict[int, dict]):
        super().__init__(tracker)
        self.synthetic = synthetic  # set name -> its MLflow dataset fields (synthetic_dataset)
        self.splits = splits  # split code -> that split as an MLflow dataset (split_dataset): held out, test

    def inputs(self, trial) -> list[tuple[dict, str]]:
        """What this arm trained on, told apart in the UI's Datasets column: the cohort (when the arm holds
        real images), the synthetic set it draws on and the held-out patients (the oracle), each with the
        arm's `trains_on` as its context; and the test split it is scored on, as `evaluation`."""
        arm = Arm.parse(trial.config["cell"]["arm_id"])
        cohort = [self.tracker.dataset] if self.tracker.dataset and arm.spec.trains_on_real else []
        drawn = [self.synthetic[arm.set]] if arm.set in self.synthetic else []
        held_out = [self.splits[HELD_OUT]] if arm.spec.uses_held_out and HELD_OUT in self.splits else []
        scored_on = [(self.splits[TEST], "evaluation")] if TEST in self.splits else []
        return [(dataset, arm.trains_on) for dataset in cohort + drawn + held_out] + scored_on

    def run_name(self, trial) -> str:
        """`resnet | synthetic cgan-1a2b 2x | seed 1`: what the run is, readable in the runs table."""
        cell = trial.config["cell"]
        return f"{cell['classifier']} | {Arm.parse(cell['arm_id']).title} | seed {trial.config['seed']}"

    def run_tags(self, trial) -> dict[str, str]:
        """What the runs table groups by: classifier, arm (kind, id, role, set, ratio), seed."""
        cell = trial.config["cell"]
        arm = Arm.parse(cell["arm_id"])
        kept = ("the last epoch of the schedule is the kept one" if trial_settings(trial.config).get("keep") == "final"
                else "validation AUC per epoch chose the kept one")
        return {"classifier": cell["classifier"], "arm_id": arm.id, **arm_tags(arm), "seed": str(trial.config["seed"]),
                NOTE_TAG: f"Stage-3 classifier trial: {cell['classifier']} trained on the {arm.title} arm "
                          f"({arm.spec.role}), seed {trial.config['seed']}; {kept} (best_epoch), whose figures on "
                          f"the real test patients are the test_ metrics."}

    def params(self, trial) -> dict:
        """The training recipe as this classifier ran it: its own settings and weights file, not every
        classifier's; no param repeats a tag (classifier, arm, seed)."""
        config = dict(trial.config)
        classifier = config.pop("cell")["classifier"]
        config.pop("seed")
        config.update(config.pop("per_classifier", {}).get(classifier, {}))
        config["weights"] = config["weights"].get(classifier, "")
        return config

    def on_trial_result(self, iteration, trials, trial, result, **info):
        run_id = self.child_run(trial)
        if not result.get("final"):
            self.log_metrics(run_id, result, {"train_loss", "val_auc", "steps", "val_degenerate", *SYSTEM_METRICS},
                             int(result.get("epoch", 0)))
            return
        # Final figures at step 0 (the kept epoch is `best_epoch`): the chart view draws them as bars. The
        # steps taken are the per-epoch series' last value already.
        self.log_metrics(run_id, result, set(FINAL_METRICS) - {"steps"}, 0)
        tags = {key: str(result.get(key, "")) for key in FINAL_TAGS if key != "degenerate"}
        reason = str(result.get("degenerate") or "")
        self.writes.log_batch(run_id, tags={**tags, **degenerate_tags(reason)})

    def on_trial_complete(self, iteration, trials, trial, **info):
        """The test predictions (the trial's final checkpoint), with their confusion matrix and ROC."""
        run_id = self.child_run(trial)
        if trial.checkpoint is not None:
            predictions = read_predictions(trial.checkpoint)
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp)
                plot_confusion(predictions["confusion_matrix"], folder / "confusion_matrix.png")
                plot_roc({self.run_name(trial): predictions["roc"]}, folder / "roc.png")
                (folder / "test_predictions.json").write_text(json.dumps(predictions))
                self.writes.log_artifacts(run_id, folder, "test")
        self.writes.terminate(run_id, "FINISHED")
