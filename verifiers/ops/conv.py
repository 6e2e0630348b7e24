"""Convolution, average pooling and zero padding (CROWN backward via conv_transpose2d, auto_LiRPA
operators/convolution.py and pooling.py)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from certkit.verifiers.ops.base import ModuleOp, Op, center_radius


def _output_padding(in_hw, out_hw, stride, padding, dilation, kernel):
    return tuple(in_hw[i] - ((out_hw[i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (kernel[i] - 1) + 1)
                 for i in range(2))


class Conv2d(ModuleOp):
    """``nn.Conv2d`` with zero padding (stride, padding, dilation, groups)."""

    name = "Conv2d"

    def ibp(self, iv):
        c, r = center_radius(iv)
        m = self.module
        c2 = m(c)
        r2 = F.conv2d(r, m.weight.abs(), None, m.stride, m.padding, m.dilation, m.groups)
        return c2 - r2, c2 + r2

    def backward(self, A, *_):
        m = self.module
        B, S = A.shape[:2]
        in_shape = self.in_shapes[0]
        op = _output_padding(in_shape[1:], self.out_shape[1:], m.stride, m.padding, m.dilation, m.kernel_size)
        A_in = F.conv_transpose2d(A.reshape((B * S,) + tuple(self.out_shape)), m.weight, None, m.stride, m.padding,
                                  op, m.groups, m.dilation)
        bias = None if m.bias is None else (A.sum((-2, -1)) * m.bias).sum(-1)
        return [A_in.reshape((B, S) + tuple(in_shape))], bias


class AvgPool2d(ModuleOp):
    """``nn.AvgPool2d`` without ceil_mode: a fixed linear map with non-negative weights."""

    name = "AvgPool2d"

    def __init__(self, module: nn.AvgPool2d):
        super().__init__(module)
        pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)
        self.k, self.s, self.p = pair(module.kernel_size), pair(module.stride or module.kernel_size), pair(module.padding)
        self._divisor = None

    def ibp(self, iv):
        return self.module(iv[0]), self.module(iv[1])

    def divisor(self, device, dtype):
        """Number of cells averaged at each output position (kh*kw unless count_include_pad=False)."""
        if self._divisor is None or self._divisor.device != device:
            if self.module.count_include_pad or self.p == (0, 0):
                self._divisor = torch.full((1, 1), float(self.k[0] * self.k[1]), device=device, dtype=dtype)
            else:
                ones = torch.ones((1, 1) + tuple(self.in_shapes[0][1:]), device=device, dtype=dtype)
                self._divisor = F.avg_pool2d(ones, self.k, self.s, self.p, count_include_pad=True) \
                    * (self.k[0] * self.k[1]) / F.avg_pool2d(ones, self.k, self.s, self.p, count_include_pad=False)
                self._divisor = self._divisor[0, 0]
        return self._divisor

    def backward(self, A, *_):
        B, S = A.shape[:2]
        C = self.out_shape[0]
        in_shape = self.in_shapes[0]
        weight = torch.ones((C, 1) + self.k, device=A.device, dtype=A.dtype)
        op = _output_padding(in_shape[1:], self.out_shape[1:], self.s, self.p, (1, 1), self.k)
        scaled = (A / self.divisor(A.device, A.dtype)).reshape((B * S,) + tuple(self.out_shape))
        A_in = F.conv_transpose2d(scaled, weight, None, self.s, self.p, op, C)
        return [A_in.reshape((B, S) + tuple(in_shape))], None


class ZeroPad2d(Op):
    """``F.pad(x, (left, right, top, bottom))`` with zeros (used for asymmetric ONNX conv padding)."""

    name = "Pad"

    def __init__(self, pad: tuple[int, ...]):
        super().__init__()
        if len(pad) != 4 or any(p < 0 for p in pad):
            raise ValueError("only non-negative 2-D zero padding (left, right, top, bottom) is supported")
        self.pad = tuple(int(p) for p in pad)

    def forward(self, x):
        return F.pad(x, self.pad)

    def ibp(self, iv):
        return F.pad(iv[0], self.pad), F.pad(iv[1], self.pad)

    def backward(self, A, *_):
        left, right, top, bottom = self.pad
        H, W = A.shape[-2:]
        return [A[..., top:H - bottom, left:W - right]], None
