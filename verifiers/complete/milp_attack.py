"""Counterexample search by mixed-integer linear programming on small ReLU networks.

Problem: one disjunct of a VNN-LIB property over a ReLU network f (every non-affine node a ReLU): find x in the box
[x_L, x_U] with C f(x) <= d (every row), where PGD's local search failed.
Return: a validated ``sat`` InstanceResult, or None (no point found in time, the network is not a ReLU network or is
too large for the encoding, or no candidate survived the exact replay).
Property: with bounds l <= z <= u on every ReLU input z (CROWN's intermediate bounds of the box), the big-M encoding
(Tjeng, Xiao, Tedrake ICLR 2019, "Evaluating robustness of neural networks with mixed integer programming", Sec. 4)

    a >= z,  a >= 0,  a <= u delta,  a <= z - l (1 - delta),  delta in {0, 1}      (unstable neurons, l < 0 < u)
    a = z (l >= 0),  a = 0 (u <= 0)

describes a = ReLU(z) exactly over the box; every other node is affine, so each ReLU input and the output are
affine in (x, the ReLU outputs before them): z_k = M_k [x; a] + c_k, evaluated numerically (the graph run on unit
vectors with every ReLU's output injected). The MILP

    find x, a, z, delta, t  s.t.  C (M_out [x; a] + c_out) - d <= t,  t <= 0,  the encoding above,  x in the box

has a feasible point exactly when the disjunct has a counterexample (up to the solver's tolerances). HiGHS
(scipy.optimize.milp) searches it under the time limit, as a feasibility problem (no objective: it stops at the
first point; minimising t instead ran to the limit on MNIST networks). Cost: on a 256x2 MNIST network at eps 0.05
(154 unstable ReLUs) HiGHS needs 10-20 s per disjunct on 2 CPU cores, mostly cuts and heuristics at the root, so
the verifier gives it only what the proof leaves (strategy.py ``keep_attacking``). Nothing the solver answers is
trusted: its point is replayed in the float32 network and in onnxruntime (``candidate_checker``), after a short PGD
from it if the replay misses (a point on the boundary of the unsafe region may not survive float32 rounding);
infeasibility proves nothing here (the bounds and tolerances are not checked), so no ``unsat`` comes from this
module.
Reference: Tjeng, Xiao, Tedrake ICLR 2019 (MIPVerify), the encoding; its use as a counterexample search is certkit's.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from certkit.verifiers.bounds.ops.relu import ReLU

#: at most this many unstable ReLUs (binary variables) and this many entries of the affine maps (dense, per chunk)
MAX_BINARIES = 2000
MAX_ENTRIES = 40_000_000
#: columns of the affine maps evaluated per batched forward pass
CHUNK = 512


def relu_nodes(graph) -> list[int] | None:
    """Indices of the ReLU nodes when every non-affine node of ``graph`` is a ReLU, else None."""
    nl = graph.nonlinear()
    if not nl or not all(type(graph.nodes[i].op) is ReLU for i in nl):
        return None
    return nl


def affine_maps(graph, relus: list[int], targets: list[int], deadline: float = float("inf")) -> tuple[list, list]:
    """For each node in ``targets``: (M, c) with node value = M v + c, v = [x; the outputs of every ReLU in
    ``relus``] (flattened, in that order), M a scipy CSR matrix (node size, len(v)), c (node size,) float64.

    Valid when every non-affine node is in ``relus``: the graph is then affine in v (ReLU outputs injected).

    Raises:
        TimeoutError: the time.perf_counter() value ``deadline`` passed between two batched passes.
    """
    from scipy import sparse

    sizes = [int(np.prod(graph.nodes[0].shape))] + [int(np.prod(graph.nodes[r].shape)) for r in relus]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    n_vars = int(offsets[-1])
    slot = {r: k + 1 for k, r in enumerate(relus)}
    dtype = torch.float64

    def run(V: torch.Tensor) -> dict:
        B = V.shape[0]
        vals: list = [V[:, :sizes[0]].reshape((B,) + tuple(graph.nodes[0].shape))]
        for i, n in enumerate(graph.nodes[1:], start=1):
            if i in slot:
                k = slot[i]
                vals.append(V[:, offsets[k]:offsets[k + 1]].reshape((B,) + tuple(n.shape)))
            else:
                vals.append(n.op.forward(*[vals[j] for j in n.inputs]))
        return {t: vals[t].reshape(B, -1) for t in targets}

    with torch.no_grad():
        base = run(torch.zeros((1, n_vars), dtype=dtype))
        cols: dict = {t: [] for t in targets}
        for s in range(0, n_vars, CHUNK):
            if time.perf_counter() > deadline:
                raise TimeoutError("the affine maps of the MILP search ran past the deadline")
            e = min(n_vars, s + CHUNK)
            V = torch.zeros((e - s, n_vars), dtype=dtype)
            V[torch.arange(e - s), torch.arange(s, e)] = 1.0
            out = run(V)
            for t in targets:
                cols[t].append(sparse.csr_matrix((out[t] - base[t]).T.numpy()))
    return ([sparse.hstack(cols[t]).tocsr() for t in targets], [base[t][0].numpy() for t in targets])


def milp_counterexample(graph, bounds: list, x_L: np.ndarray, x_U: np.ndarray, C: np.ndarray, d: np.ndarray,
                        deadline: float) -> np.ndarray | None:
    """A point x (n_in,) float64 of the box with C f(x) <= d by the solver's reckoning, or None (module docstring).

    ``bounds``: per node index, (lb, ub) tensors of batch size 1 (CROWN's intermediate bounds of the box); the
    entries of the ReLU inputs are used. ``deadline``: a time.perf_counter() value the search stops at.
    """
    from scipy import sparse
    from scipy.optimize import Bounds, LinearConstraint, milp

    relus = relu_nodes(graph)
    if relus is None or C.shape[0] == 0:
        return None
    ins = [graph.nodes[r].inputs[0] for r in relus]
    l = np.concatenate([bounds[j][0].reshape(-1).detach().double().numpy() for j in ins])
    u = np.concatenate([bounds[j][1].reshape(-1).detach().double().numpy() for j in ins])
    if not (np.isfinite(l).all() and np.isfinite(u).all()):
        return None
    unstable = (l < 0) & (u > 0)
    n_in, n_r, n_b = x_L.size, l.size, int(unstable.sum())
    n_out = int(np.prod(graph.nodes[graph.output].shape))
    if n_b > MAX_BINARIES or (n_in + n_r) * (n_r + n_out) > MAX_ENTRIES:
        return None
    try:
        maps, offs = affine_maps(graph, relus, ins + [graph.output], deadline)
    except TimeoutError:
        return None
    except RuntimeError:   # an imported graph whose ops assume one sample per batch (a fixed reshape): no search
        return None
    # variables: x (n_in) | a (n_r) | z (n_r) | delta (n_b) | t
    idl, it = n_in + 2 * n_r, n_in + 2 * n_r + n_b
    n = it + 1
    rows, lo, hi = [], [], []
    # z = M [x; a] + c  (M's columns are x then a, in the order of v)
    Mz = sparse.vstack(maps[:-1]).tocsr()
    I_r = sparse.identity(n_r, format="csr")
    rows.append(sparse.hstack([-Mz, I_r, sparse.csr_matrix((n_r, n_b + 1))]))
    cz = np.concatenate(offs[:-1])
    lo.append(cz)
    hi.append(cz)
    # a >= z everywhere (with a >= 0 from the variable bounds; a = z where l >= 0 follows with a <= z below)
    rows.append(sparse.hstack([sparse.csr_matrix((n_r, n_in)), -I_r, I_r, sparse.csr_matrix((n_r, n_b + 1))]))
    lo.append(np.full(n_r, -np.inf))
    hi.append(np.zeros(n_r))
    active = np.flatnonzero(l >= 0)
    if active.size:   # a <= z
        S = I_r[active]
        rows.append(sparse.hstack([sparse.csr_matrix((active.size, n_in)), S, -S,
                                   sparse.csr_matrix((active.size, n_b + 1))]))
        lo.append(np.full(active.size, -np.inf))
        hi.append(np.zeros(active.size))
    ub_idx = np.flatnonzero(unstable)
    if n_b:
        S = I_r[ub_idx]
        D = sparse.identity(n_b, format="csr")
        # a - u delta <= 0
        rows.append(sparse.hstack([sparse.csr_matrix((n_b, n_in)), S, sparse.csr_matrix((n_b, n_r)),
                                   -sparse.diags(u[ub_idx]) @ D, sparse.csr_matrix((n_b, 1))]))
        lo.append(np.full(n_b, -np.inf))
        hi.append(np.zeros(n_b))
        # a - z - l delta <= -l
        rows.append(sparse.hstack([sparse.csr_matrix((n_b, n_in)), S, -S, -sparse.diags(l[ub_idx]) @ D,
                                   sparse.csr_matrix((n_b, 1))]))
        lo.append(np.full(n_b, -np.inf))
        hi.append(-l[ub_idx])
    # C (M_out [x; a] + c_out) - d <= t
    CM = sparse.csr_matrix(C) @ maps[-1]
    k = C.shape[0]
    rows.append(sparse.hstack([CM, sparse.csr_matrix((k, n_r + n_b)), -sparse.csr_matrix(np.ones((k, 1)))]))
    lo.append(np.full(k, -np.inf))
    hi.append(d - C @ offs[-1])
    A = sparse.vstack(rows).tocsr()
    var_lo = np.concatenate([x_L, np.maximum(l, 0), l, np.zeros(n_b), [-np.inf]])
    var_hi = np.concatenate([x_U, np.maximum(u, 0), u, np.ones(n_b), [0.0]])
    integrality = np.zeros(n)
    integrality[idl:it] = 1
    cost = np.zeros(n)   # feasibility: HiGHS stops at the first point with t <= 0 (measured faster than min t)
    left = deadline - time.perf_counter()
    if left <= 0.05:
        return None
    res = milp(cost, integrality=integrality, bounds=Bounds(var_lo, var_hi),
               constraints=LinearConstraint(A, np.concatenate(lo), np.concatenate(hi)),
               options={"time_limit": left, "disp": False, "presolve": True})
    if res.x is None:
        return None
    return np.clip(res.x[:n_in], x_L, x_U)
