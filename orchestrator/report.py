"""The sweep report: the paper's Tables 1-4 with error bars, ROC curves, sample grids, the audit.

Built from what the stages returned (the same numbers the stages logged to MLflow), written
as Markdown and HTML into the sweep's output folder. Every figure of stage 3 is on the real
test split; every comparison with the real-only baseline pairs trials of the same classifier
and seed, scored on the same test cases.
"""
from __future__ import annotations

import html
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from orchestrator.statistics import Utility  # noqa: E402

ALPHA = 0.05  # a comparison is claimed only when its Holm-adjusted p is below this


# --- Tables -------------------------------------------------------------------------------------

def utility_table(summary: Utility) -> pd.DataFrame:
    """Tables 3-4: per classifier and arm, test metrics with patient-bootstrap intervals, and the paired
    difference to the real-only arm with its p-value (Holm-adjusted) and a patient-level DeLong p."""
    n = f"{summary.cases.n_patients} / {len(summary.cases.labels)}"
    rows = []
    for arm in summary.arms:
        row = {"classifier": arm.classifier, "arm": arm.arm_id, "patients / slices / seeds": f"{n} / {len(arm.seeds)}"}
        row.update({name: arm.metrics[key].interval() for key, name in METRIC_NAMES.items()})
        if arm.deltas:
            row.update({f"Δ {name}": arm.deltas[key].interval() for key, name in METRIC_NAMES.items()
                        if key in ("accuracy", "roc_auc", "sensitivity")})
            row["Δ AUC p (Holm)"] = _p(arm.deltas["roc_auc"].p, arm.holm_p)
            row["DeLong p (patients)"] = _p(arm.delong_p)
        row["status"] = f"degenerate: {arm.degenerate}" if arm.degenerate else "ok"
        rows.append(row)
    columns = list(dict.fromkeys(key for row in rows for key in row if key != "status")) + ["status"]
    return pd.DataFrame(rows, columns=columns).fillna("")


METRIC_NAMES = {"accuracy": "accuracy", "sensitivity": "sensitivity", "specificity": "specificity",
                "roc_auc": "AUC"}


def _p(p: float, adjusted: float | None = None) -> str:
    if math.isnan(p):
        return ""
    return f"{p:.3g}" if adjusted is None else f"{p:.3g} ({adjusted:.3g})"


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


# --- Plots --------------------------------------------------------------------------------------

def plot_confusion(matrix, path: Path) -> None:
    """[[tn, fp], [fn, tp]] as a labelled 2 x 2 image."""
    fig, ax = plt.subplots(figsize=(3.2, 3))
    ax.imshow(np.asarray(matrix), cmap="Blues")
    for (i, j), count in np.ndenumerate(np.asarray(matrix)):
        ax.text(j, i, str(count), ha="center", va="center")
    ax.set_xticks([0, 1], ["benign", "malignant"])
    ax.set_yticks([0, 1], ["benign", "malignant"])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_roc(curves: dict[str, dict], path: Path) -> None:
    """One ROC curve per label: {"label": {"fpr": [...], "tpr": [...]}}."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for label, curve in curves.items():
        ax.plot(curve["fpr"], curve["tpr"], label=label)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_audit(synthetic_r, real_r, threshold: float, path: Path) -> None:
    """Nearest-training-image correlation of synthetic images beside the real-to-real one."""
    fig, ax = plt.subplots(figsize=(5, 3))
    bins = np.linspace(min(min(synthetic_r), min(real_r)), 1, 30)
    ax.hist(real_r, bins=bins, alpha=0.6, density=True, label="real → nearest other-patient real")
    ax.hist(synthetic_r, bins=bins, alpha=0.6, density=True, label="synthetic → nearest training")
    ax.axvline(threshold, color="red", linestyle="--", label=f"flag above r = {threshold:.3f}")
    ax.set_xlabel("normalised correlation r")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --- The report ---------------------------------------------------------------------------------

def write_report(out_dir: Path, sweep_id: str, gan_best: pd.DataFrame | None, sets: list, results: pd.DataFrame | None,
                 summary: Utility | None, test_note: str, failed: pd.DataFrame | None = None) -> list[Path]:
    """report.md and report.html (+ their figures) in `out_dir`; returns every file written."""
    blocks: list[tuple[str, object]] = [("h1", f"medgan-sweep report: {sweep_id}")]
    files: list[Path] = []
    if gan_best is not None:
        blocks += [("h2", "Stage 1: best GAN checkpoint per architecture (validation; Tables 1-2)"),
                   ("table", gan_best.drop(columns=["checkpoint_path"], errors="ignore"))]
    if sets:
        blocks += [("h2", "Stage 2: synthetic sets and the memorisation audit"), ("table", audit_table(sets))]
        for s in sets:
            hist = out_dir / f"audit_{s.name}.png"
            plot_audit(s.audit["synthetic_r"], s.audit["real_r"], s.audit["threshold"], hist)
            files.append(hist)
            blocks += [("h3", s.name), ("image", hist.name),
                       ("image", str((s.folder / "real_vs_synthetic.png").relative_to(out_dir))),
                       ("p", "Most similar synthetic / training pairs (top / bottom):"),
                       ("image", str((s.folder / "closest_pairs.png").relative_to(out_dir)))]
    if summary is not None:
        table = utility_table(summary)
        blocks += [("h2", "Stage 3: classifiers on the real test split (Tables 3-4)"), ("p", test_note),
                   ("p", summary.method()), *[("p", line) for line in conclusions(summary)], ("table", table)]
        table.to_csv(out_dir / "stage3.csv", index=False)
        files.append(out_dir / "stage3.csv")
        first_seed = results[results.seed == results.seed.min()]
        for classifier, group in first_seed.groupby("classifier", sort=False):
            path = out_dir / f"roc_{classifier}.png"
            plot_roc({row.arm_id: row.test_roc for row in group.itertuples()}, path)
            files.append(path)
            blocks += [("h3", f"ROC, {classifier} (seed {int(group.seed.iloc[0])})"), ("image", path.name)]
    if failed is not None and len(failed):
        blocks += [("h2", f"Classifier trials that failed ({len(failed)})"),
                   ("p", "These trials have no test figures; the arms above rest on the seeds that finished."),
                   ("table", failed)]
    md, page = out_dir / "report.md", out_dir / "report.html"
    md.write_text(render_markdown(blocks))
    page.write_text(render_html(blocks))
    return [md, page, *files]


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
        else:
            out.append(str(content))
    return "\n\n".join(out) + "\n"


def render_html(blocks) -> str:
    out = ["<!doctype html><meta charset='utf-8'><title>medgan-sweep report</title>",
           "<style>body{font-family:sans-serif;max-width:70em;margin:auto}table{border-collapse:collapse}"
           "td,th{border:1px solid #ccc;padding:2px 6px;font-size:90%}</style>"]
    for kind, content in blocks:
        if kind in ("h1", "h2", "h3"):
            out.append(f"<{kind}>{html.escape(str(content))}</{kind}>")
        elif kind == "table":
            out.append(content.to_html(index=False, float_format=lambda v: f"{v:.4g}"))
        elif kind == "image":
            out.append(f"<p><img src='{html.escape(str(content))}'></p>")
        else:
            out.append(f"<p>{html.escape(str(content))}</p>")
    return "\n".join(out) + "\n"
