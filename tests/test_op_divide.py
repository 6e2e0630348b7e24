"""verifiers/bounds/ops/divide.py: x / y of two computed tensors (y > 0): the backward bound holds on sampled boxes,
sound network bounds with a broadcast denominator, LayerNorm written out and as torch exports it to ONNX (ReduceMean,
broadcast Sub, Pow, Sqrt, Div) against onnxruntime; a denominator reaching 0 gives no verdict."""
import pytest
import torch
from torch import nn

from certkit.common.errors import CertkitError
from certkit.verifiers import BoundedModule, linf_ball
from certkit.verifiers.bounds.ops.divide import Div

from relaxation_checks import check_network_bounds, check_onnx_bounds


@pytest.mark.parametrize("alpha", [None, "init", "zeros", "random"])
def test_backward_bound_holds_on_random_boxes(alpha):
    """CROWN's planes, alpha_init's (the same bound), and any plane weights and tangent points in [0, 1]."""
    gen = torch.Generator().manual_seed(0)
    N = 300
    cx = torch.randn(N, generator=gen, dtype=torch.float64) * 3
    wx = torch.rand(N, generator=gen, dtype=torch.float64) * 4
    ly = torch.rand(N, generator=gen, dtype=torch.float64) * 2 + 1e-3
    uy = ly + torch.rand(N, generator=gen, dtype=torch.float64) ** 2 * 5
    op = Div()
    op.in_shapes, op.out_shape = [(N,), (N,)], (N,)
    bounds = [(cx[None] - wx[None], cx[None] + wx[None]), (ly[None], uy[None])]
    A = torch.randn((1, 4, N), generator=gen, dtype=torch.float64)
    (A_x, A_y), bias = op.backward(A, bounds)
    if alpha is not None:
        init = op.alpha_init(bounds).unsqueeze(2).expand(-1, -1, 4, -1)
        a = {"init": init, "zeros": torch.zeros_like(init),
             "random": torch.rand(init.shape, generator=gen, dtype=torch.float64)}[alpha]
        crown = (A_x, A_y, bias)
        (A_x, A_y), bias = op.backward(A, bounds, op.relaxation(bounds, a))
        if alpha == "init":
            torch.testing.assert_close((A_x, A_y, bias), crown)
    t = torch.rand((64, N), generator=gen, dtype=torch.float64)
    s = torch.rand((64, N), generator=gen, dtype=torch.float64)
    x = bounds[0][0] + t * (2 * wx)
    y = ly + s * (uy - ly)
    exact = torch.einsum("sn,kn->sk", A[0], x / y)
    linear = torch.einsum("sn,kn->sk", A_x[0], x) + torch.einsum("sn,kn->sk", A_y[0], y) + bias[0, :, None]
    assert (linear <= exact + 1e-9 * (1 + exact.abs())).all()
    lo, hi = op.ibp(*bounds)
    assert (x / y >= lo).all() and (x / y <= hi).all()


class Normalized(nn.Module):
    """(h - mean) / sqrt(var + eps) per sample, written out (a LayerNorm without affine parameters)."""

    def __init__(self, d_in=4, hidden=6, d_out=2):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d_in, hidden), nn.Linear(hidden, d_out)

    def forward(self, x):
        h = self.fc1(x)
        c = h - h.mean(1, keepdim=True)
        return self.fc2(c / torch.sqrt((c ** 2).mean(1, keepdim=True) + 1e-1))


def test_quotient_of_large_values_is_tight():
    """x / y with x ~ 1e5, y ~ 2e5 (a normalization x / sum(x) of large values): the backward lower bound is within
    the relaxation's own error of the true minimum: McCormick's (ux - lx)(ur - lr) plus lx times the tangent's gap
    (uy - ly)^2 / (8 ly^3) and the outward shift 1e-6 ur lx, together below 1e-4 here (an absolute shift of the
    reciprocal's lines, 1e-6, cost 0.1 = 20% of the value)."""
    op = Div()
    op.in_shapes, op.out_shape = [(1,), (1,)], (1,)
    lx, ux = torch.tensor([[1.0e5]], dtype=torch.float64), torch.tensor([[1.01e5]], dtype=torch.float64)
    ly, uy = torch.tensor([[2.0e5]], dtype=torch.float64), torch.tensor([[2.02e5]], dtype=torch.float64)
    A = torch.ones((1, 1, 1), dtype=torch.float64)
    (A_x, A_y), bias = op.backward(A, [(lx, ux), (ly, uy)])
    xs, ys = torch.meshgrid(torch.linspace(1.0e5, 1.01e5, 101, dtype=torch.float64),
                            torch.linspace(2.0e5, 2.02e5, 101, dtype=torch.float64), indexing="ij")
    linear = A_x[0, 0, 0] * xs + A_y[0, 0, 0] * ys + bias[0, 0]
    assert (linear <= xs / ys + 1e-12).all()                     # sound on the box
    assert float((xs / ys - linear).min()) < 1e-4                 # and tight: it touches within the error budget


def test_network_bounds_with_a_broadcast_denominator():
    torch.manual_seed(0)
    check_network_bounds(Normalized().double().eval(), 4, eps=0.05)


def test_layer_norm_exported_to_onnx_is_bounded(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.ReLU(), nn.Linear(6, 2)).eval()
    check_onnx_bounds(net, 4, tmp_path / "layernorm.onnx", eps=0.02)


def test_a_denominator_reaching_zero_gives_no_verdict():
    class Bad(nn.Module):
        def forward(self, x):
            return x[:, :1] / x[:, 1:]

    x = torch.tensor([[1.0, 0.05]], dtype=torch.float64)
    with pytest.raises(CertkitError, match="NaN or inf"):
        BoundedModule(Bad(), (2,)).compute_bounds(linf_ball(x, 0.1, None), None, "CROWN")
