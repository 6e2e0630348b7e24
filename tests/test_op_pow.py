"""verifiers/bounds/ops/pow.py: x ** 2 and x ** 4 on the interval grid (convex, minimum at 0), x ** 3 and x ** 5
(increasing, inflection at 0; f' monotone on each side, lines no looser than Taylor's on bounded intervals),
x ** 0.5 / x ** -1 / x ** 1 mapped to sqrt, reciprocal and the identity, other exponents refused, sound network
bounds, ONNX ``Pow`` (as in a LayerNorm's variance) against onnxruntime."""
import pytest
import torch
from torch import nn

from certkit.verifiers import BoundedModule, check_model, linf_ball
from certkit.verifiers.bounds.ops.pow import EvenPower, OddPower

from relaxation_checks import check_activation, check_inflections, check_network_bounds, check_onnx_bounds


class PowNet(nn.Module):
    def __init__(self, p=2.0, d_in=4, hidden=6, d_out=2):
        super().__init__()
        self.p = p
        self.fc1, self.fc2 = nn.Linear(d_in, hidden), nn.Linear(hidden, d_out)

    def forward(self, x):
        return self.fc2(self.fc1(x) ** self.p)


@pytest.mark.parametrize("p", [2, 4])
def test_even_power_relaxation_is_sound_on_every_interval(p):
    check_activation(EvenPower(p), domain=(-40.0, 40.0))


@pytest.mark.parametrize("p", [3, 5])
def test_odd_power_relaxation_is_sound_on_every_interval(p):
    check_activation(OddPower(p), domain=(-40.0, 40.0))
    check_inflections(OddPower(p), curvature=p * (p - 1) * 3.0 ** (p - 2), lo=-3.0, hi=3.0)


def test_exponents_map_to_their_ops_and_others_are_refused():
    for p, name in ((2.0, "Pow2"), (3.0, "Pow3"), (0.5, "Sqrt"), (-1.0, "Reciprocal"), (1.0, "Pow1")):
        g = BoundedModule(PowNet(p), (4,)).graph
        assert [n.op.name for n in g.nodes[1:]] == ["Linear", name, "Linear"]
    assert any("exponent 1.5" in p for p in check_model(PowNet(1.5), (4,)))


def test_a_product_of_a_tensor_with_itself_is_its_square():
    """x * x is bounded as x ** 2 (IBP >= 0 across zero), not as a product of two independent factors."""
    class Square(nn.Module):
        def forward(self, x):
            return x * x

    bm = BoundedModule(Square(), (3,))
    assert [n.op.name for n in bm.graph.nodes[1:]] == ["Pow2"]
    lb, ub = bm.compute_bounds(linf_ball(torch.zeros(1, 3), 1.0, None), None, "IBP")
    assert torch.equal(lb, torch.zeros(1, 3)) and torch.equal(ub, torch.ones(1, 3))


@pytest.mark.parametrize("p", [2.0, 3.0])
def test_network_bounds_contain_sampled_and_attacked_outputs(p):
    torch.manual_seed(0)
    check_network_bounds(PowNet(p).double().eval(), 4)


def test_onnx_pow_imports_and_bounds_contain_onnxruntime_outputs(tmp_path):
    torch.manual_seed(0)
    check_onnx_bounds(PowNet().eval(), 4, tmp_path / "pow.onnx")
