"""verifiers/bounds/ops/exp.py (on convex.py): exp on the interval grid below overflow, the tangent point moved by
alpha, sound network bounds, ONNX ``Exp`` against onnxruntime."""
import pytest
import torch

from certkit.verifiers.bounds.ops.exp import Exp

from relaxation_checks import ElementwiseNet, check_activation, check_network_bounds, check_onnx_bounds


def test_exp_relaxation_is_sound_on_every_interval():
    check_activation(Exp(), domain=(-40.0, 40.0))


def test_alpha_moves_the_tangent_point():
    l, u = torch.tensor([-1.0], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64)
    slopes = [float(Exp().relax(l, u, torch.tensor([[[a]]], dtype=torch.float64))[0].flatten()[0]) for a in (0, 1)]
    assert slopes == pytest.approx([torch.e ** -1, torch.e])


def test_network_bounds_contain_sampled_and_attacked_outputs():
    torch.manual_seed(0)
    check_network_bounds(ElementwiseNet(torch.exp, hidden=8, d_out=3).double().eval(), 4)


def test_onnx_exp_imports_and_bounds_contain_onnxruntime_outputs(tmp_path):
    torch.manual_seed(0)
    check_onnx_bounds(ElementwiseNet(torch.exp, hidden=8, d_out=3).eval(), 4, tmp_path / "exp.onnx")
