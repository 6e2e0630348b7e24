"""verifiers/bounds/ops/abs.py: |z| on the dense interval grid (its own IBP rule: not monotone), exact where it is
linear, sound network bounds (sampling and PGD), and ONNX ``Abs`` checked against onnxruntime."""
import torch
from torch import nn

from certkit.verifiers.bounds.ops.abs import Abs

from relaxation_checks import check_activation, check_network_bounds, check_onnx_bounds


def test_abs_relaxation_is_sound_on_every_interval():
    check_activation(Abs())


def test_abs_is_exact_on_each_side():
    aL, cL, aU, cU = Abs().relax(torch.tensor([0.5, -3.0]), torch.tensor([2.0, -1.0]))
    assert aL.tolist() == aU.tolist() == [1.0, -1.0] and cL.tolist() == cU.tolist() == [0.0, 0.0]
    lo, hi = Abs().ibp((torch.tensor([-2.0, 1.0, -3.0]), torch.tensor([1.0, 2.0, -1.0])))
    assert lo.tolist() == [0.0, 1.0, 1.0] and hi.tolist() == [2.0, 2.0, 3.0]


class AbsNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2, self.fc3 = nn.Linear(5, 16), nn.Linear(16, 16), nn.Linear(16, 3)

    def forward(self, x):
        return self.fc3(torch.abs(self.fc2(self.fc1(x).abs())))   # the function and the tensor method


def test_network_bounds_contain_sampled_and_attacked_outputs():
    check_network_bounds(AbsNet().double().eval(), 5)


def test_onnx_abs_imports_and_bounds_contain_onnxruntime_outputs(tmp_path):
    check_onnx_bounds(AbsNet().eval(), 5, tmp_path / "abs.onnx")
