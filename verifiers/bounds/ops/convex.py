"""Convex activations (Softplus, ELU with alpha <= 1): chord above, tangent below, the tangent point optimised by
alpha-CROWN.

For a convex f on [l, u] every tangent lies below f and the chord through (l, f(l)) and (u, f(u)) lies above it
(the convex-function case of the CROWN relaxations, Zhang et al. NeurIPS 2018, Sec. 3.3; as auto_LiRPA's Exp and
Softplus). Lines on [l, u]:
    lower = the tangent at d = l + alpha (u - l), alpha in [0, 1] (CROWN: alpha = 1/2, the midpoint);
    upper = the chord (on intervals narrower than 1e-5, 1.9e-14 in float64, the constant max(f(l), f(u)), free of
    the chord's division).
Both are shifted outward by 1e-6 (1 + |f(l)| + |f(u)|) when computed in float32, the same multiple of 1.9e-15 in
float64 (activation.py ``float32_units``: the rounding of the dtype the bounds are computed in); a subclass whose
computed function is convex only up to a small ``gap`` (torch's softplus switches to the identity above a threshold)
adds the gap. Where a subclass declares
an exact linear piece (``linear_from``: f(z) = z for z >= that point, ELU), intervals inside it are exact.
"""
from __future__ import annotations

import torch

from certkit.verifiers.bounds.ops.activation import Activation, float32_units

SHIFT = 1e-6
NARROW = 1e-5


class Convex(Activation):
    """Base of convex, non-decreasing activations: subclasses give ``function`` and ``derivative``."""

    n_alpha = 1
    linear_from: float | None = None  # f(z) = z for z >= linear_from (exact lines there), or None
    gap = 0.0  # how far the function as computed may fall below its convex form (added to the outward shift)

    def _exact(self, l):
        return torch.zeros_like(l, dtype=torch.bool) if self.linear_from is None else l >= self.linear_from

    def unstable(self, l, u):
        """Every neuron with l < u outside an exact linear piece: the lines are inexact on any such interval."""
        return (l < u) & ~self._exact(l)

    def alpha_init(self, in_bounds):
        l, _ = in_bounds[0]
        return torch.full((1,) + tuple(l.shape), 0.5, dtype=l.dtype, device=l.device)

    def relax(self, l, u, alpha=None, setup=None):
        f = self.function
        fl, fu = f(l), f(u)
        shift = SHIFT * float32_units(l) * (1 + fl.abs() + fu.abs()) + self.gap
        width = u - l
        narrow = width < NARROW * float32_units(l)
        k = torch.where(narrow, torch.zeros_like(l), (fu - fl) / torch.where(narrow, torch.ones_like(width), width))
        aU = k
        cU = torch.where(narrow, torch.maximum(fl, fu), fu - k * u) + shift
        exact = self._exact(l)
        if alpha is None:
            d = (l + u) / 2
        else:
            d = l.unsqueeze(1) + alpha[0].clamp(0, 1) * width.unsqueeze(1)
            aU, cU, shift, exact = (t.unsqueeze(1).expand_as(d) for t in (aU, cU, shift, exact))
        aL = self.derivative(d)
        cL = f(d) - aL * d - shift
        one, zero = torch.ones_like(aL), torch.zeros_like(aL)
        aL, cL = torch.where(exact, one, aL), torch.where(exact, zero, cL)
        aU, cU = torch.where(exact, one, aU), torch.where(exact, zero, cU)
        return aL, cL, aU, cU

