"""2-D average pooling: a fixed linear map with non-negative weights (as auto_LiRPA operators/pooling.py)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from certkit.verifiers.bounds.ops.base import Call, ModuleOp, Unsupported, register_op
from certkit.verifiers.bounds.ops.conv import output_padding


@register_op(modules=(nn.AvgPool2d,), onnx=("AveragePool",))
class AvgPool2d(ModuleOp):
    """``nn.AvgPool2d`` without ceil_mode (count_include_pad either way)."""

    name = "AvgPool2d"

    def __init__(self, module: nn.AvgPool2d):
        super().__init__(module)
        pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)
        self.k, self.s = pair(module.kernel_size), pair(module.stride or module.kernel_size)
        self.p = pair(module.padding)
        self._divisor = None

    @classmethod
    def from_call(cls, call: Call):
        if call.target.ceil_mode:
            raise Unsupported("AvgPool2d with ceil_mode is not supported")
        return cls(call.target)

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

    def backward(self, A, in_bounds=(), relaxation=None):
        B, S = A.shape[:2]
        C = self.out_shape[0]
        in_shape = self.in_shapes[0]
        weight = torch.ones((C, 1) + self.k, device=A.device, dtype=A.dtype)
        op = output_padding(in_shape[1:], self.out_shape[1:], self.s, self.p, (1, 1), self.k)
        scaled = (A / self.divisor(A.device, A.dtype)).reshape((B * S,) + tuple(self.out_shape))
        A_in = F.conv_transpose2d(scaled, weight, None, self.s, self.p, op, C)
        return [A_in.reshape((B, S) + tuple(in_shape))], None

    def sound_error(self, m):
        # a sum of kh x kw terms, then one division (weights >= 0, so |M| m = the pooled m)
        return self.k[0] * self.k[1] + 1, self.module(m)
