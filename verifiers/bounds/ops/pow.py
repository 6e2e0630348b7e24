"""x ** p for a constant exponent p (torch.pow, ``x ** p``; ONNX Pow with a constant exponent): p = 2 (and other even
integers) is convex with its minimum at 0 (chord above, tangent below, convex.py; interval [0, max] across 0),
odd integers p >= 3 are increasing, concave on (-inf, 0] and convex on [0, inf) (lines of any slope at their optimal
intercept, inflection.py), p = 0.5 is sqrt (sqrt.py), p = -1 the reciprocal (reciprocal.py), p = 1 the identity.
Other exponents are refused."""
from __future__ import annotations

import operator

import torch

from certkit.verifiers.bounds.ops.affine import constant_op
from certkit.verifiers.bounds.ops.base import Call, Op, Unsupported, register_op
from certkit.verifiers.bounds.ops.convex import Convex
from certkit.verifiers.bounds.ops.inflection import Inflection
from certkit.verifiers.bounds.ops.reciprocal import Reciprocal
from certkit.verifiers.bounds.ops.sqrt import Sqrt


class _IntegerPower:
    """z ** p for an integer p >= 2: the function, its derivative and the op's name."""

    name = "Pow"

    def __init__(self, p: int):
        super().__init__()
        self.p = int(p)
        self.name = f"Pow{self.p}"

    def function(self, z):
        return z ** self.p

    def derivative(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.p * xs[0] ** (self.p - 1)


class EvenPower(_IntegerPower, Convex):
    """z ** p for an even integer p >= 2 (convex, decreasing then increasing)."""

    def ibp(self, iv):
        l, u = iv
        hi = torch.maximum(l ** self.p, u ** self.p)
        lo = torch.where((l <= 0) & (u >= 0), torch.zeros_like(l), torch.minimum(l ** self.p, u ** self.p))
        return lo, hi


class OddPower(_IntegerPower, Inflection):
    """z ** p for an odd integer p >= 3 (increasing; inflection point at 0)."""

    inflections = (0.0,)
    convex_first = False

    def extremes(self, l, u):
        return l ** self.p, u ** self.p


@register_op(functions=(torch.pow, operator.pow), methods=("pow",), onnx=("Pow",), name="Pow")
def pow_op(call: Call) -> Op:
    """The op for x ** p with a constant p (the exponent must not depend on the input)."""
    if len(call.args) < 2 or call.is_data(call.args[1]) or not call.is_data(call.args[0]):
        raise Unsupported("a power needs the data as base and a constant exponent")
    exponent = torch.as_tensor(call.value(call.args[1]))
    if exponent.numel() != 1:
        raise Unsupported("an exponent that varies over the tensor is not supported")
    p = float(exponent.reshape(-1)[0])
    if p == 1.0:
        return constant_op(1.0, None, "Pow1")
    if p == 0.5:
        return Sqrt()
    if p == -1.0:
        return Reciprocal()
    if p == int(p) and p >= 2:
        return EvenPower(int(p)) if int(p) % 2 == 0 else OddPower(int(p))
    raise Unsupported(f"exponent {p:g} (certkit bounds 1, 0.5, -1 and integers >= 2)")
