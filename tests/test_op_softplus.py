"""verifiers/bounds/ops/softplus.py (on convex.py): softplus on the dense interval grid (a small threshold makes
torch's function non-convex by a known gap), the tangent point moved by alpha, sound network bounds, the functional
form, ONNX ``Softplus`` checked against onnxruntime."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from certkit.verifiers import check_model
from certkit.verifiers.bounds.ops.softplus import Softplus

from relaxation_checks import assert_same_bounds, check_activation, check_network_bounds, check_onnx_bounds


@pytest.mark.parametrize("beta,threshold", [(1.0, 20.0), (3.0, 5.0), (0.5, 1.0)])
def test_softplus_relaxation_is_sound_on_every_interval(beta, threshold):
    check_activation(Softplus(beta, threshold))


def test_alpha_moves_the_tangent_point():
    op = Softplus()
    l, u = torch.tensor([-2.0], dtype=torch.float64), torch.tensor([2.0], dtype=torch.float64)
    slopes = [float(op.relax(l, u, torch.tensor([[[a]]], dtype=torch.float64))[0].flatten()[0]) for a in (0, .5, 1)]
    assert slopes == pytest.approx(torch.sigmoid(torch.tensor([-2.0, 0.0, 2.0], dtype=torch.float64)).tolist())


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 16), nn.Softplus(), nn.Linear(16, 16), nn.Softplus(beta=2.0),
                         nn.Linear(16, 3)).eval()


def test_network_bounds_contain_sampled_and_attacked_outputs():
    check_network_bounds(_net().double(), 5)


def test_functional_form_and_refused_beta():
    class Fn(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(8, 2)

        def forward(self, x):
            return self.fc2(F.softplus(self.fc1(x), beta=2.0))

    torch.manual_seed(1)
    f = Fn().double()
    assert_same_bounds(f, nn.Sequential(f.fc1, nn.Softplus(beta=2.0), f.fc2).double(), 4)
    assert check_model(nn.Sequential(nn.Linear(2, 2), nn.Softplus(beta=-1.0)), (2,))


def test_onnx_softplus_imports_and_bounds_contain_onnxruntime_outputs(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 12), nn.Softplus(), nn.Linear(12, 3)).eval()
    check_onnx_bounds(net, 5, tmp_path / "softplus.onnx")
