"""Input-split branch and bound for low-dimensional inputs (as in VNN-COMP ACAS Xu solvers): split boxes along the
input dimension with the largest width x |d objective / dx| at the center, bound the batch of sub-boxes with CROWN,
falsify at their centers, until every leaf is refuted (``unsat``), a counterexample is validated (``sat``), the
time runs out (``timeout``) or the domain budget is spent (``unknown``).
"""
from __future__ import annotations

import torch

from certkit.verifiers.bounds import BoundedModule
from certkit.verifiers.perturbation import Box
from certkit.verifiers.vnncomp import InstanceResult, validate_witness
from certkit.verifiers.vnnlib import Term


def objective(net: torch.nn.Module, C: torch.Tensor, d: torch.Tensor, sample_shape):
    """x (N, n_in) -> max_j (C_j y - d_j): < 0 inside the unsafe region (minimized by PGD)."""
    def obj(x):
        y = net(x.reshape((x.shape[0],) + tuple(sample_shape))).reshape(x.shape[0], -1)
        return (y @ C.T - d).max(1).values if C.shape[0] else torch.full((x.shape[0],), -1.0, dtype=x.dtype)
    return obj


def refuted(bm: BoundedModule, term: Term, lo: torch.Tensor, hi: torch.Tensor, method: str,
             time_budget: float | None = None) -> torch.Tensor:
    """(N,) bool: the unsafe conjunction C y <= d is infeasible on each box (some row has lb > 0)."""
    N = lo.shape[0]
    if term.C.shape[0] == 0:
        return torch.zeros(N, dtype=torch.bool)
    shape = bm.graph.input_shape
    C = torch.tensor(term.C, dtype=torch.float64)[None].expand(N, -1, -1)
    pert = Box(lo.reshape((N,) + shape), hi.reshape((N,) + shape))
    with torch.enable_grad() if method == "alpha-CROWN" else torch.no_grad():
        lb, _ = bm.compute_bounds(pert, C, method, bound_upper=False, time_budget=time_budget)
    return ((lb.detach() - torch.tensor(term.d)) > 0).any(1)


def bisect(lo: torch.Tensor, hi: torch.Tensor, dim: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both halves of each box (N, n) split at the middle of dimension dim (N,): (lo, hi) of the 2N children."""
    mid = ((lo + hi) / 2).gather(1, dim[:, None])
    left_hi, right_lo = hi.clone(), lo.clone()
    left_hi.scatter_(1, dim[:, None], mid)
    right_lo.scatter_(1, dim[:, None], mid)
    return torch.cat([lo, right_lo]), torch.cat([left_hi, hi])


def input_split_bab(bm, net32, onnx_model, term, dl, max_domains, batch, split=bisect):
    """Input-split BaB on one disjunct ``term`` until the Deadline ``dl``. Returns ("unsat"|"timeout"|"unknown"|
    InstanceResult(sat), domains). ``split(lo, hi, dim) -> (lo, hi)`` makes the children of the boxes to split; a
    sound one must cover every box with its children (:func:`bisect`)."""
    lo, hi = torch.tensor(term.x_L)[None], torch.tensor(term.x_U)[None]
    C64, d64 = torch.tensor(term.C), torch.tensor(term.d)
    C32, d32 = C64.float(), d64.float()
    obj32 = objective(net32, C32, d32, onnx_model.sample_shape)
    obj64 = objective(bm.graph.forward, C64, d64, onnx_model.sample_shape)
    width0 = (hi - lo).clamp(min=1e-12)
    domains = 0
    while lo.shape[0]:
        if dl.passed():
            return "timeout", domains
        if domains >= max_domains:
            return "unknown", domains
        lo_b, hi_b, lo, hi = lo[:batch], hi[:batch], lo[batch:], hi[batch:]
        domains += lo_b.shape[0]
        with torch.no_grad():
            centers = (lo_b + hi_b) / 2
            cand = obj32(centers.float())
        for k in torch.nonzero(cand <= 1e-4).flatten()[:8].tolist():
            found = validate_witness(onnx_model, term, centers[k].numpy())
            if found:
                return InstanceResult("sat", 0.0, x=found[0], y=found[1], method="input-split BaB"), domains
        done = refuted(bm, term, lo_b, hi_b, "CROWN")
        lo_b, hi_b = lo_b[~done], hi_b[~done]
        if not lo_b.shape[0]:
            continue
        # split the remaining boxes along argmax of width x |d objective / dx| at the center
        c = ((lo_b + hi_b) / 2).requires_grad_(True)
        with torch.enable_grad():
            g, = torch.autograd.grad(obj64(c).sum(), c)
        score = (hi_b - lo_b) * (g.abs() + 1e-9 * width0)
        children_lo, children_hi = split(lo_b, hi_b, score.argmax(1))
        lo, hi = torch.cat([children_lo, lo]), torch.cat([children_hi, hi])
    return "unsat", domains


# ------------------------------------------------------------------ benchmark folders
