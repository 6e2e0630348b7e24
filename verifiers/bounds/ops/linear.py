"""Linear layers: y = x W^T + b on the last dim (Gowal et al. 2018 IBP; Zhang et al. 2018 CROWN backward)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from certkit.verifiers.bounds.ops.base import ModuleOp, affine_rows, center_radius, register_op, sum_node


@register_op(modules=(nn.Linear,), onnx=("Gemm", "MatMul"))
class Linear(ModuleOp):
    """``nn.Linear`` (weights read live from the module, so bounds are differentiable w.r.t. them)."""

    name = "Linear"

    def ibp(self, iv):
        c, r = center_radius(iv)
        c2 = self.module(c)
        r2 = F.linear(r, self.module.weight.abs())
        return c2 - r2, c2 + r2

    def forward_linear(self, rows, in_bounds=(), relaxation=None):
        w = self.module.weight
        return affine_rows(rows[0], lambda x: F.linear(x, w), lambda x: F.linear(x, w.abs()), self.module.bias)

    def backward(self, A, in_bounds=(), relaxation=None):
        w, b = self.module.weight, self.module.bias
        bias = None
        if b is not None:  # sum_node(A * b) without the (B, S, *shape) temporary
            bias = A.matmul(b)
            bias = bias if bias.dim() == 2 else sum_node(bias)
        return [A.matmul(w)], bias

    def sound_error(self, m):
        # each output is a dot product of in_features terms plus the bias
        w, b = self.module.weight, self.module.bias
        v = F.linear(m, w.abs())
        return w.shape[1] + 1, v if b is None else v + b.abs()
