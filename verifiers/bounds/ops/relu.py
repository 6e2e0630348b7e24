"""ReLU (CROWN, Zhang et al. NeurIPS 2018; alpha-CROWN, Xu et al. ICLR 2021)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from certkit.verifiers.bounds.ops.activation import Activation, per_row
from certkit.verifiers.bounds.ops.base import register_op


@register_op(modules=(nn.ReLU,), functions=(torch.relu, F.relu), methods=("relu",), onnx=("Relu",))
class ReLU(Activation):
    """ReLU. Upper line through (l-, 0) and (u+, u+); lower line a_L z with a_L = 1 if u > -l else 0
    ("adaptive"), or a_L = alpha in [0, 1] for unstable neurons (alpha-CROWN). Stable neurons are exact."""

    name = "ReLU"
    zero_lower_intercept = True
    piecewise_linear = True
    n_alpha = 1
    sound_breakpoints = (0.0,)  # the sound mode's offsets check each line at the kink (verifiers/bounds/sound.py)

    def function(self, z):
        return torch.relu(z)

    def derivative(self, z):
        return (z > 0).to(z.dtype)

    def sound_error(self, *m):
        return None  # max(z, 0) is exact in floating point

    @staticmethod
    def default_alpha(l: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """CROWN's adaptive lower slope: 1 where u > -l, else 0 (the alpha-CROWN starting point)."""
        return (u > -l).to(l.dtype)

    def alpha_init(self, in_bounds):
        return self.default_alpha(*in_bounds[0]).unsqueeze(0)

    def relaxation_setup(self, in_bounds):
        """What the lines take from the bounds alone, (a_U, c_U, unstable, active) (B, *shape) each (the masks as
        0/1 in the bounds' dtype): alpha-CROWN and beta-CROWN steps reuse it for every alpha (on the CIFAR ResNet of
        VNN-COMP's sri_resnet_b computing it at every step took 12% of branch and bound)."""
        l, u = in_bounds[0]
        aU, cU = self._upper(l, u)
        return aU, cU, ((l < 0) & (u > 0)).to(l.dtype), (l >= 0).to(l.dtype)

    @staticmethod
    def _upper(l, u):
        # relu, not clamp: clamp's gradient is a `where` pass 3x slower than relu's on CPU (CROWN-IBP training)
        up, lmn = torch.relu(u), torch.relu(-l)            # u+ and -l- (the chord runs from (l-, 0) to (u+, u+))
        # + float tiny only stops 0/0 at l = u = 0 and vanishes against any normal width; a floor like
        # max(width, 1e-8) turned the exact line of an active neuron narrower than it (u/u = 1) into a slope < 1
        # that undercuts the ReLU
        aU = up / (up + lmn + torch.finfo(l.dtype).tiny)
        return aU, lmn * aU

    def relax(self, l, u, alpha=None, setup=None):
        if alpha is None:  # 1 where active (l >= 0), 0 where inactive (u <= 0 implies u <= -l), adaptive in between
            aU, cU = self._upper(l, u) if setup is None else setup[:2]
            return ((u > -l) | (l >= 0)).to(l.dtype), torch.zeros_like(l), aU, cU
        aU, cU, unstable, active = self.relaxation_setup([(l, u)]) if setup is None else setup
        # alpha on unstable neurons, 1 on active, 0 on inactive: mask products, not two `where` passes (whose
        # gradients are the slow kind on CPU); the clamp keeps any alpha given in [0, 1]
        unstable, active = per_row(unstable, alpha), per_row(active, alpha)
        aL = alpha[0].clamp(0, 1) * unstable + active
        aU, cU = aU.unsqueeze(1).expand_as(aL), cU.unsqueeze(1).expand_as(aL)
        return aL, torch.zeros_like(aL), aU, cU
