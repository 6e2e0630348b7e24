"""LP refinement of the intermediate bounds of a ReLU network over an input box, every bound checked by duality.

Problem: a network whose every non-affine node is a ReLU, an input box [x_L, x_U] and intervals [l, u] of every ReLU
input over the box (CROWN's or alpha-CROWN's): tighten l and u of the unstable neurons (l < 0 < u) of the ReLU
layers that follow another ReLU, layer by layer, each layer using the refined intervals of the earlier ones.
Return: new intervals, the given ones intersected with the refined ones (so never looser), and counts of the linear
programs solved and the neurons tightened.
Property: with the ReLU outputs a as variables, every ReLU input is affine, z_i = M_i [x; a] + c_i
(milp_attack.py ``affine_maps``). The triangle relaxation of each earlier ReLU (Ehlers, ATVA 2017, "Planet") gives the
linear program

    min / max  z_j   s.t.  x in [x_L, x_U];  a_i = 0 where u_i <= 0;  a_i = z_i where l_i >= 0;
                          a_i >= z_i, 0 <= a_i <= u_i (z_i - l_i) / (u_i - l_i) where l_i < 0 < u_i,

whose feasible set holds every (x, ReLU outputs) of the box, so its optimum bounds z_j over the box. It is the best
bound any relaxation of one neuron at a time can give (Salman et al., NeurIPS 2019, "A convex relaxation barrier to
tight robustness verification"): never looser than CROWN's, and the value optimised alpha-CROWN converges to (on
the VNN-COMP 2021 MNIST networks alpha-CROWN's 20 steps per layer reach it to 0.1%, bench/README.md, which is why the
complete verifier does not run this). The solver's optimum is never used as the bound. With the LP written as
min cost . v over the variable box [lo, hi] and rows rl <= A v <= ru, and y the solver's row duals (any y would do),

    cost . v = (cost - A^T y) . v + y . (A v) >= sum_k min(e_k lo_k, e_k hi_k) + sum_i min(y_i rl_i, y_i ru_i),

with e = cost - A^T y, holds for every feasible v (weak duality): that Lagrangian bound is recomputed here in float64
and lowered by ``MARGIN`` times the magnitude of its terms, so that solver tolerances and float64 rounding can only
make it looser, never wrong (as Neumaier & Shcherbina, Math. Program. 2004, "Safe bounds in linear and mixed-integer
programming"). The LPs of one layer share their constraints; HiGHS (highspy) re-solves each from the previous basis
after changing the objective only.
Reference: LP-tightened intermediate bounds before branch and bound are the "progressive bounds tightening" of Tjeng,
Xiao, Tedrake (ICLR 2019, Sec. 4.1) and the LP / MIP refinement of alpha-beta-CROWN (Wang et al. NeurIPS 2021; its
``bab-refine`` of VNN-COMP 2022); this implementation and its dual check are certkit's.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from certkit.common.errors import CertkitError
from certkit.verifiers.complete.leaf_lp import MARGIN
from certkit.verifiers.complete.milp_attack import MAX_ENTRIES, affine_maps, relu_nodes


@dataclass
class RefineStats:
    """What :func:`refine_bounds` did: LPs solved, LPs whose dual bound tightened an interval, layers visited."""
    lps: int = 0
    tightened: int = 0
    layers: int = 0


def dual_bound(cost: np.ndarray, A, y: np.ndarray, lo: np.ndarray, hi: np.ndarray, rl: np.ndarray,
               ru: np.ndarray) -> float:
    """A lower bound of min cost . v over {lo <= v <= hi, rl <= A v <= ru} from any row multipliers ``y`` (module
    docstring), lowered by MARGIN times its terms' magnitude; -inf when it is not finite.

    Shapes: cost, lo, hi (n,) finite; A a scipy sparse matrix (m, n); y, rl, ru (m,) (rl / ru may hold -inf / inf;
    a multiplier whose side is infinite is set to 0, which keeps the bound valid)."""
    y = np.where((y > 0) & ~np.isfinite(rl), 0.0, y)
    y = np.where((y < 0) & ~np.isfinite(ru), 0.0, y)
    e = cost - A.T @ y
    v_terms = np.minimum(e * lo, e * hi)
    r_terms = np.where(y > 0, y * np.where(np.isfinite(rl), rl, 0.0), y * np.where(np.isfinite(ru), ru, 0.0))
    bound = float(v_terms.sum() + r_terms.sum())
    v_mag = np.maximum(np.abs(lo), np.abs(hi))
    scale = float(((abs(A).T @ np.abs(y) + np.abs(cost)) * v_mag).sum() + np.abs(r_terms).sum())
    if not np.isfinite(bound) or not np.isfinite(scale):
        return -np.inf
    return bound - MARGIN * (1.0 + scale)


def _layer_lp(maps, offs, sizes, n_in, k, l, u):
    """The constraint system of layer k's LPs over v = [x; a of the ReLUs before k]: (A csr (m, n), rl, ru, lo, hi)
    with x's bounds left to the caller (columns 0..n_in-1)."""
    from scipy import sparse

    starts = np.concatenate([[n_in], n_in + np.cumsum(sizes[:k])])   # column of each earlier ReLU's first output
    n = int(starts[-1])
    lo, hi = np.zeros(n), np.zeros(n)
    blocks, rl, ru = [], [], []
    for i in range(k):
        li, ui = l[i], u[i]
        col = slice(int(starts[i]), int(starts[i + 1]))
        lo[col], hi[col] = np.maximum(li, 0.0), np.maximum(ui, 0.0)
        M = maps[i][:, :n]
        c = offs[i]
        eye = sparse.csr_matrix((np.ones(sizes[i]), (np.arange(sizes[i]), np.arange(sizes[i]) + starts[i])),
                                shape=(sizes[i], n))
        act, uns = np.flatnonzero(li >= 0), np.flatnonzero((li < 0) & (ui > 0))
        if act.size:                                  # a = z
            blocks.append(eye[act] - M[act])
            rl.append(c[act])
            ru.append(c[act])
        if uns.size:                                  # a >= z  and  a <= s (z - l)
            s = ui[uns] / (ui[uns] - li[uns])
            blocks.append(eye[uns] - M[uns])
            rl.append(c[uns])
            ru.append(np.full(uns.size, np.inf))
            blocks.append(eye[uns] - sparse.diags(s) @ M[uns])
            rl.append(np.full(uns.size, -np.inf))
            ru.append(s * (c[uns] - li[uns]))
    A = sparse.vstack(blocks).tocsr() if blocks else sparse.csr_matrix((0, n))
    return A, (np.concatenate(rl) if rl else np.zeros(0)), (np.concatenate(ru) if ru else np.zeros(0)), lo, hi


def _highspy():
    try:
        import highspy
    except ImportError as e:
        raise CertkitError("LP refinement needs highspy: pip install 'certkit[lp]'") from e
    return highspy


def _highs(A, rl, ru, lo, hi):
    highspy = _highspy()
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("threads", 1)
    csc = A.tocsc()
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = A.shape[1], A.shape[0]
    lp.col_cost_ = np.zeros(A.shape[1])
    lp.col_lower_, lp.col_upper_ = lo, hi
    lp.row_lower_ = np.where(np.isfinite(rl), rl, -highspy.kHighsInf)
    lp.row_upper_ = np.where(np.isfinite(ru), ru, highspy.kHighsInf)
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = csc.indptr.astype(np.int32)
    lp.a_matrix_.index_ = csc.indices.astype(np.int32)
    lp.a_matrix_.value_ = csc.data.astype(np.float64)
    h.passModel(lp)
    return h


def refine_bounds(graph, bounds: list, x_L: np.ndarray, x_U: np.ndarray, deadline: float,
                  max_layers: int | None = None, max_lps: int | None = None) -> tuple[list, RefineStats]:
    """LP-refined intervals of the ReLU inputs of ``graph`` over the box (module docstring).

    Args:
        graph: a certkit bound graph (verifiers/bounds/graph.py) whose every non-affine node is a ReLU; any other
            graph is returned unchanged.
        bounds: per node, (lb, ub) tensors of batch size 1 valid over the box; the ReLU inputs' are refined.
        x_L, x_U: the input box, flattened (n_in,) float64.
        deadline: a time.perf_counter() value; refinement stops there (every bound found so far is kept: each is
            valid on its own).
        max_layers: refine at most this many ReLU layers (after the first, whose input CROWN bounds exactly).
        max_lps: solve at most this many LPs.

    Returns:
        (new bounds list, RefineStats). The refined neurons of a layer are solved in order of their triangle's
        size, -l u / (u - l), largest first.

    Raises:
        CertkitError: highspy is not installed (``pip install 'certkit[lp]'``).
    """
    stats = RefineStats()
    relus = relu_nodes(graph)
    if relus is None:
        return bounds, stats
    ins = [graph.nodes[r].inputs[0] for r in relus]
    sizes = [int(np.prod(graph.nodes[r].shape)) for r in relus]
    n_in = int(x_L.size)
    n_vars = n_in + sum(sizes)
    if n_vars * sum(sizes) > MAX_ENTRIES or time.perf_counter() > deadline:
        return bounds, stats
    try:
        maps, offs = affine_maps(graph, relus, ins, deadline)
    except (TimeoutError, RuntimeError):   # out of time, or an imported graph with a fixed batch of one
        return bounds, stats
    l = [bounds[j][0].reshape(-1).detach().double().numpy().copy() for j in ins]
    u = [bounds[j][1].reshape(-1).detach().double().numpy().copy() for j in ins]
    if not all(np.isfinite(a).all() for a in l + u):
        return bounds, stats
    for k in range(1, len(relus)):
        if time.perf_counter() > deadline or (max_layers is not None and stats.layers >= max_layers):
            break
        M = maps[k][:, :n_in + sum(sizes[:k])]
        if M[:, n_in:].nnz == 0:               # affine in x alone: CROWN's interval is already exact
            continue
        uns = np.flatnonzero((l[k] < 0) & (u[k] > 0))
        if uns.size == 0:
            continue
        stats.layers += 1
        A, rl, ru, lo, hi = _layer_lp(maps, offs, sizes, n_in, k, l, u)
        lo[:n_in], hi[:n_in] = x_L, x_U
        h = _highs(A, rl, ru, lo, hi)
        order = uns[np.argsort(l[k][uns] * u[k][uns] / (u[k][uns] - l[k][uns]))]   # most negative first
        cols = np.arange(M.shape[1], dtype=np.int32)
        optimal = _highspy().HighsModelStatus.kOptimal
        done = False
        for j in order:
            row = M[j].toarray()[0]
            c = float(offs[k][j])
            for sign in (1.0, -1.0):           # min z_j, then min -z_j
                left = deadline - time.perf_counter()
                if left <= 0 or (max_lps is not None and stats.lps >= max_lps):
                    done = True
                    break
                cost = sign * row
                h.setOptionValue("time_limit", float(left))
                h.changeColsCost(len(cols), cols, cost)
                h.run()
                stats.lps += 1
                if h.getModelStatus() != optimal:
                    continue
                y = np.asarray(h.getSolution().row_dual, dtype=np.float64)
                # min sign z_j >= bound + sign c (c's rounding absorbed by a margin of its own)
                bound = dual_bound(cost, A, y, lo, hi, rl, ru) - MARGIN * (1.0 + abs(c))
                if sign > 0 and bound + c > l[k][j]:
                    l[k][j] = bound + c
                    stats.tightened += 1
                elif sign < 0 and c - bound < u[k][j]:
                    u[k][j] = c - bound
                    stats.tightened += 1
            if done:
                break
    out = list(bounds)
    for k, j in enumerate(ins):
        lb, ub = bounds[j]
        out[j] = (torch.maximum(lb, torch.tensor(l[k], dtype=lb.dtype).reshape(lb.shape)),
                  torch.minimum(ub, torch.tensor(u[k], dtype=ub.dtype).reshape(ub.shape)))
    return out, stats
