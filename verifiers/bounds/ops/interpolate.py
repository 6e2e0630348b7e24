"""Upsampling (nn.Upsample, F.interpolate; ONNX Resize / Upsample) in ``nearest`` or ``bilinear`` mode: a linear map
with non-negative weights, so IBP maps the interval ends exactly; the CROWN backward rule is the adjoint map, taken as
the vector-Jacobian product of the forward map (exact for a linear map, differentiable for alpha-CROWN)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from certkit.verifiers.bounds.ops.base import Call, Op, Unsupported, map_rows, register_op


@register_op(modules=(nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d), functions=(F.interpolate,),
             onnx=("Resize", "Upsample"))
class Interpolate(Op):
    """Nearest or bilinear resizing of the spatial dims (``size`` or ``scale_factor``, ``align_corners``)."""

    name = "Interpolate"

    def __init__(self, size=None, scale_factor=None, mode: str = "nearest", align_corners=None):
        super().__init__()
        if mode not in ("nearest", "bilinear", "linear"):
            raise Unsupported(f"interpolation mode {mode!r} (certkit bounds nearest and bilinear, whose weights are "
                              f"non-negative)")
        self.size, self.scale_factor, self.mode, self.align_corners = size, scale_factor, mode, align_corners

    @classmethod
    def from_call(cls, call: Call):
        if call.kind == "module":
            m = call.target
            return cls(m.size, m.scale_factor, m.mode, m.align_corners)
        kw = dict(call.kwargs)
        names = ("size", "scale_factor", "mode", "align_corners")
        for name, v in zip(names, call.args[1:]):
            kw.setdefault(name, v)
        if kw.get("recompute_scale_factor") or kw.get("antialias"):
            raise Unsupported("recompute_scale_factor / antialias are not supported")
        return cls(kw.get("size"), kw.get("scale_factor"), kw.get("mode", "nearest"), kw.get("align_corners"))

    def forward(self, x):
        return F.interpolate(x, self.size, self.scale_factor, self.mode, self.align_corners)

    def ibp(self, iv):
        return self.forward(iv[0]), self.forward(iv[1])

    def forward_linear(self, rows, in_bounds=(), relaxation=None):
        L, U = rows[0]           # non-negative weights: the lower rows map to lower rows, the upper to upper
        FL = map_rows(self.forward, L)
        return FL, (FL if U is L else map_rows(self.forward, U))

    def backward(self, A, in_bounds=(), relaxation=None):
        B, S = A.shape[:2]
        in_shape = tuple(self.in_shapes[0])
        if self.mode == "nearest" and len(in_shape) == 3:
            (C, H, W), (Ho, Wo) = in_shape, tuple(self.out_shape)[1:]
            if Ho % H == 0 and Wo % W == 0:
                # integer factors: output pixel (i, j) copies input (i // sh, j // sw), so the adjoint sums each
                # sh x sw block (the vector-Jacobian product below took 0.4 s per pass on a cGAN's 32 x 32 images)
                return [A.reshape((B, S, C, H, Ho // H, W, Wo // W)).sum((4, 6))], None
        x0 = torch.zeros((B * S,) + in_shape, dtype=A.dtype, device=A.device, requires_grad=True)
        with torch.enable_grad():
            y = self.forward(x0)
            (g,) = torch.autograd.grad(y, x0, A.reshape((B * S,) + tuple(self.out_shape)),
                                       create_graph=A.requires_grad)
        return [g.reshape((B, S) + in_shape)], None

    def sound_error(self, m):
        if self.mode == "nearest":
            return None   # copies
        return 4 + 2, self.forward(m)   # up to 4 weighted terms per output (weights >= 0: |M| m = M m)
