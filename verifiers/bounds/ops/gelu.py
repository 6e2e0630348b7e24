"""GELU (Hendrycks & Gimpel 2016), exact (x Phi(x)) or tanh-approximated: decreasing then increasing around its
minimum at x* = -0.7518 (exact form), concave, convex, concave with inflection points at -sqrt(2) and sqrt(2) (exact
form: f'' = phi(x) (2 - x^2); tanh form: found numerically, within 1e-9): lines of any slope at their optimal
intercept (inflection.py). The ONNX export of GELU (opset < 20) is Erf and products (erf.py, bilinear.py)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from certkit.verifiers.bounds.ops.base import Call, Unsupported, register_op
from certkit.verifiers.bounds.ops.curvature import unimodal_extremes
from certkit.verifiers.bounds.ops.inflection import Inflection, zero_of


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
class GELU(Inflection):
    """GELU with ``approximate`` 'none' or 'tanh'."""

    name = "GELU"
    convex_first = False     # concave on (-inf, -sqrt(2)], convex between the inflection points, concave after

    def __init__(self, approximate: str = "none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise Unsupported(f"GELU with approximate={approximate!r}")
        self.approximate = approximate
        self.x_star = argmin_of(self.derivative)
        self.f_star = float(self.function(torch.tensor(self.x_star, dtype=torch.float64))) - 1e-9
        if approximate == "none":
            self.inflections = (-math.sqrt(2), math.sqrt(2))
        else:   # the zeros of f'' (central differences of f', error ~1e-10 in f'', so the zeros to ~1e-9)
            q = zero_of(lambda z: self.derivative(z + 1e-5) - self.derivative(z - 1e-5), 1.0, 2.0)
            self.inflections = (-q, q)

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
