"""verifiers/bounds/ops/expand.py: broadcast of each sample (expand, expand_as, broadcast_to, ONNX Expand of the data):
the backward rule is the adjoint of the forward map, and network bounds contain sampled, attacked and onnxruntime
outputs."""
import torch
from torch import nn

from certkit.verifiers.bounds.ops.expand import Expand

from relaxation_checks import check_network_bounds, check_onnx_bounds


def test_backward_is_the_adjoint_of_the_forward_map():
    """sum(A * expand(x)) = sum(backward(A) * x) for random x and A: each input coordinate collects its copies."""
    gen = torch.Generator().manual_seed(0)
    op = Expand()
    op.in_shapes, op.out_shape = [(2, 1, 3)], (2, 4, 3)
    x = torch.randn(5, 2, 1, 3, generator=gen, dtype=torch.float64)
    A = torch.randn(5, 7, 2, 4, 3, generator=gen, dtype=torch.float64)
    (A_in,), bias = op.backward(A)
    assert bias is None and A_in.shape == (5, 7, 2, 1, 3)
    lhs = (A * op.forward(x)[:, None]).flatten(2).sum(-1)
    torch.testing.assert_close(lhs, (A_in * x[:, None]).flatten(2).sum(-1))
    lo, hi = op.ibp((x - 1, x + 1))
    torch.testing.assert_close((lo, hi), (op.forward(x - 1), op.forward(x + 1)))


class ExpandNet(nn.Module):
    """A per-feature gate broadcast over a sequence: h (B, 1, 4) expanded to (B, 3, 4), multiplied by a computed
    (B, 3, 4) tensor, through ReLU."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.out = nn.Linear(4, 4), nn.Linear(4, 12), nn.Linear(12, 2)

    def forward(self, x):
        gate = torch.relu(self.a(x)).unsqueeze(1).expand(-1, 3, -1)
        seq = self.b(x).view(-1, 3, 4)
        other = torch.relu(self.b(x)).view(-1, 3, 4)
        return self.out(torch.relu(gate * seq + torch.broadcast_to(gate, seq.shape) + gate.expand_as(other)).flatten(1))


def test_network_bounds_contain_sampled_and_attacked_outputs():
    torch.manual_seed(0)
    check_network_bounds(ExpandNet().double().eval(), 4)


def test_onnx_expand_of_the_data_imports_and_bounds_contain_onnxruntime_outputs(tmp_path):
    torch.manual_seed(0)
    check_onnx_bounds(ExpandNet().eval(), 4, tmp_path / "expand.onnx")
