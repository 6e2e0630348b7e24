"""Split / chunk of data tensors: ``torch.split`` / ``torch.chunk`` / ``tensor_split`` (functions and methods) are
rewritten as slices (verifiers/bounds/decompose.py), ONNX ``Split`` imports as slices (opset 11 attribute, opset 13
input, opset 18 ``num_outputs``); bounds contain sampled, attacked and onnxruntime outputs."""
import numpy as np
import pytest
import torch
from torch import nn

from certkit.verifiers import BoundedModule, check_model, linf_ball

from relaxation_checks import check_network_bounds, check_onnx_bounds


class Splits(nn.Module):
    """Pieces of a hidden layer recombined: split (sizes and equal parts), chunk, tensor_split, method forms."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2, self.fc3 = nn.Linear(5, 12), nn.Linear(12, 8), nn.Linear(8, 3)

    def forward(self, x):
        h = torch.relu(self.fc1(x))
        a, b, c = torch.split(h, [3, 4, 5], dim=1)
        d, e = h.chunk(2, dim=-1)
        f, g = torch.tensor_split(h, [7], dim=1)
        mixed = torch.cat([c, a, b], 1) * 0.5 + torch.cat([e, d], 1) - torch.cat([g, f], 1)
        return self.fc3(torch.relu(self.fc2(mixed)))


class ChannelSplit(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.conv, self.fc = nn.Conv2d(2, 4, 3, padding=1), nn.Linear(2 * 4 * 4, 2)

    def forward(self, x):
        p, q = torch.relu(self.conv(x)).split(2, dim=1)
        return self.fc(torch.flatten(torch.relu(p - q), 1))


def test_network_bounds_contain_sampled_and_attacked_outputs():
    check_network_bounds(Splits().double().eval(), 5)


def test_channel_split_of_images_is_bounded_soundly():
    net = ChannelSplit().double().eval()
    assert check_model(net, (2, 4, 4)) == []
    x = torch.rand((2, 2, 4, 4), dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    pert = linf_ball(x, 0.1, None)
    pts = pert.x_L + (pert.x_U - pert.x_L) * torch.rand((500, 2, 2, 4, 4), dtype=torch.float64)
    ys = net(pts.reshape(-1, 2, 4, 4)).reshape(500, 2, 2).detach()
    for m in ("IBP", "CROWN", "alpha-CROWN"):
        lb, ub = BoundedModule(net, (2, 4, 4)).compute_bounds(pert, None, m)
        assert (ys >= lb.detach() - 1e-9).all() and (ys <= ub.detach() + 1e-9).all(), m


def test_split_pieces_used_as_a_tuple_are_named_unsupported():
    class Whole(nn.Module):
        def forward(self, x):
            return torch.cat(torch.split(x, 2, dim=1)[::-1], 1)

    assert check_model(Whole(), (4,)) != []


class ExportedSplits(Splits):
    """split and chunk only (the TorchScript exporter writes tensor_split as a Loop over sequences)."""

    def forward(self, x):
        h = torch.relu(self.fc1(x))
        a, b, c = torch.split(h, [3, 4, 5], dim=1)
        d, e = h.chunk(2, dim=-1)
        return self.fc3(torch.relu(self.fc2(torch.cat([c, a, b], 1) * 0.5 + torch.cat([e, d], 1))))


def test_onnx_split_from_the_torch_exporter(tmp_path):
    check_onnx_bounds(ExportedSplits().eval(), 5, tmp_path / "split.onnx")


@pytest.mark.parametrize("opset", [11, 13, 18])
def test_onnx_split_every_opset_form(tmp_path, opset):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    from certkit.models.onnx_import import load_onnx

    rng = np.random.default_rng(0)
    inits = {"W1": rng.normal(size=(4, 9)).astype(np.float32), "W2": rng.normal(size=(3, 2)).astype(np.float32)}
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"]), helper.make_node("Relu", ["h"], ["r"])]
    if opset == 11:
        nodes.append(helper.make_node("Split", ["r"], ["a", "b", "c"], axis=1, split=[3, 3, 3]))
    elif opset == 13:
        inits["sizes"] = np.array([3, 3, 3], dtype=np.int64)
        nodes.append(helper.make_node("Split", ["r", "sizes"], ["a", "b", "c"], axis=-1))
    else:
        nodes.append(helper.make_node("Split", ["r"], ["a", "b", "c"], axis=1, num_outputs=3))
    nodes += [helper.make_node("Sub", ["a", "c"], ["d"]), helper.make_node("Mul", ["d", "b"], ["e"]),
              helper.make_node("MatMul", ["e", "W2"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    path = str(tmp_path / f"split{opset}.onnx")
    onnx.save(model, path)
    m = load_onnx(path)
    assert check_model(m.module, m.sample_shape) == []
    x = torch.rand((2, 4), generator=torch.Generator().manual_seed(0))
    eps = 0.1
    lb, ub = BoundedModule(m.module.double(), (4,)).compute_bounds(linf_ball(x.double(), eps, None), None, "CROWN")
    pts = (x[:, None] - eps + 2 * eps * torch.rand((2, 300, 4))).reshape(-1, 4)
    ref = torch.from_numpy(m.run_onnxruntime(pts)).double().reshape(2, 300, -1)
    assert (ref >= lb[:, None] - 1e-4).all() and (ref <= ub[:, None] + 1e-4).all()
