"""A linear map with constant weights given as arguments, y = x W^T + b on the last dim: ``F.linear(x, W, b)`` and
``x @ W`` with a constant W (MatMul with one constant operand, matmul.py; attention's projections). Same rules as
nn.Linear (linear.py): IBP center/radius (Gowal et al. 2018), backward A W (Zhang et al. 2018). W and b are the
values of the example run (no gradient flows to them: for training through bounds use nn.Linear)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from certkit.verifiers.bounds.ops.base import Call, Op, Unsupported, center_radius, register_op, sum_node


@register_op(functions=(F.linear,), name="LinearConst")
class LinearConst(Op):
    """``F.linear(x, W, b)`` with W (out, in) and b (out,) that do not depend on the input."""

    name = "LinearConst"

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        super().__init__()
        self.weight = weight.detach()
        self.bias = None if bias is None else bias.detach()

    @classmethod
    def from_call(cls, call: Call) -> Op:
        args = list(call.args) + [call.kwargs[k] for k in ("weight", "bias") if k in call.kwargs]
        if len(call.data_args) != 1 or not call.is_data(args[0]):
            raise Unsupported("F.linear with a weight or bias computed from the input (use torch.matmul for a "
                              "product of two computed tensors)")
        w = call.const(args[1])
        b = call.const(args[2]) if len(args) > 2 and args[2] is not None else None
        if w.dim() != 2 or (b is not None and b.shape != w.shape[:1]):
            raise Unsupported(f"F.linear with weight {tuple(w.shape)} and bias "
                              f"{None if b is None else tuple(b.shape)} (expected (out, in) and (out,))")
        return cls(w, b)

    def forward(self, x):
        return F.linear(x, self.weight.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))

    def ibp(self, iv):
        c, r = center_radius(iv)
        c2 = self.forward(c)
        r2 = F.linear(r, self.weight.to(r.dtype).abs())
        return c2 - r2, c2 + r2

    def backward(self, A, in_bounds=(), relaxation=None):
        w = self.weight.to(A.dtype)
        bias = None
        if self.bias is not None:
            bias = A.matmul(self.bias.to(A.dtype))
            bias = bias if bias.dim() == 2 else sum_node(bias)
        return [A.matmul(w)], bias

    def sound_error(self, m):
        v = F.linear(m, self.weight.to(m.dtype).abs())
        return self.weight.shape[1] + 1, v if self.bias is None else v + self.bias.to(m.dtype).abs()
