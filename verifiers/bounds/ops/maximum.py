"""Elementwise max / min of two computed tensors (torch.maximum / torch.minimum; ONNX Max / Min of two inputs).

max(x, y) = y + relu(d) with d = x - y. Before the bound graph is built, every ``torch.maximum(x, y)`` of two traced
tensors is rewritten as ``max_of(x - y, x, y)`` (and min likewise), so that the difference d is a node of its own:
CROWN bounds it (tighter than [lx - uy, ux - ly]) and branch and bound splits it at 0 like a ReLU input (each half
is exact: x on d >= 0, y on d <= 0). With d in [ld, ud] (the intersection of d's bounds and [lx - uy, ux - ly]):
exact when ld >= 0 (x) or ud <= 0 (y); otherwise (the ReLU relaxation of CROWN, Zhang et al. NeurIPS 2018, applied
to d)
    upper:  max(x, y) <= s x + (1 - s) y - s ld,   s = ud / (ud - ld)     (the chord of relu on [ld, ud]);
    lower:  max(x, y) >= lam x + (1 - lam) y,      lam = 1 where ud > -ld, else 0   (max is above both);
any lam in [0, 1] gives a valid lower line (the max is at least any convex combination of x and y): alpha-CROWN
(Xu et al. ICLR 2021) optimises lam per element and specification row, starting from CROWN's choice;
min(x, y) = -max(-x, -y) (whose difference is -d). IBP: the tightest of [max(lx, ly), max(ux, uy)],
y + relu([ld, ud]) and x + relu([-ud, -ld]). Branching d at 0 is the split of Max that GenBaB (Shi et al. 2024) and
beta-CROWN make for ReLU.
"""
from __future__ import annotations

import operator

import torch
from torch import fx

from certkit.verifiers.bounds.ops.base import Call, Op, Unsupported, register_op, register_rewrite, sum_node


def max_of(d: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """torch.maximum(x, y); ``d`` (= x - y) is carried only so that bounds and branch and bound can use it."""
    return torch.maximum(x, y)


def min_of(d: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """torch.minimum(x, y); ``d`` (= x - y) as in :func:`max_of`."""
    return torch.minimum(x, y)


_TARGETS = {("call_function", torch.maximum): max_of, ("call_function", torch.minimum): min_of,
            ("call_method", "maximum"): max_of, ("call_method", "minimum"): min_of}


def _matches(n: fx.Node) -> bool:
    return ((n.op, n.target) in _TARGETS and len(n.args) == 2 and not n.kwargs
            and all(isinstance(a, fx.Node) for a in n.args))


def _with_difference(graph: fx.Graph, n: fx.Node) -> None:
    """Replace max(x, y) / min(x, y) by max_of(x - y, x, y) / min_of(x - y, x, y)."""
    x, y = n.args
    with graph.inserting_before(n):
        d = graph.call_function(operator.sub, (x, y))
        m = graph.call_function(_TARGETS[(n.op, n.target)], (d, x, y))
    n.replace_all_uses_with(m)
    graph.erase_node(n)


register_rewrite(_matches, _with_difference)


@register_op(functions=(max_of, min_of, torch.maximum, torch.minimum), methods=("maximum", "minimum"),
             onnx=("Max", "Min"), name="Maximum")
class Maximum(Op):
    """max(x, y) (or min with ``minimum``) of two data tensors of the same shape, given with their difference:
    inputs (d, x, y), d = x - y."""

    name = "Maximum"
    affine = False
    arity = 3
    n_alpha = 1   # lam, the lower line's weight on x
    branchable = True   # branch and bound splits d at 0
    piecewise_linear = True   # affine where the sign of d is decided (the leaf linear programs rely on it)

    def __init__(self, minimum: bool = False):
        super().__init__()
        self.minimum = minimum
        self.name = "Minimum" if minimum else "Maximum"

    @classmethod
    def from_call(cls, call: Call):
        if call.target not in (max_of, min_of) or len(call.data_args) != 3 \
                or call.value(call.args[1]).shape != call.value(call.args[2]).shape:
            raise Unsupported("max / min of two data tensors of the same shape (with a constant: clamp)")
        return cls(call.target is min_of)

    def forward(self, d, x, y):
        return torch.minimum(x, y) if self.minimum else torch.maximum(x, y)

    def _flipped(self, bounds):
        """(ld, ud), (lx, ux), (ly, uy) of max's operands: for min, of -x, -y and their difference -d; ld, ud
        intersected with [lx - uy, ux - ly]."""
        (ld, ud), (lx, ux), (ly, uy) = bounds
        if self.minimum:
            (ld, ud), (lx, ux), (ly, uy) = (-ud, -ld), (-ux, -lx), (-uy, -ly)
        return (torch.maximum(ld, lx - uy), torch.minimum(ud, ux - ly)), (lx, ux), (ly, uy)

    def ibp(self, d, a, b):
        (ld, ud), (lx, ux), (ly, uy) = self._flipped((d, a, b))
        lo = torch.maximum(torch.maximum(lx, ly), torch.maximum(ly + ld.clamp(min=0), lx + (-ud).clamp(min=0)))
        hi = torch.minimum(torch.maximum(ux, uy), torch.minimum(uy + ud.clamp(min=0), ux + (-ld).clamp(min=0)))
        hi = torch.maximum(hi, lo)   # equal up to rounding when the box is a point
        return (-hi, -lo) if self.minimum else (lo, hi)

    def unstable(self, l, u):
        """Of the difference d (the first input): the relaxation is inexact where d's sign is open."""
        return (l < 0) & (u > 0)

    def splittable(self, l: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Elements whose difference d = x - y (bounds l, u) has an open sign: branch and bound splits them."""
        return (l < 0) & (u > 0)

    def split_points(self, l: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """0 (where x and y swap), like ReLU's split; the midpoint where the sign is decided."""
        return torch.where((l < 0) & (u > 0), torch.zeros_like(l), (l + u) / 2)

    def branch_scores(self, A: torch.Tensor, l: torch.Tensor, u: torch.Tensor, in_bounds=None, k: int = 0
                      ) -> torch.Tensor:
        """BaBSR-style scores (Bunel et al. JMLR 2020) of the elements, -inf where not splittable: |A| times the
        upper line's intercept -l u / (u - l) at the worst end, for A (D, *shape) the coefficient of the output
        in the bound being branched on (for min, d's bounds are mirrored; the intercept is the same)."""
        ok = self.splittable(l, u)
        gap = -l.clamp(max=0) * u.clamp(min=0) / (u - l).clamp(min=1e-12)
        return torch.where(ok, A.abs() * gap + 1e-12, torch.full_like(l, -torch.inf))

    def relaxation(self, in_bounds, alpha=None, setup=None):
        (ld, ud), _, _ = self._flipped(in_bounds)
        x_wins, y_wins = ld >= 0, ud <= 0
        s = torch.where(x_wins, torch.ones_like(ld), torch.where(y_wins, torch.zeros_like(ld),
                                                                  ud / (ud - ld).clamp(min=1e-30)))
        c = torch.where(x_wins | y_wins, torch.zeros_like(ld), -s * ld)
        free = alpha[0].clamp(0, 1) if alpha is not None else (ud > -ld).to(ld.dtype)
        if alpha is not None:      # (B, S, *shape): one lam per specification row
            x_wins, y_wins, s, c = (t.unsqueeze(1) for t in (x_wins, y_wins, s, c))
        lam = torch.where(x_wins, torch.ones_like(free), torch.where(y_wins, torch.zeros_like(free), free))
        return lam, s, c

    def alpha_init(self, in_bounds):
        return self.relaxation(in_bounds)[0].unsqueeze(0)

    def backward(self, A, in_bounds=(), relaxation=None):
        lam, s, c = relaxation if relaxation is not None else self.relaxation(in_bounds)
        lam, s, c = (t if t.dim() == A.dim() else t.unsqueeze(1) for t in (lam, s, c))
        if self.minimum:   # a lower bound of A . min(x, y) = a lower bound of (-A) . max(-x, -y)
            A = -A
        Ap = torch.relu(A)
        An = A - Ap
        A_x = Ap * lam + An * s
        A_y = Ap * (1 - lam) + An * (1 - s)
        bias = sum_node(An * c)
        if self.minimum:   # coefficients on -x, -y become coefficients on x, y
            A_x, A_y = -A_x, -A_y
        return [None, A_x, A_y], bias
