"""Clip / clamp(z, lo, hi) (``torch.clamp``, ``nn.Hardtanh``, ``nn.ReLU6``, ONNX ``Clip``): piecewise linear with kinks
at lo and hi, written as lo + relu(z - lo) - relu(z - hi) (one side when the other bound is absent).

Relaxation: each ReLU term gets its CROWN lines (ReLU.relax on the shifted interval), the lower line of the sum
takes the lower line of + relu(z - lo) and the upper line of relu(z - hi), the upper line the reverse (sound: a sum
of sound bounds). Both ReLU lower slopes are free parameters of alpha-CROWN (2 per neuron). Intervals that cross no
kink are exact. Branch and bound splits an interval at the kink it crosses (lo first). IBP maps the endpoints
(clamp is non-decreasing).
"""
from __future__ import annotations

import torch
from torch import nn

from certkit.verifiers.bounds.ops.activation import Activation
from certkit.verifiers.bounds.ops.base import Call, Unsupported, register_op
from certkit.verifiers.bounds.ops.relu import ReLU


def _scalar(v, what: str) -> float | None:
    if v is None:
        return None
    if isinstance(v, torch.Tensor):
        if v.numel() != 1:
            raise Unsupported(f"clamp with a tensor {what} bound (certkit bounds scalar bounds)")
        v = v.item()
    return float(v)


@register_op(modules=(nn.Hardtanh,), functions=(torch.clamp, torch.clip), methods=("clamp", "clip"), onnx=("Clip",))
class Clip(Activation):
    """clamp(z, lo, hi) with scalar bounds (either may be absent); nn.Hardtanh and nn.ReLU6 (a Hardtanh)."""

    name = "Clip"
    n_alpha = 2

    def __init__(self, lo: float | None, hi: float | None):
        super().__init__()
        if lo is None and hi is None:
            raise Unsupported("clamp without bounds")
        if lo is not None and hi is not None and lo > hi:
            raise Unsupported(f"clamp with min {lo} > max {hi}")
        self.lo, self.hi = lo, hi
        self._relu = ReLU()

    @classmethod
    def from_call(cls, call: Call):
        if call.kind == "module":
            return cls(float(call.target.min_val), float(call.target.max_val))
        lo = call.args[1] if len(call.args) > 1 else call.kwargs.get("min")
        hi = call.args[2] if len(call.args) > 2 else call.kwargs.get("max")
        if any(call.is_data(v) for v in (lo, hi)):
            raise Unsupported("clamp with bounds computed from the input")
        lo, hi = (call.value(v) if hasattr(v, "name") else v for v in (lo, hi))
        return cls(_scalar(lo, "min"), _scalar(hi, "max"))

    def function(self, z):
        return torch.clamp(z, self.lo, self.hi)

    def derivative(self, z):
        inside = torch.ones_like(z, dtype=torch.bool)
        if self.lo is not None:
            inside &= z > self.lo
        if self.hi is not None:
            inside &= z < self.hi
        return inside.to(z.dtype)

    def _crosses(self, l, u):
        lo = (l < self.lo) & (u > self.lo) if self.lo is not None else torch.zeros_like(l, dtype=torch.bool)
        hi = (l < self.hi) & (u > self.hi) if self.hi is not None else torch.zeros_like(l, dtype=torch.bool)
        return lo, hi

    def unstable(self, l, u):
        lo, hi = self._crosses(l, u)
        return lo | hi

    def splittable(self, l, u):
        return self.unstable(l, u)

    def split_point(self, l, u):
        lo, hi = self._crosses(l, u)
        mid = (l + u) / 2
        at_hi = torch.where(hi, torch.full_like(l, self.hi if self.hi is not None else 0.0), mid)
        return torch.where(lo, torch.full_like(l, self.lo if self.lo is not None else 0.0), at_hi)

    def alpha_init(self, in_bounds):
        l, u = in_bounds[0]
        a1 = ReLU.default_alpha(l - self.lo, u - self.lo) if self.lo is not None else torch.zeros_like(l)
        a2 = ReLU.default_alpha(l - self.hi, u - self.hi) if self.hi is not None else torch.zeros_like(l)
        return torch.stack([a1, a2])

    def _relu_lines(self, l, u, k, alpha):
        """CROWN lines of relu(z - k) as lines in z."""
        aL, cL, aU, cU = self._relu.relax(l - k, u - k, None if alpha is None else alpha)
        return aL, cL - aL * k, aU, cU - aU * k

    def relax(self, l, u, alpha=None, setup=None):
        zero = torch.zeros_like(l) if alpha is None else torch.zeros_like(alpha[0])
        if self.lo is not None:          # lo + relu(z - lo)
            aL, cL, aU, cU = self._relu_lines(l, u, self.lo, None if alpha is None else alpha[0:1])
            cL, cU = cL + self.lo, cU + self.lo
        else:                            # z
            aL, cL, aU, cU = zero + 1, zero, zero + 1, zero
        if self.hi is not None:          # - relu(z - hi)
            bL, dL, bU, dU = self._relu_lines(l, u, self.hi, None if alpha is None else alpha[1:2])
            aL, cL, aU, cU = aL - bU, cL - dU, aU - bL, cU - dL
        return aL, cL, aU, cU
