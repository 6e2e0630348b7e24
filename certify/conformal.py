"""Robust conformal prediction with randomized smoothing: RSCP (Gendler et al. ICLR 2022) and RSCP+ with PTT
(Yan, Romano, Weng ICLR 2024).

Scores lie in [0, 1], lower = more conforming: HPS S(x, y) = 1 - softmax_y(x); APS (randomized) = sum of the
probabilities of classes ranked above y + u pi_y, with one u ~ U(0,1) per input shared by all classes and noise
draws. The smoothed Monte-Carlo score S^(x, y) is the mean of S(x + e_i, y) over N_mc draws e_i ~ N(0, sigma^2 I)
(noise in raw [0,1] pixel units, before normalization).

RSCP+ (the rule certkit reports):
  tau+ = the exact ceil((n+1)(1 - alpha + 2 beta))-th smallest calibration score S^(x_i, y_i) (inf if > n);
  b_H = sqrt(-ln(beta) / (2 N_mc))  (Hoeffding, calibration side);
  b_B(x, k) = sqrt(2 V^ ln(2/beta) / N_mc) + 7 ln(2/beta) / (3 (N_mc - 1))  (empirical Bernstein, test side,
             V^ the sample variance of the N_mc per-draw scores; the configured beta on both sides);
  C+(x~) = {k : PhiInv(max(S^(x~, k) - b_B, 0)) - eps/sigma <= PhiInv(min(tau+ + b_H, 1))}, all classes when
  tau+ + b_H >= 1. Guarantee: P(y in C+(x~)) >= 1 - alpha for every ||x~ - x||_2 <= eps.
RSCP (original, for comparison; NO finite-sample guarantee: the Monte-Carlo error is never bounded):
  tau = ceil((n+1)(1-alpha))-th smallest S^; C(x~) = {k : PhiInv(S^(x~,k)) - eps/sigma <= PhiInv(tau)}.
PTT: each per-draw score is mapped to sigmoid((Q_rank(S) - b) / T) before averaging, Q_rank the empirical CDF of
true-label base scores on a holdout set (one Gaussian draw each); T = 1/400, b = 0.9.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy.stats import norm

from certkit.certify.stats import empirical_bernstein_shift
from certkit.common.errors import CertkitError

SCORES = ("hps", "aps")


def base_scores(probs: torch.Tensor, score: str, u: torch.Tensor | None = None) -> torch.Tensor:
    """Non-conformity scores of every class, (B, K) in [0, 1], from probabilities (B, K).

    APS needs u (B,) in [0, 1): one value per input, shared by classes (and by noise draws, by the caller).
    """
    if score == "hps":
        return 1.0 - probs
    if score == "aps":
        if u is None:
            raise CertkitError("APS scores need the randomization u")
        order = probs.argsort(dim=-1, descending=True)
        sorted_p = probs.gather(-1, order)
        cum = sorted_p.cumsum(-1)
        s_sorted = cum - (1.0 - u.view(-1, 1)) * sorted_p            # above + u * pi_y
        return torch.empty_like(s_sorted).scatter_(-1, order, s_sorted).clamp(0.0, 1.0)
    raise CertkitError(f"unknown score {score!r}: use hps or aps")


class PTT:
    """Post-training transformation (Yan et al. 2024): s -> sigmoid((Q_rank(s) - b) / T)."""

    def __init__(self, holdout_true_scores: torch.Tensor, T: float = 1 / 400, b: float = 0.9):
        self.ref = torch.sort(holdout_true_scores.flatten().double()).values
        self.T, self.b = T, b

    def __call__(self, s: torch.Tensor) -> torch.Tensor:
        q = torch.searchsorted(self.ref.to(s.device), s.double().contiguous(), right=True).to(s.dtype) / len(self.ref)
        return torch.sigmoid((q - self.b) / self.T)


class SmoothedScorer:
    """Monte-Carlo smoothed scores of a classifier: mean and sample variance over N_mc noise draws.

    Args:
        model: (B, *shape) raw inputs -> logits (B, K).
        sigma: noise std in data-range units; n_mc: draws per input (>= 2); score: hps or aps; ptt: optional PTT.
    """

    def __init__(self, model, sigma: float, n_mc: int, score: str, batch: int = 4096, ptt: PTT | None = None):
        if not sigma > 0 or n_mc < 2:
            raise CertkitError("conformal smoothing needs sigma > 0 and n_mc >= 2")
        if score not in SCORES:
            raise CertkitError(f"unknown score {score!r}: use hps or aps")
        self.model, self.sigma, self.n_mc, self.score, self.batch, self.ptt = model, sigma, n_mc, score, batch, ptt

    def per_draw(self, x: torch.Tensor, u: torch.Tensor, noise: torch.Tensor, apply_ptt: bool = True) -> torch.Tensor:
        """Scores (B, N, K) at x + noise, noise (B, N, *shape); differentiable in x without PTT."""
        B, N = noise.shape[:2]
        z = (x.unsqueeze(1) + noise).reshape((B * N,) + tuple(x.shape[1:]))
        probs = torch.softmax(self.model(z).float(), dim=-1)
        s = base_scores(probs, self.score, u.repeat_interleave(N))
        if self.ptt is not None and apply_ptt:
            s = self.ptt(s)
        return s.view(B, N, -1)

    def noise(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return self.sigma * torch.randn((x.shape[0], self.n_mc) + tuple(x.shape[1:]), generator=generator,
                                        device=x.device)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, u: torch.Tensor, generator: torch.Generator):
        """(mean (B, K), variance (B, K)) of the per-draw scores, in chunks of ``batch`` model evaluations."""
        means, variances = [], []
        step = max(1, self.batch // self.n_mc)
        for i in range(0, x.shape[0], step):
            xb, ub = x[i:i + step], u[i:i + step]
            s = self.per_draw(xb, ub, self.noise(xb, generator)).double()
            if not torch.isfinite(s).all():
                raise CertkitError("the model produced NaN or inf outputs; no prediction set is issued")
            means.append(s.mean(1))
            variances.append(s.var(1, unbiased=True))
        return torch.cat(means), torch.cat(variances)


def conformal_quantile(cal_scores, level: float) -> float:
    """The exact ceil((n+1) level)-th smallest calibration score (inf when that rank exceeds n)."""
    s = np.sort(np.asarray(cal_scores, dtype=np.float64).ravel())
    k = math.ceil((len(s) + 1) * level - 1e-12)
    return float("inf") if k > len(s) else float(s[max(k, 1) - 1])


def hoeffding_correction(n_mc: int, beta: float) -> float:
    """b_H = sqrt(-ln(beta) / (2 N_mc))."""
    return math.sqrt(-math.log(beta) / (2 * n_mc))


def rscp_plus_sets(mean: torch.Tensor, var: torch.Tensor, tau_plus: float, n_mc: int, beta: float, eps: float,
                   sigma: float) -> torch.Tensor:
    """RSCP+ prediction sets (B, K) bool from test-side smoothed scores (see the module docstring)."""
    level = tau_plus + hoeffding_correction(n_mc, beta)
    if level >= 1:
        return torch.ones_like(mean, dtype=torch.bool)
    b_B = torch.as_tensor(empirical_bernstein_shift(var.cpu().numpy(), n_mc, beta), dtype=mean.dtype)
    lhs = norm.ppf(np.clip((mean.cpu() - b_B).numpy(), 0.0, 1.0)) - eps / sigma
    return torch.as_tensor(lhs <= norm.ppf(level))


def rscp_sets(mean: torch.Tensor, tau: float, eps: float, sigma: float) -> torch.Tensor:
    """Original RSCP sets (no finite-sample guarantee)."""
    if tau >= 1:
        return torch.ones_like(mean, dtype=torch.bool)
    lhs = norm.ppf(np.clip(mean.cpu().numpy(), 0.0, 1.0)) - eps / sigma
    return torch.as_tensor(lhs <= norm.ppf(tau))


def pgd_l2_smoothed(scorer: SmoothedScorer, x: torch.Tensor, y: torch.Tensor, u: torch.Tensor, eps: float,
                    steps: int = 20, generator: torch.Generator | None = None,
                    data_range: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
    """The attack of the coverage check: L2 PGD (verifiers.attack.pgd_l2, one start at x, keep-best) RAISING the
    smoothed true-label score within ||x~ - x||_2 <= eps, with the same N_mc noise draws at every step. The returned
    points are scored afterwards with fresh draws. With PTT the attack ascends the untransformed score: the rank
    transform is monotone per draw but has no gradient, so raising the base score raises the transformed one."""
    from certkit.verifiers.attack import pgd_l2

    noise = scorer.noise(x, generator)

    def objective(z):
        return -scorer.per_draw(z, u, noise, apply_ptt=False).mean(1).gather(1, y[:, None]).squeeze(1)

    x_adv, _ = pgd_l2(objective, x, eps, steps, restarts=1, data_range=data_range, early_stop=False)
    return x_adv
