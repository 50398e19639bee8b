"""`python -m orchestrator.phantom --out DIR`: write the built-in phantom cohort as DICOM."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from orchestrator.config import DataConfig
from orchestrator.data.modalities import MODALITIES
from orchestrator.data.phantom import write_phantom_cohort


def main(argv: list[str] | None = None) -> int:
    defaults = DataConfig()  # the sizes a sweep's own phantom uses unless its config says otherwise
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.phantom",
        description="Write a seeded phantom cohort of PET / CT thorax series with a lung nodule as real DICOM, "
                    "shaped like a public download: DIR/pet/pNNN/slice_NNN.dcm (one whole series per patient and "
                    "modality, or one enhanced multi-frame file with --enhanced), DIR/ct/..., and DIR/nodules.csv "
                    "with each nodule in world millimetres. --layout slices writes targeted whole slices through "
                    "the nodule plus DIR/labels.csv instead.")
    parser.add_argument("--out", required=True, type=Path, help="folder to write into (created if missing)")
    parser.add_argument("--patients", type=int, default=defaults.phantom_patients,
                        help=f"number of patients (default {defaults.phantom_patients})")
    parser.add_argument("--modality", choices=[*MODALITIES, "both"], default="both", help="default both")
    parser.add_argument("--layout", choices=["series", "slices"], default="series", help="default series")
    parser.add_argument("--enhanced", action="store_true", help="series as enhanced multi-frame files")
    parser.add_argument("--slices", type=int, default=defaults.phantom_slices,
                        help=f"slices per series, or per patient with --layout slices "
                             f"(default {defaults.phantom_slices})")
    parser.add_argument("--size", type=int, default=defaults.phantom_size,
                        help=f"pixel side of --layout slices files (default {defaults.phantom_size}); series use the "
                             "scanner's spacing")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same bytes (default 0)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    table = write_phantom_cohort(args.out, patients=args.patients, modality=args.modality, size=args.size,
                                 seed=args.seed, slices=args.slices, layout=args.layout, enhanced=args.enhanced)
    count = sum(1 for _ in args.out.rglob("*.dcm"))
    print(f"wrote {count} DICOM files for {args.patients} patients under {args.out} "
          f"in {time.perf_counter() - started:.1f} s; table {table}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
