"""sign(z) in {-1, 0, 1} (a step, non-decreasing): IBP maps the endpoints; the linear bounds are the constants
sign(l) <= sign(z) <= sign(u) (no line through the jump does better on every interval)."""
from __future__ import annotations

import torch

from certkit.verifiers.bounds.ops.activation import Activation
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

    def relax(self, l, u, alpha=None, setup=None):
        zero = torch.zeros_like(l)
        return zero, torch.sign(l), zero, torch.sign(u)
