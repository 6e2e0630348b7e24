"""verifiers/bounds/ops/tanh.py: the S-shaped relaxation of tanh on a dense grid of intervals."""
import torch

from certkit.verifiers.bounds.ops.tanh import Tanh

from relaxation_checks import check_activation


def test_tanh_relaxation_is_sound_on_every_interval():
    check_activation(Tanh())


def test_tanh_crossing_interval_uses_the_tangent_through_the_far_end():
    """CROWN's lower line on [-2, 2] is the tangent at d_L* that passes through (2, tanh 2) (up to bisection)."""
    op = Tanh()
    l, u = torch.tensor([-2.0], dtype=torch.float64), torch.tensor([2.0], dtype=torch.float64)
    aL, cL, _, _ = op.relax(l, u)
    assert abs(float(aL * 2 + cL) - float(torch.tanh(u))) < 1e-5
