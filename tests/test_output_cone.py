"""models/output_cone.py and verifiers/complete/output_cone.py: a property that reads a few of a network's outputs is
verified on the part of the network that computes them; the cut network computes exactly those columns, the other
branch is gone, and the answers (unsat, and sat with the WHOLE output written and re-checked) are those of the
whole network."""
import numpy as np
import pytest
import torch
from torch import nn

from certkit.verifiers.complete.strategy import verify_instance
from certkit.verifiers.complete.vnncomp_format import format_result, violates

from conftest import export_onnx


class TwoBranches(nn.Module):
    """Outputs [a (3), b (4)]: a = Linear(x), b from a ReLU network the properties below never read."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(4, 3)
        self.b = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 4))

    def forward(self, x):
        return torch.cat([self.a(x), self.b(x)], 1)


def _vnnlib(path, lo, hi, out_rows):
    lines = [f"(declare-const X_{i} Real)" for i in range(4)] + [f"(declare-const Y_{j} Real)" for j in range(7)]
    lines += [f"(assert (>= X_{i} {float(lo[i])!r}))\n(assert (<= X_{i} {float(hi[i])!r}))" for i in range(4)]
    lines += [f"(assert ({op} Y_{j} {float(v)!r}))" for op, j, v in out_rows]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def net_onnx(tmp_path):
    net = TwoBranches().eval()
    return net, export_onnx(net, torch.zeros(1, 4), tmp_path / "two.onnx")


def test_the_cut_network_computes_the_read_columns_and_drops_the_rest(net_onnx, tmp_path):
    from certkit.models.onnx_import import load_onnx
    from certkit.verifiers.complete.output_cone import in_output_cone, read_columns
    from certkit.verifiers.complete.vnnlib import parse_vnnlib

    _, onnx_path = net_onnx
    model = load_onnx(onnx_path)
    prop = parse_vnnlib(_vnnlib(tmp_path / "p.vnnlib", [0.0] * 4, [1.0] * 4, [(">=", 1, 100.0)]))
    assert read_columns(prop).tolist() == [1]
    cut_model, cut_prop = in_output_cone(model, prop)
    assert cut_model.output_window == (0, 3) and cut_model.num_outputs == 3 and cut_prop.n_outputs == 3
    assert not any("relu" in str(n.target).lower() for n in cut_model.module.graph.nodes)
    x = torch.rand(50, 4)
    assert torch.equal(cut_model.module(x), model.module(x)[:, :3])
    assert np.allclose(cut_model.run_onnxruntime(x[:3]), model.run_onnxruntime(x[:3])[:, :3])
    assert np.array_equal(cut_prop.terms[0].C, prop.terms[0].C[:, :3])
    # reading the ReLU branch only: the cut is that branch
    other = parse_vnnlib(_vnnlib(tmp_path / "o.vnnlib", [0.0] * 4, [1.0] * 4, [(">=", 5, 100.0), ("<=", 6, 0.0)]))
    cut_model, _ = in_output_cone(model, other)
    assert cut_model.output_window == (3, 4) and torch.equal(cut_model.module(x), model.module(x)[:, 3:])
    # reading more than half the outputs: the whole network
    whole = parse_vnnlib(_vnnlib(tmp_path / "q.vnnlib", [0.0] * 4, [1.0] * 4, [(">=", j, 100.0) for j in range(4)]))
    assert in_output_cone(model, whole) is None


def test_answers_on_the_cut_network_are_the_whole_networks(net_onnx, tmp_path):
    net, onnx_path = net_onnx
    lo, hi = np.zeros(4), np.ones(4) * 0.5
    x = torch.rand(20000, 4) * 0.5
    with torch.no_grad():
        y1 = net(x)[:, 1]
    # unsat: Y_1 above its maximum over the box
    res = verify_instance(onnx_path, _vnnlib(tmp_path / "u.vnnlib", lo, hi, [(">=", 1, float(y1.max()) + 1.0)]), 20)
    assert res.status == "unsat"
    # sat: Y_1 above a value that sampled points exceed; the written output has all 7 values, onnxruntime's
    res = verify_instance(onnx_path, _vnnlib(tmp_path / "s.vnnlib", lo, hi, [(">=", 1, float(y1.median()))]), 20)
    assert res.status == "sat" and res.y is not None and res.y.shape == (7,)
    assert res.checks == {"exact": True, "vnncomp": True}
    with torch.no_grad():
        whole = net(torch.tensor(res.x, dtype=torch.float32)[None])[0].numpy()
    assert np.allclose(res.y, whole, atol=1e-5)
    assert format_result(res).count("(Y_") == 7
    from certkit.verifiers.complete.vnnlib import parse_vnnlib

    assert violates(parse_vnnlib(tmp_path / "s.vnnlib").terms[0], res.y)
