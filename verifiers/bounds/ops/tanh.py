"""tanh with the S-shaped CROWN / alpha-CROWN relaxation (sshaped.py)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from certkit.verifiers.bounds.ops.base import register_op
from certkit.verifiers.bounds.ops.sshaped import SShaped


@register_op(modules=(nn.Tanh,), functions=(torch.tanh, F.tanh), methods=("tanh",), onnx=("Tanh",))
class Tanh(SShaped):
    """tanh(z)."""

    name = "Tanh"

    def function(self, z):
        return torch.tanh(z)

    def derivative(self, z):
        return 1 - torch.tanh(z) ** 2
