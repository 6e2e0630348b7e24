"""verifiers/bounds/ops/reduce.py: sums and means over non-batch dims (keepdim or not, negative dims, global average
pooling), sound network bounds (sampling and PGD), the batch dimension refused, ONNX ReduceMean / ReduceSum /
GlobalAveragePool checked against onnxruntime."""
import torch
from torch import nn

from certkit.verifiers import BoundedModule, check_model, linf_ball

from relaxation_checks import check_network_bounds, check_onnx_bounds


class Pooled(nn.Module):
    """A CNN ending in global average pooling, plus a channel sum and a row mean joined to it."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 + 5 + 5, 3)

    def forward(self, x):
        h = torch.relu(self.conv(x.reshape(-1, 1, 5, 5)))
        return self.fc(torch.cat([self.gap(h).flatten(1), h.sum(dim=1).mean(-1), torch.mean(h, (1, 3))], 1))


def test_network_bounds_contain_sampled_and_attacked_outputs():
    check_network_bounds(Pooled().double().eval(), 25, eps=0.1)


def test_exact_on_a_box_and_the_batch_refused():
    net = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()).double()
    x = torch.rand((2, 3, 4, 4), dtype=torch.float64)
    lb, ub = BoundedModule(net, (3, 4, 4)).compute_bounds(linf_ball(x, 0.1, None), None, "CROWN")
    torch.testing.assert_close(lb, x.mean((2, 3)) - 0.1)
    torch.testing.assert_close(ub, x.mean((2, 3)) + 0.1)

    class AllDims(nn.Module):
        def forward(self, x):
            return x.sum(0, keepdim=True)

    assert "batch dimension" in " ".join(check_model(AllDims(), (3,)))


def test_onnx_reductions_import_and_bounds_contain_onnxruntime_outputs(tmp_path):
    check_onnx_bounds(Pooled().eval(), 25, tmp_path / "reduce.onnx")
