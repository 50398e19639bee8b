"""The report's statistics: intervals over seeds, and differences paired by classifier and seed."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from orchestrator.report import mean_ci, utility_table, write_report


def trial(classifier: str, arm_id: str, seed: int, accuracy: float, scores: list[float]) -> dict:
    labels = [0, 0, 1, 1]
    return {"classifier": classifier, "arm_id": arm_id, "seed": seed, "test_accuracy": accuracy,
            "test_sensitivity": 0.5, "test_specificity": 0.5, "test_roc_auc": accuracy, "threshold": 0.5,
            "test_scores": scores, "test_labels": labels, "test_roc": {"fpr": [0, 1], "tpr": [0, 1]}}


@pytest.fixture
def results() -> pd.DataFrame:
    return pd.DataFrame([
        trial("resnet", "real", 0, 0.50, [0.1, 0.6, 0.4, 0.9]),
        trial("resnet", "real", 1, 0.60, [0.2, 0.3, 0.7, 0.8]),
        trial("resnet", "synthetic:cgan-1:0.5", 0, 0.70, [0.1, 0.2, 0.7, 0.9]),
        trial("resnet", "synthetic:cgan-1:0.5", 1, 0.90, [0.1, 0.2, 0.8, 0.9]),
    ])


def test_mean_ci_is_the_t_interval_and_says_nothing_for_one_value():
    mean, half = mean_ci([0.5, 0.6, 0.7])
    assert mean == pytest.approx(0.6)
    assert half == pytest.approx(scipy.stats.t.ppf(0.975, 2) * np.std([0.5, 0.6, 0.7], ddof=1) / math.sqrt(3))
    assert math.isnan(mean_ci([0.5])[1])


def test_differences_pair_each_seed_with_its_own_real_only_run(results):
    table = utility_table(results).set_index("arm")
    row = table.loc["synthetic:cgan-1:0.5"]
    assert row["seeds"] == 2
    # paired deltas 0.2 and 0.3: mean 0.25, t-interval over the two
    assert row["Δ accuracy"] == f"0.250 ± {scipy.stats.t.ppf(0.975, 1) * np.std([0.2, 0.3], ddof=1) / math.sqrt(2):.3f}"
    assert len(row["DeLong p"].split(" / ")) == 2 and len(row["McNemar p"].split(" / ")) == 2
    assert table.loc["real", "Δ accuracy"] == ""


def test_report_is_written_as_markdown_and_html_with_its_figures(results, tmp_path):
    files = write_report(tmp_path, "pet-1", None, [], results, "test split only")
    names = {f.name for f in files}
    assert {"report.md", "report.html", "roc_resnet.png"} <= names and all(f.exists() for f in files)
    markdown = (tmp_path / "report.md").read_text()
    assert "| resnet | synthetic:cgan-1:0.5 | 2 | 0.800 ± " in markdown
    assert "<table" in (tmp_path / "report.html").read_text()
