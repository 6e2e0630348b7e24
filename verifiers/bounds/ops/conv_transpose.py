"""2-D transposed convolution (cgan's generators; ONNX ConvTranspose): an affine map. IBP by center and radius; the
CROWN backward rule is the adjoint map, a plain convolution with the same weight."""
from __future__ import annotations

import math

import torch.nn.functional as F
from torch import nn

from certkit.verifiers.bounds.ops.base import Call, ModuleOp, Unsupported, affine_rows, center_radius, register_op
from certkit.verifiers.bounds.ops.conv import in_slices


@register_op(modules=(nn.ConvTranspose2d,), onnx=("ConvTranspose",))
class ConvTranspose2d(ModuleOp):
    """``nn.ConvTranspose2d`` with zero padding (stride, padding, output_padding, dilation, groups)."""

    name = "ConvTranspose2d"

    @classmethod
    def from_call(cls, call: Call):
        m = call.target
        if m.padding_mode != "zeros":
            raise Unsupported("only zero padding is supported")
        return cls(m)

    def _apply(self, x, weight, bias):
        m = self.module
        return F.conv_transpose2d(x, weight, bias, m.stride, m.padding, m.output_padding, m.groups, m.dilation)

    def forward_linear(self, rows, in_bounds=(), relaxation=None):
        m = self.module
        bias = None if m.bias is None else m.bias[:, None, None]
        return affine_rows(rows[0], lambda x: self._apply(x, m.weight, None),
                           lambda x: self._apply(x, m.weight.abs(), None), bias)

    def ibp(self, iv):
        c, r = center_radius(iv)
        c2 = self.module(c)
        r2 = self._apply(r, self.module.weight.abs(), None)
        return c2 - r2, c2 + r2

    def backward(self, A, in_bounds=(), relaxation=None):
        m = self.module
        B, S = A.shape[:2]
        in_shape = tuple(self.in_shapes[0])
        A_in = in_slices(lambda a: F.conv2d(a, m.weight, None, m.stride, m.padding, m.dilation, m.groups),
                         A.reshape((B * S,) + tuple(self.out_shape)),
                         self.out_shape[0] * math.prod(m.kernel_size) * math.prod(in_shape[1:]))
        if tuple(A_in.shape[1:]) != in_shape:   # output_padding rows/columns that no input reaches
            A_in = A_in[..., :in_shape[1], :in_shape[2]]
        bias = None if m.bias is None else (A.sum((-2, -1)) * m.bias).sum(-1)
        return [A_in.reshape((B, S) + in_shape)], bias

    def sound_error(self, m):
        c = self.module
        v = self._apply(m, c.weight.abs(), None if c.bias is None else c.bias.abs())
        return c.weight.shape[0] // c.groups * math.prod(c.weight.shape[2:]) + 1, v
