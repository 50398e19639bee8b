"""Ingest throughput: slices per second for a cold ingest and for a cache load, and their ratio.

    python bench/ingest.py [--patients 500] [--slices 4] [--size 256] [--out-size 128]

Writes a phantom PET cohort to a temporary folder, ingests it with an empty cache (cold:
read + check + preprocess + split + write the cache), then ingests it again (cache load:
fingerprint the files + open the cache). The cache load is what every sweep after the
first pays, and what the README promises takes well under a second for thousands of slices.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from orchestrator.config import load_config
from orchestrator.data.ingest import ingest
from orchestrator.data.phantom import write_phantom_cohort


def timed_ingest(data: Path, cfg) -> tuple[float, int, bool]:
    start = time.perf_counter()
    cohort = ingest(data, cfg, labels_file=data / "labels.csv")
    _ = float(cohort.images[-1].sum())  # touch the data: a memory map alone proves nothing
    return time.perf_counter() - start, len(cohort.labels), cohort.from_cache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=500)
    parser.add_argument("--slices", type=int, default=4)
    parser.add_argument("--size", type=int, default=256, help="pixel side of the DICOM files")
    parser.add_argument("--out-size", type=int, default=128, help="pixel side after preprocessing")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data, cache = Path(tmp) / "data", Path(tmp) / "cache"
        start = time.perf_counter()
        write_phantom_cohort(data, patients=args.patients, modality="pet", size=args.size, slices=args.slices)
        print(f"wrote {args.patients * args.slices} PET slices ({args.size} px) in {time.perf_counter() - start:.1f} s")
        cfg = replace(load_config("pet").data, size=args.out_size, cache_dir=str(cache))

        cold, n, hit = timed_ingest(data, cfg)
        assert not hit
        warm, n_warm, hit = timed_ingest(data, cfg)
        assert hit and n_warm == n

    print(f"cold ingest : {n} slices in {cold:7.3f} s = {n / cold:10.0f} slices/s")
    print(f"cache load  : {n} slices in {warm:7.3f} s = {n / warm:10.0f} slices/s")
    print(f"ratio       : cache load is {cold / warm:.0f}x faster than a cold ingest")


if __name__ == "__main__":
    main()
