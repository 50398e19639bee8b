"""The one owner of the GAN checkpoint format.

A checkpoint folder holds:
  state.pt      generator, critic, EMA generator, both optimisers, replay buffer, epoch, RNG state
  config.json   the trial's GAN settings (what builds the networks again)
  metrics.json  the evaluation it was reported with
  samples.png   the evaluation's sample grid: small, and read on its own (the tracker never
                fetches the weights to show a picture)
A diverged run reports no checkpoint at all.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from trainables.gan.models import build_gan

STATE_FILE = "state.pt"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
GRID_FILE = "samples.png"
UNTRAINED_GRID_FILE = "samples_epoch_0.png"  # in a fresh trial's first checkpoint: the generator before training
STATE_KEYS = ("generator", "critic", "ema", "optimizers", "replay", "epoch", "rng")


class MissingState(FileNotFoundError):
    """A folder handed in to resume from (or to sample) is not a complete GAN checkpoint."""


@dataclass
class TrainingState:
    """Everything a run needs to go on exactly where it stopped."""

    generator: dict
    critic: dict
    ema: dict | None
    optimizers: dict  # {"g": ..., "d": ...}
    replay: dict
    epoch: int
    rng: dict


def save(folder: Path, state: TrainingState, cfg: Mapping, metrics: Mapping) -> None:
    """Write the state and its config and metrics into `folder` (the grid is written by the evaluator)."""
    torch.save({key: getattr(state, key) for key in STATE_KEYS}, folder / STATE_FILE)
    _write_json(folder / CONFIG_FILE, dict(cfg))
    _write_json(folder / METRICS_FILE, dict(metrics))


def load(folder: Path, device: torch.device | str = "cpu") -> TrainingState:
    """The state in `folder`; MissingState when it has none (resuming would silently start over)."""
    path = Path(folder) / STATE_FILE
    if not path.is_file():
        present = sorted(p.name for p in Path(folder).iterdir()) if Path(folder).is_dir() else []
        raise MissingState(f"{folder}: no {STATE_FILE} to resume from (the folder holds {present or 'nothing'}); "
                           "a GAN checkpoint needs its training state")
    state = torch.load(path, map_location=device, weights_only=True)
    return TrainingState(**{key: state[key] for key in STATE_KEYS})


def load_generator(folder: Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """The checkpoint's generator (its EMA copy when it has one: what the trial was scored on) and config."""
    cfg = json.loads((Path(folder) / CONFIG_FILE).read_text())
    state = load(folder, device)
    generator = build_gan(cfg).generator.to(device)
    generator.load_state_dict(state.ema if state.ema is not None else state.generator)
    return generator, cfg


def _write_json(path: Path, value: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(value, indent=1, default=str))
