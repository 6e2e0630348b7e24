"""Activation-split branch and bound (verifiers/complete/beta_crown.py): decisions against exact answers, bounds of
every subdomain against the exact subdomain optimum (MILP, scipy HiGHS) and sampled points, branching covers the
parent, the deadline is kept; the same decisions with alpha and beta optimised in float32 (``fast``), which never
claims a subdomain that float64 does not refute.
"""
import copy
import time

import numpy as np
import pytest
import torch
from torch import nn

from certkit.verifiers import BoundedModule
from certkit.verifiers.bounds.ops.activation import Activation
from certkit.verifiers.complete.beta_crown import ActivationBaB, Domains, _Pending

from milp import exact_min


def relu_net(seed, sizes=(5, 12, 12, 3)):
    torch.manual_seed(seed)
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1]).double().eval()


def np_layers(net):
    return [(m.weight.detach().numpy(), m.bias.detach().numpy()) for m in net if isinstance(m, nn.Linear)]


def box(seed, n, eps):
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.rand(n, generator=gen, dtype=torch.float64)
    return x0 - eps, x0 + eps


def search_for(net, lo, hi, c, d, fast: bool = False, **kw):
    """An ActivationBaB for c . f(x) <= d over [lo, hi]; ``fast``: alpha and beta optimised on a float32 copy."""
    bm = BoundedModule(net, (lo.numel(),))
    twin = BoundedModule(copy.deepcopy(net).float(), (lo.numel(),)) if fast else None
    return ActivationBaB(bm, lo, hi, torch.tensor([c], dtype=torch.float64), torch.tensor([d], dtype=torch.float64),
                         fast=twin, **kw)


def witness_checker(net, c, d):
    """A counterexample is a point with c . f(x) <= d (exact float64 forward)."""
    cvec = torch.tensor(c, dtype=torch.float64)

    def check(x):
        if x.shape[0] == 0:
            return None
        with torch.no_grad():
            v = net(x) @ cvec
        k = int(v.argmin())
        return ("sat", x[k]) if float(v[k]) <= d else None
    return check


def pgd_objective(net, c, d):
    cvec = torch.tensor(c, dtype=torch.float64)
    return lambda x: net(x.double()) @ cvec - d


def crown_lb(search):
    """Plain CROWN on the root (CROWN relaxation, no optimisation): the bound that bounds alone give."""
    dom = search.root()
    with torch.no_grad():
        lb, _ = search._lower(dom)
    return float(lb[0, 0])


@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize("branching", ["fsb", "babsr"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_relu_decisions_match_the_exact_milp_optimum(seed, branching, fast):
    net = relu_net(seed)
    lo, hi = box(seed, 5, 0.4)
    c = [1.0, -1.0, 0.0]
    opt = exact_min(np_layers(net), np.array(c), lo.numpy(), hi.numpy())
    search = search_for(net, lo, hi, c, 0.0, branching=branching)
    root = crown_lb(search)
    assert root < opt - 1e-3  # CROWN alone leaves a gap: the answers below need branching
    assert_decides_around(lambda d: search_for(net, lo, hi, c, d, fast, branching=branching), net, c, opt, root)


@pytest.mark.parametrize("seed", range(6))
def test_float32_optimisation_never_refutes_past_the_exact_optimum(seed):
    """A threshold 1e-9 (relative) above the exact minimum: counterexamples exist, and float32 bounds of the leaves
    around the minimum reach past it by their rounding (~1e-7); every subdomain the search counts as refuted has
    a float64 bound above the threshold, so the answer is never ``unsat``, and every score > 0 is float64's."""
    net = relu_net(seed)
    lo, hi = box(seed, 5, 0.4)
    c = [1.0, -1.0, 0.0]
    opt = exact_min(np_layers(net), np.array(c), lo.numpy(), hi.numpy())
    d = opt + 1e-9 * (1 + abs(opt))
    search = search_for(net, lo, hi, c, d, fast=True, branching="babsr")
    assert search.work is not search.exact
    claimed = []
    confirm = search._confirm

    def spy(dom, score, best):
        out = confirm(dom, score, best)
        claimed.append(float((out > 0).sum()))
        done = torch.nonzero(out > 0).flatten()
        if done.numel():
            exact = search._score(search._lower(best.take(dom, done))[0])
            assert exact.dtype == torch.float64 and torch.equal(exact, out[done])
        return out
    search._confirm = spy
    status, _ = search.run(time.perf_counter() + 5, 20_000, 64, witness_checker(net, c, d))
    assert status != "unsat" and sum(claimed) > 0


def assert_decides_around(make_search, net, c, opt: float, root: float, left: float = 0.1):
    """``make_search(d)`` (an ActivationBaB for c . f(x) <= d) answers unsat at a threshold closing all but ``left``
    of the gap between the root bound ``root`` and the exact optimum ``opt``, and sat just above the optimum, where a
    counterexample exists and must be found (checked by :func:`witness_checker`)."""
    d_unsat = opt - left * (opt - root)
    status, visited = make_search(d_unsat).run(time.perf_counter() + 60, 100_000, 64,
                                               witness_checker(net, c, d_unsat))
    assert status == "unsat" and visited > 1
    d_sat = opt + 0.05 * (opt - root)
    status, _ = make_search(d_sat).run(time.perf_counter() + 60, 100_000, 64, witness_checker(net, c, d_sat))
    assert isinstance(status, tuple) and status[0] == "sat"


def leaves(search, depth):
    """All 2^depth subdomains of the root split ``depth`` times (BaBSR choices, each bounded with beta-CROWN)."""
    dom = search.root()
    coeffs, _ = search.optimize(dom, 20)
    for _ in range(depth):
        dom = search.branch(dom, coeffs)
        dom.score = torch.full_like(dom.score, -torch.inf)
        coeffs, _ = search.optimize(dom, 20)
    return dom


def crown_on(search, dom):
    """CROWN on each subdomain: the CROWN relaxation of the subdomain's intervals, beta = 0."""
    plain = dom.take(torch.arange(len(dom)))
    S = 1
    for a, j in search.acts.items():
        op = search.g.nodes[a].op
        init = op.alpha_init([(dom.lo[j], dom.hi[j])])
        plain.alphas[a] = init.unsqueeze(2).expand(-1, -1, S, *[-1] * (init.dim() - 2)).clone()
        plain.betas[j] = torch.zeros_like(plain.betas[j])
    with torch.no_grad():
        lb, _ = search._lower(plain)
    return lb[:, 0]


@pytest.mark.parametrize("seed", [3, 4])
def test_every_subdomain_bound_is_sound_and_at_least_crown(seed):
    net = relu_net(seed, (4, 10, 10, 2))
    lo, hi = box(seed, 4, 0.5)
    c = [1.0, -1.0]
    search = search_for(net, lo, hi, c, 0.0, branching="babsr")
    dom = leaves(search, 3)
    lb = dom.score                                  # d = 0: score = lb
    assert bool((lb >= crown_on(search, dom) - 1e-9).all())
    layers = np_layers(net)
    js = list(search.acts.values())
    for k in range(len(dom)):
        zb = [(dom.lo[j][k].numpy(), dom.hi[j][k].numpy()) for j in js]
        exact = exact_min(layers, np.array(c), lo.numpy(), hi.numpy(), zb)
        assert float(lb[k]) <= exact + 1e-7, (k, float(lb[k]), exact)
    # sampled points: each lies in a subdomain (the leaves cover the box) and respects that subdomain's bound
    gen = torch.Generator().manual_seed(seed)
    x = lo + (hi - lo) * torch.rand((20000, 4), generator=gen, dtype=torch.float64)
    z1 = net[0](x)
    z2 = net[2](net[1](z1))
    val = net(x) @ torch.tensor(c, dtype=torch.float64)
    inside = torch.ones((len(dom), x.shape[0]), dtype=torch.bool)
    for j, z in zip(js, (z1, z2)):
        inside &= ((z[None] >= dom.lo[j][:, None]) & (z[None] <= dom.hi[j][:, None])).all(-1)
    assert bool(inside.any(0).all())
    for k in range(len(dom)):
        assert bool((val[inside[k]] >= lb[k] - 1e-9).all())


def test_children_cover_their_parent_and_respect_the_split():
    net = relu_net(5, (4, 10, 10, 2))
    lo, hi = box(5, 4, 0.5)
    search = search_for(net, lo, hi, [1.0, -1.0], 0.0, branching="babsr")
    dom = search.root()
    coeffs, _ = search.optimize(dom, 5)
    kids = search.branch(dom, coeffs)
    assert len(kids) == 2
    changed = [(j, (kids.hi[j][0] != dom.hi[j][0]), (kids.lo[j][1] != dom.lo[j][0])) for j in dom.lo]
    moved = [(j, h, l_) for j, h, l_ in changed if bool(h.any())]
    assert len(moved) == 1 and int(moved[0][1].sum()) == 1 and bool((moved[0][1] == moved[0][2]).all())
    j, mask = moved[0][0], moved[0][1]
    p = kids.hi[j][0][mask]
    assert float(p) == float(kids.lo[j][1][mask]) == 0.0          # a ReLU is split at 0
    assert float(dom.lo[j][0][mask]) < 0 < float(dom.hi[j][0][mask])
    # both children start from their parent's alphas, in copies of their own
    assert kids.depth.tolist() == [1, 1] and kids.score.tolist() == [float(dom.score[0])] * 2
    saved = {a: t.clone() for a, t in dom.alphas.items()}
    for a, t in dom.alphas.items():
        assert torch.equal(kids.alphas[a][:, 0], t[:, 0]) and torch.equal(kids.alphas[a][:, 1], t[:, 0])
        kids.alphas[a].add_(1.0)
        assert torch.equal(t, saved[a])


def sigmoid_net(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2, 8), nn.Sigmoid(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2)).double().eval()


@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_general_nonlinear_splits_decide_sigmoid_tanh_nets(seed, fast):
    """GenBaB on a Sigmoid/Tanh net with 2 inputs: the true minimum is bracketed by a dense grid and a Lipschitz
    constant (grid min - L h / 2 <= min <= grid min); thresholds outside the bracket have known answers."""
    net = sigmoid_net(seed)
    for m in net:
        if isinstance(m, nn.Linear):
            m.weight.data *= 3
    lo, hi = box(seed, 2, 1.0)
    c = torch.tensor([1.0, -1.0], dtype=torch.float64)
    g = torch.linspace(0, 1, 801, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(lo[0] + g * (hi[0] - lo[0]), lo[1] + g * (hi[1] - lo[1]), indexing="ij"), -1)
    with torch.no_grad():
        vals = net(grid.reshape(-1, 2)) @ c
    W = [m.weight.detach() for m in net if isinstance(m, nn.Linear)]
    L = float((c @ W[2]).abs().sum()) * float(W[1].abs().sum(1).max()) * 0.25 * float(W[0].abs().sum(1).max())
    h = float((hi - lo).max()) / 800
    upper, lower = float(vals.min()), float(vals.min()) - L * h / 2
    search = search_for(net, lo, hi, c.tolist(), 0.0)
    root = crown_lb(search)
    assert root < lower - 1e-2
    d_unsat = lower - 0.2 * (lower - root)
    status, visited = search_for(net, lo, hi, c.tolist(), d_unsat, fast).run(
        time.perf_counter() + 60, 200_000, 64, witness_checker(net, c.tolist(), d_unsat))
    assert status == "unsat" and visited > 1
    d_sat = upper + 0.05 * (upper - root)
    status, _ = search_for(net, lo, hi, c.tolist(), d_sat, fast).run(
        time.perf_counter() + 60, 200_000, 64, witness_checker(net, c.tolist(), d_sat),
        pgd_objective(net, c.tolist(), d_sat))
    assert isinstance(status, tuple) and status[0] == "sat"



@pytest.mark.parametrize("make, fsb", [(lambda: relu_net(5, (4, 10, 10, 2)), False), (lambda: sigmoid_net(0), True)])
def test_auto_branching_bounds_candidates_only_where_other_nonlinearities_are_split(make, fsb, monkeypatch):
    """``auto``: BaBSR's argmax (no candidate children bounded) when every split variable is piecewise linear, FSB
    (the candidates' children bounded in one pass) otherwise; the ReLU net's children are BaBSR's."""
    net = make()
    n_in = net[0].in_features
    lo, hi = box(5, n_in, 0.5)
    search = search_for(net, lo, hi, [1.0, -1.0], 0.0)
    dom = search.root()
    coeffs, _ = search.optimize(dom, 3)
    calls = []
    lower = search._lower
    monkeypatch.setattr(search, "_lower", lambda *a, **k: calls.append(1) or lower(*a, **k))
    kids = search.branch(dom, coeffs)
    assert bool(calls) == fsb
    if not fsb:
        search.branching = "babsr"
        want = search.branch(dom, coeffs)
        assert all(torch.equal(kids.lo[j], want.lo[j]) and torch.equal(kids.hi[j], want.hi[j]) for j in kids.lo)

def test_split_point_and_splittable():
    from certkit.verifiers.bounds.ops.relu import ReLU
    from certkit.verifiers.bounds.ops.sigmoid import Sigmoid
    l = torch.tensor([-1.0, 0.5, -3.0, -1.0])
    u = torch.tensor([2.0, 1.5, -1.0, -1.0])
    assert ReLU().splittable(l, u).tolist() == [True, False, False, False]
    assert Sigmoid().splittable(l, u).tolist() == [True, True, True, False]
    assert Activation().split_point(l, u).tolist() == [0.0, 1.0, -2.0, -1.0]


def test_deadline_is_kept_within_ten_percent():
    net = relu_net(7, (30, 80, 80, 80, 2))
    lo, hi = box(7, 30, 0.3)
    c = [1.0, -1.0]
    probe = search_for(net, lo, hi, c, 0.0)
    root = crown_lb(probe)
    # an upper estimate of the minimum from the sampled points; a threshold below it but far above CROWN's bound: at
    # 0.5 of the way the search proves it in about 3 s on 2 cores (too close to the budget on a fast machine), at 0.7
    # it neither proves nor falsifies it in 30 s, so the 2 s budget always runs out
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        sampled = float((net(lo + (hi - lo) * torch.rand((4000, 30), generator=gen, dtype=torch.float64))
                         @ torch.tensor(c, dtype=torch.float64)).min())
    d = root + 0.7 * (sampled - root)
    search = search_for(net, lo, hi, c, d)
    budget = 2.0
    t0 = time.perf_counter()
    status, visited = search.run(t0 + budget, 10 ** 7, 64, witness_checker(net, c, d))
    elapsed = time.perf_counter() - t0
    assert status == "timeout" and visited > 64
    assert elapsed <= 1.1 * budget


def test_domains_take_and_cat_round_trip():
    net = relu_net(8, (4, 6, 2))
    lo, hi = box(8, 4, 0.5)
    search = search_for(net, lo, hi, [1.0, -1.0], 0.0)
    dom = Domains.cat([search.root(), search.root()])
    dom.score = torch.tensor([1.0, 2.0], dtype=torch.float64)
    back = Domains.cat([dom.take(torch.tensor([1])), dom.take(torch.tensor([0]))])
    assert back.score.tolist() == [2.0, 1.0] and len(back) == 2
    assert all(back.alphas[a].shape[1] == 2 for a in back.alphas)


def test_pending_pops_every_subdomain_once_lowest_score_or_deepest_first():
    net = relu_net(8, (4, 6, 2))
    lo, hi = box(8, 4, 0.5)
    search = search_for(net, lo, hi, [1.0, -1.0], 0.0)
    gen = torch.Generator().manual_seed(0)
    for deepest in (False, True):
        pending, ids = _Pending(), 0
        for n in (5, 9, 3):
            part = Domains.cat([search.root()] * n)
            part.score = torch.rand(n, generator=gen, dtype=torch.float64)
            part.depth = torch.randint(0, 4, (n,), generator=gen)
            part.lo[search.variables[0]][:, 0] = torch.arange(ids, ids + n, dtype=torch.float64)   # an id
            pending.add(part)
            ids += n
        every = Domains.cat(pending.parts)
        key = -every.depth.double() if deepest else every.score
        want = every.lo[search.variables[0]][torch.argsort(key, stable=True), 0].tolist()
        got = []
        while len(pending):
            size = len(pending)
            out = pending.pop(4, deepest)
            assert len(out) == min(4, size) and len(pending) == size - len(out)
            got += out.lo[search.variables[0]][:, 0].tolist()
        assert got == want                         # each once, in the order of the key


def test_depth_first_under_a_memory_cap_reaches_the_same_answers():
    net = relu_net(1)
    lo, hi = box(1, 5, 0.4)
    c = [1.0, -1.0, 0.0]
    opt = exact_min(np_layers(net), np.array(c), lo.numpy(), hi.numpy())
    root = crown_lb(search_for(net, lo, hi, c, 0.0))
    for d, want in ((opt - 0.1 * (opt - root), "unsat"), (opt + 0.05 * (opt - root), "sat")):
        status, _ = search_for(net, lo, hi, c, d, max_pending_bytes=1).run(
            time.perf_counter() + 60, 100_000, 16, witness_checker(net, c, d))
        assert (status if isinstance(status, str) else status[0]) == want


def test_a_nan_bound_never_verifies_a_subdomain():
    net = relu_net(2, (4, 6, 2))
    lo, hi = box(2, 4, 0.5)
    search = search_for(net, lo, hi, [1.0, -1.0], -1e9)   # every finite bound would verify
    lb = torch.tensor([[float("nan")], [5.0]], dtype=torch.float64)
    assert search._score(lb).tolist() == [-float("inf"), 5.0 + 1e9]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_root_warm_started_from_alpha_crown_bounds_as_alpha_crown_and_decides_the_same(seed):
    """The alphas alpha-CROWN reports for a row (``best_alphas``, float32 iterations evaluated in float64) give, as
    the root of branch and bound, exactly alpha-CROWN's bound (above plain CROWN's); the warm root gets a batch's
    iterations, and the search still answers unsat / sat around the exact MILP optimum."""
    from certkit.verifiers.bounds.alpha_crown import alpha_crown
    from certkit.verifiers.bounds.perturbation import Box

    net = relu_net(seed)
    lo, hi = box(seed, 5, 0.4)
    c = [1.0, -1.0, 0.0]
    opt = exact_min(np_layers(net), np.array(c), lo.numpy(), hi.numpy())
    bm = BoundedModule(net, (5,))
    twin = BoundedModule(copy.deepcopy(net).float(), (5,))
    pert = Box(lo[None], hi[None])
    with torch.no_grad():
        bounds = bm.crown_intermediate(pert)
    CC = torch.tensor([[c]], dtype=torch.float64)
    found: dict = {}
    with torch.enable_grad():
        lb = alpha_crown(bm, pert, CC, bounds, fast=twin, best_alphas=found)
    cold = search_for(net, lo, hi, c, 0.0)
    warm = search_for(net, lo, hi, c, 0.0, root_alphas=found)
    assert found and warm.root_iterations == warm.iterations < cold.root_iterations
    with torch.no_grad():
        warm_lb, _ = warm._lower(warm.root())
    assert abs(float(warm_lb[0, 0]) - float(lb[0, 0])) <= 1e-9 * (1 + abs(float(lb[0, 0])))
    assert float(lb[0, 0]) > crown_lb(cold) + 1e-6
    assert_decides_around(lambda d: search_for(net, lo, hi, c, d, True, root_alphas=found), net, c, opt,
                          float(lb[0, 0]))


@pytest.mark.parametrize("fast", [False, True])
def test_betas_of_a_node_no_subdomain_is_split_on_stay_zero_and_change_no_bound(fast, monkeypatch):
    """Children of one split of the first hidden layer (a batch split on that node only): optimising them leaves the
    second layer's betas exactly 0 and gives bit for bit the scores and parameters of an optimisation that carries
    every node's beta terms (``_split_only`` replaced by the identity), float64 and ``fast`` alike."""
    net = relu_net(0, (4, 10, 10, 2))
    lo, hi = box(0, 4, 0.5)
    search = search_for(net, lo, hi, [1.0, -1.0], 0.0, fast, branching="babsr")
    j1, j2 = list(search.acts.values())
    dom = search.root()
    search.optimize(dom, 5)
    dom.score = torch.full_like(dom.score, -torch.inf)
    unstable = torch.nonzero((search.root_bounds[j1][0] < 0) & (search.root_bounds[j1][1] > 0))
    kids = search._children(dom, torch.tensor([int(unstable[0, 1])]))     # a first-layer neuron's two children
    every = search._children(dom, torch.tensor([int(unstable[0, 1])]))
    assert set(search._split_only(search._masks(kids))) == {j1}
    search.optimize(kids, 10)
    monkeypatch.setattr(ActivationBaB, "_split_only", staticmethod(lambda masks: masks))
    search.optimize(every, 10)
    assert bool((kids.betas[j2] == 0).all()) and bool((kids.betas[j1] != 0).any())
    assert torch.equal(kids.score, every.score)
    assert all(torch.equal(kids.betas[j], every.betas[j]) for j in kids.betas)
    assert all(torch.equal(kids.alphas[a], every.alphas[a]) for a in kids.alphas)
