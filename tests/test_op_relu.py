"""verifiers/bounds/ops/relu.py: the ReLU relaxation (CROWN and alpha-CROWN) on a dense grid of intervals."""
import torch

from certkit.verifiers.bounds.ops.relu import ReLU

from relaxation_checks import check_activation


def test_relu_relaxation_is_sound_on_every_interval():
    check_activation(ReLU())


def test_relu_is_exact_on_stable_neurons_and_alpha_is_the_lower_slope():
    op = ReLU()
    l = torch.tensor([0.5, -2.0, -1.0], dtype=torch.float64)
    u = torch.tensor([2.0, -0.5, 3.0], dtype=torch.float64)
    aL, cL, aU, cU = op.relax(l, u)
    assert aL.tolist() == [1.0, 0.0, 1.0] and aU[:2].tolist() == [1.0, 0.0]  # stable: exact lines
    assert abs(float(aU[2]) - 0.75) < 1e-12 and abs(float(cU[2]) - 0.75) < 1e-12  # chord through (-1,0), (3,3)
    alpha = torch.full((1, 3, 1), 0.3, dtype=torch.float64)
    aL2 = op.relax(l, u, alpha)[0][:, 0]
    assert aL2.tolist() == [1.0, 0.0, 0.3]
