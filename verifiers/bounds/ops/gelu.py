"""GELU (Hendrycks & Gimpel 2016), exact (x Phi(x)) or tanh-approximated: |f''| <= 0.8, decreasing then increasing
around its minimum at x* = -0.7518 (exact form): Taylor lines or the range (curvature.py). The ONNX export of GELU
(opset < 20) is Erf and products (erf.py, bilinear.py)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from certkit.verifiers.bounds.ops.base import Call, Unsupported, register_op
from certkit.verifiers.bounds.ops.curvature import BoundedCurvature, unimodal_extremes


def argmin_of(derivative, lo: float = -3.0, hi: float = 0.0, iters: int = 200) -> float:
    """The zero of an increasing-through-zero derivative on [lo, hi] by bisection (float64)."""
    a, b = torch.tensor(lo, dtype=torch.float64), torch.tensor(hi, dtype=torch.float64)
    for _ in range(iters):
        m = (a + b) / 2
        if float(derivative(m)) < 0:
            a = m
        else:
            b = m
    return float((a + b) / 2)


@register_op(modules=(nn.GELU,), functions=(F.gelu,), onnx=("Gelu",))
class GELU(BoundedCurvature):
    """GELU with ``approximate`` 'none' or 'tanh'."""

    name = "GELU"
    curvature = 0.8   # exact: max |f''| = 2 phi(0) = 0.798; tanh form: 0.798 as well (checked on a dense grid)

    def __init__(self, approximate: str = "none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise Unsupported(f"GELU with approximate={approximate!r}")
        self.approximate = approximate
        self.x_star = argmin_of(self.derivative)
        self.f_star = float(self.function(torch.tensor(self.x_star, dtype=torch.float64))) - 1e-9

    @classmethod
    def from_call(cls, call: Call):
        if call.kind == "module":
            return cls(call.target.approximate)
        return cls(call.kwargs.get("approximate", "none"))

    def function(self, z):
        return F.gelu(z, approximate=self.approximate)

    def derivative(self, z):
        if self.approximate == "none":
            return 0.5 * (1 + torch.erf(z / math.sqrt(2))) + z * torch.exp(-z * z / 2) / math.sqrt(2 * math.pi)
        c = math.sqrt(2 / math.pi)
        t = torch.tanh(c * (z + 0.044715 * z ** 3))
        return 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * c * (1 + 3 * 0.044715 * z * z)

    def extremes(self, l, u):
        return unimodal_extremes(self.function, l, u, self.x_star, self.f_star)
