"""1-D convolution over (C, L) signals (``nn.Conv1d``; ONNX ``Conv`` with rank-3 weights): CROWN backward via
conv_transpose1d (the 1-D case of conv.py), IBP by centre and radius (the radius through |W|)."""
from __future__ import annotations

import math

import torch.nn.functional as F
from torch import nn

from certkit.verifiers.bounds.ops.base import Call, ModuleOp, center_radius, register_op
from certkit.verifiers.bounds.ops.conv import zero_padded


@register_op(modules=(nn.Conv1d,))
class Conv1d(ModuleOp):
    """``nn.Conv1d`` with zero padding given as a number (stride, padding, dilation, groups)."""

    name = "Conv1d"

    @classmethod
    def from_call(cls, call: Call):
        return cls(zero_padded(call.target))

    def ibp(self, iv):
        c, r = center_radius(iv)
        m = self.module
        r2 = F.conv1d(r, m.weight.abs(), None, m.stride, m.padding, m.dilation, m.groups)
        c2 = m(c)
        return c2 - r2, c2 + r2

    def backward(self, A, in_bounds=(), relaxation=None):
        m = self.module
        B, S = A.shape[:2]
        in_shape = self.in_shapes[0]
        L_in, L_out = in_shape[1], self.out_shape[1]
        # the output_padding that makes the transposed convolution return exactly L_in
        op = L_in - ((L_out - 1) * m.stride[0] - 2 * m.padding[0] + m.dilation[0] * (m.kernel_size[0] - 1) + 1)
        A_in = F.conv_transpose1d(A.reshape((B * S,) + tuple(self.out_shape)), m.weight, None, m.stride, m.padding,
                                  op, m.groups, m.dilation)
        bias = None if m.bias is None else (A.sum(-1) * m.bias).sum(-1)
        return [A_in.reshape((B, S) + tuple(in_shape))], bias

    def sound_error(self, m):
        # each output is a dot product over (C_in / groups) x k inputs plus the bias
        c = self.module
        v = F.conv1d(m, c.weight.abs(), None if c.bias is None else c.bias.abs(), c.stride, c.padding, c.dilation,
                     c.groups)
        return math.prod(c.weight.shape[1:]) + 1, v
