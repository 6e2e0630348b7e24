"""S-shaped activations (increasing, convex on (-inf, 0], concave on [0, inf)): the CROWN relaxation of Zhang et al.
NeurIPS 2018 (Sec. 3.3; as auto_LiRPA operators/s_shaped.py) and its alpha-CROWN form (tangent points optimised,
Xu et al. ICLR 2021). Sigmoid and Tanh are one small file each on top of this base.

Lines on [l, u]:
    u <= 0 (convex):  lower = tangent at d in [l, u] (CROWN: the midpoint), upper = chord.
    l >= 0 (concave): upper = tangent at d in [l, u] (CROWN: the midpoint), lower = chord.
    l < 0 < u:        lower = the chord when its slope k <= f'(l), else the tangent at d in [l, d_L*], where the
                      tangent at d_L* passes through (u, f(u)) (CROWN: d_L*); the upper line mirrors it with
                      d in [d_U*, u] (CROWN: d_U*).
alpha (2 per neuron, in [0, 1]) moves the lower and the upper tangent point inside its valid range (0 = CROWN's
point in the crossing case, 0.5 the midpoint otherwise). The lines are shifted outward by 1e-6 (1 + |f(l)| +
|f(u)|) for float safety; intervals narrower than 1e-5 get the constant bounds [f(l), f(u)]; both in float32 units
(activation.py ``float32_units``: 1.9e-15 and 1.9e-14 when the bounds are computed in float64).
"""
from __future__ import annotations

import torch

from certkit.verifiers.bounds.ops.activation import Activation, float32_units, per_row


def bisect_root(fn, lo, hi, keep_lo: bool, iters: int = 25):
    """Vectorized bisection for the root of a monotone ``fn`` on [lo, hi].

    Returns the end of the final bracket on the side where fn keeps its sign at ``lo`` (keep_lo=True) or at
    ``hi`` (keep_lo=False): the sound side for the tangent-point searches below.
    """
    f_lo = fn(lo)
    for _ in range(iters):
        mid = (lo + hi) / 2
        same = (fn(mid) >= 0) == (f_lo >= 0)
        lo, hi = torch.where(same, mid, lo), torch.where(same, hi, mid)
    return lo if keep_lo else hi


class SShaped(Activation):
    """Base of Sigmoid / Tanh: subclasses give ``function`` and ``derivative``."""

    n_alpha = 2

    def unstable(self, l, u):
        """Every neuron with l < u: the lines are inexact on any interval (not only on those crossing 0), so CROWN
        refines every intermediate bound (IBP's grow quickly with depth)."""
        return l < u

    def _tangent(self, d):
        a = self.derivative(d)
        return a, self.function(d) - a * d

    def alpha_init(self, in_bounds):
        l, u = in_bounds[0]
        return torch.stack([torch.where(u <= 0, 0.5, 0.0).to(l.dtype), torch.where(l >= 0, 0.5, 0.0).to(l.dtype)])

    def relaxation_setup(self, in_bounds):
        """(d_L*, d_U*): the tangent points through the far ends of crossing intervals (two bisections)."""
        l, u = in_bounds[0]
        f = self.function
        fl, fu = f(l), f(u)
        if not bool(((l < 0) & (u > 0)).any()):
            return l, u
        zero = torch.zeros_like(l)
        dL = bisect_root(lambda d: f(d) + self.derivative(d) * (u - d) - fu, torch.minimum(l, zero), zero, keep_lo=True)
        dU = bisect_root(lambda d: f(d) + self.derivative(d) * (l - d) - fl, zero, torch.maximum(u, zero),
                         keep_lo=False)
        return dL, dU

    def relax(self, l, u, alpha=None, setup=None):
        f = self.function
        fl, fu = f(l), f(u)
        width = u - l
        narrow = width < 1e-5 * float32_units(l)
        k = (fu - fl) / width.clamp(min=1e-5 * float32_units(l))
        chord_c_l = fl - k * l                         # chord through (l, f(l))
        chord_c_u = fu - k * u                         # chord through (u, f(u))
        dL, dU = setup if setup is not None else self.relaxation_setup([(l, u)])
        if alpha is None:
            m = (l + u) / 2
            d_low, d_up = torch.where(u <= 0, m, dL), torch.where(l >= 0, m, dU)
        else:
            lr, ur, dLr, dUr = (t.unsqueeze(1) for t in (l, u, dL, dU))
            aL, aU = alpha[0].clamp(0, 1), alpha[1].clamp(0, 1)
            d_low = torch.where(ur <= 0, lr + aL * (ur - lr), dLr - aL * (dLr - lr))
            d_up = torch.where(lr >= 0, lr + aU * (ur - lr), dUr + aU * (ur - dUr))
        l, u, k, fl, fu, chord_c_l, chord_c_u, narrow = (per_row(t, alpha) for t in
                                                          (l, u, k, fl, fu, chord_c_l, chord_c_u, narrow))
        aTL, cTL = self._tangent(d_low)
        aTU, cTU = self._tangent(d_up)
        use_chord_L = k <= self.derivative(l)
        use_chord_U = k <= self.derivative(u)
        aL = torch.where(u <= 0, aTL, torch.where(l >= 0, k, torch.where(use_chord_L, k, aTL)))
        cL = torch.where(u <= 0, cTL, torch.where(l >= 0, chord_c_l, torch.where(use_chord_L, chord_c_l, cTL)))
        aU = torch.where(l >= 0, aTU, torch.where(u <= 0, k, torch.where(use_chord_U, k, aTU)))
        cU = torch.where(l >= 0, cTU, torch.where(u <= 0, chord_c_u, torch.where(use_chord_U, chord_c_u, cTU)))
        # float safety: shift the lines so they still bound f at both endpoints and at the tangent points
        slack = 1e-6 * float32_units(fl) * (1 + fl.abs() + fu.abs())
        cL = cL - slack
        cU = cU + slack
        # very narrow intervals: constant bounds [f(l), f(u)] (monotone), no division by a tiny width
        zero = torch.zeros_like(aL)
        aL, cL = torch.where(narrow, zero, aL), torch.where(narrow, fl, cL)
        aU, cU = torch.where(narrow, zero, aU), torch.where(narrow, fu, cU)
        return aL, cL, aU, cU
