"""verifiers/bounds/ops/gather.py: selection with constant indices (torch.index_select; ONNX Gather of the data): the
backward rule is the adjoint of the forward map (repeated indices accumulate), and network bounds contain sampled,
attacked and onnxruntime outputs."""
import torch
from torch import nn

from certkit.verifiers.bounds.ops.gather import IndexSelect

from relaxation_checks import check_network_bounds, check_onnx_bounds

INDEX = torch.tensor([4, 0, 4, 2, 5, 5, 1])


def test_backward_is_the_adjoint_of_the_forward_map_with_repeated_indices():
    gen = torch.Generator().manual_seed(0)
    op = IndexSelect(2, INDEX)
    op.in_shapes, op.out_shape = [(3, 6)], (3, len(INDEX))
    x = torch.randn(4, 3, 6, generator=gen, dtype=torch.float64)
    A = torch.randn(4, 5, 3, len(INDEX), generator=gen, dtype=torch.float64)
    (A_in,), bias = op.backward(A)
    assert bias is None
    lhs = (A * op.forward(x)[:, None]).flatten(2).sum(-1)
    torch.testing.assert_close(lhs, (A_in * x[:, None]).flatten(2).sum(-1))
    torch.testing.assert_close(op.ibp((x - 1, x + 1)), (op.forward(x - 1), op.forward(x + 1)))


class GatherNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.out = nn.Linear(4, 18), nn.Linear(3 * len(INDEX), 2)

    def forward(self, x):
        h = torch.relu(self.a(x)).view(-1, 3, 6)
        return self.out(torch.relu(torch.index_select(h, 2, INDEX) - 0.1).flatten(1))


def test_network_bounds_contain_sampled_and_attacked_outputs():
    torch.manual_seed(0)
    check_network_bounds(GatherNet().double().eval(), 4)


def test_onnx_gather_of_the_data_imports_and_bounds_contain_onnxruntime_outputs(tmp_path):
    torch.manual_seed(0)
    check_onnx_bounds(GatherNet().eval(), 4, tmp_path / "gather.onnx")
