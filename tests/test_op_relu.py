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


def test_the_lines_from_a_relaxation_setup_are_those_computed_from_the_bounds():
    """alpha-/beta-CROWN compute relaxation_setup once per set of bounds and pass it at every step: the lines must be
    the same, bit for bit, with and without it (CROWN's and alpha's), on stable, unstable and degenerate intervals."""
    op = ReLU()
    gen = torch.Generator().manual_seed(0)
    l = torch.randn(4, 50, generator=gen, dtype=torch.float64)
    u = l + torch.rand(4, 50, generator=gen, dtype=torch.float64) * 2
    u[0, :5] = l[0, :5]                                  # zero-width intervals
    l[1, :5], u[1, :5] = 0.0, 0.0
    alpha = torch.rand(1, 4, 3, 50, generator=gen, dtype=torch.float64)
    setup = op.relaxation_setup([(l, u)])
    for a in (None, alpha):
        for got, want in zip(op.relax(l, u, a, setup), op.relax(l, u, a)):
            assert torch.equal(got, want)
    assert bool(((l < 0) & (u > 0)).any()) and bool((l >= 0).any()) and bool((u <= 0).any())
