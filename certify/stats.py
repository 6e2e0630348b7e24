"""Confidence bounds and tests. Nothing else in certkit computes a bound.

Clopper-Pearson via statsmodels, the binomial test via scipy (``scipy.stats.binomtest``), and the empirical
Bernstein bound of Maurer & Pontil (2009) for [0,1]-valued samples.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import binomtest
from statsmodels.stats.proportion import proportion_confint


def clopper_pearson_lower(successes, n: int, alpha: float):
    """One-sided (1 - alpha) Clopper-Pearson lower confidence bound on a binomial proportion.

    Equals ``Beta.ppf(alpha; k, n - k + 1)`` (0 when k = 0): P(p >= bound) >= 1 - alpha for every p.
    Computed as the lower end of the two-sided interval at level 1 - 2 alpha
    (statsmodels ``proportion_confint(k, n, alpha=2*alpha, method="beta")``), as in Cohen et al. 2019, CERTIFY.

    Args:
        successes: k, an int or an integer array, 0 <= k <= n.
        n: number of trials, >= 1.
        alpha: one-sided error probability in (0, 1).

    Returns:
        float (or array like ``successes``) in [0, 1].
    """
    lo, _ = proportion_confint(successes, n, alpha=2 * alpha, method="beta")
    lo = np.nan_to_num(np.asarray(lo, dtype=np.float64), nan=0.0)  # k = 0 gives nan in some versions
    return float(lo) if lo.ndim == 0 else lo


def clopper_pearson_upper(successes, n: int, alpha: float):
    """One-sided (1 - alpha) Clopper-Pearson upper bound, ``Beta.ppf(1 - alpha; k + 1, n - k)`` (1 when k = n)."""
    _, hi = proportion_confint(successes, n, alpha=2 * alpha, method="beta")
    hi = np.nan_to_num(np.asarray(hi, dtype=np.float64), nan=1.0)
    return float(hi) if hi.ndim == 0 else hi


def binomial_test_pvalue(k: int, n: int, p: float = 0.5) -> float:
    """Two-sided exact binomial test p-value of k successes in n trials against proportion p.

    Used by PREDICT (Cohen et al. 2019): abstain when the p-value of nA out of nA + nB at p = 0.5 exceeds alpha.
    """
    if n == 0:
        return 1.0
    return float(binomtest(int(k), int(n), p).pvalue)


def empirical_bernstein_shift(variance, n: int, delta: float):
    """One-sided empirical Bernstein deviation (Maurer & Pontil 2009, Theorem 4) for [0,1]-valued samples.

    With probability >= 1 - delta, E[X] >= mean - shift (and, as a separate statement, E[X] <= mean + shift), where
    shift = sqrt(2 V ln(2/delta) / n) + 7 ln(2/delta) / (3 (n - 1)) and V is the unbiased sample variance.

    Args:
        variance: V (float or array), the sample variance with denominator n - 1.
        n: number of samples, >= 2.
        delta: failure probability in (0, 1).
    """
    import math

    if n < 2:
        raise ValueError("the empirical Bernstein bound needs n >= 2 samples")
    log_term = math.log(2.0 / delta)
    return np.sqrt(2.0 * np.asarray(variance, dtype=np.float64) * log_term / n) + 7.0 * log_term / (3.0 * (n - 1))
