"""verifiers/bounds/ops/concat.py: torch.cat of data tensors (two branches joined, the same tensor twice, negative
dims) bounded soundly (sampling and PGD), data hidden in a list never mistaken for a constant, ONNX ``Concat``
checked against onnxruntime."""
import pytest
import torch
from torch import nn

from certkit.verifiers import check_model

from relaxation_checks import check_network_bounds, check_onnx_bounds


class Branches(nn.Module):
    """Two ReLU branches of different widths joined by cat (dim 1 and dim -1), and the input itself joined twice."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = nn.Linear(5, 6), nn.Linear(5, 4)
        self.c = nn.Linear(6 + 4 + 5 + 5, 8)
        self.out = nn.Linear(8 + 8, 3)

    def forward(self, x):
        h = torch.cat([torch.relu(self.a(x)), torch.relu(self.b(x)), x, x], dim=1)
        g = torch.relu(self.c(h))
        return self.out(torch.cat((g, -g), -1))


def test_network_bounds_contain_sampled_and_attacked_outputs():
    check_network_bounds(Branches().double().eval(), 5)


def test_channel_concat_in_a_cnn():
    class Cnn(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(1)
            self.c1, self.c2 = nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(1, 3, 3, padding=1)
            self.fc = nn.Linear(5 * 4 * 4, 3)

        def forward(self, x):
            return self.fc(torch.relu(torch.cat([self.c1(x), self.c2(x)], 1)).flatten(1))

    from certkit.verifiers import METHODS, BoundedModule, linf_ball

    net = Cnn().double().eval()
    x = torch.rand((2, 1, 4, 4), dtype=torch.float64)
    pert = linf_ball(x, 0.1, None)
    pts = pert.x_L + (pert.x_U - pert.x_L) * torch.rand((500, 2, 1, 4, 4), dtype=torch.float64)
    ys = net(pts.reshape(-1, 1, 4, 4)).reshape(500, 2, 3).detach()
    for m in METHODS:
        lb, ub = BoundedModule(net, (1, 4, 4)).compute_bounds(pert, None, m)
        assert (ys >= lb.detach() - 1e-9).all() and (ys <= ub.detach() + 1e-9).all(), m


def test_data_inside_a_list_is_never_taken_for_a_constant():
    class Stacked(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 3), nn.Linear(2, 3)

        def forward(self, x):
            return self.a(torch.stack([x, x], 1).flatten(1)) + self.b(x)

    problems = check_model(Stacked(), (2,))
    assert problems and "unsupported function stack" in problems[0]


def test_onnx_concat_imports_and_bounds_contain_onnxruntime_outputs(tmp_path):
    pytest.importorskip("onnxruntime")
    check_onnx_bounds(Branches().eval(), 5, tmp_path / "concat.onnx")


class ClassToken(nn.Module):
    """A class token prepended to patch embeddings (a constant piece, expanded over the batch as vision transformers
    write it), then a ReLU head: the constant goes into the bias of the backward rule."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.embed = nn.Linear(4, 5)
        self.cls = nn.Parameter(torch.randn(1, 1, 5))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 5, 6), nn.ReLU(), nn.Linear(6, 3))

    def forward(self, x):                        # x (B, 12): three patches of 4
        h = self.embed(x.reshape(x.shape[0], 3, 4))
        return self.head(torch.cat([self.cls.expand(x.shape[0], -1, -1), h], 1))


def test_constant_pieces_the_same_for_every_sample():
    check_network_bounds(ClassToken().double().eval(), 12)


def test_onnx_class_token_with_a_dynamic_batch(tmp_path):
    """Exported with a symbolic batch, the class token becomes Shape -> Gather -> ConstantOfShape / Expand -> Concat
    on the data (VNN-COMP's vision transformers): imported, checked against onnxruntime, bounded."""
    onnx = pytest.importorskip("onnx")
    net = ClassToken().eval()
    check_onnx_bounds(net, 12, tmp_path / "cls.onnx", dynamic_axes={"x": {0: "batch"}})
    assert "Shape" in {n.op_type for n in onnx.load(str(tmp_path / "cls.onnx")).graph.node}
