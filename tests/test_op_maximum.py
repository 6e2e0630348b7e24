"""verifiers/bounds/ops/maximum.py: max / min of two computed tensors: the backward bound and IBP hold on random
boxes (crossing and separated intervals), sound network bounds, the method form, ONNX ``Max`` / ``Min`` of two
computed inputs against onnxruntime."""
import pytest
import torch
from torch import nn

from certkit.verifiers.bounds.ops.maximum import Maximum

from relaxation_checks import check_network_bounds, check_onnx_bounds


def feasible_sample(bounds, gen):
    """x, y (1, N) uniform in their intervals, redrawn per element until d = x - y lies in its interval (after 100
    draws: the point x = clamp(ly + ld, lx, ux), y = x - ld, which has d = ld up to rounding)."""
    (ld, ud), (lx, ux), (ly, uy) = bounds
    x, y = lx.clone(), ly.clone()
    todo = torch.ones_like(lx, dtype=torch.bool)
    for _ in range(100):
        xs = lx + torch.rand(lx.shape, generator=gen, dtype=lx.dtype) * (ux - lx)
        ys = ly + torch.rand(ly.shape, generator=gen, dtype=ly.dtype) * (uy - ly)
        take = todo & (xs - ys >= ld) & (xs - ys <= ud)
        x, y, todo = torch.where(take, xs, x), torch.where(take, ys, y), todo & ~take
    x0 = torch.minimum(torch.maximum(ly + ld, lx), ux)
    return torch.where(todo, x0, x), torch.where(todo, torch.minimum(torch.maximum(x0 - ld, ly), uy), y)


@pytest.mark.parametrize("with_alpha", [False, True], ids=["crown", "alpha"])
@pytest.mark.parametrize("minimum", [False, True])
def test_backward_bound_and_ibp_hold_on_random_boxes(minimum, with_alpha):
    """CROWN's lines, or alpha-CROWN's with a random lower weight per element and row (alpha_init reproduces
    CROWN's), bound the max / min below at sampled points; IBP contains it. The difference d = x - y has the interval
    of its operands, or one narrowed as branch and bound does (d >= 0, d <= 0, or d above a random point); the
    points sampled have d in its interval."""
    gen = torch.Generator().manual_seed(0)
    N = 400
    c = torch.randn(2, 1, N, generator=gen, dtype=torch.float64) * 2
    w = torch.rand(2, 1, N, generator=gen, dtype=torch.float64) ** 2 * 3
    (lx, ux), (ly, uy) = (c[0] - w[0], c[0] + w[0]), (c[1] - w[1], c[1] + w[1])
    ld, ud = lx - uy, ux - ly
    kind = torch.randint(0, 4, (1, N), generator=gen)
    cut = ld + torch.rand(1, N, generator=gen, dtype=torch.float64) * (ud - ld)
    crossing = (ld < 0) & (ud > 0)
    ld, ud = (torch.where((kind == 1) & crossing, torch.zeros_like(ld), torch.where(kind == 3, cut, ld)),
              torch.where((kind == 2) & crossing, torch.zeros_like(ud), ud))
    bounds = [(ld, ud), (lx, ux), (ly, uy)]
    op = Maximum(minimum)
    A = torch.randn(1, 5, N, generator=gen, dtype=torch.float64)
    (A_d, A_x, A_y), bias = op.backward(A, bounds)
    assert A_d is None
    init = op.alpha_init(bounds).unsqueeze(2).expand(-1, -1, 5, -1)
    (_, A_x1, A_y1), bias1 = op.backward(A, bounds, op.relaxation(bounds, init))
    torch.testing.assert_close((A_x1, A_y1, bias1), (A_x, A_y, bias))
    if with_alpha:
        alpha = torch.rand(1, 1, 5, N, generator=gen, dtype=torch.float64)
        (_, A_x, A_y), bias = op.backward(A, bounds, op.relaxation(bounds, alpha))
    lo, hi = op.ibp(*bounds)
    for _ in range(50):
        x, y = feasible_sample(bounds, gen)
        z = op.forward(x - y, x, y)
        assert (z >= lo).all() and (z <= hi).all()
        exact = (A * z[:, None]).sum(-1)
        linear = (A_x * x[:, None]).sum(-1) + (A_y * y[:, None]).sum(-1) + bias
        assert (linear <= exact + 1e-9).all()


def test_a_narrowed_difference_tightens_ibp_and_decides_the_relaxation():
    """With d = x - y known to be <= 0 (a split), max(x, y) = y exactly: IBP gives y's interval and the lines are
    exact; without it, the operands' intervals give the wider [max(lx, ly), max(ux, uy)]."""
    lx, ux, ly, uy = (torch.tensor([[v]], dtype=torch.float64) for v in (0.0, 2.0, 0.5, 1.5))
    op = Maximum()
    free = [(lx - uy, ux - ly), (lx, ux), (ly, uy)]
    split = [(lx - uy, torch.zeros_like(lx)), (lx, ux), (ly, uy)]
    assert [float(t) for t in op.ibp(*free)] == [0.5, 2.0]
    assert [float(t) for t in op.ibp(*split)] == [0.5, 1.5]
    A = torch.tensor([1.0, -1.0], dtype=torch.float64).reshape(1, 2, 1)
    (_, A_x, A_y), bias = op.backward(A, split)
    assert A_x.flatten().tolist() == [0.0, 0.0] and A_y.flatten().tolist() == [1.0, -1.0]
    assert bias.flatten().tolist() == [0.0, 0.0]
    assert op.splittable(*free[0]).item() and not op.splittable(*split[0]).item()
    assert float(op.split_points(*free[0])) == 0.0


class MaxNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.out = nn.Linear(4, 6), nn.Linear(4, 6), nn.Linear(12, 2)

    def forward(self, x):
        p, q = self.a(x), self.b(x)
        return self.out(torch.cat([torch.maximum(p, q), p.minimum(q)], 1))


def test_network_bounds_contain_sampled_and_attacked_outputs():
    torch.manual_seed(0)
    check_network_bounds(MaxNet().double().eval(), 4)


def test_onnx_max_min_import_and_bounds_contain_onnxruntime_outputs(tmp_path):
    torch.manual_seed(0)
    check_onnx_bounds(MaxNet().eval(), 4, tmp_path / "maxmin.onnx")
