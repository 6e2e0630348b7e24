"""floor(z), the largest integer <= z (a non-decreasing step): IBP maps the endpoints; linear bounds (both hold
everywhere since z - 1 < floor(z) <= z):
    within one step (floor(l) = floor(u)): exact, the constant floor(l);
    across one jump (floor(u) = floor(l) + 1): the constants floor(l) <= floor(z) <= floor(u);
    across several jumps: the lines z - 1 <= floor(z) <= z, each replaced by its constant where that is tighter over
    [l, u] at both ends (never for a line of slope 1 across two or more steps).
"""
from __future__ import annotations

import torch

from certkit.verifiers.bounds.ops.activation import Activation
from certkit.verifiers.bounds.ops.base import register_op


@register_op(functions=(torch.floor,), methods=("floor",), onnx=("Floor",))
class Floor(Activation):
    """floor(z) (torch.floor, ONNX Floor)."""

    name = "Floor"

    def function(self, z):
        return torch.floor(z)

    def derivative(self, z):
        return torch.zeros_like(z)

    def unstable(self, l, u):
        return torch.floor(l) < torch.floor(u)

    def relax(self, l, u, alpha=None, setup=None):
        fl, fu = torch.floor(l), torch.floor(u)
        lines = (fu - fl) >= 2
        one = torch.ones_like(l)
        zero = torch.zeros_like(l)
        return (torch.where(lines, one, zero), torch.where(lines, -one, fl),
                torch.where(lines, one, zero), torch.where(lines, zero, fu))
