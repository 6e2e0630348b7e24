"""verifiers/bounds/ops/reshape.py: per-sample reshapes (view, reshape, flatten, unflatten, squeeze, unsqueeze; ONNX
Reshape, Flatten, Squeeze, Unsqueeze of the data): network bounds contain sampled, attacked and onnxruntime outputs."""
import torch
from torch import nn

from relaxation_checks import check_network_bounds, check_onnx_bounds


class ReshapeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.out = nn.Linear(4, 6), nn.Linear(6, 6), nn.Linear(6, 2)

    def forward(self, x):
        h = torch.relu(self.a(x)).unsqueeze(1).unsqueeze(-1)          # (B, 1, 6, 1)
        h = h.view(-1, 1, 2, 3).reshape(-1, 6, 1).squeeze(-1)          # (B, 6)
        h = torch.relu(self.b(h)).unflatten(1, (2, 3)).flatten(1)
        return self.out(h)


def test_network_bounds_contain_sampled_and_attacked_outputs():
    torch.manual_seed(0)
    check_network_bounds(ReshapeNet().double().eval(), 4)


def test_onnx_reshapes_import_and_bounds_contain_onnxruntime_outputs(tmp_path):
    torch.manual_seed(0)
    check_onnx_bounds(ReshapeNet().eval(), 4, tmp_path / "reshape.onnx")
