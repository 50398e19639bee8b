"""WGAN-GP losses (Gulrajani et al., 2017, "Improved Training of Wasserstein GANs", Alg. 1).

With critic D, generator G, real x ~ P_r, fake x~ = G(z) ~ P_g:

    L_D = E[D(x~)] - E[D(x)] + λ E[(‖∇_x̂ D(x̂)‖₂ - 1)²]     (critic, minimised n_critic times
                                                            per generator step)
    L_G = -E[D(G(z))]

where x̂ = α x + (1 - α) x~ with α ~ U[0, 1] drawn per sample, and λ = 10 in the paper.
For the cgan, the AC-GAN class loss (cross-entropy of the critic's class head) is added to
both, weighted by ac_weight in the loop.

Plain tensor math: no Ray, MLflow or Optuna here.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def critic_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """E[D(x~)] - E[D(x)]: the negated Wasserstein estimate (the critic minimises this)."""
    return fake_scores.float().mean() - real_scores.float().mean()


def generator_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """-E[D(G(z))]."""
    return -fake_scores.float().mean()


def gradient_penalty(
    critic_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    labels: torch.Tensor,
    gp_lambda: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """λ E[(‖∇_x̂ D(x̂)‖₂ - 1)²] on the interpolates x̂ = α real + (1 - α) fake.

    `critic_fn(x, labels)` must return the scores [B] only (wrap the critic:
    `lambda x, y: critic(x, y)[0]`). `generator` (on any device) draws α reproducibly.
    The graph is kept (create_graph=True), so the penalty trains the critic's weights.
    """
    batch = real.shape[0]
    # α ~ U[0, 1], one per sample, shaped [B, 1, 1, 1] so it broadcasts over C, H, W.
    alpha_shape = (batch,) + (1,) * (real.dim() - 1)
    alpha_device = generator.device if generator is not None else real.device
    alpha = torch.rand(alpha_shape, generator=generator, device=alpha_device, dtype=torch.float32)
    alpha = alpha.to(device=real.device, dtype=real.dtype)
    # x̂: on the straight line between a real and a fake sample. Both are detached: the
    # penalty trains the critic, not the generator.
    x_hat = (alpha * real.detach() + (1.0 - alpha) * fake.detach()).requires_grad_(True)
    scores = critic_fn(x_hat, labels)
    # Σ_i D(x̂_i) has ∂/∂x̂_i = ∇D(x̂_i), since each score depends on its own sample only
    # (why the critic has no batch norm).
    (grad,) = torch.autograd.grad(outputs=scores.float().sum(), inputs=x_hat, create_graph=True)
    # ‖∇‖₂ per sample, over ALL non-batch dimensions (C, H, W). A common public bug is
    # grad.norm(2, dim=1) on the 4-D gradient: that is the norm over channels alone, per
    # pixel; with one channel it is |∂D/∂x_ij|, and the penalty pushes every pixel's
    # derivative to 1 instead of the whole gradient's norm.
    grad_norm = grad.float().flatten(1).norm(2, dim=1)
    return gp_lambda * ((grad_norm - 1.0) ** 2).mean()


def ac_loss(class_logits: torch.Tensor | None, labels: torch.Tensor) -> torch.Tensor:
    """AC-GAN auxiliary loss: cross-entropy of the critic's class logits; 0 without a class head."""
    if class_logits is None:
        return torch.zeros((), device=labels.device)
    return F.cross_entropy(class_logits.float(), labels)
