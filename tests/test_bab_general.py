"""Branch and bound through the non-piecewise-linear ops that are not elementwise activations (GenBaB-style splits of
verifiers/bounds/ops/bilinear.py, matmul.py, divide.py, softmax.py, and the window split of reduce_max.py): on
networks with two inputs, whose minimum over the box a 401 x 401 grid pins down, a threshold below it that
alpha-CROWN alone cannot prove is proved, and one above it is falsified by a checked point."""

import copy

import pytest
import torch
from torch import nn

from certkit.verifiers import BoundedModule
from certkit.verifiers.complete.beta_crown import ActivationBaB

from test_bab import assert_decides_around


class MulNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.out = nn.Linear(2, 6), nn.Linear(2, 6), nn.Linear(6, 2)

    def forward(self, x):
        return self.out(self.a(x) * self.b(x))


class MatMulNet(nn.Module):
    """Attention-like: (2 x 3) @ (3 x 2) of two computed matrices."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.out = nn.Linear(2, 6), nn.Linear(2, 6), nn.Linear(4, 2)

    def forward(self, x):
        p, q = self.a(x).view(-1, 2, 3), self.b(x).view(-1, 3, 2)
        return self.out(torch.matmul(p, q).flatten(1))


class DivNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.out = nn.Linear(2, 6), nn.Linear(2, 6), nn.Linear(6, 2)

    def forward(self, x):
        return self.out(self.a(x) / (0.5 * self.b(x) + 2.0))   # the denominator stays above 0.9 on the box


class SoftmaxNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.out = nn.Linear(2, 6), nn.Linear(6, 2)

    def forward(self, x):
        return self.out(torch.softmax(3.0 * self.a(x), -1))


class ReduceMaxNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.out = nn.Linear(2, 8), nn.Linear(2, 2)

    def forward(self, x):
        return self.out(self.a(x).view(-1, 2, 4).amax(-1))


SMALL, WIDE = ((-1.0, -0.5), (0.5, 1.0)), ((-2.0, -1.0), (1.0, 2.0))
# net, the op it branches on, the input box (on the small box alpha-CROWN alone nearly closes the quotient's gap),
# the share of CROWN's root gap left below the optimum for the unsat threshold (MatMulNet: the midpoint planes leave
# a gap of 0.39, whose 15% is the 0.06 margin that 10% of the first planes' 0.60 gave; at 10% of it neither proves
# the threshold within 100k subdomains)
NETS = {"mul": (MulNet, "Mul", SMALL, 0.1), "matmul": (MatMulNet, "MatMul", SMALL, 0.15),
        "div": (DivNet, "Div", WIDE, 0.1), "softmax": (SoftmaxNet, "Softmax", SMALL, 0.1),
        "reducemax": (ReduceMaxNet, "ReduceMax", SMALL, 0.1)}
C = [1.0, -1.0]


def grid_min(net: nn.Module, lo: torch.Tensor, hi: torch.Tensor) -> float:
    t = torch.linspace(0, 1, 401, dtype=torch.float64)
    g = torch.stack(torch.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        return float((net(lo + g * (hi - lo)) @ torch.tensor(C, dtype=torch.float64)).min())


def search_for(net, lo, hi, d, fast: bool = False, **kw) -> ActivationBaB:
    """An ActivationBaB for C . f(x) <= d; ``fast``: alpha and beta optimised on a float32 copy of ``net``."""
    twin = BoundedModule(copy.deepcopy(net).float(), (2,)) if fast else None
    return ActivationBaB(BoundedModule(net, (2,)), lo, hi, torch.tensor([C], dtype=torch.float64),
                         torch.tensor([d], dtype=torch.float64), fast=twin, **kw)


@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize("name", list(NETS))
def test_splits_prove_below_and_falsify_above_the_minimum(name, fast):
    cls, op_name, box, left = NETS[name]
    torch.manual_seed(1)
    net = cls().double().eval()
    lo, hi = (torch.tensor(b, dtype=torch.float64) for b in box)
    opt = grid_min(net, lo, hi)
    search = search_for(net, lo, hi, 0.0, branching="babsr")
    ops = {search.g.nodes[a].op.name for a, _, _ in search.splits}
    assert ops == {op_name}, f"{op_name} is a split variable"
    dom = search.root()
    with torch.no_grad():
        root = float(search._lower(dom)[0][0, 0])     # CROWN: the thresholds are placed in its gap
    search.optimize(dom, search.root_iterations)        # alpha-CROWN at the root, as the search starts
    assert float(dom.score[0]) < opt - left * (opt - root), "alpha-CROWN alone must not prove the unsat threshold"
    assert_decides_around(lambda d: search_for(net, lo, hi, d, fast, branching="babsr"), net, C, opt, root, left)
