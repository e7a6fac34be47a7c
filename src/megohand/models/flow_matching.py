"""Flow matching in the GR00T-N1 convention (docs/model.md): tau = 0 is noise, tau = 1 is data.

    x_tau = (1 - tau) * eps + tau * a,        target velocity u = a - eps,
    tau = (s - u) / s,  u ~ Beta(alpha, beta)  (alpha = 1.5, beta = 1, s = 0.999: denser near noise),
    Euler sampling: x <- eps; for k in 0..K-1: x <- x + v(x, tau_k = k / K) / K.

The network sees the discretised time ``int(tau * buckets)`` (buckets = 1000).
Never mix with the openpi convention (t = 1 noise).
"""

from __future__ import annotations

from typing import Callable

import torch


def sample_tau(
    batch: int,
    alpha: float = 1.5,
    beta: float = 1.0,
    s: float = 0.999,
    device=None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Training times tau = (s - u) / s, u ~ Beta(alpha, beta): (batch,) float32 in [1 - 1/s, 1] (about [-0.001, 1])."""
    if beta == 1.0:
        # Beta(a, 1) has CDF u^a, so u = U^(1/a) with U uniform: exact, seedable with a generator.
        uni = torch.rand(batch, device=device, generator=generator)
        u = uni.pow(1.0 / alpha)
    else:
        u = torch.distributions.Beta(alpha, beta).sample((batch,)).to(device)
    return (s - u) / s


def discretise(tau: torch.Tensor, buckets: int = 1000) -> torch.Tensor:
    """int(tau * buckets) as long, same shape as tau (truncation toward zero, as GR00T)."""
    return (tau * buckets).long()


def interpolate(noise: torch.Tensor, data: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """x_tau = (1 - tau) noise + tau data; tau (B,) broadcast over the trailing dims of (B, ...)."""
    t = tau.view(-1, *([1] * (data.dim() - 1))).to(data.dtype)
    return (1.0 - t) * noise + t * data


def target_velocity(noise: torch.Tensor, data: torch.Tensor) -> torch.Tensor:
    """u = a - eps: the constant velocity of the straight path."""
    return data - noise


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sum(mask * (pred - target)^2) / sum(mask); mask broadcastable to pred (e.g. (B, L, 1))."""
    mask = mask.to(pred.dtype).expand_as(pred)
    return ((pred.float() - target.float()) ** 2 * mask).sum() / mask.sum().clamp_min(1.0)


def euler_integrate(
    velocity: Callable[[torch.Tensor, float], torch.Tensor], noise: torch.Tensor, steps: int
) -> torch.Tensor:
    """Integrate dx/dtau = velocity(x, tau) from tau = 0 (x = noise) to tau = 1 with `steps` Euler steps.

    ``velocity(x, tau)`` receives tau as a Python float (k / steps), so the loop has no host syncs.
    """
    x = noise
    dt = 1.0 / steps
    for k in range(steps):
        x = x + dt * velocity(x, k / steps)
    return x
