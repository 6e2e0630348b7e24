"""verifiers/bounds/ops/elu.py (on convex.py): ELU on the dense interval grid, exact on its linear piece, sound network
bounds, the functional form, alpha > 1 (not convex) refused, ONNX ``Elu`` checked against onnxruntime."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from certkit.verifiers import check_model
from certkit.verifiers.bounds.ops.elu import ELU

from relaxation_checks import assert_same_bounds, check_activation, check_network_bounds, check_onnx_bounds


@pytest.mark.parametrize("alpha", [1.0, 0.3])
def test_elu_relaxation_is_sound_on_every_interval(alpha):
    check_activation(ELU(alpha))


def test_exact_on_the_linear_piece():
    aL, cL, aU, cU = ELU().relax(torch.tensor([0.5]), torch.tensor([2.0]))
    assert (aL.item(), cL.item(), aU.item(), cU.item()) == (1.0, 0.0, 1.0, 0.0)
    assert not ELU().unstable(torch.tensor([0.5]), torch.tensor([2.0])).any()


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 16), nn.ELU(0.7), nn.Linear(16, 16), nn.ELU(), nn.Linear(16, 3)).eval()


def test_network_bounds_contain_sampled_and_attacked_outputs():
    check_network_bounds(_net().double(), 5)


def test_functional_form_and_refused_alpha():
    class Fn(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(8, 2)

        def forward(self, x):
            return self.fc2(F.elu(self.fc1(x), alpha=0.5))

    torch.manual_seed(1)
    f = Fn().double()
    assert_same_bounds(f, nn.Sequential(f.fc1, nn.ELU(0.5), f.fc2).double(), 4)
    assert check_model(nn.Sequential(nn.Linear(2, 2), nn.ELU(2.0)), (2,))      # not convex: refused, named


def test_onnx_elu_imports_and_bounds_contain_onnxruntime_outputs(tmp_path):
    check_onnx_bounds(_net(), 5, tmp_path / "elu.onnx")
