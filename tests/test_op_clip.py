"""verifiers/bounds/ops/clip.py: clamp with both, one or equal bounds on the dense interval grid, exact off the kinks,
BaB's split points at the kinks, sound network bounds (nn.ReLU6, nn.Hardtanh, torch.clamp; sampling and PGD),
refused tensor bounds, and ONNX ``Clip`` checked against onnxruntime."""
import pytest
import torch
from torch import nn

from certkit.verifiers import check_model
from certkit.verifiers.bounds.ops.clip import Clip

from relaxation_checks import check_activation, check_network_bounds, check_onnx_bounds


@pytest.mark.parametrize("lo,hi", [(0.0, 6.0), (-1.0, 1.0), (None, 0.5), (-0.3, None), (0.2, 0.2)])
def test_clip_relaxation_is_sound_on_every_interval(lo, hi):
    check_activation(Clip(lo, hi))


def test_exact_off_the_kinks_and_split_at_them():
    op = Clip(-1.0, 1.0)
    l, u = torch.tensor([-3.0, -0.5, 2.0, -2.0, 0.0]), torch.tensor([-2.0, 0.5, 3.0, 0.0, 2.0])
    aL, cL, aU, cU = op.relax(l, u)
    for i in range(3):   # below, inside, above: the constant -1, the identity, the constant 1
        assert (aL[i], cL[i]) == (aU[i], cU[i])
    assert op.unstable(l, u).tolist() == [False, False, False, True, True]
    assert op.split_point(l, u)[3:].tolist() == [-1.0, 1.0]


class Clamped(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2, self.fc3 = nn.Linear(5, 16), nn.Linear(16, 16), nn.Linear(16, 3)
        self.act = nn.ReLU6()

    def forward(self, x):
        h = self.act(3 * self.fc1(x))
        return self.fc3(torch.clamp(self.fc2(h), min=-0.5, max=0.8).clamp(max=0.6))


def test_network_bounds_contain_sampled_and_attacked_outputs():
    check_network_bounds(Clamped().double().eval(), 5)
    torch.manual_seed(1)
    check_network_bounds(nn.Sequential(nn.Linear(5, 8), nn.Hardtanh(), nn.Linear(8, 2)).double().eval(), 5)


def test_tensor_bounds_are_refused():
    class TensorBound(nn.Module):
        def forward(self, x):
            return torch.clamp(x, min=torch.zeros(3))

    problems = check_model(TensorBound(), (3,))
    assert problems and "tensor min bound" in problems[0]


def test_onnx_clip_imports_and_bounds_contain_onnxruntime_outputs(tmp_path):
    check_onnx_bounds(Clamped().eval(), 5, tmp_path / "clip.onnx")
