"""Softmax and LogSoftmax over one dim: interval bounds per output, tight for each output on a box (each output
increases with its own input and decreases with the others):
    softmax_i in [e^l_i / (e^l_i + sum_{j != i} e^u_j),  e^u_i / (e^u_i + sum_{j != i} e^l_j)],
and LogSoftmax the logarithms. CROWN's relaxation of Softmax is linear (:func:`softmax_lines`: the reciprocal of a
sum of exponentials of differences); LogSoftmax keeps the interval bounds as constant lines. The outputs'
sum-to-one is not used. Computed as sigmoids and
softplus of logsumexps (finite for inputs of any size: IBP widths in attention reach 1e7), the results moved
outward by 1e-6 (1 + |value|) for the float32 evaluation and the few ulps of float64 rounding."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from certkit.verifiers.bounds.ops.base import Call, Op, Unsupported, register_op, sum_node

SHIFT = 1e-6
#: largest spread of z_j - z_i (and of its upper end) for which softmax gets linear bounds instead of constants
WIDE = 30.0


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


def softmax_lines(l, u, dim: int):
    """Linear bounds of softmax over ``dim`` on the box [l, u] (Shi et al. ICLR 2020 bound softmax through exp,
    sums and the reciprocal; written here as one chain): softmax_i = 1 / S_i with S_i = sum_j exp(z_j - z_i).

        lower: 1/S >= 2/S0 - S/S0^2 (tangent at S0 = sqrt(S_l S_u)), and S <= sum_j chord of exp(w_ij) on
               [l_j - u_i, u_j - l_i];
        upper: 1/S <= 1/S_l + 1/S_u - S/(S_l S_u) (chord on [S_l, S_u]), and S >= sum_j tangent of exp(w_ij) at the
               middle of its interval.

    Returns (aL, cL, aU, cU), dim moved last: softmax_i(z) >= sum_j aL[..., i, j] z_j + cL[..., i] (aL (..., n, n),
    cL (..., n)) and <= with aU, cU. An output whose differences span more than WIDE (the exponentials would
    overflow or the lines say nothing) gets the constants of :func:`softmax_interval` instead. Constants moved
    outward by SHIFT x (1 + the magnitude of the line over the box) for float32 evaluation and float64 rounding."""
    lo_c, hi_c = softmax_interval(l, u, dim, log=False)
    l, u, lo_c, hi_c = (t.movedim(dim, -1) for t in (l, u, lo_c, hi_c))
    n = l.shape[-1]
    eye = torch.eye(n, dtype=torch.bool, device=l.device)
    wl = (l.unsqueeze(-2) - u.unsqueeze(-1)).masked_fill(eye, 0.0)          # [..., i, j] = l_j - u_i
    wu = (u.unsqueeze(-2) - l.unsqueeze(-1)).masked_fill(eye, 0.0)          # u_j - l_i
    ok = ((wu - wl).amax(-1) <= WIDE) & (wu.amax(-1) <= WIDE)               # (..., n) outputs with lines
    wl, wu = wl.clamp(-WIDE, WIDE), wu.clamp(-WIDE, WIDE)
    el, eu = torch.exp(wl), torch.exp(wu)
    width = wu - wl
    k = torch.where(width > 1e-12, (eu - el) / width.clamp(min=1e-12), el).masked_fill(eye, 0.0)
    S_l, S_u = el.sum(-1), eu.sum(-1)                                        # the self term is exp(0) = 1
    S0 = torch.sqrt(S_l * S_u)
    g = 1.0 / S0 ** 2
    aL = -g.unsqueeze(-1) * k
    aL = aL - torch.diag_embed(aL.sum(-1))                                   # z_j - z_i: -sum_j on the diagonal
    cL = 2.0 / S0 - g * (el - k * wl).sum(-1)
    t = ((wl + wu) / 2).masked_fill(eye, 0.0)
    et = torch.exp(t)
    h = 1.0 / (S_l * S_u)
    aU = -h.unsqueeze(-1) * et.masked_fill(eye, 0.0)
    aU = aU - torch.diag_embed(aU.sum(-1))
    cU = 1.0 / S_l + 1.0 / S_u - h * (et * (1.0 - t)).sum(-1)
    mag = lambda a: (a.abs() * torch.maximum(l.abs(), u.abs()).unsqueeze(-2)).sum(-1)  # noqa: E731
    cL = cL - SHIFT * (1 + cL.abs() + mag(aL))
    cU = cU + SHIFT * (1 + cU.abs() + mag(aU))
    keep = ok.unsqueeze(-1)
    zero = torch.zeros_like(aL)
    return (torch.where(keep, aL, zero), torch.where(ok, cL, lo_c), torch.where(keep, aU, zero),
            torch.where(ok, cU, hi_c))


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
        """Softmax: the lines of :func:`softmax_lines`; LogSoftmax: the interval bounds as constant lines."""
        if self.log:
            return self.ibp(in_bounds[0])
        return softmax_lines(*in_bounds[0], self.dim)

    def backward(self, A, in_bounds=(), relaxation=None):
        r = relaxation if relaxation is not None else self.relaxation(in_bounds)
        if self.log:
            lo, hi = r[0].unsqueeze(1), r[1].unsqueeze(1)
            return [None], sum_node(torch.relu(A) * lo - torch.relu(-A) * hi)
        aL, cL, aU, cU = (t.unsqueeze(1) for t in r)                       # one per spec row
        d = self.dim + 1                                                   # the softmax dim of A (B, S, ...)
        Ap, An = torch.relu(A).movedim(d, -1), (-torch.relu(-A)).movedim(d, -1)
        A_z = (Ap.unsqueeze(-2) @ aL + An.unsqueeze(-2) @ aU).squeeze(-2)  # sum_i A_i a[i, j]
        bias = sum_node((Ap * cL + An * cU).movedim(-1, d))
        return [A_z.movedim(-1, d)], bias
