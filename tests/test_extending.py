"""docs/extending.md, tested: a GAN, a ranking metric and a modality, each added as one registry entry,
then taken through the smoke preset's path (config, training, ranking, sampling; phantom, ingest,
a classifier trial) like the built-in ones. The arm kind's test is tests/trainables/classify/test_arms.py.

Each registration is undone at the end: the registries are module state shared by the whole session.
"""
from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from orchestrator.config import ConfigError, load_config
from orchestrator.data import phantom
from orchestrator.data.ingest import ingest
from orchestrator.data.modalities import MODALITIES
from orchestrator.ranking import best_evaluation, metric_mode
from trainables.classify.loop import fit_classifier
from trainables.cohort import TEST, TRAIN
from trainables.gan.loop import fit
from trainables.gan.models import GAN_REGISTRY, GanPair, register_gan
from trainables.gan.sample import load_sampler, sample_set
from trainables.metrics import ADDED_METRICS, EVAL_METRICS, EvalMetric, register_eval_metric


class _LinearGenerator(nn.Module):
    def __init__(self, image_size: int, num_classes: int, latent_dim: int):
        super().__init__()
        self.size = image_size
        self.embed = nn.Embedding(num_classes, latent_dim)
        self.net = nn.Linear(latent_dim, image_size * image_size)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(z * self.embed(labels))).view(-1, 1, self.size, self.size)


class _LinearCritic(nn.Module):
    def __init__(self, image_size: int, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.net = nn.Linear(image_size * image_size + num_classes, 1)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, None]:
        joined = torch.cat([x.flatten(1), F.one_hot(labels, self.num_classes).to(x.dtype)], dim=1)
        return self.net(joined).squeeze(1), None  # no class head: a plain conditional critic


class Keep:
    """A `report` that keeps each evaluation's metrics and checkpoint folder (fit deletes its own)."""

    def __init__(self, root: Path):
        self.root, self.rows = root, []

    def __call__(self, metrics: dict, folder: Path | None) -> None:
        kept = None
        if folder is not None:
            kept = self.root / f"checkpoint_{len(self.rows)}"
            shutil.copytree(folder, kept)
        self.rows.append({**metrics, "checkpoint_path": str(kept) if kept else None})


def test_a_registered_gan_is_configured_trained_ranked_and_sampled_like_the_built_in_ones(smoke_arrays, tmp_path):
    @register_gan("lineargan")
    def lineargan(*, image_size: int, num_classes: int, latent_dim: int) -> GanPair:
        return GanPair(_LinearGenerator(image_size, num_classes, latent_dim), _LinearCritic(image_size, num_classes))

    try:
        with pytest.raises(ValueError, match="registered twice"):
            register_gan("lineargan")(lineargan)
        cfg = load_config("pet", "smoke", overrides=["gan.arch=lineargan", "gan.epochs=2", "gan.eval_images=16"])
        keep = Keep(tmp_path)
        fit(cfg.gan_settings(), smoke_arrays, keep)
        history = pd.DataFrame(keep.rows)
        assert history["fid"].notna().sum() == 2  # evaluated like any architecture, every epoch of the smoke preset
        metric = cfg.search.metric  # ranked like any architecture: the best evaluation by the ranking metric
        best = best_evaluation(history, metric)
        best_value = history[metric].max() if metric_mode(metric) == "max" else history[metric].min()
        assert best is not None and best[metric] == best_value

        sampler, saved = load_sampler(Path(best["checkpoint_path"]))  # stage 2 rebuilds it from the registry
        images, labels = sample_set(sampler.generator, saved["latent_dim"], {0: 3, 1: 4}, seed=0)
        assert saved["arch"] == "lineargan" and images.shape == (7, 32, 32) and list(labels) == [0, 1, 0, 1, 0, 1, 1]
        assert 0.0 <= images.min() and images.max() <= 1.0
    finally:
        del GAN_REGISTRY["lineargan"]
    with pytest.raises(ConfigError, match="not a known architecture"):
        load_config("pet", "smoke", overrides=["gan.arch=lineargan"])


def mean_gap(fake, fake_labels, real, real_labels, seed) -> float:
    """How far the generated images' mean intensity is from the real ones', averaged over labels."""
    return float(np.mean([abs(fake[fake_labels == label].mean() - real[real_labels == label].mean()).item()
                          for label in real_labels.unique()]))


def test_a_registered_ranking_metric_is_computed_by_every_evaluation_and_ranks_checkpoints(smoke_arrays, tmp_path):
    register_eval_metric(EvalMetric("mean_gap", "min", "similarity", compute=mean_gap))
    try:
        with pytest.raises(ValueError, match="registered twice"):
            register_eval_metric(EvalMetric("mean_gap", "min", "similarity", compute=mean_gap))
        cfg = load_config("pet", "smoke", overrides=["search.metric=mean_gap", "gan.eval_images=16"])
        keep = Keep(tmp_path)
        fit(cfg.gan_settings(), smoke_arrays, keep)
        history = pd.DataFrame(keep.rows)
        assert history["mean_gap"].between(0, 1).sum() == 2  # every evaluation (each of the 2 epochs) computed it
        assert history["mean_gap"].nunique() == 2  # from each epoch's own generator
        best = best_evaluation(history, cfg.search.metric)  # its direction ("min") from the registry entry
        assert best["mean_gap"] == history["mean_gap"].min()
    finally:
        del ADDED_METRICS["mean_gap"], EVAL_METRICS["mean_gap"]
    with pytest.raises(ConfigError, match="not a ranking metric"):
        load_config("pet", "smoke", overrides=["search.metric=mean_gap"])
    with pytest.raises(ValueError, match="compute"):
        register_eval_metric(EvalMetric("no_formula", "min", "similarity"))


@pytest.fixture
def spect():
    """SPECT (DICOM NM) as a modality: drawn and written like PET's uptake images, its own DICOM code."""
    MODALITIES["spect"] = replace(MODALITIES["pet"], name="spect", dicom_code="NM",
                                  image_storage="1.2.840.10008.5.1.4.1.1.20",
                                  enhanced_storage="1.2.840.10008.5.1.4.1.1.20", scanner_spacing_mm=(4.4, 4.4))
    phantom.WRITERS["spect"] = phantom.WRITERS["pet"]
    try:
        yield "spect"
    finally:
        del MODALITIES["spect"], phantom.WRITERS["spect"]


def test_a_registered_modality_is_configured_drawn_ingested_and_trained_on(spect, tmp_path):
    cfg = load_config(None, "smoke", overrides=[f"data.modality={spect}", f"data.cache_dir={tmp_path / 'cache'}",
                                               "data.phantom_patients=24", "data.split=[0.5, 0.2, 0.3]"])
    data = cfg.data
    phantom.write_phantom_cohort(tmp_path / "cohort", patients=data.phantom_patients, modality=spect, slices=4)
    written = pydicom.dcmread(next((tmp_path / "cohort" / spect).rglob("*.dcm")), stop_before_pixels=True)
    assert written.Modality == "NM" and written.SOPClassUID == "1.2.840.10008.5.1.4.1.1.20"

    arrays = ingest(tmp_path / "cohort", data).as_arrays()
    assert len(np.unique(arrays["patients"])) == data.phantom_patients  # every nodule found and cropped
    assert arrays["images"].shape[1:] == (data.size, data.size)
    assert set(np.unique(arrays["labels"])) == {0, 1}
    with pytest.raises(ConfigError, match="not a known modality"):
        load_config(None, "smoke", overrides=["data.modality=mr"])

    final = fit_classifier({"classifier": "mobilenet", "arm": "real", "seed": 0, "epochs": 1, "batch_size": 16,
                            "lr": 1e-3, "weight_decay": 1e-4, "patience": 1}, arrays, None, lambda m: None)
    assert final["train_images"] == int((arrays["split"] == TRAIN).sum())
    assert len(final["predictions"]["scores"]) == int((arrays["split"] == TEST).sum())
