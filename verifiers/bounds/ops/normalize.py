"""certkit's input normalization layer (models.zoo.NormalizeLayer): (x - mean) / std per channel."""
from __future__ import annotations

from certkit.models.zoo import NormalizeLayer
from certkit.verifiers.bounds.ops.affine import ElementwiseAffine
from certkit.verifiers.bounds.ops.base import Call, register_op


@register_op(modules=(NormalizeLayer,), name="Normalize")
def normalize_op(call: Call) -> ElementwiseAffine:
    """Normalization as x * (1/std) + (-mean/std), read live from the layer."""
    m, shape = call.target, call.shape
    return ElementwiseAffine(lambda: m.scale_shift(shape), "Normalize")
