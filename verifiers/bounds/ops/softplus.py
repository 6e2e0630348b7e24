"""Softplus(z) = log(1 + exp(beta z)) / beta (convex, increasing): chord above, tangent below (convex.py).

torch's softplus returns z itself where beta z > threshold (20 by default), log(1 + exp(-threshold)) / beta below the
convex function (2e-9 by default): the lines are shifted outward by that gap too. ONNX ``Softplus`` (beta 1) imports
as ``nn.Softplus``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from certkit.verifiers.bounds.ops.base import Call, Unsupported, register_op
from certkit.verifiers.bounds.ops.convex import Convex


@register_op(modules=(nn.Softplus,), functions=(F.softplus,), onnx=("Softplus",))
class Softplus(Convex):
    """softplus with ``beta`` > 0 and ``threshold``."""

    name = "Softplus"

    def __init__(self, beta: float = 1.0, threshold: float = 20.0):
        super().__init__()
        if not beta > 0:
            raise Unsupported(f"Softplus with beta {beta} (certkit bounds beta > 0)")
        self.beta, self.threshold = float(beta), float(threshold)
        self.gap = math.log1p(math.exp(-self.threshold)) / self.beta

    @classmethod
    def from_call(cls, call: Call):
        if call.kind == "module":
            return cls(call.target.beta, call.target.threshold)
        beta = call.args[1] if len(call.args) > 1 else call.kwargs.get("beta", 1.0)
        threshold = call.args[2] if len(call.args) > 2 else call.kwargs.get("threshold", 20.0)
        return cls(float(beta), float(threshold))

    def function(self, z):
        return F.softplus(z, self.beta, self.threshold)

    def derivative(self, z):
        return torch.sigmoid(self.beta * z)

    def ibp(self, iv):
        """[f(l) - gap, f(u) + gap]: the computed function is within ``gap`` below the increasing softplus."""
        return self.function(iv[0]) - self.gap, self.function(iv[1]) + self.gap
