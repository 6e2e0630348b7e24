"""verifiers/bounds/ops/sign.py: the step sign(z) on the interval grid (constant lines across the jump), sound
network bounds, ONNX ``Sign`` against onnxruntime."""
import torch

from certkit.verifiers.bounds.ops.sign import Sign

from relaxation_checks import ElementwiseNet, check_activation, check_network_bounds, check_onnx_bounds


def test_sign_relaxation_is_sound_on_every_interval():
    check_activation(Sign())


def test_stable_intervals_are_exact():
    op = Sign()
    l, u = torch.tensor([0.5, -2.0, -1.0]), torch.tensor([3.0, -0.1, 1.0])
    assert op.unstable(l, u).tolist() == [False, False, True]
    aL, cL, aU, cU = op.relax(l, u)
    assert cL.tolist() == [1.0, -1.0, -1.0] and cU.tolist() == [1.0, -1.0, 1.0]


def test_network_bounds_contain_sampled_and_attacked_outputs():
    torch.manual_seed(0)
    check_network_bounds(ElementwiseNet(torch.sign).double().eval(), 4)


def test_onnx_sign_imports_and_bounds_contain_onnxruntime_outputs(tmp_path):
    torch.manual_seed(0)
    check_onnx_bounds(ElementwiseNet(torch.sign).eval(), 4, tmp_path / "sign.onnx")
