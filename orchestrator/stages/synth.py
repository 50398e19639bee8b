"""Stage 2: synthetic sets from the best stage-1 checkpoints, and the memorisation audit.

For each selected checkpoint (the best `synth.per_arch` per architecture, ranked on
validation), a Ray task samples `synth.size_factor` x as many images as the real training
split, with the requested class ratio, and finds each image's most similar real training
slice (normalised correlation). An image closer than `synth.audit_threshold` (by default: the
closest pair of real training slices from different patients) is flagged and, by default,
left out. Each set is written as

    <out>/synthetic/<arch>-<trial id>/
        images.npy, labels.npy   the kept images (float32 [N, S, S] in [0, 1]) and labels
        manifest.json            generator trial and checkpoint, seed, label and audit score per image
        audit.json               the score distributions, threshold, counts
        closest_pairs.png        the most similar synthetic / training pairs, side by side
        real_vs_synthetic.png    real training slices (top) and synthetic ones (bottom), per label
        dicom/                   with synth.export_dicom: the kept images as Secondary Capture files

Synthetic images carry no patient attribute: they come from noise and a label.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import ray
import torch

from orchestrator.config import Config
from orchestrator.data.synthetic_dicom import write_secondary_captures
from orchestrator.plots import plot_image_rows
from orchestrator.ranking import best_per_architecture
from orchestrator.stages import StageContext
from trainables.classify.arms import label_counts
from trainables.cohort import LABEL_NAMES, TRAIN
from trainables.metrics import nearest_correlation

GRID_PER_LABEL = 8
CLOSEST_PAIRS = 8


@dataclass
class SyntheticSet:
    name: str
    folder: Path
    images: np.ndarray  # the kept images
    labels: np.ndarray
    audit: dict
    params: dict  # where it came from: generator trial, checkpoint, seed

    def as_arrays(self) -> dict[str, np.ndarray]:
        return {"images": self.images, "labels": self.labels}


TOP_UP_ROUNDS = 10  # draws that replace flagged images; a generator that keeps copying ends short, and says so


def run(context: StageContext, gan) -> list[SyntheticSet]:
    """Stage 2: a set per selected checkpoint of `gan` (stage 1's result), each logged as a nested run with
    its manifest, audit and figures (the images stay in the set's folder: they can be large)."""
    sets = run_synthesis(context.cfg, gan.table, context.arrays, context.out_dir)
    for s in sets:
        files = sorted(p for p in s.folder.iterdir() if p.suffix in (".json", ".png"))
        context.tracker.log_stage_run("synth", f"synth-{s.name}", params={**s.params, "folder": str(s.folder)},
                                      metrics={k: s.audit[k] for k in ("generated", "flagged", "kept")},
                                      files=files, artifact_path=s.name)
    print(f"stage 2: {len(sets)} synthetic set(s): " + ", ".join(
        f"{s.name} ({s.audit['kept']} kept, {s.audit['flagged']} flagged)" for s in sets))
    return sets


def run_synthesis(cfg: Config, table: pd.DataFrame, data: dict[str, np.ndarray], out_dir: Path) -> list[SyntheticSet]:
    synth = cfg.synth
    train = data["split"] == TRAIN
    train_images, train_labels, train_patients = data["images"][train], data["labels"][train], data["patients"][train]
    real_r, _ = nearest_correlation(torch.from_numpy(np.asarray(train_images, np.float32)),
                                    torch.from_numpy(np.asarray(train_images, np.float32)),
                                    train_patients, train_patients)
    threshold = synth.audit_threshold if synth.audit_threshold is not None else float(real_r.max())
    total = round(synth.size_factor * int(train.sum()))
    per_label = label_counts(total, synth.malignant_fraction)

    selected = best_per_architecture(table, synth.per_arch)
    gpus = synth.gpus_per_task or 0  # resolved at the edge (sweep.resolve_resources)
    task = _sample_and_audit.options(num_gpus=gpus)
    train_ref = ray.put(np.asarray(train_images, np.float32))
    top_up = threshold if synth.exclude_flagged else None
    futures = [task.remote(row.checkpoint_path, per_label, synth.seed, train_ref, gpus, top_up)
               for row in selected.itertuples()]
    sets = []
    for row, (images, labels, r, nearest) in zip(selected.itertuples(), ray.get(futures)):
        name = f"{row.arch}-{row.trial_id}"
        flagged = r > threshold
        keep = ~flagged if synth.exclude_flagged else np.ones_like(flagged)
        audit = audit_summary(r, real_r.numpy(), threshold, synth, flagged, keep) | {"target": total}
        if int(keep.sum()) < total:  # the top-up rounds ran out: ratio arms that need more will fail, by name
            print(f"stage 2: {name} kept {int(keep.sum())} of the {total} images asked for after "
                  f"{TOP_UP_ROUNDS} rounds replacing near-copies of training images")
        folder = out_dir / "synthetic" / name
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "images.npy", images[keep])
        np.save(folder / "labels.npy", labels[keep])
        params = {"set": name, "generator_trial_id": row.trial_id, "arch": row.arch,
                  "checkpoint": row.checkpoint_path, "checkpoint_epoch": int(row.epoch), "seed": synth.seed}
        manifest = {**params, "images": [{"label": int(lab), "nearest_train_r": round(float(s), 5), "flagged": bool(f),
                                "kept": bool(k)} for lab, s, f, k in zip(labels, r, flagged, keep)]}
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
        (folder / "audit.json").write_text(json.dumps(audit, indent=1))
        if synth.export_dicom:
            write_secondary_captures(images[keep], labels[keep], name, folder / "dicom")
        save_closest_pairs(images, train_images, r, nearest, folder / "closest_pairs.png")
        save_real_vs_synthetic(train_images, train_labels, images[keep], labels[keep], folder / "real_vs_synthetic.png",
                               title=f"real: {len(train_images)} training slices of {len(np.unique(train_patients))} "
                                     f"patients; synthetic: the {int(keep.sum())} images of {name}; up to "
                                     f"{GRID_PER_LABEL} of each shown")
        sets.append(SyntheticSet(name, folder, images[keep], labels[keep], audit, params))
    return sets


@ray.remote
def _sample_and_audit(checkpoint_path: str, per_label: dict[int, int], seed: int, train_images: np.ndarray,
                      gpus: float, threshold: float | None):
    """On a worker (the GPU it holds, if any): sample the generator, then score each image against
    training, in chunks on that device. With a `threshold` (flagged images are left out), the
    images flagged in one round are replaced by fresh draws (seed + round) until `per_label` images
    of each label pass or TOP_UP_ROUNDS are spent, so the set keeps its size; every draw is returned
    and audited."""
    from ray.train import Checkpoint

    from trainables.device import trial_device
    from trainables.gan.checkpoint import load_generator
    from trainables.gan.sample import sample_set

    device = trial_device(gpus)
    with Checkpoint(checkpoint_path).as_directory() as folder:
        generator, gan_cfg = load_generator(Path(folder), device)
    references = torch.from_numpy(train_images).to(device)
    drawn, wanted = [], dict(per_label)
    for round_ in range(TOP_UP_ROUNDS if threshold is not None else 1):
        images, labels = sample_set(generator, gan_cfg["latent_dim"], wanted, seed + round_, device)
        r, nearest = nearest_correlation(torch.from_numpy(images).to(device), references)
        drawn.append((images, labels, r.cpu().numpy(), nearest.cpu().numpy()))
        passed = labels[drawn[-1][2] <= threshold] if threshold is not None else labels
        wanted = {label: n - int((passed == label).sum()) for label, n in wanted.items()}
        if not any(wanted.values()):
            break
    return tuple(np.concatenate(parts) for parts in zip(*drawn))


def audit_summary(synthetic_r: np.ndarray, real_r: np.ndarray, threshold: float, synth, flagged: np.ndarray,
                  keep: np.ndarray) -> dict:
    def quantiles(values: np.ndarray) -> dict:
        return {name: float(np.quantile(values, q)) for name, q in
                (("min", 0), ("p05", 0.05), ("median", 0.5), ("p95", 0.95), ("max", 1))}

    return {"threshold": threshold,
            "threshold_source": "config" if synth.audit_threshold is not None else "closest real-to-real pair",
            "synthetic_to_train_r": quantiles(synthetic_r), "real_to_real_r": quantiles(real_r),
            "synthetic_r": [round(float(v), 5) for v in synthetic_r], "real_r": [round(float(v), 5) for v in real_r],
            "generated": int(len(synthetic_r)), "flagged": int(flagged.sum()), "kept": int(keep.sum()),
            "excluded_flagged": synth.exclude_flagged}


def save_closest_pairs(images: np.ndarray, train_images: np.ndarray, r: np.ndarray, nearest: np.ndarray,
                       path: Path) -> None:
    """Top row: the synthetic images most similar to a training slice; bottom row: that slice."""
    order = np.argsort(-r)[:CLOSEST_PAIRS]
    rows = [("synthetic", images[order]), ("nearest training", np.asarray(train_images[nearest[order]]))]
    plot_image_rows(rows, path, title="closest to a training slice: r = " + ", ".join(f"{v:.2f}" for v in r[order]))


def save_real_vs_synthetic(train_images: np.ndarray, train_labels: np.ndarray, images: np.ndarray,
                           labels: np.ndarray, path: Path, title: str = "") -> None:
    """Rows: real benign, real malignant, synthetic benign, synthetic malignant (up to 8 each)."""
    rows = [(f"{source} {LABEL_NAMES[label]}", np.asarray(pool[np.flatnonzero(pool_labels == label)[:GRID_PER_LABEL]]))
            for source, pool, pool_labels in (("real", train_images, train_labels), ("synthetic", images, labels))
            for label in (0, 1)]
    plot_image_rows(rows, path, title)
