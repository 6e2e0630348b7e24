"""Reshape of each sample (Flatten, Unflatten, view, reshape, squeeze/unsqueeze, Identity, eval-mode Dropout)."""
from __future__ import annotations

import torch
from torch import nn

from certkit.models.onnx_import import reshape_batch
from certkit.verifiers.bounds.ops.base import Op, register_op


@register_op(modules=(nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout),
             functions=(torch.flatten, torch.reshape, reshape_batch),
             methods=("view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze", "contiguous"),
             onnx=("Flatten", "Reshape", "Identity", "Dropout"))
class Reshape(Op):
    """Reshape each sample to ``out_shape`` (the batch dimension is kept)."""

    name = "Reshape"
    coordinatewise = True

    def forward(self, x):
        return x.reshape((x.shape[0],) + tuple(self.out_shape))

    def ibp(self, iv):
        return self.forward(iv[0]), self.forward(iv[1])

    def forward_linear(self, rows, in_bounds=(), relaxation=None):
        L, U = rows[0]
        return (L.reshape(L.shape[:2] + tuple(self.out_shape)), U.reshape(U.shape[:2] + tuple(self.out_shape)))

    def backward(self, A, in_bounds=(), relaxation=None):
        return [A.reshape(A.shape[:2] + tuple(self.in_shapes[0]))], None

    def sound_error(self, *m):
        return None  # data movement: exact in floating point
