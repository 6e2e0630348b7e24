"""ELU(z) = z for z > 0, alpha (exp(z) - 1) else; convex and increasing for 0 < alpha <= 1: chord above, tangent
below (convex.py), exact on intervals inside z >= 0. ONNX ``Elu`` (attribute alpha) imports as ``nn.ELU``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from certkit.verifiers.bounds.ops.base import Call, Unsupported, register_op
from certkit.verifiers.bounds.ops.convex import Convex


@register_op(modules=(nn.ELU,), functions=(F.elu,), onnx=("Elu",))
class ELU(Convex):
    """ELU with 0 < ``alpha`` <= 1 (convex there)."""

    name = "ELU"
    linear_from = 0.0

    def __init__(self, alpha: float = 1.0):
        super().__init__()
        if not 0.0 < alpha <= 1.0:
            raise Unsupported(f"ELU with alpha {alpha} (certkit bounds 0 < alpha <= 1, where ELU is convex)")
        self.alpha = float(alpha)

    @classmethod
    def from_call(cls, call: Call):
        if call.kind == "module":
            return cls(call.target.alpha)
        alpha = call.args[1] if len(call.args) > 1 else call.kwargs.get("alpha", 1.0)
        return cls(float(alpha))

    def function(self, z):
        return F.elu(z, self.alpha)

    def derivative(self, z):
        return torch.where(z > 0, torch.ones_like(z), self.alpha * torch.exp(z.clamp(max=0)))
