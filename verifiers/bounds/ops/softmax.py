"""Softmax and LogSoftmax over one dim: interval bounds per output, tight for each output on a box (each output
increases with its own input and decreases with the others):
    softmax_i in [e^l_i / (e^l_i + sum_{j != i} e^u_j),  e^u_i / (e^u_i + sum_{j != i} e^l_j)],
and LogSoftmax the logarithms. The linear relaxation is these constants (no linear dependence on the input), so
CROWN still refines the bounds of the layers before; the outputs' sum-to-one is not used. Computed as sigmoids and
softplus of logsumexps (finite for inputs of any size: IBP widths in attention reach 1e7), the results moved
outward by 1e-6 (1 + |value|) for the float32 evaluation and the few ulps of float64 rounding."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from certkit.verifiers.bounds.ops.base import Call, Op, Unsupported, register_op, sum_node

SHIFT = 1e-6


def _lse_others(v: torch.Tensor, dim: int) -> torch.Tensor:
    """log sum_{j != i} exp(v_j) for every i along ``dim`` (-inf when there is no other j): a logsumexp with the
    i-th entry masked out, so no exponential overflows or underflows to 0/0 whatever the widths."""
    n = v.shape[dim]
    v = v.movedim(dim, -1)
    masked = v.unsqueeze(-2).expand(v.shape + (n,)).clone()              # [..., i, j] = v_j
    masked.diagonal(dim1=-2, dim2=-1).fill_(-torch.inf)
    return torch.logsumexp(masked, -1).movedim(-1, dim)


def softmax_interval(l, u, dim: int, log: bool):
    """Bounds of softmax (or log-softmax) over ``dim`` for inputs in the box [l, u]:
    softmax_i in [sigmoid(l_i - lse_{j != i} u_j), sigmoid(u_i - lse_{j != i} l_j)] and log-softmax_i in
    [-softplus(lse_{j != i} u_j - l_i), -softplus(lse_{j != i} l_j - u_i)] (the same fractions, written so that
    they stay finite for inputs of any size)."""
    ou, ol = _lse_others(u, dim), _lse_others(l, dim)
    if log:
        lo, hi = -F.softplus(ou - l), -F.softplus(ol - u)
    else:
        lo, hi = torch.sigmoid(l - ou), torch.sigmoid(u - ol)
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
