"""Stage 3's Tune trial as Ray runs it: one classifier, one arm, one seed.

Its actor imports this module, so it holds only what a trial runs (as `trainables.gan.trial` does
for stage 1): the driver's stage module, with MLflow and pandas, took a fresh process about 2 s
more to import.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import ray
from ray import tune

from trainables.classify.arms import Arm
from trainables.classify.loop import PREDICTIONS, fit_classifier

PREDICTIONS_FILE = "predictions.json"  # in each trial's final checkpoint


def classifier_trial(config: dict, data: list, synthetic: dict) -> None:
    """One Tune trial. `data` / `synthetic` hold ObjectRefs."""
    settings = trial_settings(config)
    synthetic_set = ray.get(synthetic[settings["set"]]) if settings["set"] else None
    fit_classifier(settings, ray.get(data[0]), synthetic_set, report_to_tune)


def trial_settings(config: dict) -> dict:
    """What `fit_classifier` gets for a trial's config (its grid cell, seed and the recipe): the one
    place stage 3 and `reproduce` build it."""
    cell = config["cell"]
    classifier = cell["classifier"]
    return {**config, **cell, **Arm.parse(cell["arm_id"]).settings(), "weights": config["weights"].get(classifier, ""),
            **config.get("per_classifier", {}).get(classifier, {})}


def report_to_tune(result: dict) -> None:
    """Metrics to Tune; the final report's per-slice predictions as a file in the trial's checkpoint
    (persisted to the sweep's storage, local or S3), not as metrics."""
    predictions = result.get(PREDICTIONS)
    metrics = {k: v for k, v in result.items() if k != PREDICTIONS}
    if predictions is None:
        tune.report(metrics)
        return
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / PREDICTIONS_FILE).write_text(json.dumps(predictions))
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def read_predictions(checkpoint) -> dict:
    """A finished trial's per-slice test predictions (scores, labels, patients, threshold, roc, confusion_matrix)."""
    with checkpoint.as_directory() as folder:
        return json.loads((Path(folder) / PREDICTIONS_FILE).read_text())
