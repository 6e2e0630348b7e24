"""verifiers/bounds/graph.py: the bound graph of a traced model computes the model, its topology and shapes are right,
and
everything that cannot be bounded is listed at once."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from certkit.common.errors import CertkitError
from certkit.verifiers.bounds.graph import build_graph, check_model


class Residual(nn.Module):
    """conv -> relu -> (conv + skip) -> flatten -> linear: a node with two consumers and a node with two inputs."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(2, 2, 3, padding=1)
        self.fc = nn.Linear(2 * 4 * 4, 3)

    def forward(self, x):
        h = F.relu(self.a(x))
        return self.fc(torch.flatten(self.b(h) + h, 1))


def test_graph_forward_equals_the_model_and_records_shapes_and_consumers():
    torch.manual_seed(0)
    net = Residual().double().eval()
    g = build_graph(net, (1, 4, 4))
    x = torch.rand(5, 1, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(g.forward(x), net(x), rtol=0, atol=1e-12)
    assert g.input_shape == (1, 4, 4) and g.output_shape == (3,)
    assert g.nodes[0].op is None and g.nodes[0].inputs == []
    for i, n in enumerate(g.nodes):
        assert all(j < i for j in n.inputs)                       # topological order
        assert all(i in g.nodes[j].inputs for j in n.consumers)    # consumers mirror inputs
    two_inputs = [n for n in g.nodes if len(n.inputs) == 2]
    assert len(two_inputs) == 1                                    # the residual add
    relu = [i for i in g.nonlinear()]
    assert len(relu) == 1 and len(g.nodes[relu[0]].consumers) == 2  # relu feeds conv b and the skip


def test_every_unsupported_op_is_listed_at_once():
    net = nn.Sequential(nn.Linear(4, 4), nn.Mish(), nn.Linear(4, 4), nn.Softmin(dim=1))
    problems = check_model(net, (4,))
    assert len(problems) >= 2 and any("Mish" in p for p in problems) and any("Softmin" in p for p in problems)
    with pytest.raises(CertkitError, match="cannot be bounded"):
        build_graph(net, (4,))
    assert check_model(nn.Sequential(nn.Linear(4, 4), nn.ReLU()), (4,)) == []


def test_wrong_input_shape_is_a_problem_not_a_crash():
    problems = check_model(nn.Sequential(nn.Linear(4, 2)), (5,))
    assert problems and all(isinstance(p, str) for p in problems)
