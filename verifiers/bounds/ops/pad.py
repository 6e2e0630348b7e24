"""Zero padding of the last one or two dims (asymmetric ONNX conv padding, ONNX Pad, F.pad): images and 1-D signals."""
from __future__ import annotations

import torch.nn.functional as F

from certkit.verifiers.bounds.ops.base import Call, Op, Unsupported, register_op


@register_op(functions=(F.pad,), onnx=("Pad",))
class ZeroPad2d(Op):
    """``F.pad(x, (left, right))`` or ``F.pad(x, (left, right, top, bottom))`` with zeros."""

    name = "Pad"
    coordinatewise = True

    def __init__(self, pad: tuple[int, ...]):
        super().__init__()
        if len(pad) not in (2, 4) or any(p < 0 for p in pad):
            raise ValueError("only non-negative zero padding of the last one or two dims is supported")
        self.pad = tuple(int(p) for p in pad)

    @classmethod
    def from_call(cls, call: Call):
        args = list(call.args)
        pad = args[1] if len(args) > 1 else call.kwargs.get("pad")
        mode = call.kwargs.get("mode", args[2] if len(args) > 2 else "constant")
        value = call.kwargs.get("value", args[3] if len(args) > 3 else 0)
        if pad is None or mode != "constant" or (value or 0) != 0 or len(pad) not in (2, 4) or min(pad) < 0:
            raise Unsupported("only non-negative zero padding of the last one or two dims is supported")
        return cls(tuple(pad))

    def forward(self, x):
        return F.pad(x, self.pad)

    def ibp(self, iv):
        return F.pad(iv[0], self.pad), F.pad(iv[1], self.pad)

    def backward(self, A, in_bounds=(), relaxation=None):
        cut = []
        for k in range(len(self.pad) // 2):                      # the last dim first, as F.pad lists them
            n = A.shape[-1 - k]
            cut.insert(0, slice(self.pad[2 * k], n - self.pad[2 * k + 1]))
        return [A[(Ellipsis,) + tuple(cut)]], None

    def sound_error(self, *m):
        return None  # data movement: exact in floating point
