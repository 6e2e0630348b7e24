"""Elementwise affine ops y = x * scale + shift with per-sample broadcast constants: BatchNorm in eval mode,
input normalization, and arithmetic with constants (x + c, x - c, c - x, x * c, x / c)."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from certkit.verifiers.ops.base import Op, center_radius, sum_node


class ElementwiseAffine(Op):
    """y = x * scale + shift; ``params()`` returns (scale, shift) broadcastable to the per-sample shape.

    ``params`` is a callable so scale/shift are recomputed from live module parameters (differentiable).
    """

    name = "Affine"

    def __init__(self, params: Callable[[], tuple[torch.Tensor | None, torch.Tensor | None]], label: str = "Affine"):
        super().__init__()
        self.params = params
        self.name = label

    def forward(self, x):
        scale, shift = self.params()
        y = x if scale is None else x * scale
        return y if shift is None else y + shift

    def ibp(self, iv):
        scale, shift = self.params()
        c, r = center_radius(iv)
        c2 = self.forward(c)
        r2 = r if scale is None else r * scale.abs()
        return c2 - r2, c2 + r2

    def backward(self, A, *_):
        scale, shift = self.params()
        A_in = A if scale is None else A * scale
        bias = None if shift is None else sum_node(A * shift)
        return [A_in], bias


def track_batch_stats(model: nn.Module) -> list:
    """Record, on every BatchNorm of ``model``, the mean/var of the batch it normalizes in training mode.

    Certified training computes bounds with the statistics of the clean batch (Shi et al. 2021): run the clean
    forward pass first, then the bounds. Returns the hook handles (call ``.remove()`` to stop).
    """
    def hook(m, inputs, _):
        if m.training:
            x = inputs[0]
            dims = [0] + list(range(2, x.dim()))
            m._certkit_batch_stats = (x.mean(dims), x.var(dims, unbiased=False))
    return [m.register_forward_hook(hook) for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def batchnorm_op(module: nn.modules.batchnorm._BatchNorm, sample_shape: tuple) -> ElementwiseAffine:
    """BatchNorm: w = gamma / sqrt(var + eps), b = beta - mean * w (per channel), with the running statistics in
    eval mode and, in training mode, the clean batch's statistics recorded by :func:`track_batch_stats`."""
    view = (-1,) + (1,) * (len(sample_shape) - 1)

    def params():
        stats = getattr(module, "_certkit_batch_stats", None)
        mean, var = stats if module.training and stats is not None else (module.running_mean, module.running_var)
        w = torch.rsqrt(var + module.eps)
        if module.weight is not None:
            w = w * module.weight
        b = -mean * w
        if module.bias is not None:
            b = b + module.bias
        return w.view(view), b.view(view)
    return ElementwiseAffine(params, "BatchNorm")


def constant_op(scale: torch.Tensor | float | None, shift: torch.Tensor | None, label: str) -> ElementwiseAffine:
    """Affine op with fixed constants (already shaped to broadcast over one sample)."""
    if isinstance(scale, (int, float)):
        scale = torch.tensor(float(scale))
    return ElementwiseAffine(lambda: (scale, shift), label)
