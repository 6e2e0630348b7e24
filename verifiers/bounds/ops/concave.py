"""Concave, increasing activations (log, sqrt): tangent above, chord below, the tangent point optimised by alpha-CROWN
(the concave-function case of the CROWN relaxations, Zhang et al. NeurIPS 2018, Sec. 3.3; the mirror of convex.py).

Lines on [l, u] inside the function's domain:
    upper = the tangent at d = l + alpha (u - l), alpha in [0, 1] (CROWN: alpha = 1/2), d kept >= ``d_min`` where the
        derivative is infinite at the domain's end (sqrt at 0); a tangent of a concave function lies above it
        everywhere;
    lower = the chord (on narrow intervals the constant min(f(l), f(u))).
Both are shifted outward by 1e-6 (1 + |f(l)| + |f(u)|) when computed in float32, the same multiple of 1.9e-15 in
float64 (activation.py ``float32_units``); intervals narrower than 1e-5 (1.9e-14 in float64) get the constant lower
bound.
"""
from __future__ import annotations

import torch

from certkit.verifiers.bounds.ops.activation import Activation, float32_units

SHIFT = 1e-6
NARROW = 1e-5


class Concave(Activation):
    """Base of concave, non-decreasing activations: subclasses give ``function``, ``derivative`` and ``d_min``."""

    n_alpha = 1
    d_min = 0.0   # the smallest tangent point (a positive number where the derivative is infinite at the domain's end)

    def unstable(self, l, u):
        return l < u

    def alpha_init(self, in_bounds):
        l, _ = in_bounds[0]
        return torch.full((1,) + tuple(l.shape), 0.5, dtype=l.dtype, device=l.device)

    def relax(self, l, u, alpha=None, setup=None):
        f = self.function
        fl, fu = f(l), f(u)
        shift = SHIFT * float32_units(l) * (1 + fl.abs() + fu.abs())
        width = u - l
        narrow = width < NARROW * float32_units(l)
        k = torch.where(narrow, torch.zeros_like(l), (fu - fl) / torch.where(narrow, torch.ones_like(width), width))
        aL = k
        cL = torch.where(narrow, torch.minimum(fl, fu), fl - k * l) - shift
        if alpha is None:
            d = (l + u) / 2
        else:
            d = l.unsqueeze(1) + alpha[0].clamp(0, 1) * width.unsqueeze(1)
            aL, cL, shift = (t.unsqueeze(1).expand_as(d) for t in (aL, cL, shift))
        d = d.clamp(min=self.d_min) if self.d_min > 0 else d
        aU = self.derivative(d)
        cU = f(d) - aU * d + shift
        return aL, cL, aU, cU
