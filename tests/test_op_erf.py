"""verifiers/bounds/ops/erf.py (on sshaped.py): erf on the interval grid with CROWN and alpha-CROWN lines, sound
network bounds, ONNX ``Erf`` against onnxruntime, and GELU as torch exports it (erf and products) bounded end to
end."""
import math

import torch
from torch import nn

from certkit.verifiers.bounds.ops.erf import Erf

from relaxation_checks import ElementwiseNet, check_activation, check_network_bounds, check_onnx_bounds


class ExportedGELU(nn.Module):
    """GELU written as its ONNX export (opset < 20): x * 0.5 * (1 + erf(x / sqrt(2)))."""

    def __init__(self, d_in=4, hidden=6, d_out=2):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d_in, hidden), nn.Linear(hidden, d_out)

    def forward(self, x):
        h = self.fc1(x)
        return self.fc2(h * (0.5 * (1 + torch.erf(h / math.sqrt(2)))))


def test_erf_relaxation_is_sound_on_every_interval():
    check_activation(Erf())


def test_network_bounds_contain_sampled_and_attacked_outputs():
    torch.manual_seed(0)
    check_network_bounds(ElementwiseNet(torch.erf).double().eval(), 4)


def test_exported_gelu_is_bounded_soundly():
    torch.manual_seed(1)
    check_network_bounds(ExportedGELU().double().eval(), 4)


def test_onnx_erf_imports_and_bounds_contain_onnxruntime_outputs(tmp_path):
    torch.manual_seed(0)
    check_onnx_bounds(ElementwiseNet(torch.erf).eval(), 4, tmp_path / "erf.onnx")
    check_onnx_bounds(ExportedGELU().eval(), 4, tmp_path / "gelu_as_erf.onnx")
