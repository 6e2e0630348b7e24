"""Zero padding of the two spatial dims (asymmetric ONNX conv padding, ONNX Pad, F.pad)."""
from __future__ import annotations

import torch.nn.functional as F

from certkit.verifiers.bounds.ops.base import Call, Op, Unsupported, register_op


@register_op(functions=(F.pad,), onnx=("Pad",))
class ZeroPad2d(Op):
    """``F.pad(x, (left, right, top, bottom))`` with zeros."""

    name = "Pad"
    coordinatewise = True

    def __init__(self, pad: tuple[int, ...]):
        super().__init__()
        if len(pad) != 4 or any(p < 0 for p in pad):
            raise ValueError("only non-negative 2-D zero padding (left, right, top, bottom) is supported")
        self.pad = tuple(int(p) for p in pad)

    @classmethod
    def from_call(cls, call: Call):
        args = list(call.args)
        pad = args[1] if len(args) > 1 else call.kwargs.get("pad")
        mode = call.kwargs.get("mode", args[2] if len(args) > 2 else "constant")
        value = call.kwargs.get("value", args[3] if len(args) > 3 else 0)
        if pad is None or mode != "constant" or (value or 0) != 0 or len(pad) != 4 or min(pad) < 0:
            raise Unsupported("only non-negative 2-D zero padding is supported")
        return cls(tuple(pad))

    def forward(self, x):
        return F.pad(x, self.pad)

    def ibp(self, iv):
        return F.pad(iv[0], self.pad), F.pad(iv[1], self.pad)

    def backward(self, A, in_bounds=(), relaxation=None):
        left, right, top, bottom = self.pad
        H, W = A.shape[-2:]
        return [A[..., top:H - bottom, left:W - right]], None

    def sound_error(self, *m):
        return None  # data movement: exact in floating point
