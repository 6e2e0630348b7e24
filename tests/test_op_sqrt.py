"""verifiers/bounds/ops/sqrt.py (on concave.py): sqrt on the interval grid from 0 (infinite slope there), sound
network bounds, ONNX ``Sqrt`` against onnxruntime."""
import torch
from torch import nn

from certkit.verifiers.bounds.ops.sqrt import Sqrt

from relaxation_checks import check_activation, check_network_bounds, check_onnx_bounds


class SqrtNet(nn.Module):
    """sqrt of a positive layer (as the sqrt(var + eps) of a LayerNorm); the relaxation test covers intervals from 0."""

    def __init__(self, d_in=4, hidden=6, d_out=2):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d_in, hidden), nn.Linear(hidden, d_out)
        with torch.no_grad():
            self.fc1.weight.uniform_(0.0, 0.3)
            self.fc1.bias.fill_(0.3)

    def forward(self, x):
        return self.fc2(torch.sqrt(self.fc1(x)))


def test_sqrt_relaxation_is_sound_on_every_interval_from_zero():
    check_activation(Sqrt(), domain=(0.0, 1e3))


def test_network_bounds_contain_sampled_and_attacked_outputs():
    torch.manual_seed(0)
    check_network_bounds(SqrtNet().double().eval(), 4)


def test_onnx_sqrt_imports_and_bounds_contain_onnxruntime_outputs(tmp_path):
    torch.manual_seed(0)
    check_onnx_bounds(SqrtNet().eval(), 4, tmp_path / "sqrt.onnx")
