"""verifiers/bounds/ops/floor.py: the step floor(z) on the interval grid (constants within and across one jump, the
lines z - 1 and z across several), sound network bounds, ONNX ``Floor`` against onnxruntime."""
import torch

from certkit.verifiers.bounds.ops.floor import Floor

from relaxation_checks import ElementwiseNet, check_activation, check_network_bounds, check_onnx_bounds


def test_floor_relaxation_is_sound_on_every_interval():
    check_activation(Floor())


def test_constants_within_one_jump_and_lines_across_several():
    op = Floor()
    l, u = torch.tensor([0.2, -1.5, -3.0]), torch.tensor([0.9, -0.5, 2.5])
    assert op.unstable(l, u).tolist() == [False, True, True]
    aL, cL, aU, cU = op.relax(l, u)
    assert aL.tolist() == [0.0, 0.0, 1.0] and cL.tolist() == [0.0, -2.0, -1.0]
    assert aU.tolist() == [0.0, 0.0, 1.0] and cU.tolist() == [0.0, -1.0, 0.0]


def test_network_bounds_contain_sampled_and_attacked_outputs():
    torch.manual_seed(0)
    check_network_bounds(ElementwiseNet(lambda z: torch.floor(3 * z)).double().eval(), 4)


def test_onnx_floor_imports_and_bounds_contain_onnxruntime_outputs(tmp_path):
    torch.manual_seed(0)
    check_onnx_bounds(ElementwiseNet(lambda z: torch.floor(3 * z)).eval(), 4, tmp_path / "floor.onnx")
