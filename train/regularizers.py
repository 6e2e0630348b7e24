"""Warm-up regularizers of the short-warmup recipe (Shi et al. NeurIPS 2021, Sec. 4.2), tau = 0.5.

For each ReLU layer i with pre-activation bounds (l, u): center c = (u + l) / 2, Delta_i = mean((u - l) / 2);
Delta_0 is the mean radius of the network input box.
    L_tight = (1/L) sum_i ReLU(tau - Delta_0 / Delta_i) / tau
    r_m = mean(c 1[l > 0]) / (-mean(c 1[u < 0])),   r_v = sum((c - mu)^2 1[l > 0]) / sum((c - mu)^2 1[u < 0])
    (each r replaced by min(r, 1/r)),  L_relu = (1/L) sum_i [ReLU(tau - r_m) + ReLU(tau - r_v)] / tau
"""
from __future__ import annotations

import torch


def _balanced(r: torch.Tensor) -> torch.Tensor:
    return torch.minimum(r, 1.0 / r.clamp(min=1e-12))


def tightness_regularizer(delta0: torch.Tensor, bounds: list, tau: float = 0.5) -> torch.Tensor:
    """L_tight from the ReLU pre-activation bounds [(l, u), ...] and the mean input radius delta0."""
    terms = [torch.relu(tau - delta0 / ((u - l) / 2).mean().clamp(min=1e-12)) / tau for l, u in bounds]
    return torch.stack(terms).mean() if terms else torch.zeros(())


def relu_balance_regularizer(bounds: list, tau: float = 0.5) -> torch.Tensor:
    """L_relu: keeps active and inactive neurons balanced in mean and variance of their box centers."""
    terms = []
    for l, u in bounds:
        c = (u + l) / 2
        act, inact = (l > 0).to(c.dtype), (u < 0).to(c.dtype)
        mu = c.mean()
        num_m, den_m = (c * act).mean(), -(c * inact).mean()
        num_v, den_v = ((c - mu) ** 2 * act).sum(), ((c - mu) ** 2 * inact).sum()
        r_m = _balanced(num_m.clamp(min=1e-12) / den_m.clamp(min=1e-12))
        r_v = _balanced(num_v.clamp(min=1e-12) / den_v.clamp(min=1e-12))
        terms.append((torch.relu(tau - r_m) + torch.relu(tau - r_v)) / tau)
    return torch.stack(terms).mean() if terms else torch.zeros(())
