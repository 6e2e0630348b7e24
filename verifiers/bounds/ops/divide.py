"""Quotient of two data tensors, z = x / y with y > 0 (the normalization of a LayerNorm, attention's softmax written
out): z = x r with r = 1 / y, the bilinear relaxation of x r (McCormick; Shi et al. ICLR 2020) composed with the
convex relaxation of the reciprocal (Zhang et al. NeurIPS 2018):

    r in [lr, ur] = [1 / uy, 1 / ly];  lower: z >= lr x + lx r - lx lr;  upper: z <= ur x + lx r - lx ur;
    r >= its tangent at the midpoint d of [ly, uy]: -y / d^2 + 2 / d;  r <= its chord: -y / (ly uy) + 1/ly + 1/uy.

The coefficient of r in the plane CROWN picks (A lx) decides which line of r replaces it (the tangent where it is
>= 0). y may broadcast against x (a per-token denominator). Denominators reaching 0 or below have no finite bound
(reported as NaN / inf bounds). Lines are shifted by 1e-6 ur (relative: the float32 rounding of 1 / y and of the
lines is relative to r, and an absolute shift, multiplied by the plane's coefficient lx, swamped quotients of large
numbers such as x / sum(x) with x ~ 1e5). alpha-CROWN (Xu et al. ICLR 2021) optimises, per output element and
specification row, the weights of each side's two McCormick planes of x r (as bilinear.py) and the tangent point
of r in [ly, uy] (every tangent of the convex 1 / y lies below it).

Branch and bound (GenBaB, Shi et al. 2024) may split either operand at its midpoint: the gap of the planes is at
most (ux - lx)(ur - lr) / 4 plus |x| times the gap of r's lines (at most ur - lr), so an element of either operand
scores sum |A| (ux - lx + max(|lx|, |ux|)) (ur - lr) over the outputs it enters.
"""
from __future__ import annotations

import numpy as np
import torch

from certkit.verifiers.bounds.ops.base import Op, scaled_rows, sum_node, unbroadcast, with_constant

SHIFT = 1e-6


class Div(Op):
    """x / y of two data tensors, y > 0 (built by arithmetic_op; y may broadcast against x)."""

    name = "Div"
    affine = False
    arity = 2
    branchable = True
    split_inputs = (0, 1)
    n_alpha = 3   # the weights of each side's two planes of x r, and the tangent point of r = 1 / y

    def forward(self, x, y):
        return x / y

    @staticmethod
    def _recip(ly, uy):
        pos = ly > 0
        inf = torch.full_like(ly, torch.inf)
        lr = torch.where(pos, 1 / uy, -inf)
        ur = torch.where(pos, 1 / ly, inf)
        return lr, ur

    def ibp(self, a, b):
        lr, ur = self._recip(*b)
        corners = torch.stack([a[0] * lr, a[0] * ur, a[1] * lr, a[1] * ur])
        return corners.amin(0), corners.amax(0)

    def unstable(self, l, u):
        return l < u

    def relaxation(self, in_bounds, alpha=None, setup=None):
        """(lower plane of x r, upper plane of x r, each (coefficient of x, of r, constant), tangent of r, chord of
        r); with ``alpha`` (3, B, S, *out): (lam, mu) the weights of each side's first plane against its second
        (lower ur x + ux r - ux ur, upper lr x + ux r - ux lr), t the tangent point ly + t (uy - ly); every entry
        then (B, S, *out)."""
        (lx, ux), (ly, uy) = in_bounds
        lr, ur = self._recip(ly, uy)
        if alpha is None:
            d = (ly + uy) / 2
            lower, upper = (lr, lx, -lx * lr), (ur, lx, -lx * ur)
        else:
            lam, mu, t = alpha.clamp(0, 1)
            lx, ux, ly, uy, lr, ur = (v.unsqueeze(1) for v in (lx, ux, ly, uy, lr, ur))
            d = ly + t * (uy - ly)
            lower = (lam * lr + (1 - lam) * ur, lam * lx + (1 - lam) * ux, -(lam * lx * lr + (1 - lam) * ux * ur))
            upper = (mu * ur + (1 - mu) * lr, mu * lx + (1 - mu) * ux, -(mu * lx * ur + (1 - mu) * ux * lr))
        shift = SHIFT * ur
        tangent = (-1 / (d * d), 2 / d - shift)                          # r >= aT y + cT
        chord = (-1 / (ly * uy), 1 / ly + 1 / uy + shift)                # r <= aC y + cC
        return lower, upper, tangent, chord

    def alpha_init(self, in_bounds):
        """lam = mu = 1 (CROWN's planes) and the tangent at the midpoint (t = 1/2), (3, B, *out)."""
        (lx, _), (ly, _) = in_bounds
        # numpy's: torch.broadcast_shapes imports sympy (0.4 s on the first call)
        shape = np.broadcast_shapes(tuple(lx.shape), tuple(ly.shape))
        init = torch.ones((3,) + shape, dtype=lx.dtype, device=lx.device)
        init[2] = 0.5
        return init

    def branch_scores(self, A, l, u, in_bounds=None, k=0):
        """Scores of operand ``k``'s elements (module docstring), -inf where narrower than 1e-4; a denominator
        interval reaching 0 scores 1e30."""
        (lx, ux), (ly, uy) = in_bounds
        lr, ur = self._recip(ly, uy)
        gap = A.abs() * (ux - lx + torch.maximum(lx.abs(), ux.abs())) * (ur - lr)
        gap = unbroadcast(torch.nan_to_num(gap, nan=1e30, posinf=1e30).unsqueeze(1), tuple(self.in_shapes[k]))[:, 0]
        return torch.where(self.splittable(l, u), gap.expand_as(l) + 1e-12, torch.full_like(l, -torch.inf))

    def forward_linear(self, rows, in_bounds=(), relaxation=None):
        """x r by its planes, r = 1 / y by its tangent (below) or chord (above) as the plane's coefficient of r
        needs, each operand through its lower or upper bound by the sign of its coefficient."""
        r = relaxation if relaxation is not None else self.relaxation(in_bounds)
        (x_lo, r_lo, c_lo), (x_up, r_up, c_up), (aT, cT), (aC, cC) = r
        (Lx, Ux), (Ly, Uy) = rows

        def side(x_c, r_c, c, lower):
            line_a = torch.where((r_c >= 0) == lower, aT, aC)    # r's lower line (tangent) where it is needed
            line_c = torch.where((r_c >= 0) == lower, cT, cC)
            if lower:
                T = scaled_rows(x_c, Lx, Ux) + scaled_rows(r_c * line_a, Ly, Uy)
            else:
                T = scaled_rows(x_c, Ux, Lx) + scaled_rows(r_c * line_a, Uy, Ly)
            return with_constant(T, c + r_c * line_c)
        return side(x_lo, r_lo, c_lo, True), side(x_up, r_up, c_up, False)

    def backward(self, A, in_bounds=(), relaxation=None):
        r = relaxation if relaxation is not None else self.relaxation(in_bounds)
        (x_lo, r_lo, c_lo), (x_up, r_up, c_up), (aT, cT), (aC, cC) = r
        ex = lambda t: t if t.dim() == A.dim() else t.unsqueeze(1)  # noqa: E731  (B, *shape) -> (B, 1, *shape)
        Ap = torch.relu(A)
        An = A - Ap
        A_x = Ap * ex(x_lo) + An * ex(x_up)
        coef_r = Ap * ex(r_lo) + An * ex(r_up)               # the coefficient of r in the chosen planes
        rp = torch.relu(coef_r)
        rn = coef_r - rp
        A_y = rp * ex(aT) + rn * ex(aC)
        bias = sum_node(Ap * ex(c_lo) + An * ex(c_up) + rp * ex(cT) + rn * ex(cC))
        return [unbroadcast(A_x, self.in_shapes[0]), unbroadcast(A_y, self.in_shapes[1])], bias
