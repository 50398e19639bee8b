"""Every figure a sweep draws: for the report, the trials' MLflow runs and the synthetic sets' folders.

Files only (matplotlib's Agg backend, no display). Each function takes plain numbers and a path.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from trainables.classify.arms import ARM_KINDS  # noqa: E402
from trainables.cohort import LABEL_NAMES  # noqa: E402

DEGENERATE_COLOUR = "#bbbbbb"


def plot_confusion(matrix, path: Path) -> None:
    """[[tn, fp], [fn, tp]] as a labelled 2 x 2 image."""
    fig, ax = plt.subplots(figsize=(3.2, 3))
    ax.imshow(np.asarray(matrix), cmap="Blues")
    for (i, j), count in np.ndenumerate(np.asarray(matrix)):
        ax.text(j, i, str(count), ha="center", va="center")
    ax.set_xticks([0, 1], LABEL_NAMES)
    ax.set_yticks([0, 1], LABEL_NAMES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    _save(fig, path)


def plot_roc(curves: dict[str, dict], path: Path, title: str = "") -> None:
    """One ROC curve per label: {"label": {"fpr": [...], "tpr": [...]}}; `title`: what the curves rest on."""
    fig, ax = plt.subplots(figsize=(4.5, 4.8))
    ax.set_title(title, fontsize=8, wrap=True)
    for label, curve in curves.items():
        ax.plot(curve["fpr"], curve["tpr"], label=label)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.legend(fontsize=7, loc="lower right")
    _save(fig, path)


def plot_learning_curve(curve: list[dict], arms: list[dict], path: Path, title: str = "",
                        ceiling: float | None = None) -> None:
    """The oracle's learning curve (test AUC against real training patients, a band from its intervals)
    and each arm at its worth: curve [{"patients", "auc", "low", "high"}] by patients; arms [{"label",
    "kind", "patients", "auc", "low", "high"}], "low" / "high" the worth interval in patients (nan: none);
    `ceiling`: the ideal observer's AUC, where the cohort records what it would see."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.set_title(title, fontsize=8, wrap=True)
    x = [c["patients"] for c in curve]
    oracle = ARM_KINDS["oracle"].colour
    ax.fill_between(x, [c["low"] for c in curve], [c["high"] for c in curve], color=oracle, alpha=0.15,
                    label="oracle, 95 % interval")
    ax.plot(x, [c["auc"] for c in curve], "o-", color=oracle, label="oracle (more real patients)")
    ax.axvline(x[0], color="grey", linestyle=":", label=f"scarce set ({x[0]:.0f} patients)")
    if ceiling is not None:
        ax.axhline(ceiling, color="black", linestyle="--", linewidth=1,
                   label=f"ideal observer on the recorded parameters ({ceiling:.2f})")
    for arm in arms:
        colour = ARM_KINDS[arm["kind"]].colour
        xerr = None if math.isnan(arm["low"]) else [[arm["patients"] - arm["low"]], [arm["high"] - arm["patients"]]]
        ax.errorbar([arm["patients"]], [arm["auc"]], xerr=xerr, fmt="D", color=colour, capsize=3, label=arm["label"])
    ax.set_xlabel("real training patients")
    ax.set_ylabel("test ROC-AUC (seed mean)")
    ax.legend(fontsize=7, loc="lower right")
    _save(fig, path)


def plot_audit(synthetic_r, real_r, threshold: float, path: Path) -> None:
    """Nearest-training-image correlation of synthetic images beside the real-to-real one."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.set_title(f"{len(synthetic_r)} generated images, {len(real_r)} real training slices", fontsize=8)
    bins = np.linspace(min(min(synthetic_r), min(real_r)), 1, 30)
    ax.hist(real_r, bins=bins, alpha=0.6, density=True, label="real → nearest other-patient real")
    ax.hist(synthetic_r, bins=bins, alpha=0.6, density=True, label="synthetic → nearest training")
    ax.axvline(threshold, color="red", linestyle="--", label=f"flag above r = {threshold:.3f}")
    ax.set_xlabel("normalised correlation r")
    ax.legend(fontsize=7)
    _save(fig, path)


def plot_image_rows(rows: list[tuple[str, np.ndarray]], path: Path, title: str = "") -> None:
    """Labelled rows of grey images in [0, 1] ([N, S, S] each, up to the widest row's N), drawn large
    with square pixels (nearest neighbour): 32 px slices are otherwise too small to read."""
    columns = max(len(images) for _, images in rows)
    width, height = 1.1 * columns + 1.7, 1.1 * len(rows) + (0.7 if title else 0.3)
    fig, axes = plt.subplots(len(rows), columns, figsize=(width, height), squeeze=False)
    for (name, images), row in zip(rows, axes):
        for i, ax in enumerate(row):
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if i < len(images):
                ax.imshow(images[i], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        row[0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(left=1.6 / width, right=0.99, bottom=0.1 / height, top=1 - (0.5 if title else 0.1) / height,
                        wspace=0.05, hspace=0.08)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_validation_curves(curves: list[dict], floor: float | None, fid_key: str, path: Path, title: str) -> None:
    """Stage 1 over training: each trial's validation FID (the real-vs-real floor dashed) and SSIM by
    epoch. `curves`: {"label", "epoch", fid_key, "ssim", "status"}; a trial the scheduler stopped is
    drawn dashed and ends in an x, a failed or diverged one dotted. `title`: what each point rests on."""
    # the legend goes below both panels, one line per trial: a search's labels are long and many
    fig, (ax_fid, ax_ssim) = plt.subplots(1, 2, figsize=(10, 3.9 + 0.17 * (len(curves) + 1)))
    fig.suptitle(title, fontsize=9)
    for i, curve in enumerate(curves):
        style = {"completed": "-", "stopped early": "--"}.get(curve["status"], ":")
        colour = f"C{i % 10}"
        label = curve["label"] + ("" if curve["status"] == "completed" else f" ({curve['status']})")
        for ax, key in ((ax_fid, fid_key), (ax_ssim, "ssim")):
            epochs, values = np.asarray(curve["epoch"], float), np.asarray(curve.get(key, []), float)
            if len(values) == 0:
                continue
            ax.plot(epochs, values, style, color=colour, marker=".", label=label if ax is ax_fid else None)
            if curve["status"] != "completed":
                ax.plot(epochs[-1:], values[-1:], "x", color=colour, markersize=9)
    if floor is not None and math.isfinite(floor):
        ax_fid.axhline(floor, color="black", linestyle="--", linewidth=1, label=f"real-vs-real floor {floor:.1f}")
    ax_fid.set(xlabel="epoch", ylabel=f"{fid_key} (validation; lower is better)")
    ax_ssim.set(xlabel="epoch", ylabel="SSIM (validation; higher is better)")
    ax_fid.set_ylim(bottom=0)
    handles, labels = ax_fid.get_legend_handles_labels()
    legend_in = 0.17 * (len(labels) + 1) / fig.get_figheight()  # its share of the figure's height
    fig.legend(handles, labels, loc="lower left", fontsize=7, frameon=False, bbox_to_anchor=(0.06, 0.0))
    fig.subplots_adjust(bottom=legend_in + 0.12 * 3.9 / fig.get_figheight(), top=0.9, wspace=0.25)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_forest(rows: list[dict], path: Path, title: str) -> None:
    _save(forest_figure(rows, title), path)


def forest_figure(rows: list[dict], title: str):
    """Each classifier x arm's difference to real only, with its interval: Δ AUC and Δ sensitivity side by
    side. `rows`: {"label", "arm", "degenerate", "claimed", "Δ AUC": (value, low, high), "Δ sensitivity": ...};
    rows that survive Holm marked with *. A degenerate row is a hollow grey point without an interval:
    its difference is shown, as nothing to read an interval into. `title`: what the intervals rest on
    (test patients, slices, seeds)."""
    keys = ("Δ AUC", "Δ sensitivity")
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.32 * len(rows) + 1.5), sharey=True)
    fig.suptitle(title, fontsize=9)
    y = np.arange(len(rows))[::-1]
    for ax, key in zip(axes, keys):
        for row, at in zip(rows, y):
            value, low, high = row[key]
            if row["degenerate"]:
                if math.isfinite(value):
                    ax.plot([value], [at], "o", color=DEGENERATE_COLOUR, markerfacecolor="none", markersize=5)
                continue
            colour = ARM_KINDS[row["arm"]].colour
            if math.isfinite(low) and math.isfinite(high):
                ax.plot([low, high], [at, at], color=colour, linewidth=2)
            if math.isfinite(value):
                ax.plot([value], [at], "o", color=colour, markersize=5)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.xaxis.set_major_locator(plt.MaxNLocator(5))  # more crowd each other's labels at this width
        ax.set_xlabel(f"{key} against real only (95 % interval)")
        ax.grid(axis="x", alpha=0.3)
    names = [row["label"] + (" (degenerate)" if row["degenerate"] else "") + (" *" if row["claimed"] else "")
             for row in rows]
    axes[0].set_yticks(y, names, fontsize=8)
    for tick, row in zip(axes[0].get_yticklabels(), rows):
        if row["degenerate"]:
            tick.set_color("grey")
    axes[0].set_ylim(-0.7, len(rows) - 0.3)
    return fig


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
