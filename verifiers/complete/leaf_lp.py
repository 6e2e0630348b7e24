"""Exact decision of a fully split leaf of activation branch and bound by one linear program.

Problem: a subdomain of :class:`~certkit.verifiers.complete.beta_crown.ActivationBaB` in which no activation is left
unstable (every neuron unstable on the whole box has been split, so each ReLU / LeakyReLU has a fixed phase): decide
whether some x of the subdomain has C f(x) <= d (the disjunct's unsafe region).
Return: ``unsat`` (refuted, with a checked dual certificate), a validated counterexample (``sat``), or None
(undecided: the LP failed, ran out of time, or its answer did not survive the re-checks).
Property: on the subdomain R the network is affine, C f(x) = A x + b, and each split neuron is affine, z_j(x) =
g_j x + c_j (backward passes of exact relaxations: every neuron is stable). R lies in the polytope
P = {x in the box : each split constraint lo_j <= g_j x + c_j <= hi_j that the subdomain narrowed}, and a point of P
is in R (layer by layer, each split fixes the phase the next layer's affine form assumes). The LP

    min t  s.t.  A_r x + b_r - d_r <= t (every row r),  G_j x - h_j <= t (every split constraint),  x in the box

is solved with HiGHS (scipy.optimize.linprog). Its answer is never taken on trust:
    * t* > 0: the LP's dual multipliers lam >= 0 (normalised to sum 1) give the Lagrangian bound
      min_{x in box} sum_k lam_k (M_k x - e_k) over all constraints k, which lower-bounds the largest constraint
      value at every x of the box (weak duality): if it is positive, every x of the box either leaves P or keeps
      some row above 0. It is evaluated here in float64, coordinate by coordinate, and must exceed a margin of 1e-9 x
      the magnitude of its terms: only then is the leaf refuted. Any multipliers give a sound bound, so solver
      tolerances can only cost a refutation, never make a wrong one (an empty leaf is refuted the same way).
    * t* <= 0: the minimiser x* is a counterexample candidate, replayed exactly like every other one (float32
      network, then onnxruntime) before ``sat`` is answered.
Reference: the LP of a fixed activation pattern is the leaf problem of every complete ReLU verifier (Reluplex, Katz
et al. CAV 2017; Marabou; "the LP at a leaf" of Bunel et al., JMLR 2020, Sec. 3); its Lagrangian dual is what
beta-CROWN's optimised betas approach (Wang et al. NeurIPS 2021, Thm 3.1). The check of the dual certificate is
certkit's way to keep an LP solver out of the trusted base (as Neumaier & Shcherbina, Math. Program. 2004, "Safe
bounds in linear and mixed-integer programming").
"""
from __future__ import annotations

import time

import numpy as np
import torch

#: refutations need the Lagrangian bound above this fraction of the magnitude of its terms
MARGIN = 1e-9


def leaf_is_linear(bab, bounds: list) -> bool:
    """Whether the network is affine on a subdomain with intervals ``bounds`` (one per node, (1, *shape)): every
    non-affine node is piecewise linear (ReLU, LeakyReLU whose input interval holds no kink; max-pooling whose every
    window has its winner decided)."""
    g = bab.g
    for a in g.nonlinear():
        op = g.nodes[a].op
        if not op.piecewise_linear:
            return False
        l, u = bounds[g.nodes[a].inputs[0]]
        if bool(op.unstable(l, u).any()):
            return False
    return True


def _affine(bab, node: int, rows: torch.Tensor, bounds: list) -> tuple[np.ndarray, np.ndarray]:
    """(A (m, n_in), b (m,)) with sum(rows_k * node) = A_k x + b_k on the subdomain (rows (1, m, *shape of node))."""
    with torch.no_grad():
        A_in, bias = bab.bm.propagate(node, rows, bounds, {})
    n_in = int(np.prod(bab.g.input_shape))
    m = rows.shape[1]
    A = np.zeros((m, n_in)) if A_in is None else A_in.reshape(m, n_in).double().numpy()
    return A, bias.reshape(m).double().numpy()


def decide_leaf(bab, leaf, check_candidates, deadline: float):
    """Decide one fully split subdomain ``leaf`` (a Domains of length 1) of ``bab`` (an ActivationBaB).

    Args:
        check_candidates: x (N, *input) float64 -> a validated ``sat`` InstanceResult or None.
        deadline: a time.perf_counter() value; the LP gets what is left.

    Returns:
        "unsat", the ``sat`` InstanceResult, or None (undecided; also when the network is not affine on the leaf).
    """
    from scipy.optimize import linprog

    bounds = bab._bounds(leaf)
    if not leaf_is_linear(bab, bounds):
        return None
    g = bab.g
    S = bab.C.shape[0]
    CC = bab.C.unsqueeze(0).reshape((1, S) + tuple(g.output_shape))
    A_out, b_out = _affine(bab, g.output, CC, bounds)
    d = bab.d.double().numpy()
    G_parts, h_parts = [], []
    for j in bab.variables:
        r_lo, r_hi = bab.root_bounds[j]
        lo, hi = leaf.lo[j].reshape(-1), leaf.hi[j].reshape(-1)
        for sign, narrowed, value in ((-1.0, lo > r_lo.reshape(-1), lo), (1.0, hi < r_hi.reshape(-1), hi)):
            idx = torch.nonzero(narrowed).flatten()
            if idx.numel() == 0:
                continue
            rows = torch.zeros((1, idx.numel(), lo.numel()), dtype=torch.float64)
            rows[0, torch.arange(idx.numel()), idx] = 1.0
            Gj, cj = _affine(bab, j, rows.reshape((1, idx.numel()) + tuple(g.nodes[j].shape)), bounds)
            # sign * (G x + c) <= sign * value
            G_parts.append(sign * Gj)
            h_parts.append(sign * (value[idx].double().numpy() - cj))
    n_in = A_out.shape[1]
    G = np.concatenate(G_parts) if G_parts else np.zeros((0, n_in))
    h = np.concatenate(h_parts) if h_parts else np.zeros(0)
    x_L, x_U = bab.x_L.reshape(-1).double().numpy(), bab.x_U.reshape(-1).double().numpy()
    left = deadline - time.perf_counter()
    if left <= 0:
        return None
    # variables (x, t): every row A x + b - d <= t and every split G x - h <= t. t* <= 0: x* is in P and violates
    # every row; t* > 0: each x of the box breaks a split (it is not in R) or leaves some row above 0. One program
    # for both, always feasible (an empty leaf needs no separate infeasibility certificate).
    A_ub = np.block([[A_out, -np.ones((S, 1))], [G, -np.ones((G.shape[0], 1))]])
    b_ub = np.concatenate([d - b_out, h])
    c = np.zeros(n_in + 1)
    c[-1] = 1.0
    res = linprog(c, A_ub=A_ub, b_ub=b_ub, bounds=[*zip(x_L, x_U), (None, None)], method="highs",
                  options={"time_limit": max(left, 1e-3), "presolve": True})
    if res.status != 0 or res.x is None:
        return None
    if float(res.x[-1]) <= 0:
        x = torch.tensor(np.clip(res.x[:-1], x_L, x_U)).reshape((1,) + tuple(g.input_shape))
        return check_candidates(x)
    # the certificate: multipliers lam >= 0 summing to 1 over all constraints (the dual of t); for every x in the box
    # sum_k lam_k (a_k x - e_k) >= its minimum over the box, so a positive minimum means some constraint is > 0
    lam = np.clip(-np.asarray(res.ineqlin.marginals, dtype=np.float64), 0, None)
    if not lam.sum() > 0:
        return None
    lam = lam / lam.sum()
    M, e = np.concatenate([A_out, G]), np.concatenate([d - b_out, h])
    w = lam @ M                                              # coefficient of x in the Lagrangian
    box_terms = np.minimum(w * x_L, w * x_U)
    bound = float(box_terms.sum() - lam @ e)
    scale = float(np.abs(box_terms).sum() + np.abs(lam * e).sum()
                  + (np.abs(lam[:, None] * M).sum(0) * np.maximum(np.abs(x_L), np.abs(x_U))).sum())
    if np.isfinite(bound) and bound > MARGIN * (1.0 + scale):
        return "unsat"
    return None
