"""`python -m bench [--quick] [--only NAME ...]`: the benchmark suite, each figure against a baseline
measured in the same run, printed and written to bench/results.md with the machine description.

Benchmarks: overhead (a GAN trial under Tune + Train), packing (classifier trials per CPU), data
(ingest vs cache), metrics (evaluation's cost), search (TPE + ASHA vs random), gan_budget (GAN learning
per CPU minute), classifier_step (stage 3's cost per classifier), learning_curve (what more real
patients give each classifier at the laptop recipe), laptop (the default command end to end), gpu.
`--quick` shrinks each to a smoke check of the benchmark itself (minutes); its figures are
not the ones to quote.
"""
from __future__ import annotations

import argparse
import importlib
import time
from datetime import datetime, timezone
from pathlib import Path

from bench.common import REPO, machine

BENCHMARKS = {"overhead": "bench.overhead", "packing": "bench.packing", "data": "bench.data_path",
              "metrics": "bench.metric_cost", "search": "bench.search_efficiency", "gan_budget": "bench.gan_budget",
              "classifier_step": "bench.classifier_step", "learning_curve": "bench.learning_curve",
              "laptop": "bench.laptop", "gpu": "bench.gpu"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small versions, to check the suite runs")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), help="run these benchmarks only")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results.md")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    described = machine()
    sections = []
    for name in args.only or BENCHMARKS:
        print(f"--- {name}", flush=True)
        began = time.perf_counter()
        section = importlib.import_module(BENCHMARKS[name]).measure(args.quick)
        print(section.markdown() + f"({time.perf_counter() - began:.0f} s)\n", flush=True)
        sections.append(section)

    header = [f"# Benchmark results{' (--quick: not figures to quote)' if args.quick else ''}", "",
              f"`python -m bench{' --quick' if args.quick else ''}"
              f"{' --only ' + ' '.join(args.only) if args.only else ''}`, "
              f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {time.perf_counter() - started:.0f} s in all.", ""]
    header += [f"- {key}: {value}" for key, value in described.items()]
    args.out.write_text("\n".join(header) + "\n\n" + "\n".join(s.markdown() for s in sections))
    print(f"written to {args.out}")
    return 0
