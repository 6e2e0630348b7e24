"""Input-split branch and bound for low-dimensional inputs (as in VNN-COMP ACAS Xu solvers): bound a batch of
sub-boxes with CROWN, falsify at their centers and at the minimisers of their linear bounds, split each open box
along the input dimension with the largest width x |gradient| at its center, until every leaf is refuted (``unsat``), a
counterexample is validated (``sat``), the time runs out (``timeout``) or the domain budget is spent (``unknown``).
"""
from __future__ import annotations

import time

import torch

from certkit.common.errors import CertkitError
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


def candidate_checker(net32, onnx_model, term: Term, method: str, tries: int = 8):
    """x (N, *input) float64 -> a validated ``sat`` InstanceResult (labelled ``method``) or None: the ``tries``
    points with the lowest float32 objective max_r (C_r y - d_r) <= 1e-4 are replayed exactly
    (verifiers/vnncomp.py validate_witness)."""
    obj = objective(net32, torch.tensor(term.C, dtype=torch.float32), torch.tensor(term.d, dtype=torch.float32),
                    onnx_model.sample_shape)

    def check(x: torch.Tensor):
        if x.shape[0] == 0:
            return None
        with torch.no_grad():
            val = obj(x.reshape(x.shape[0], -1).float())
        for k in torch.argsort(val)[:tries].tolist():
            if float(val[k]) > 1e-4:
                break
            found = validate_witness(onnx_model, term, x[k].reshape(-1).numpy())
            if found:
                return InstanceResult("sat", 0.0, x=found[0], y=found[1], method=method)
        return None
    return check


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


def crown_boxes(bm: BoundedModule, term: Term, lo: torch.Tensor, hi: torch.Tensor):
    """CROWN on N boxes (N, n) for the rows of ``term``: lower bounds (N, S) of C y and the input coefficients
    A_in (N, S, n) of the linear bounds (lb = min over the box of A_in x + bias)."""
    N = lo.shape[0]
    shape = tuple(bm.graph.input_shape)
    pert = Box(lo.reshape((N,) + shape), hi.reshape((N,) + shape))
    CC = torch.tensor(term.C, dtype=lo.dtype)[None].expand(N, -1, -1).reshape((N, -1) + tuple(bm.graph.output_shape))
    with torch.no_grad():
        bounds = bm.crown_intermediate(pert)
        A_in, bias = bm.propagate(bm.graph.output, CC, bounds, {})
        lb = bias + pert.lower(A_in)
    if not bool(torch.isfinite(lb).all()):
        raise CertkitError("CROWN produced NaN or inf bounds on a sub-box")
    return lb, A_in.reshape(N, CC.shape[1], -1)


def input_split_bab(bm, net32, onnx_model, term, dl, max_domains, batch, split=bisect, vertices: bool = True):
    """Input-split BaB on one disjunct ``term`` until the Deadline ``dl``. Returns ("unsat"|"timeout"|"unknown"|
    InstanceResult(sat), domains). ``split(lo, hi, dim) -> (lo, hi)`` makes the children of the boxes to split; a
    sound one must cover every box with its children (:func:`bisect`). ``vertices``: also try the bound minimisers as
    counterexamples (off only to model a verifier without them, soundness_bench/bugs.py).

    Each round bounds up to ``batch`` boxes with CROWN in one batched pass; a box is refuted when some row has
    lb > d. Counterexample candidates: every box center and the vertex minimising the linear bound of the row
    closest to refutation (float32 screen, exact replay). An open box is split at the middle of the dimension with
    the largest width x |d objective / dx| at its center (measured on the ACAS Xu sample: better than |bound
    coefficient| x width and than bounding both halves along every dimension, which took 10-25x more boxes or
    time). A round is not started when the previous one took longer than the time left (the deadline is kept)."""
    if term.C.shape[0] == 0:
        return "unknown", 0
    lo, hi = torch.tensor(term.x_L)[None], torch.tensor(term.x_U)[None]
    d64 = torch.tensor(term.d)
    obj32 = objective(net32, torch.tensor(term.C).float(), d64.float(), onnx_model.sample_shape)
    check = candidate_checker(net32, onnx_model, term, "input-split BaB")
    width0 = (hi - lo).clamp(min=1e-12)
    domains = 0
    last = 0.0                                          # seconds the previous round took
    while lo.shape[0]:
        if dl.left() <= last:                           # another round would overrun the deadline
            return "timeout", domains
        t_round = time.perf_counter()
        if domains >= max_domains:
            return "unknown", domains
        lo_b, hi_b, lo, hi = lo[:batch], hi[:batch], lo[batch:], hi[batch:]
        domains += lo_b.shape[0]
        lb, A = crown_boxes(bm, term, lo_b, hi_b)
        margin = lb - d64
        row = margin.argmax(1)
        A_row = A[torch.arange(A.shape[0]), row]                                 # (N, n)
        vertex = torch.where(A_row >= 0, lo_b, hi_b)
        found = check((torch.cat([(lo_b + hi_b) / 2, vertex]) if vertices else (lo_b + hi_b) / 2))
        if found is not None:
            return found, domains
        keep = ~(margin > 0).any(1)
        lo_b, hi_b, A_row = lo_b[keep], hi_b[keep], A_row[keep]
        if not lo_b.shape[0]:
            continue
        c = ((lo_b + hi_b) / 2).requires_grad_(True)
        with torch.enable_grad():
            g, = torch.autograd.grad(obj32(c.float()).sum(), c)
        dim = ((hi_b - lo_b) * (g.abs() + 1e-9 * width0)).argmax(1)
        children_lo, children_hi = split(lo_b, hi_b, dim)
        lo, hi = torch.cat([children_lo, lo]), torch.cat([children_hi, hi])
        last = time.perf_counter() - t_round
    return "unsat", domains


# ------------------------------------------------------------------ benchmark folders
