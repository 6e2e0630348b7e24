"""verifiers/bounds/ops/reciprocal.py (on convex.py): 1/z on the positive interval grid, decreasing IBP, sound
network bounds on positive denominators, ONNX ``Reciprocal`` against onnxruntime."""
import torch

from certkit.verifiers.bounds.ops.reciprocal import Reciprocal

from relaxation_checks import ElementwiseNet, check_activation, check_network_bounds, check_onnx_bounds


def test_reciprocal_relaxation_is_sound_on_every_positive_interval():
    check_activation(Reciprocal(), domain=(1e-3, 1e3))


def test_ibp_is_decreasing_and_zero_gives_no_finite_bound():
    lo, hi = Reciprocal().ibp((torch.tensor([0.5, 0.0]), torch.tensor([2.0, 1.0])))
    assert lo.tolist() == [0.5, 1.0] and hi[0] == 2.0 and hi[1] == torch.inf


def test_network_bounds_contain_sampled_and_attacked_outputs():
    torch.manual_seed(0)
    check_network_bounds(ElementwiseNet(torch.reciprocal, positive=True).double().eval(), 4)


def test_onnx_reciprocal_imports_and_bounds_contain_onnxruntime_outputs(tmp_path):
    torch.manual_seed(0)
    check_onnx_bounds(ElementwiseNet(torch.reciprocal, positive=True).eval(), 4, tmp_path / "reciprocal.onnx")
