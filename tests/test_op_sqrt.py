"""verifiers/bounds/ops/sqrt.py (on concave.py): sqrt on the interval grid from 0 (infinite slope there), sound
network bounds, ONNX ``Sqrt`` against onnxruntime."""
import torch

from certkit.verifiers.bounds.ops.sqrt import Sqrt

from relaxation_checks import ElementwiseNet, check_activation, check_network_bounds, check_onnx_bounds


def test_sqrt_relaxation_is_sound_on_every_interval_from_zero():
    check_activation(Sqrt(), domain=(0.0, 1e3))


def test_network_bounds_contain_sampled_and_attacked_outputs():
    torch.manual_seed(0)
    check_network_bounds(ElementwiseNet(torch.sqrt, positive=True, bias=0.3).double().eval(), 4)


def test_onnx_sqrt_imports_and_bounds_contain_onnxruntime_outputs(tmp_path):
    torch.manual_seed(0)
    check_onnx_bounds(ElementwiseNet(torch.sqrt, positive=True, bias=0.3).eval(), 4, tmp_path / "sqrt.onnx")
