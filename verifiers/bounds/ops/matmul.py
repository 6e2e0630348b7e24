"""Matrix product of two computed tensors, Z = X @ Y (attention's Q K^T and its weights times V): every entry is a
sum of products x_it y_tj, each bounded by the McCormick planes (Shi et al. ICLR 2020, "Robustness verification for
transformers", Sec. 3.3; as bilinear.py for elementwise products):

    lower: x y >= ly x + lx y - lx ly  and  uy x + ux y - ux uy,
    upper: x y <= uy x + lx y - lx uy  and  ly x + ux y - ux ly.

CROWN takes the midpoint of each side's two planes (bilinear.py: the tangent at the center c shifted by the
radii r, x y >= cy x + cx y - cx cy - rx ry and x y <= cy x + cx y - cx cy + rx ry), the lower one where the
coefficient A_ij on Z_ij is >= 0 and the upper one where it is < 0; the sums over the shared index are matrix
products, so the backward rule is four matmuls:
    A_X = A @ cy^T,   A_Y = cx^T @ A,   bias = -sum(A * (cx @ cy) + |A| * (rx @ ry)).
IBP: the exact interval matrix product, each entry the sum over t of the min / max of the four corner products
x_it y_tj (the midpoint-radius form |cx| @ ry + rx @ |cy| + rx @ ry is up to 1.5x wider), computed in slices of
rows of at most CHUNK products. X (..., n, k) and Y
(..., k, m) share their leading dims (no broadcasting between them). x @ W with a constant 2-D W is a linear map
(linear_const.py).
"""
from __future__ import annotations

import operator

import torch

from certkit.verifiers.bounds.ops.base import Call, Op, Unsupported, dot_node, register_op

#: largest number of corner products an IBP slice holds (x 4 tensors of the input's dtype)
CHUNK = 2 ** 22


@register_op(functions=(torch.matmul, operator.matmul, torch.bmm), methods=("matmul", "bmm"), name="MatMul")
class MatMul(Op):
    """X @ Y of two data tensors of shapes (..., n, k) and (..., k, m) with the same leading dims."""

    name = "MatMul"
    affine = False
    arity = 2
    branchable = True      # GenBaB (Shi et al. 2024) branches on the operands of products: either, at the midpoint
    split_inputs = (0, 1)
    n_alpha = 2            # per output entry: the weights of each product's first lower / upper plane (bilinear.py)

    @classmethod
    def from_call(cls, call: Call) -> Op:
        if len(call.data_args) == 1 and call.is_data(call.args[0]):   # x @ W with a constant W (k, m)
            w = call.const(call.args[1])
            if w.dim() != 2:
                raise Unsupported(f"x @ W with a constant W of shape {tuple(w.shape)} (certkit bounds a 2-D W)")
            from certkit.verifiers.bounds.ops.linear_const import LinearConst
            return LinearConst(w.T)
        if len(call.data_args) != 2:
            raise Unsupported("W @ x with a constant W on the left (write x @ W.T or use nn.Linear)")
        a, b = (tuple(call.value(t).shape) for t in call.args[:2])
        if len(a) < 3 or len(a) != len(b) or a[:-2] != b[:-2]:
            raise Unsupported(f"matmul of shapes {a} and {b} (certkit bounds (..., n, k) @ (..., k, m) with the "
                              f"same leading dims)")
        return cls()

    def forward(self, x, y):
        return torch.matmul(x, y)

    def ibp(self, a, b):
        (lx, ux), (ly, uy) = a, b
        n, k, m = lx.shape[-2], lx.shape[-1], ly.shape[-1]
        rows = max(1, CHUNK // max(1, lx[..., :1, :1].numel() * k * m))
        lo, hi = [], []
        yl, yu = ly.unsqueeze(-3), uy.unsqueeze(-3)                       # (..., 1, k, m)
        for r0 in range(0, n, rows):
            xl, xu = lx[..., r0:r0 + rows, :, None], ux[..., r0:r0 + rows, :, None]   # (..., rows, k, 1)
            p1, p2, p3, p4 = xl * yl, xl * yu, xu * yl, xu * yu
            lo.append(torch.minimum(torch.minimum(p1, p2), torch.minimum(p3, p4)).sum(-2))
            hi.append(torch.maximum(torch.maximum(p1, p2), torch.maximum(p3, p4)).sum(-2))
        return torch.cat(lo, -2), torch.cat(hi, -2)

    def unstable(self, l, u):
        return l < u

    def branch_scores(self, A, l, u, in_bounds=None, k=0):
        """Scores of operand ``k``'s elements, -inf where narrower than 1e-4: the McCormick planes of x_it y_tj gap
        by at most w(x_it) w(y_tj) / 4, so x_it scores w(x_it) sum_j |A_ij| w(y_tj) (= w(X) * (|A| @ w(Y)^T)) and
        y_tj scores w(y_tj) sum_i |A_ij| w(x_it) (= w(Y) * (w(X)^T @ |A|)); A (D, ..., n, m)."""
        (lx, ux), (ly, uy) = in_bounds
        wx, wy = ux - lx, uy - ly
        s = wx * (A.abs() @ wy.transpose(-1, -2)) if k == 0 else wy * (wx.transpose(-1, -2) @ A.abs())
        return torch.where(self.splittable(l, u), s + 1e-12, torch.full_like(l, -torch.inf))

    def alpha_init(self, in_bounds):
        """lam = mu = 1/2 (CROWN's planes) for every output entry, (2, B, ..., n, m)."""
        (lx, _), (ly, _) = in_bounds
        return torch.full((2,) + lx.shape[:-1] + ly.shape[-1:], 0.5, dtype=lx.dtype, device=lx.device)

    def relaxation(self, in_bounds, alpha=None, setup=None):
        """None (CROWN's planes), or with ``alpha`` (2, B, S, ..., n, m) the weights (lam, mu) in [0, 1] of each
        product's first lower / upper plane, shared by the k products of an output entry."""
        return None if alpha is None else alpha.clamp(0, 1)

    def backward(self, A, in_bounds=(), relaxation=None):
        """Every product x_it y_tj of the entry (i, j) bounded by the planes of bilinear.py: lower (lam) ly x + lx y
        - lx ly + (1 - lam) (uy x + ux y - ux uy) where the entry's coefficient is >= 0, upper (mu) uy x + lx y -
        lx uy + (1 - mu) (ly x + ux y - ux ly) where it is < 0; the sums over t are matrix products."""
        (lx, ux), (ly, uy) = in_bounds
        lx, ux, ly, uy = (t.unsqueeze(1) for t in (lx, ux, ly, uy))   # (B, 1, ..., rows, cols): one per spec row
        T = lambda t: t.transpose(-1, -2)  # noqa: E731
        if relaxation is None:
            # lam = mu = 1/2 (bilinear.py): the tangent at the center c shifted by the radii r, lower
            # cy x + cx y - cx cy - rx ry, upper cy x + cx y - cx cy + rx ry
            cx, rx, cy, ry = (lx + ux) / 2, (ux - lx) / 2, (ly + uy) / 2, (uy - ly) / 2
            bias = -(dot_node(A, cx @ cy) + dot_node(A.abs(), rx @ ry))
            return [A @ T(cy), T(cx) @ A], bias
        Ap = torch.relu(A)
        An = A - Ap
        lam, mu = relaxation
        P1, P2, N1, N2 = Ap * lam, Ap * (1 - lam), An * mu, An * (1 - mu)
        A_x = P1 @ T(ly) + P2 @ T(uy) + N1 @ T(uy) + N2 @ T(ly)
        A_y = T(lx) @ (P1 + N1) + T(ux) @ (P2 + N2)
        bias = -(P1 * (lx @ ly) + P2 * (ux @ uy) + N1 * (lx @ uy) + N2 * (ux @ ly)).flatten(2).sum(-1)
        return [A_x, A_y], bias
