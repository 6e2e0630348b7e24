"""verifiers/bounds/ops/interpolate.py: nearest and bilinear upsampling: IBP exact, the backward rule is the adjoint
(the block sums of integer factors and the general vector-Jacobian product), sound network bounds, the functional
form, ONNX ``Resize`` against onnxruntime; bicubic is refused. Its forward-mode rule: tests/test_forward.py."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from certkit.verifiers import BoundedModule, check_model, linf_ball

from relaxation_checks import check_network_bounds


def _net(mode, **kw):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Upsample(scale_factor=2, mode=mode, **kw),
                         nn.Conv2d(2, 2, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 2 * 2, 3)).double()


@pytest.mark.parametrize("mode,kw", [("nearest", {}), ("bilinear", {"align_corners": False}),
                                     ("bilinear", {"align_corners": True})])
def test_network_bounds_contain_sampled_and_attacked_outputs(mode, kw):
    check_network_bounds(_net(mode, **kw).eval(), (1, 5, 5), eps=0.1, samples=1000)


def test_functional_form_and_refused_mode():
    class Fn(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2 * 6 * 6, 2)

        def forward(self, x):
            return self.fc(F.interpolate(x, size=(6, 6), mode="bilinear").flatten(1))

    torch.manual_seed(0)
    f = Fn().double().eval()
    x = torch.rand(2, 2, 3, 3, dtype=torch.float64)
    lb, ub = BoundedModule(f, (2, 3, 3)).compute_bounds(linf_ball(x, 0.1, None), None, "CROWN")
    pts = x[:, None] + 0.1 * (2 * torch.rand((2, 500, 2, 3, 3), dtype=torch.float64) - 1)
    y = f(pts.reshape(-1, 2, 3, 3)).detach().reshape(2, 500, 2)
    assert (y >= lb[:, None] - 1e-9).all() and (y <= ub[:, None] + 1e-9).all()
    bad = nn.Sequential(nn.Upsample(scale_factor=2, mode="bicubic"))
    assert any("bicubic" in p for p in check_model(bad, (1, 3, 3)))


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_onnx_resize_imports_and_bounds_contain_onnxruntime_outputs(tmp_path, mode):
    pytest.importorskip("onnxruntime")
    from certkit.models.onnx_import import load_onnx

    from conftest import export_onnx

    net = _net(mode).float().eval()
    export_onnx(net, torch.rand(1, 1, 5, 5), tmp_path / "resize.onnx")
    model = load_onnx(tmp_path / "resize.onnx")
    assert check_model(model.module, model.sample_shape) == []
    x = torch.rand(2, 1, 5, 5)
    lb, ub = BoundedModule(model.module.double(), (1, 5, 5)).compute_bounds(linf_ball(x.double(), 0.05, None))
    pts = (x[:, None] + 0.05 * (2 * torch.rand(2, 100, 1, 5, 5) - 1)).reshape(-1, 1, 5, 5)
    ref = torch.from_numpy(model.run_onnxruntime(pts)).double().reshape(2, 100, -1)
    assert (ref >= lb[:, None] - 1e-4).all() and (ref <= ub[:, None] + 1e-4).all()


@pytest.mark.parametrize("size,scale", [(None, 2), (None, 3), ((6, 9), None), ((7, 7), None)])
def test_the_backward_rule_is_the_adjoint_of_the_forward_map(size, scale):
    """<A, M x> = <M^T A, x> for random A and x, with M the resizing: integer factors (the block-sum rule) and a
    non-integer size (the vector-Jacobian product)."""
    from certkit.verifiers.bounds.ops.interpolate import Interpolate
    op = Interpolate(size=size, scale_factor=scale, mode="nearest")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((2, 3, 3, 3), generator=gen, dtype=torch.float64)
    y = op.forward(x)
    op.in_shapes, op.out_shape = [tuple(x.shape[1:])], tuple(y.shape[1:])
    A = torch.randn((2, 4) + tuple(y.shape[1:]), generator=gen, dtype=torch.float64)
    (A_in,), bias = op.backward(A)
    assert bias is None and A_in.shape == (2, 4, 3, 3, 3)
    torch.testing.assert_close(torch.einsum("bschw,bchw->bs", A, y), torch.einsum("bschw,bchw->bs", A_in, x))
