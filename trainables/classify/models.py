"""Classifier registry: `build_classifier(name, ...)` -> an nn.Module mapping [B, 1, S, S] to 2 logits.

Every classifier takes grey input in [0, 1] on one channel and returns (B, 2) logits in train
and eval mode alike, so one training recipe (`trainables.classify.loop`) drives all four.
Nothing is downloaded: pretrained weights are used only from a local file, and which start
was used is returned with the model, to be recorded next to its figures.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from trainables.cohort import LABEL_NAMES

NUM_CLASSES = len(LABEL_NAMES)  # benign, malignant: the logits every classifier returns
CLASSIFIER_REGISTRY: dict[str, Callable[[str], nn.Module]] = {}


@dataclass(frozen=True)
class Classifier:
    model: nn.Module
    init: str  # "random", or "pretrained:<file>": recorded beside the classifier's figures


def register_classifier(name: str):
    def add(fn: Callable[[str], nn.Module]) -> Callable[[str], nn.Module]:
        if name in CLASSIFIER_REGISTRY:
            raise ValueError(f"classifier {name!r} registered twice")
        CLASSIFIER_REGISTRY[name] = fn
        return fn
    return add


def build_classifier(name: str, weights: str = "") -> Classifier:
    """The classifier `name`, from random initialisation or from the local `weights` file."""
    if name not in CLASSIFIER_REGISTRY:
        raise ValueError(f"unknown classifier {name!r}; choose from {sorted(CLASSIFIER_REGISTRY)}")
    if weights and not Path(weights).is_file():
        raise FileNotFoundError(f"pretrained weights for {name} not found at {weights}; give a local file "
                                f"(nothing is downloaded) or leave the path empty to start from random weights")
    model = CLASSIFIER_REGISTRY[name](weights)
    return Classifier(model, f"pretrained:{Path(weights).name}" if weights else "random")


# What a CPU trial holds besides its parameters: the process with torch, timm and ultralytics
# imported, the cohort, activations at the laptop's size (VGG-16 trials peaked near 5 GB at 32 px).
TRIAL_BASE_BYTES = 3 * 2**29
# Copies of the parameters a trial holds: weights, gradients, AdamW's two moments, the best epoch's
# state, and oneDNN's reordered weights.
PARAMETER_COPIES = 6


def training_memory_bytes(name: str) -> int:
    """Host memory one training trial of classifier `name` takes at most, roughly: what a scheduler
    reserves so that trials packed on one machine do not run it out of memory (four VGG-16 trials at
    once did, on 24 GB). Counted on the meta device: nothing is allocated or initialised."""
    with torch.device("meta"):
        model = CLASSIFIER_REGISTRY[name]("")
    return TRIAL_BASE_BYTES + PARAMETER_COPIES * 4 * sum(p.numel() for p in model.parameters())


@register_classifier("vgg16")
def vgg16(weights: str) -> nn.Module:
    model = _timm("vgg16", weights)
    # timm's head is a 7x7 conv (512 -> 4096, 103 M weights) then a 1x1 conv, each seeing an input
    # of exactly its kernel's size: a matrix product that oneDNN's conv backward computes several
    # times slower (`python -m bench.classifier_step`; figures in bench/results.md).
    for name in ("fc1", "fc2"):
        setattr(model.pre_logits, name, FullFieldConv2d.of(getattr(model.pre_logits, name)))
    model.pre_logits = OnePositionHead(model.pre_logits)
    return model


class OnePositionHead(nn.Module):
    """timm's VGG head, computed cheaply when the features are one position (32 px input). timm pools
    them up to 7 x 7, every position a copy, before the 7 x 7 fc1; the same output is fc1's weights
    summed over the kernel times the one vector, and autograd gives each weight the same gradient as
    through the copies. Saves a 25,088-wide matrix product forward and back (a VGG-16 step 1.14 s ->
    0.93 s on one CPU thread, bench/results.md); any other input size takes timm's own path. The same
    submodules, so the same state_dict keys and weights as timm's head."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self.input_kernel_size = head.input_kernel_size
        self.fc1, self.act1, self.drop, self.fc2, self.act2 = head.fc1, head.act1, head.drop, head.fc2, head.act2
        self.timm_forward = type(head).forward  # a plain function: no reference back to a module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != (1, 1):
            return self.timm_forward(self, x)
        x = F.linear(x.flatten(1), self.fc1.weight.sum((2, 3)), self.fc1.bias)[..., None, None]
        return self.act2(self.fc2(self.drop(self.act1(x))))


class FullFieldConv2d(nn.Conv2d):
    """A Conv2d computed as a matrix product when its input is exactly the kernel's size (one
    output position): the same function, weights and state_dict keys as the conv it replaces."""

    @classmethod
    def of(cls, conv: nn.Conv2d) -> FullFieldConv2d:
        if conv.padding != (0, 0) or conv.groups != 1 or conv.dilation != (1, 1):
            raise ValueError(f"{conv} is not a plain conv: keep it as it is")
        full = cls(conv.in_channels, conv.out_channels, conv.kernel_size, bias=conv.bias is not None, device="meta")
        full.weight, full.bias = conv.weight, conv.bias  # the same Parameters: nothing re-initialised
        return full

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.kernel_size:
            return super().forward(x)
        return F.linear(x.flatten(1), self.weight.flatten(1), self.bias)[..., None, None]


@register_classifier("resnet")
def resnet(weights: str) -> nn.Module:
    return _timm("resnet18", weights)


@register_classifier("mobilenet")
def mobilenet(weights: str) -> nn.Module:
    return channels_last(_timm("mobilenetv3_small_100", weights))


def channels_last(model: nn.Module) -> nn.Module:
    """The model's weights in channels-last layout, which oneDNN's convolutions then keep throughout (a
    one-channel input is the same in both layouts). Measured on one CPU thread at 32 px, batch 32
    (`python -m bench.classifier_step`): MobileNetV3's step 1.5x faster, YOLOv8's 1.03-1.1x; ResNet-18's
    and VGG-16's 0.75-0.8x, so they keep the default layout."""
    return model.to(memory_format=torch.channels_last)


def _timm(model_name: str, weights: str) -> nn.Module:
    import timm

    # in_chans=1: timm sums a pretrained first conv over RGB, so local RGB weights still fit.
    overlay = {"pretrained_cfg_overlay": {"file": weights}} if weights else {}
    return timm.create_model(model_name, pretrained=bool(weights), in_chans=1, num_classes=NUM_CLASSES, **overlay)


@register_classifier("yolov8")
def yolov8(weights: str) -> nn.Module:
    """YOLOv8n-cls built from ultralytics' yaml (1.4 M parameters), driven by our own loop."""
    _quiet_ultralytics()
    from ultralytics.nn.tasks import ClassificationModel

    model = ClassificationModel("yolov8n-cls.yaml", ch=1, nc=NUM_CLASSES, verbose=False)
    if weights:
        state = torch.load(weights, map_location="cpu", weights_only=False)
        state = state["model"].float().state_dict() if isinstance(state, dict) and "model" in state else state
        # the classification head has another class count; keep only what fits
        own = model.state_dict()
        model.load_state_dict({k: v for k, v in state.items() if k in own and own[k].shape == v.shape}, strict=False)
    return channels_last(_Logits(model))


class _Logits(nn.Module):
    """ultralytics' classifier returns (softmax, logits) in eval mode: always give the logits."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out[1] if isinstance(out, tuple) else out


def _quiet_ultralytics() -> None:
    """Keep ultralytics offline and out of our tracking.

    On first import it writes a settings file that turns on its own MLflow and Ray Tune
    callbacks: point it at a private folder (per process) and switch both off.
    """
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="ultralytics-"))
    from ultralytics.utils import SETTINGS

    SETTINGS.update({"mlflow": False, "raytune": False, "tensorboard": False, "wandb": False, "sync": False})
