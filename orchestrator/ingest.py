"""`python -m orchestrator.ingest DATA_DIR`: check, preprocess, label, split and cache a data folder."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from orchestrator.config import PRESETS, ConfigError, load_config
from orchestrator.data.ingest import IngestError, format_summary, ingest
from orchestrator.data.labels import LabelError
from orchestrator.data.modalities import MODALITIES
from orchestrator.data.split import SplitError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.ingest",
        description="Read every file under DATA_DIR (DICOM with pydicom, MetaImage / NIfTI with SimpleITK), keep "
                    "one modality, crop around each nodule of the nodule table (or take whole slices without one), "
                    "label, split by patient and cache the result. Prints a summary; every file's and nodule "
                    "row's outcome goes to ingest_report.json in the cache entry.")
    parser.add_argument("data_dir", type=Path, metavar="DATA_DIR")
    parser.add_argument("--nodules", type=Path, help="nodule table CSV, or a folder of LIDC-IDRI reader XML "
                        "(default: DATA_DIR/nodules.csv if present, else LIDC-IDRI XML found under DATA_DIR)")
    parser.add_argument("--labels", type=Path, help="label CSV for whole slices, without a nodule table (default: "
                        "DATA_DIR/labels.csv if present, else benign/ and malignant/ folders)")
    parser.add_argument("--modality", choices=list(MODALITIES), default="pet", help="default pet")
    parser.add_argument("--size", type=int, help="pixel side after resizing (default from the preset)")
    parser.add_argument("--cache", type=Path, help="cache folder (default data.cache_dir, ~/.cache/medgan-sweep)")
    parser.add_argument("--preset", choices=PRESETS, default="full")
    parser.add_argument("--config", type=Path, help="a YAML config laid over the preset")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config value, e.g. --set data.seed=3 (repeatable)")
    args = parser.parse_args(argv)

    overrides = list(args.overrides)
    if args.size is not None:
        overrides.append(f"data.size={args.size}")
    try:
        cfg = load_config(args.modality, args.preset, args.config, overrides)
        cohort = ingest(args.data_dir, cfg.data, labels_file=args.labels, cache_root=args.cache,
                        nodules_file=args.nodules)
    except (ConfigError, IngestError, LabelError, SplitError) as err:
        print(f"ingest failed: {err}", file=sys.stderr)
        return 2
    print(format_summary(cohort))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
