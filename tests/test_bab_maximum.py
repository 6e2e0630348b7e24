"""Branch and bound through max / min of two computed tensors (verifiers/complete/beta_crown.py with the split of
verifiers/bounds/ops/maximum.py: the difference d = x - y at 0): answers against the exact optimum of a mixed-integer
program, and a split that decides the element in both children."""

import copy

import numpy as np
import pytest
import torch
from scipy.optimize import Bounds, LinearConstraint, milp
from torch import nn

from certkit.verifiers import BoundedModule
from certkit.verifiers.bounds.ops.maximum import Maximum
from certkit.verifiers.complete.beta_crown import ActivationBaB

from test_bab import assert_decides_around

N_IN, H = 4, 6


class MaxMinNet(nn.Module):
    """x (4,) -> p = A x + a, q = B x + b (6 each) -> [max(p, q), min(p, q)] -> Linear(12, 2)."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.out = nn.Linear(N_IN, H), nn.Linear(N_IN, H), nn.Linear(2 * H, 2)

    def forward(self, x):
        p, q = self.a(x), self.b(x)
        return self.out(torch.cat([torch.maximum(p, q), torch.minimum(p, q)], 1))


def net_for(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return MaxMinNet().double().eval()


def exact_min(net: MaxMinNet, c: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    """min over the box of c . net(x), as a MILP with variables (x, m (max), n (min), b): m >= p, m >= q,
    m <= p + M (1 - b), m <= q + M b; n <= p, n <= q, n >= q - M (1 - b), n >= p - M b (the same b: the max is p
    exactly when the min is q), M from interval bounds of p - q."""
    Wp, bp = net.a.weight.detach().numpy(), net.a.bias.detach().numpy()
    Wq, bq = net.b.weight.detach().numpy(), net.b.bias.detach().numpy()
    Wo, bo = net.out.weight.detach().numpy(), net.out.bias.detach().numpy()
    center, radius = (hi + lo) / 2, (hi - lo) / 2
    Wd, bd = Wp - Wq, bp - bq
    M = np.abs(Wd @ center + bd) + np.abs(Wd) @ radius + 1.0
    nvar = N_IN + 3 * H
    rows, lbs, ubs = [], [], []

    def row(xcoef, var, coef_var, b_coef=0.0, k=0):
        r = np.zeros(nvar)
        r[:N_IN] = xcoef
        r[N_IN + var * H + k] = coef_var
        r[N_IN + 2 * H + k] += b_coef
        return r

    for k in range(H):
        for W, b, sign_b in ((Wp, bp, 1.0), (Wq, bq, -1.0)):
            # m - (W x + b) >= 0
            rows.append(row(-W[k], 0, 1.0, k=k)), lbs.append(b[k]), ubs.append(np.inf)
            # n - (W x + b) <= 0
            rows.append(row(-W[k], 1, 1.0, k=k)), lbs.append(-np.inf), ubs.append(b[k])
            # b = 1 (p >= q): m = p, n = q; b = 0: m = q, n = p
            if sign_b > 0:   # m <= p + M (1 - b), n >= p - M b
                rows.append(row(-W[k], 0, 1.0, M[k], k)), lbs.append(-np.inf), ubs.append(b[k] + M[k])
                rows.append(row(-W[k], 1, 1.0, M[k], k)), lbs.append(b[k]), ubs.append(np.inf)
            else:            # m <= q + M b, n >= q - M (1 - b)
                rows.append(row(-W[k], 0, 1.0, -M[k], k)), lbs.append(-np.inf), ubs.append(b[k])
                rows.append(row(-W[k], 1, 1.0, -M[k], k)), lbs.append(b[k] - M[k]), ubs.append(np.inf)
    obj = np.zeros(nvar)
    w = c @ Wo
    obj[N_IN:N_IN + H], obj[N_IN + H:N_IN + 2 * H] = w[:H], w[H:]
    big = 1e6
    res = milp(obj, constraints=LinearConstraint(np.array(rows), lbs, ubs),
               integrality=np.r_[np.zeros(N_IN + 2 * H), np.ones(H)],
               bounds=Bounds(np.r_[lo, -big * np.ones(2 * H), np.zeros(H)],
                             np.r_[hi, big * np.ones(2 * H), np.ones(H)]))
    assert res.status == 0
    return float(res.fun + c @ bo)


def search_for(net, lo, hi, c, d, fast: bool = False, **kw) -> ActivationBaB:
    """An ActivationBaB for c . f(x) <= d; ``fast``: alpha and beta optimised on a float32 copy of ``net``."""
    twin = BoundedModule(copy.deepcopy(net).float(), (N_IN,)) if fast else None
    return ActivationBaB(BoundedModule(net, (N_IN,)), lo, hi, torch.tensor([c], dtype=torch.float64),
                         torch.tensor([d], dtype=torch.float64), fast=twin, **kw)


def test_the_milp_is_the_network():
    """The MILP's optimum is attained by the network (a sampled minimum never lies below it)."""
    net = net_for(0)
    lo, hi = np.full(N_IN, -1.0), np.full(N_IN, 1.0)
    c = np.array([1.0, -1.0])
    opt = exact_min(net, c, lo, hi)
    xs = torch.rand(20000, N_IN, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        sampled = (net(xs) @ torch.tensor(c)).min().item()
    assert opt <= sampled + 1e-9 and sampled - opt < 0.2 * (abs(opt) + 1)


@pytest.mark.parametrize("seed,branching", [(0, "fsb"), (1, "fsb"), (2, "babsr")])
@pytest.mark.parametrize("fast", [False, True])
def test_max_min_splits_match_the_exact_optimum(seed, branching, fast):
    """Thresholds 10% of CROWN's gap below the exact minimum are proved (they need branching: CROWN alone falls
    short), thresholds 5% above it are falsified by a checked point."""
    net = net_for(seed)
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.rand(N_IN, generator=gen, dtype=torch.float64)
    lo, hi = x0 - 0.5, x0 + 0.5
    c = [1.0, -1.0]
    opt = exact_min(net, np.array(c), lo.numpy(), hi.numpy())
    search = search_for(net, lo, hi, c, 0.0, branching=branching)
    assert len(search.acts) == 2, "the max and the min are split variables"
    dom = search.root()
    with torch.no_grad():
        root = float(search._lower(dom)[0][0, 0])
    assert root < opt - 1e-3
    assert_decides_around(lambda d: search_for(net, lo, hi, c, d, fast, branching=branching), net, c, opt,
                          root)


def test_a_split_decides_the_element_in_both_children():
    net = net_for(3)
    lo, hi = torch.full((N_IN,), -0.5, dtype=torch.float64), torch.full((N_IN,), 0.5, dtype=torch.float64)
    search = search_for(net, lo, hi, [1.0, -1.0], 0.0, branching="babsr")
    dom = search.root()
    coeffs, _ = search.optimize(dom, 5)
    kids = search.branch(dom, coeffs)
    assert len(kids) == 2
    (a, j), = [(a, j) for a, j in search.acts.items() if bool((kids.hi[j][0] != dom.hi[j][0]).any())]
    op = search.g.nodes[a].op
    assert isinstance(op, Maximum)
    moved = kids.hi[j][0] != dom.hi[j][0]
    assert int(moved.sum()) == 1 and float(kids.hi[j][0][moved]) == 0.0 == float(kids.lo[j][1][moved])
    bounds = search._bounds(kids)
    ins = [bounds[i] for i in search.g.nodes[a].inputs]
    assert not bool(op.splittable(*ins[0])[:, moved].any())
