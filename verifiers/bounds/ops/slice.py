"""Basic indexing of data tensors, ``x[:, 2:5]``, ``x[..., ::2]``, ``x[:, 0]`` (``operator.getitem`` with slices,
integers and Ellipsis; ONNX ``Slice``): an affine map that keeps some coordinates, so IBP slices the intervals (exact)
and the backward rule puts the coefficients A back at the kept coordinates, zero elsewhere. The batch dimension is
never indexed; steps must be positive; advanced indexing (tensors, lists, None) is refused."""
from __future__ import annotations

import operator

import torch

from certkit.verifiers.bounds.ops.base import Call, Op, Unsupported, register_op


@register_op(functions=(operator.getitem,), onnx=("Slice",))
class Slice(Op):
    """``x[index]`` with ``index`` of slices (step > 0), integers and Ellipsis, the batch dimension kept whole."""

    name = "Slice"
    coordinatewise = True

    def __init__(self, index: tuple):
        super().__init__()
        self.index = index     # for the batched tensor; index[0] == slice(None)

    @classmethod
    def from_call(cls, call: Call):
        index = call.args[1]
        index = index if isinstance(index, tuple) else (index,)
        for i in index:
            if isinstance(i, slice):
                if any(call.is_data(v) or hasattr(v, "name") for v in (i.start, i.stop, i.step)):
                    raise Unsupported("slicing with bounds computed at run time")
                if i.step is not None and i.step <= 0:
                    raise Unsupported("slicing with a step <= 0")
            elif i is not Ellipsis and not isinstance(i, int):
                what = ("a list" if isinstance(i, (list, tuple)) else "None (a new axis)" if i is None else
                        "a tensor" if isinstance(i, torch.Tensor) or hasattr(i, "name") else type(i).__name__)
                raise Unsupported(f"indexing with {what} (certkit bounds slices, integers and ...)")
        if index and index[0] is Ellipsis:
            index = (slice(None),) + index           # ... covers the batch dimension and every other
        if not index or index[0] != slice(None):
            raise Unsupported("indexing that selects from the batch dimension")
        return cls(index)

    def forward(self, x):
        return x[self.index]

    def ibp(self, iv):
        return iv[0][self.index], iv[1][self.index]

    def forward_linear(self, rows, in_bounds=(), relaxation=None):
        index = (slice(None),) + tuple(self.index)      # the rows dimension after the batch
        return rows[0][0][index], rows[0][1][index]

    def backward(self, A, in_bounds=(), relaxation=None):
        B, S = A.shape[:2]
        A_in = torch.zeros((B, S) + tuple(self.in_shapes[0]), dtype=A.dtype, device=A.device)
        view = A_in.reshape((B * S,) + tuple(self.in_shapes[0]))
        view[self.index] = A.reshape((B * S,) + tuple(self.out_shape))
        return [A_in], None

    def sound_error(self, *m):
        return None  # data movement: exact in floating point
