"""verifiers/bounds/ops/conv_transpose.py: the adjoint is exact (equal to autograd's), sound network bounds with
strides, padding, output_padding and groups, ONNX ``ConvTranspose`` against onnxruntime, the sound mode's rule."""
import pytest
import torch
from torch import nn

from certkit.verifiers import BoundedModule
from certkit.verifiers.bounds.graph import build_graph

from relaxation_checks import check_network_bounds


def _gen(**kw):
    torch.manual_seed(0)
    return nn.Sequential(nn.ConvTranspose2d(2, 4, 3, **kw), nn.ReLU(), nn.Conv2d(4, 2, 3, stride=2), nn.Flatten(),
                         nn.LazyLinear(3)).double()


@pytest.mark.parametrize("kw", [dict(stride=2), dict(stride=2, padding=1, output_padding=1), dict(groups=2),
                                dict(stride=3, dilation=2)])
def test_backward_is_the_adjoint_and_bounds_are_sound(kw):
    net = _gen(**kw)
    net(torch.rand(1, 2, 5, 5, dtype=torch.float64))            # materialize the lazy layer
    net = net.eval()
    g = build_graph(net, (2, 5, 5))
    op = g.nodes[1].op
    A = torch.randn((2, 3) + tuple(op.out_shape), dtype=torch.float64)
    (A_in,), _ = op.backward(A)
    x = torch.randn((2, 3, 2, 5, 5), dtype=torch.float64, requires_grad=True)
    y = op.forward(x.reshape(6, 2, 5, 5)).reshape((2, 3) + tuple(op.out_shape))
    (ref,) = torch.autograd.grad((y * A).sum(), x)
    bias_part = (A * op.module.bias.view(-1, 1, 1)).sum()
    assert torch.allclose(A_in, ref) and torch.isfinite(bias_part)
    check_network_bounds(net, (2, 5, 5), eps=0.1, samples=1000)


def test_onnx_conv_transpose_imports_and_bounds_contain_onnxruntime_outputs(tmp_path):
    pytest.importorskip("onnxruntime")
    from certkit.models.onnx_import import load_onnx
    from certkit.verifiers import linf_ball

    from conftest import export_onnx

    torch.manual_seed(0)
    net = nn.Sequential(nn.ConvTranspose2d(1, 3, 4, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(3 * 8 * 8, 2)).eval()
    export_onnx(net, torch.rand(1, 1, 4, 4), tmp_path / "ct.onnx")
    model = load_onnx(tmp_path / "ct.onnx")
    x = torch.rand(2, 1, 4, 4)
    lb, ub = BoundedModule(model.module.double(), (1, 4, 4)).compute_bounds(linf_ball(x.double(), 0.05, None))
    pts = (x[:, None] + 0.05 * (2 * torch.rand(2, 100, 1, 4, 4) - 1)).reshape(-1, 1, 4, 4)
    ref = torch.from_numpy(model.run_onnxruntime(pts)).double().reshape(2, 100, -1)
    assert (ref >= lb[:, None] - 1e-4).all() and (ref <= ub[:, None] + 1e-4).all()


def test_sound_mode_bounds_transposed_convolutions():
    from certkit.verifiers.bounds.sound import SoundBounds

    net = _gen(stride=2)
    net(torch.rand(1, 2, 5, 5, dtype=torch.float64))
    net = net.eval()
    x = torch.rand(2, 2, 5, 5, dtype=torch.float64)
    C = torch.eye(3, dtype=torch.float64)[None].expand(2, 3, 3)
    lb = SoundBounds(BoundedModule(net, (2, 5, 5))).compute_bounds(x - 0.05, x + 0.05, C, "CROWN")
    pts = x[:, None] + 0.05 * (2 * torch.rand((2, 200, 2, 5, 5), dtype=torch.float64) - 1)
    with torch.no_grad():
        y = net.float()(pts.float().reshape(-1, 2, 5, 5)).double().reshape(2, 200, 3)
    assert (y >= lb[:, None]).all()
