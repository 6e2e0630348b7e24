"""sign(z) in {-1, 0, 1} (a step, non-decreasing): IBP maps the endpoints; CROWN's linear bounds are the constants
sign(l) <= sign(z) <= sign(u) (no line through the jump does better on every interval). Where the sign is open the
lines may also pivot at the jump: sign(l) + s z <= sign(z) for 0 <= s <= (1 - sign(l)) / u (u > 0), and
sign(z) <= sign(u) + s z for 0 <= s <= (sign(u) + 1) / (-l) (l < 0); alpha-CROWN (Xu et al. ICLR 2021) optimises the
fraction of the largest slope on each side, from 0 (the constants)."""
from __future__ import annotations

import torch

from certkit.verifiers.bounds.ops.activation import Activation, constant_alpha
from certkit.verifiers.bounds.ops.base import register_op


@register_op(functions=(torch.sign,), methods=("sign",), onnx=("Sign",))
class Sign(Activation):
    """sign(z) (torch.sign: 0 at 0)."""

    name = "Sign"

    def function(self, z):
        return torch.sign(z)

    def derivative(self, z):
        return torch.zeros_like(z)

    def unstable(self, l, u):
        return torch.sign(l) < torch.sign(u)

    n_alpha = 2   # the fractions of the largest lower / upper slope (module docstring)

    def alpha_init(self, in_bounds):
        """0: the constants CROWN takes, (2, B, *shape)."""
        return constant_alpha(2, in_bounds, 0.0)

    def relax(self, l, u, alpha=None, setup=None):
        fl, fu = torch.sign(l), torch.sign(u)
        zero = torch.zeros_like(l)
        if alpha is None:
            return zero, fl, zero, fu
        open_ = fl < fu
        # the largest slopes, capped at 1e6 / (1 + |l| + |u|): a steeper line would turn the rounding of z into an
        # error above the jump's height (any smaller slope is as valid)
        floor_ = 1e-6 * (1 + l.abs() + u.abs())
        s_lo = torch.where(open_ & (u > 0), (1 - fl) / torch.maximum(u, floor_), zero)
        s_up = torch.where(open_ & (l < 0), (fu + 1) / torch.maximum(-l, floor_), zero)
        a = alpha.clamp(0, 1)
        aL, aU = a[0] * s_lo.unsqueeze(1), a[1] * s_up.unsqueeze(1)
        return aL, fl.unsqueeze(1).expand_as(aL), aU, fu.unsqueeze(1).expand_as(aU)
