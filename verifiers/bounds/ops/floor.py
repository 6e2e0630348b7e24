"""floor(z), the largest integer <= z (a non-decreasing step): IBP maps the endpoints; linear bounds (both hold
everywhere since z - 1 < floor(z) <= z):
    within one step (floor(l) = floor(u)): exact, the constant floor(l);
    across one jump (floor(u) = floor(l) + 1): the constants floor(l) <= floor(z) <= floor(u);
    across several jumps: the lines z - 1 <= floor(z) <= z, each replaced by its constant where that is tighter over
    [l, u] at both ends (never for a line of slope 1 across two or more steps).
Across one jump, at k = floor(u), the constants may also pivot at the jump: floor(l) + s (z - k) <= floor(z) for
0 <= s <= 1 / (u - k), and floor(z) <= floor(u) + s (z - k) for 0 <= s <= 1 / (k - l); alpha-CROWN (Xu et al. ICLR
2021) optimises the fraction of the largest slope on each side, from 0 (the constants).
"""
from __future__ import annotations

import torch

from certkit.verifiers.bounds.ops.activation import Activation, constant_alpha
from certkit.verifiers.bounds.ops.base import register_op


@register_op(functions=(torch.floor,), methods=("floor",), onnx=("Floor",))
class Floor(Activation):
    """floor(z) (torch.floor, ONNX Floor)."""

    name = "Floor"

    def function(self, z):
        return torch.floor(z)

    def derivative(self, z):
        return torch.zeros_like(z)

    def unstable(self, l, u):
        return torch.floor(l) < torch.floor(u)

    n_alpha = 2   # across one jump: the fractions of the largest lower / upper slope (module docstring)

    def alpha_init(self, in_bounds):
        """0: CROWN's lines, (2, B, *shape)."""
        return constant_alpha(2, in_bounds, 0.0)

    def relax(self, l, u, alpha=None, setup=None):
        fl, fu = torch.floor(l), torch.floor(u)
        lines = (fu - fl) >= 2
        one = torch.ones_like(l)
        zero = torch.zeros_like(l)
        aL, cL = torch.where(lines, one, zero), torch.where(lines, -one, fl)
        aU, cU = torch.where(lines, one, zero), torch.where(lines, zero, fu)
        if alpha is None:
            return aL, cL, aU, cU
        jump = (fu - fl) == 1                                    # k = fu: the pivot
        # slopes capped at 1e6 / (1 + |l| + |u|), so that the rounding of z stays far below the step's height
        floor_ = 1e-6 * (1 + l.abs() + u.abs())
        s_lo = torch.where(jump & (u > fu), 1 / torch.maximum(u - fu, floor_), zero).unsqueeze(1) * alpha[0].clamp(0, 1)
        s_up = torch.where(jump, 1 / torch.maximum(fu - l, floor_), zero).unsqueeze(1) * alpha[1].clamp(0, 1)
        k = fu.unsqueeze(1)
        return (aL.unsqueeze(1) + s_lo, cL.unsqueeze(1) - s_lo * k, aU.unsqueeze(1) + s_up, cU.unsqueeze(1) - s_up * k)
