"""Rounded Gaussian noise for sound randomized smoothing in floating point (``--sound``; docs/methods/sound.md).

Gaussian smoothing certifies g(x) = argmax_c P(f(x + e) = c), e ~ N(0, sigma^2 I) (Cohen et al. 2019). As usually
run, e is drawn in float32 and x + e rounded, so the samples do not follow the distribution the theorem is about;
Voracek & Hein ("Sound randomized smoothing in floating-point arithmetic", ICLR 2023) build classifiers that turn this
into false certificates, and propose smoothing with noise on the input's quantization grid, sampled exactly from fair
coins. certkit's sound mode follows that idea on a dyadic grid of step h = 2^-e:

* the input is rounded to the grid, x_q = h round(x / h);
* each noise coordinate is h k with k = round(g / h), g ~ N(0, sigma^2): an integer with P(k) = Phi((k + 1/2) h /
  sigma) - Phi((k - 1/2) h / sigma), drawn by inverse transform from uniform 62-bit integers against thresholds
  computed with 40-digit arithmetic (mpmath), so its law is known to within a total-variation distance tau per
  coordinate that the certificate pays for;
* x_q + h k is exact in float32 (checked: every value is a multiple of h below 2^24 h in magnitude), so the base
  classifier sees exactly f(round_h(x_q + g)).

Then the samples are those of the Gaussian smoothing G of the classifier f~ = f o round_h (f as run in float32 on
grid points) at x_q, for which Cohen et al.'s theorem holds verbatim; the sound classifier is H(x) = G(round_h(x)), and
H is constant on the L2 ball of radius sigma PhiInv(pA_lower - d tau) - ||x - x_q|| - (h/2) sqrt(d) around x.
"""
from __future__ import annotations

import functools
import math

import torch

from certkit.common.errors import CertkitError

BITS = 62                 # uniform integers in [0, 2^62): torch draws them from 64-bit words (2^62 divides 2^64)
TAIL_SIGMAS = 10.0        # k is clamped to |k| <= K with (K + 1/2) h >= 10 sigma: tail mass 2 Phi(-10) < 1.6e-23
MAX_ATOMS = 2 ** 16       # table size that fixes the finest grid for a sigma (about 2 s of mpmath once per sigma)
PRECISION_DIGITS = 40


@functools.lru_cache(maxsize=16)
def _thresholds(sigma_over_h: float, K: int) -> tuple[torch.Tensor, float]:
    """Thresholds T_j = ceil(2^62 Phi((j + 1/2) / sigma_over_h)), j = -K .. K - 1 (int64), and the total-variation
    distance between the law they induce on k in [-K, K] and that of round(g / h), g ~ N(0, sigma^2)."""
    import mpmath

    with mpmath.workdps(PRECISION_DIGITS):
        s = mpmath.mpf(sigma_over_h)
        scale = mpmath.mpf(2) ** BITS
        half = mpmath.mpf(1) / 2
        # Phi((j + 1/2) / s) for j = 0 .. K - 1; the negative side by symmetry Phi(-t) = 1 - Phi(t)
        upper = [mpmath.ncdf((j + half) / s) for j in range(K)]
        values = [1 - upper[-j - 1] for j in range(K)] + upper          # j = -K .. -1, then 0 .. K - 1
        T = torch.tensor([int(mpmath.ceil(v * scale)) for v in values], dtype=torch.int64)
        tail = float(2 * mpmath.ncdf(-(K + half) / s))
    if bool((T[1:] < T[:-1]).any()):
        raise CertkitError("internal: noise thresholds are not sorted")
    # |T_j / 2^62 - Phi_j| <= 2^-62 + 10^-38 at each of the 2K cut points; the atoms' probabilities differ by at most
    # the sum of two neighbouring cut errors, and the clamped tails by their mass
    cut = 2.0 ** -BITS + 1e-38
    return T, (2 * K) * cut + tail


class RoundedGaussian:
    """Exactly known, exactly added Gaussian noise on a dyadic grid (module docstring).

    Args:
        sigma: noise standard deviation (data-range units, > 0).
        max_abs: the largest |x| of the inputs (sets the grid so sums stay exact in float32; data range [0, 1]: 1).

    Attributes:
        h: the grid step 2^-e; K: the largest |k|; tau: total-variation bound per coordinate.

    Raises:
        CertkitError: sigma <= 0 or too large for an exact float32 grid.
    """

    def __init__(self, sigma: float, max_abs: float = 1.0):
        if not sigma > 0:
            raise CertkitError(f"sigma must be > 0, got {sigma}")
        self.sigma = float(sigma)
        e_table = math.floor(math.log2(MAX_ATOMS / (2 * TAIL_SIGMAS * self.sigma)))
        # |x_q| + (K + 1) h < 2^24 h keeps every sum exact: 2^(24 - e) > max_abs + 10 sigma + 2h
        e_exact = 23 - math.ceil(math.log2(max_abs + TAIL_SIGMAS * self.sigma + 2))
        self.e = min(e_table, e_exact)
        if self.e < 1:
            raise CertkitError(f"sigma={sigma} with inputs up to {max_abs} leaves no exact float32 grid finer than 1")
        self.h = 2.0 ** -self.e
        self.K = math.ceil(TAIL_SIGMAS * self.sigma / self.h)
        self.limit = 2.0 ** (24 - self.e)   # |value| below this, on the grid: exact in float32
        self._T: dict = {}
        _, self.tau = _thresholds(self.sigma / self.h, self.K)

    def thresholds(self, device: torch.device) -> torch.Tensor:
        """[0, T_-K, ..., T_(K-1), 2^62] (int64): k is drawn for U in [padded[k + K], padded[k + K + 1])."""
        if device not in self._T:
            T = _thresholds(self.sigma / self.h, self.K)[0]
            self._T[device] = torch.cat([torch.zeros(1, dtype=torch.int64), T,
                                         torch.full((1,), 2 ** BITS, dtype=torch.int64)]).to(device)
        return self._T[device]

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """x rounded to the grid (float32, exact), checked to keep every noisy sum exact.

        Raises:
            CertkitError: an input too large in magnitude for the grid.
        """
        xq = torch.round(x.double() / self.h) * self.h
        if bool((xq.abs() + (self.K + 1) * self.h >= self.limit).any()):
            raise CertkitError(f"inputs up to {float(x.abs().max()):g} are too large for the sound mode's grid "
                               f"(h = 2^-{self.e}): noisy values would be rounded")
        return xq.float()

    def draw(self, shape: tuple, generator: torch.Generator, device: torch.device) -> torch.Tensor:
        """Noise h k of the given shape (float32; every value exact)."""
        T = self.thresholds(device)
        pairs = self._pairs(device)
        U = torch.randint(0, 2 ** BITS, shape, generator=generator, device=device, dtype=torch.int64)
        # inverse transform: a float64 guess (the Gaussian quantile), checked with exact integer comparisons against
        # the thresholds (k is the unique index with T[k] <= U < T[k + 1]); the rare wrong guess (within float64
        # rounding of a cut point) takes a binary search, so the draw is exact whatever the guess
        t = torch.special.ndtri(U.double().mul_(2.0 ** -BITS).add_(2.0 ** -(BITS + 1)))
        k = t.mul_(self.sigma / self.h).round_().clamp_(-self.K, self.K).to(torch.int64).add_(self.K)
        cut = torch.index_select(pairs, 0, k.reshape(-1)).reshape(k.shape + (2,))   # T[k], T[k + 1]
        bad = (U < cut[..., 0]) | (U >= cut[..., 1])
        if bool(bad.any()):
            k[bad] = torch.searchsorted(T, U[bad], right=True) - 1
        return k.sub_(self.K).to(torch.float32).mul_(self.h)

    def _pairs(self, device: torch.device) -> torch.Tensor:
        """(T[k], T[k + 1]) for every k, one row each (one gather per draw)."""
        key = ("pairs", device)
        if key not in self._T:
            T = self.thresholds(device)
            self._T[key] = torch.stack([T[:-1], T[1:]], 1).contiguous()
        return self._T[key]

    def radius_loss(self, x: torch.Tensor, xq: torch.Tensor) -> float:
        """||x - x_q||_2 + (h / 2) sqrt(d), rounded up: what the certified radius of H(x) = G(round_h(x)) loses to
        the grid (G certifies around x_q; round_h moves any other input by at most (h/2) sqrt(d))."""
        d = x.numel()
        gap = float(torch.linalg.vector_norm(x.double() - xq.double()))
        return math.nextafter(math.nextafter(gap, math.inf) + self.h / 2 * math.sqrt(d) * (1 + 1e-12), math.inf)

    def tv(self, d: int) -> float:
        """Total-variation distance between the law of one noise vector of d coordinates and the rounded Gaussian's."""
        return d * self.tau * (1 + 1e-12)


__all__ = ["RoundedGaussian"]
