"""Softmax and LogSoftmax over one dim: interval bounds per output, tight for each output on a box (each output
increases with its own input and decreases with the others):
    softmax_i in [e^l_i / (e^l_i + sum_{j != i} e^u_j),  e^u_i / (e^u_i + sum_{j != i} e^l_j)],
and LogSoftmax the logarithms, computed as sigmoids and softplus of logsumexps (finite for inputs of any size: IBP
widths in attention reach 1e7), the results moved outward by 1e-6 (1 + |value|) for the float32 evaluation and the
few ulps of float64 rounding. CROWN's relaxation of Softmax is linear, per output and side the closer of two
families (:func:`softmax_lines`): the tangent planes of Wei et al.'s convex and concave bounds (AISTATS 2023) and the
lines through the reciprocal of a sum of exponentials (Shi et al. ICLR 2020); alpha-CROWN moves the tangent points
and mixes the two. LogSoftmax keeps the interval bounds as constant lines."""
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


def _outward(lines, l, u, ok, lo_c, hi_c):
    """Lines (aL, cL, aU, cU) (dim last) with their constants moved outward by SHIFT x (1 + the magnitude of the line
    over the box [l, u]); where ``ok`` (broadcastable to cL) is False, the constants lo_c / hi_c instead."""
    aL, cL, aU, cU = lines
    mag = lambda a: (a.abs() * torch.maximum(l.abs(), u.abs()).unsqueeze(-2)).sum(-1)  # noqa: E731
    cL = cL - SHIFT * (1 + cL.abs() + mag(aL))
    cU = cU + SHIFT * (1 + cU.abs() + mag(aU))
    keep = ok.unsqueeze(-1)
    zero = torch.zeros_like(aL)
    return (torch.where(keep, aL, zero), torch.where(ok, cL, lo_c), torch.where(keep, aU, zero),
            torch.where(ok, cU, hi_c))


def softmax_lines_lse(l, u, dim: int, x0=None, x0_upper=None):
    """Linear bounds of softmax over ``dim`` on the box [l, u]: tangent planes of the convex lower bound and of the
    concave upper bound of Wei et al. (AISTATS 2023, "Convex bounds on the softmax function with applications to
    robustness verification"; their exponential-reciprocal lower bound and log-sum-exp upper bound), taken at x0
    (default: the middle of the box; any point of the box is sound) and x0_upper (default: x0); x0 may carry more
    leading dims than l and u (alpha-CROWN's one point per specification row), the lines then carry them too.

        lower: softmax_k(x) >= L_k(x) = e^{x_k} / sum_j chord_j(x_j), chord_j the chord of exp on [l_j, u_j]
               (>= exp there, so the quotient is smaller). L_k is convex: e^y / s is jointly convex for s > 0 (its
               Hessian e^y / s^3 [[s^2, -s], [-s, 2]] is positive definite) and (x_k, sum_j chord_j(x_j)) is affine
               in x; its tangent plane at x0 lies below it.
        upper: softmax_k = exp(-t_k) with t_k = lse(x) - x_k in [-log p_bar_k, -log p_under_k] on the box (p_under,
               p_bar: :func:`softmax_interval`); exp(-t) is convex, so its chord a_k - c_k t lies above it there,
               and U_k(x) = a_k - c_k (lse(x) - x_k) is concave (lse is convex, c_k >= 0); its tangent plane at x0
               lies above it.

    Returns (aL, cL, aU, cU), dim moved last: softmax_i(z) >= sum_j aL[..., i, j] z_j + cL[..., i] (aL (..., n, n),
    cL (..., n)) and <= with aU, cU. A softmax whose inputs span more than WIDE (the tangent planes then say less
    than the constants) gets the constants of :func:`softmax_interval` instead. Constants moved outward by SHIFT x
    (1 + the magnitude of the line over the box) for float32 evaluation and float64 rounding."""
    lo_c, hi_c = softmax_interval(l, u, dim, log=False)
    l, u, lo_c, hi_c = (t.movedim(dim, -1) for t in (l, u, lo_c, hi_c))
    x0 = (l + u) / 2 if x0 is None else x0.movedim(dim, -1)
    x0u = x0 if x0_upper is None else x0_upper.movedim(dim, -1)
    ok = (u - l).amax(-1, keepdim=True) <= WIDE                             # (..., 1): the lines of this softmax
    eye = torch.eye(l.shape[-1], dtype=l.dtype, device=l.device)
    m = u.amax(-1, keepdim=True)                                            # shift: exponentials <= 1
    ls, us, xs = l - m, u - m, x0 - m
    el, eu = torch.exp(ls), torch.exp(us)
    w = us - ls
    tiny = 1e-7 if l.dtype == torch.float32 else 1e-12
    kappa = torch.where(w > tiny, (eu - el) / w.clamp(min=tiny), torch.zeros_like(w))   # chord slope (0: constant)
    se0 = (eu + kappa * (xs - us)).sum(-1, keepdim=True)                    # sum of the chords at x0 (>= 1/2)
    L0 = torch.exp(xs) / se0
    aL = torch.diag_embed(L0) - (L0 / se0).unsqueeze(-1) * kappa.unsqueeze(-2)
    cL = L0 - (aL * x0.unsqueeze(-2)).sum(-1)
    p_lo = torch.sigmoid(l - _lse_others(u, -1)).clamp(min=1e-30)           # softmax_interval before its shift
    p_hi = torch.sigmoid(u - _lse_others(l, -1)).clamp(max=1.0)
    log_lo, log_hi = torch.log(p_lo), torch.log(p_hi)
    chord = (log_hi - log_lo) > tiny
    c = torch.where(chord, (p_hi - p_lo) / (log_hi - log_lo).clamp(min=tiny), torch.zeros_like(p_hi))
    a = p_hi - c * log_hi
    U0 = a + c * torch.log_softmax(x0u, -1)
    aU = c.unsqueeze(-1) * (eye - torch.softmax(x0u, -1).unsqueeze(-2))
    cU = U0 - (aU * x0u.unsqueeze(-2)).sum(-1)
    return _outward((aL, cL, aU, cU), l, u, ok, lo_c, hi_c)


def softmax_lines_reciprocal(l, u, dim: int):
    """Linear bounds of softmax over ``dim`` on the box [l, u] through the reciprocal (Shi et al. ICLR 2020 bound
    softmax through exp, sums and the reciprocal; written here as one chain): softmax_i = 1 / S_i with
    S_i = sum_j exp(z_j - z_i).

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
    return _outward((aL, cL, aU, cU), l, u, ok, lo_c, hi_c)


def softmax_lines(l, u, dim: int):
    """CROWN's lines of softmax over ``dim`` on the box [l, u]: per output and side, the line of
    :func:`softmax_lines_lse` or of :func:`softmax_lines_reciprocal` that is closer to softmax on average over the box
    (the larger lower / the smaller upper line at the box's centre: a linear function's mean over a box is its value
    at the centre). Neither family dominates: the log-sum-exp planes are tighter inside attention, the reciprocal's
    on a classifier's output probabilities. Returns (aL, cL, aU, cU) as they do, and the choice (pickL, pickU) (bool
    (..., n), dim last: True where the log-sum-exp line is taken)."""
    lse, rec = softmax_lines_lse(l, u, dim), softmax_lines_reciprocal(l, u, dim)
    c = ((l + u) / 2).movedim(dim, -1).unsqueeze(-2)
    at = lambda a, b: (a * c).sum(-1) + b  # noqa: E731  the line's value at the centre
    pickL = at(lse[0], lse[1]) >= at(rec[0], rec[1])
    pickU = at(lse[2], lse[3]) <= at(rec[2], rec[3])
    aL, aU = (torch.where(p.unsqueeze(-1), a, b) for p, a, b in ((pickL, lse[0], rec[0]), (pickU, lse[2], rec[2])))
    cL, cU = torch.where(pickL, lse[1], rec[1]), torch.where(pickU, lse[3], rec[3])
    return (aL, cL, aU, cU), (pickL, pickU)


@register_op(modules=(nn.Softmax, nn.LogSoftmax), functions=(torch.softmax, F.softmax, torch.log_softmax,
                                                             F.log_softmax),
             methods=("softmax", "log_softmax"), onnx=("Softmax", "LogSoftmax"))
class Softmax(Op):
    """softmax or log_softmax over one non-batch dim."""

    name = "Softmax"
    affine = False
    branchable = True   # GenBaB (Shi et al. 2024): an input interval split at its midpoint, both halves relaxed anew
    n_alpha = 4   # tangent points of the lower / upper log-sum-exp planes, their weights against the reciprocal's lines

    def __init__(self, dim: int, log: bool = False):
        super().__init__()
        if dim == 0:
            raise Unsupported("softmax over the batch dimension")
        self.dim, self.log = dim, log
        self.name = "LogSoftmax" if log else "Softmax"
        self.n_alpha = 0 if log else 4

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

    def alpha_init(self, in_bounds):
        """Tangent points at the middle of the box, weights 1 on the lines CROWN picks (0 on the others)."""
        l, u = in_bounds[0]
        pickL, pickU = (p.to(l.dtype).movedim(-1, self.dim) for p in softmax_lines(l, u, self.dim)[1])
        half = torch.full_like(l, 0.5)
        return torch.stack([half, half, pickL, pickU])

    def relaxation(self, in_bounds, alpha=None, setup=None):
        """Softmax: the lines of :func:`softmax_lines`; with alpha (4, B, S, *shape), per specification row, the
        log-sum-exp planes at the tangent points l + alpha[0|1] (u - l) mixed with the reciprocal's lines with
        weights alpha[2|3] (a convex combination of lines that hold holds); LogSoftmax: the interval bounds as
        constant lines."""
        l, u = in_bounds[0]
        if self.log:
            return softmax_interval(l, u, self.dim, True)
        if alpha is None:
            return softmax_lines(l, u, self.dim)[0]
        rec = (t.unsqueeze(1) for t in (setup if setup is not None else self.relaxation_setup(in_bounds)))
        l, u = l.unsqueeze(1), u.unsqueeze(1)
        a = alpha.clamp(0, 1)
        lse = softmax_lines_lse(l, u, self.dim + 1, l + a[0] * (u - l), l + a[1] * (u - l))
        wL, wU = (w.movedim(self.dim + 1, -1) for w in (a[2], a[3]))
        mix = [w.unsqueeze(-1) if k in (0, 2) else w for k, w in enumerate((wL, wL, wU, wU))]
        return tuple(m * x + (1 - m) * y for m, x, y in zip(mix, lse, rec))

    def relaxation_setup(self, in_bounds):
        """The reciprocal's lines (they do not depend on alpha), for every alpha-CROWN step."""
        return None if self.log else softmax_lines_reciprocal(*in_bounds[0], self.dim)

    def branch_scores(self, A, l, u, in_bounds=None, k=0):
        """Split scores of the inputs (like l), -inf where narrower than 1e-4: an input's width times the output
        coefficients |A| summed over its softmax group (every output of the group depends on it)."""
        s = (u - l) * A.abs().sum(self.dim, keepdim=True)
        return torch.where(self.splittable(l, u), s + 1e-12, torch.full_like(l, -torch.inf))

    def backward(self, A, in_bounds=(), relaxation=None):
        r = relaxation if relaxation is not None else self.relaxation(in_bounds)
        if self.log:
            lo, hi = r[0].unsqueeze(1), r[1].unsqueeze(1)
            return [None], sum_node(torch.relu(A) * lo - torch.relu(-A) * hi)
        aL, cL, aU, cU = r
        if aL.dim() == A.dim():                                            # not per spec row: the same for each
            aL, cL, aU, cU = (t.unsqueeze(1) for t in r)
        d = self.dim + 1                                                   # the softmax dim of A (B, S, ...)
        Ap, An = torch.relu(A).movedim(d, -1), (-torch.relu(-A)).movedim(d, -1)
        A_z = (Ap.unsqueeze(-2) @ aL + An.unsqueeze(-2) @ aU).squeeze(-2)  # sum_i A_i a[i, j]
        bias = sum_node((Ap * cL + An * cU).movedim(-1, d))
        return [A_z.movedim(-1, d)], bias
