"""verifiers/bounds/ops/gelu.py (on inflection.py): GELU (exact and tanh forms) on the interval grid, its inflection
points (f' monotone between them) and lines no looser than Taylor's, the minimum found, sound network bounds, the
functional form."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from certkit.verifiers.bounds.ops.gelu import GELU

from relaxation_checks import assert_same_bounds, check_activation, check_inflections, check_network_bounds


@pytest.mark.parametrize("op", [GELU("none"), GELU("tanh")])
def test_relaxation_is_sound_on_every_interval(op):
    check_activation(op)


@pytest.mark.parametrize("op", [GELU("none"), GELU("tanh")])
def test_inflections_and_lines_no_looser_than_taylor(op):
    check_inflections(op, curvature=0.8)


def test_minimum_is_found():
    assert GELU().x_star == pytest.approx(-0.7517916, abs=1e-6)
    assert GELU().f_star < float(F.gelu(torch.tensor(-0.75, dtype=torch.float64)))


@pytest.mark.parametrize("act", [nn.GELU(), nn.GELU(approximate="tanh")])
def test_network_bounds_contain_sampled_and_attacked_outputs(act):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), act, nn.Linear(8, 8), act, nn.Linear(8, 2)).double().eval()
    check_network_bounds(net, 4)


def test_functional_forms():
    class Fn(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(4, 6), nn.Linear(6, 2)

        def forward(self, x):
            return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))

    torch.manual_seed(1)
    f = Fn().double()
    assert_same_bounds(f, nn.Sequential(f.fc1, nn.GELU(approximate="tanh"), f.fc2).double(), 4)


def test_crown_uses_the_lines_on_narrow_boxes():
    """On narrow boxes the Taylor lines carry how GELU moves with its input: CROWN is many times tighter than IBP
    (through constants alone it would equal IBP)."""
    from certkit.verifiers import BoundedModule, linf_ball

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 32), nn.GELU(), nn.Linear(32, 4)).double().eval()
    x = torch.rand(4, 16, dtype=torch.float64)
    bm = BoundedModule(net, (16,))
    with torch.no_grad():
        widths = {m: (lambda b: (b[1] - b[0]).mean().item())(bm.compute_bounds(linf_ball(x, 0.002, None), None, m))
                  for m in ("IBP", "CROWN")}
    assert widths["CROWN"] < 0.2 * widths["IBP"]
