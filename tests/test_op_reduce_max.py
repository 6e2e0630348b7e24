"""verifiers/bounds/ops/reduce_max.py: max / min over dimensions: the backward bound and IBP hold on random boxes
(degenerate, tiny and very wide intervals, decided and undecided winners), sound network bounds (sampling and PGD),
the method forms and keepdim, ONNX ``ReduceMax`` / ``ReduceMin`` against onnxruntime."""
import pytest
import torch
from torch import nn

from certkit.verifiers.bounds.ops.reduce_max import ReduceMax

from relaxation_checks import check_network_bounds, check_onnx_bounds


@pytest.mark.parametrize("with_alpha", [False, True], ids=["crown", "alpha"])
@pytest.mark.parametrize("minimum", [False, True])
@pytest.mark.parametrize("dims,keepdim", [((2,), False), ((1, 3), True), ((3,), True)])
@pytest.mark.parametrize("width", [0.0, 1e-6, 0.5, 1e3])
def test_backward_bound_and_ibp_hold_on_random_boxes(minimum, dims, keepdim, width, with_alpha):
    """CROWN's lines, or alpha-CROWN's with random convex weights per group and row (alpha_init reproduces CROWN's,
    all-zero alphas fall back to the winner), bound the max / min at sampled points; IBP contains it."""
    gen = torch.Generator().manual_seed(0)
    shape = (3, 4, 5)
    c = torch.randn((2,) + shape, generator=gen, dtype=torch.float64) * 2
    w = torch.rand((2,) + shape, generator=gen, dtype=torch.float64) ** 2 * width
    l, u = c - w, c + w
    op = ReduceMax(dims, keepdim, minimum)
    op.in_shapes = [shape]
    lo, hi = op.ibp((l, u))
    op.out_shape = tuple(lo.shape[1:])
    A = torch.randn((2, 6) + op.out_shape, generator=gen, dtype=torch.float64)
    (A_in,), bias = op.backward(A, [(l, u)])
    init = op.alpha_init([(l, u)])
    assert init.shape == (op.n_alpha, 2) + op.out_shape
    per_row = init.unsqueeze(2).expand(-1, -1, 6, *op.out_shape)
    (A_1,), bias_1 = op.backward(A, [(l, u)], op.relaxation([(l, u)], per_row))
    torch.testing.assert_close((A_1, bias_1), (A_in, bias))
    if with_alpha:
        alpha = torch.rand((op.n_alpha, 2, 6) + op.out_shape, generator=gen, dtype=torch.float64)
        alpha[:, 0, 0] = 0.0
        (A_in,), bias = op.backward(A, [(l, u)], op.relaxation([(l, u)], alpha))
    assert A_in.shape == (2, 6) + shape
    for _ in range(60):
        x = l + torch.rand(l.shape, generator=gen, dtype=torch.float64) * (u - l)
        z = op.forward(x)
        assert (z >= lo).all() and (z <= hi).all()
        exact = (A * z[:, None]).flatten(2).sum(-1)
        linear = (A_in * x[:, None]).flatten(2).sum(-1) + bias
        assert (linear <= exact + 1e-9 * (1 + exact.abs())).all()
    if width == 0.0:  # a point: every winner decided, the bound is exact
        z = op.forward(c)
        assert torch.allclose((A_in * c[:, None]).flatten(2).sum(-1) + bias, (A * z[:, None]).flatten(2).sum(-1))


class MaxNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.out = nn.Linear(4, 12), nn.Linear(5, 2)

    def forward(self, x):
        h = self.a(x).reshape(-1, 3, 4)
        return self.out(torch.cat([torch.amax(h, dim=1), h.amin(dim=(1, 2), keepdim=True)[:, 0, :]
                                   + h.amax(-1)[:, :1]], 1))


def test_network_bounds_contain_sampled_and_attacked_outputs():
    torch.manual_seed(0)
    check_network_bounds(MaxNet().double().eval(), 4)


def test_onnx_reduce_max_min_import_and_bounds_contain_onnxruntime_outputs(tmp_path):
    torch.manual_seed(0)
    check_onnx_bounds(MaxNet().eval(), 4, tmp_path / "reducemax.onnx")
