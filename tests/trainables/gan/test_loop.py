"""The GAN loop: it trains, checkpoints, resumes exactly, stops on divergence, runs under Ray Train."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from orchestrator.config import load_config
from trainables.gan.evaluate import GanEvaluator
from trainables.gan import checkpoint
from trainables.gan.checkpoint import STATE_FILE, MissingState
from trainables.gan.loop import fit, train_gan_worker
from trainables.gan.models import build_gan
from trainables.system import SYSTEM_METRICS
from trainables.cohort import VAL


def gan_config(**changes) -> dict:
    """The smoke preset's GAN settings as the plain dict a worker gets."""
    cfg = load_config("pet", "smoke")
    return {**cfg.gan_settings(), **changes}


class Recorder:
    """A `report` that keeps each checkpoint folder (fit deletes its own after reporting)."""

    def __init__(self, root: Path, crash_after: int | None = None):
        self.root, self.crash_after, self.reports = root, crash_after, []

    def __call__(self, metrics: dict, folder: Path | None) -> None:
        kept = None if folder is None else self.root / f"report_{len(self.reports):02d}"
        if folder is not None:
            shutil.copytree(folder, kept)
        self.reports.append((dict(metrics), kept))
        if self.crash_after is not None and len(self.reports) == self.crash_after:
            raise KeyboardInterrupt("simulated crash after a checkpoint")


def load_state(folder: Path) -> dict:
    return torch.load(folder / STATE_FILE, weights_only=True)


def assert_same_tensors(a, b, where: str = "") -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same_tensors(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_tensors(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), f"{where} differs"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.mark.slow
def test_resumed_run_continues_exactly_as_an_uninterrupted_one(smoke_arrays, tmp_path):
    cfg = gan_config(arch="cgan", epochs=4, eval_every=2, eval_images=8, g_channels=8, d_channels=8,
                     replay_size=64, replay_ratio=0.5, n_critic=2, diffaugment="color,translation,cutout")
    straight = Recorder(tmp_path / "straight")
    fit(cfg, smoke_arrays, straight)

    crashed = Recorder(tmp_path / "crashed", crash_after=1)
    with pytest.raises(KeyboardInterrupt):
        fit(cfg, smoke_arrays, crashed)
    resumed = Recorder(tmp_path / "resumed")
    fit(cfg, smoke_arrays, resumed, resume_from=crashed.reports[0][1])

    assert [m["epoch"] for m, _ in straight.reports] == [2, 4]
    assert [m["epoch"] for m, _ in resumed.reports] == [4]
    assert_same_tensors(load_state(resumed.reports[-1][1]), load_state(straight.reports[-1][1]), "state")
    assert resumed.reports[-1][0]["resumed_from"] == 2 and straight.reports[-1][0]["resumed_from"] == 0
    timing = {"epoch_s", "images_per_s", "resumed_from", "torch_threads", *SYSTEM_METRICS}
    assert ({k: v for k, v in resumed.reports[-1][0].items() if k not in timing}
            == {k: v for k, v in straight.reports[-1][0].items() if k not in timing})


def test_checkpoint_holds_everything_to_resume_and_to_read_later(smoke_arrays, tmp_path):
    cfg = gan_config(arch="dcgan", epochs=1, eval_images=8, g_channels=8, d_channels=8, n_critic=1)
    recorder = Recorder(tmp_path)
    fit(cfg, smoke_arrays, recorder)

    (metrics, folder), = recorder.reports
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "metrics.json", "samples.png",
                                                        "samples_epoch_0.png", STATE_FILE]
    state = load_state(folder)
    assert set(state) == {"generator", "critic", "ema", "optimizers", "replay", "epoch", "rng"}
    assert state["epoch"] == 1
    assert json.loads((folder / "config.json").read_text())["arch"] == "dcgan"
    assert json.loads((folder / "metrics.json").read_text())["fid"] == pytest.approx(metrics["fid"])
    for key in ("ssim", "psnr", "mse", "fid", "kid_mean", "ms_ssim", "loss_d", "loss_g", "gp"):
        assert isinstance(metrics[key], float), key
    assert metrics["fid_weights_sha256"] and metrics["diverged"] == 0
    for metric in ("precision", "recall", "density", "coverage", "fid_benign", "fid_malignant"):
        assert math.isfinite(metrics[metric]), metric
    # 8 x 8 tiles, 32 px upscaled to 64, 2 px padding; a title band above each label's 4 rows
    with Image.open(folder / "samples.png") as grid, Image.open(folder / "samples_epoch_0.png") as untrained:
        assert grid.size == untrained.size and grid.width == 8 * 66 + 2 and 8 * 66 + 2 < grid.height < 8 * 66 + 80
        assert np.asarray(grid).std() > 0 and not np.array_equal(np.asarray(grid), np.asarray(untrained))


def test_the_checkpoint_module_round_trips_and_refuses_a_folder_without_state(smoke_arrays, tmp_path):
    cfg = gan_config(arch="cgan", epochs=1, eval_images=8, g_channels=8, d_channels=8, n_critic=1)
    recorder = Recorder(tmp_path / "run")
    fit(cfg, smoke_arrays, recorder)
    (_, folder), = recorder.reports
    state = checkpoint.load(folder)
    assert state.epoch == 1 and set(state.optimizers) == {"g", "d"}
    generator, saved_cfg = checkpoint.load_generator(folder)
    assert saved_cfg["arch"] == "cgan" and all(torch.equal(generator.state_dict()[k], v) for k, v in state.ema.items())
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text("{}")
    with pytest.raises(MissingState, match="no state.pt to resume from"):
        fit(cfg, smoke_arrays, Recorder(tmp_path / "again"), resume_from=tmp_path / "empty")


def test_the_bf16_path_of_the_gan_loop_runs_on_the_cpu(smoke_arrays, tmp_path):
    """The GPU recipe's autocast, on the CPU: the same seed in fp32 gives the same losses to bf16's rounding."""
    finals = {}
    for bf16 in (True, False):
        cfg = gan_config(arch="cgan", epochs=1, eval_images=8, g_channels=8, d_channels=8, n_critic=1, bf16=bf16)
        finals[bf16] = fit(cfg, smoke_arrays, Recorder(tmp_path / str(bf16)))
    assert finals[True]["device"] == "cpu"
    for key in ("loss_d", "loss_g", "gp"):  # bf16 did run (not the fp32 numbers), and computed the same losses
        assert finals[True][key] != finals[False][key]
        assert finals[True][key] == pytest.approx(finals[False][key], rel=0.05)


def run_once(smoke_arrays, folder: Path, **options) -> tuple[dict, checkpoint.TrainingState]:
    """One critic and one generator step of a cgan without dropout (a compiled graph draws its own
    dropout masks): short, so that float rounding has not yet grown into a different training."""
    cfg = gan_config(arch="cgan", epochs=1, eval_images=8, g_channels=8, d_channels=8, n_critic=1, dropout=0.0,
                     batch_size=len(smoke_arrays["split"]), **options)
    recorder = Recorder(folder)
    final = fit(cfg, smoke_arrays, recorder)
    return final, checkpoint.load(recorder.reports[-1][1])


def test_channels_last_trains_the_same_gan_in_the_nhwc_layout(smoke_arrays, tmp_path):
    plain, _ = run_once(smoke_arrays, tmp_path / "plain")
    nhwc, state = run_once(smoke_arrays, tmp_path / "nhwc", channels_last=True)
    for key in ("loss_d", "loss_g", "gp"):
        assert nhwc[key] == pytest.approx(plain[key], rel=1e-5), key  # kernels for NHWC round differently
    convolutions = [value for value in state.generator.values() if value.dim() == 4]
    assert convolutions and all(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
                                for w in convolutions if w.shape[1] > 1 and w.shape[2] > 1)


@pytest.mark.slow
def test_a_compiled_gan_trains_like_the_plain_one(smoke_arrays, tmp_path):
    """torch.compile on the CPU (inductor, C++): a minute of compiling, then the same losses; the
    gradient penalty, which differentiates twice, stays eager."""
    from torch._dynamo.utils import counters

    plain, _ = run_once(smoke_arrays, tmp_path / "plain")
    torch._dynamo.reset()  # what earlier tests compiled counts against the recompile limit
    counters.clear()
    compiled, _ = run_once(smoke_arrays, tmp_path / "compiled", compile=True, channels_last=True)
    assert counters["stats"]["unique_graphs"] >= 4  # the two steps' generator and critic passes
    for key in ("loss_d", "loss_g", "gp"):
        assert compiled[key] == pytest.approx(plain[key], rel=1e-4), key  # inductor sums in its own order


def test_a_diverging_run_stops_with_a_reason_instead_of_crashing(smoke_arrays, tmp_path):
    cfg = gan_config(epochs=50, eval_images=8, g_channels=8, d_channels=8, n_critic=1, lr_d=1e3, lr_g=1e3, spectral_norm=False,
                     max_critic_loss=1e3)
    recorder = Recorder(tmp_path)
    final = fit(cfg, smoke_arrays, recorder)

    assert final["diverged"] == 1 and final["epoch"] < 50
    assert final["stop_reason"].startswith("diverged:")
    (metrics, folder), = [r for r in recorder.reports if r[0]["diverged"]]
    assert folder is None and metrics["stop_reason"] == final["stop_reason"]  # no checkpoint: no weights to keep
    # the same keys as an evaluated report (Tune's schedulers reject a report without the
    # ranking metric), every figure NaN
    assert {"ssim", "psnr", "mse", "fid", "kid_mean", "kid_std", "ms_ssim"} <= metrics.keys()
    assert math.isnan(metrics["ssim"]) and math.isnan(metrics["fid"])


@pytest.mark.slow
def test_a_short_run_moves_fid_and_ssim_the_right_way(smoke_arrays):
    cfg = gan_config(arch="cgan", epochs=12, eval_every=12, eval_images=64)
    val = smoke_arrays["split"] == VAL
    evaluator = GanEvaluator(torch.from_numpy(smoke_arrays["images"][val].astype("float32")).unsqueeze(1),
                             torch.from_numpy(smoke_arrays["labels"][val].astype("int64")),
                             num_images=64, latent_dim=cfg["latent_dim"], seed=cfg["seed"])
    torch.manual_seed(cfg["seed"] * 1000)  # the same initial weights as fit's rank 0
    before = evaluator.evaluate(build_gan({**cfg, "num_classes": 2}).generator)

    after = fit(cfg, smoke_arrays, lambda metrics, folder: None)

    print(f"epoch 0 -> 12: FID {before['fid']:.1f} -> {after['fid']:.1f}, SSIM {before['ssim']:.4f} -> "
          f"{after['ssim']:.4f}, PSNR {before['psnr']:.2f} -> {after['psnr']:.2f} dB")
    assert after["fid"] < 0.9 * before["fid"]
    assert after["ssim"] > before["ssim"]
    assert after["psnr"] > before["psnr"]


@pytest.mark.slow
def test_ray_train_two_workers_then_resume_from_the_reported_checkpoint(smoke_arrays, tmp_path):
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        data_ref = ray.put(smoke_arrays)
        cfg = gan_config(arch="dcgan", epochs=2, eval_images=8, g_channels=8, d_channels=8, n_critic=1)

        def trainer(epochs: int, workers: int, name: str, resume=None) -> TorchTrainer:
            return TorchTrainer(train_gan_worker,
                                train_loop_config={**cfg, "epochs": epochs, "data": data_ref, "resume_from": resume},
                                scaling_config=ScalingConfig(num_workers=workers, use_gpu=False),
                                run_config=RunConfig(storage_path=str(tmp_path), name=name))

        two = trainer(epochs=2, workers=2, name="ddp").fit()
        assert two.error is None and two.metrics["epoch"] == 2
        resumed = trainer(epochs=3, workers=1, name="resumed", resume=two.checkpoint).fit()
    finally:
        ray.shutdown()

    assert resumed.error is None
    assert resumed.metrics["epoch"] == 3
    with resumed.checkpoint.as_directory() as folder:
        assert load_state(Path(folder))["epoch"] == 3
