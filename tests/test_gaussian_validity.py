"""Statistical validity of CERTIFY / PREDICT on problems with closed-form answers (Cohen et al. 2019).

Tolerances come from the binomial distribution: with R independent repetitions and a per-run failure
probability of at most alpha, the failure count is stochastically below Binomial(R, alpha); the tests allow
the count's (1 - 1e-6) quantile, so a correct implementation fails them with probability < 1e-6, while a bound
that fails at twice its rate is caught.
"""
import math
import time

import numpy as np
import pytest
import torch
from scipy.stats import beta, binom, norm
from torch import nn

from certkit.certify import ABSTAIN, GaussianSmoothing, NoiseSampler
from certkit.certify.stats import binomial_test_pvalue, clopper_pearson_lower, clopper_pearson_upper


class LinearBinary(nn.Module):
    """f(x) = [w.x + b > 0] as two logits (-s, s)."""

    def __init__(self, w, b):
        super().__init__()
        self.w = torch.as_tensor(w, dtype=torch.float32)
        self.b = float(b)

    def forward(self, x):
        s = x.flatten(1) @ self.w + self.b
        return torch.stack([-s, s], dim=1)


class Thresholds1D(nn.Module):
    """Class k when the projection t = w.x / ||w|| falls in the k-th interval cut by ``cuts``."""

    def __init__(self, w, cuts):
        super().__init__()
        self.w = torch.as_tensor(w, dtype=torch.float32) / float(np.linalg.norm(w))
        self.cuts = torch.as_tensor(cuts, dtype=torch.float32)

    def forward(self, x):
        t = x.flatten(1) @ self.w
        k = torch.bucketize(t, self.cuts)
        return nn.functional.one_hot(k, len(self.cuts) + 1).float()


def _max_failures(reps: int, alpha: float) -> int:
    return int(binom.ppf(1 - 1e-6, reps, alpha))


def test_clopper_pearson_matches_beta_quantiles():
    # statsmodels 0.15 gives the scipy beta quantiles exactly
    assert clopper_pearson_lower(990, 1000, 0.001) == pytest.approx(0.976036, abs=1e-6)
    assert clopper_pearson_lower(990, 1000, 0.001) == pytest.approx(beta.ppf(0.001, 990, 11), rel=1e-9)
    assert clopper_pearson_upper(990, 1000, 0.001) == pytest.approx(beta.ppf(0.999, 991, 10), rel=1e-9)
    assert clopper_pearson_lower(0, 50, 0.01) == 0.0
    assert clopper_pearson_lower(50, 50, 0.01) == pytest.approx(0.01 ** (1 / 50), rel=1e-9)
    assert clopper_pearson_upper(50, 50, 0.01) == 1.0


def test_binomial_test_pvalue_matches_exact_two_sided():
    # two-sided exact test at p=1/2 is symmetric: P(X <= k) + P(X >= n-k), k < n/2
    assert binomial_test_pvalue(3, 20) == pytest.approx(2 * binom.cdf(3, 20, 0.5), rel=1e-9)
    assert binomial_test_pvalue(10, 20) == pytest.approx(1.0)


class FixedCounts:
    """A sampler stand-in returning prescribed counts, to check CERTIFY's arithmetic exactly."""

    sigma = 0.5

    def __init__(self, *counts):
        self.queue = [torch.tensor(c) for c in counts]

    def counts(self, x, num, generator):
        c = self.queue.pop(0)
        assert int(c.sum()) == num
        return c


def test_certify_arithmetic_against_hand_computed_radius():
    g = GaussianSmoothing(FixedCounts([3, 97], [10, 990]))
    cert = g.certify(torch.zeros(1), n0=100, n=1000, alpha=0.001, generator=None)
    p_low = beta.ppf(0.001, 990, 11)  # one-sided Clopper-Pearson
    assert cert.prediction == 1 and cert.nA == 990
    assert cert.pA_lower == pytest.approx(p_low, rel=1e-9)
    assert cert.radius == pytest.approx(0.5 * norm.ppf(p_low), rel=1e-9)
    # nA counted for the class selected on the n0 samples, even when another class wins the n samples
    g = GaussianSmoothing(FixedCounts([60, 40], [600, 400]))
    cert = g.certify(torch.zeros(1), n0=100, n=1000, alpha=0.001, generator=None)
    assert cert.nA == 600 and cert.prediction == 0
    # pA_lower < 1/2 -> abstain with radius 0
    g = GaussianSmoothing(FixedCounts([60, 40], [520, 480]))
    cert = g.certify(torch.zeros(1), n0=100, n=1000, alpha=0.001, generator=None)
    assert cert.prediction == ABSTAIN and cert.radius == 0.0


def test_max_radius_when_all_samples_agree():
    """All n samples agree: R = sigma * PhiInv(alpha^(1/n)) = 3.81 sigma at alpha=1e-3, n=1e5."""
    model = LinearBinary([0.0, 0.0], 1.0)  # always class 1
    g = GaussianSmoothing(NoiseSampler(model, sigma=0.5, batch_size=20_000))
    cert = g.certify(torch.zeros(2), 100, 100_000, 0.001, torch.Generator().manual_seed(0))
    assert cert.prediction == 1
    assert cert.radius == pytest.approx(0.5 * norm.ppf(0.001 ** (1 / 100_000)), rel=1e-9)
    assert cert.radius / 0.5 == pytest.approx(3.81, abs=0.005)


@pytest.mark.parametrize("margin", [0.3, 1.2])
def test_certify_lower_bound_holds_at_stated_rate_linear_classifier(margin):
    """pA = Phi(|w.x+b| / (sigma ||w||)); P(pA_lower > pA) <= alpha; radius <= true distance otherwise."""
    sigma, alpha, reps, n0, n = 0.5, 0.1, 1500, 20, 200
    w = np.array([3.0, -4.0, 0.0, 12.0])  # ||w|| = 13
    x = torch.zeros(4)
    b = margin * 13.0                      # distance to the boundary = margin
    dist = abs(b) / 13.0
    p_true = norm.cdf(dist / sigma)
    g = GaussianSmoothing(NoiseSampler(LinearBinary(w, b), sigma=sigma, batch_size=n))
    failures = 0
    for seed in range(reps):
        cert = g.certify(x, n0, n, alpha, torch.Generator().manual_seed(seed))
        if cert.prediction != ABSTAIN:
            assert cert.prediction == 1 or cert.pA_lower > p_true  # a wrong class needs a failed bound
        if cert.pA_lower > p_true:
            failures += 1
        elif cert.prediction != ABSTAIN:
            assert cert.radius <= dist + 1e-9, (cert, dist)
    assert failures <= _max_failures(reps, alpha), failures


def test_certify_abstains_when_top_class_below_half():
    """Three classes with probabilities (0.48, 0.27, 0.25): no class has pA >= 1/2, so CERTIFY must abstain
    except with probability <= alpha."""
    sigma, alpha, reps = 1.0, 0.1, 600
    a = norm.ppf(0.48)
    b = norm.ppf(0.75)
    model = Thresholds1D([1.0, 1.0], [a, b])
    g = GaussianSmoothing(NoiseSampler(model, sigma=sigma, batch_size=1000))
    issued = sum(g.certify(torch.zeros(2), 50, 1000, alpha, torch.Generator().manual_seed(s)).prediction != ABSTAIN
                 for s in range(reps))
    assert issued <= _max_failures(reps, alpha), issued


def test_predict_abstains_on_a_tie_at_stated_rate():
    """x on the decision boundary: pA = pB = 1/2, so PREDICT may return a class with probability <= alpha."""
    alpha, reps = 0.1, 1500
    g = GaussianSmoothing(NoiseSampler(LinearBinary([1.0, 1.0], 0.0), sigma=0.5, batch_size=100))
    issued = sum(g.predict(torch.zeros(2), 100, alpha, torch.Generator().manual_seed(s)) != ABSTAIN
                 for s in range(reps))
    assert issued <= _max_failures(reps, alpha), issued


def test_predict_returns_the_majority_class_when_clear():
    g = GaussianSmoothing(NoiseSampler(LinearBinary([1.0, 0.0], -2.0), sigma=1.0, batch_size=500))
    # pA = Phi(2) = 0.977 for class 0
    assert g.predict(torch.zeros(2), 500, 0.001, torch.Generator().manual_seed(0)) == 0


def test_sampler_counts_match_closed_form_probability():
    """Counts of a linear classifier follow Binomial(N, Phi(d/sigma)): check within a 1e-6 two-sided band."""
    d, sigma, num = 0.2, 0.5, 200_000
    model = LinearBinary([1.0, 0.0], d)
    s = NoiseSampler(model, sigma=sigma, batch_size=50_000)
    c = s.counts(torch.zeros(2), num, torch.Generator().manual_seed(3))
    p = norm.cdf(d / sigma)
    lo, hi = binom.ppf(5e-7, num, p), binom.ppf(1 - 5e-7, num, p)
    assert int(c.sum()) == num and lo <= int(c[1]) <= hi


def test_same_seed_same_certificate_on_cpu():
    g = GaussianSmoothing(NoiseSampler(LinearBinary([1.0, 1.0], 0.3), sigma=0.5, batch_size=64))
    a = g.certify(torch.zeros(2), 10, 500, 0.01, torch.Generator().manual_seed(7))
    b = g.certify(torch.zeros(2), 10, 500, 0.01, torch.Generator().manual_seed(7))
    assert a == b
    assert not math.isnan(a.radius)


def test_nan_logits_raise_instead_of_certifying():
    from certkit.common.errors import CertkitError

    class NaNNet(nn.Module):
        def forward(self, x):
            out = torch.zeros(x.shape[0], 3)
            out[0, 1] = float("nan")
            return out

    g = GaussianSmoothing(NoiseSampler(NaNNet(), sigma=0.5, batch_size=16))
    with pytest.raises(CertkitError, match="NaN or inf"):
        g.certify(torch.zeros(2), 10, 100, 0.01, torch.Generator().manual_seed(0))


def test_bad_parameters_raise():
    from certkit.common.errors import CertkitError

    g = GaussianSmoothing(NoiseSampler(LinearBinary([1.0], 0.0), sigma=0.5))
    for kwargs in ({"n0": 0, "n": 10, "alpha": 0.1}, {"n0": 10, "n": 0, "alpha": 0.1},
                   {"n0": 10, "n": 10, "alpha": 0.0}, {"n0": 10, "n": 10, "alpha": 1.0}):
        with pytest.raises(CertkitError):
            g.certify(torch.zeros(1), generator=torch.Generator(), **kwargs)
    with pytest.raises(CertkitError):
        NoiseSampler(LinearBinary([1.0], 0.0), sigma=0.0)
    with pytest.raises(CertkitError):
        NoiseSampler(LinearBinary([1.0], 0.0), sigma=0.5, amp=True)  # CPU


def test_forward_batch_changes_speed_not_counts():
    """Sub-batching the forward pass (fixed or tuned) leaves the noise stream and every count unchanged."""
    from certkit.datasets import load_dataset
    from certkit.models import load_model

    model = load_model("bundled").module
    x = load_dataset("digits", split="test").x[3]
    seen = []

    class Spy(nn.Module):
        def forward(self, z):
            seen.append(z.shape[0])
            return model(z)

    counts = {}
    for fb in (None, 96, "auto"):
        seen.clear()
        s = NoiseSampler(Spy(), sigma=1.0, batch_size=400, forward_batch=fb)
        counts[fb] = s.counts(x, 1000, torch.Generator().manual_seed(5))
        if fb == 96:
            assert max(seen) == 96 and seen[-3:] == [96, 96, 8]  # the last chunk of 200 rows: 96 + 96 + 8
    assert (counts[None] > 0).sum() >= 3  # sigma 1: the noise spreads the votes, so equal counts mean something
    assert torch.equal(counts[None], counts[96]) and torch.equal(counts[None], counts["auto"])


def test_drawing_noise_ahead_or_in_line_changes_speed_not_counts():
    """The helper thread (draw_ahead True), drawing in line (False) and the timed choice ("auto") give the same
    counts: the chunks and their order are those of one seeded stream."""
    from certkit.datasets import load_dataset
    from certkit.models import load_model

    model = load_model("bundled").module
    x = load_dataset("digits", split="test").x[3]
    counts = {}
    for mode in (True, False, "auto"):
        s = NoiseSampler(model, sigma=1.0, batch_size=200, draw_ahead=mode)
        counts[mode] = s.counts(x, 1000, torch.Generator().manual_seed(5))
        assert s.draw_ahead in (True, False)  # "auto" is decided at the first call of several chunks
    assert (counts[True] > 0).sum() >= 3
    assert torch.equal(counts[True], counts[False]) and torch.equal(counts[True], counts["auto"])
    from certkit.common.errors import CertkitError

    with pytest.raises(CertkitError, match="draw_ahead"):
        NoiseSampler(model, sigma=0.5, draw_ahead="yes")


def test_one_shape_pads_every_call_to_one_batch_of_inference_tensors():
    """For a module compiled for one shape: with one_shape every forward call gets exactly forward_batch rows (the
    n0-sized and last chunks padded), every input is an inference tensor whether the noise was drawn in line or on
    the helper thread (a compiled module would compile again for either change), and the counts are unchanged."""
    from certkit.common.errors import CertkitError
    from certkit.datasets import load_dataset
    from certkit.models import load_model

    model = load_model("bundled").module
    x = load_dataset("digits", split="test").x[3]
    seen = []

    class Spy(nn.Module):
        def forward(self, z):
            seen.append((z.shape[0], z.is_inference()))
            return model(z)

    counts = {}
    for one_shape, ahead in ((False, False), (True, False), (True, True)):
        seen.clear()
        s = NoiseSampler(Spy(), sigma=1.0, batch_size=200, forward_batch=None, draw_ahead=ahead, one_shape=one_shape,
                         check_input=False)
        if one_shape:
            s.warm_up(x)
        counts[one_shape, ahead] = [s.counts(x, 30, torch.Generator().manual_seed(5)),
                                    s.counts(x, 450, torch.Generator().manual_seed(6))]
        sizes = {b for b, _ in seen}
        assert sizes == ({200} if one_shape else {30, 200, 50})
        assert all(inference for _, inference in seen)
    assert (counts[False, False][1] > 0).sum() >= 3  # sigma 1: the votes spread, so equal counts mean something
    for key in ((True, False), (True, True)):
        assert all(torch.equal(a, b) for a, b in zip(counts[key], counts[False, False]))
    with pytest.raises(CertkitError, match="one_shape"):
        NoiseSampler(model, sigma=0.5, one_shape=True)


def test_forward_batch_auto_refuses_sizes_that_change_logits():
    class BatchDependent(nn.Module):  # logits depend on how many rows share the call; large calls are slow
        def forward(self, z):
            time.sleep(1e-8 * z.shape[0] ** 2)
            return torch.stack([z.flatten(1).sum(1), torch.full((z.shape[0],), z.shape[0] / 1000.0)], 1)

    s = NoiseSampler(BatchDependent(), sigma=0.5, batch_size=512)
    s.counts(torch.zeros(3), 600, torch.Generator().manual_seed(0))
    assert s.forward_batch == 512
    from certkit.common.errors import CertkitError

    with pytest.raises(CertkitError, match="forward batch"):
        NoiseSampler(BatchDependent(), sigma=0.5, forward_batch=0)
