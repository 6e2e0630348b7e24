"""verifiers/bounds/ops/reciprocal.py (on convex.py): 1/z on the positive interval grid, decreasing IBP, sound
network bounds on positive denominators, ONNX ``Reciprocal`` against onnxruntime."""
import torch
from torch import nn

from certkit.verifiers.bounds.ops.reciprocal import Reciprocal

from relaxation_checks import check_activation, check_network_bounds, check_onnx_bounds


class RecipNet(nn.Module):
    """Linear with non-negative weights and bias 1 (positive on inputs >= -0.2), 1/z, Linear."""

    def __init__(self, d_in=4, hidden=6, d_out=2):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d_in, hidden), nn.Linear(hidden, d_out)
        with torch.no_grad():
            self.fc1.weight.uniform_(0.0, 0.3)
            self.fc1.bias.fill_(1.0)

    def forward(self, x):
        return self.fc2(torch.reciprocal(self.fc1(x)))


def test_reciprocal_relaxation_is_sound_on_every_positive_interval():
    check_activation(Reciprocal(), domain=(1e-3, 1e3))


def test_ibp_is_decreasing_and_zero_gives_no_finite_bound():
    lo, hi = Reciprocal().ibp((torch.tensor([0.5, 0.0]), torch.tensor([2.0, 1.0])))
    assert lo.tolist() == [0.5, 1.0] and hi[0] == 2.0 and hi[1] == torch.inf


def test_network_bounds_contain_sampled_and_attacked_outputs():
    torch.manual_seed(0)
    check_network_bounds(RecipNet().double().eval(), 4)


def test_onnx_reciprocal_imports_and_bounds_contain_onnxruntime_outputs(tmp_path):
    torch.manual_seed(0)
    check_onnx_bounds(RecipNet().eval(), 4, tmp_path / "reciprocal.onnx")
