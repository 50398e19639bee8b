"""The sweep report: the paper's Tables 1-4 with error bars, ROC curves, sample grids, the audit.

Built from what the stages returned (the same numbers the stages logged to MLflow), written
as Markdown and HTML into the sweep's output folder. Every figure of stage 3 is on the real
test split; every comparison with the real-only baseline pairs trials of the same classifier
and seed, scored on the same test cases.
"""
from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from orchestrator.data.phantom import Ceiling
from orchestrator.plots import plot_audit, plot_forest, plot_learning_curve, plot_roc, plot_validation_curves
from orchestrator.ranking import best_per_architecture
from orchestrator.statistics import ALPHA, BELOW_CURVE, BEYOND_CURVE, Utility, Worth, patients_to_halve, worth
from trainables.metrics import fid_key_in

if TYPE_CHECKING:  # the stages use this module, so their result types are only named here
    from orchestrator.stages.classify import ClassifyResult
    from orchestrator.stages.gan import GanResult
    from orchestrator.stages.synth import SyntheticSet



# --- Tables -------------------------------------------------------------------------------------

def utility_table(summary: Utility) -> pd.DataFrame:
    """Tables 3-4: per classifier and arm, test metrics with patient-bootstrap intervals, and the paired
    difference to the real-only arm with its p-value (and Holm-adjusted)."""
    n = f"{summary.cases.n_patients} / {len(summary.cases.labels)}"
    rows = []
    for arm in summary.arms:
        row = {"classifier": arm.classifier, "arm": arm.arm_id, "patients / slices / seeds": f"{n} / {len(arm.seeds)}"}
        row.update({name: arm.metrics[key].interval() for key, name in METRIC_NAMES.items()})
        if arm.deltas:
            row.update({f"Δ {name}": arm.deltas[key].interval() for key, name in METRIC_NAMES.items()
                        if key in ("accuracy", "roc_auc", "sensitivity")})
            row["Δ AUC p (Holm)"] = _p(arm.deltas["roc_auc"].p, arm.holm_p)
            row["detectable Δ AUC"] = "" if math.isnan(arm.detectable) else f"{arm.detectable:.3f}"
        row["status"] = (f"degenerate: {arm.degenerate}" if arm.degenerate else arm.seeds_note or "ok")
        rows.append(row)
    columns = list(dict.fromkeys(key for row in rows for key in row if key != "status")) + ["status"]
    return pd.DataFrame(rows, columns=columns).fillna("")


METRIC_NAMES = {"accuracy": "accuracy", "sensitivity": "sensitivity", "specificity": "specificity",
                "roc_auc": "AUC"}


def _p(p: float, adjusted: float | None = None) -> str:
    """'p', or 'p (Holm-adjusted p)'; an arm outside the family (a proxy) says so instead of 'nan'."""
    if math.isnan(p):
        return ""
    if adjusted is None:
        return f"{p:.3g}"
    return f"{p:.3g} ({adjusted:.3g})" if not math.isnan(adjusted) else f"{p:.3g} (not in the Holm family)"


def conclusions(summary: Utility) -> list[str]:
    """What the stage-3 numbers allow one to say, in words; and what they do not."""
    if summary.blocker:
        return [f"No inferential claim: {summary.blocker}."]
    lines = []
    degenerate: dict[str, list[str]] = {}
    for arm in summary.arms:
        if arm.degenerate:
            degenerate.setdefault(arm.classifier, []).append(arm.arm_id)
    if degenerate:
        count = sum(map(len, degenerate.values()))
        lines.append(f"{count} of {len(summary.arms)} classifier x arm rows are degenerate and excluded from "
                     "conclusions (the reasons are in the status column): "
                     + "; ".join(f"{name}: {', '.join(arms)}" for name, arms in degenerate.items()) + ".")
    claimed = [a for a in summary.arms if not math.isnan(a.holm_p) and a.holm_p < ALPHA]
    for arm in claimed:
        delta = arm.deltas["roc_auc"]
        direction = "raised" if delta.value > 0 else "lowered"
        lines.append(f"{arm.arm_id} {direction} {arm.classifier}'s test AUC against real only: Δ {delta.interval()}, "
                     f"Holm-adjusted p = {arm.holm_p:.3g} ({len(arm.seeds)} seeds).")
    tested = summary.family_size()
    if tested and not claimed:
        lines.append(f"None of the {tested} comparisons with real only differs at Holm-adjusted p < {ALPHA}.")
    return lines


def audit_table(sets) -> pd.DataFrame:
    return pd.DataFrame([{
        "set": s.name, "generated": s.audit["generated"], "flagged": s.audit["flagged"], "kept": s.audit["kept"],
        "threshold r": round(s.audit["threshold"], 4), "synthetic→train r (median / max)":
            f"{s.audit['synthetic_to_train_r']['median']:.3f} / {s.audit['synthetic_to_train_r']['max']:.3f}",
        "real→real r (median / max)":
            f"{s.audit['real_to_real_r']['median']:.3f} / {s.audit['real_to_real_r']['max']:.3f}",
    } for s in sets])


def markdown_table(table: pd.DataFrame) -> str:
    header = "| " + " | ".join(map(str, table.columns)) + " |\n|" + "---|" * len(table.columns) + "\n"
    lines = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return header + "\n".join(lines) + "\n"


def _cell(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# --- Findings: what the sweep found, in words ---------------------------------------------------

@dataclass
class SweepOutcome:
    """What the report reads: what the stages returned, and the caveats the driver knows of."""
    sweep_id: str
    gan_table: pd.DataFrame | None = None  # every ranked stage-1 trial, best first, with the FID floor beside
    curves: list[dict] = field(default_factory=list)  # stage 1 validation curves (stages.gan.validation_curves)
    floor: dict = field(default_factory=dict)  # the real-vs-real floor of each FID-type metric
    sets: list = field(default_factory=list)  # stage 2's synthetic sets
    results: pd.DataFrame | None = None  # stage 3: one row per finished trial
    summary: Utility | None = None
    failed: pd.DataFrame | None = None  # stage 3 trials without test figures, with their reason
    test_note: str = ""
    caveats: list[str] = field(default_factory=list)  # train fraction, shortened schedules
    evaluation: str = ""  # what each stage-1 validation figure rests on (images, patients, slices)
    ceiling: Ceiling | None = None  # the ideal observer, where the cohort records its nodules' parameters

    @classmethod
    def of(cls, sweep_id: str, searched: GanResult | None, sets: list[SyntheticSet] | None,
           measured: ClassifyResult | None, floor: dict, test_note: str, caveats: list[str],
           evaluation: str, ceiling: Ceiling | None = None) -> SweepOutcome:
        """From what each stage's `run` returned (None for a stage that did not run)."""
        return cls(sweep_id, searched.table if searched else None, searched.curves if searched is not None else [],
                   floor, sets or [], measured.results if measured else None,
                   measured.summary if measured is not None else None,
                   measured.failed if measured is not None else None, test_note, caveats, evaluation, ceiling)

    def best_generators(self) -> pd.DataFrame | None:
        if self.gan_table is None or not len(self.gan_table):
            return None
        return best_per_architecture(self.gan_table)


def verdict(outcome: SweepOutcome) -> list[str]:
    """The report's opening, for a clinician-researcher: does the best GAN's data help, by how much, for
    which classifier, worth how many real patients, against what the split could detect; did the
    controls behave; how far is the GAN from its floor."""
    summary = outcome.summary
    if summary is None:
        return ["Stage 3 did not run: there is no verdict on what the synthetic images are worth."]
    if summary.blocker:
        return [f"No verdict on what the synthetic images are worth: {summary.blocker}."]
    lines = []
    for classifier, arms in by_classifier(summary).items():
        real = next((a for a in arms if a.arm_id == "real"), None)
        synthetic = [a for a in arms if a.arm.kind == "synthetic" and a.deltas and not a.degenerate]
        if real is None or real.degenerate or not synthetic:
            continue
        best = max(synthetic, key=lambda a: a.deltas["roc_auc"].value)
        delta, worth_of = best.deltas["roc_auc"], arm_worth(arms).get(best.arm_id)
        if _claimed(best):
            found = f"changes its test AUC by {_signed(delta)}, a difference that survives Holm"
        else:
            found = (f"changes its test AUC by {_signed(delta)}, not a difference this split can claim after Holm's "
                     "correction")
            if not math.isnan(best.detectable):
                found += f" ({reach(best.detectable, real.metrics['roc_auc'].value)})"
        text = f"{classifier}: the best synthetic arm ({best.arm_id}) {found}"
        if worth_of is not None and control_works(arms):  # a flat curve prices nothing: no worth is read off it
            text += f"; {worth_words(worth_of, real.real_patients)}"
        lines.append(text + control_note(arms) + ".")
    if not lines:
        lines.append("No classifier has a non-degenerate synthetic arm beside a working real-only baseline: no verdict.")
    best_gan = outcome.best_generators()
    fid_key = fid_key_in(best_gan.columns) if best_gan is not None else None
    if fid_key and f"{fid_key}_floor" in best_gan:
        row = best_gan.sort_values(fid_key).iloc[0]
        lines.append(f"The best generator ({row['arch']}) scores {fid_key} {row[fid_key]:.1f} against a real-vs-real "
                     f"floor of {row[f'{fid_key}_floor']:.1f}.")
    return lines


def worth_words(worth_of: Worth, scarce_patients: float) -> str:
    """An arm's worth in the verdict, with the patients it is read against (off the curve, the estimate
    is the end it passed: the scarce set's or the largest rung's patients)."""
    if worth_of.place == BELOW_CURVE:
        return f"worth less than the scarce set's {worth_of.patients:.0f} real patients"
    if worth_of.place == BEYOND_CURVE:
        return f"worth more than the largest rung's {worth_of.patients:.0f} real patients"
    return f"{worth_of.describe()}, against {scarce_patients:.0f} in the scarce set"


def control_works(arms: list) -> bool:
    """Whether the positive control works: the oracle's largest rung gains, its interval above zero."""
    top = top_rung(arms)
    return top is not None and top.deltas["roc_auc"].low > 0


def top_rung(arms: list):
    """The oracle arm with the most real patients (its largest rung), None without a usable one."""
    oracles = [a for a in arms if a.arm.kind == "oracle" and a.deltas and not a.degenerate]
    return max(oracles, key=lambda a: a.real_patients if not math.isnan(a.real_patients) else 0, default=None)


def control_note(arms: list) -> str:
    """' (...)' for one classifier: what the oracle's gain (positive control) and the permuted labels'
    (negative control) say, or ''."""
    notes = []
    top = top_rung(arms)
    if top is not None:
        notes.append("more real patients help (the positive control works)" if control_works(arms) else
                     "more real patients show no gain either, so this split cannot tell")
    if any(a.deltas["roc_auc"].low > 0 for a in arms if a.arm.kind == "permuted" and a.deltas and not a.degenerate):
        notes.append("the permuted-label control gains over real only, which it should not: a gain of the synthetic "
                     "images here need not come from their labels")
    return f" ({'; '.join(notes)})" if notes else ""


def by_classifier(summary: Utility) -> dict[str, list]:
    arms: dict[str, list] = {}
    for arm in summary.arms:
        arms.setdefault(arm.classifier, []).append(arm)
    return arms


def findings(outcome: SweepOutcome) -> list[str]:
    """The report's first section: each stage's result in a sentence or two, then the caveats."""
    lines = gan_findings(outcome) + [audit_finding(s) for s in outcome.sets]
    if outcome.summary is not None:
        lines += utility_findings(outcome.summary)
    return lines + outcome.caveats


def gan_findings(outcome: SweepOutcome) -> list[str]:
    best = outcome.best_generators()
    if best is None:
        return ["Stage 1 produced no usable checkpoint (the trials' MLflow runs say why)."] if outcome.curves else []
    lines = []
    fid_key = fid_key_in(best.columns)
    for row in best.to_dict("records"):
        text = f"Best {row['arch']} generator: trial {row['trial_id']} at epoch {int(row['epoch'])}"
        if fid_key and f"{fid_key}_floor" in row:
            text += (f", {fid_key} {row[fid_key]:.1f} against a real-vs-real floor of {row[f'{fid_key}_floor']:.1f} "
                     f"(how far from a second real sample: {row[fid_key] - row[f'{fid_key}_floor']:.1f})")
        elif fid_key:
            text += f", {fid_key} {row[fid_key]:.1f} (no floor was computed)"
        if "ms_ssim_floor" in row:
            text += (f"; MS-SSIM diversity {row['ms_ssim']:.3f} against {row['ms_ssim_floor']:.3f} for real slices "
                     "(higher: less diverse)")
        if "recall_floor" in row:
            text += (f"; precision {row['precision']:.2f} and recall {row['recall']:.2f} against "
                     f"{row['precision_floor']:.2f} and {row['recall_floor']:.2f} for real slices (precision: "
                     "realistic; recall: covers the data)")
        lines.append(text + f"; validation SSIM {row['ssim']:.3f}.")
    statuses = pd.Series([c["status"] for c in outcome.curves]).value_counts()
    if len(statuses):
        lines.append(f"{len(outcome.curves)} GAN trial(s): " + ", ".join(f"{n} {status}" for status, n in statuses.items())
                     + " (curves in stage 1 below).")
    return lines


def audit_finding(s) -> str:
    audit = s.audit
    replaced = " and were replaced by fresh draws" if audit["excluded_flagged"] else " and were kept"
    kept_flagged = audit["flagged"] if not audit["excluded_flagged"] else 0
    verdict = ("no image in the set is closer to a training slice than real slices of two different patients are"
               if not kept_flagged else f"{kept_flagged} image(s) in the set are near-copies of training slices")
    return (f"Memorisation audit of {s.name}: {audit['flagged']} of {audit['generated']} generated images were closer "
            f"to a training slice than r = {audit['threshold']:.3f} ({audit['threshold_source']}){replaced}; "
            f"{audit['kept']} kept: {verdict}.")


def utility_findings(summary: Utility) -> list[str]:
    """Per classifier: real only and each arm's Δ AUC with its interval; what survives Holm; whether the
    test split could see a gain at all (the oracle arm)."""
    if summary.blocker:
        return [f"Stage 3 on {summary.cases.describe()}: no inferential claim, {summary.blocker}."]
    lines = [f"Stage 3 on {summary.cases.describe()}, Δ AUC against real only with 95 % intervals "
             f"(patient bootstrap with seed variation):"]
    for classifier, arms in by_classifier(summary).items():
        real = next((a for a in arms if a.arm_id == "real"), None)
        if real is None or real.degenerate:
            lines.append(f"{classifier}: degenerate ({real.degenerate if real else 'no real-only arm'}); "
                         "nothing is read from it.")
            continue
        parts = [f"{a.arm_id} {_signed(a.deltas['roc_auc'])}" + (" *" if _claimed(a) else "")
                 for a in arms if a.deltas and not a.degenerate]
        dropped = [a.arm_id for a in arms if a.degenerate]
        lines.append(f"{classifier} (real only AUC {real.metrics['roc_auc'].interval()}"
                     + detectable_note(arms, summary.cases.n_patients) + "): " + "; ".join(parts)
                     + (f"; degenerate: {', '.join(dropped)}" if dropped else "") + ".")
        lines += [f"{classifier} {a.arm_id}: {a.seeds_note}." for a in arms if a.seeds_note]
        lines += oracle_bracket(classifier, arms)
    claimed = [a for a in summary.arms if _claimed(a)]
    lines.append(f"* survives Holm's correction across the {summary.family_size()} comparisons (p < {ALPHA}): "
                 + ", ".join(f"{a.classifier} {a.arm_id}" for a in claimed) + "." if claimed else
                 f"None of the {summary.family_size()} comparisons with real only survives Holm's correction "
                 f"(p < {ALPHA}).")
    return lines


def detectable_note(arms: list, n_patients: int) -> str:
    """'; its median comparison detects a Δ AUC of 0.071 or more, ...' for a classifier's tested arms, or ''."""
    tested = sorted((a for a in arms if not math.isnan(a.detectable)), key=lambda a: a.detectable)
    if not tested:
        return ""
    middle = tested[len(tested) // 2]
    halve = patients_to_halve(middle.deltas["roc_auc"], n_patients)
    baseline = next((a.metrics["roc_auc"].value for a in arms if a.arm_id == "real"), math.nan)
    return (f"; its median comparison at the family's Holm level: {reach(middle.detectable, baseline, 3)}, "
            + (f"about {halve} test patients would halve that" if halve else
               "more seeds, not more test patients, would lower that"))


def reach(detectable: float, baseline_auc: float, digits: int = 2) -> str:
    """What the smallest detectable Δ AUC (80 % power) means from this real-only AUC: a figure, or, when it
    exceeds the most any arm could gain (1 - baseline), that no gain at all is detectable here."""
    if detectable >= 1 - baseline_auc:
        return (f"no gain is detectable here: it needs Δ AUC {detectable:.{digits}f} at 80 % power, more than the "
                f"{1 - baseline_auc:.{digits}f} between real only and a perfect classifier")
    return f"it detects Δ AUC {detectable:.{digits}f} or more at 80 % power"


def learning_curve(arms: list) -> tuple[list[float], list]:
    """The oracle's learning curve of one classifier: (real training patients, AUC estimate) of real only
    and each oracle rung, by patients; empty unless at least two points carry draws."""
    points = sorted(((a.real_patients, a.metrics["roc_auc"]) for a in arms
                     if a.arm.kind in ("real", "oracle") and not a.degenerate
                     and not math.isnan(a.real_patients) and a.metrics["roc_auc"].draws is not None),
                    key=lambda point: point[0])
    return ([p for p, _ in points], [e for _, e in points]) if len(points) >= 2 else ([], [])


def arm_worth(arms: list) -> dict:
    """{arm id: Worth} of each synthetic and classic arm placed on its classifier's oracle curve."""
    patients, curve = learning_curve(arms)
    if not curve:
        return {}
    return {a.arm_id: worth(patients, curve, a.metrics["roc_auc"]) for a in arms
            if a.arm.spec.placed_on_curve and not a.degenerate}


def oracle_bracket(classifier: str, arms: list) -> list[str]:
    """The positive control (does the largest oracle rung gain?) and, on its learning curve, what each
    synthetic and classic arm is worth in real patients."""
    top = top_rung(arms)
    if top is None:
        return []
    gain = top.deltas["roc_auc"]
    more = f"{top.real_patients:.0f} real patients" if not math.isnan(top.real_patients) else top.arm_id
    if gain.low > 0:
        lines = [f"{classifier}: the positive control works: the oracle with {more} gains {_signed(gain)}."]
    else:
        lines = [f"{classifier}: the oracle with {more} gains {_signed(gain)}, reaching zero: this test split cannot "
                 "show a gain of that size, from synthetic images or otherwise."]
    if gain.low <= 0 and arm_worth(arms):
        return lines + [f"{classifier}: no arm is priced in real patients: the oracle's curve it would be read on "
                        "does not rise beyond its own interval."]
    scarce = next((a.real_patients for a in arms if a.arm_id == "real"), math.nan)
    for arm_id, w in arm_worth(arms).items():
        lines.append(f"{classifier}: {arm_id} is {w.describe()} (the scarce set has {scarce:.0f}).")
    return lines


def _claimed(arm) -> bool:
    return not math.isnan(arm.holm_p) and arm.holm_p < ALPHA


def _signed(e) -> str:
    if math.isnan(e.low):
        return f"{e.value:+.3f}"
    return f"{e.value:+.3f} [{e.low:+.3f}, {e.high:+.3f}]"


def forest_rows(summary: Utility) -> list[dict]:
    """One row per classifier x arm with a difference to real only, for `plot_forest`."""
    return [{"label": f"{a.classifier} · {a.arm_id}", "arm": a.arm.kind, "degenerate": bool(a.degenerate),
             "claimed": _claimed(a), **{f"Δ {name}": (e.value, e.low, e.high) for key, name in
                                        (("roc_auc", "AUC"), ("sensitivity", "sensitivity"))
                                        for e in [a.deltas[key]]}}
            for a in summary.arms if a.deltas]


def seed_counts(arms: list) -> str:
    """'3 seeds', or '3-5 seeds' where classifiers have seeds of their own or some trials failed."""
    counts = sorted({len(a.seeds) for a in arms})
    return f"{counts[0]} seed{'s' * (counts[-1] > 1)}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]} seeds"


def degenerate_trials(results: pd.DataFrame) -> pd.DataFrame:
    """The trials that carry no figure worth reading, grouped by classifier, arm and reason."""
    bad = results[results.degenerate.astype(bool)]
    rows = [{"classifier": c, "arm": arm, "seeds": ", ".join(str(int(s)) for s in sorted(group.seed)), "reason": reason}
            for (c, arm, reason), group in bad.groupby(["classifier", "arm_id", "degenerate"], sort=False)]
    return pd.DataFrame(rows, columns=["classifier", "arm", "seeds", "reason"])


# --- The report ---------------------------------------------------------------------------------

def write_report(out_dir: Path, outcome: SweepOutcome) -> list[Path]:
    """report.md (figures beside it) and report.html (one self-contained file) in `out_dir`; returns
    every file written."""
    files: list[Path] = []
    blocks: list[tuple[str, object]] = [("h1", f"medgan-sweep report: {outcome.sweep_id}"), ("h2", "Verdict"),
                                        ("list", verdict(outcome)), ("h2", "Findings"),
                                        ("list", findings(outcome))]
    blocks += gan_blocks(outcome, out_dir, files)
    for s in outcome.sets:
        hist = out_dir / f"audit_{s.name}.png"
        plot_audit(s.audit["synthetic_r"], s.audit["real_r"], s.audit["threshold"], hist)
        files.append(hist)
        blocks += [("h2", f"Stage 2: synthetic set {s.name} and its memorisation audit"),
                   ("table", audit_table([s])), ("image", hist.name),
                   ("p", "The most similar synthetic / training pairs:"),
                   ("image", str((s.folder / "closest_pairs.png").relative_to(out_dir)))]
    if outcome.summary is not None:
        blocks += utility_blocks(outcome, out_dir, files)
    md, page = out_dir / "report.md", out_dir / "report.html"
    md.write_text(render_markdown(blocks))
    page.write_text(render_html(blocks, out_dir))
    return [md, page, *files]


def gan_blocks(outcome: SweepOutcome, out_dir: Path, files: list[Path]) -> list[tuple[str, object]]:
    """Stage 1: the selected checkpoints' samples beside real slices, the ranking, the curves."""
    best = outcome.best_generators()
    if best is None and not outcome.curves:
        return []
    blocks: list[tuple[str, object]] = [("h2", "Stage 1: GAN search (validation split)")]
    for s in outcome.sets:  # stage 2 drew these from the selected checkpoints
        blocks += [("p", f"Real training slices and samples of {s.name} (the selected checkpoint of its "
                         "architecture), per label:"),
                   ("image", str((s.folder / "real_vs_synthetic.png").relative_to(out_dir)))]
    if best is not None:
        blocks += [("h3", "Best checkpoint per architecture (Tables 1-2)"),
                   ("table", best.drop(columns=["checkpoint_path"], errors="ignore"))]
    if outcome.curves:
        fid_key = fid_key_in({k for c in outcome.curves for k in c}) or "fid"
        path = out_dir / "gan_curves.png"
        plot_validation_curves(outcome.curves, outcome.floor.get(f"{fid_key}_floor"), fid_key, path,
                               f"each point: {outcome.evaluation}" if outcome.evaluation else "")
        files.append(path)
        blocks += [("h3", "Validation metrics over training, per trial"), ("image", path.name),
                   ("p", "Dashed and ending in x: stopped early by the scheduler (ASHA); dotted: failed or diverged.")]
    return blocks


def utility_blocks(outcome: SweepOutcome, out_dir: Path, files: list[Path]) -> list[tuple[str, object]]:
    """Stage 3: the forest plot, the tables, the trials that failed or are degenerate, ROC curves."""
    summary, results = outcome.summary, outcome.results
    table = utility_table(summary)
    table.to_csv(out_dir / "stage3.csv", index=False)
    files.append(out_dir / "stage3.csv")
    blocks: list[tuple[str, object]] = [("h2", "Stage 3: classifiers on the real test split"),
                                        ("p", outcome.test_note), ("p", summary.method())]
    rows = forest_rows(summary)
    if rows:
        path = out_dir / "forest.png"
        plot_forest(rows, path, f"{summary.cases.describe()}; {seed_counts(summary.arms)} per arm")
        files.append(path)
        blocks += [("h3", "Each arm against real only"), ("image", path.name),
                   ("p", "Points: the seed mean on the whole test split; bars: 95 % patient-bootstrap intervals. "
                         "Grey: degenerate, not interpreted. *: survives Holm's correction.")]
    blocks += learning_curve_blocks(summary, out_dir, files, outcome.ceiling)
    blocks += [("h3", "Tables 3-4"), *[("p", line) for line in conclusions(summary)], ("table", table)]
    degenerate = degenerate_trials(results)
    if len(degenerate):
        blocks += [("h3", f"Degenerate trials ({len(degenerate)} classifier x arm x reason)"),
                   ("p", "Constant scores or chance validation AUC: kept out of every conclusion."),
                   ("table", degenerate)]
    if outcome.failed is not None and len(outcome.failed):
        blocks += [("h3", f"Classifier trials that failed ({len(outcome.failed)})"),
                   ("p", "These trials have no test figures; the arms above rest on the seeds that finished."),
                   ("table", outcome.failed)]
    first_seed = results[results.seed == results.seed.min()]
    for classifier, group in first_seed.groupby("classifier", sort=False):
        path = out_dir / f"roc_{classifier}.png"
        plot_roc({row.arm_id: row.test_roc for row in group.itertuples()}, path,
                 f"seed {int(group.seed.iloc[0])}; {summary.cases.describe()}")
        files.append(path)
        blocks += [("h3", f"ROC, {classifier} (seed {int(group.seed.iloc[0])})"), ("image", path.name)]
    return blocks


def learning_curve_blocks(summary: Utility, out_dir: Path, files: list[Path],
                          ceiling: Ceiling | None = None) -> list[tuple[str, object]]:
    """Per classifier with an oracle ladder: its learning curve with every synthetic and classic arm at its worth,
    and the ideal observer's AUC where the cohort records its nodules' parameters."""
    blocks: list[tuple[str, object]] = []
    for classifier, arms in by_classifier(summary).items():
        patients, curve = learning_curve(arms)
        if not curve:
            continue
        by_id = {a.arm_id: a for a in arms}
        priced = control_works(arms)  # a flat curve prices nothing: the figure then shows the curve alone
        points = [{"label": f"{arm_id}: {w.describe()}", "kind": by_id[arm_id].arm.kind, "patients": w.patients,
                   "auc": by_id[arm_id].metrics["roc_auc"].value, "low": w.low, "high": w.high}
                  for arm_id, w in arm_worth(arms).items()] if priced else []
        path = out_dir / f"learning_curve_{classifier}.png"
        plot_learning_curve([{"patients": n, "auc": e.value, "low": e.low, "high": e.high}
                             for n, e in zip(patients, curve)], points, path,
                            f"{classifier}: {summary.cases.describe()}; {seed_counts(arms)} per point"
                            + ("" if priced else "; the oracle gains nothing beyond its interval, so no arm is priced"),
                            ceiling.auc if ceiling else None)
        files.append(path)
        blocks += [("h3", f"What the synthetic images are worth in real patients, {classifier}"), ("image", path.name),
                   ("p", "Green: test AUC with more real training patients (held-out patients added to the scarce "
                         "set). Each arm sits where that curve reaches its AUC; its bar is the 95 % interval of that "
                         "place, from the same patient draws (at an end of the curve it is open there)."
                         + (f" Dashed, the ceiling: {ceiling.describe()}." if ceiling else ""))]
    return blocks


def render_markdown(blocks) -> str:
    marks = {"h1": "# ", "h2": "## ", "h3": "### "}
    out = []
    for kind, content in blocks:
        if kind in marks:
            out.append(marks[kind] + str(content))
        elif kind == "table":
            out.append(markdown_table(content))
        elif kind == "image":
            out.append(f"![{content}]({content})")
        elif kind == "list":
            out.append("\n".join(f"- {line}" for line in content))
        else:
            out.append(str(content))
    return "\n\n".join(out) + "\n"


STYLE = """
body{font-family:system-ui,sans-serif;max-width:72em;margin:auto;padding:0 1em;line-height:1.45;color:#222}
h1{font-size:1.5em}h2{margin-top:1.6em;border-bottom:1px solid #ddd}
.wide{overflow-x:auto}table{border-collapse:collapse;font-size:85%}
td,th{border:1px solid #ccc;padding:2px 6px;white-space:nowrap}th{background:#f4f4f4;text-align:left}
img{max-width:100%;height:auto}ul.findings li{margin:.3em 0}
"""


def render_html(blocks, out_dir: Path) -> str:
    """One file that works anywhere: figures embedded as data URIs, wide tables scroll sideways,
    images shrink to a phone's width."""
    out = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>",
           "<meta name='viewport' content='width=device-width, initial-scale=1'>",
           f"<title>medgan-sweep report</title><style>{STYLE}</style></head><body>"]
    for kind, content in blocks:
        if kind in ("h1", "h2", "h3"):
            out.append(f"<{kind}>{html.escape(str(content))}</{kind}>")
        elif kind == "table":
            out.append("<div class='wide'>" + content.to_html(index=False, float_format=lambda v: f"{v:.4g}",
                                                               border=0) + "</div>")
        elif kind == "image":
            data = base64.b64encode((out_dir / str(content)).read_bytes()).decode()
            out.append(f"<p><img alt='{html.escape(str(content))}' src='data:image/png;base64,{data}'></p>")
        elif kind == "list":
            out.append("<ul class='findings'>" + "".join(f"<li>{html.escape(line)}</li>" for line in content) + "</ul>")
        else:
            out.append(f"<p>{html.escape(str(content))}</p>")
    return "\n".join(out) + "\n</body></html>\n"
