"""Abs(z) = |z| (convex, piecewise linear): LeakyReLU's lines with negative slope -1.

Relaxation on [l, u] (the ReLU rules of CROWN, Zhang et al. 2018): stable neurons are exact (slope 1 for l >= 0, -1
for u <= 0); an unstable one (l < 0 < u) gets the chord through (l, -l) and (u, u) as its upper line and a line s z
through the origin with s in [-1, 1] as its lower line (|z| >= s z everywhere). CROWN picks s = 1 when u > -l, else
s = -1; alpha-CROWN optimises s = -1 + 2 alpha, alpha in [0, 1]. IBP: [0, max(-l, u)] on crossing intervals.
ONNX ``Abs`` imports as ``torch.abs``.
"""
from __future__ import annotations

import torch

from certkit.verifiers.bounds.ops.base import Call, register_op
from certkit.verifiers.bounds.ops.leaky_relu import LeakyReLU


@register_op(functions=(torch.abs,), methods=("abs",), onnx=("Abs",))
class Abs(LeakyReLU):
    """|z|: LeakyReLU with slope -1 on the negative side, with its own interval rule (not monotone)."""

    name = "Abs"

    def __init__(self):
        super().__init__(0.0)
        self.a = -1.0

    @classmethod
    def from_call(cls, call: Call):
        return cls()

    def function(self, z):
        return z.abs()

    def ibp(self, iv):
        l, u = iv
        return torch.where(l > 0, l, torch.where(u < 0, -u, torch.zeros_like(l))), torch.maximum(-l, u)
