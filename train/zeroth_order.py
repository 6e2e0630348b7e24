"""Zeroth-order (ZO) gradient estimates of a black-box loss, the gradient oracle of ZO-AE-DS.

Problem: a per-example loss f_i(z_i) (z: (B, d), f: (B, d) -> (B,)) that can only be EVALUATED (queries of a
black-box classifier), and we need g_i = grad f_i(z_i) to train what produces z (the denoiser or encoder in front).

Estimators (Zhang, Yao, Jia, Yi, Hong, Chang, Liu, ICLR 2022, "How to Robustify Black-Box ML Models? A Zeroth-Order
Optimization Perspective", Sec. 4, eqs. (3)-(4); after Liu et al. 2020, "A primer on zeroth-order optimization"):
    RGE (random gradient estimate), q random directions u_j uniform on the unit sphere of R^d, smoothing radius mu:
        g_hat = (d / (mu q)) * sum_j [f(z + mu u_j) - f(z)] u_j                   (q + 1 queries per example)
        For mu -> 0, g_hat = (d/q) sum_j (u_j . g) u_j is unbiased (E[u u^T] = I / d) with
        E ||g_hat - g||^2 = (d - 1) ||g||^2 / q   (one direction: E||d (u.g) u||^2 = d ||g||^2), so the relative
        mean-squared error falls as 1/q; for mu > 0 it estimates the gradient of the mu-smoothed f (bias O(mu)).
    CGE (coordinate-wise gradient estimate), the d unit vectors e_i:
        g_hat = sum_i [f(z + mu e_i) - f(z)] / mu  e_i                             (d + 1 queries per example)
        deterministic, error O(mu) (forward differences: |g_hat_i - g_i| <= mu/2 max |d^2 f / dz_i^2|).

:func:`zo_gradient` returns the estimate; :func:`zo_surrogate` turns it into a scalar whose autograd gradient with
respect to z is the estimate (so the layers before z train with ordinary backprop: the chain rule of ZO-AE-DS).
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from certkit.common.errors import CertkitError

ESTIMATORS = ("rge", "cge")


def zo_queries(estimator: str, d: int, q: int) -> int:
    """Black-box queries per example of one estimate: q + 1 (RGE) or d + 1 (CGE)."""
    return (q if estimator == "rge" else d) + 1


@torch.no_grad()
def zo_gradient(f: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor, estimator: str = "rge", q: int = 20,
                mu: float = 0.005, generator: torch.Generator | None = None) -> torch.Tensor:
    """ZO estimate of the per-example gradients of ``f`` at ``z`` (module docstring). Calls f once with B (q + 1)
    points (the caller sizes B).

    Args:
        f: maps points (B, m, d), m per example, to their losses (B, m); evaluated without gradients (a black
            box; the loss of example b may depend on b, e.g. its label);
        z: (B, d) points; estimator: ``rge`` or ``cge``; q: RGE directions per example (CGE uses all d);
        mu: finite-difference step (units of z); generator: RNG of the directions (RGE, drawn on the CPU).
    Returns:
        (B, d) estimates, same dtype and device as z.
    Raises:
        CertkitError: unknown estimator, q < 1, mu <= 0, z not 2-D.
    """
    if estimator not in ESTIMATORS:
        raise CertkitError(f"unknown zeroth-order estimator {estimator!r}: use rge or cge")
    if z.dim() != 2:
        raise CertkitError(f"zo_gradient needs points of shape (B, d), got {tuple(z.shape)}")
    if not mu > 0:
        raise CertkitError(f"the zeroth-order step mu must be > 0, got {mu}")
    B, d = z.shape
    if estimator == "rge":
        if q < 1:
            raise CertkitError(f"RGE needs q >= 1 directions, got {q}")
        u = torch.randn((B, q, d), generator=generator, dtype=torch.float32).to(device=z.device, dtype=z.dtype)
        u = u / u.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        scale = d / (mu * q)
    else:
        q = d
        u = torch.eye(d, dtype=z.dtype, device=z.device).expand(B, d, d)
        scale = 1.0 / mu
    points = torch.cat([z.unsqueeze(1), z.unsqueeze(1) + mu * u], dim=1)  # (B, q + 1, d)
    values = f(points).reshape(B, q + 1).to(z.dtype)
    diffs = values[:, 1:] - values[:, :1]  # (B, q)
    return scale * torch.einsum("bq,bqd->bd", diffs, u)


def zo_surrogate(z: torch.Tensor, grad: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """A scalar equal to ``value`` (the mean black-box loss, for logging) whose gradient with respect to ``z``
    (B, d) is ``grad / B`` (the estimate of the mean loss's gradient): value + mean_b <grad_b, z_b> - (its value)."""
    inner = (grad.detach() * z).sum() / z.shape[0]
    return value.detach() + inner - inner.detach()
