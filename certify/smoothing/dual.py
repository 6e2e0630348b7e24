"""Dual randomized smoothing (Xia, Yu, Jiang, Ding, ICLR 2024; repo xiasong0501/DRS).

The input is split into two checkerboard halves x_l, x_r (models.zoo.checkerboard_mask); two base classifiers
f_l, f_r are smoothed with the same sigma on their halves: p_l(c) = P(f_l(x_l + e_l) = c), likewise p_r.
g(x) = argmax_c [p_l(c) + p_r(c)]. With one-sided Clopper-Pearson bounds at alpha/2 per branch (union bound),
    R = sigma / sqrt(2) * (PhiInv(pA_l_lower) + PhiInv(pA_r_lower)),  certified iff the sum is > 0
(authors' rebuttal, App. A.5: the decision holds while ||d_l|| + ||d_r|| < sigma (a + b), and
||d_l|| + ||d_r|| <= sqrt(2) ||d||). certkit does NOT use the reference CIFAR code's sqrt(R_l^2 + R_r^2), which
over-certifies. Radii are L2 in data-range units.
"""
from __future__ import annotations

import math

import torch
from scipy.stats import norm

from certkit.certify.smoothing.base import ABSTAIN, Certificate, SmoothingMethod, check_certify_args, register_smoothing
from certkit.certify.stats import clopper_pearson_lower
from certkit.common.errors import CertkitError


def dual_radius(pA_l_lower: float, pA_r_lower: float, sigma: float) -> float:
    """sigma / sqrt(2) * (PhiInv(pA_l) + PhiInv(pA_r)); <= 0 (or -inf) means abstain."""
    return sigma / math.sqrt(2.0) * (float(norm.ppf(pA_l_lower)) + float(norm.ppf(pA_r_lower)))


@register_smoothing
class DualSmoothing(SmoothingMethod):
    """CERTIFY for Dual RS on a sampler whose model returns two heads, logits (B, 2, K)."""

    name = "dual"
    label = "Dual RS"
    help = "Dual RS, Xia et al. ICLR 2024 (needs a `certkit train --method dual` checkpoint)"
    procedure = "Clopper-Pearson at alpha/2 per branch; R = sigma/sqrt(2) (PhiInv(pA_l) + PhiInv(pA_r))"
    heads = 2

    def __init__(self, sampler, sigma: float | None = None):
        super().__init__(sampler, sigma)
        self.last_bounds: tuple[float, float] | None = None  # (pA_l_lower, pA_r_lower) of the last call

    @classmethod
    def check_output(cls, logits):
        if logits.dim() != 3 or logits.shape[1] != 2:
            raise CertkitError("--method dual needs a Dual RS checkpoint with two branches "
                               "(certkit train --method dual --init-from MODEL)")

    def certify(self, x: torch.Tensor, n0: int, n: int, alpha: float,
                generator: torch.Generator | None = None) -> Certificate:
        """1. cA = argmax(counts0_l + counts0_r) on n0 noisy copies; 2. nA_l, nA_r on n fresh copies;
        3. Clopper-Pearson lower bounds at alpha/2 each; 4. radius above, abstain unless it is > 0.

        Guarantee: with probability >= 1 - alpha both lower bounds hold, so a returned class has
        p_l(cA) + p_r(cA) > 1 (it is g(x)) and g is constant on the L2 ball of the returned radius.
        Raises:
            CertkitError: the model does not return two heads; bad n0 / n / alpha; NaN/inf logits.
        """
        check_certify_args(n0, n, alpha)
        generator = self.generator(x, generator)
        counts0 = self.sampler.counts(x, n0, generator)
        if counts0.dim() != 2 or counts0.shape[0] != 2:
            raise CertkitError("Dual RS needs a model with two branches (logits of shape (batch, 2, classes)); "
                               "train one with `certkit train --method dual`")
        cA = int((counts0[0] + counts0[1]).argmax())
        counts = self.sampler.counts(x, n, generator)
        nA_l, nA_r = int(counts[0, cA]), int(counts[1, cA])
        p_l = clopper_pearson_lower(nA_l, n, alpha / 2)
        p_r = clopper_pearson_lower(nA_r, n, alpha / 2)
        radius = dual_radius(p_l, p_r, self.sigma)
        self.last_bounds = (p_l, p_r)
        if not radius > 0:
            return Certificate(ABSTAIN, 0.0, min(p_l, p_r), nA_l + nA_r, n0 + n)
        return Certificate(cA, radius, min(p_l, p_r), nA_l + nA_r, n0 + n)
