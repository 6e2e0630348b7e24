"""verifiers/bounds/ops/log.py (on concave.py): log on the positive interval grid, the tangent point moved by alpha,
sound network bounds, ONNX ``Log`` against onnxruntime."""
import pytest
import torch

from certkit.verifiers.bounds.ops.log import Log

from relaxation_checks import ElementwiseNet, check_activation, check_network_bounds, check_onnx_bounds


def test_log_relaxation_is_sound_on_every_positive_interval():
    check_activation(Log(), domain=(1e-6, 1e3))


def test_alpha_moves_the_tangent_point():
    l, u = torch.tensor([1.0], dtype=torch.float64), torch.tensor([3.0], dtype=torch.float64)
    up = [float(Log().relax(l, u, torch.tensor([[[a]]], dtype=torch.float64))[2].flatten()[0]) for a in (0, 1)]
    assert up == pytest.approx([1.0, 1 / 3])


def test_network_bounds_contain_sampled_and_attacked_outputs():
    torch.manual_seed(0)
    check_network_bounds(ElementwiseNet(torch.log, positive=True).double().eval(), 4)


def test_onnx_log_imports_and_bounds_contain_onnxruntime_outputs(tmp_path):
    torch.manual_seed(0)
    check_onnx_bounds(ElementwiseNet(torch.log, positive=True).eval(), 4, tmp_path / "log.onnx")
