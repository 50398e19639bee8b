"""The GAN registry: shapes, sizes, critic structure, dcgan routing, the AC head, EMA."""
from __future__ import annotations

import copy
import dataclasses
import math
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from orchestrator.config import GanConfig
from trainables.gan.losses import ac_loss
from trainables.gan.models import GAN_REGISTRY, GanPair, build_gan, ema_update

SIZES = (32, 64, 128, 256)
ARCHS = ("cgan", "dcgan")
SMALL = {"g_channels": 8, "d_channels": 8}  # narrow models: the shape tests stay fast at 256 px

# Parameters (generator, critic) with GanConfig's defaults: latent 256, g/d channels 64,
# 1 residual block per stage, label embedding 32, 2 classes. Widths are capped at 512, so the
# count grows by a fixed step per size doubling instead of 4x. Spectral norm adds buffers, not
# parameters. Change this table on purpose, never by surprise.
PARAM_COUNTS = {
    ("cgan", 32): (6_665_505, 8_973_571),
    ("cgan", 64): (15_581_473, 17_888_003),
    ("cgan", 128): (24_497_441, 26_802_435),
    ("cgan", 256): (33_413_409, 35_716_867),
    ("dcgan", 32): (12_804_482, 17_914_370),
    ("dcgan", 64): (30_636_418, 35_743_234),
    ("dcgan", 128): (48_468_354, 53_572_098),
    ("dcgan", 256): (66_300_290, 71_400_962),
}


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _settings(arch: str, size: int, **overrides) -> dict:
    """GanConfig's defaults (the one home of the GAN settings) as a trial gets them, two classes."""
    return {**dataclasses.asdict(GanConfig()), "arch": arch, "image_size": size, "num_classes": 2, **overrides}


def _build(arch: str, size: int, **overrides) -> GanPair:
    torch.manual_seed(0)
    return build_gan(_settings(arch, size, **overrides))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("arch", ARCHS)
def test_generator_and_critic_give_the_uniform_interface_shapes(arch, size):
    pair = _build(arch, size, **SMALL)
    z = torch.randn(3, pair.generator.latent_dim)
    labels = torch.tensor([0, 1, 1])
    images = pair.generator(z, labels)  # train mode: batch norm on the (sub-)batches
    assert images.shape == (3, 1, size, size)
    assert images.min() >= -1.0 and images.max() <= 1.0
    scores, logits = pair.critic(images, labels)
    assert scores.shape == (3,)
    if arch == "cgan":
        assert logits.shape == (3, 2)
    else:
        assert logits is None
    # One transposed-conv upsampling per doubling from 4 x 4, per generator.
    upsamplers = sum(isinstance(m, nn.ConvTranspose2d) for m in pair.generator.modules())
    nets = 2 if arch == "dcgan" else 1
    assert upsamplers == nets * round(math.log2(size / 4))


@pytest.mark.parametrize(("arch", "size"), sorted(PARAM_COUNTS))
def test_parameter_counts_match_the_table(arch, size):
    pair = _build(arch, size)
    assert (_count(pair.generator), _count(pair.critic)) == PARAM_COUNTS[(arch, size)]


def test_latent_dim_is_configurable_and_exposed():
    pair = _build("cgan", 32, latent_dim=100, **SMALL)
    assert pair.generator.latent_dim == 100
    assert pair.generator(torch.randn(2, 100), torch.tensor([0, 1])).shape == (2, 1, 32, 32)


def test_dcgan_holds_one_generator_and_one_critic_per_label():
    pair = _build("dcgan", 32, num_classes=2, **SMALL)
    assert len(pair.generator.nets) == 2 and len(pair.critic.nets) == 2
    assert _count(pair.generator) == 2 * _count(pair.generator.nets[0])
    three = _build("dcgan", 32, num_classes=3, **SMALL)
    assert len(three.generator.nets) == 3 and len(three.critic.nets) == 3


@pytest.mark.parametrize("spectral_norm", [True, False])
@pytest.mark.parametrize("arch", ARCHS)
def test_critics_have_no_batch_norm(arch, spectral_norm):
    pair = _build(arch, 64, spectral_norm=spectral_norm, **SMALL)
    norms = [m for m in pair.critic.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms == []
    # ...while the generator does use it (DCGAN recipe).
    assert any(isinstance(m, nn.BatchNorm2d) for m in pair.generator.modules())


@pytest.mark.parametrize("arch", ARCHS)
def test_spectral_norm_on_every_critic_conv_when_on_and_absent_when_off(arch):
    on = _build(arch, 64, spectral_norm=True, **SMALL).critic
    convs = [m for m in on.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(parametrize.is_parametrized(m, "weight") for m in convs)
    score_heads = [m for name, m in on.named_modules() if name.endswith("score")]
    assert score_heads and all(parametrize.is_parametrized(m, "weight") for m in score_heads)

    off = _build(arch, 64, spectral_norm=False, **SMALL).critic
    assert not any(parametrize.is_parametrized(m) for m in off.modules())
    assert _count(on) == _count(off)  # spectral norm keeps u, v as buffers


@pytest.mark.parametrize("arch", ARCHS)
def test_critic_score_depends_on_its_own_sample_only(arch):
    """What the per-sample gradient penalty relies on (no batch coupling), in train mode."""
    critic = _build(arch, 32, **SMALL).critic.train()
    x = torch.randn(4, 1, 32, 32, requires_grad=True)
    scores, _ = critic(x, torch.tensor([0, 1, 0, 1]))
    (grad,) = torch.autograd.grad(scores[0], x)
    assert grad[0].abs().sum() > 0
    assert torch.count_nonzero(grad[1:]) == 0


def test_dcgan_label1_weights_do_not_change_label0_outputs():
    gen = _build("dcgan", 32, **SMALL).generator.eval()
    z = torch.randn(6, gen.latent_dim)
    labels = torch.tensor([1, 0, 1, 0, 0, 1])
    before = gen(z, labels)
    with torch.no_grad():
        for p in gen.nets[1].parameters():
            p.add_(torch.randn_like(p) * 0.5)
    after = gen(z, labels)
    zero, one = labels == 0, labels == 1
    assert torch.equal(before[zero], after[zero])
    assert not torch.allclose(before[one], after[one])
    # Order preserved: sample i is nets[labels[i]](z[i]).
    for i, label in enumerate(labels.tolist()):
        torch.testing.assert_close(after[i], gen.nets[label](z[i : i + 1])[0])


def test_dcgan_critic_routes_by_label_in_input_order():
    critic = _build("dcgan", 32, dropout=0.0, spectral_norm=False, **SMALL).critic.eval()
    x = torch.randn(5, 1, 32, 32)
    labels = torch.tensor([1, 1, 0, 1, 0])
    scores, _ = critic(x, labels)
    expected = torch.stack([critic.nets[y](x[i : i + 1])[0][0] for i, y in enumerate(labels.tolist())])
    torch.testing.assert_close(scores, expected)


def test_dcgan_rejects_labels_outside_the_classes():
    gen = _build("dcgan", 32, **SMALL).generator
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\)"):
        gen(torch.randn(2, gen.latent_dim), torch.tensor([0, 2]))


def test_cgan_generator_output_depends_on_the_label():
    gen = _build("cgan", 32, **SMALL).generator.eval()
    z = torch.randn(4, gen.latent_dim)
    assert not torch.allclose(gen(z, torch.zeros(4, dtype=torch.long)), gen(z, torch.ones(4, dtype=torch.long)))


def test_unknown_arch_raises_keyerror_naming_the_known_ones():
    with pytest.raises(KeyError, match="cgan, dcgan"):
        build_gan(_settings("stylegan", 32))
    assert {"cgan", "dcgan"} <= set(GAN_REGISTRY)


@pytest.mark.parametrize("size", [0, 4, 48, 100])
def test_image_size_must_be_a_power_of_two_from_8(size):
    with pytest.raises(ValueError, match="power of two"):
        build_gan(_settings("cgan", size))


def test_each_builder_gets_only_the_settings_it_declares_and_names_what_is_missing():
    pair = build_gan(_settings("dcgan", 32, **SMALL))  # training keys (lr_g, n_critic...) and cgan's label_embed_dim
    assert pair.generator.latent_dim == 256
    with pytest.raises(KeyError, match=r"cgan needs \['num_classes'\]"):
        build_gan({key: value for key, value in _settings("cgan", 32).items() if key != "num_classes"})


def _blobs(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Two visibly different classes: a small disk (0) or a large disk (1), at random places, in noise."""
    labels = torch.randint(0, 2, (n,), generator=generator)
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    centres = 10 + torch.rand(n, 2, generator=generator) * 12
    radius = torch.where(labels == 1, 9.0, 3.0).view(n, 1, 1)
    dist = ((yy - centres[:, 0, None, None]) ** 2 + (xx - centres[:, 1, None, None]) ** 2).sqrt()
    images = torch.where(dist < radius, 0.8, -0.8) + 0.3 * torch.randn(n, 32, 32, generator=generator)
    return images.clamp(-1, 1).unsqueeze(1), labels


@pytest.fixture
def one_thread():
    """Many tiny ops: on a shared 2-core machine, two intra-op threads are up to 10x slower than one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_ac_head_learns_labels_on_separable_data(one_thread):
    critic = _build("cgan", 32, d_channels=8).critic  # spectral norm and dropout on, as trained
    rng = torch.Generator().manual_seed(0)
    optimiser = torch.optim.Adam(critic.parameters(), lr=1e-3)
    for _ in range(150):  # reaches 1.0 on held-out blobs by 100 steps for seeds 0-3
        x, y = _blobs(16, rng)
        _, logits = critic(x, y)
        loss = ac_loss(logits, y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    critic.eval()
    x, y = _blobs(400, rng)
    with torch.no_grad():
        _, logits = critic(x, y)
    accuracy = (logits.argmax(1) == y).float().mean().item()
    assert accuracy > 0.95


def test_ema_update_decay_0_copies_and_decay_1_keeps():
    model = _build("cgan", 32, **SMALL).generator
    model(torch.randn(4, model.latent_dim), torch.tensor([0, 1, 0, 1]))  # moves the BN statistics
    ema = _build("cgan", 32, **SMALL).generator
    with torch.no_grad():
        for p in ema.parameters():
            p.add_(1.0)
    kept = copy.deepcopy(ema.state_dict())

    ema_update(ema, model, decay=1.0)
    for name, value in ema.named_parameters():
        assert torch.equal(value, kept[name])

    ema_update(ema, model, decay=0.0)
    model_state = model.state_dict()
    for name, value in ema.state_dict().items():
        assert torch.equal(value, model_state[name]), name


def test_ema_update_moves_parameters_by_one_minus_decay():
    model = nn.Linear(3, 2)
    ema = copy.deepcopy(model)
    with torch.no_grad():
        ema.weight.zero_()
    target = model.weight.detach().clone()
    ema_update(ema, model, decay=0.9)
    torch.testing.assert_close(ema.weight, 0.1 * target)


def test_gan_modules_import_nothing_from_the_driver_side():
    code = (
        "import sys, trainables.gan.models, trainables.gan.losses, trainables.gan.replay\n"
        "bad = [m for m in ('orchestrator', 'ray', 'mlflow', 'optuna') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
