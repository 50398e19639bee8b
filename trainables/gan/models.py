"""GAN architectures, looked up by name: `build_gan({"arch": "cgan", "image_size": 64, ...})`.

Adding an architecture is one decorated function (timm style):

    @register_gan("mygan")
    def mygan(*, image_size, num_classes, latent_dim, ...) -> GanPair: ...

Both architectures share one interface, so the training loop never asks which it has:

    generator(z [N, latent_dim], labels [N] int64)  -> images [N, 1, S, S] in [-1, 1] (tanh)
    critic(x [N, 1, S, S], labels [N] int64)        -> (scores [N], class_logits [N, C] or None)

Shapes: the generator starts at 4 x 4 and doubles the side log2(S / 4) times; the critic
halves it the same number of times. Channel widths double per stage away from the image
and are capped at MAX_CHANNELS, so 256 px costs about three times the parameters of 32 px
rather than eight times (counts per size: tests/trainables/gan/test_models.py).

This module runs inside Ray workers: it gets a plain dict and imports nothing from
orchestrator/, Ray, MLflow or Optuna.
"""
from __future__ import annotations

import inspect

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

MAX_CHANNELS = 512  # width cap: keeps the 128 and 256 px models affordable
LEAK = 0.2  # LeakyReLU slope in the critic (DCGAN)
INIT_STD = 0.02  # DCGAN weight init: N(0, 0.02) for conv / linear, N(1, 0.02) for BN scales


@dataclass
class GanPair:
    """What `build_gan` returns: a generator and its critic, both with the uniform interface."""

    generator: nn.Module
    critic: nn.Module


GAN_REGISTRY: dict[str, Callable[..., GanPair]] = {}


def register_gan(name: str) -> Callable[[Callable[..., GanPair]], Callable[..., GanPair]]:
    """Decorator: make `fn(**arch_params) -> GanPair` available to `build_gan` as `name`."""

    def decorator(fn: Callable[..., GanPair]) -> Callable[..., GanPair]:
        if name in GAN_REGISTRY:
            raise ValueError(f"GAN architecture {name!r} is registered twice")
        GAN_REGISTRY[name] = fn
        return fn

    return decorator


def build_gan(cfg: Mapping) -> GanPair:
    """Build the generator and critic named by `cfg["arch"]`.

    `cfg` is a plain dict with the GanConfig fields plus `image_size` (the data side S, a power
    of two >= 8) and `num_classes` (from the cohort). Each builder gets exactly the settings its
    signature declares: the defaults live in GanConfig alone.
    """
    arch = cfg.get("arch", "cgan")
    if arch not in GAN_REGISTRY:
        raise KeyError(f"unknown GAN architecture {arch!r}: known are {', '.join(sorted(GAN_REGISTRY))}")
    declared = inspect.signature(GAN_REGISTRY[arch]).parameters
    missing = [name for name in declared if name not in cfg]
    if missing:
        raise KeyError(f"build_gan: {arch} needs {missing} (image_size is data.size, num_classes the cohort's)")
    params = {name: cfg[name] for name in declared}
    params["image_size"] = int(params["image_size"])
    _stages(params["image_size"])  # validate before building anything
    return GAN_REGISTRY[arch](**params)


def ema_update(ema_model: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model for parameters; buffers (BN statistics) copied.

    decay 0 makes `ema_model` an exact copy of `model`; decay 1 leaves it unchanged.
    """
    with torch.no_grad():
        ema_params = dict(ema_model.named_parameters())
        for name, param in model.named_parameters():
            ema_params[name].lerp_(param.detach(), 1.0 - decay)
        ema_buffers = dict(ema_model.named_buffers())
        for name, buffer in model.named_buffers():
            ema_buffers[name].copy_(buffer)


# ----------------------------------------------------------------------------- blocks


def _stages(image_size: int) -> int:
    """Number of 2x resampling stages between 4 x 4 and image_size x image_size."""
    stages = round(math.log2(image_size / 4)) if image_size > 0 else 0
    if stages < 1 or 4 * 2**stages != image_size:
        raise ValueError(f"image_size must be a power of two >= 8 (e.g. 32, 64, 128, 256), got {image_size}")
    return stages


def _width(base: int, doublings: int) -> int:
    return min(base * 2**doublings, MAX_CHANNELS)


def _init_weights(module: nn.Module) -> None:
    """DCGAN initialisation (Radford et al.): N(0, 0.02) weights, BN scale N(1, 0.02), zero bias."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, 0.0, INIT_STD)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, INIT_STD)
        nn.init.zeros_(module.bias)


class ResBlockG(nn.Module):
    """Generator residual block: conv-BN-ReLU-conv-BN, added to the input, then ReLU."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.bn1(self.conv1(x)))
        return self.act(x + self.bn2(self.conv2(h)))


class ResBlockD(nn.Module):
    """Critic residual block: conv-LeakyReLU-conv, added to the input, then LeakyReLU. No norm."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = nn.LeakyReLU(LEAK)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.conv1(x))
        return self.act(x + self.conv2(h))


class ImageGenerator(nn.Module):
    """Vector [N, in_dim] -> image [N, 1, S, S] in [-1, 1].

    Linear to 4 x 4, then per stage a transposed conv (2x upsampling, as DCGAN) with
    BN + ReLU followed by `res_blocks` residual blocks; a 3 x 3 conv to one channel, tanh.
    The width at the output resolution is `channels` and doubles per stage towards 4 x 4.
    """

    def __init__(self, in_dim: int, image_size: int, channels: int, res_blocks: int):
        super().__init__()
        stages = _stages(image_size)
        self.start_channels = _width(channels, stages)
        self.project = nn.Linear(in_dim, self.start_channels * 4 * 4, bias=False)
        layers: list[nn.Module] = [nn.BatchNorm2d(self.start_channels), nn.ReLU()]
        c_in = self.start_channels
        for stage in range(stages):
            c_out = _width(channels, stages - 1 - stage)
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
            layers += [ResBlockG(c_out) for _ in range(res_blocks)]
            c_in = c_out
        layers += [nn.Conv2d(c_in, 1, 3, padding=1), nn.Tanh()]
        self.body = nn.Sequential(*layers)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.body(self.project(v).view(v.shape[0], self.start_channels, 4, 4))


class ImageCritic(nn.Module):
    """Image [N, 1, S, S] -> (scores [N], class_logits [N, C] or None when num_classes == 0).

    A 3 x 3 stem, then per stage a strided 4 x 4 conv (2x downsampling), LeakyReLU, dropout and
    `res_blocks` residual blocks, down to 4 x 4; a linear score head (and class head).

    No batch norm, on purpose: WGAN-GP penalises the critic's gradient per sample, which
    assumes each score depends on its own sample only. Batch norm mixes the samples of a
    batch, so the per-sample gradients (and the penalty) become wrong (Gulrajani et al.,
    sec. 4). Spectral normalisation bounds each layer instead; layer norm would also be safe.
    """

    def __init__(self, image_size: int, channels: int, res_blocks: int, dropout: float, num_classes: int = 0):
        super().__init__()
        stages = _stages(image_size)
        layers: list[nn.Module] = [nn.Conv2d(1, channels, 3, padding=1), nn.LeakyReLU(LEAK)]
        c_in = channels
        for stage in range(stages):
            c_out = _width(channels, stage + 1)
            layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.LeakyReLU(LEAK)]
            layers += [nn.Dropout(dropout)] if dropout > 0 else []
            layers += [ResBlockD(c_out) for _ in range(res_blocks)]
            c_in = c_out
        self.body = nn.Sequential(*layers)
        self.score = nn.Linear(c_in * 4 * 4, 1)
        self.classify = nn.Linear(c_in * 4 * 4, num_classes) if num_classes > 0 else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        features = self.body(x).flatten(1)
        logits = self.classify(features) if self.classify is not None else None
        return self.score(features).squeeze(1), logits


def _apply_spectral_norm(critic: ImageCritic) -> ImageCritic:
    """Spectral norm on every conv and on the score head. The AC class head stays plain:
    it is not part of the Wasserstein estimate, and a bounded head learns the labels slowly."""
    for module in critic.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)) and module is not critic.classify:
            _spectral_norm(module)
    return critic


def _make_critic(image_size: int, d_channels: int, res_blocks: int, dropout: float, spectral_norm: bool, num_classes: int) -> ImageCritic:
    critic = ImageCritic(image_size, d_channels, res_blocks, dropout, num_classes)
    critic.apply(_init_weights)  # before spectral norm, so the init lands on the raw weights
    return _apply_spectral_norm(critic) if spectral_norm else critic


def _route(nets: nn.ModuleList, inputs: torch.Tensor, labels: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
    """Run each sample through the net of its label; outputs come back in input order.

    Returns, per output of the nets, the tensor gathered over the batch (None stays None).
    """
    positions, outputs = [], []
    for label, net in enumerate(nets):
        idx = (labels == label).nonzero(as_tuple=True)[0]
        if idx.numel() == 0:
            continue  # an empty batch would break batch norm; this net sits the step out
        out = net(inputs[idx])
        positions.append(idx)
        outputs.append(out if isinstance(out, tuple) else (out,))
    if sum(p.numel() for p in positions) != labels.shape[0]:
        raise ValueError(f"labels must be in [0, {len(nets)}), got values {sorted(set(labels.tolist()))}")
    order = torch.argsort(torch.cat(positions))  # inverse permutation: back to input order
    gathered = []
    for parts in zip(*outputs):
        gathered.append(None if parts[0] is None else torch.cat(parts)[order])
    return gathered


# ------------------------------------------------------------------------------ cgan


class LabelProjection(nn.Module):
    """Label -> Embedding -> Linear -> ReLU, a [N, embed_dim] vector concatenated with z."""

    def __init__(self, num_classes: int, embed_dim: int):
        super().__init__()
        self.embed = nn.Embedding(num_classes, embed_dim)
        self.project = nn.Linear(embed_dim, embed_dim)
        self.act = nn.ReLU()

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.act(self.project(self.embed(labels)))


class ConditionalGenerator(nn.Module):
    """cgan generator: G(z, y) = ImageGenerator([z, proj(y)])."""

    def __init__(self, image_size: int, num_classes: int, latent_dim: int, g_channels: int, res_blocks: int, label_embed_dim: int):
        super().__init__()
        self.latent_dim, self.image_size, self.num_classes = latent_dim, image_size, num_classes
        self.label_proj = LabelProjection(num_classes, label_embed_dim)
        self.net = ImageGenerator(latent_dim + label_embed_dim, image_size, g_channels, res_blocks)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([z, self.label_proj(labels)], dim=1))


class ACCritic(nn.Module):
    """cgan critic (AC-GAN): unconditional on its input, with an auxiliary class head.

    `labels` is accepted for the uniform interface and not used: the label enters the loss
    through the class logits (cross-entropy), not through the score.
    """

    def __init__(self, image_size: int, num_classes: int, d_channels: int, res_blocks: int, dropout: float, spectral_norm: bool):
        super().__init__()
        self.image_size, self.num_classes = image_size, num_classes
        self.net = _make_critic(image_size, d_channels, res_blocks, dropout, spectral_norm, num_classes)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(x)


@register_gan("cgan")
def cgan(*, image_size: int, num_classes: int, latent_dim: int, g_channels: int, d_channels: int,
         res_blocks: int, spectral_norm: bool, dropout: float, label_embed_dim: int) -> GanPair:
    """Conditional GAN: label embedding + projection concatenated with z; AC-GAN critic."""
    generator = ConditionalGenerator(image_size, num_classes, latent_dim, g_channels, res_blocks, label_embed_dim)
    generator.apply(_init_weights)
    critic = ACCritic(image_size, num_classes, d_channels, res_blocks, dropout, spectral_norm)
    return GanPair(generator, critic)


# ----------------------------------------------------------------------------- dcgan


class PerLabelGenerator(nn.Module):
    """dcgan generator: ONE unconditional generator PER LABEL, held in `nets` (a ModuleList).

    An unconditional DCGAN still yields labelled images this way (SPEC, stage 1): sample i
    goes through `nets[labels[i]]`, and the outputs come back in the order of the input.
    The generators share no weights, so each one learns its class alone.
    """

    def __init__(self, image_size: int, num_classes: int, latent_dim: int, g_channels: int, res_blocks: int):
        super().__init__()
        self.latent_dim, self.image_size, self.num_classes = latent_dim, image_size, num_classes
        self.nets = nn.ModuleList(ImageGenerator(latent_dim, image_size, g_channels, res_blocks) for _ in range(num_classes))

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        (images,) = _route(self.nets, z, labels)
        return images


class PerLabelCritic(nn.Module):
    """dcgan critic: ONE unconditional critic PER LABEL, routed like PerLabelGenerator.

    Returns (scores [N], None): there is no class head, the label picks the critic.
    """

    def __init__(self, image_size: int, num_classes: int, d_channels: int, res_blocks: int, dropout: float, spectral_norm: bool):
        super().__init__()
        self.image_size, self.num_classes = image_size, num_classes
        self.nets = nn.ModuleList(
            _make_critic(image_size, d_channels, res_blocks, dropout, spectral_norm, num_classes=0) for _ in range(num_classes)
        )

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, None]:
        scores, _ = _route(self.nets, x, labels)
        return scores, None


@register_gan("dcgan")
def dcgan(*, image_size: int, num_classes: int, latent_dim: int, g_channels: int, d_channels: int,
          res_blocks: int, spectral_norm: bool, dropout: float) -> GanPair:
    """DCGAN, one generator and one critic per label."""
    generator = PerLabelGenerator(image_size, num_classes, latent_dim, g_channels, res_blocks)
    generator.apply(_init_weights)
    critic = PerLabelCritic(image_size, num_classes, d_channels, res_blocks, dropout, spectral_norm)
    return GanPair(generator, critic)


class ImageSampler(nn.Module):
    """A generator as users load it (MLflow's model registry): `sampler(noise [N, latent_dim] float32,
    label [N] int64)` -> images [N, 1, S, S] in [0, 1], in eval mode, as the sweep's sets were drawn.
    Here, beside the architectures, because a pickled sampler needs this module and torch only."""

    def __init__(self, generator: nn.Module, latent_dim: int):
        super().__init__()
        self.generator, self.latent_dim = generator.eval(), latent_dim

    def forward(self, noise: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return ((self.generator(noise, label).float() + 1) / 2).clamp(0, 1)

    def train(self, mode: bool = True) -> ImageSampler:
        return super().train(False)  # batch norm keeps its running statistics whatever the caller does
