"""SiLU / swish, z sigmoid(z) (Elfwing et al. 2018): |f''| <= 1/2 (attained at 0), decreasing then increasing around
its minimum at x* = -1.2785: Taylor lines or the range (curvature.py)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from certkit.verifiers.bounds.ops.base import register_op
from certkit.verifiers.bounds.ops.curvature import BoundedCurvature, unimodal_extremes
from certkit.verifiers.bounds.ops.gelu import argmin_of


@register_op(modules=(nn.SiLU,), functions=(F.silu,))
class SiLU(BoundedCurvature):
    """z sigmoid(z)."""

    name = "SiLU"
    curvature = 0.5

    def __init__(self):
        super().__init__()
        self.x_star = argmin_of(self.derivative)
        self.f_star = float(self.function(torch.tensor(self.x_star, dtype=torch.float64))) - 1e-9

    def function(self, z):
        return F.silu(z)

    def derivative(self, z):
        s = torch.sigmoid(z)
        return s * (1 + z * (1 - s))

    def extremes(self, l, u):
        return unimodal_extremes(self.function, l, u, self.x_star, self.f_star)
