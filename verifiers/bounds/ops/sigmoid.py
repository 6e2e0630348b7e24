"""Logistic sigmoid with the S-shaped CROWN / alpha-CROWN relaxation (sshaped.py)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from certkit.verifiers.bounds.ops.base import register_op
from certkit.verifiers.bounds.ops.sshaped import SShaped


@register_op(modules=(nn.Sigmoid,), functions=(torch.sigmoid, F.sigmoid), methods=("sigmoid",), onnx=("Sigmoid",))
class Sigmoid(SShaped):
    """sigmoid(z) = 1 / (1 + exp(-z))."""

    name = "Sigmoid"

    def function(self, z):
        return torch.sigmoid(z)

    def derivative(self, z):
        s = torch.sigmoid(z)
        return s * (1 - s)
