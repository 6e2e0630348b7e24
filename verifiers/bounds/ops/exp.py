"""exp(z) (convex, increasing): chord above, tangent below, the tangent point optimised by alpha-CROWN (convex.py;
as auto_LiRPA's BoundExp). Bounds overflow to inf where u > 709 (float64) / 88 (float32): certkit then reports
NaN/inf bounds instead of a verdict."""
from __future__ import annotations

import torch

from certkit.verifiers.bounds.ops.base import register_op
from certkit.verifiers.bounds.ops.convex import Convex


@register_op(functions=(torch.exp,), methods=("exp",), onnx=("Exp",))
class Exp(Convex):
    """exp(z)."""

    name = "Exp"

    def function(self, z):
        return torch.exp(z)

    def derivative(self, z):
        return torch.exp(z)
