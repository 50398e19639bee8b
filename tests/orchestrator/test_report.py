"""The report: stage-3 figures with what they rest on, and claims only where the numbers allow them."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from orchestrator.report import conclusions, utility_table, write_report
from orchestrator.statistics import utility


def trial(arm_id: str, seed: int, scores, labels, patients, degenerate: str = "") -> dict:
    return {"classifier": "resnet", "arm_id": arm_id, "seed": seed, "threshold": 0.5, "test_scores": list(scores),
            "test_labels": list(labels), "test_patients": list(patients), "degenerate": degenerate,
            "test_roc": {"fpr": [0, 1], "tpr": [0, 1]}}


@pytest.fixture
def results() -> pd.DataFrame:
    """24 patients (12 per label) x 2 slices, 3 seeds; synthetic separates them, real barely does."""
    rng = np.random.default_rng(0)
    patients = np.repeat(np.arange(24), 2)
    labels = patients % 2
    hard = rng.normal(0, 0.1, 48)  # what every seed's model gets wrong alike
    rows = []
    for seed in (0, 1, 2):
        rows.append(trial("real", seed, 0.5 + 0.1 * (labels - 0.5) + hard + rng.normal(0, 0.02, 48), labels,
                          patients))
        rows.append(trial("synthetic:cgan-1:0.5", seed, 0.5 + 0.6 * (labels - 0.5) + hard + rng.normal(0, 0.02, 48),
                          labels, patients))
        rows.append(trial("classic", seed, np.full(48, 0.4779), labels, patients,
                          degenerate="validation AUC 0.500 not above chance"))
    return pd.DataFrame(rows)


def test_every_row_says_what_it_rests_on_and_degenerate_arms_are_named(results):
    table = utility_table(utility(results, min_patients_per_label=10, draws=500)).set_index("arm")
    assert set(table["patients / slices / seeds"]) == {"24 / 48 / 3"}
    assert table.loc["classic", "status"] == "degenerate: validation AUC 0.500 not above chance"
    assert table.loc["classic", "Δ AUC p (Holm)"] == "" and table.loc["real", "Δ AUC"] == ""
    assert table.loc["synthetic:cgan-1:0.5", "AUC"].count("[") == 1  # estimate [low, high]


def test_conclusions_claim_the_surviving_difference_and_exclude_the_degenerate_arm(results):
    lines = conclusions(utility(results, min_patients_per_label=10, draws=500))
    assert any(line.startswith("synthetic:cgan-1:0.5 raised resnet's test AUC") for line in lines)
    assert "1 of 3 classifier x arm rows are degenerate and excluded from conclusions" in lines[0]
    assert lines[0].endswith("resnet: classic.")


def test_a_tiny_test_split_gets_no_claim(results):
    lines = conclusions(utility(results, min_patients_per_label=20, draws=500))
    assert lines == [lines[0]] and lines[0].startswith("No inferential claim: the test split has 12 benign and "
                                                       "12 malignant patients, fewer than 20 per label")


def test_report_is_written_as_markdown_and_html_with_its_figures(results, tmp_path):
    summary = utility(results, min_patients_per_label=10, draws=500)
    files = write_report(tmp_path, "pet-1", None, [], results, summary, "test split only")
    names = {f.name for f in files}
    assert {"report.md", "report.html", "roc_resnet.png"} <= names and all(f.exists() for f in files)
    markdown = (tmp_path / "report.md").read_text()
    assert "| resnet | synthetic:cgan-1:0.5 | 24 / 48 / 3 |" in markdown
    assert "24 test patients (12 benign, 12 malignant), 48 slices" in markdown and "Holm" in markdown
    assert "<table" in (tmp_path / "report.html").read_text()


def test_failed_trials_are_listed_with_their_reason(results, tmp_path):
    summary = utility(results, min_patients_per_label=10, draws=200)
    failed = pd.DataFrame([{"classifier": "resnet", "arm": "synthetic:cgan-1:2", "seed": 1,
                            "reason": "ValueError: the synthetic set has 70 images; this arm needs 72"}])
    write_report(tmp_path, "pet-1", None, [], results, summary, "test split only", failed)
    markdown = (tmp_path / "report.md").read_text()
    assert "## Classifier trials that failed (1)" in markdown and "needs 72" in markdown
    write_report(tmp_path, "pet-1", None, [], results, summary, "test split only", failed.iloc[:0])
    assert "Classifier trials that failed" not in (tmp_path / "report.md").read_text()
