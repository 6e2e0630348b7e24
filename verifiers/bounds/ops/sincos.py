"""sin and cos (|f''| <= 1, range [-1, 1]): Taylor lines or the exact range over the interval (curvature.py).
ONNX ``Sin`` / ``Cos`` import as these (ml4acopf's power-flow networks use them)."""
from __future__ import annotations

import math

import torch

from certkit.verifiers.bounds.ops.base import register_op
from certkit.verifiers.bounds.ops.curvature import BoundedCurvature


def periodic_extremes(f, l, u, peak: float):
    """min / max over [l, u] of f = sin(z + phase) with maxima at ``peak`` + 2 k pi (minima half a period later)."""
    fl, fu = f(l), f(u)
    lo, hi = torch.minimum(fl, fu), torch.maximum(fl, fu)
    two_pi = 2 * math.pi
    top = peak + two_pi * torch.ceil((l - peak) / two_pi)             # the first maximum at or after l
    bottom = peak + math.pi + two_pi * torch.ceil((l - peak - math.pi) / two_pi)
    hi = torch.where(top <= u, torch.ones_like(hi), hi)
    lo = torch.where(bottom <= u, -torch.ones_like(lo), lo)
    return lo, hi


@register_op(functions=(torch.sin,), methods=("sin",), onnx=("Sin",))
class Sin(BoundedCurvature):
    """sin(z)."""

    name = "Sin"

    def function(self, z):
        return torch.sin(z)

    def derivative(self, z):
        return torch.cos(z)

    def extremes(self, l, u):
        return periodic_extremes(torch.sin, l, u, math.pi / 2)


@register_op(functions=(torch.cos,), methods=("cos",), onnx=("Cos",))
class Cos(BoundedCurvature):
    """cos(z)."""

    name = "Cos"

    def function(self, z):
        return torch.cos(z)

    def derivative(self, z):
        return -torch.sin(z)

    def extremes(self, l, u):
        return periodic_extremes(torch.cos, l, u, 0.0)
