"""2-D convolution (CROWN backward via conv_transpose2d, as auto_LiRPA operators/convolution.py, or, for many rows on a
small layer, one matmul with the layer's transfer matrix)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from certkit.verifiers.bounds.ops.base import Call, ModuleOp, Unsupported, affine_rows, center_radius, register_op

MATMUL_FLOATS = 2 ** 22  # largest transfer matrix (floats) used instead of a transposed convolution
#: floats of work buffer (the im2col / col2im columns) that one convolution call over a batch of rows may use on a
#: CPU: larger batches go in slices (float64 convolutions over thousands of rows took 3-12x as long in one call as
#: in slices of 32-256 rows on a 2-core AMD EPYC VM, torch 2.13: cache and page-fault bound)
CONV_CALL_FLOATS = 2 ** 23


def in_slices(fn, x: torch.Tensor, per_row: int) -> torch.Tensor:
    """fn(x) for a convolution fn over a batch x (N, ...) whose work buffer holds ``per_row`` floats per row: on a CPU
    in slices of at most CONV_CALL_FLOATS floats of buffer, concatenated."""
    n = max(1, CONV_CALL_FLOATS // max(1, per_row))
    if x.device.type != "cpu" or x.shape[0] <= n:
        return fn(x)
    return torch.cat([fn(x[s:s + n]) for s in range(0, x.shape[0], n)])


def transfer_matrix(m: nn.Conv2d, out_shape: tuple, padding, out_padding, dtype) -> torch.Tensor:
    """The matrix M (prod(out_shape), C_in * H_in * W_in) with conv_transpose2d(A, m.weight, padding, out_padding)
    = A.flatten(1) @ M for coefficients A over ``out_shape`` (C_out, h, w): the transposed convolution of an identity,
    differentiable w.r.t. the weights. One matmul with it replaces a transposed convolution over many small images."""
    rows = math.prod(out_shape)
    eye = torch.eye(rows, dtype=dtype, device=m.weight.device).view((rows,) + tuple(out_shape))
    return F.conv_transpose2d(eye, m.weight, None, m.stride, padding, out_padding, m.groups, m.dilation).view(rows, -1)


def output_padding(in_hw, out_hw, stride, padding, dilation, kernel):
    """The output_padding that makes conv_transpose2d return exactly the input size ``in_hw``."""
    return tuple(in_hw[i] - ((out_hw[i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (kernel[i] - 1) + 1)
                 for i in range(2))


def zero_padded(m: nn.Module) -> nn.Module:
    """``m`` (a convolution module) when its padding is zeros given as numbers (or 'valid').

    Raises:
        Unsupported: another padding mode, or padding given as 'same'.
    """
    if m.padding_mode != "zeros" or isinstance(m.padding, str) and m.padding != "valid":
        raise Unsupported("only zero padding given as numbers is supported")
    return m


@register_op(modules=(nn.Conv2d,), onnx=("Conv",))
class Conv2d(ModuleOp):
    """``nn.Conv2d`` with zero padding given as numbers (stride, padding, dilation, groups)."""

    name = "Conv2d"

    @classmethod
    def from_call(cls, call: Call):
        return cls(zero_padded(call.target))

    def forward_linear(self, rows, in_bounds=(), relaxation=None):
        m = self.module

        def conv(x, w):
            return F.conv2d(x, w, None, m.stride, m.padding, m.dilation, m.groups)
        bias = None if m.bias is None else m.bias[:, None, None]
        return affine_rows(rows[0], lambda x: conv(x, m.weight), lambda x: conv(x, m.weight.abs()), bias)

    def ibp(self, iv):
        c, r = center_radius(iv)
        m = self.module
        c2 = m(c)
        r2 = F.conv2d(r, m.weight.abs(), None, m.stride, m.padding, m.dilation, m.groups)
        return c2 - r2, c2 + r2

    def backward(self, A, in_bounds=(), relaxation=None):
        m = self.module
        B, S = A.shape[:2]
        in_shape = self.in_shapes[0]
        op = output_padding(in_shape[1:], self.out_shape[1:], m.stride, m.padding, m.dilation, m.kernel_size)
        rows, cols = math.prod(self.out_shape), math.prod(in_shape)
        if rows * cols <= MATMUL_FLOATS and B * S >= 4 * rows:
            # many rows on a small layer: one matmul is several times faster than a convolution over a huge batch
            A_in = A.reshape(B * S, rows) @ transfer_matrix(m, self.out_shape, m.padding, op, A.dtype)
        else:
            A_in = in_slices(lambda a: F.conv_transpose2d(a, m.weight, None, m.stride, m.padding, op, m.groups,
                                                          m.dilation),
                             A.reshape((B * S,) + tuple(self.out_shape)), cols * math.prod(m.kernel_size))
        bias = None if m.bias is None else (A.sum((-2, -1)) * m.bias).sum(-1)
        return [A_in.reshape((B, S) + tuple(in_shape))], bias

    def sound_error(self, m):
        # each output is a dot product over (C_in / groups) x kh x kw inputs plus the bias
        c = self.module
        v = F.conv2d(m, c.weight.abs(), None if c.bias is None else c.bias.abs(), c.stride, c.padding, c.dilation,
                     c.groups)
        return math.prod(c.weight.shape[1:]) + 1, v
