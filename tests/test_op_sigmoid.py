"""verifiers/bounds/ops/sigmoid.py: the S-shaped relaxation of sigmoid on a dense grid of intervals, and its alphas."""
import torch

from certkit.verifiers.bounds.ops.sigmoid import Sigmoid

from relaxation_checks import check_activation


def test_sigmoid_relaxation_is_sound_on_every_interval():
    check_activation(Sigmoid())


def test_sigmoid_tangent_points_move_with_alpha():
    """On a convex interval the lower line is the tangent at l + alpha (u - l): alpha changes it, every choice sound."""
    op = Sigmoid()
    l, u = torch.tensor([-4.0], dtype=torch.float64), torch.tensor([-1.0], dtype=torch.float64)
    slopes = []
    for a in (0.0, 0.5, 1.0):
        alpha = torch.tensor([[[a]], [[0.5]]], dtype=torch.float64)
        slopes.append(float(op.relax(l, u, alpha)[0].flatten()[0]))
    d = torch.tensor([-4.0, -2.5, -1.0], dtype=torch.float64)
    assert torch.allclose(torch.tensor(slopes, dtype=torch.float64), op.derivative(d), atol=1e-12)
