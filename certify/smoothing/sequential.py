"""Sequential (anytime-valid) Gaussian smoothing: decide "certified at radius r" with as few noise samples as the
input needs, by betting (testing by betting, Waudby-Smith & Ramdas JRSS-B 2024; applied to randomized smoothing by
Voracek, NeurIPS 2024, who reports 46-190x fewer samples than n = 100,000 at equal alpha).

The smoothed classifier is Cohen et al.'s g (gaussian.py). For a target radius r, g is certified at x with radius
>= r iff pA = P(f(x + e) = cA) > p0 = Phi(r / sigma) (Cohen et al. Thm 1 with pB = 1 - pA). Per input:
  1. cA = the top class on n0 selection samples (these also seed the first bet);
  2. noise samples come in growing batches (first ``first_batch``, then doubling, at most n in all); X_i = 1 when
     f(x + e_i) = cA. For each radius two test martingales, with bets chosen from earlier batches only:
        up    K+_t = prod (1 + l+_i (X_i - p0)),  l+ in [0, 0.5/p0]        (H0: pA <= p0)
        down  K-_t = prod (1 - l-_i (X_i - p0)),  l- in [0, 0.5/(1-p0)]    (H0: pA >= p0)
     (plug-in Kelly bets l = |p_hat - p0| / (p0 (1 - p0)), clipped); under its null each is a non-negative
     supermartingale, so by Ville's inequality it ever reaches 1/delta with probability <= delta;
  3. certified at r when K+ >= 1/delta, refuted when K- >= 1/delta, undecided (= not certified) after n samples.
     A decision carries over: certified at r implies certified at every smaller radius, refuted at r refuted at every
     larger one. Sampling stops when every radius is decided.
With k target radii, delta = alpha / k per radius (union bound), so with probability >= 1 - alpha no radius is
certified wrongly, however long the sequence runs (no peeking penalty: Ville's inequality holds uniformly in time).
The certificate's radius is the largest certified target radius (prediction cA; ABSTAIN when none is certified).
"""
from __future__ import annotations

import math

import torch
from scipy.stats import norm

from certkit.certify.smoothing.base import ABSTAIN, Certificate, SmoothingMethod, check_certify_args, register_smoothing
from certkit.common.errors import CertkitError


def kelly_bet(p_hat: float, p0: float, up: bool, cap: float = 0.5) -> float:
    """The plug-in Kelly bet |p_hat - p0| / (p0 (1 - p0)) in the direction of the test, clipped to [0, cap/p0]
    (up) or [0, cap/(1-p0)] (down), so that a factor 1 +- l (X - p0) is always >= 1 - cap > 0."""
    edge = (p_hat - p0) if up else (p0 - p_hat)
    if edge <= 0:
        return 0.0
    return min(edge / (p0 * (1 - p0)), cap / (p0 if up else 1 - p0))


def log_wealth_step(hits: int, trials: int, lam: float, p0: float, up: bool) -> float:
    """log of prod (1 +- lam (X_i - p0)) over a batch with ``hits`` ones among ``trials`` (same bet in the batch)."""
    if lam == 0.0 or trials == 0:
        return 0.0
    s = 1.0 if up else -1.0
    return hits * math.log1p(s * lam * (1 - p0)) + (trials - hits) * math.log1p(-s * lam * p0)


@register_smoothing
class SequentialSmoothing(SmoothingMethod):
    """Anytime-valid Gaussian smoothing at a set of target radii (module docstring). ``radii`` (L2, data-range units,
    each > 0) must be set before :meth:`certify`; ``certify``'s n is the sample budget per input."""

    name = "sequential"
    label = "Sequential"
    help = ("anytime-valid Gaussian smoothing at the target radii --radii (betting confidence sequences, "
            "Waudby-Smith & Ramdas 2024 / Voracek 2024): stops once each radius is decided, at most --n samples")
    procedure = ("betting test martingales per target radius at alpha/k (k radii), bets from earlier batches only; "
                 "certified at r iff the wealth against pA <= Phi(r/sigma) reaches k/alpha (Ville's inequality)")
    columns = ("samples",)
    first_batch = 100

    def __init__(self, sampler, sigma: float | None = None):
        super().__init__(sampler, sigma)
        self.last: dict = {}

    def certify(self, x: torch.Tensor, n0: int, n: int, alpha: float,
                generator: torch.Generator | None = None) -> Certificate:
        """Decide each target radius sequentially (module docstring); ``samples`` = n0 + samples drawn after.

        Raises:
            CertkitError: no target radii, a radius <= 0, bad n0 / n / alpha, NaN/inf logits.
        """
        check_certify_args(n0, n, alpha)
        generator = self.generator(x, generator)
        if not self.radii:
            raise CertkitError("--method sequential needs target radii: --radii 0.25 (comma list allowed)")
        radii = sorted(float(r) for r in self.radii)
        if radii[0] <= 0:
            raise CertkitError(f"target radii must be > 0 (L2, data-range units), got {radii}")
        delta = alpha / len(radii)
        threshold = math.log(1 / delta)
        p0 = [float(norm.cdf(r / self.sigma)) for r in radii]
        counts0 = self.sampler.counts(x, n0, generator)
        cA = int(counts0.argmax())
        hits, trials = int(counts0[cA]), n0            # the selection samples only seed the bets
        # +1 certified, -1 refuted, 0 undecided; a radius whose Phi(r / sigma) rounds to 1 (r > 8.2 sigma) would
        # need pA > 1 - 1e-16: no sample count proves that, so it is refuted at once (never certified)
        status = [-1 if q >= 1.0 else 0 for q in p0]
        log_up, log_down = [0.0] * len(radii), [0.0] * len(radii)
        used, batch = 0, self.first_batch
        while used < n and 0 in status:
            b = min(batch, n - used)
            p_hat = (hits + 0.5) / (trials + 1.0)
            bets = [(kelly_bet(p_hat, q, True), kelly_bet(p_hat, q, False)) if st == 0 else (0.0, 0.0)
                    for q, st in zip(p0, status)]
            k = int(self.sampler.counts(x, b, generator)[cA])
            for j, q in enumerate(p0):
                if status[j]:
                    continue
                log_up[j] += log_wealth_step(k, b, bets[j][0], q, True)
                log_down[j] += log_wealth_step(k, b, bets[j][1], q, False)
            for j in range(len(radii)):
                if status[j] != 0:
                    continue
                if log_up[j] >= threshold:            # pA > Phi(r_j / sigma): so for every smaller radius too
                    status[:j + 1] = [1 if s == 0 else s for s in status[:j + 1]]
                elif log_down[j] >= threshold:        # pA < Phi(r_j / sigma): so for every larger radius too
                    status[j:] = [-1 if s == 0 else s for s in status[j:]]
            hits, trials, used = hits + k, trials + b, used + b
            batch *= 2
        certified = [r for r, s in zip(radii, status) if s == 1]
        self.last = {"class": cA, "status": dict(zip(radii, status)), "samples": n0 + used}
        if not certified:
            return Certificate(ABSTAIN, 0.0, float("nan"), hits, n0 + used)
        return Certificate(cA, max(certified), float("nan"), hits, n0 + used)
