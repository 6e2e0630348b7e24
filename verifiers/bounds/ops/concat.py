"""Concatenation of data tensors along a non-batch dimension (``torch.cat`` / ``torch.concat``, ONNX ``Concat``): an
affine map that stacks its inputs, so IBP concatenates the intervals (exact) and the backward rule cuts the
coefficients A into one slice per input along the same dimension."""
from __future__ import annotations

import torch

from certkit.verifiers.bounds.ops.base import Call, Op, Unsupported, register_op


@register_op(functions=(torch.cat, torch.concat), onnx=("Concat",))
class Concat(Op):
    """``torch.cat(tensors, dim)`` of data tensors (every piece computed from the input), dim >= 1."""

    name = "Concat"

    def __init__(self, dim: int, arity: int):
        super().__init__()
        self.dim = dim          # in the batched tensor (>= 1)
        self.arity = arity

    @classmethod
    def from_call(cls, call: Call):
        pieces = call.args[0] if call.args else call.kwargs.get("tensors")
        dim = call.args[1] if len(call.args) > 1 else call.kwargs.get("dim", call.kwargs.get("axis", 0))
        if not isinstance(pieces, (list, tuple)) or not all(call.is_data(t) for t in pieces):
            raise Unsupported("concatenation with a constant tensor is not supported (every piece must be computed "
                              "from the input)")
        rank = len(call.shape) + 1
        dim = int(dim) + rank if int(dim) < 0 else int(dim)
        if dim == 0:
            raise Unsupported("concatenation along the batch dimension")
        return cls(dim, len(pieces))

    def forward(self, *xs):
        return torch.cat(xs, self.dim)

    def ibp(self, *ivs):
        return torch.cat([iv[0] for iv in ivs], self.dim), torch.cat([iv[1] for iv in ivs], self.dim)

    def backward(self, A, in_bounds=(), relaxation=None):
        sizes = [shape[self.dim - 1] for shape in self.in_shapes]
        return list(torch.split(A, sizes, dim=self.dim + 1)), None

    def sound_error(self, *m):
        return None  # data movement: exact in floating point
