"""The GAN training loop: WGAN-GP with n_critic critic steps per generator step.

Read top to bottom, `fit` is the whole story: build (or resume) the models, then per epoch
the critic steps (Wasserstein loss + gradient penalty + AC loss), the generator step, the
EMA update, and every `eval_every` epochs an evaluation on the validation split, a sample
grid and a checkpoint, reported together.

`fit` knows nothing of Ray: it takes a `report(metrics, checkpoint_dir)` callable, an
optional checkpoint folder to resume from, the device, and a `prepare_model` hook (DDP).
`train_gan_worker` is the Ray Train entry point that plugs Ray's versions of those in;
tests, benchmarks and `reproduce` call `fit` directly.

Config: a plain dict with the GanConfig fields plus `image_size`. Data: a dict of numpy
arrays as `Cohort.as_arrays()` gives (images [N, S, S] in [0, 1], labels, split), or a Ray
ObjectRef to one.

An epoch is ceil(N_train / (batch_size * workers)) generator steps, each after n_critic
critic steps on fresh batches (drawn with replacement from a seeded generator), so epochs
mean the same amount of generator training whatever n_critic is.
"""
from __future__ import annotations

import copy
import math
import tempfile
import time
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch import nn

from trainables.cohort import TRAIN, num_classes
from trainables.device import autocast, trial_device
from trainables.gan import checkpoint
from trainables.gan.augment import diff_augment
from trainables.gan.evaluate import validation_evaluator
from trainables.gan.losses import ac_loss, critic_loss, generator_loss, gradient_penalty
from trainables.gan.models import build_gan, ema_update
from trainables.gan.replay import ReplayBuffer
from trainables.system import SystemSampler

# What every report of `fit` holds besides the evaluation's figures (trainables.metrics.EVAL_METRICS)
TRAINING_METRICS = ("epoch", "loss_d", "loss_g", "gp", "wasserstein", "epoch_s", "images_per_s", "diverged",
                    "resumed_from")

Report = Callable[[dict, Path | None], None]  # metrics, and the checkpoint folder (None: no checkpoint)


def fit(cfg: Mapping, data: Mapping[str, np.ndarray], report: Report, resume_from: Path | None = None,
        device: torch.device | str = "cpu", rank: int = 0, world_size: int = 1,
        prepare_model: Callable[[nn.Module], nn.Module] | None = None) -> dict:
    """Train one GAN; returns the last reported metrics."""
    device = torch.device(device)
    prepare_model = prepare_model or (lambda module: module.to(device))
    # Ranks draw different noise and batches; DDP copies rank 0's initial weights to all.
    torch.manual_seed(cfg["seed"] * 1000 + rank)
    data_rng = torch.Generator().manual_seed(cfg["seed"] * 1000 + rank)
    precision = autocast(device, cfg["bf16"])  # bf16 where asked, CPU too: CI runs the same dtype paths
    cfg = {**cfg, "num_classes": num_classes(data["labels"])}  # from the cohort; saved with each checkpoint

    layout = torch.channels_last if cfg["channels_last"] else torch.contiguous_format
    pair = build_gan(cfg)
    generator, critic = (pair.generator.to(device, memory_format=layout),
                         pair.critic.to(device, memory_format=layout))
    ema = copy.deepcopy(generator).eval().requires_grad_(False) if cfg["ema_decay"] > 0 else None
    replay = ReplayBuffer(cfg["replay_size"], device=device)
    opt_state, start_epoch = None, 0
    if resume_from is not None:
        state = checkpoint.load(resume_from, device)  # raises when the folder has no state
        generator.load_state_dict(state.generator)
        critic.load_state_dict(state.critic)
        if ema is not None:
            ema.load_state_dict(state.ema)
        replay.load_state_dict(state.replay)
        opt_state, start_epoch = state.optimizers, state.epoch
        if rank == 0:  # the checkpoint holds rank 0's random state: rank 0 resumes exactly
            _set_rng_state(state.rng, data_rng, device)
        else:  # the others reseed, so they keep drawing other batches than rank 0
            torch.manual_seed(cfg["seed"] * 1000 + rank + 7919 * start_epoch)
            data_rng.manual_seed(cfg["seed"] * 1000 + rank + 7919 * start_epoch)

    # The forward passes of the steps, compiled when asked (same weights). Those that take no
    # gradients to share skip DDP; the gradient penalty calls the plain critic, as it
    # differentiates twice and compiled graphs cannot.
    generator_step = _compiled(prepare_model(generator), cfg["compile"])
    critic_step = _compiled(prepare_model(critic), cfg["compile"])
    fakes_for_critic = _compiled(generator, cfg["compile"])  # under no_grad
    critic_for_generator = _compiled(critic, cfg["compile"])  # the critic is frozen in that step
    opt_g = torch.optim.Adam(generator.parameters(), lr=cfg["lr_g"], betas=tuple(cfg["betas"]))
    opt_d = torch.optim.Adam(critic.parameters(), lr=cfg["lr_d"], betas=tuple(cfg["betas"]))
    if opt_state is not None:
        opt_g.load_state_dict(opt_state["g"])
        opt_d.load_state_dict(opt_state["d"])

    train = data["split"] == TRAIN
    # Generator output is tanh, so real images are scaled from [0, 1] to [-1, 1] to match.
    x_train = torch.from_numpy(np.asarray(data["images"][train], np.float32)).unsqueeze(1).to(device) * 2 - 1
    x_train = x_train.contiguous(memory_format=layout)
    y_train = torch.from_numpy(np.asarray(data["labels"][train], np.int64)).to(device)
    evaluator = validation_evaluator(cfg, data, device) if rank == 0 else None
    # The untrained generator's grid, saved with the first checkpoint: step 0 of the trial's image view
    untrained_grid = None
    if evaluator is not None and start_epoch == 0:
        untrained_grid = evaluator.sample_grid(ema if ema is not None else generator)
    augment = diff_augment(cfg.get("diffaugment", ""))  # what the critic sees: real and fake alike
    batch = cfg["batch_size"]
    steps_per_epoch = max(1, math.ceil(len(x_train) / (batch * world_size)))
    metrics: dict = {}
    system = SystemSampler(device)

    g_steps = start_epoch * steps_per_epoch  # generator steps so far
    for epoch in range(start_epoch, cfg["epochs"]):
        started = time.perf_counter()
        sums = {key: torch.zeros((), device=device) for key in ("loss_d", "loss_g", "gp", "wasserstein")}
        for _ in range(steps_per_epoch):
            # ---- critic: n_critic steps of E[D(fake)] - E[D(real)] + λ·GP (+ AC loss)
            for _ in range(cfg["n_critic"]):
                idx = torch.randint(len(x_train), (batch,), generator=data_rng).to(device)
                real, labels = x_train[idx], y_train[idx]
                z = torch.randn(batch, cfg["latent_dim"], device=device)
                with torch.no_grad(), precision:
                    fake = fakes_for_critic(z, labels).float()
                seen_fake, seen_labels = replay.mix(fake, labels, cfg["replay_ratio"], data_rng)
                real_in, seen_in = augment(real), augment(seen_fake)
                with precision:  # one critic forward for real and fake: one DDP all-reduce
                    scores, logits = critic_step(torch.cat([real_in, seen_in]), torch.cat([labels, seen_labels]))
                real_scores, fake_scores = scores.float().split(batch)
                # The penalty pairs each real image with a fresh fake of the same label (the
                # dcgan critic is per label) and runs in fp32: it differentiates twice.
                gp = gradient_penalty(lambda x, y: critic(x, y)[0], real_in, augment(fake), labels, cfg["gp_lambda"])
                loss_d = critic_loss(real_scores, fake_scores) + gp
                if logits is not None:  # AC-GAN: the class head learns from real and fake
                    loss_d = loss_d + cfg["ac_weight"] * ac_loss(logits, torch.cat([labels, seen_labels]))
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                opt_d.step()
                replay.push(fake, labels)

            # ---- generator: -E[D(G(z, y))] (+ AC loss on its own labels)
            labels = torch.randint(cfg["num_classes"], (batch,), device=device)
            z = torch.randn(batch, cfg["latent_dim"], device=device)
            critic.requires_grad_(False)  # no critic gradients (nor DDP hooks) in this step
            with precision:
                fake = generator_step(z, labels)
                scores, logits = critic_for_generator(augment(fake), labels)
                loss_g = generator_loss(scores) + cfg["ac_weight"] * ac_loss(logits, labels)
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            critic.requires_grad_(True)
            g_steps += 1
            if ema is not None:
                # Warm-up: a plain 0.999 would leave a short run's EMA at its random start.
                ema_update(ema, generator, min(cfg["ema_decay"], (1 + g_steps) / (10 + g_steps)))

            for key, value in (("loss_d", loss_d), ("loss_g", loss_g), ("gp", gp),
                               ("wasserstein", real_scores.mean() - fake_scores.mean())):
                sums[key] += value.detach().float()  # summed on the device: no sync per step

        metrics = {key: value.item() / steps_per_epoch for key, value in sums.items()}
        metrics.update(epoch=epoch + 1, resumed_from=start_epoch,  # > 0: this run went on from a checkpoint
                       torch_threads=torch.get_num_threads(),  # CPU results depend on it: reproduce uses it
                       device=str(device),
                       epoch_s=time.perf_counter() - started,
                       images_per_s=steps_per_epoch * batch * (cfg["n_critic"] + 1) * world_size
                       / (time.perf_counter() - started), **system.sample())
        stop_reason = _agree_on_divergence(_divergence(metrics, cfg), device, world_size)
        last_epoch = epoch + 1 == cfg["epochs"]
        if stop_reason:
            metrics.update(diverged=1, stop_reason=stop_reason)
            if evaluator is not None:
                metrics.update(evaluator.not_evaluated())
            report(metrics, None)  # the reason, and no checkpoint: no weights worth keeping
            return metrics
        if (epoch + 1) % cfg["eval_every"] and not last_epoch:
            continue
        metrics.update(diverged=0, stop_reason="")
        with tempfile.TemporaryDirectory(prefix="gan-ckpt-") as folder:
            folder = Path(folder)
            if rank == 0:
                sampler = ema if ema is not None else generator
                metrics.update(evaluator.evaluate(sampler))
                evaluator.sample_grid(sampler).save(folder / checkpoint.GRID_FILE)
                if untrained_grid is not None:
                    untrained_grid.save(folder / checkpoint.UNTRAINED_GRID_FILE)
                    untrained_grid = None
                checkpoint.save(folder, checkpoint.TrainingState(
                    generator=generator.state_dict(), critic=critic.state_dict(),
                    ema=ema.state_dict() if ema is not None else None,
                    optimizers={"g": opt_g.state_dict(), "d": opt_d.state_dict()},
                    replay=replay.state_dict(), epoch=epoch + 1, rng=_get_rng_state(data_rng, device)), cfg, metrics)
            report(metrics, folder)
    return metrics


def train_gan_worker(config: dict) -> None:
    """Ray Train entry (`TorchTrainer(train_gan_worker, train_loop_config=...)`).

    `config` holds the GAN settings plus `data`: the cohort arrays or an ObjectRef to them, and
    optionally `resume_from`. Resumes from the checkpoint Ray hands over (a restarted trial or
    worker group), else from `resume_from`.
    """
    import ray
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    rank = context.get_world_rank()
    data = config["data"]
    data = ray.get(data) if isinstance(data, ray.ObjectRef) else data
    cfg = {key: value for key, value in config.items() if key not in ("data", "resume_from")}

    node_id = ray.get_runtime_context().get_node_id()  # which machine ran it: a retry may move it

    def report(metrics: dict, folder: Path | None) -> None:
        # Tune receives the metrics with or without a checkpoint (TuneReportCallback.after_report)
        saved = ray.train.Checkpoint.from_directory(folder) if rank == 0 and folder is not None else None
        ray.train.report({**metrics, "node_id": node_id}, checkpoint=saved)

    def prepare_model(module: nn.Module) -> nn.Module:
        # dcgan routes samples to per-label networks: a batch without one label leaves that
        # network's parameters unused, which DDP must be told to expect.
        return ray.train.torch.prepare_model(module, parallel_strategy_kwargs={"find_unused_parameters": True})

    # Ray's own latest checkpoint (a restarted worker group) wins over one handed in to start
    # from (`resume_from`: a Checkpoint or its path / URI; Train V2 drops resume_from_checkpoint).
    start = ray.train.get_checkpoint() or config.get("resume_from")
    if isinstance(start, str):
        start = ray.train.Checkpoint(start)
    with start.as_directory() if start else nullcontext(None) as resume_dir:
        fit(cfg, data, report, resume_from=Path(resume_dir) if resume_dir else None,
            device=trial_device(config.get("gpus", 0), ray.train.torch.get_device()), rank=rank,
            world_size=context.get_world_size(), prepare_model=prepare_model)


# ----------------------------------------------------------------------------- helpers


def _compiled(module: nn.Module, compile_it: bool) -> nn.Module:
    """`module` itself, or its torch.compile wrapper (same parameters; compiled on first call)."""
    return torch.compile(module) if compile_it else module


def _divergence(metrics: Mapping[str, float], cfg: Mapping) -> str:
    """Why this run should stop, or '' if it is healthy."""
    for key in ("loss_d", "loss_g", "gp"):
        if not math.isfinite(metrics[key]):
            return f"diverged: {key} is {metrics[key]} at epoch {metrics['epoch']}"
    if abs(metrics["loss_d"]) > cfg["max_critic_loss"]:
        return (f"diverged: |critic loss| {abs(metrics['loss_d']):.3g} > max_critic_loss "
                f"{cfg['max_critic_loss']:.3g} at epoch {metrics['epoch']}")
    return ""


def _agree_on_divergence(reason: str, device: torch.device, world_size: int) -> str:
    """All DDP ranks must stop together (or the others hang in the next all-reduce)."""
    if world_size == 1:
        return reason
    flag = torch.tensor([1.0 if reason else 0.0], device=device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return reason or ("diverged on another worker" if flag.item() else "")


def _get_rng_state(data_rng: torch.Generator, device: torch.device) -> dict:
    return {"torch": torch.get_rng_state(), "data": data_rng.get_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def _set_rng_state(state: Mapping, data_rng: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(state["torch"].cpu())
    data_rng.set_state(state["data"].cpu())
    if device.type == "cuda" and state["cuda"] is not None:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)
