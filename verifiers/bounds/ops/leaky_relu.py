"""LeakyReLU(z) = max(a z, z) for a negative slope 0 <= a <= 1 (convex, piecewise linear).

Relaxation on [l, u] (the ReLU rules of CROWN, Zhang et al. 2018, with a second slope): stable neurons are exact
(slope 1 for l >= 0, a for u <= 0); an unstable neuron (l < 0 < u) gets the chord through (l, a l) and (u, u) as its
upper line and a line s z through the origin with s in [a, 1] as its lower line (below both pieces everywhere).
CROWN picks s = 1 when u > -l, else s = a; alpha-CROWN (Xu et al. 2021) optimises s = a + alpha (1 - a),
alpha in [0, 1]. ONNX ``LeakyRelu`` (attribute alpha) imports as ``nn.LeakyReLU``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from certkit.verifiers.bounds.ops.activation import Activation, per_row
from certkit.verifiers.bounds.ops.base import Call, Unsupported, register_op


@register_op(modules=(nn.LeakyReLU,), functions=(F.leaky_relu,), onnx=("LeakyRelu",))
class LeakyReLU(Activation):
    """LeakyReLU with negative slope ``a`` in [0, 1]."""

    name = "LeakyReLU"
    zero_lower_intercept = True
    piecewise_linear = True
    n_alpha = 1

    def __init__(self, negative_slope: float = 0.01):
        super().__init__()
        if not 0.0 <= negative_slope <= 1.0:
            raise Unsupported(f"LeakyReLU with negative slope {negative_slope} (certkit bounds slopes in [0, 1])")
        self.a = float(negative_slope)

    @classmethod
    def from_call(cls, call: Call):
        if call.kind == "module":
            return cls(call.target.negative_slope)
        slope = call.args[1] if len(call.args) > 1 else call.kwargs.get("negative_slope", 0.01)
        return cls(float(slope))

    def function(self, z):
        return F.leaky_relu(z, self.a)

    def derivative(self, z):
        return torch.where(z > 0, torch.ones_like(z), torch.full_like(z, self.a))

    def alpha_init(self, in_bounds):
        l, u = in_bounds[0]
        return (u > -l).to(l.dtype).unsqueeze(0)

    def relax(self, l, u, alpha=None, setup=None):
        up, lmn = torch.relu(u), torch.relu(-l)  # u+ and -l- (relu, not clamp: cheaper gradient, relu.py)
        # chord through (l-, a l-) and (u+, u+); + float tiny only stops 0/0 at l = u = 0 (a floor like 1e-8
        # undercut the function on intervals narrower than it)
        k = (up + self.a * lmn) / (up + lmn + torch.finfo(l.dtype).tiny)
        cU = (k - self.a) * lmn
        t = (u > -l).to(l.dtype) if alpha is None else alpha[0].clamp(0, 1)
        if alpha is not None:
            k, cU = k.unsqueeze(1).expand_as(t), cU.unsqueeze(1).expand_as(t)
        s = self.a + t * (1 - self.a)
        active, inactive = per_row(l >= 0, alpha), per_row(u <= 0, alpha)
        s = torch.where(active, torch.ones_like(s), torch.where(inactive, torch.full_like(s, self.a), s))
        return s, torch.zeros_like(s), k, cU
