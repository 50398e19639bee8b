"""The sweep's stages, each a typed call the sweep makes in the order of STAGES:

    gan.run(context) -> GanResult (the ranking); synth.run(context, GanResult) -> [SyntheticSet]
    (the sets and their audit); classify.run(context, [SyntheticSet]) -> ClassifyResult.

Each stage writes and logs its own outputs and prints what it did; a stage whose result is empty
ends the sweep there. Stages read their resources from the config, resolved
once by orchestrator.sweep.resolve_resources.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.config import Config

STAGES = ("gan", "synth", "classify")  # in this order; each needs the one before


@dataclass(frozen=True)
class StageContext:
    """What every stage runs with, built once by the sweep."""
    cfg: Config
    arrays: dict  # the cohort's arrays, on the driver
    data_ref: Any  # the same in Ray's object store: what trials read
    floor: dict  # the real-vs-real floor of each FID-type metric (empty if it could not be computed)
    tracker: Any  # orchestrator.tracking.SweepTracker
    storage: str  # Tune / Train storage root (folder or URI)
    sweep_path: str  # this sweep's folder under it
    out_dir: Path  # local outputs: tables, synthetic sets, the report
    resume: bool

    @property
    def sweep_id(self) -> str:
        """The sweep's id: the last part of its folder or URI."""
        return self.sweep_path.rstrip("/").rsplit("/", 1)[-1]
