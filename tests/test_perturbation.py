"""Perturbation sets: the concretization min over the set of sum(A * x) against its closed form."""
import pytest
import torch

from certkit.common.errors import CertkitError
from certkit.verifiers.bounds.perturbation import Box, L2Ball, box_lower, linf_ball


def _box_min(x_L, x_U, A):
    """min over the box of sum(A * x), coordinate by coordinate: A_i x_L,i where A_i >= 0, else A_i x_U,i."""
    B, S = A.shape[:2]
    lo, hi = x_L.reshape(B, 1, -1), x_U.reshape(B, 1, -1)
    Af = A.detach().reshape(B, S, -1)
    return torch.where(Af >= 0, Af * lo, Af * hi).sum(-1)


@pytest.mark.parametrize("grad", [False, True])
def test_box_lower_is_the_exact_minimum_and_attained(grad):
    g = torch.Generator().manual_seed(0)
    x_L = torch.rand((4, 3, 5, 5), generator=g, dtype=torch.float64)
    x_U = x_L + torch.rand((4, 3, 5, 5), generator=g, dtype=torch.float64)
    A = torch.randn((4, 7, 3, 5, 5), generator=g, dtype=torch.float64).requires_grad_(grad)
    with torch.set_grad_enabled(grad):
        lb = Box(x_L, x_U).lower(A)
    torch.testing.assert_close(lb.detach(), _box_min(x_L, x_U, A), rtol=1e-12, atol=1e-12)
    # attained at the vertex that picks x_L where A >= 0: no point of the box goes lower (random points do not)
    lo, hi = x_L.reshape(4, 1, 75), x_U.reshape(4, 1, 75)
    x = lo + (hi - lo) * torch.rand((4, 1000, 75), generator=g, dtype=torch.float64)
    vals = torch.einsum("bsn,bpn->bsp", A.detach().reshape(4, 7, -1), x)
    assert bool((vals >= lb.detach().unsqueeze(-1) - 1e-9).all())
    if grad:  # the gradient w.r.t. A is the minimising vertex
        lb.sum().backward()
        vertex = torch.where(A.detach() >= 0, x_L.unsqueeze(1), x_U.unsqueeze(1))
        torch.testing.assert_close(A.grad, vertex, rtol=1e-12, atol=1e-12)


def test_box_lower_broadcasts_one_box_over_a_batch_of_rows():
    x_L, x_U = torch.zeros(1, 3), torch.ones(1, 3)
    A = torch.tensor([[[1.0, -2.0, 3.0]], [[-1.0, -1.0, -1.0]]])      # (2, 1, 3)
    torch.testing.assert_close(box_lower(x_L, x_U, A), torch.tensor([[-2.0], [-3.0]]))


def test_box_and_balls_refuse_bad_input():
    with pytest.raises(CertkitError, match="x_L must be <= x_U"):
        Box(torch.ones(1, 2), torch.zeros(1, 2))
    with pytest.raises(CertkitError, match="finite"):
        Box(torch.zeros(1, 2), torch.tensor([[1.0, float("inf")]]))
    with pytest.raises(CertkitError, match="eps must be >= 0"):
        linf_ball(torch.zeros(1, 2), -0.1)
    with pytest.raises(CertkitError, match="eps must be >= 0"):
        linf_ball(torch.zeros(1, 2), float("inf"), None)
    for bad in (float("nan"), float("inf"), -float("inf"), 1.2, -0.2):   # 1.2, -0.2: further than eps from [0,1]
        with pytest.raises(CertkitError, match="must be finite"):
            linf_ball(torch.tensor([[0.5, bad]]), 0.1)
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(CertkitError, match="must be finite"):
            linf_ball(torch.tensor([[0.5, bad]]), 0.1, None)
    box = linf_ball(torch.tensor([[1.05, -0.05]]), 0.1)                 # within eps of the range: clipped, not empty
    torch.testing.assert_close(box.x_L, torch.tensor([[0.95, 0.0]]))
    torch.testing.assert_close(box.x_U, torch.tensor([[1.0, 0.05]]))
    with pytest.raises(CertkitError, match="eps must be >= 0"):
        L2Ball(torch.zeros(1, 2), float("nan"))
