"""`python -m orchestrator.sweep pet`: the whole sweep, one command.

Builds the Config, ingests the data (the phantom cohort when no --data is given), starts or
joins Ray, opens the sweep's parent MLflow run, runs the requested stages in order and ends
with where the results are. Stage 1 (gan) is built; synth and classify come next.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from orchestrator.config import Config, ConfigError, load_config
from orchestrator.data.ingest import IngestError, format_summary, ingest
from orchestrator.data.labels import LabelError
from orchestrator.data.phantom import write_phantom_cohort
from orchestrator.data.split import SplitError

STAGES = ("gan", "synth", "classify")
BUILT_STAGES = ("gan",)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.sweep",
        description="GAN augmentation sweep: stage 1 searches WGAN-GP GANs with Ray Tune + Optuna (each trial a "
                    "Ray Train run), ranks checkpoints by validation SSIM or FID, and records everything in MLflow.")
    parser.add_argument("modality", choices=["pet", "ct"])
    parser.add_argument("--data", type=Path, help="DICOM folder (default: the built-in phantom cohort, made once)")
    parser.add_argument("--labels", type=Path, help="label CSV (default DATA/labels.csv or benign/ malignant/ folders)")
    parser.add_argument("--preset", choices=["full", "smoke"], default="full",
                        help="full: the paper's scale, for GPUs; smoke: 32 px, minutes on a laptop CPU")
    parser.add_argument("--config", type=Path, help="a YAML config laid over the preset")
    parser.add_argument("--stages", default="gan", help=f"comma-separated, from {','.join(STAGES)} (default gan)")
    parser.add_argument("--address", help="Ray cluster to join ('auto' for the running one); default: start a local Ray")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///<runs>/mlflow.db)")
    parser.add_argument("--storage", default="runs/tune",
                        help="Tune / Train storage: a folder or s3://bucket/prefix (default runs/tune)")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"),
                        help="local outputs: MLflow store and artifacts, tables (default runs/)")
    parser.add_argument("--resume", action="store_true", help="continue the latest interrupted sweep of this modality")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config value, e.g. --set gan.epochs=3 (repeatable)")
    return parser.parse_args(argv)


def prepare_data(cfg: Config, data_dir: Path | None, labels: Path | None):
    """Ingest the user's folder, or make (once) and ingest the phantom cohort."""
    if data_dir is None:
        d = cfg.data
        data_dir = (Path(d.cache_dir).expanduser() / "phantom" /
                    f"{d.modality}-n{d.phantom_patients}-s{d.phantom_slices}-px{d.phantom_size}").resolve()
        if not (data_dir / "labels.csv").exists():
            print(f"making the phantom cohort in {data_dir} (once)")
            write_phantom_cohort(data_dir, patients=d.phantom_patients, modality=d.modality,
                                 size=d.phantom_size, slices=d.phantom_slices)
    return ingest(data_dir, cfg.data, labels_file=labels)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        print(f"sweep: unknown stage(s) {unknown}; choose from {', '.join(STAGES)}", file=sys.stderr)
        return 2
    not_built = [s for s in stages if s not in BUILT_STAGES]
    if not_built:
        print(f"sweep: stage(s) {not_built} are not built yet; run --stages gan", file=sys.stderr)
        return 2
    try:
        cfg = load_config(args.modality, args.preset, args.config, args.overrides)
        cohort = prepare_data(cfg, args.data, args.labels)
    except (ConfigError, IngestError, LabelError, SplitError) as err:
        print(f"sweep failed: {err}", file=sys.stderr)
        return 2
    print(format_summary(cohort))
    return run_sweep(cfg, cohort, args)


def run_sweep(cfg: Config, cohort, args: argparse.Namespace) -> int:
    import ray

    from orchestrator.stages import gan as gan_stage
    from orchestrator.tracking import SweepTracker, default_tracking_uri

    runs_dir = args.runs_dir.resolve()
    runs_dir.mkdir(parents=True, exist_ok=True)
    # Ray workers change directory: every path they get must be absolute (or a URI).
    storage = args.storage if "://" in args.storage else str(Path(args.storage).resolve())
    tracking_uri = args.tracking_uri or default_tracking_uri(runs_dir)
    tracker = SweepTracker(tracking_uri, f"medgan-sweep-{cfg.data.modality}", runs_dir / "mlartifacts")
    sweep_name = f"gan-{cfg.data.modality}"
    tracker.start_sweep(sweep_name, params=cfg.to_dict(), tags={
        "dataset_fingerprint": cohort.fingerprint, "preset": args.preset,
        "seeds": f"data={cfg.data.seed} gan={cfg.gan.seed} search={cfg.search.seed}"})
    tracker.log_sweep_dict(cfg.search.space, "search_space.json")

    ray.init(address=args.address, include_dashboard=False, log_to_driver=False)
    started = time.perf_counter()
    try:
        data_ref = ray.put(cohort.as_arrays())  # once; every trial's workers read this copy
        callback = tracker.trial_callback(cfg.search.metric, gan_stage.METRIC_MODES[cfg.search.metric])
        tuner = gan_stage.build_tuner(cfg, data_ref, storage, [callback], resume=args.resume)
        results = tuner.fit()
        table = gan_stage.ranking_table(results, cfg.search.metric)
        paths = gan_stage.write_tables(table, runs_dir / sweep_name)
        for path in paths:
            tracker.log_sweep_file(path, "ranking")
        errors = sum(1 for r in results if r.error is not None)
        tracker.end_sweep("FINISHED")
    except BaseException:
        tracker.end_sweep("KILLED")
        raise
    finally:
        ray.shutdown()

    print(f"\nstage 1: {len(table)} ranked trial(s), {errors} failed, in {time.perf_counter() - started:.0f} s; "
          f"best per architecture by {cfg.search.metric} (validation):")
    print(paths[2].read_text())
    print(f"tables:     {runs_dir / sweep_name}")
    print(f"MLflow:     {tracking_uri} (experiment medgan-sweep-{cfg.data.modality}); "
          f"open with `mlflow ui --backend-store-uri {tracking_uri}`")
    print(f"checkpoints and Tune state: {storage}/{sweep_name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
