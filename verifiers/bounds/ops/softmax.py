"""Softmax and LogSoftmax over one dim: interval bounds per output, tight for each output on a box (each output
increases with its own input and decreases with the others):
    softmax_i in [e^l_i / (e^l_i + sum_{j != i} e^u_j),  e^u_i / (e^u_i + sum_{j != i} e^l_j)],
and LogSoftmax the logarithms. The linear relaxation is these constants (no linear dependence on the input), so
CROWN still refines the bounds of the layers before; the outputs' sum-to-one is not used. Computed with the largest
input subtracted (no overflow); the sums of the other terms are moved by their rounding, and the results outward by
1e-6 (1 + |value|) for the float32 evaluation."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from certkit.verifiers.bounds.ops.base import Call, Op, Unsupported, register_op, sum_node

SHIFT = 1e-6


def _others(e: torch.Tensor, dim: int, low: bool) -> torch.Tensor:
    """sum_{j != i} e_j for every i (e >= 0), moved down (low) or up by its float64 rounding."""
    total = e.sum(dim, keepdim=True)
    rest = total - e
    err = 4 * e.shape[dim] * torch.finfo(e.dtype).eps * total
    return (rest - err).clamp(min=0) if low else rest + err


def softmax_interval(l, u, dim: int, log: bool):
    """Bounds of softmax (or log-softmax) over ``dim`` for inputs in the box [l, u]."""
    M = u.amax(dim, keepdim=True)
    el, eu = torch.exp(l - M), torch.exp(u - M)
    if log:
        lo = (l - M) - torch.log(el + _others(eu, dim, low=False))
        hi = (u - M) - torch.log(eu + _others(el, dim, low=True))
    else:
        lo = el / (el + _others(eu, dim, low=False))
        hi = eu / (eu + _others(el, dim, low=True))
        hi = hi.clamp(max=1.0)
    return lo - SHIFT * (1 + lo.abs()), hi + SHIFT * (1 + hi.abs())


@register_op(modules=(nn.Softmax, nn.LogSoftmax), functions=(torch.softmax, F.softmax, torch.log_softmax,
                                                             F.log_softmax),
             methods=("softmax", "log_softmax"), onnx=("Softmax", "LogSoftmax"))
class Softmax(Op):
    """softmax or log_softmax over one non-batch dim."""

    name = "Softmax"
    affine = False

    def __init__(self, dim: int, log: bool = False):
        super().__init__()
        if dim == 0:
            raise Unsupported("softmax over the batch dimension")
        self.dim, self.log = dim, log
        self.name = "LogSoftmax" if log else "Softmax"

    @classmethod
    def from_call(cls, call: Call):
        t = call.target
        log = isinstance(t, nn.LogSoftmax) or t in (torch.log_softmax, F.log_softmax) or t == "log_softmax"
        if call.kind == "module":
            dim = t.dim
        else:
            dim = call.args[1] if len(call.args) > 1 else call.kwargs.get("dim")
        if dim is None:
            raise Unsupported("softmax without an explicit dim")
        rank = len(call.shape) + 1
        return cls(int(dim) + rank if int(dim) < 0 else int(dim), log)

    def forward(self, x):
        return F.log_softmax(x, self.dim) if self.log else F.softmax(x, self.dim)

    def ibp(self, iv):
        return softmax_interval(iv[0], iv[1], self.dim, self.log)

    def relaxation(self, in_bounds, alpha=None, setup=None):
        return self.ibp(in_bounds[0])

    def backward(self, A, in_bounds=(), relaxation=None):
        lo, hi = relaxation if relaxation is not None else self.relaxation(in_bounds)
        lo, hi = lo.unsqueeze(1), hi.unsqueeze(1)
        return [None], sum_node(torch.relu(A) * lo - torch.relu(-A) * hi)
