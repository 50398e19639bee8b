"""The report: stage-3 figures with what they rest on, and claims only where the numbers allow them."""
from __future__ import annotations

import html
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from orchestrator.data.phantom import Ceiling
from orchestrator.report import (SweepOutcome, conclusions, findings, reach, utility_table, verdict, worth_words,
                                 write_report)
from orchestrator.statistics import Estimate, utility, worth
from browser import rendered_dom, screenshot


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
        rows.append(trial("real", seed, 0.5 + 0.05 * (labels - 0.5) + hard + rng.normal(0, 0.02, 48), labels,
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
    files = write_report(tmp_path, SweepOutcome("pet-1", results=results, summary=summary, test_note="test split only"))
    names = {f.name for f in files}
    assert {"report.md", "report.html", "roc_resnet.png", "forest.png"} <= names and all(f.exists() for f in files)
    markdown = (tmp_path / "report.md").read_text()
    assert "| resnet | synthetic:cgan-1:0.5 | 24 / 48 / 3 |" in markdown
    assert "24 test patients (12 benign, 12 malignant), 48 slices" in markdown and "Holm" in markdown
    assert markdown.index("## Findings") < markdown.index("## Stage 3")
    assert "| resnet | classic | 0, 1, 2 | validation AUC 0.500 not above chance |" in markdown  # degenerate trials
    page = (tmp_path / "report.html").read_text()
    # one self-contained file: every figure embedded, none fetched from beside it
    assert "<table" in page and page.count("src='data:image/png;base64,") == markdown.count("![")
    assert "src='roc" not in page and "name='viewport'" in page


def test_findings_say_what_each_classifier_gained_and_what_survives_holm(results):
    summary = utility(results, min_patients_per_label=10, draws=500)
    lines = findings(SweepOutcome("pet-1", results=results, summary=summary, caveats=["train fraction 0.15"]))
    assert lines[0].startswith("Stage 3 on 24 test patients (12 benign, 12 malignant), 48 slices")
    resnet = next(line for line in lines if line.startswith("resnet (real only AUC"))
    assert "synthetic:cgan-1:0.5 +0." in resnet and resnet.endswith("; degenerate: classic.")
    assert "* survives Holm's correction across the 1 comparisons (p < 0.05): resnet synthetic:cgan-1:0.5." in lines
    assert lines[-1] == "train fraction 0.15"


def with_ladder(results: pd.DataFrame, top_separation: float) -> pd.DataFrame:
    """`results` (12 training patients per trial) plus an oracle ladder: rung 1 (24 patients) scores as the
    synthetic arm does, rung 2 (36 patients) separates the labels by `top_separation`."""
    rng = np.random.default_rng(1)
    rung1 = results[results.arm_id == "synthetic:cgan-1:0.5"].assign(arm_id="oracle:1", real_patients=24)
    rung2 = rung1.assign(arm_id="oracle:2", real_patients=36)
    rung2["test_scores"] = [list(0.5 + top_separation * (np.array(r.test_labels) - 0.5) + rng.normal(0, 0.1, 48))
                            for r in rung2.itertuples()]
    return pd.concat([results.assign(real_patients=12), rung1, rung2], ignore_index=True)


def test_findings_and_verdict_say_what_a_synthetic_arm_is_worth_in_real_patients(results):
    ladder = with_ladder(results, top_separation=0.9)
    outcome = SweepOutcome("pet-1", results=ladder, summary=utility(ladder, min_patients_per_label=10, draws=500))
    lines = findings(outcome)
    assert "resnet: the positive control works: the oracle with 36 real patients gains +" in " ".join(lines)
    assert "resnet: synthetic:cgan-1:0.5 is worth 24 real patients [" in " ".join(lines)
    opening = verdict(outcome)[0]
    assert opening.startswith("resnet: the best synthetic arm (synthetic:cgan-1:0.5) changes its test AUC by +")
    assert "worth 24 real patients [" in opening and "against 12 in the scarce set" in opening
    assert opening.endswith("(more real patients help (the positive control works)).")


def test_the_verdict_reads_a_worth_off_either_end_of_the_curve_against_that_end():
    rungs, curve = np.array([30.0, 60.0, 120.0]), [Estimate(v, v - 0.01, v + 0.01, math.nan) for v in (0.7, 0.8, 0.9)]
    below, beyond, between = (worth(rungs, curve, Estimate(v, v - 0.01, v + 0.01, math.nan)) for v in (0.6, 0.95, 0.75))
    assert worth_words(below, 30) == "worth less than the scarce set's 30 real patients"
    assert worth_words(beyond, 30) == "worth more than the largest rung's 120 real patients"
    assert worth_words(between, 30) == "worth 45 real patients, against 30 in the scarce set"


def test_an_oracle_that_gains_nothing_says_the_split_cannot_tell_and_prices_nothing(results, tmp_path):
    flat = results[results.arm_id == "real"].assign(arm_id="oracle:1", real_patients=24)
    both = pd.concat([results.assign(real_patients=12), flat], ignore_index=True)
    outcome = SweepOutcome("pet-1", results=both, summary=utility(both, min_patients_per_label=10, draws=500))
    lines = findings(outcome)
    assert any(line.startswith("resnet: the oracle with 24 real patients gains +0.000 [") and line.endswith(
        "reaching zero: this test split cannot show a gain of that size, from synthetic images or otherwise.")
        for line in lines)
    assert "resnet: no arm is priced in real patients" in " ".join(lines) and "real patients [" not in " ".join(lines)
    opening = verdict(outcome)[0]
    assert "more real patients show no gain either, so this split cannot tell" in opening and "worth" not in opening
    write_report(tmp_path, outcome)  # the figure draws the flat curve alone, and says why
    assert (tmp_path / "learning_curve_resnet.png").stat().st_size > 10_000
    assert "no arm is priced" in (tmp_path / "report.md").read_text()


def test_the_learning_curve_shows_the_ideal_observer_where_the_cohort_records_its_nodules(results, tmp_path):
    ladder = with_ladder(results, top_separation=0.9)
    summary = utility(ladder, min_patients_per_label=10, draws=500)
    for name in ("with", "without"):
        (tmp_path / name).mkdir()
    write_report(tmp_path / "with", SweepOutcome("pet-1", results=ladder, summary=summary, ceiling=Ceiling(0.93, 200)))
    said = (tmp_path / "with" / "report.md").read_text()
    assert "Dashed, the ceiling: an ideal observer on the 200 patients' recorded nodule parameters" in said
    assert "reaches AUC 0.930" in said
    write_report(tmp_path / "without", SweepOutcome("pet-1", results=ladder, summary=summary))
    assert "ideal observer" not in (tmp_path / "without" / "report.md").read_text()


def test_the_controls_are_read_by_their_intervals_outside_the_holm_family(results):
    """A permuted-label arm that gains as much as the synthetic one is named in the verdict; one that
    gains nothing is not; neither costs the claims any power."""
    gains = results[results.arm_id == "synthetic:cgan-1:0.5"].assign(arm_id="permuted:cgan-1:0.5")
    none = results[results.arm_id == "real"].assign(arm_id="permuted:cgan-1:0.5")
    for permuted, named in ((gains, True), (none, False)):
        table = pd.concat([results, permuted], ignore_index=True)
        summary = utility(table, min_patients_per_label=10, draws=500)
        control = next(a for a in summary.arms if a.arm.kind == "permuted")
        assert np.isnan(control.holm_p) and summary.family_size() == 1  # the synthetic arm alone
        opening = verdict(SweepOutcome("pet-1", results=table, summary=summary))[0]
        assert ("the permuted-label control gains over real only" in opening) == named


def test_failed_trials_are_listed_with_their_reason(results, tmp_path):
    summary = utility(results, min_patients_per_label=10, draws=200)
    failed = pd.DataFrame([{"classifier": "resnet", "arm": "synthetic:cgan-1:2", "seed": 1,
                            "reason": "ValueError: the synthetic set has 70 images; this arm needs 72"}])
    write_report(tmp_path, SweepOutcome("pet-1", results=results, summary=summary, failed=failed))
    markdown = (tmp_path / "report.md").read_text()
    assert "### Classifier trials that failed (1)" in markdown and "needs 72" in markdown
    write_report(tmp_path, SweepOutcome("pet-1", results=results, summary=summary, failed=failed.iloc[:0]))
    assert "Classifier trials that failed" not in (tmp_path / "report.md").read_text()


def test_the_html_report_reads_in_a_browser_at_desktop_and_phone_width(results, tmp_path):
    """Rendered by a real browser (Debian's chromium, headless): every figure loads from the one file, and on a
    phone-wide window nothing but the tables' own boxes scrolls sideways. The screenshots are kept to look at."""
    summary = utility(results, min_patients_per_label=10, draws=200)
    write_report(tmp_path, SweepOutcome("pet-1", results=results, summary=summary))
    page = tmp_path / "report.html"
    probe = tmp_path / "probe.html"  # the report plus a script that writes what the browser measured into the DOM
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    for width in (1280, 390):
        measured = browser_measures(probe, width)
        assert measured["images"] and all(w > 0 for w in measured["images"]), measured  # every figure decoded
        assert measured["scrollWidth"] <= measured["innerWidth"], measured  # no sideways scrolling of the page
        screenshot(page.as_uri(), width, 2400, tmp_path / f"report_{width}.png")


PROBE = """<script>window.addEventListener('load', () => { document.body.setAttribute('data-measured', JSON.stringify({
images: [...document.images].map(i => i.naturalWidth), scrollWidth: document.documentElement.scrollWidth,
innerWidth: window.innerWidth})); });</script>"""


def browser_measures(page: Path, width: int) -> dict:
    found = re.search(r'data-measured="([^"]*)"', dom := rendered_dom(page.as_uri(), width))
    assert found, dom[-2000:]
    return json.loads(html.unescape(found.group(1)))


def test_the_forest_plot_draws_no_interval_for_a_degenerate_arm():
    """A degenerate arm's difference is a hollow point: nothing to read an interval into."""
    from orchestrator.plots import forest_figure

    row = {"arm": "synthetic", "claimed": False, "Δ AUC": (0.05, -0.01, 0.11), "Δ sensitivity": (0.1, 0.0, 0.2)}
    fig = forest_figure([{**row, "label": "resnet synthetic 1x", "degenerate": False},
                         {**row, "label": "vgg16 synthetic 1x", "degenerate": True}], "12 test patients")
    for ax in fig.axes:
        spans = [line.get_xdata() for line in ax.get_lines() if len(line.get_xdata()) == 2 and line.get_linestyle() == "-"
                 and line.get_xdata()[0] != line.get_xdata()[1]]
        hollow = [line for line in ax.get_lines() if line.get_marker() == "o" and line.get_markerfacecolor() == "none"]
        assert len(spans) == 1 and len(hollow) == 1  # the sound row's interval; the degenerate row's point
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()][1] == "vgg16 synthetic 1x (degenerate)"


def test_a_detectable_difference_beyond_what_auc_allows_is_said_as_no_detectable_gain():
    assert reach(0.071, 0.80) == "it detects Δ AUC 0.07 or more at 80 % power"
    said = reach(0.82, 0.54)  # a split that could only see a gain past AUC 1
    assert said.startswith("no gain is detectable here: it needs Δ AUC 0.82") and "0.46" in said
