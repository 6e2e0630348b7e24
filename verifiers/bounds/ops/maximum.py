"""Elementwise max / min of two computed tensors (torch.maximum / torch.minimum; ONNX Max / Min of two inputs).

max(x, y) = y + relu(x - y) with d = x - y in [ld, ud] = [lx - uy, ux - ly]: exact when ld >= 0 (x) or ud <= 0 (y);
otherwise (the ReLU relaxation of CROWN, Zhang et al. NeurIPS 2018, applied to d)
    upper:  max(x, y) <= s x + (1 - s) y - s ld,   s = ud / (ud - ld)     (the chord of relu on [ld, ud]);
    lower:  max(x, y) >= lam x + (1 - lam) y,      lam = 1 where ud > -ld, else 0   (max is above both);
any lam in [0, 1] gives a valid lower line (the max is at least any convex combination of x and y): alpha-CROWN
(Xu et al. ICLR 2021) optimises lam per element and specification row, starting from CROWN's choice;
min(x, y) = -max(-x, -y). IBP: [max(lx, ly), max(ux, uy)]."""
from __future__ import annotations

import torch

from certkit.verifiers.bounds.ops.base import Call, Op, Unsupported, register_op, sum_node


@register_op(functions=(torch.maximum, torch.minimum), methods=("maximum", "minimum"), onnx=("Max", "Min"),
             name="Maximum")
class Maximum(Op):
    """max(x, y) (or min with ``minimum``) of two data tensors of the same shape."""

    name = "Maximum"
    affine = False
    arity = 2
    n_alpha = 1   # lam, the lower line's weight on x

    def __init__(self, minimum: bool = False):
        super().__init__()
        self.minimum = minimum
        self.name = "Minimum" if minimum else "Maximum"

    @classmethod
    def from_call(cls, call: Call):
        if len(call.data_args) != 2 or call.value(call.args[0]).shape != call.value(call.args[1]).shape:
            raise Unsupported("max / min of two data tensors of the same shape (with a constant: clamp)")
        return cls(call.target in (torch.minimum, "minimum"))

    def forward(self, x, y):
        return torch.minimum(x, y) if self.minimum else torch.maximum(x, y)

    def _flip(self, iv):   # min(x, y) = -max(-x, -y): the bounds of -x
        return (-iv[1], -iv[0]) if self.minimum else iv

    def ibp(self, a, b):
        (lx, ux), (ly, uy) = self._flip(a), self._flip(b)
        lo, hi = torch.maximum(lx, ly), torch.maximum(ux, uy)
        return (-hi, -lo) if self.minimum else (lo, hi)

    def unstable(self, l, u):
        return l < u

    def relaxation(self, in_bounds, alpha=None, setup=None):
        (lx, ux), (ly, uy) = (self._flip(iv) for iv in in_bounds)
        ld, ud = lx - uy, ux - ly
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
        return [A_x, A_y], bias
