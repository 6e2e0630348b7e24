"""SiLU / swish, z sigmoid(z) (Elfwing et al. 2018): decreasing then increasing around its minimum at x* = -1.2785;
concave, convex, concave with inflection points at -/+2.3994 (the zeros of f'' = s (1 - s) (2 + z (1 - 2 s)),
s = sigmoid(z)): lines of any slope at their optimal intercept (inflection.py)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from certkit.verifiers.bounds.ops.base import register_op
from certkit.verifiers.bounds.ops.curvature import unimodal_extremes
from certkit.verifiers.bounds.ops.gelu import argmin_of
from certkit.verifiers.bounds.ops.inflection import Inflection, zero_of


@register_op(modules=(nn.SiLU,), functions=(F.silu,))
class SiLU(Inflection):
    """z sigmoid(z)."""

    name = "SiLU"
    convex_first = False

    def __init__(self):
        super().__init__()
        self.x_star = argmin_of(self.derivative)
        self.f_star = float(self.function(torch.tensor(self.x_star, dtype=torch.float64))) - 1e-9
        q = zero_of(lambda z: 2 + z * (1 - 2 * torch.sigmoid(z)), 2.0, 3.0)
        self.inflections = (-q, q)

    def function(self, z):
        return F.silu(z)

    def derivative(self, z):
        s = torch.sigmoid(z)
        return s * (1 + z * (1 - s))

    def extremes(self, l, u):
        return unimodal_extremes(self.function, l, u, self.x_star, self.f_star)
