"""Product of two data tensors, z = x * y elementwise (same shape, or broadcast within each sample, e.g. features
(n, d) times a mask (n, 1)): the bilinear relaxation (McCormick 1976; the
CROWN form of Shi et al. ICLR 2020, "Robustness verification for transformers", Sec. 3.3, as auto_LiRPA's BoundMul).

For x in [lx, ux] and y in [ly, uy] each side has two planes, exact at the box's corners:
    lower:  z >= ly x + lx y - lx ly          ((x - lx)(y - ly) >= 0)
            z >= uy x + ux y - ux uy          ((x - ux)(y - uy) >= 0)
    upper:  z <= uy x + lx y - lx uy          ((x - lx)(uy - y) >= 0)
            z <= ly x + ux y - ux ly          ((x - ux)(y - ly) <= 0)
and any convex combination of a side's two planes holds on the whole box. CROWN here takes the midpoint of each
side, z >= cy x + cx y - (lx ly + ux uy) / 2 and z <= cy x + cx y - (lx uy + ux ly) / 2 with (cx, cy) the box's
center: the tangent plane at the center shifted until it bounds z. Either plane alone is off by up to
(ux - lx)(uy - ly) at a corner, the midpoint by at most half of that (the minimax plane of the side); auto_LiRPA's
BoundMul takes the first plane of each side. On the lsnc state network of VNN-COMP 2024, whose Lyapunov decrease
condition is a sum of such products, 2,000 boxes from its input-split search: 1,520 refuted with the midpoint planes,
734 with the first ones. CROWN's backward rule takes the lower plane where the coefficient A >= 0 and the upper
plane where A < 0, giving coefficients for both inputs and a constant. IBP: the min and max of the four corner
products. With broadcasting the planes hold per output element (each with its operands' bounds) and the
coefficients of an operand are summed over the dims it was broadcast along. ``arithmetic_op`` (arithmetic.py)
builds it for a product of two data tensors of the same rank; a product with a constant stays an affine op there.

alpha-CROWN (Xu et al. ICLR 2021) optimises the weights (lam of the first lower plane, mu of the first upper plane)
per output element and specification row, starting from CROWN's (lam = mu = 1/2).

Branch and bound (GenBaB, Shi et al. 2024, which branches on the operands of products) may split either operand at
its midpoint; CROWN's planes gap by at most (ux - lx)(uy - ly) / 2 on the box, so an element of x is scored by
sum |A| (ux - lx)(uy - ly) over the outputs it enters (and likewise for y).
"""
from __future__ import annotations

import numpy as np
import torch

from certkit.verifiers.bounds.ops.base import Op, dot_node, scaled_rows, unbroadcast, with_constant


class Mul(Op):
    """x * y of two data tensors of the same rank, broadcast within each sample (built by arithmetic_op)."""

    name = "Mul"
    affine = False
    arity = 2
    branchable = True
    split_inputs = (0, 1)
    n_alpha = 2   # the weights of the first lower and the first upper plane against the second ones

    def forward(self, x, y):
        return x * y

    def ibp(self, a, b):
        corners = torch.stack([a[0] * b[0], a[0] * b[1], a[1] * b[0], a[1] * b[1]])
        return corners.amin(0), corners.amax(0)

    def unstable(self, l, u):
        return l < u

    def relaxation(self, in_bounds, alpha=None, setup=None):
        """(lower plane, upper plane), each (coefficient of x, of y, constant); with ``alpha`` (2, B, S, *out) the
        convex combinations of each side's two planes (module docstring), each entry (B, S, *out)."""
        (lx, ux), (ly, uy) = in_bounds
        if alpha is None:     # lam = mu = 1/2: both sides share the slopes of the tangent at the center
            cx, cy = (lx + ux) / 2, (ly + uy) / 2
            return (cy, cx, -(lx * ly + ux * uy) / 2), (cy, cx, -(lx * uy + ux * ly) / 2)
        lam, mu = alpha.clamp(0, 1)
        lx, ux, ly, uy = (t.unsqueeze(1) for t in (lx, ux, ly, uy))
        return ((lam * ly + (1 - lam) * uy, lam * lx + (1 - lam) * ux, -(lam * lx * ly + (1 - lam) * ux * uy)),
                (mu * uy + (1 - mu) * ly, mu * lx + (1 - mu) * ux, -(mu * lx * uy + (1 - mu) * ux * ly)))

    def alpha_init(self, in_bounds):
        """lam = mu = 1/2 (the planes CROWN uses), (2, B, *out)."""
        (lx, _), (ly, _) = in_bounds
        # numpy's: torch.broadcast_shapes imports sympy (0.4 s on the first call)
        shape = np.broadcast_shapes(tuple(lx.shape), tuple(ly.shape))
        return torch.full((2,) + shape, 0.5, dtype=lx.dtype, device=lx.device)

    def branch_scores(self, A, l, u, in_bounds=None, k=0):
        """Scores of operand ``k``'s elements (module docstring), -inf where its interval is narrower than 1e-4."""
        (lx, ux), (ly, uy) = in_bounds
        gap = (A.abs() * (ux - lx) * (uy - ly)).unsqueeze(1)
        if self.in_shapes and tuple(self.in_shapes[0]) != tuple(self.in_shapes[1]):
            gap = unbroadcast(gap, tuple(self.in_shapes[k]))
        return torch.where(self.splittable(l, u), gap[:, 0].expand_as(l) + 1e-12, torch.full_like(l, -torch.inf))

    def forward_linear(self, rows, in_bounds=(), relaxation=None):
        """The lower plane through the lower or upper bound of each operand by the sign of its coefficient, and the
        upper plane the other way round."""
        (ax_l, ay_l, c_l), (ax_u, ay_u, c_u) = relaxation if relaxation is not None else self.relaxation(in_bounds)
        (Lx, Ux), (Ly, Uy) = rows
        lower = with_constant(scaled_rows(ax_l, Lx, Ux) + scaled_rows(ay_l, Ly, Uy), c_l)
        upper = with_constant(scaled_rows(ax_u, Ux, Lx) + scaled_rows(ay_u, Uy, Ly), c_u)
        return lower, upper

    def backward(self, A, in_bounds=(), relaxation=None):
        (ax_l, ay_l, c_l), (ax_u, ay_u, c_u) = relaxation if relaxation is not None else self.relaxation(in_bounds)
        Ap = torch.relu(A)
        An = A - Ap
        ex = lambda t: t if t.dim() == A.dim() else t.unsqueeze(1)  # (B, *shape) -> (B, 1, *shape)  # noqa: E731
        A_x = Ap * ex(ax_l) + An * ex(ax_u)
        A_y = Ap * ex(ay_l) + An * ex(ay_u)
        bias = dot_node(Ap, ex(c_l)) + dot_node(An, ex(c_u))
        if self.in_shapes and tuple(self.in_shapes[0]) != tuple(self.in_shapes[1]):   # broadcast operands
            A_x, A_y = unbroadcast(A_x, tuple(self.in_shapes[0])), unbroadcast(A_y, tuple(self.in_shapes[1]))
        return [A_x, A_y], bias
