"""Broadcast of each sample to a larger shape (``x.expand(B, ...)``, ``expand_as``, ``torch.broadcast_to``; ONNX
Expand of the data): every output coordinate is a copy of one input coordinate. IBP expands both ends (exact on
boxes); the backward rule sums each input coordinate's copies (the adjoint of broadcasting)."""
from __future__ import annotations

import torch

from certkit.models.onnx_import import expand_batch
from certkit.verifiers.bounds.ops.base import Call, Op, Unsupported, register_op, unbroadcast


@register_op(functions=(torch.broadcast_to, expand_batch), methods=("expand", "expand_as", "broadcast_to"),
             onnx=("Expand",))
class Expand(Op):
    """Each sample (of per-sample shape ``in_shapes[0]``) broadcast to ``out_shape`` (the same rank; size-1 dims
    repeated)."""

    name = "Expand"
    coordinatewise = True

    @classmethod
    def from_call(cls, call: Call):
        x = call.value(call.data_args[0])
        if x.dim() != len(call.shape) + 1:
            raise Unsupported(f"expand of a tensor of shape {tuple(x.shape)} to another rank (the batch must stay "
                              f"the first dimension)")
        return cls()

    def forward(self, x):
        return x.expand((x.shape[0],) + tuple(self.out_shape))

    def ibp(self, iv):
        return self.forward(iv[0]), self.forward(iv[1])

    def backward(self, A, in_bounds=(), relaxation=None):
        return [unbroadcast(A, tuple(self.in_shapes[0]))], None

    def sound_error(self, *m):
        return None  # data movement: exact in floating point
