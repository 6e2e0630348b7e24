"""log(z) on z > 0 (concave, increasing): tangent above, chord below (concave.py). Intervals reaching 0 or below
have no finite lower bound (reported as NaN/inf bounds)."""
from __future__ import annotations

import torch

from certkit.verifiers.bounds.ops.base import register_op
from certkit.verifiers.bounds.ops.concave import Concave


@register_op(functions=(torch.log,), methods=("log",), onnx=("Log",))
class Log(Concave):
    """log(z) for z > 0."""

    name = "Log"
    d_min = 1e-300

    def function(self, z):
        return torch.log(z)

    def derivative(self, z):
        return torch.reciprocal(z)
