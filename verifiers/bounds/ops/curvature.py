"""Smooth activations with bounded curvature and a known range (sin, cos, GELU, SiLU): Taylor lines or constants.

For f with |f''| <= M, Taylor's theorem at the midpoint d of [l, u] (half-width w) gives, for every z in [l, u],
    f(d) + f'(d) (z - d) - M w^2 / 2 <= f(z) <= f(d) + f'(d) (z - d) + M w^2 / 2,
two parallel lines M w^2 apart. The constants [min f, max f] over [l, u] (each op knows where its extrema lie) bound f
too. Both are sound for any f of the family, periodic or not, without checking tangents against the whole curve; each
side takes the Taylor line where its gap to f at the midpoint, M w^2 / 2, is at most the constant's, f(d) - min f
(resp. max f - f(d)): narrow intervals, where the line also carries how f moves with z (a constant carries nothing,
so CROWN through constants is IBP), else the constant (wide intervals). Both are moved outward by
1e-6 (1 + |f(l)| + |f(u)|) for the rounding of f when computed in float32, the same multiple of 1.9e-15 in float64
(activation.py ``float32_units``). Taylor's theorem holds at any point d of [l, u], with the gap M r^2 / 2,
r = max(d - l, u - d): alpha-CROWN (Xu et al. ICLR 2021) optimises each side's expansion point
d = l + alpha (u - l), from the midpoint (alpha = 1/2), where the Taylor line is taken.
"""
from __future__ import annotations

import torch

from certkit.verifiers.bounds.ops.activation import Activation, constant_alpha, float32_units

SHIFT = 1e-6


class Ranged(Activation):
    """An activation whose range over [l, u] is known (``extremes``): IBP is that range, moved outward by
    1e-6 (1 + |min| + |max|) in float32 units (``float32_units``); every non-degenerate interval is worth refining."""

    def extremes(self, l: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A lower bound of min f and an upper bound of max f on [l, u] (elementwise)."""
        raise NotImplementedError

    def unstable(self, l, u):
        return l < u

    def ibp(self, iv):
        lo, hi = self.extremes(*iv)
        shift = SHIFT * float32_units(lo) * (1 + lo.abs() + hi.abs())
        return lo - shift, hi + shift


class BoundedCurvature(Ranged):
    """Base: subclasses give ``function``, ``derivative``, ``curvature`` (M >= max |f''|) and ``extremes``."""

    curvature = 1.0
    n_alpha = 2   # the expansion points of the lower and the upper Taylor line (module docstring)

    def alpha_init(self, in_bounds):
        """1/2: the midpoint, (2, B, *shape)."""
        return constant_alpha(2, in_bounds, 0.5)

    def _taylor(self, l, u, d, shift):
        """(slope, intercept, gap) of the Taylor line at d on [l, u]: f(d) + f'(d) (z - d) +- gap."""
        a = self.derivative(d)
        r = torch.maximum(d - l, u - d)
        return a, self.function(d) - a * d, self.curvature * r * r / 2 + shift

    def relax(self, l, u, alpha=None, setup=None):
        lo, hi = self.ibp((l, u))
        d = (l + u) / 2
        shift = SHIFT * float32_units(l) * (1 + self.function(l).abs() + self.function(u).abs())
        a, c, half = self._taylor(l, u, d, shift)
        fd = self.function(d)
        use_low = half <= fd - lo                   # the lower line's gap at the midpoint is at most the constant's
        use_up = half <= hi - fd
        zero = torch.zeros_like(l)
        if alpha is None:
            aL, cL = torch.where(use_low, a, zero), torch.where(use_low, c - half, lo)
            aU, cU = torch.where(use_up, a, zero), torch.where(use_up, c + half, hi)
            return aL, cL, aU, cU
        ex = lambda t: t.unsqueeze(1)  # noqa: E731  (B, *shape) -> (B, 1, *shape)
        out = []
        for k, (use, const, sign) in enumerate(((use_low, lo, -1.0), (use_up, hi, 1.0))):
            dk = ex(l) + alpha[k].clamp(0, 1) * ex(u - l)
            ak, ck, gk = self._taylor(ex(l), ex(u), dk, ex(shift))
            out += [torch.where(ex(use), ak, ex(zero)), torch.where(ex(use), ck + sign * gk, ex(const))]
        return tuple(out)


def unimodal_extremes(f, l, u, x_star: float, f_star_lower: float):
    """min / max of a function decreasing on (-inf, x*] and increasing on [x*, inf) (GELU, SiLU) over [l, u]:
    min = f(x*) (given as a lower bound) when x* is inside, else the smaller end; max = the larger end."""
    fl, fu = f(l), f(u)
    inside = (l <= x_star) & (x_star <= u)
    lo = torch.where(inside, torch.full_like(l, f_star_lower), torch.minimum(fl, fu))
    return lo, torch.maximum(fl, fu)
