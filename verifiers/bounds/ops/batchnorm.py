"""BatchNorm as an elementwise affine map (eval mode: running statistics; certified training: the clean batch's
statistics, Shi et al. NeurIPS 2021)."""
from __future__ import annotations

import torch
from torch import nn

from certkit.verifiers.bounds.ops.affine import ElementwiseAffine
from certkit.verifiers.bounds.ops.base import Call, Unsupported, register_op


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


@register_op(modules=(nn.BatchNorm1d, nn.BatchNorm2d), onnx=("BatchNormalization",), name="BatchNorm")
def batchnorm_op(call: Call) -> ElementwiseAffine:
    """BatchNorm: w = gamma / sqrt(var + eps), b = beta - mean * w (per channel), with the running statistics in
    eval mode and, in training mode, the clean batch's statistics recorded by :func:`track_batch_stats`."""
    module = call.target
    if module.running_mean is None:
        raise Unsupported("BatchNorm without running statistics")
    view = (-1,) + (1,) * (len(call.shape) - 1)

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

    def rounding():
        # as run: (x - mean) * gamma / sqrt(var + eps) + beta, or folded into w, b (a few roundings either way): the
        # error is at most gamma_8 * (|w| |x| + |mean w| + |beta|)
        w, b = params()
        mean = module.running_mean.view(view)
        beta = 0 if module.bias is None else module.bias.view(view).abs()
        return 8, w.abs(), (mean * w).abs() + beta
    return ElementwiseAffine(params, "BatchNorm", rounding)
