"""verifiers/bounds/ops/slice.py: slicing and integer indexing of data tensors (several dims, steps, Ellipsis),
sound network bounds (sampling and PGD), batch indexing and advanced indexing refused, ONNX ``Slice`` checked against
onnxruntime."""
import torch
from torch import nn

from certkit.verifiers import BoundedModule, check_model, linf_ball

from relaxation_checks import check_network_bounds, check_onnx_bounds


class Sliced(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2, self.fc3 = nn.Linear(6, 12), nn.Linear(4 + 6, 8), nn.Linear(8, 3)

    def forward(self, x):
        h = torch.relu(self.fc1(x))
        return self.fc3(torch.relu(self.fc2(torch.cat([h[:, 2:6], h[:, ::2]], 1))))


def test_network_bounds_contain_sampled_and_attacked_outputs():
    check_network_bounds(Sliced().double().eval(), 6)


def test_images_ellipsis_and_integer_index():
    class Crop(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(1)
            self.conv, self.fc = nn.Conv2d(2, 3, 3, padding=1), nn.Linear(3 * 2 * 3 + 4, 2)

        def forward(self, x):
            h = torch.relu(self.conv(x))
            return self.fc(torch.cat([h[..., 1:3, ::2].flatten(1), h[:, 0, 0, :4]], 1))

    net = Crop().double().eval()
    x = torch.rand((2, 2, 5, 5), dtype=torch.float64)
    pert = linf_ball(x, 0.1, None)
    pts = pert.x_L + (pert.x_U - pert.x_L) * torch.rand((400, 2, 2, 5, 5), dtype=torch.float64)
    ys = net(pts.reshape(-1, 2, 5, 5)).reshape(400, 2, 2).detach()
    for m in ("IBP", "CROWN"):
        lb, ub = BoundedModule(net, (2, 5, 5)).compute_bounds(pert, None, m)
        assert (ys >= lb - 1e-9).all() and (ys <= ub + 1e-9).all(), m


def test_batch_and_advanced_indexing_are_refused():
    class Batch(nn.Module):
        def forward(self, x):
            return x[:1]

    class Advanced(nn.Module):
        def forward(self, x):
            return x[:, [0, 2]]

    assert "batch dimension" in " ".join(check_model(Batch(), (3,)))
    assert "indexing with a list" in " ".join(check_model(Advanced(), (3,)))


def test_onnx_slice_imports_and_bounds_contain_onnxruntime_outputs(tmp_path):
    check_onnx_bounds(Sliced().eval(), 6, tmp_path / "slice.onnx")
