"""Which device a trial computes on: the one its reservation gave it, or a clear error.

Ray narrows CUDA_VISIBLE_DEVICES to the GPUs a trial (or Train worker) holds, so inside it
`cuda:0` is its own GPU. A trial that holds a GPU but cannot see one fails at once rather
than training on the CPU while the GPU sits reserved.
"""
from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext

import torch


def trial_device(gpus: float, given: torch.device | None = None) -> torch.device:
    """The device of a trial holding `gpus` GPUs; `given` is what Ray Train picked for a worker (it
    wins, once checked: a worker's local GPU is Train's to name)."""
    if given is not None:
        device = given
    else:
        device = torch.device("cuda", 0) if gpus else torch.device("cpu")
    if gpus and (device.type != "cuda" or not torch.cuda.is_available()):
        raise RuntimeError(f"this trial holds {gpus:g} GPU(s) but torch {torch.__version__} sees none "
                           f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}, device {device}): "
                           "refusing to train on the CPU while holding a GPU")
    return device


def autocast(device: torch.device, bf16: bool) -> AbstractContextManager:
    """bf16 autocast on `device` when asked (CPU too, so CPU-only CI runs the same dtype paths)."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
