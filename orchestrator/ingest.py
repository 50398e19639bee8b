"""`python -m orchestrator.ingest DATA_DIR`: check, preprocess, label, split and cache a DICOM folder."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from orchestrator.config import PRESETS, ConfigError, load_config
from orchestrator.data.ingest import IngestError, format_summary, ingest
from orchestrator.data.labels import LabelError
from orchestrator.data.split import SplitError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.ingest",
        description="Read every file under DATA_DIR with pydicom, keep the slices of one modality, "
                    "preprocess, label, split 70/20/10 by patient and cache them. Prints a summary; "
                    "every file's outcome goes to ingest_report.json in the cache entry.")
    parser.add_argument("data_dir", type=Path, metavar="DATA_DIR")
    parser.add_argument("--labels", type=Path, help="label CSV (default: DATA_DIR/labels.csv if present, "
                        "else benign/ and malignant/ folders)")
    parser.add_argument("--modality", choices=["pet", "ct"], default="pet", help="default pet")
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
        cohort = ingest(args.data_dir, cfg.data, labels_file=args.labels, cache_root=args.cache)
    except (ConfigError, IngestError, LabelError, SplitError) as err:
        print(f"ingest failed: {err}", file=sys.stderr)
        return 2
    print(format_summary(cohort))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
