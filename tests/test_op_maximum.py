"""verifiers/bounds/ops/maximum.py: max / min of two computed tensors: the backward bound and IBP hold on random
boxes (crossing and separated intervals), sound network bounds, the method form, ONNX ``Max`` / ``Min`` of two
computed inputs against onnxruntime."""
import pytest
import torch
from torch import nn

from certkit.verifiers.bounds.ops.maximum import Maximum

from relaxation_checks import check_network_bounds, check_onnx_bounds


@pytest.mark.parametrize("with_alpha", [False, True], ids=["crown", "alpha"])
@pytest.mark.parametrize("minimum", [False, True])
def test_backward_bound_and_ibp_hold_on_random_boxes(minimum, with_alpha):
    """CROWN's lines, or alpha-CROWN's with a random lower weight per element and row (alpha_init reproduces
    CROWN's), bound the max / min below at sampled points; IBP contains it."""
    gen = torch.Generator().manual_seed(0)
    N = 400
    c = torch.randn(2, 1, N, generator=gen, dtype=torch.float64) * 2
    w = torch.rand(2, 1, N, generator=gen, dtype=torch.float64) ** 2 * 3
    bounds = [(c[0] - w[0], c[0] + w[0]), (c[1] - w[1], c[1] + w[1])]
    op = Maximum(minimum)
    A = torch.randn(1, 5, N, generator=gen, dtype=torch.float64)
    (A_x, A_y), bias = op.backward(A, bounds)
    init = op.alpha_init(bounds).unsqueeze(2).expand(-1, -1, 5, -1)
    (A_x1, A_y1), bias1 = op.backward(A, bounds, op.relaxation(bounds, init))
    torch.testing.assert_close((A_x1, A_y1, bias1), (A_x, A_y, bias))
    if with_alpha:
        alpha = torch.rand(1, 1, 5, N, generator=gen, dtype=torch.float64)
        (A_x, A_y), bias = op.backward(A, bounds, op.relaxation(bounds, alpha))
    lo, hi = op.ibp(*bounds)
    for _ in range(50):
        x = bounds[0][0] + torch.rand(1, N, generator=gen, dtype=torch.float64) * 2 * w[0]
        y = bounds[1][0] + torch.rand(1, N, generator=gen, dtype=torch.float64) * 2 * w[1]
        z = op.forward(x, y)
        assert (z >= lo).all() and (z <= hi).all()
        exact = (A * z[:, None]).sum(-1)
        linear = (A_x * x[:, None]).sum(-1) + (A_y * y[:, None]).sum(-1) + bias
        assert (linear <= exact + 1e-9).all()


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
