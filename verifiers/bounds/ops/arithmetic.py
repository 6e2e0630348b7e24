"""Arithmetic on data tensors: x + y and x - y of two data tensors (residual connections; one may broadcast, as the
mean in a LayerNorm), x * y of two data tensors of the same shape (the bilinear relaxation, bilinear.py; x * x is the
square, pow.py), x / y with y > 0 (divide.py), and x + c, x - c, c - x, x * c, x / c, -x with constants c (elementwise
affine maps)."""
from __future__ import annotations

import operator

import numpy as np
import torch

from certkit.verifiers.bounds.ops.affine import constant_op
from certkit.verifiers.bounds.ops.base import Call, Op, Unsupported, register_op, same_rank, unbroadcast
from certkit.verifiers.bounds.ops.bilinear import Mul
from certkit.verifiers.bounds.ops.divide import Div
from certkit.verifiers.bounds.ops.pow import EvenPower

_ADD = (operator.add, torch.add, operator.iadd)
_SUB = (operator.sub, torch.sub, operator.isub)
_MUL = (operator.mul, torch.mul, operator.imul)
_DIV = (operator.truediv, torch.div, operator.itruediv)
_NEG = (operator.neg, torch.neg)


class Add(Op):
    """x + y of two data tensors (one may broadcast against the other: x - mean(x) in a LayerNorm)."""

    name = "Add"
    arity = 2

    def forward(self, x, y):
        return x + y

    def ibp(self, a, b):
        return a[0] + b[0], a[1] + b[1]

    def forward_linear(self, rows, in_bounds=(), relaxation=None):
        La, Ua, Lb, Ub = same_rank(*rows[0], *rows[1])
        return La + Lb, Ua + Ub

    def backward(self, A, in_bounds=(), relaxation=None):
        return [unbroadcast(A, self.in_shapes[0]), unbroadcast(A, self.in_shapes[1])], None

    def sound_error(self, ma, mb):
        return 1, ma + mb


class Sub(Op):
    """x - y of two data tensors (one may broadcast against the other)."""

    name = "Sub"
    arity = 2

    def forward(self, x, y):
        return x - y

    def ibp(self, a, b):
        return a[0] - b[1], a[1] - b[0]

    def forward_linear(self, rows, in_bounds=(), relaxation=None):
        La, Ua, Lb, Ub = same_rank(*rows[0], *rows[1])
        return La - Ub, Ua - Lb

    def backward(self, A, in_bounds=(), relaxation=None):
        return [unbroadcast(A, self.in_shapes[0]), -unbroadcast(A, self.in_shapes[1])], None

    def sound_error(self, ma, mb):
        return 1, ma + mb


def per_sample_const(c, shape: tuple) -> torch.Tensor:
    """A constant operand shaped to broadcast over one sample of ``shape`` without changing it.

    Raises:
        Unsupported: the constant varies over the batch or would change the data shape.
    """
    c = torch.as_tensor(c).detach()
    while c.dim() > len(shape):
        if c.shape[0] != 1:
            raise Unsupported(f"constant of shape {tuple(c.shape)} varies over the batch dimension")
        c = c[0]
    try:  # numpy's: torch.broadcast_shapes imports sympy (about a second at start-up)
        if np.broadcast_shapes(tuple(c.shape), tuple(shape)) != tuple(shape):
            raise ValueError
    except ValueError:
        raise Unsupported(f"constant of shape {tuple(c.shape)} would change the data shape {shape}") from None
    return c


@register_op(functions=_ADD + _SUB + _MUL + _DIV + _NEG, onnx=("Add", "Sub", "Mul", "Div"), name="Arithmetic")
def arithmetic_op(call: Call) -> Op:
    """Add / Sub of two data tensors, or an elementwise affine op for arithmetic with a constant."""
    t, args = call.target, list(call.args)
    if set(call.kwargs) - {"alpha"} or call.kwargs.get("alpha", 1) != 1:
        raise Unsupported("keyword arguments are not supported")
    if t in _NEG:
        return constant_op(-1.0, None, "Neg")
    if len(call.data_args) == 2:
        shapes = [tuple(call.value(a).shape) for a in args[:2]]
        same = shapes[0] == shapes[1]
        try:   # the batch dim must match: broadcasting happens inside each sample
            broadcast = bool(np.broadcast_shapes(*shapes)) and shapes[0][:1] == shapes[1][:1]
        except ValueError:
            broadcast = False
        if t in _ADD + _SUB and broadcast:
            return Add() if t in _ADD else Sub()
        if t in _MUL and args[0] is args[1]:
            return EvenPower(2)   # x * x: the square's convex relaxation (>= 0), not the bilinear one of x y
        if t in _MUL and (same or broadcast and len(shapes[0]) == len(shapes[1])):
            return Mul()
        if t in _DIV and broadcast:
            return Div()
        raise Unsupported(f"{'quotient' if t in _DIV else 'broadcast product' if t in _MUL else 'sum'} of "
                          f"two data tensors of shapes {shapes[0]} and {shapes[1]} is not supported")
    first = call.is_data(args[0])
    c = per_sample_const(call.const(args[1] if first else args[0]), call.shape)
    if t in _ADD:
        return constant_op(None, c, "AddConst")
    if t in _SUB:
        return constant_op(None, -c, "SubConst") if first else constant_op(-1.0, c, "RSubConst")
    if t in _MUL:
        return constant_op(c, None, "MulConst")
    if first:
        return constant_op(1.0 / c, None, "DivConst")
    raise Unsupported("division by a data tensor is not supported")
