"""Branch and bound through max-pooling (verifiers/complete/beta_crown.py with the branching rule of
verifiers/bounds/ops/maxpool.py): answers against the exact optimum of a mixed-integer program, the split of a window
(both children cover the parent; the upper child decides the window), and the leaf test that lets fully decided
subdomains be solved as linear programs."""

import copy

import numpy as np
import pytest
import torch
from scipy.optimize import Bounds, LinearConstraint, milp
from torch import nn

from certkit.verifiers import BoundedModule
from certkit.verifiers.bounds.ops.maxpool import MaxPool2d
from certkit.verifiers.complete.beta_crown import ActivationBaB
from certkit.verifiers.complete.leaf_lp import leaf_is_linear

from test_bab import assert_decides_around

N_IN, C, H, W = 4, 2, 4, 4


def pool_net(seed: int) -> nn.Module:
    """x (4,) -> Linear -> (2, 4, 4) -> MaxPool2d(2) -> Linear(8, 2): max-pooling is the only nonlinearity."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(N_IN, C * H * W), nn.Unflatten(1, (C, H, W)), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(C * (H // 2) * (W // 2), 2)).double().eval()


def exact_min(net: nn.Module, c: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    """min over the box of c . net(x), as a MILP: y_w >= z_i for every cell i of window w, y_w <= z_i + M (1 - b_wi)
    with one b_wi = 1 per window (M from interval bounds of z)."""
    W1, b1 = net[0].weight.detach().numpy(), net[0].bias.detach().numpy()
    W2, b2 = net[4].weight.detach().numpy(), net[4].bias.detach().numpy()
    center, radius = (hi + lo) / 2, (hi - lo) / 2
    zl, zu = W1 @ center + b1 - np.abs(W1) @ radius, W1 @ center + b1 + np.abs(W1) @ radius
    idx = np.arange(C * H * W).reshape(C, H, W)
    windows = [idx[ch, 2 * r:2 * r + 2, 2 * q:2 * q + 2].reshape(-1)
               for ch in range(C) for r in range(H // 2) for q in range(W // 2)]
    n_w = len(windows)
    nvar = N_IN + n_w + 4 * n_w                 # x, y, b
    rows, lbs, ubs = [], [], []
    for w, cells in enumerate(windows):
        M = zu[cells].max() - zl[cells].min()
        for k, i in enumerate(cells):
            r = np.zeros(nvar)
            r[N_IN + w], r[:N_IN] = 1.0, -W1[i]
            rows.append(r.copy()), lbs.append(b1[i]), ubs.append(np.inf)          # y - z_i >= 0
            r[N_IN + n_w + 4 * w + k] = M
            rows.append(r), lbs.append(-np.inf), ubs.append(b1[i] + M)          # y - z_i + M b <= M
        r = np.zeros(nvar)
        r[N_IN + n_w + 4 * w:N_IN + n_w + 4 * w + 4] = 1.0
        rows.append(r), lbs.append(1.0), ubs.append(1.0)
    obj = np.zeros(nvar)
    obj[N_IN:N_IN + n_w] = c @ W2
    y_lo = [zl[cells].max() for cells in windows]
    y_hi = [zu[cells].max() for cells in windows]
    res = milp(obj, constraints=LinearConstraint(np.array(rows), lbs, ubs),
               integrality=np.r_[np.zeros(N_IN + n_w), np.ones(4 * n_w)],
               bounds=Bounds(np.r_[lo, y_lo, np.zeros(4 * n_w)], np.r_[hi, y_hi, np.ones(4 * n_w)]))
    assert res.status == 0
    return float(res.fun + c @ b2)


def search_for(net, lo, hi, c, d, fast: bool = False, **kw) -> ActivationBaB:
    """An ActivationBaB for c . f(x) <= d; ``fast``: alpha and beta optimised on a float32 copy of ``net``."""
    twin = BoundedModule(copy.deepcopy(net).float(), (N_IN,)) if fast else None
    return ActivationBaB(BoundedModule(net, (N_IN,)), lo, hi, torch.tensor([c], dtype=torch.float64),
                         torch.tensor([d], dtype=torch.float64), fast=twin, **kw)


def root_lb(search: ActivationBaB) -> float:
    dom = search.root()
    with torch.no_grad():
        lb, _ = search._lower(dom)
    return float(lb[0, 0])


@pytest.mark.parametrize("seed,branching", [(0, "fsb"), (1, "fsb"), (2, "fsb"), (0, "babsr"), (2, "babsr")])
@pytest.mark.parametrize("fast", [False, True])
def test_max_pool_splits_match_the_exact_optimum(seed, branching, fast):
    """Thresholds 10% of CROWN's gap below the exact minimum are proved (they need branching: CROWN alone falls
    short), thresholds 5% above it are falsified by a checked point."""
    net = pool_net(seed)
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.rand(N_IN, generator=gen, dtype=torch.float64)
    lo, hi = x0 - 0.5, x0 + 0.5
    c = [1.0, -1.0]
    opt = exact_min(net, np.array(c), lo.numpy(), hi.numpy())
    search = search_for(net, lo, hi, c, 0.0, branching=branching)
    assert search.acts, "the max-pooling node is a split variable"
    root = root_lb(search)
    assert root < opt - 1e-3
    assert_decides_around(lambda d: search_for(net, lo, hi, c, d, fast, branching=branching), net, c, opt,
                          root)


def test_a_window_split_covers_the_parent_and_decides_the_upper_child():
    net = pool_net(3)
    lo, hi = torch.full((N_IN,), -0.5, dtype=torch.float64), torch.full((N_IN,), 0.5, dtype=torch.float64)
    search = search_for(net, lo, hi, [1.0, -1.0], 0.0, branching="babsr")
    (a, j), = search.acts.items()
    op = search.g.nodes[a].op
    assert isinstance(op, MaxPool2d)
    dom = search.root()
    coeffs, _ = search.optimize(dom, 5)
    kids = search.branch(dom, coeffs)
    assert len(kids) == 2
    moved = kids.hi[j][0] != dom.hi[j][0]
    assert int(moved.sum()) == 1 and bool((moved == (kids.lo[j][1] != dom.lo[j][0])).all())
    p = float(kids.hi[j][0][moved])
    assert p == float(kids.lo[j][1][moved])
    assert float(dom.lo[j][0][moved]) < p < float(dom.hi[j][0][moved])
    # p is the second largest upper bound of the window: in the upper child the split cell wins it outright
    _, exact_parent, _ = op.relaxation([(dom.lo[j], dom.hi[j])])
    _, exact_up, _ = op.relaxation([(kids.lo[j][1:], kids.hi[j][1:])])
    assert int(exact_up.sum()) == int(exact_parent.sum()) + 1


def test_splittable_cells_and_points():
    op = MaxPool2d(2)
    op.in_shapes, op.out_shape = [(1, 2, 4)], (1, 1, 2)
    # window 1: cells with u = 3, 2, 1, 0 (undecided: l of the top cell is 0 < 2); window 2: a decided winner
    l = torch.tensor([[[[0.0, -1.0, 5.0, 0.0], [-1.0, -2.0, 0.0, 1.0]]]], dtype=torch.float64)
    u = torch.tensor([[[[3.0, 2.0, 6.0, 1.0], [1.0, 0.0, 2.0, 3.0]]]], dtype=torch.float64)
    ok = op.splittable(l, u)
    assert ok.flatten().tolist() == [True, False, False, False, False, False, False, False]
    assert float(op.split_points(l, u).flatten()[0]) == 2.0
    # tied upper bounds: the top cell is halved instead
    u_tie = u.clone()
    u_tie[0, 0, 0, 1] = 3.0
    top = op.splittable(l, u_tie).flatten().nonzero().flatten().tolist()
    assert len(top) == 1
    i = top[0]
    assert float(op.split_points(l, u_tie).flatten()[i]) == pytest.approx((float(l.flatten()[i]) + 3.0) / 2)
    scores = op.branch_scores(torch.tensor([[[[2.0, -5.0]]]], dtype=torch.float64), l, u)
    assert float(scores.flatten()[0]) == pytest.approx(2.0 * (3.0 - 0.0), rel=1e-9)
    assert torch.isinf(scores.flatten()[1:]).all()


def test_leaves_with_every_window_decided_are_linear():
    net = pool_net(4)
    lo, hi = torch.full((N_IN,), 0.2, dtype=torch.float64), torch.full((N_IN,), 0.2, dtype=torch.float64)
    search = search_for(net, lo, hi, [1.0, -1.0], 0.0)
    assert leaf_is_linear(search, search.root_bounds)                  # a point: every window decided
    wide = search_for(net, lo - 1.0, hi + 1.0, [1.0, -1.0], 0.0)
    assert not leaf_is_linear(wide, wide.root_bounds)
