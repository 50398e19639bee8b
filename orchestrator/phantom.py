"""`python -m orchestrator.phantom --out DIR`: write the built-in phantom cohort as DICOM."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from orchestrator.data.phantom import write_phantom_cohort


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.phantom",
        description="Write a seeded phantom cohort of PET / CT lung-nodule slices as real DICOM files "
                    "(DIR/pet/pNNN/slice_NN.dcm, DIR/ct/...) plus DIR/labels.csv.")
    parser.add_argument("--out", required=True, type=Path, help="folder to write into (created if missing)")
    parser.add_argument("--patients", type=int, default=80, help="number of patients (default 80)")
    parser.add_argument("--modality", choices=["pet", "ct", "both"], default="both", help="default both")
    parser.add_argument("--size", type=int, default=256, help="pixel side of each slice (default 256)")
    parser.add_argument("--slices", type=int, default=4, help="slices per patient through the nodule (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same bytes (default 0)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    labels = write_phantom_cohort(args.out, patients=args.patients, modality=args.modality,
                                  size=args.size, seed=args.seed, slices=args.slices)
    count = sum(1 for _ in args.out.rglob("*.dcm"))
    print(f"wrote {count} DICOM files for {args.patients} patients under {args.out} "
          f"in {time.perf_counter() - started:.1f} s; labels in {labels}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
