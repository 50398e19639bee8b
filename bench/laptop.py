"""The default command on this machine: `python -m orchestrator.sweep pet` (the laptop preset), timed.

    python -m bench.laptop [--out DIR]

Runs the sweep CLI as a user would, from an empty cache (so the phantom is made and ingested
inside the timing), with a local MLflow store under a temporary folder, and reads back what it
recorded: the wall time of each step (the parent run's `wall_s.*`), the FID of the best
checkpoint per architecture against the real-vs-real floor (`gan_ranking.csv`), and each
classifier's Δ AUC against real only with its patient-level interval (`stage3.csv`), the
oracle arm's among them. The baseline is the aim: 15 minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

from bench.common import REPO, Section

AIM_S = 15 * 60


def measure(quick: bool, out: Path | None = None) -> Section:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        args = ["pet", "--runs-dir", str(tmp / "runs"), "--storage", str(tmp / "tune"),
                "--set", f"data.cache_dir={tmp / 'cache'}"]
        if quick:  # the same path at smoke size: checks this benchmark, not the preset
            args += ["--preset", "smoke"]
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "orchestrator.sweep", *args], cwd=REPO, capture_output=True,
                              text=True)
        wall = time.perf_counter() - started
        if out is not None:  # the whole output, to read when something went wrong
            out.mkdir(parents=True, exist_ok=True)
            (out / "sweep_stdout.txt").write_text(done.stdout)
            (out / "sweep_stderr.txt").write_text(done.stderr)
        if done.returncode != 0:
            raise RuntimeError(f"the sweep failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        client = MlflowClient(f"sqlite:///{tmp / 'runs' / 'mlflow.db'}")
        (experiment,) = [e for e in client.search_experiments() if e.name.startswith("medgan-sweep")]
        (parent,) = [r for r in client.search_runs([experiment.experiment_id]) if "medgan.sweep" in r.data.tags
                     and "mlflow.parentRunId" not in r.data.tags]
        sweep_dir = tmp / "runs" / parent.data.tags["medgan.sweep"]
        ranking = pd.read_csv(sweep_dir / "gan_ranking.csv").groupby("arch", sort=False).head(1)
        stage3 = pd.read_csv(sweep_dir / "stage3.csv", dtype=str, keep_default_na=False)
        if out is not None:  # the whole sweep folder: the report's images sit beside it
            shutil.copytree(sweep_dir, out, dirs_exist_ok=True)
    metrics = parent.data.metrics
    steps = {k.removeprefix("wall_s."): v for k, v in metrics.items() if k.startswith("wall_s.")}
    rows = [{"step": step, "wall s": seconds} for step, seconds in steps.items()]
    rows.append({"step": "whole command (python start to exit)", "wall s": wall})
    notes = [f"preset {parent.data.tags.get('preset')}; test split: {parent.data.tags.get('test_split')}; "
             f"inference: {parent.data.tags.get('test_inference')}"]
    notes += [f"best {r.arch}: FID {r.fid:.1f} against a floor of {r.fid_floor:.1f} (FID - floor {r.fid_minus_floor:.1f})"
              for r in ranking.itertuples()]
    for row in stage3.to_dict("records"):
        if row.get("Δ AUC"):
            notes.append(f"{row['classifier']} / {row['arm']}: Δ AUC {row['Δ AUC']}, p (Holm) "
                         f"{row.get('Δ AUC p (Holm)') or 'n/a'}; {row['status']}")
    return Section(
        title="The default command on this machine (laptop preset), end to end",
        method=("`python -m orchestrator.sweep pet` from an empty cache (phantom made and ingested inside the "
                "timing), local MLflow store; figures read back from the parent run, `gan_ranking.csv` and "
                "`stage3.csv`. Baseline: the aim of 15 minutes."),
        rows=rows, ratios={"whole command / 15 min": wall / AIM_S}, notes=notes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="copy the report and tables here")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(measure(args.quick, args.out).markdown())


if __name__ == "__main__":
    main()
