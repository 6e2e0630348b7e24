"""The MILP counterexample search (verifiers/complete/milp_attack.py): its affine maps reproduce every ReLU input
and the output of a graph with a skip connection and convolutions; on random small ReLU MLPs it finds a point of
the unsafe region exactly when the exact optimum (tests/milp.py) says there is one; the strategy's falsifier returns
a replayed counterexample; networks with other nonlinearities are left alone."""
import numpy as np
import pytest
import torch
from torch import nn

from certkit.verifiers import BoundedModule
from certkit.verifiers.bounds.perturbation import Box
from certkit.verifiers.complete.milp_attack import affine_maps, milp_counterexample, relu_nodes

from milp import exact_min_max
from test_bab import box, np_layers, relu_net


class SkipNet(nn.Module):
    """conv -> ReLU -> conv -> (+ skip) -> ReLU -> flatten -> linear -> ReLU -> linear."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(1, 3, 3, padding=1), nn.Conv2d(3, 3, 3, padding=1)
        self.f1, self.f2 = nn.Linear(3 * 5 * 5, 7), nn.Linear(7, 3)

    def forward(self, x):
        h = torch.relu(self.c1(x))
        h = torch.relu(self.c2(h) + h)
        return self.f2(torch.relu(self.f1(h.flatten(1))))


def test_affine_maps_reproduce_every_relu_input_and_the_output():
    torch.manual_seed(0)
    net = SkipNet().double().eval()
    g = BoundedModule(net, (1, 5, 5)).graph
    relus = relu_nodes(g)
    assert relus is not None and len(relus) == 3
    targets = [g.nodes[r].inputs[0] for r in relus] + [g.output]
    maps, offs = affine_maps(g, relus, targets)
    x = torch.rand(4, 1, 5, 5, dtype=torch.float64)
    vals = [x]
    with torch.no_grad():
        for n in g.nodes[1:]:
            vals.append(n.op.forward(*[vals[i] for i in n.inputs]))
    v = torch.cat([x.reshape(4, -1)] + [vals[r].reshape(4, -1) for r in relus], 1).numpy()
    for t, M, c in zip(targets, maps, offs):
        assert np.allclose(v @ M.T + c, vals[t].reshape(4, -1).numpy(), atol=1e-10)


@pytest.mark.parametrize("seed", range(4))
def test_finds_a_counterexample_exactly_when_one_exists(seed):
    """d is set 0.05 below / above the exact optimum of max_r (C_r f(x) - d_r): the search must return a point that
    violates the property (checked in float64) when the optimum is -0.05, and nothing when it is +0.05."""
    net = relu_net(seed, (4, 10, 10, 3))
    lo, hi = box(seed, 4, 0.3)
    C = np.array([[1.0, -1.0, 0.0], [0.0, -1.0, 1.0]])
    t0 = exact_min_max(np_layers(net), C, np.zeros(2), lo.numpy(), hi.numpy())
    bm = BoundedModule(net, (4,))
    bounds = bm.crown_intermediate(Box(lo[None], hi[None]))
    for shift, exists in ((0.05, True), (-0.05, False)):
        d = np.full(2, t0 + shift)
        x = milp_counterexample(bm.graph, bounds, lo.numpy(), hi.numpy(), C, d, deadline=1e18)
        if not exists:
            assert x is None
            continue
        assert x is not None and np.all(x >= lo.numpy()) and np.all(x <= hi.numpy())
        y = net(torch.tensor(x)[None])[0].detach().numpy()
        assert np.max(C @ y - d) <= 1e-6


def test_other_nonlinearities_are_left_alone():
    net = nn.Sequential(nn.Linear(3, 5), nn.Sigmoid(), nn.Linear(5, 2)).double()
    g = BoundedModule(net, (3,)).graph
    assert relu_nodes(g) is None
    bounds = [(torch.zeros(1, 5), torch.ones(1, 5))] * len(g.nodes)
    assert milp_counterexample(g, bounds, np.zeros(3), np.ones(3), np.eye(2)[:1], np.zeros(1), 1e18) is None


@pytest.mark.parametrize("sat", [True, False], ids=["violated", "holds"])
def test_the_verifier_answers_sat_by_milp_when_attacks_and_branch_and_bound_give_up(sat, tmp_path, monkeypatch):
    """With PGD and branch and bound disabled, an instance with a planted counterexample is answered ``sat`` by the
    MILP search (replayed in onnxruntime); one that holds stays ``unknown``."""
    pytest.importorskip("onnxruntime")
    from certkit.verifiers.complete import strategy

    from test_input_split import onnx_of, planted_property
    from test_input_split import relu_net as small_net

    monkeypatch.setattr(strategy, "falsify", lambda *a, **k: None)
    monkeypatch.setattr(strategy, "input_split_bab", lambda *a, **k: ("unknown", 0))
    net = small_net(3)
    onnx_model = onnx_of(net, tmp_path / "net.onnx")
    prop, optima = planted_property(net, 3, ((2,), 1), sat, tmp_path)
    res = strategy.verify_property(onnx_model, prop, timeout=20 if sat else 2, methods=("IBP",))
    if sat:
        assert res.status == "sat" and res.method == "MILP"
        x = torch.tensor(res.x, dtype=torch.float32)[None]
        y = net(x)[0].detach().double().numpy()
        t = prop.terms[0]
        assert np.all(res.x >= t.x_L) and np.all(res.x <= t.x_U) and np.max(t.C @ y - t.d) <= 1e-5
    else:
        assert res.status == "unknown"
