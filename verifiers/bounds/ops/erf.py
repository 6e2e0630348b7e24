"""erf(z) (increasing, convex on (-inf, 0], concave on [0, inf)): the S-shaped CROWN / alpha-CROWN relaxation
(sshaped.py). GELU exported to ONNX becomes x * 0.5 * (1 + erf(x / sqrt(2))): Erf with the product of two computed
tensors (bilinear.py) bounds it; ``nn.GELU`` in torch models has its own op (gelu.py)."""
from __future__ import annotations

import math

import torch

from certkit.verifiers.bounds.ops.base import register_op
from certkit.verifiers.bounds.ops.sshaped import SShaped


@register_op(functions=(torch.erf, torch.special.erf), methods=("erf",), onnx=("Erf",))
class Erf(SShaped):
    """erf(z)."""

    name = "Erf"

    def function(self, z):
        return torch.erf(z)

    def derivative(self, z):
        return 2 / math.sqrt(math.pi) * torch.exp(-z * z)
