"""1 / z on z > 0 (convex, decreasing): chord above, tangent below (convex.py). Intervals reaching 0 or below have no
finite bounds (inf, reported as NaN/inf bounds); the denominators of LayerNorm and softmax are positive."""
from __future__ import annotations

import torch

from certkit.verifiers.bounds.ops.base import register_op
from certkit.verifiers.bounds.ops.convex import Convex


@register_op(functions=(torch.reciprocal,), methods=("reciprocal",), onnx=("Reciprocal",))
class Reciprocal(Convex):
    """1 / z for z > 0."""

    name = "Reciprocal"

    def function(self, z):
        return torch.where(z > 0, torch.reciprocal(z), torch.full_like(z, torch.inf))

    def derivative(self, z):
        return -torch.reciprocal(z * z)

    def ibp(self, iv):
        """[1/u, 1/l] (decreasing)."""
        return self.function(iv[1]), self.function(iv[0])
