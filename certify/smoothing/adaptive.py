"""Adaptive smoothing with a FIXED mixing weight: a standard (accurate, non-robust) classifier g mixed with a
smoothed robust classifier r (Bai, Anderson, Kim, Sojoudi, "Improving the Accuracy-Robustness Trade-Off of
Classifiers via Adaptive Smoothing", SIAM J. Math. Data Sci. 2024; the mixing idea of their Sec. 3).

Problem: g (``--standard-model``) maps x to probabilities p^g(x) = softmax(g(x)) in the simplex Delta_K and has no
robustness at all; r is Gaussian smoothing of the base classifier f (``--model``, optionally behind ``--denoiser``):
p^r_c(x) = P(f(x + e) = c), e ~ N(0, sigma^2 I). For a weight w in (1/2, 1] the mixed classifier is

    h(x) = argmax_c  (1 - w) p^g_c(x) + w p^r_c(x).

Certificate (derived here; it is the paper's fixed-weight argument with the smoothed r as the robust part):
for any class y, any j != y and any x',
    (1 - w)(p^g_y(x') - p^g_j(x')) >= -(1 - w)              (g arbitrary: probabilities lie in [0, 1])
    w (p^r_y(x') - p^r_j(x'))      >= w (2 p^r_y(x') - 1)   (p^r_j <= 1 - p^r_y: the p^r sum to 1)
so h(x') = y whenever p^r_y(x') > 1 / (2w). The map x -> PhiInv(p^r_y(x)) is 1/sigma-Lipschitz in L2
(Salman et al. NeurIPS 2019, Lemma 2; Levine et al. 2020), hence for ||x' - x||_2 <= R
    p^r_y(x') >= Phi(PhiInv(p^r_y(x)) - R / sigma),
and with a (1 - alpha) lower confidence bound pA_lower of p^r_y(x) the prediction y holds on the L2 ball of radius

    R = sigma * (PhiInv(pA_lower) - PhiInv(1 / (2w))),   certified iff pA_lower > 1 / (2w).

At w = 1 this is Cohen et al.'s R = sigma PhiInv(pA_lower); the radius shrinks as w decreases and vanishes at
w = 1/2 (below it g can outvote any r, so no certificate exists without assumptions on g). The bound is tight: for
a linear f and a g that always puts probability 1 on the runner-up class, h's decision boundary lies exactly at R.

Why mix at all: where r is unsure (pA below 1/(2w)) the mixture follows g, so the EMPIRICAL clean accuracy of h
(column ``mixed_predict``: argmax of (1 - w) p^g(x) + w p_hat^r(x) with the n-sample frequencies; no certificate)
can exceed r's; the certified prediction (``predict``) is r's top class cA or ABSTAIN. w is fixed once per model
(never per input).

Bai et al. also train a mixing network that chooses w(x) per input (``certkit train --method mixing``, models/mixing.py;
``--mixing-network`` here). Because the bound above is monotone in w, ANY weights w(x') >= floor keep the radius of the
fixed weight floor: a network whose floor exceeds 1/2 is certified at its floor; with a lower floor nothing is
certified (every row abstains) and only the empirical ``mixed_predict`` is reported.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from scipy.stats import norm

from certkit.certify.smoothing.base import ABSTAIN, Certificate, SmoothingMethod, check_certify_args, register_smoothing
from certkit.certify.stats import clopper_pearson_lower
from certkit.common.errors import CertkitError
from certkit.common.options import option


def adaptive_radius(pA_lower: float, w: float, sigma: float) -> float:
    """sigma (PhiInv(pA_lower) - PhiInv(1 / (2w))): the L2 radius of the mixed classifier (module docstring);
    <= 0 means no certificate. ``w`` in (1/2, 1]."""
    return float(sigma * (norm.ppf(pA_lower) - norm.ppf(1.0 / (2.0 * w))))


def check_mixing_weight(w) -> float:
    """Raise CertkitError unless 1/2 < w <= 1 (the weights with a certificate)."""
    if w is None or not 0.5 < float(w) <= 1.0:
        raise CertkitError(f"--mixing-weight must lie in (0.5, 1] (weight of the smoothed robust classifier; at or "
                           f"below 0.5 the standard classifier can outvote it and nothing is certified), got {w}")
    return float(w)


@dataclass
class MixedCertificate(Certificate):
    """A :class:`Certificate` with the mixed classifier's empirical prediction (no certificate)."""

    mixed_predict: int = ABSTAIN


@register_smoothing
class AdaptiveSmoothing(SmoothingMethod):
    """Fixed-weight mixture of a standard classifier and Gaussian smoothing (module docstring).

    ``attach_standard(model, w)`` must be called before ``certify`` (the run does it from --standard-model and
    --mixing-weight).
    """

    name = "adaptive"
    label = "Adaptive"
    help = ("adaptive smoothing, Bai et al. 2024: (1 - w) softmax(g) + w smoothed(--model) with a fixed weight w = "
            "--mixing-weight in (0.5, 1] and g = --standard-model; R = sigma (PhiInv(pA_lower) - PhiInv(1/(2w)))")
    procedure = ("one-sided Clopper-Pearson on the smoothed robust classifier; R = sigma (PhiInv(pA_lower) - "
                 "PhiInv(1/(2w))); mixed_predict is the empirical mixed prediction (no certificate)")
    needs_standard_model = True
    columns = ("mixed_predict",)

    @dataclass
    class Options:
        """The standard classifier and how it is mixed with the smoothed model."""

        standard_model: str | None = option(None, "the standard (accurate, non-robust) classifier g mixed with the "
                                            "smoothed --model; any --model source")
        standard_model_weights: str | None = option(None, "the state_dict of a --standard-model "
                                                    "package.module:factory")
        mixing_weight: float | None = option(None, "weight w in (0.5, 1] of the smoothed model in (1 - w) "
                                             "softmax(g) + w smoothed; fixed once per model. The certified radius "
                                             "sigma (PhiInv(pA_lower) - PhiInv(1/(2w))) shrinks as w falls.")
        mixing_network: str | None = option(None, "a trained mixing network (certkit train --method mixing) "
                                            "choosing w per input instead; certified at its floor when the floor "
                                            "exceeds 0.5, else empirical only (every row abstains)")

    def __init__(self, sampler, sigma: float | None = None):
        super().__init__(sampler, sigma)
        self.standard: torch.nn.Module | None = None
        self.w: float | None = None
        self.mixing: Any = None

    def attach_standard(self, model: torch.nn.Module, w: float | None = None, mixing=None) -> None:
        """Set g (raw inputs (B, *input_shape) -> logits (B, K), K as the robust model's) and either the fixed weight
        w or a trained mixing network (models/mixing.py: w(x) from softmax g(x) and softmax f(x), f the sampler's
        base model). With a network the certificate is the one of its floor when the floor exceeds 1/2
        (models/mixing.py), else no input is certified and only ``mixed_predict`` is reported.

        Raises:
            CertkitError: both or neither of w and mixing; w outside (1/2, 1].
        """
        if (w is None) == (mixing is None):
            raise CertkitError("adaptive smoothing takes either --mixing-weight or --mixing-network")
        self.standard = model.to(self.sampler.device).eval()
        if mixing is not None:
            self.mixing = mixing.to(self.sampler.device).eval()
            self.w = mixing.floor if mixing.certifies else None
        else:
            self.w = check_mixing_weight(w)

    @torch.inference_mode()
    def certify(self, x: torch.Tensor, n0: int, n: int, alpha: float,
                generator: torch.Generator | None = None) -> Certificate:
        """1. cA = argmax of f's counts on n0 noisy copies; 2. nA on n fresh copies; 3. pA_lower = one-sided
        (1 - alpha) Clopper-Pearson bound; 4. abstain unless pA_lower > 1/(2w), else (cA, adaptive_radius).

        Args:
            x: one raw input (*input_shape) in the data range.
        Guarantee: with probability >= 1 - alpha over the noise, h predicts the returned class on the whole L2
        ball of the returned radius (module docstring).
        Raises:
            CertkitError: no standard model attached; g's classes differ from f's; bad n0 / n / alpha; NaN logits.
        A mixing network's w(x) enters only ``mixed_predict``; the radius uses its floor (attach_standard).
        """
        if self.standard is None or (self.w is None and self.mixing is None):
            raise CertkitError("adaptive smoothing needs --standard-model and --mixing-weight or --mixing-network")
        check_certify_args(n0, n, alpha)
        generator = self.generator(x, generator)
        cA = int(self.sampler.counts(x, n0, generator).argmax())
        counts = self.sampler.counts(x, n, generator)
        xb = x.unsqueeze(0).to(self.sampler.device, torch.float32)
        p_g = torch.softmax(self.standard(xb).float(), -1)[0].cpu().double()
        if p_g.shape != counts.shape:
            raise CertkitError(f"the standard model has {p_g.numel()} classes, the robust model {counts.numel()}")
        if self.mixing is not None:
            p_f = torch.softmax(self.sampler.model(xb).float(), -1)
            w_x = float(self.mixing(p_g[None].float().to(p_f.device), p_f)[0])
        else:
            assert self.w is not None  # checked above: a fixed weight or a mixing network
            w_x = self.w
        mixed = int(((1 - w_x) * p_g + w_x * counts.double() / n).argmax())
        nA = int(counts[cA])
        pA_lower = clopper_pearson_lower(nA, n, alpha)
        if self.w is None:  # a mixing network with floor <= 1/2: empirical only
            return MixedCertificate(ABSTAIN, 0.0, pA_lower, nA, n0 + n, mixed_predict=mixed)
        radius = adaptive_radius(pA_lower, self.w, self.sigma)
        if (self.w < 1.0 and pA_lower <= 1.0 / (2.0 * self.w)) or pA_lower < 0.5:  # w = 1: Cohen's rule
            return MixedCertificate(ABSTAIN, 0.0, pA_lower, nA, n0 + n, mixed_predict=mixed)
        return MixedCertificate(cA, max(radius, 0.0), pA_lower, nA, n0 + n, mixed_predict=mixed)
