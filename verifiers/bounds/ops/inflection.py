"""Smooth functions with known inflection points (GELU, SiLU, odd powers): lines of any slope at their tightest valid
intercept.

For a slope a, the line a z + c bounds f from below on [l, u] exactly when c <= min over [l, u] of g(z) = f(z) - a z
(from above when c >= max g). Between two consecutive inflection points f' is monotone, so g is convex (f' increasing)
or concave (f' decreasing) there: the minimum of g over such a piece is at one of its ends, or, on a convex piece, at
the root of g' = f' - a, found by bisection; the root's bracket [z1, z2] gives the sound bound
max(g(z1) + g'(z1) (z2 - z1), g(z2) - g'(z2) (z2 - z1)) <= min g (a convex g stays above its tangents at z1 and z2,
and g' <= 0 left of the root, >= 0 right of it).
The maximum mirrors this on the concave pieces. Every slope therefore gives a sound line at its optimal intercept,
so the relaxation chooses slopes freely:

* CROWN: of the slopes 0 (the interval bounds), the chord's and f' at the midpoint, each side takes the one whose
  line is closest to f at the midpoint (the smallest area between line and curve for lines of that family);
* alpha-CROWN (Xu et al. ICLR 2021): the lower and the upper slope, alpha in [0, 1] each, anywhere in
  [min(0, min f'), max(0, max f')] over [l, u]; the intercept follows the slope (its gradient is -z at the touching
  point: the envelope theorem).

Lines are moved outward by 1e-6 (1 + |f(l)| + |f(u)| + |a| (|l| + |u|)) for the rounding of f and of a z (and for
inflection points known to 1e-9). A line a z + c lies below f on [l, u] exactly when c <= min (f(z) - a z) (the
support function of the graph); the pieces make that minimum exact rather than sampled.
"""
from __future__ import annotations

import math

import torch

from certkit.verifiers.bounds.ops.curvature import SHIFT, Ranged

BISECT = 12     # the bracket's width is (s1 - s0) 2^-12: the bound below gives away at most max|f''| (w 2^-12)^2 / 4


def zero_of(fn, lo: float, hi: float, iters: int = 200) -> float:
    """A sign change of ``fn`` on [lo, hi] (fn(lo), fn(hi) of opposite signs) by bisection in float64."""
    a, b = torch.tensor(lo, dtype=torch.float64), torch.tensor(hi, dtype=torch.float64)
    s = float(fn(a)) < 0
    for _ in range(iters):
        m = (a + b) / 2
        if (float(fn(m)) < 0) == s:
            a = m
        else:
            b = m
    return float((a + b) / 2)


class Inflection(Ranged):
    """Base: subclasses give ``function``, ``derivative``, ``extremes`` (the range on [l, u], for IBP),
    ``inflections`` (sorted; f' is monotone between consecutive ones) and ``convex_first`` (f convex before the
    first inflection point; the pieces alternate)."""

    n_alpha = 2     # the lower and the upper line's slope
    inflections: tuple[float, ...] = ()
    convex_first = False

    # -- the optimal intercept of a slope -----------------------------------------------------------
    def _pieces(self):
        """(start, end, f convex there) for each piece between inflection points."""
        ends = (-math.inf,) + tuple(self.inflections) + (math.inf,)
        return [(ends[k], ends[k + 1], self.convex_first == (k % 2 == 0)) for k in range(len(ends) - 1)]

    def _extreme(self, l: torch.Tensor, u: torch.Tensor, a: torch.Tensor, upper: bool) -> torch.Tensor:
        """A sound lower bound of min (upper: an upper bound of max) over [l, u] of g(z) = f(z) - a z, elementwise
        (l, u broadcast against a). Differentiable in a (the points are found without gradients)."""
        sign = -1.0 if upper else 1.0      # max g = -min(-g); -g is convex where f is concave
        l, u, a = torch.broadcast_tensors(l, u, a)
        a0 = a.detach()

        def g(z, a):
            return sign * (self.function(z) - a * z)
        ends = [l, u] + [p.clamp(min=l, max=u) for p in (torch.full_like(l, q) for q in self.inflections)]
        best = torch.stack([g(z, a) for z in ends]).amin(0)
        for p0, p1, convex in self._pieces():
            if convex == upper:          # g concave on this piece: its minimum is at an end, already counted
                continue
            with torch.no_grad():
                s0, s1 = l.clamp(min=p0), u.clamp(max=p1)
                inside = (s0 < s1) & (sign * (self.derivative(s0) - a0) < 0) & (sign * (self.derivative(s1) - a0) > 0)
                if not inside.any():
                    continue
                z1, z2, ai = s0[inside], s1[inside], a0[inside]      # bisect only where the root is inside
                for _ in range(BISECT):
                    m = (z1 + z2) / 2
                    left = sign * (self.derivative(m) - ai) < 0
                    z1, z2 = torch.where(left, m, z1), torch.where(left, z2, m)
            gap, ai = z2 - z1, a[inside]
            root = torch.maximum(g(z1, ai) + sign * (self.derivative(z1) - ai) * gap,
                                 g(z2, ai) - sign * (self.derivative(z2) - ai) * gap)
            best = best.index_put((inside,), torch.minimum(best[inside], root))
        return sign * best

    def _line(self, l, u, a, upper: bool):
        """(a, c): the line of slope a through the optimal intercept, moved outward."""
        shift = SHIFT * (1 + self.function(l).abs() + self.function(u).abs() + a.detach().abs() * (l.abs() + u.abs()))
        c = self._extreme(l, u, a, upper)
        return a, (c + shift if upper else c - shift)

    def _slope_range(self, l, u):
        """[min(0, min f'), max(0, max f')] over [l, u]: f' is extreme at the ends or at inflection points."""
        ds = [self.derivative(l), self.derivative(u)]
        for q in self.inflections:
            inside = (l <= q) & (q <= u)
            dq = self.derivative(torch.full_like(l, q))
            ds += [torch.where(inside, dq, ds[0])]
        d = torch.stack(ds)
        return d.amin(0).clamp(max=0), d.amax(0).clamp(min=0)

    def _crown_lines(self, l, u):
        """CROWN's lower and upper lines ((a_L, c_L), (a_U, c_U)): of the slopes 0, the chord's and f'(midpoint),
        the line closest to f at the midpoint on each side (the three candidates in one batched pass)."""
        d, w = (l + u) / 2, u - l
        fd = self.derivative(d)
        chord = torch.where(w > 0, (self.function(u) - self.function(l)) / torch.where(w > 0, w, 1.0), fd)
        slopes = torch.stack([torch.zeros_like(l), chord, fd])
        out = []
        for upper in (False, True):
            a, c = self._line(l, u, slopes, upper)
            v = -(a * d + c) if upper else a * d + c
            best_a, best_c, best_v = a[0], c[0], v[0]
            for k in (1, 2):                            # (not argmax over 3 rows: a strided reduction, slow on CPU)
                take = v[k] > best_v
                best_a, best_c, best_v = (torch.where(take, t[k], b) for t, b in ((a, best_a), (c, best_c),
                                                                                  (v, best_v)))
            out.append((best_a, best_c))
        return out

    def alpha_init(self, in_bounds):
        l, u = in_bounds[0]
        lo, hi = self._slope_range(l, u)
        span = hi - lo
        return torch.stack([torch.where(span > 0, (a - lo) / torch.where(span > 0, span, 1.0), 0.5).clamp(0, 1)
                            for a, _ in self._crown_lines(l, u)])

    def relax(self, l, u, alpha=None, setup=None):
        if alpha is None:
            (aL, cL), (aU, cU) = self._crown_lines(l, u)
            return aL, cL, aU, cU
        lo, hi = self._slope_range(l, u)            # (B, S, *shape): one pair of slopes per specification row
        l, u, lo, hi = (t.unsqueeze(1) for t in (l, u, lo, hi))
        a = alpha.clamp(0, 1)
        aL, aU = lo + a[0] * (hi - lo), lo + a[1] * (hi - lo)
        aL, cL = self._line(l, u, aL, upper=False)
        aU, cU = self._line(l, u, aU, upper=True)
        return aL, cL, aU, cU
