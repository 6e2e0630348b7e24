"""verifiers/bounds/ops/leaky_relu.py: relaxation on a dense interval grid, sound IBP / CROWN / alpha-CROWN bounds on a
network (sampling and PGD), the functional form, and ONNX import checked against onnxruntime."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from certkit.verifiers import METHODS, BoundedModule, check_model, linf_ball
from certkit.verifiers.attack import pgd_box
from certkit.verifiers.bounds.ops.leaky_relu import LeakyReLU

from conftest import export_onnx
from relaxation_checks import check_activation


@pytest.mark.parametrize("slope", [0.0, 0.01, 0.2, 1.0])
def test_leaky_relu_relaxation_is_sound_on_every_interval(slope):
    check_activation(LeakyReLU(slope))


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 16), nn.LeakyReLU(0.1), nn.Linear(16, 16), nn.LeakyReLU(0.1),
                         nn.Linear(16, 3)).double().eval()


def test_network_bounds_contain_sampled_and_attacked_outputs():
    net = _net()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((3, 5), generator=gen, dtype=torch.float64)
    pert = linf_ball(x, 0.2, None)
    bm = BoundedModule(net, (5,))
    u = torch.rand((5000, 3, 5), generator=gen, dtype=torch.float64)
    ys = net((pert.x_L + u * (pert.x_U - pert.x_L)).reshape(-1, 5)).reshape(5000, 3, 3).detach()
    bounds = {}
    for m in METHODS:
        with torch.enable_grad():
            lb, ub = bm.compute_bounds(pert, None, m)
        lb, ub = lb.detach(), ub.detach()
        bounds[m] = lb
        assert (ys >= lb - 1e-9).all() and (ys <= ub + 1e-9).all(), m
        for k in range(3):
            for sign in (1.0, -1.0):
                xa, _ = pgd_box(lambda z, sign=sign, k=k: sign * net(z)[:, k], pert.x_L, pert.x_U, steps=30, restarts=2,
                                generator=gen, early_stop=False)
                yk = net(xa)[:, k].detach()
                assert (yk >= lb[:, k] - 1e-9).all() and (yk <= ub[:, k] + 1e-9).all(), (m, k)
    assert (bounds["alpha-CROWN"] >= bounds["CROWN"] - 1e-9).all()
    assert (bounds["alpha-CROWN"] > bounds["CROWN"] + 1e-6).any()  # the lower slopes are optimised


def test_functional_form_is_bounded_like_the_module():
    class Fn(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(8, 2)

        def forward(self, x):
            return self.fc2(F.leaky_relu(self.fc1(x), negative_slope=0.3))

    torch.manual_seed(1)
    f = Fn().double()
    m = nn.Sequential(f.fc1, nn.LeakyReLU(0.3), f.fc2).double()
    x = torch.rand((2, 4), dtype=torch.float64)
    a = BoundedModule(f, (4,)).compute_bounds(linf_ball(x, 0.1, None), None, "CROWN")
    b = BoundedModule(m, (4,)).compute_bounds(linf_ball(x, 0.1, None), None, "CROWN")
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert check_model(nn.Sequential(nn.Linear(2, 2), nn.LeakyReLU(-0.5)), (2,))  # slope outside [0, 1]: refused


def test_onnx_leaky_relu_imports_and_bounds_contain_onnxruntime_outputs(tmp_path):
    pytest.importorskip("onnxruntime")
    from certkit.models.onnx_import import load_onnx

    net = _net().float()
    path = tmp_path / "leaky.onnx"
    export_onnx(net, torch.rand(1, 5), path)
    model = load_onnx(path)
    assert check_model(model.module, model.sample_shape) == []
    gen = torch.Generator().manual_seed(2)
    x = torch.rand((2, 5), generator=gen)
    bm = BoundedModule(model.module.double(), (5,))
    lb, ub = bm.compute_bounds(linf_ball(x.double(), 0.1, None), None, "CROWN")
    pts = (x[:, None] - 0.1 + 0.2 * torch.rand((2, 200, 5), generator=gen)).reshape(-1, 5)
    ref = torch.from_numpy(model.run_onnxruntime(pts)).double().reshape(2, 200, 3)
    assert (ref >= lb[:, None] - 1e-4).all() and (ref <= ub[:, None] + 1e-4).all()
