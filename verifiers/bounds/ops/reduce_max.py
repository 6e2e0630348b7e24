"""Maximum and minimum over non-batch dimensions (``torch.amax`` / ``torch.amin`` and the tensor methods, with
``dim`` and ``keepdim``; ONNX ``ReduceMax`` / ``ReduceMin``): max is convex and piecewise linear, min = -max(-x).

Relaxation of y = max_i z_i over the reduced coordinates with bounds [l_i, u_i] (DeepPoly's max rule, Singh et al.,
POPL 2019, Sec. 4.3; the rule of max pooling, maxpool.py, over arbitrary dimensions):
    lower: y >= z_m with m = argmax_i l_i;
    upper: y <= max_i u_i (a constant);
    exact: y = z_m when l_m >= u_i for every other i.
alpha-CROWN (Xu et al. ICLR 2021) optimises the lower line y >= sum_i w_i z_i over convex combinations w of the
group (one alpha in [0, 1] per reduced coordinate, group and specification row; w = alpha / sum(alpha)), starting
from the one-hot winner (CROWN's line).
IBP reduces both ends (max is monotone: exact on boxes). For the minimum the same rule applies to -z with the signs
of the coefficients flipped: upper line z_m with m = argmin_i u_i, lower constant min_i l_i.
Branch and bound splits a group as max-pooling splits a window: the coordinate with the largest upper bound at the
group's second largest upper bound, so one child decides the group (scored by |A| (max u - max l)).
"""
from __future__ import annotations

import torch

from certkit.verifiers.bounds.ops.base import Call, Op, register_op, sum_node
from certkit.verifiers.bounds.ops.reduce import reduce_dims


@register_op(functions=(torch.amax, torch.amin), methods=("amax", "amin"), onnx=("ReduceMax", "ReduceMin"))
class ReduceMax(Op):
    """Max (or min, ``minimum=True``) over ``dims`` of the batched tensor (all >= 1), with or without ``keepdim``."""

    name = "ReduceMax"
    affine = False
    branchable = True          # the top coordinate of an undecided group is split, as in max-pooling
    piecewise_linear = True    # affine where every group is decided (the leaf linear programs rely on it)

    def __init__(self, dims: tuple[int, ...], keepdim: bool, minimum: bool):
        super().__init__()
        self.dims, self.keepdim, self.minimum = dims, keepdim, minimum

    @classmethod
    def from_call(cls, call: Call):
        dims, keepdim = reduce_dims(call, len(call.value(call.data_args[0]).shape))
        name = call.target if isinstance(call.target, str) else call.target.__name__
        return cls(dims, keepdim, name == "amin")

    def forward(self, x):
        return x.amin(self.dims, keepdim=self.keepdim) if self.minimum else x.amax(self.dims, keepdim=self.keepdim)

    def ibp(self, iv):
        return self.forward(iv[0]), self.forward(iv[1])

    # -- the reduced coordinates last: (N, *in) <-> (N, K, R) ---------------------------------------
    def _perm(self) -> list[int]:
        rank = len(self.in_shapes[0]) + 1
        return [d for d in range(rank) if d not in self.dims] + list(self.dims)

    def _grouped(self, t: torch.Tensor) -> torch.Tensor:
        """(N, *in) -> (N, K, R), R = the reduced coordinates."""
        r = 1
        for d in self.dims:
            r *= t.shape[d]
        return t.permute(self._perm()).reshape(t.shape[0], -1, r)

    def _ungrouped(self, t: torch.Tensor) -> torch.Tensor:
        """(N, K, R) -> (N, *in), the inverse of :meth:`_grouped`."""
        perm = self._perm()
        in_shape = (t.shape[0],) + tuple(self.in_shapes[0])
        t = t.reshape([in_shape[d] for d in perm])
        return t.permute([perm.index(d) for d in range(len(perm))])

    @property
    def n_alpha(self) -> int:  # type: ignore[override]  # read-only here: it follows the input shape
        """One weight per reduced coordinate (the size R of a group)."""
        R = 1
        for d in self.dims:
            R *= self.in_shapes[0][d - 1]
        return R

    def alpha_init(self, in_bounds):
        """One-hot on each group's winner (CROWN's lower line): (R, B, *out_shape)."""
        m = self.relaxation(in_bounds)[0]
        onehot = torch.zeros(m.shape + (self.n_alpha,), dtype=in_bounds[0][0].dtype, device=m.device)
        onehot.scatter_(-1, m.unsqueeze(-1), 1.0)
        return onehot.permute(2, 0, 1).reshape((self.n_alpha, m.shape[0]) + tuple(self.out_shape))

    def relaxation(self, in_bounds, alpha=None, setup=None):
        """(m (B, K) winner of each group, exact (B, K), upper constant U (B, K)) of the max of the group, for the
        minimum of z the max of -z; with ``alpha`` (R, B, S, *out_shape) a fourth entry: the lower line's weights
        (B, S, K, R), a convex combination of each group (the one-hot winner where the group is exact)."""
        l, u = in_bounds[0]
        if self.minimum:
            l, u = -u, -l
        lg, ug = self._grouped(l), self._grouped(u)
        m = lg.argmax(-1, keepdim=True)
        others = ug.scatter(-1, m, float("-inf")).amax(-1)
        exact = lg.gather(-1, m)[..., 0] >= others
        if alpha is None:
            return m[..., 0], exact, ug.amax(-1)
        B, S, K, R = alpha.shape[1], alpha.shape[2], lg.shape[1], lg.shape[2]
        onehot = torch.zeros_like(lg).scatter_(-1, m, 1.0).unsqueeze(1)      # (B, 1, K, R)
        a = alpha.clamp(0, 1).reshape(R, B, S, K).permute(1, 2, 3, 0)
        total = a.sum(-1, keepdim=True)
        w = torch.where(total > 0, a / total.clamp(min=torch.finfo(a.dtype).tiny), onehot)
        return m[..., 0], exact, ug.amax(-1), torch.where(exact[:, None, :, None], onehot, w)

    def unstable(self, l, u):
        """Inputs of the groups whose winner IBP leaves undecided."""
        _, exact, _ = self.relaxation([(l, u)])
        R = self._grouped(l).shape[-1]
        return self._ungrouped((~exact).unsqueeze(-1).expand(-1, -1, R).contiguous())

    # -- branching, as max-pooling's windows (maxpool.py) ---------------------------------------------
    def _branch_groups(self, l: torch.Tensor, u: torch.Tensor):
        """Per group of the max of z (of -z for the minimum): (top (N, K, 1) the coordinate with the largest upper
        bound, p (N, K) where to split it, ok (N, K) whether the group is undecided and l_top < p < u_top, gap (N, K)
        max u - max l)."""
        _, exact, U = self.relaxation([(l, u)])
        if self.minimum:
            l, u = -u, -l
        lg, ug = self._grouped(l), self._grouped(u)
        top = ug.argmax(-1, keepdim=True)
        second = ug.scatter(-1, top, float("-inf")).amax(-1)
        l_top = lg.gather(-1, top)[..., 0]
        p = torch.where(second < U, second, (l_top + U) / 2)
        ok = ~exact & (p > l_top) & (p < U) & (U - l_top > 1e-9)
        return top, p, ok, U - lg.amax(-1)

    def _on_top(self, top: torch.Tensor, values: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
        """Group values (N, K) put on each group's top coordinate (where ``ok``), -inf elsewhere -> (N, *in)."""
        R = self._grouped(torch.zeros((1,) + tuple(self.in_shapes[0]))).shape[-1]
        g = torch.full(top.shape[:2] + (R,), float("-inf"), dtype=values.dtype, device=values.device)
        g.scatter_(-1, top, torch.where(ok, values, torch.full_like(values, float("-inf"))).unsqueeze(-1))
        return self._ungrouped(g)

    def splittable(self, l: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Input coordinates (bool, like l) branch and bound may split: the top coordinate of each undecided group."""
        top, p, ok, _ = self._branch_groups(l, u)
        return torch.isfinite(self._on_top(top, p, ok))

    def split_points(self, l: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """The group's second largest upper bound for splittable coordinates (so one child decides the group; for
        the minimum, mirrored), the midpoint elsewhere."""
        top, p, ok, _ = self._branch_groups(l, u)
        cells = self._on_top(top, -p if self.minimum else p, ok)
        return torch.where(torch.isfinite(cells), cells, (l + u) / 2)

    def branch_scores(self, A, l, u, in_bounds=None, k=0):
        """|A| of the group's output times its gap max u - max l on the top coordinate, -inf elsewhere."""
        top, _, ok, gap = self._branch_groups(l, u)
        return self._on_top(top, A.reshape(A.shape[0], -1).abs() * gap.clamp(min=0) + 1e-12, ok)

    def backward(self, A, in_bounds=(), relaxation=None):
        relaxation = relaxation if relaxation is not None else self.relaxation(in_bounds)
        m, exact, U = relaxation[:3]
        B, S = A.shape[:2]
        K = m.shape[1]
        A = A.reshape(B, S, K)
        if self.minimum:
            A = -A
        Ap = torch.relu(A)
        An = A - Ap
        ex = exact.unsqueeze(1)
        coef = Ap + An * ex                                              # on z_m: A+ always, A- where exact
        bias = sum_node(An * (~ex) * U.unsqueeze(1))                     # A- on the constant elsewhere
        R = self.n_alpha
        if len(relaxation) == 4:                                         # alpha-CROWN: A+ spread by the weights
            A_in = coef.unsqueeze(-1) * relaxation[3]
        else:
            A_in = torch.zeros((B, S, K, R), dtype=A.dtype, device=A.device)
            A_in.scatter_(3, m.view(B, 1, K, 1).expand(B, S, K, 1), coef.unsqueeze(-1))
        A_in = self._ungrouped(A_in.reshape(B * S, K, R))
        if self.minimum:
            A_in = -A_in
        return [A_in.reshape((B, S) + tuple(self.in_shapes[0]))], bias
