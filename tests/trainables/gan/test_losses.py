"""WGAN-GP losses against values known by hand."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from trainables.gan.losses import ac_loss, critic_loss, generator_loss, gradient_penalty

SHAPE = (5, 1, 8, 8)  # 4-D, one channel: like the images, and where the dim=1 bug shows


def _linear_critic(w: torch.Tensor):
    """D(x) = <w, x> per sample: ∇D = w everywhere, so ‖∇D‖ = ‖w‖ for every x̂."""
    return lambda x, labels: (x * w).flatten(1).sum(1)


def test_gradient_penalty_of_a_linear_critic_is_lambda_times_norm_minus_one_squared():
    torch.manual_seed(0)
    w = torch.randn(SHAPE[1:])
    real, fake, labels = torch.randn(SHAPE), torch.randn(SHAPE), torch.zeros(SHAPE[0], dtype=torch.long)
    penalty = gradient_penalty(_linear_critic(w), real, fake, labels, gp_lambda=10.0)
    expected = 10.0 * (w.norm() - 1.0) ** 2
    torch.testing.assert_close(penalty, expected)

    # The public bug, grad.norm(2, dim=1) on the 4-D gradient: per-pixel |w_ij| instead of ‖w‖.
    buggy = 10.0 * ((w.expand(SHAPE).norm(2, dim=1) - 1.0) ** 2).mean()
    assert not torch.isclose(penalty, buggy, rtol=0.1)


def test_gradient_penalty_is_zero_for_a_unit_norm_linear_critic():
    w = torch.randn(SHAPE[1:])
    w = w / w.norm()
    penalty = gradient_penalty(_linear_critic(w), torch.randn(SHAPE), torch.randn(SHAPE), None, gp_lambda=10.0)
    assert penalty.item() == pytest.approx(0.0, abs=1e-10)


def test_gradient_penalty_keeps_the_graph_so_it_trains_the_critic():
    torch.manual_seed(1)
    w = torch.randn(SHAPE[1:], requires_grad=True)
    penalty = gradient_penalty(_linear_critic(w), torch.randn(SHAPE), torch.randn(SHAPE), None, gp_lambda=10.0)
    penalty.backward()
    # d/dw λ(‖w‖ - 1)² = 2λ(‖w‖ - 1) w / ‖w‖
    norm = w.detach().norm()
    torch.testing.assert_close(w.grad, 2 * 10.0 * (norm - 1.0) * w.detach() / norm)


def test_gradient_penalty_interpolates_with_one_alpha_per_sample():
    """D(x) = ½‖x‖²: ∇D(x̂) = x̂, so the penalty depends on where each x̂ lies."""
    torch.manual_seed(2)
    real, fake = torch.randn(SHAPE), torch.randn(SHAPE)
    critic = lambda x, labels: 0.5 * x.pow(2).flatten(1).sum(1)  # noqa: E731
    penalty = gradient_penalty(critic, real, fake, None, gp_lambda=3.0, generator=torch.Generator().manual_seed(7))

    alpha = torch.rand(SHAPE[0], 1, 1, 1, generator=torch.Generator().manual_seed(7))
    x_hat = alpha * real + (1 - alpha) * fake
    expected = 3.0 * ((x_hat.flatten(1).norm(dim=1) - 1.0) ** 2).mean()
    torch.testing.assert_close(penalty, expected)


def test_gradient_penalty_is_reproducible_with_a_generator():
    torch.manual_seed(3)
    real, fake = torch.randn(SHAPE), torch.randn(SHAPE)
    critic = lambda x, labels: x.pow(3).flatten(1).sum(1)  # noqa: E731
    a = gradient_penalty(critic, real, fake, None, 10.0, generator=torch.Generator().manual_seed(11))
    b = gradient_penalty(critic, real, fake, None, 10.0, generator=torch.Generator().manual_seed(11))
    c = gradient_penalty(critic, real, fake, None, 10.0, generator=torch.Generator().manual_seed(12))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_gradient_penalty_does_not_reach_the_generator():
    fake = torch.randn(SHAPE, requires_grad=True)
    w = torch.randn(SHAPE[1:], requires_grad=True)
    gradient_penalty(_linear_critic(w), torch.randn(SHAPE), fake * 2, None, 10.0).backward()
    assert fake.grad is None and w.grad is not None


def test_critic_and_generator_losses_are_the_wasserstein_estimates():
    real, fake = torch.tensor([1.0, 3.0]), torch.tensor([-1.0, 0.0])
    assert critic_loss(real, fake).item() == pytest.approx(-0.5 - 2.0)  # E[D(fake)] - E[D(real)]
    assert generator_loss(fake).item() == pytest.approx(0.5)  # -E[D(fake)]


def test_ac_loss_is_cross_entropy_and_zero_without_a_class_head():
    logits, labels = torch.tensor([[2.0, -1.0], [0.5, 0.5]]), torch.tensor([1, 0])
    torch.testing.assert_close(ac_loss(logits, labels), F.cross_entropy(logits, labels))
    zero = ac_loss(None, labels)
    assert zero.shape == () and zero.item() == 0.0
