"""verifiers/bounds/ops/bilinear.py: the McCormick planes of x * y checked on sampled points of random boxes (and
exact at the corners), sound network bounds for gated products and squares (sampling and PGD), the ONNX Mul of two
computed tensors checked against onnxruntime."""
import torch
from torch import nn

from certkit.verifiers.bounds.ops.bilinear import Mul

from relaxation_checks import check_network_bounds, check_onnx_bounds


def test_backward_rule_bounds_the_product_on_the_box():
    gen = torch.Generator().manual_seed(0)
    op = Mul()
    op.in_shapes, op.out_shape = [(7,), (7,)], (7,)
    B, S = 4, 5
    cx, cy = (torch.randn((B, 7), generator=gen, dtype=torch.float64) * 2 for _ in range(2))
    wx, wy = (torch.rand((B, 7), generator=gen, dtype=torch.float64) * 3 for _ in range(2))
    bounds = [(cx - wx, cx + wx), (cy - wy, cy + wy)]
    A = torch.randn((B, S, 7), generator=gen, dtype=torch.float64)
    (A_x, A_y), bias = op.backward(A, bounds)
    t = torch.rand((2, 2000, B, 7), generator=gen, dtype=torch.float64)
    x = bounds[0][0] + t[0] * (bounds[0][1] - bounds[0][0])
    y = bounds[1][0] + t[1] * (bounds[1][1] - bounds[1][0])
    lhs = (A[None] * (x * y)[:, :, None]).sum(-1)
    rhs = (A_x[None] * x[:, :, None]).sum(-1) + (A_y[None] * y[:, :, None]).sum(-1) + bias
    assert (lhs >= rhs - 1e-9).all()
    lo, hi = op.ibp(*bounds)
    assert ((x * y) >= lo - 1e-12).all() and ((x * y) <= hi + 1e-12).all()
    # the lower plane is exact at (lx, y) and (x, ly): with A >= 0 and a degenerate x-interval the bound is exact
    point = [(bounds[0][0], bounds[0][0]), bounds[1]]
    (A_x, A_y), bias = op.backward(A.abs(), point)
    lhs = (A.abs() * (bounds[0][0] * bounds[1][0])[:, None]).sum(-1)
    rhs = (A_x * bounds[0][0][:, None]).sum(-1) + (A_y * bounds[1][0][:, None]).sum(-1) + bias
    torch.testing.assert_close(lhs, rhs)


class Gated(nn.Module):
    """A gated unit, tanh(W1 x) * sigmoid(W2 x), and a square, h * h."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b, self.c, self.out = nn.Linear(5, 8), nn.Linear(5, 8), nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x):
        g = torch.tanh(self.a(x)) * torch.sigmoid(self.b(x))
        h = self.c(g)
        return self.out(h * h)


def test_network_bounds_contain_sampled_and_attacked_outputs():
    check_network_bounds(Gated().double().eval(), 5)


def test_onnx_product_imports_and_bounds_contain_onnxruntime_outputs(tmp_path):
    check_onnx_bounds(Gated().eval(), 5, tmp_path / "gated.onnx")


def test_broadcast_product_backward_and_network_bounds(tmp_path):
    """Features (n, d) times a per-row mask (n, 1) computed from the same input (the set-encoder pattern of MSCN):
    the backward bound holds at sampled points with each operand's coefficients in its own shape, and network
    bounds are sound (sampling, PGD, ONNX against onnxruntime)."""
    gen = torch.Generator().manual_seed(1)
    op = Mul()
    op.in_shapes, op.out_shape = [(3, 6), (3, 1)], (3, 6)
    B, S = 2, 4
    cx, wx = torch.randn((B, 3, 6), generator=gen, dtype=torch.float64), torch.rand((B, 3, 6), generator=gen) * 2
    cy, wy = torch.randn((B, 3, 1), generator=gen, dtype=torch.float64), torch.rand((B, 3, 1), generator=gen) * 2
    bounds = [(cx - wx, cx + wx), (cy - wy, cy + wy)]
    A = torch.randn((B, S, 3, 6), generator=gen, dtype=torch.float64)
    (A_x, A_y), bias = op.backward(A, bounds)
    assert A_x.shape == (B, S, 3, 6) and A_y.shape == (B, S, 3, 1)
    t = torch.rand((2, 1000, B, 3, 6), generator=gen, dtype=torch.float64)
    x = bounds[0][0] + t[0] * (bounds[0][1] - bounds[0][0])
    y = bounds[1][0] + t[1][..., :1] * (bounds[1][1] - bounds[1][0])
    lhs = (A[None] * (x * y)[:, :, None]).flatten(3).sum(-1)
    rhs = (A_x[None] * x[:, :, None]).flatten(3).sum(-1) + (A_y[None] * y[:, :, None]).flatten(3).sum(-1) + bias
    assert (lhs >= rhs - 1e-9).all()

    class Masked(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.f, self.m, self.out = nn.Linear(4, 6), nn.Linear(4, 1), nn.Linear(6, 2)

        def forward(self, x):                       # x (B, 3, 4): three set elements
            h = torch.relu(self.f(x)) * torch.sigmoid(self.m(x))
            return self.out(h.sum(1))
    check_network_bounds(Masked().double().eval(), (3, 4))
    check_onnx_bounds(Masked().eval(), (3, 4), tmp_path / "masked.onnx")


def test_crown_planes_halve_the_largest_gap_of_either_mccormick_plane():
    """CROWN's planes are the minimax ones: on every box their gap to x * y is at most (ux - lx)(uy - ly) / 2 and
    reaches it at two corners, where either McCormick plane alone gaps by up to (ux - lx)(uy - ly); below, above
    and exact where the box is flat in x."""
    gen = torch.Generator().manual_seed(2)
    op = Mul()
    op.in_shapes, op.out_shape = [(50,), (50,)], (50,)
    cx, cy = (torch.randn((1, 50), generator=gen, dtype=torch.float64) * 2 for _ in range(2))
    wx, wy = (torch.rand((1, 50), generator=gen, dtype=torch.float64) * 3 + 0.1 for _ in range(2))
    bounds = [(cx - wx, cx + wx), (cy - wy, cy + wy)]
    (ax_l, ay_l, c_l), (ax_u, ay_u, c_u) = op.relaxation(bounds)
    area = (2 * wx) * (2 * wy)
    gaps = []
    for x in bounds[0]:
        for y in bounds[1]:
            low, up = ax_l * x + ay_l * y + c_l, ax_u * x + ay_u * y + c_u
            gaps += [x * y - low, up - x * y]
    gaps = torch.stack(gaps)
    assert (gaps >= -1e-12).all()
    torch.testing.assert_close(gaps.amax(0), area / 2)
    flat = [(bounds[0][0], bounds[0][0]), bounds[1]]
    (ax_l, ay_l, c_l), (ax_u, ay_u, c_u) = op.relaxation(flat)
    y = bounds[1][0] + torch.rand((1, 50), generator=gen, dtype=torch.float64) * 2 * wy
    torch.testing.assert_close(ax_l * flat[0][0] + ay_l * y + c_l, flat[0][0] * y)
    torch.testing.assert_close(ax_u * flat[0][0] + ay_u * y + c_u, flat[0][0] * y)


def test_alpha_planes_bound_the_product_and_alpha_init_is_crown():
    """Any weights in [0, 1] of the two lower (upper) planes give a sound bound at sampled points and at the box's
    corners; alpha_init reproduces CROWN's planes."""
    gen = torch.Generator().manual_seed(1)
    op = Mul()
    op.in_shapes, op.out_shape = [(6,), (6,)], (6,)
    B, S = 3, 4
    cx, cy = (torch.randn((B, 6), generator=gen, dtype=torch.float64) * 2 for _ in range(2))
    wx, wy = (torch.rand((B, 6), generator=gen, dtype=torch.float64) * 3 for _ in range(2))
    bounds = [(cx - wx, cx + wx), (cy - wy, cy + wy)]
    A = torch.randn((B, S, 6), generator=gen, dtype=torch.float64)
    init = op.alpha_init(bounds).unsqueeze(2).expand(-1, -1, S, -1)
    torch.testing.assert_close(op.backward(A, bounds, op.relaxation(bounds, init)), op.backward(A, bounds))
    for alpha in (torch.zeros_like(init), torch.rand(init.shape, generator=gen, dtype=torch.float64)):
        (A_x, A_y), bias = op.backward(A, bounds, op.relaxation(bounds, alpha))
        t = torch.rand((2, 1000, B, 6), generator=gen, dtype=torch.float64)
        x = bounds[0][0] + t[0] * (bounds[0][1] - bounds[0][0])
        y = bounds[1][0] + t[1] * (bounds[1][1] - bounds[1][0])
        lhs = (A[None] * (x * y)[:, :, None]).sum(-1)
        rhs = (A_x[None] * x[:, :, None]).sum(-1) + (A_y[None] * y[:, :, None]).sum(-1) + bias
        assert (lhs >= rhs - 1e-9).all()
