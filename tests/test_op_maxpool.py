"""verifiers/bounds/ops/maxpool.py: the window relaxation against brute force (lines below / above the max on sampled
points, exact where the winner is decided), sound IBP / CROWN / alpha-CROWN bounds on CNNs with max pooling
(overlapping windows and padding; sampling and PGD), the functional form, refused options, and ONNX ``MaxPool``
checked against onnxruntime."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from certkit.verifiers import BoundedModule, check_model, linf_ball
from certkit.verifiers.bounds.ops.maxpool import MaxPool2d

from relaxation_checks import assert_same_bounds, check_network_bounds


@pytest.mark.parametrize("k,s,p", [(2, 2, 0), (3, 1, 1), (3, 2, 1), (2, 1, 0)])
def test_backward_rule_bounds_the_max_at_sampled_points(k, s, p):
    """For random boxes and coefficient tensors A of both signs: sum(A * maxpool(z)) >= sum(A_in * z) + bias at every
    sampled z in the box (and at every box corner of a decided window: there the lines are exact)."""
    gen = torch.Generator().manual_seed(k * 10 + s + p)
    op = MaxPool2d(k, s, p)
    op.in_shapes = [(2, 6, 6)]
    op.out_shape = tuple(F.max_pool2d(torch.zeros(1, 2, 6, 6), k, s, p).shape[1:])
    B, S = 3, 4
    c = torch.randn((B, 2, 6, 6), generator=gen, dtype=torch.float64)
    w = torch.rand((B, 2, 6, 6), generator=gen, dtype=torch.float64) ** 2 * 2
    l, u = c - w, c + w
    A = torch.randn((B, S) + op.out_shape, generator=gen, dtype=torch.float64)
    (A_in,), bias = op.backward(A, [(l, u)])
    z = l + (u - l) * torch.rand((500, B, 2, 6, 6), generator=gen, dtype=torch.float64)
    z = torch.cat([z, l[None], u[None]])
    y = F.max_pool2d(z.reshape(-1, 2, 6, 6), k, s, p).reshape((z.shape[0], B) + op.out_shape)
    lhs = (A[None] * y[:, :, None]).flatten(3).sum(-1)
    rhs = (A_in[None] * z[:, :, None]).flatten(3).sum(-1) + bias
    assert (lhs >= rhs - 1e-9).all()
    lo, hi = op.ibp((l, u))
    assert (y >= lo - 1e-12).all() and (y <= hi + 1e-12).all()
    # a decided window is exact: with every input fixed (l = u), the bound equals the value
    (A_fix,), b_fix = op.backward(A, [(c, c)])
    y_c = F.max_pool2d(c, k, s, p)
    torch.testing.assert_close((A * y_c[:, None]).flatten(2).sum(-1), (A_fix * c[:, None]).flatten(2).sum(-1) + b_fix)


def _cnn(pool: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), pool, nn.Conv2d(4, 4, 3), nn.ReLU(),
                             nn.MaxPool2d(2), nn.Flatten())
    width = features(torch.zeros(1, 1, 8, 8)).shape[1]
    return nn.Sequential(*features, nn.Linear(width, 3)).double().eval()


@pytest.mark.parametrize("pool", [nn.MaxPool2d(2), nn.MaxPool2d(3, stride=1, padding=1)], ids=["2x2", "3x3-s1-p1"])
def test_network_bounds_contain_sampled_and_attacked_outputs(pool):
    check_network_bounds(_cnn(pool), (1, 8, 8), rows=2, eps=0.05, samples=3000)


def test_functional_form_and_refused_options():
    class Fn(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(1, 2, 3), nn.Linear(2 * 3 * 3, 2)

        def forward(self, x):
            return self.fc(F.max_pool2d(torch.relu(self.conv(x)), 2, stride=2).flatten(1))

    torch.manual_seed(1)
    f = Fn().double()
    assert_same_bounds(f, nn.Sequential(f.conv, nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), f.fc).double(), (1, 8, 8))
    problems = check_model(nn.Sequential(nn.MaxPool2d(2, dilation=2)), (1, 8, 8))
    assert problems and "dilation" in problems[0]


def test_onnx_maxpool_imports_and_bounds_contain_onnxruntime_outputs(tmp_path):
    pytest.importorskip("onnxruntime")
    from certkit.models.onnx_import import load_onnx

    from conftest import export_onnx

    net = _cnn(nn.MaxPool2d(3, stride=2, padding=1)).float()
    path = tmp_path / "maxpool.onnx"
    export_onnx(net, torch.rand(1, 1, 8, 8), path)
    model = load_onnx(path)
    assert check_model(model.module, model.sample_shape) == []
    gen = torch.Generator().manual_seed(2)
    x = torch.rand((2, 1, 8, 8), generator=gen)
    bm = BoundedModule(model.module.double(), (1, 8, 8))
    lb, ub = bm.compute_bounds(linf_ball(x.double(), 0.05, None), None, "CROWN")
    pts = (x[:, None] - 0.05 + 0.1 * torch.rand((2, 200, 1, 8, 8), generator=gen)).reshape(-1, 1, 8, 8)
    ref = torch.from_numpy(model.run_onnxruntime(pts)).double().reshape(2, 200, 3)
    assert (ref >= lb[:, None] - 1e-4).all() and (ref <= ub[:, None] + 1e-4).all()


@pytest.mark.parametrize("k,s,p", [(2, 2, 0), (3, 1, 1)])
def test_alpha_weights_anywhere_in_the_simplex_give_sound_lines(k, s, p):
    """alpha-CROWN's lower line, a convex combination of each window's real cells: sound at sampled points for random
    alphas (some all zero, padding cells given weight that must be ignored), and alpha_init reproduces CROWN."""
    gen = torch.Generator().manual_seed(7 + k + p)
    op = MaxPool2d(k, s, p)
    op.in_shapes = [(2, 6, 6)]
    op.out_shape = tuple(F.max_pool2d(torch.zeros(1, 2, 6, 6), k, s, p).shape[1:])
    B, S = 3, 4
    c = torch.randn((B, 2, 6, 6), generator=gen, dtype=torch.float64)
    w = torch.rand((B, 2, 6, 6), generator=gen, dtype=torch.float64) ** 2 * 2
    l, u = c - w, c + w
    A = torch.randn((B, S) + op.out_shape, generator=gen, dtype=torch.float64)
    init = op.alpha_init([(l, u)])
    assert init.shape == (k * k, B) + op.out_shape
    (A0,), b0 = op.backward(A, [(l, u)])
    (A1,), b1 = op.backward(A, [(l, u)], op.relaxation([(l, u)], init.unsqueeze(2).expand(-1, -1, S, -1, -1, -1)))
    torch.testing.assert_close(A1, A0)
    torch.testing.assert_close(b1, b0)
    alpha = torch.rand((k * k, B, S) + op.out_shape, generator=gen, dtype=torch.float64)
    alpha[:, 0, 0] = 0.0                                      # all zero: falls back to the winner
    (A_in,), bias = op.backward(A, [(l, u)], op.relaxation([(l, u)], alpha))
    z = l + (u - l) * torch.rand((500, B, 2, 6, 6), generator=gen, dtype=torch.float64)
    y = F.max_pool2d(z.reshape(-1, 2, 6, 6), k, s, p).reshape((z.shape[0], B) + op.out_shape)
    lhs = (A[None] * y[:, :, None]).flatten(3).sum(-1)
    rhs = (A_in[None] * z[:, :, None]).flatten(3).sum(-1) + bias
    assert (lhs >= rhs - 1e-9).all()


def test_alpha_crown_through_max_pooling_is_sound_and_tighter_than_crown():
    """A conv + max-pool + linear net (the pooling is the only op with alphas): alpha-CROWN's lower bounds are sound
    (sampled points) and strictly tighter than CROWN's somewhere."""
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(3 * 4 * 4, 4)).double()
    x = torch.rand((4, 1, 8, 8), dtype=torch.float64)
    pert = linf_ball(x, 0.3, None)
    bm = BoundedModule(net, (1, 8, 8))
    crown, _ = bm.compute_bounds(pert, None, "CROWN")
    with torch.enable_grad():
        alpha, _ = bm.compute_bounds(pert, None, "alpha-CROWN", alpha_iterations=40)
    u = torch.rand((3000,) + x.shape, dtype=torch.float64)
    ys = net((pert.x_L + u * (pert.x_U - pert.x_L)).reshape(-1, 1, 8, 8)).reshape(3000, 4, 4).detach()
    assert (ys >= alpha.detach() - 1e-9).all()
    assert (alpha >= crown - 1e-9).all() and (alpha > crown + 1e-3).any()
