"""Sums and means over non-batch dimensions (``torch.sum`` / ``torch.mean`` and the tensor methods, with ``dim`` and
``keepdim``; ``nn.AdaptiveAvgPool2d`` to 1 x 1, global average pooling; ONNX ``ReduceSum``, ``ReduceMean``,
``GlobalAveragePool``): affine maps with non-negative weights, so IBP reduces the two ends (exact on boxes) and the
backward rule spreads each coefficient over the reduced coordinates (divided by their count for a mean)."""
from __future__ import annotations

import math

import torch
from torch import nn

from certkit.verifiers.bounds.ops.base import Call, Op, Unsupported, register_op


def reduce_dims(call: Call, rank: int) -> tuple[tuple[int, ...], bool]:
    """(dims, keepdim) of a reduction call ``f(x, dim, keepdim)`` on a batched tensor of ``rank`` dims: the dims
    sorted, counted from 0, never the batch.

    Raises:
        Unsupported: no dim (every dimension, the batch included) or the batch dimension among them.
    """
    dim = call.args[1] if len(call.args) > 1 else call.kwargs.get("dim")
    keepdim = call.args[2] if len(call.args) > 2 else call.kwargs.get("keepdim", False)
    if dim is None or dim == () or dim == []:
        raise Unsupported("a reduction over every dimension, the batch included")
    dims = tuple(sorted({int(d) % rank for d in (dim if isinstance(dim, (list, tuple)) else (dim,))}))
    if 0 in dims:
        raise Unsupported("a reduction over the batch dimension")
    return dims, bool(keepdim)


@register_op(modules=(nn.AdaptiveAvgPool2d,), functions=(torch.sum, torch.mean), methods=("sum", "mean"),
             onnx=("ReduceSum", "ReduceMean", "GlobalAveragePool"))
class Reduce(Op):
    """Sum or mean over ``dims`` (of the batched tensor, all >= 1), with or without ``keepdim``."""

    name = "Reduce"

    def __init__(self, dims: tuple[int, ...], keepdim: bool, mean: bool):
        super().__init__()
        self.dims, self.keepdim, self.mean = dims, keepdim, mean

    @classmethod
    def from_call(cls, call: Call):
        rank = len(call.value(call.data_args[0]).shape)
        if call.kind == "module":
            size = call.target.output_size
            size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
            if size != (1, 1):
                raise Unsupported("AdaptiveAvgPool2d to a size other than 1 x 1")
            return cls((rank - 2, rank - 1), True, True)
        if call.kwargs.get("dtype") is not None:
            raise Unsupported("a reduction with a dtype")
        dims, keepdim = reduce_dims(call, rank)
        name = call.target if isinstance(call.target, str) else call.target.__name__
        return cls(dims, keepdim, name == "mean")

    def forward(self, x):
        return x.mean(self.dims, keepdim=self.keepdim) if self.mean else x.sum(self.dims, keepdim=self.keepdim)

    def ibp(self, iv):
        return self.forward(iv[0]), self.forward(iv[1])

    def forward_linear(self, rows, in_bounds=(), relaxation=None):
        dims = tuple(d + 1 for d in self.dims)          # the rows dimension after the batch
        def f(T):
            return T.mean(dims, keepdim=self.keepdim) if self.mean else T.sum(dims, keepdim=self.keepdim)
        return f(rows[0][0]), f(rows[0][1])

    def backward(self, A, in_bounds=(), relaxation=None):
        in_shape = tuple(self.in_shapes[0])
        if not self.keepdim:
            for d in self.dims:                    # batched dim d is A's dim d + 1
                A = A.unsqueeze(d + 1)
        count = math.prod(in_shape[d - 1] for d in self.dims)
        A_in = A.expand(A.shape[:2] + in_shape)
        return [A_in / count if self.mean else A_in.clone()], None
