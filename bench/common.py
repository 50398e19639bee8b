"""What every benchmark shares: its result (a Section), the machine description, a cohort."""
from __future__ import annotations

import os
import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from orchestrator.config import Config, load_config
from orchestrator.data.ingest import ingest
from orchestrator.sweep import phantom_folder

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Section:
    """One benchmark's figures: a table (or several, by heading), and the ratios against its baseline
    from the same run."""
    title: str
    method: str  # what was run, and what the baseline is
    rows: list[dict] = field(default_factory=list)
    ratios: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    tables: dict[str, list[dict]] = field(default_factory=dict)  # heading -> rows, after `rows`

    def markdown(self) -> str:
        lines = [f"## {self.title}", "", self.method, ""]
        lines += _table(self.rows)
        for heading, rows in self.tables.items():
            lines += [f"{heading}:", "", *_table(rows)]
        lines += [f"- **{name}: {value:.3f}**" for name, value in self.ratios.items()]
        lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines) + "\n"


def _table(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    keys = list(dict.fromkeys(k for row in rows for k in row))
    return ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys),
            *("| " + " | ".join(_cell(row.get(k, "")) for k in keys) + " |" for row in rows), ""]


def _cell(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    import ray
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    return {"CPU": f"{cpu}, {os.cpu_count()} cores", "memory": f"{memory:.0f} GiB", "GPU": gpu,
            "OS": platform.platform(), "Python": platform.python_version(), "torch": torch.__version__,
            "Ray": ray.__version__, "commit": commit}


def smoke_config(tmp: Path, *overrides: str) -> Config:
    """The smoke preset with its phantom cache under `tmp`, and `overrides` (`key=value`)."""
    return load_config("pet", "smoke", overrides=[f"data.cache_dir={tmp / 'cache'}", *overrides])


def phantom_arrays(cfg: Config) -> dict[str, np.ndarray]:
    """The phantom cohort of `cfg` (made once under its cache folder), as a sweep hands it to trials."""
    folder = phantom_folder(cfg)
    return ingest(folder, cfg.data).as_arrays()


def timed_stage3(cfg: Config, arrays: dict, storage: Path) -> float:
    """Wall seconds of stage 3's own Tuner over `cfg`'s grid, on the Ray already started; raises if a
    trial failed (a benchmark of failures measures nothing)."""
    import ray

    from orchestrator.stages import classify as classify_stage

    tuner = classify_stage.build_tuner(cfg, ray.put(arrays), {}, str(storage), callbacks=[], resume=False)
    started = time.perf_counter()
    results = tuner.fit()
    seconds = time.perf_counter() - started
    failed = [r.error for r in results if r.error]
    if failed:
        raise RuntimeError(f"classifier trials failed: {failed[0]}")
    return seconds
