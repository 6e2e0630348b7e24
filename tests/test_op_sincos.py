"""verifiers/bounds/ops/sincos.py (on curvature.py): sin and cos on the interval grid (Taylor lines or the exact
range; periods inside wide intervals), sound network bounds, ONNX ``Sin`` / ``Cos`` against onnxruntime."""
import math

import pytest
import torch
from torch import nn

from certkit.verifiers.bounds.ops.sincos import Cos, Sin

from relaxation_checks import check_activation, check_network_bounds, check_onnx_bounds


class TrigNet(nn.Module):
    def __init__(self, d_in=4, hidden=6, d_out=2):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d_in, hidden), nn.Linear(2 * hidden, d_out)

    def forward(self, x):
        h = self.fc1(x)
        return self.fc2(torch.cat([torch.sin(h), torch.cos(3 * h)], 1))


@pytest.mark.parametrize("op", [Sin(), Cos()])
def test_relaxation_is_sound_on_every_interval(op):
    check_activation(op)


def test_range_finds_the_extrema_inside_the_interval():
    f64 = dict(dtype=torch.float64)
    lo, hi = Sin().extremes(torch.tensor([0.0, 2.0, -0.1], **f64), torch.tensor([math.pi, 3.0, 0.1], **f64))
    assert hi[0] == 1.0 and lo[0] == pytest.approx(0.0, abs=1e-12)
    assert hi[1] == pytest.approx(math.sin(2.0)) and lo[1] == pytest.approx(math.sin(3.0))
    lo, hi = Cos().extremes(torch.tensor([-0.1, 3.0], **f64), torch.tensor([0.1, 3.3], **f64))
    assert hi[0] == 1.0 and lo[1] == -1.0


def test_network_bounds_contain_sampled_and_attacked_outputs():
    torch.manual_seed(0)
    check_network_bounds(TrigNet().double().eval(), 4)


def test_onnx_sin_cos_import_and_bounds_contain_onnxruntime_outputs(tmp_path):
    torch.manual_seed(0)
    check_onnx_bounds(TrigNet().eval(), 4, tmp_path / "trig.onnx")
