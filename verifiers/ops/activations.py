"""Activation relaxations: ReLU (CROWN, Zhang et al. 2018; alpha-CROWN, Xu et al. 2021) and the S-shaped
Sigmoid / Tanh (CROWN rules as in auto_LiRPA operators/s_shaped.py).

Each activation gives, for pre-activation bounds l <= z <= u, linear bounds
    a_L * z + c_L <= act(z) <= a_U * z + c_U    on [l, u].
"""
from __future__ import annotations

import torch

from certkit.verifiers.ops.base import Op, sum_node

Relaxation = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


class Activation(Op):
    """An elementwise monotone activation: IBP maps endpoints; CROWN uses the linear relaxation from ``relax``."""

    affine = False
    zero_lower_intercept = False

    def relax(self, l: torch.Tensor, u: torch.Tensor, alpha: torch.Tensor | None = None) -> Relaxation:
        """Lines a_L z + c_L <= act(z) <= a_U z + c_U valid for l <= z <= u (tensors (B, *shape)).

        Returns (a_L, c_L, a_U, c_U), each (B, *shape), or (B, S, *shape) when ``alpha`` (per specification row
        lower slopes, ReLU only) is given.
        """
        raise NotImplementedError

    def ibp(self, iv):  # monotone non-decreasing
        return self.forward(iv[0]), self.forward(iv[1])

    def backward(self, A, in_bounds, relaxation: Relaxation | None = None, alpha=None):
        """Lower bound: A+ takes the lower line, A- the upper line."""
        aL, cL, aU, cU = relaxation if relaxation is not None else self.relax(*in_bounds, alpha)
        if aL.dim() < A.dim():
            aL, cL, aU, cU = (t.unsqueeze(1) for t in (aL, cL, aU, cU))
        # A+ a_L + A- a_U = a_U A + (a_L - a_U) relu(A): the slope difference lives on the small (B, 1, *shape)
        # tensors, and relu's backward is one fused mask (cheaper than where(A >= 0, ...) and its gradient).
        Ap = torch.relu(A)
        A_in = A * aU + Ap * (aL - aU)
        if self.zero_lower_intercept:  # ReLU: c_L = 0, only the upper line has an intercept
            return [A_in], sum_node((A - Ap) * cU)
        return [A_in], sum_node(A * cU + Ap * (cL - cU))


class ReLU(Activation):
    """ReLU. Upper line through (l-, 0) and (u+, u+); lower line a_L z with a_L = 1 if u > -l else 0
    ("adaptive"), or a_L = alpha in [0, 1] for unstable neurons (alpha-CROWN). Stable neurons are exact."""

    name = "ReLU"
    zero_lower_intercept = True

    def forward(self, x):
        return torch.relu(x)

    @staticmethod
    def default_alpha(l: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """CROWN's adaptive lower slope: 1 where u > -l, else 0 (the alpha-CROWN starting point)."""
        return (u > -l).to(l.dtype)

    def relax(self, l, u, alpha=None):
        lm, up = l.clamp(max=0), u.clamp(min=0)
        aU = up / (up - lm).clamp(min=1e-8)
        cU = -lm * aU
        active, inactive = l >= 0, u <= 0
        if alpha is None:
            aL = self.default_alpha(l, u)
        else:
            aL = alpha.clamp(0, 1)
            if aL.dim() > l.dim():  # per-spec-row alphas: (B, S, *shape)
                active, inactive = active.unsqueeze(1), inactive.unsqueeze(1)
                aU, cU = aU.unsqueeze(1).expand_as(aL), cU.unsqueeze(1).expand_as(aL)
        aL = torch.where(active, torch.ones_like(aL), torch.where(inactive, torch.zeros_like(aL), aL))
        return aL, torch.zeros_like(aL), aU, cU


def _bisect(fn, lo, hi, keep_lo: bool, iters: int = 25):
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
    """Sigmoid / Tanh: increasing, convex on (-inf, 0], concave on [0, inf)."""

    def f(self, x):
        raise NotImplementedError

    def df(self, x):
        raise NotImplementedError

    def forward(self, x):
        return self.f(x)

    def _tangent(self, d):
        a = self.df(d)
        return a, self.f(d) - a * d

    def relax(self, l, u, alpha=None):
        fl, fu = self.f(l), self.f(u)
        width = u - l
        narrow = width < 1e-5
        k = (fu - fl) / width.clamp(min=1e-5)
        chord_c_l = fl - k * l                         # chord through (l, f(l))
        chord_c_u = fu - k * u                         # chord through (u, f(u))
        m = (l + u) / 2
        a_mid, c_mid = self._tangent(m)
        crossing = bool(((l < 0) & (u > 0)).any())
        # lower line
        dL = l if not crossing else _bisect(lambda d: self.f(d) + self.df(d) * (u - d) - fu, torch.minimum(l, torch.zeros_like(l)),
                     torch.zeros_like(l), keep_lo=True)
        aTL, cTL = self._tangent(dL)
        use_chord_L = k <= self.df(l)
        aL = torch.where(u <= 0, a_mid, torch.where(l >= 0, k, torch.where(use_chord_L, k, aTL)))
        cL = torch.where(u <= 0, c_mid, torch.where(l >= 0, chord_c_l, torch.where(use_chord_L, chord_c_l, cTL)))
        # upper line
        dU = u if not crossing else _bisect(lambda d: self.f(d) + self.df(d) * (l - d) - fl, torch.zeros_like(u),
                     torch.maximum(u, torch.zeros_like(u)), keep_lo=False)
        aTU, cTU = self._tangent(dU)
        use_chord_U = k <= self.df(u)
        aU = torch.where(l >= 0, a_mid, torch.where(u <= 0, k, torch.where(use_chord_U, k, aTU)))
        cU = torch.where(l >= 0, c_mid, torch.where(u <= 0, chord_c_u, torch.where(use_chord_U, chord_c_u, cTU)))
        # float safety: shift the lines so they still bound f at both endpoints and at the tangent points
        slack = 1e-6 * (1 + fl.abs() + fu.abs())
        cL = cL - slack
        cU = cU + slack
        # very narrow intervals: constant bounds [f(l), f(u)] (monotone), no division by a tiny width
        zero = torch.zeros_like(l)
        aL, cL = torch.where(narrow, zero, aL), torch.where(narrow, fl, cL)
        aU, cU = torch.where(narrow, zero, aU), torch.where(narrow, fu, cU)
        return aL, cL, aU, cU


class Sigmoid(SShaped):
    """Logistic sigmoid with the S-shaped CROWN relaxation."""

    name = "Sigmoid"

    def f(self, x):
        return torch.sigmoid(x)

    def df(self, x):
        s = torch.sigmoid(x)
        return s * (1 - s)


class Tanh(SShaped):
    """tanh with the S-shaped CROWN relaxation."""

    name = "Tanh"

    def f(self, x):
        return torch.tanh(x)

    def df(self, x):
        return 1 - torch.tanh(x) ** 2
