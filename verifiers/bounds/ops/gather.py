"""Selection of entries along a non-batch dim with constant indices (torch.index_select; ONNX Gather on the data with
constant 1-D indices): a linear map. IBP selects both ends; the backward rule adds each output's coefficient to the
entry it was taken from (index_add: repeated indices accumulate)."""
from __future__ import annotations

import torch

from certkit.verifiers.bounds.ops.base import Call, Op, Unsupported, register_op


@register_op(functions=(torch.index_select,), methods=("index_select",), onnx=("Gather",))
class IndexSelect(Op):
    """``torch.index_select(x, dim, index)`` with a constant 1-D index over a non-batch dim."""

    name = "IndexSelect"
    coordinatewise = True

    def __init__(self, dim: int, index: torch.Tensor):
        super().__init__()
        self.dim, self.index = dim, index.long()

    @classmethod
    def from_call(cls, call: Call):
        args = list(call.args) + [call.kwargs.get("dim"), call.kwargs.get("index")]
        dim, index = args[1], args[2]
        if call.is_data(index):
            raise Unsupported("indices computed from the input are not supported")
        rank = len(call.shape) + 1
        dim = int(dim) + rank if int(dim) < 0 else int(dim)
        if dim == 0:
            raise Unsupported("selection along the batch dimension")
        return cls(dim, torch.as_tensor(call.value(index)).reshape(-1))

    def forward(self, x):
        return torch.index_select(x, self.dim, self.index.to(x.device))

    def ibp(self, iv):
        return self.forward(iv[0]), self.forward(iv[1])

    def backward(self, A, in_bounds=(), relaxation=None):
        B, S = A.shape[:2]
        A_in = torch.zeros((B, S) + tuple(self.in_shapes[0]), dtype=A.dtype, device=A.device)
        return [A_in.index_add_(self.dim + 1, self.index.to(A.device), A)], None

    def sound_error(self, *m):
        return None  # data movement: exact in floating point
