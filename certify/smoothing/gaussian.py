"""Gaussian randomized smoothing: CERTIFY and PREDICT (Cohen, Rosenfeld, Kolter, ICML 2019, Algorithms 1-2).

Smoothed classifier g(x) = argmax_c P(f(x + e) = c), e ~ N(0, sigma^2 I). If pA_lower >= 1/2 bounds
P(f(x+e) = cA) from below, g is constant on the L2 ball of radius R = sigma * PhiInv(pA_lower) around x
(Theorem 1 with pB_upper = 1 - pA_lower). Radii are L2 in the model's raw data units ([0,1] pixels).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from scipy.stats import norm

from certkit.certify.smoothing.base import (
    ABSTAIN,
    Certificate,
    Prediction,
    SmoothingMethod,
    check_certify_args,
    register_smoothing,
)
from certkit.certify.stats import binomial_test_pvalue, clopper_pearson_lower
from certkit.common.errors import CertkitError
from certkit.common.options import option


@register_smoothing
class GaussianSmoothing(SmoothingMethod):
    """A smoothed classifier g built on a :class:`~certkit.certify.sampling.NoiseSampler` (base classifier f + sigma).

    Example (``model`` maps (B, *input_shape) inputs in [0, 1] to logits; ``x`` is ONE input, no batch dimension;
    for batches and Cohen et al.'s ``Smooth`` interface see :class:`certkit.Smooth`)::

        g = GaussianSmoothing(model, sigma=0.25)      # or GaussianSmoothing(NoiseSampler(model, 0.25, batch_size))
        cert = g.certify(x, n0=100, n=100_000, alpha=0.001)   # noise seeded from x; or generator=...
        prediction, radius = cert
    """

    name = "gaussian"
    label = "Gaussian"
    help = "Gaussian smoothing, CERTIFY of Cohen et al. 2019 (any classifier)"
    procedure = "one-sided Clopper-Pearson; R = sigma PhiInv(pA_lower)"

    @dataclass
    class Options:
        sound: bool = option(False, "sound smoothing in floating point (Voracek & Hein 2023): inputs rounded to a "
                             "dyadic grid, noise drawn exactly on it and added exactly, the radius paying for both "
                             "(docs/methods/sound.md); certifies the classifier x -> g(round(x))")

    def apply_options(self, opts) -> None:
        if getattr(opts, "sound", False):   # subclasses may declare Options of their own
            self.sampler.make_sound()

    def certify(self, x: torch.Tensor, n0: int, n: int, alpha: float,
                generator: torch.Generator | None = None) -> Certificate:
        """CERTIFY (Cohen et al. 2019, Algorithm 1 / Pseudocode "CERTIFY").

        1. select cA = argmax of the counts of f on n0 noisy copies;
        2. count nA = #{f(x + e_i) = cA} on n FRESH noisy copies;
        3. pA_lower = one-sided (1 - alpha) Clopper-Pearson lower bound of nA / n;
        4. abstain if pA_lower < 1/2, else return (cA, sigma * PhiInv(pA_lower)).

        Args:
            x: one raw input, shape (*input_shape), in the data range.
        Guarantee: the returned class differs from g(x) with probability at most alpha.
        Raises:
            CertkitError: bad n0 / n / alpha, or NaN/inf logits.
        """
        check_certify_args(n0, n, alpha)
        generator = self.generator(x, generator)
        counts0 = self.sampler.counts(x, n0, generator)
        cA = int(counts0.argmax())
        nA = int(self.sampler.counts(x, n, generator)[cA])
        pA_lower = clopper_pearson_lower(nA, n, alpha)
        grid = getattr(self.sampler, "grid", None)
        if grid is not None:   # sound mode: the samples' law is within tv of the rounded Gaussian's
            pA_lower = math.nextafter(pA_lower - grid.tv(x.numel()), 0.0)
        if pA_lower < 0.5:
            return Certificate(ABSTAIN, 0.0, pA_lower, nA, n0 + n)
        radius = float(self.sigma * norm.ppf(pA_lower))
        if grid is not None:   # G certifies around round(x); round() moves inputs by up to (h/2) sqrt(d)
            radius = math.nextafter(radius * (1 - 1e-12) - grid.radius_loss(x, grid.quantize(x)), 0.0)
            if radius <= 0:
                return Certificate(ABSTAIN, 0.0, pA_lower, nA, n0 + n)
        return Certificate(cA, radius, pA_lower, nA, n0 + n)

    def predict(self, x: torch.Tensor, n: int, alpha: float, generator: torch.Generator | None = None) -> Prediction:
        """PREDICT (Cohen et al. 2019, Pseudocode "PREDICT").

        Counts f on n noisy copies; with nA, nB the two largest counts, abstains unless the two-sided binomial
        test of nA out of nA + nB against p = 1/2 has p-value <= alpha. Returns the class or ``ABSTAIN`` as a
        :class:`~certkit.certify.smoothing.base.Prediction` (an int carrying nA, nB, p_value and samples).
        Guarantee: returns a class other than g(x) with probability at most alpha.
        Raises:
            CertkitError: bad n / alpha, a model with fewer than 2 outputs, NaN/inf logits.
        """
        check_certify_args(1, n, alpha)
        counts = self.sampler.counts(x, n, self.generator(x, generator))
        if counts.numel() < 2:
            raise CertkitError("PREDICT needs a model with at least 2 outputs")
        top2 = torch.topk(counts, 2)
        nA, nB = int(top2.values[0]), int(top2.values[1])
        p_value = binomial_test_pvalue(nA, nA + nB, 0.5)
        grid = getattr(self.sampler, "grid", None)
        if grid is not None:   # sound mode: n samples whose joint law is within n d tau of the rounded Gaussian's
            p_value = min(1.0, p_value + n * grid.tv(x.numel()))
        return Prediction(ABSTAIN if p_value > alpha else int(top2.indices[0]), nA, nB, p_value, n)
