"""Elementwise affine ops y = x * scale + shift with per-sample broadcast constants (the shared class behind
BatchNorm in eval mode, input normalization and arithmetic with constants)."""
from __future__ import annotations

from collections.abc import Callable

import torch

from certkit.verifiers.bounds.ops.base import Op, affine_rows, dot_node, unbroadcast


class ElementwiseAffine(Op):
    """y = x * scale + shift; ``params()`` returns (scale, shift) broadcastable to the per-sample shape.

    ``params`` is a callable so scale/shift are recomputed from live module parameters (differentiable).
    ``rounding`` (sound mode): a callable returning (n, scale_mag, shift_mag) such that evaluating the layer as the
    model writes it errs by at most gamma_n(u) * (scale_mag * |x| + shift_mag); default (4, |scale|, |shift|): a
    multiply and an add, the constants themselves rounded once (x / c run as x * (1/c)), one fused rounding to spare.
    """

    name = "Affine"
    coordinatewise = True

    def __init__(self, params: Callable[[], tuple[torch.Tensor | None, torch.Tensor | None]], label: str = "Affine",
                 rounding: Callable | None = None):
        super().__init__()
        self.params = params
        self.name = label
        self.rounding = rounding

    def forward(self, x):
        scale, shift = self.params()
        y = x if scale is None else x * scale
        return y if shift is None else y + shift

    def ibp(self, iv):
        # each end mapped on its own (not centre +- radius: (l + u) / 2 + eps - (u - l) / 2 loses a small shift eps
        # next to a wide interval to cancellation, the variance + eps of a LayerNorm)
        a, b = self.forward(iv[0]), self.forward(iv[1])
        return torch.minimum(a, b), torch.maximum(a, b)

    def forward_linear(self, rows, in_bounds=(), relaxation=None):
        scale, shift = self.params()
        out = None if self.out_shape is None else tuple(self.out_shape)

        def grow(x):                        # the data broadcast against a larger constant
            return x if out is None or tuple(x.shape[1:]) == out else torch.broadcast_to(x, (x.shape[0],) + out)
        if scale is None:
            return affine_rows(rows[0], grow, grow, shift)
        return affine_rows(rows[0], lambda x: grow(x * scale), lambda x: grow(x * scale.abs()), shift)

    def backward(self, A, in_bounds=(), relaxation=None):
        scale, shift = self.params()
        A_in = A if scale is None else A * scale
        bias = None if shift is None else dot_node(A, shift)
        if self.in_shapes and self.out_shape is not None and tuple(self.in_shapes[0]) != tuple(self.out_shape):
            A_in = unbroadcast(A_in, self.in_shapes[0])   # the data was broadcast against a larger constant
        return [A_in], bias

    def sound_error(self, m):
        if self.rounding is not None:
            n, scale_mag, shift_mag = self.rounding()
        else:
            scale, shift = self.params()
            n, scale_mag = 4, None if scale is None else scale.abs()
            shift_mag = None if shift is None else shift.abs()
        v = m if scale_mag is None else m * scale_mag
        return n, v if shift_mag is None else v + shift_mag


def constant_op(scale: torch.Tensor | float | None, shift: torch.Tensor | None, label: str) -> ElementwiseAffine:
    """Affine op with fixed constants (already shaped to broadcast over one sample)."""
    if isinstance(scale, (int, float)):
        scale = torch.tensor(float(scale))
    return ElementwiseAffine(lambda: (scale, shift), label)
