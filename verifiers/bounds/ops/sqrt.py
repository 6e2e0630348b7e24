"""sqrt(z) on z >= 0 (concave, increasing): tangent above (its point kept >= 1e-12, where the slope is finite),
chord below (concave.py). ONNX ``Pow`` with exponent 0.5 imports as this op (pow.py)."""
from __future__ import annotations

import torch

from certkit.verifiers.bounds.ops.base import register_op
from certkit.verifiers.bounds.ops.concave import Concave


@register_op(functions=(torch.sqrt,), methods=("sqrt",), onnx=("Sqrt",))
class Sqrt(Concave):
    """sqrt(z) for z >= 0."""

    name = "Sqrt"
    d_min = 1e-12

    def function(self, z):
        return torch.sqrt(z)

    def derivative(self, z):
        return 0.5 / torch.sqrt(z)
