"""Stage 1: a Ray Tune search over GAN trials; each trial is one Ray Train run
(`trainables.gan.trial.gan_trial`).

Selection uses the validation split only (the test split is for stage 3's final scores).
"""
from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from mlflow.models import infer_signature
from ray import tune
from ray.train import Checkpoint

from orchestrator.config import Config
from orchestrator.ranking import best_evaluation, best_per_architecture, metric_mode, rank_trials
from orchestrator.report import markdown_table
from orchestrator.search import make_scheduler, make_searcher, to_tune_space
from orchestrator.stages import StageContext
from orchestrator.storage import checkpoint_uri, read_file
from orchestrator.tracking import NOTE_TAG, ChildRunLogger, SweepTracker, compact
from trainables.gan.checkpoint import GRID_FILE, UNTRAINED_GRID_FILE
from trainables.gan.loop import TRAINING_METRICS
from trainables.gan.sample import load_sampler
from trainables.gan.trial import gan_trial
from trainables.metrics import EVAL_METRICS, fid_key_in
from trainables.system import SYSTEM_METRICS

EXPERIMENT, TRAIN_RUNS = "gan", "gan-train"  # under the sweep's folder: Tune's state, then one Train run per trial
# What the Tune trial itself holds: it only waits on its Train run. Tune rejects an empty
# request; a sliver of CPU (0.01) would leave a node of N CPUs room for N - 1 one-CPU workers
# once a token landed there, so a MiB of memory it is.
TRIAL_TOKEN = {"cpu": 0, "memory": 2**20}


@dataclass(frozen=True)
class GanResult:
    table: pd.DataFrame  # every ranked trial's best checkpoint, best first, with the FID floor beside
    curves: list[dict]  # every trial's validation metrics over training (validation_curves)

    def __bool__(self) -> bool:  # stage 2 has something to sample from
        return len(self.table) > 0


def run(context: StageContext) -> GanResult:
    """Stage 1: the search; the ranking table written and logged; the best generator of each architecture
    logged as an MLflow model and registered as medgan-<modality>-<arch>."""
    cfg, tracker = context.cfg, context.tracker
    searched = tuple(cfg.search.space)
    callback = GanTrialLogger(tracker, cfg.search.metric, context.storage, searched)
    results = build_tuner(cfg, context.data_ref, context.sweep_path, [callback], resume=context.resume).fit()
    table = with_floor(ranking_table(results, cfg.search.metric, context.storage, searched), context.floor)
    for path in write_tables(table, context.out_dir):
        tracker.log_sweep_file(path, "ranking")
    best = best_per_architecture(table)
    for _, row in best.iterrows():
        log_generator(tracker, row.trial_id, row.checkpoint_path, f"medgan-{cfg.data.modality}-{row.arch}",
                      **champion_record(row, cfg.search.metric, int((table.arch == row.arch).sum()), context.sweep_id,
                                        tracker.dataset))
    if len(table):  # the parent run says which trial won, and with what
        winner = table.iloc[0]
        tracker.log_sweep_figures({f"best_{cfg.search.metric}": winner[cfg.search.metric]},
                                  tags={BEST_RUN_TAG: tracker.trial_run(winner.trial_id), "best_trial": winner.trial_id,
                                        "best_arch": winner.arch})
    failed = sum(1 for r in results if r.error is not None)
    print(f"\nstage 1: {len(table)} ranked trial(s), {failed} failed; best per architecture by "
          f"{cfg.search.metric} (validation), registered as medgan-{cfg.data.modality}-<arch>:")
    print(markdown_table(best.drop(columns=["checkpoint_path"])) if len(table) else
          "(no trial produced a usable checkpoint: see the failure reasons on the trials' MLflow runs)")
    return GanResult(table, validation_curves(results, searched))


def train_settings(cfg: Config, sweep_path: str) -> dict:
    """What each trial's Train run gets: storage, checkpoint ranking, and the resources resolved at the
    edge (orchestrator.sweep.resolve_resources), never asked of the cluster here."""
    search = cfg.search
    gpu = {"GPU": search.gpus_per_worker} if search.gpus_per_worker else {}
    return {"storage": f"{sweep_path}/{TRAIN_RUNS}", "metric": search.metric, "mode": metric_mode(search.metric),
            "keep": search.keep_checkpoints, "max_failures": search.max_failures,
            "scaling": {"num_workers": search.workers_per_trial, "use_gpu": bool(gpu),
                        "resources_per_worker": {"CPU": search.cpus_per_worker, **gpu}}}


def build_tuner(cfg: Config, data_ref, sweep_path: str, callbacks: list, resume: bool) -> tune.Tuner:
    """The Tuner for stage 1 under `sweep_path` (a folder or URI), new or restored."""
    search = cfg.search
    trainable = tune.with_resources(
        tune.with_parameters(gan_trial, data=[data_ref], train=train_settings(cfg, sweep_path)), TRIAL_TOKEN)
    param_space = {**cfg.gan_settings(), **to_tune_space(search.space)}
    if resume:
        path = f"{sweep_path}/{EXPERIMENT}"
        if not tune.Tuner.can_restore(path):
            raise FileNotFoundError(f"--resume: no stage-1 state to resume at {path}")
        return tune.Tuner.restore(path, trainable=trainable, param_space=param_space,
                                  resume_unfinished=True, resume_errored=True)
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(search_alg=make_searcher(search),
                                    scheduler=make_scheduler(search, cfg.gan.epochs),
                                    num_samples=search.num_samples),
        run_config=tune.RunConfig(name=EXPERIMENT, storage_path=sweep_path, callbacks=callbacks,
                                  failure_config=tune.FailureConfig(max_failures=search.max_failures)),
    )


def ranking_table(results: tune.ResultGrid, metric: str, storage: str, searched: tuple[str, ...] = ()) -> pd.DataFrame:
    """Every trial's best checkpoint (`orchestrator.ranking`: by `metric` on validation, as a path or URI under
    `storage`), best first, with the values the trial drew for the `searched` settings (which setting won is
    what a search is for)."""
    searched = tuple(k for k in searched if k != "arch")  # a column of its own
    histories = [r.metrics_dataframe for r in results if r.metrics_dataframe is not None]
    # the metrics the trials reported (the extractor's names only); the ranking one even when none did
    reported = [k for k in EVAL_METRICS if k == metric or any(k in h for h in histories)]
    columns = ["trial_id", "arch", *searched, "epoch", *reported, "checkpoint_path"]
    rows = []
    for result in results:
        best = best_evaluation(result.metrics_dataframe, metric) if result.metrics_dataframe is not None else None
        if best is None:
            continue
        rows.append({"trial_id": result.metrics.get("trial_id", ""), "arch": result.config["arch"],
                     **{k: result.config[k] for k in searched},
                     "epoch": best["epoch"], **{k: best.get(k) for k in reported},
                     "checkpoint_path": checkpoint_uri(storage, best["checkpoint_path"])})
    return rank_trials(pd.DataFrame(rows, columns=columns), metric)


def validation_curves(results: tune.ResultGrid, searched: tuple[str, ...] = ()) -> list[dict]:
    """Each trial's evaluations over training, for the report: {"label", "status", "epoch", and every
    evaluation metric}. Status: completed, stopped early (by the scheduler), diverged or failed."""
    curves = []
    for result in results:
        history = result.metrics_dataframe
        if history is None or "epoch" not in history:
            history = pd.DataFrame({"epoch": []})
        last = result.metrics or {}
        if result.error is not None:
            status = "failed"
        elif last.get("diverged"):
            status = "diverged"
        elif int(last.get("epoch", 0)) < int(result.config["epochs"]):
            status = "stopped early"
        else:
            status = "completed"
        settings = " ".join(f"{k}={result.config[k]:.3g}" if isinstance(result.config[k], float)
                            else f"{k}={result.config[k]!r}" for k in searched if k != "arch")
        label = f"{result.config['arch']} {last.get('trial_id', '')} {settings}".strip()
        curves.append({"label": label, "status": status,
                       **{k: history[k].tolist() for k in history if k == "epoch" or k in EVAL_METRICS}})
    return curves


def with_floor(table: pd.DataFrame, floor: dict) -> pd.DataFrame:
    """The ranking table with each figure's real-vs-real value beside it (FID / KID floor, real MS-SSIM
    diversity), and FID minus floor (how far a generator is from what a second real sample would score)."""
    table = table.copy()
    for key in [k for k in table if k in EVAL_METRICS]:
        if f"{key}_floor" in floor:
            table.insert(table.columns.get_loc(key) + 1, f"{key}_floor", floor[f"{key}_floor"])
    fid = fid_key_in(table.columns)
    if fid and f"{fid}_floor" in table:
        table.insert(table.columns.get_loc(f"{fid}_floor") + 1, f"{fid}_minus_floor", table[fid] - table[f"{fid}_floor"])
    return table


def write_tables(table: pd.DataFrame, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "gan_ranking.csv", out_dir / "gan_ranking.md", out_dir / "gan_best_per_arch.md"]
    table.to_csv(paths[0], index=False)
    paths[1].write_text(markdown_table(table.drop(columns=["checkpoint_path"])))
    paths[2].write_text(markdown_table(best_per_architecture(table).drop(columns=["checkpoint_path"])))
    return paths


def champion_record(row: pd.Series, metric: str, trials: int, sweep_id: str, dataset: dict | None) -> dict:
    """What the registered version says of itself: why it is its sweep's best (its description), the same as
    tags to filter on, when it becomes the champion (`alias_rule`: the best on the same cohort by the same
    metric; see `mlflow_writes.alias_moves`), and its validation figures linked to the logged model and the
    cohort they were measured on."""
    value, floor = row[metric], row.get(f"{metric}_floor")
    has_floor = floor is not None and not pd.isna(floor)
    against = f" against a real-vs-real floor of {floor:.4g}" if has_floor else ""
    best = "highest" if metric_mode(metric) == "max" else "lowest"
    rule = f"{best} validation {metric} of {trials} {row.arch} trial(s)"
    digest = (dataset or {}).get("digest", "none")
    description = (f"The best {row.arch} generator of sweep {sweep_id}: validation {metric} {value:.4g}{against}, "
                   f"the {rule} (trial {row.trial_id}, epoch {int(row.epoch)}), on cohort {digest}. "
                   f"Alias `champion`: the best version by {metric} on this cohort; a sweep on other data or "
                   f"by another metric takes it and says so in the tag `champion_decision`. Sample: mlflow.pytorch.load_model(uri)"
                   f"(noise [N, latent_dim], labels [N]) -> images [N, 1, S, S] in [0, 1].")
    tags = {"sweep_id": sweep_id, "trial_id": row.trial_id, "epoch": str(int(row.epoch)), "metric": metric,
            metric: f"{value:.6g}", "floor": f"{floor:.6g}" if has_floor else "none", "trials": str(trials),
            "rule": rule, "dataset_digest": digest}
    linked = ({"step": int(row.epoch), "keys": [k for k in row.index if k in EVAL_METRICS],
               "dataset_name": dataset["name"], "dataset_digest": dataset["digest"]} if dataset else None)
    return {"description": description, "tags": tags, "alias": CHAMPION,
            "alias_rule": {"same": ["dataset_digest", "metric"], "value": metric, "mode": metric_mode(metric)},
            "linked_metrics": linked}


def log_generator(tracker: SweepTracker, trial_id: str, checkpoint: str, registered_name: str, description: str = "",
                  tags: dict | None = None, alias: str = "", alias_rule: dict | None = None,
                  linked_metrics: dict | None = None) -> None:
    """A trial's best checkpoint as an MLflow PyTorch model of its run (noise and label in, image out),
    registered as `registered_name` (the rest: `Writes.log_model`):
    `mlflow.pytorch.load_model("models:/<name>@champion")` samples from it."""
    with Checkpoint(checkpoint).as_directory() as folder:
        sampler, cfg = load_sampler(Path(folder))
    noise, label = np.zeros((2, cfg["latent_dim"]), np.float32), np.array([0, 1], np.int64)
    with torch.no_grad():
        images = sampler(torch.from_numpy(noise), torch.from_numpy(label)).numpy()
    signature = infer_signature({"noise": noise, "label": label}, images)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sampler.pt"
        torch.save(sampler, path)
        tracker.writes.log_model(tracker.trial_run(trial_id), path, "generator", registered_name, signature.to_dict(),
                                 description, tags, alias, alias_rule, linked_metrics)


class GanTrialLogger(ChildRunLogger):
    """Stage 1: metrics per evaluated epoch, the sample grid of each, the trial's best checkpoint."""
    stage = "gan"

    def __init__(self, tracker: SweepTracker, metric: str, storage: str, searched: tuple[str, ...] = ()):
        super().__init__(tracker)
        self.metric = metric  # ranks a trial's checkpoints (orchestrator.ranking): its best is logged
        self.storage = storage  # where checkpoints live: a folder or an s3:// URI
        self.searched = tuple(k for k in searched if k != "arch")  # what each run's name shows
        self.evaluations: dict[str, list[dict]] = {}  # trial id -> its checkpointed evaluations, in order
        self.diverged: dict[str, str] = {}  # trial id -> why it stopped itself

    def run_tags(self, trial) -> dict[str, str]:
        return {NOTE_TAG: f"Stage-1 GAN trial `{self.run_name(trial)}`: metrics of each evaluated epoch on the "
                          f"validation split, the sample grid of each (Artifacts: images), and its best checkpoint by "
                          f"{self.metric} under best_checkpoint/ (the one the ranking, the registered model and "
                          f"stage 2 use)."}

    def run_name(self, trial) -> str:
        """`gan cgan lr_g=2e-4 diffaugment=none (db991b24)`: the architecture and what the trial drew."""
        drawn = [f"{key}={compact(trial.config[key])}" for key in self.searched if key in trial.config]
        return " ".join(["gan", str(trial.config.get("arch", "")), *drawn, f"({trial.trial_id})"])

    def on_trial_result(self, iteration, trials, trial, result, **info):
        run_id, step = self.child_run(trial), int(result.get("epoch", 0))
        self.log_metrics(run_id, result, GAN_METRICS, step)
        self.writes.log_batch(run_id, tags={k: str(result[k]) for k in RESULT_TAGS if result.get(k)})
        if result.get("diverged"):
            self.diverged[trial.trial_id] = str(result.get("stop_reason") or "diverged")
        checkpoint = result.get("checkpoint_path")
        if checkpoint:
            checkpoint = checkpoint_uri(self.storage, checkpoint)
            if not result.get("diverged"):
                self.log_sample_grid(run_id, checkpoint, step, first=trial.trial_id not in self.evaluations)
            self.evaluations.setdefault(trial.trial_id, []).append(
                {"checkpoint_path": checkpoint, "diverged": int(bool(result.get("diverged"))),
                 self.metric: result.get(self.metric, math.nan)})

    def log_sample_grid(self, run_id: str, checkpoint: str, step: int, first: bool = False) -> None:
        """The evaluation's grid, read on its own: never the weights, optimisers and replay buffer
        beside it (on S3 that would be a full download per evaluation per trial). A fresh trial's first
        checkpoint also holds the untrained generator's grid: step 0, where the UI's image view opens."""
        for name, at_step in ((UNTRAINED_GRID_FILE, 0),) * first + ((GRID_FILE, step),):
            try:
                grid = read_file(f"{checkpoint}/{name}")
            except FileNotFoundError:
                continue
            with tempfile.TemporaryDirectory() as tmp:  # the run's image view: key "samples", one step per epoch
                named = Path(tmp) / f"epoch_{at_step:04d}.png"
                named.write_bytes(grid)
                self.writes.log_image(run_id, named, SAMPLES_KEY, at_step)

    def on_trial_complete(self, iteration, trials, trial, **info):
        run_id = self.child_run(trial)
        best = best_evaluation(pd.DataFrame(self.evaluations.get(trial.trial_id, [])), self.metric)
        if best is not None:
            checkpoint = best["checkpoint_path"]
            with Checkpoint(checkpoint).as_directory() as folder:
                self.writes.log_artifacts(run_id, folder, "best_checkpoint")
            self.writes.log_batch(run_id, tags={"best_checkpoint_path": checkpoint})
        if trial.trial_id in self.diverged:  # the run stopped itself (NaN or exploding loss)
            self.fail(run_id, self.diverged[trial.trial_id])
        else:
            self.writes.terminate(run_id, "FINISHED")


# Metrics copied to MLflow; the rest of Tune's result (timestamps, node ip...) stays in Tune.
GAN_METRICS = set(TRAINING_METRICS) | set(EVAL_METRICS) | set(SYSTEM_METRICS)
# ...and what becomes a tag (node_id: the Ray node the trial's rank-0 worker ran on, last seen)
RESULT_TAGS = ("stop_reason", "fid_weights_sha256", "torch_threads", "node_id", "device")
SAMPLES_KEY = "samples"  # the sample grids' key in a GAN trial's image view
BEST_RUN_TAG = "best_run_id"  # on the parent run: the MLflow run of the sweep's best GAN trial
CHAMPION = "champion"  # the registered version alias of each architecture's best generator of the latest sweep
