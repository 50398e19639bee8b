"""Stage 1's Tune trial as Ray runs it: one Ray Train run of the GAN loop.

The pattern Ray documents for Tune over Train V2: a Tune function trainable (given a token
resource, since the Train workers hold the real ones) builds a `TorchTrainer` and calls `.fit()`;
`TuneReportCallback` forwards rank 0's metrics and the checkpoint path to Tune. The Train run is
named after the trial, so a restored sweep's trial finds its own checkpoints and resumes from the
latest.

The Tune trial's process imports the module its function comes from: this one imports only Ray
(2.9 s in a fresh process, against 7.3 s for the driver's stage module with MLflow, pandas and the
metrics), and the worker's loop is imported in the Train worker, where it runs.
"""
from __future__ import annotations

from ray import tune
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback


def gan_trial(config: dict, data: list, train: dict) -> None:
    """One Tune trial: a Ray Train run of the GAN loop with this trial's settings (`config`: what was
    searched and logged) and the sweep's infrastructure (`train`: the driver's `train_settings`, never
    searched).

    `data` is `[ObjectRef]` of the cohort arrays: a ref nested in a list stays a ref, so
    every trial's workers read the one copy in the object store.
    """
    trial_id = tune.get_context().get_trial_id()
    TorchTrainer(
        gan_worker,
        # "gpus": what each worker holds; it computes there or fails (trainables/device.py)
        train_loop_config={**config, "data": data[0], "gpus": train["scaling"]["resources_per_worker"].get("GPU", 0)},
        scaling_config=ScalingConfig(**train["scaling"]),
        run_config=RunConfig(
            name=f"gan-train-{trial_id}",  # deterministic: a restored trial finds its checkpoints
            storage_path=train["storage"],
            callbacks=[TuneReportCallback()],
            checkpoint_config=CheckpointConfig(num_to_keep=train["keep"], checkpoint_score_attribute=train["metric"],
                                               checkpoint_score_order=train["mode"]),
            failure_config=FailureConfig(max_failures=train["max_failures"]),  # restarts from the last checkpoint
        ),
    ).fit()


def gan_worker(config: dict) -> None:
    """The Train worker's entry: `trainables.gan.loop.train_gan_worker`, imported in the worker only."""
    from trainables.gan.loop import train_gan_worker

    train_gan_worker(config)
