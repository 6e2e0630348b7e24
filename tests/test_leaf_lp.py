"""The linear program of a fully split subdomain (verifiers/complete/leaf_lp.py): on random fully split leaves of
small ReLU nets it refutes exactly the leaves whose exact optimum (big-M MILP, tests/milp.py) clears the threshold,
finds a checked counterexample in those it does not, never refutes a violated leaf, and lets branch and bound decide
instances with bounds too weak to refute any leaf."""
import time

import numpy as np
import pytest
import torch

from certkit.verifiers.complete.leaf_lp import decide_leaf, leaf_is_linear

from milp import exact_min
from test_bab import box, np_layers, relu_net, search_for, witness_checker


def random_leaf(search, layers, gen):
    """Split the root at random unstable neurons, following the child that holds a random point of the box (so the
    leaf is not empty), until nothing is left to split."""
    x = search.x_L[0] + (search.x_U[0] - search.x_L[0]) * torch.rand(search.x_L[0].shape, generator=gen,
                                                                       dtype=torch.float64)
    z, a = [], x.numpy()
    for W, b in layers[:-1]:
        z.append(W @ a + b)
        a = np.maximum(z[-1], 0)
    z = np.concatenate(z)
    dom = search.root()
    while bool(search._has_split(dom).all()):
        cand = []
        for k, (a, j) in enumerate(search.acts.items()):
            ok = search.g.nodes[a].op.splittable(dom.lo[j], dom.hi[j]).flatten()
            offset = sum(dom.lo[jj][0].numel() for jj in list(search.acts.values())[:k])
            cand += (torch.nonzero(ok).flatten() + offset).tolist()
        flat = torch.tensor([cand[int(torch.randint(len(cand), (1,), generator=gen))]])
        kids = search._children(dom, flat)
        dom = kids.take(torch.tensor([0 if z[int(flat)] <= 0 else 1]))   # left: z <= 0, right: z >= 0
    return dom


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_leaf_decisions_match_the_exact_leaf_optimum(seed):
    net = relu_net(seed, (3, 8, 8, 2))
    lo, hi = box(seed, 3, 0.6)
    c = [1.0, -1.0]
    layers = np_layers(net)
    search = search_for(net, lo, hi, c, 0.0)
    gen = torch.Generator().manual_seed(seed)
    js = list(search.acts.values())
    decided = {"unsat": 0, "sat": 0, "empty": 0}
    for _ in range(6):
        leaf = random_leaf(search, layers, gen)
        assert leaf_is_linear(search, search._bounds(leaf))
        zb = [(leaf.lo[j][0].numpy(), leaf.hi[j][0].numpy()) for j in js]
        exact = exact_min(layers, np.array(c), lo.numpy(), hi.numpy(), zb)   # +inf: the leaf is empty
        for d, want in ((exact - 0.05, "unsat"), (exact + 0.05, "sat")):
            if not np.isfinite(exact):
                d, want = 0.0, "unsat"
            search.d = torch.tensor([d], dtype=torch.float64)
            got = decide_leaf(search, leaf, witness_checker(net, c, d), time.perf_counter() + 30)
            if want == "unsat":
                assert got == "unsat", (exact, d)
            else:   # a point of the leaf with c . f(x) <= d: checked by the exact float64 forward pass
                assert isinstance(got, tuple) and got[0] == "sat", (exact, d, got)
                x = got[1]
                assert bool(((x >= lo - 1e-9) & (x <= hi + 1e-9)).all())
            decided[want if np.isfinite(exact) else "empty"] += 1
    assert decided["unsat"] >= 3 and decided["sat"] >= 3


def test_branch_and_bound_with_weak_bounds_is_decided_by_its_leaves(monkeypatch):
    """No alpha/beta optimisation and BaBSR: fully split leaves stay unrefuted by their bounds (before the leaf
    programs, the search answered ``unknown`` there); the leaf programs give the exact answers on both sides of the
    exact optimum."""
    import certkit.verifiers.complete.beta_crown as beta_crown

    calls = []
    real = beta_crown.decide_leaf
    monkeypatch.setattr(beta_crown, "decide_leaf", lambda *a, **k: calls.append(1) or real(*a, **k))
    net = relu_net(2, (2, 10, 10, 2))
    lo, hi = box(2, 2, 0.5)
    c = [1.0, -1.0]
    opt = exact_min(np_layers(net), np.array(c), lo.numpy(), hi.numpy())
    for d, want in ((opt - 1e-3, "unsat"), (opt + 1e-3, "sat")):
        calls.clear()
        search = search_for(net, lo, hi, c, d, branching="babsr", iterations=0, root_iterations=0)
        status, _ = search.run(time.perf_counter() + 60, 100_000, 4, witness_checker(net, c, d))
        assert (status == "unsat") if want == "unsat" else (isinstance(status, tuple) and status[0] == "sat")
        assert len(calls) >= 10
