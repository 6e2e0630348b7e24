"""Permutation of the per-sample dims (torch.permute; ONNX Transpose keeping the batch first): a linear map."""
from __future__ import annotations

import torch

from certkit.verifiers.bounds.ops.base import Call, Op, Unsupported, register_op


@register_op(functions=(torch.permute, torch.transpose), methods=("permute", "transpose"), onnx=("Transpose",))
class Permute(Op):
    """``x.permute(0, *perm)`` or ``x.transpose(d0, d1)`` (the batch dimension must stay first)."""

    name = "Permute"
    coordinatewise = True

    def __init__(self, perm: tuple[int, ...]):
        super().__init__()
        self.perm = tuple(int(p) for p in perm)                       # over per-sample dims
        self.inverse = tuple(sorted(range(len(perm)), key=lambda k: self.perm[k]))

    @classmethod
    def from_call(cls, call: Call):
        args = call.args
        if call.target in (torch.transpose, "transpose"):   # swap two dims
            rank = len(call.shape) + 1
            d0, d1 = (int(d) + rank if int(d) < 0 else int(d) for d in (list(args[1:3]) + [call.kwargs.get("dim0"),
                                                                                          call.kwargs.get("dim1")])[:2])
            order = list(range(rank))
            order[d0], order[d1] = order[d1], order[d0]
            args = (args[0], order)
        perm = args[1] if len(args) == 2 and isinstance(args[1], (tuple, list)) else args[1:]
        perm = [int(p) for p in perm]
        if not perm or perm[0] != 0:
            raise Unsupported("a permutation must keep the batch dimension first")
        return cls(tuple(p - 1 for p in perm[1:]))

    def forward(self, x):
        return x.permute((0,) + tuple(p + 1 for p in self.perm))

    def ibp(self, iv):
        return self.forward(iv[0]), self.forward(iv[1])

    def backward(self, A, in_bounds=(), relaxation=None):
        return [A.permute((0, 1) + tuple(q + 2 for q in self.inverse))], None

    def sound_error(self, *m):
        return None  # data movement: exact in floating point
