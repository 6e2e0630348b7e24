"""LP refinement of intermediate bounds (verifiers/complete/lp_refine.py): on random small ReLU nets the refined
intervals contain the exact range of every neuron (big-M MILP, tests/milp.py), are never looser than the given ones,
equal the optimum of the triangle-relaxation LP solved independently (scipy's linprog), and the dual bound is a valid
lower bound for any multipliers, including random ones."""
import time

import numpy as np
import pytest
import torch
from scipy import sparse
from scipy.optimize import linprog

from certkit.verifiers.bounds.ibp_crown import BoundedModule
from certkit.verifiers.bounds.perturbation import Box
from certkit.verifiers.complete.lp_refine import dual_bound, refine_bounds
from certkit.verifiers.complete.milp_attack import relu_nodes

from milp import exact_min
from test_bab import box, np_layers, relu_net


def crown_setup(seed, sizes, eps):
    net = relu_net(seed, sizes)
    lo, hi = box(seed, sizes[0], eps)
    bm = BoundedModule(net, (sizes[0],))
    with torch.no_grad():
        bounds = [(l.detach(), u.detach()) for l, u in bm.crown_intermediate(Box(lo[None], hi[None]))]
    lo, hi = lo.numpy(), hi.numpy()
    ins = [bm.graph.nodes[r].inputs[0] for r in relu_nodes(bm.graph)]
    return net, lo, hi, bm, bounds, ins


def triangle_lp_bound(layers, l1, u1, lo, hi, w, b, sense):
    """min (sense=1) or max (sense=-1) of w . relu(W1 x + b1) + b over the triangle relaxation of the first layer,
    solved directly by scipy (variables x, a)."""
    W1, b1 = layers[0]
    n, h = W1.shape[1], W1.shape[0]
    A, ub = [], []
    for i in range(h):
        if u1[i] <= 0 or l1[i] >= 0:
            continue
        s = u1[i] / (u1[i] - l1[i])
        row = np.zeros(n + h); row[:n] = W1[i]; row[n + i] = -1      # W x + b - a <= 0
        A.append(row); ub.append(-b1[i])
        row = np.zeros(n + h); row[:n] = -s * W1[i]; row[n + i] = 1  # a - s (W x + b - l) <= 0
        A.append(row); ub.append(s * (b1[i] - l1[i]))
    A_eq, b_eq = [], []
    for i in range(h):
        if l1[i] >= 0:
            row = np.zeros(n + h); row[:n] = -W1[i]; row[n + i] = 1
            A_eq.append(row); b_eq.append(b1[i])
    var = list(zip(lo, hi)) + [(max(l, 0), max(u, 0)) for l, u in zip(l1, u1)]
    cost = np.concatenate([np.zeros(n), sense * w])
    res = linprog(cost, A_ub=np.array(A) if A else None, b_ub=ub if A else None,
                  A_eq=np.array(A_eq) if A_eq else None, b_eq=b_eq if A_eq else None, bounds=var, method="highs")
    assert res.status == 0
    return sense * res.fun + b


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_refined_bounds_hold_the_exact_range_and_are_never_looser(seed):
    net, lo, hi, bm, bounds, ins = crown_setup(seed, (4, 10, 10, 10, 2), 0.4)
    refined, stats = refine_bounds(bm.graph, bounds, lo, hi, time.perf_counter() + 60)
    assert stats.lps > 0
    layers = np_layers(net)
    tighter = 0
    for k, j in enumerate(ins):
        l0, u0 = (t[0].numpy() for t in bounds[j])
        l1, u1 = (t[0].numpy() for t in refined[j])
        assert (l1 >= l0).all() and (u1 <= u0).all()
        tighter += int((l1 > l0 + 1e-9).sum() + (u1 < u0 - 1e-9).sum())
        if k == 0:                           # affine in x: the exact range is the interval itself
            W, b = layers[0]
            c, r = (lo + hi) / 2, (hi - lo) / 2
            assert np.all(l1 <= W @ c + b - np.abs(W) @ r + 1e-9) and np.all(u1 >= W @ c + b + np.abs(W) @ r - 1e-9)
            continue
        sub = layers[:k + 1]                 # the net up to layer k's pre-activation
        for i in range(l1.size):
            e = np.zeros(l1.size)
            e[i] = 1.0
            assert l1[i] <= exact_min(sub, e, lo, hi) + 1e-7
            assert u1[i] >= -exact_min(sub, -e, lo, hi) - 1e-7
    assert tighter > 0     # the LP tightens CROWN on these nets (a refinement that did nothing would pass the above)


@pytest.mark.parametrize("seed", [0, 3])
def test_refined_bound_equals_the_triangle_lp_optimum(seed):
    """One hidden layer before the refined one: the refined interval is the LP optimum over CROWN's first-layer
    interval (so the checked dual bound loses nothing against the solver's optimum)."""
    net, lo, hi, bm, bounds, ins = crown_setup(seed, (3, 8, 6, 2), 0.5)
    refined, _ = refine_bounds(bm.graph, bounds, lo, hi, time.perf_counter() + 60)
    layers = np_layers(net)
    l1, u1 = (t[0].numpy() for t in bounds[ins[0]])
    W2, b2 = layers[1]
    l2, u2 = (t[0].numpy() for t in bounds[ins[1]])
    r_lo, r_hi = (t[0].numpy() for t in refined[ins[1]])
    for i in range(W2.shape[0]):
        if not (l2[i] < 0 < u2[i]):
            continue
        assert r_lo[i] == pytest.approx(triangle_lp_bound(layers, l1, u1, lo, hi, W2[i], b2[i], 1), abs=1e-6)
        assert r_hi[i] == pytest.approx(triangle_lp_bound(layers, l1, u1, lo, hi, W2[i], b2[i], -1), abs=1e-6)


def test_dual_bound_is_a_lower_bound_for_any_multipliers():
    gen = np.random.default_rng(0)
    for _ in range(50):
        m, n = 6, 5
        A = sparse.csr_matrix(gen.normal(size=(m, n)))
        lo, hi = -gen.random(n), gen.random(n)
        v0 = lo + (hi - lo) * gen.random(n)             # a feasible point: the rows' ranges are built around it
        r = A @ v0
        rl = np.where(gen.random(m) < 0.3, -np.inf, r - gen.random(m))
        ru = np.where(gen.random(m) < 0.3, np.inf, r + gen.random(m))
        cost = gen.normal(size=n)
        res = linprog(cost, A_ub=np.vstack([A.toarray(), -A.toarray()]),
                      b_ub=np.concatenate([np.where(np.isfinite(ru), ru, 1e30), np.where(np.isfinite(rl), -rl, 1e30)]),
                      bounds=list(zip(lo, hi)), method="highs")
        assert res.status == 0
        for _ in range(5):
            y = gen.normal(size=m) * 3
            assert dual_bound(cost, A, y, lo, hi, rl, ru) <= res.fun + 1e-9


def test_a_passed_deadline_changes_nothing():
    net, lo, hi, bm, bounds, ins = crown_setup(1, (4, 10, 10, 2), 0.4)
    refined, stats = refine_bounds(bm.graph, bounds, lo, hi, time.perf_counter() - 1)
    assert stats.lps == 0
    for j in ins:
        assert torch.equal(refined[j][0], bounds[j][0]) and torch.equal(refined[j][1], bounds[j][1])
