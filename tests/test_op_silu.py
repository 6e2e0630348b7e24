"""verifiers/bounds/ops/silu.py (on inflection.py): SiLU on the interval grid, its inflection points (f' monotone
between them) and lines no looser than Taylor's, the minimum found, sound network bounds, the functional form."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from certkit.verifiers.bounds.ops.silu import SiLU

from relaxation_checks import assert_same_bounds, check_activation, check_inflections, check_network_bounds


def test_relaxation_is_sound_on_every_interval():
    check_activation(SiLU())


def test_inflections_lines_and_minimum():
    check_inflections(SiLU(), curvature=0.5)
    assert SiLU().x_star == pytest.approx(-1.2784645, abs=1e-6)


def test_network_bounds_contain_sampled_and_attacked_outputs():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.SiLU(), nn.Linear(8, 8), nn.SiLU(), nn.Linear(8, 2)).double().eval()
    check_network_bounds(net, 4)


def test_functional_form():
    class Fn(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(4, 6), nn.Linear(6, 2)

        def forward(self, x):
            return self.fc2(F.silu(self.fc1(x)))

    torch.manual_seed(1)
    f = Fn().double()
    assert_same_bounds(f, nn.Sequential(f.fc1, nn.SiLU(), f.fc2).double(), 4)
