"""Sequential (anytime-valid) certification: validity on the closed-form linear problem at the stated rate, inputs
exactly on the decision boundary included, and that it decides early where the answer is clear."""
import pytest
import torch
from scipy.stats import binom
from torch import nn

from certkit.certify import NoiseSampler
from certkit.certify.smoothing.sequential import SequentialSmoothing, kelly_bet, log_wealth_step

from conftest import assert_clean_error


class LinearBinary(nn.Module):
    """f(x) = [x_0 > 0]: with noise sigma, pA = P(f(x + e) = 1) = Phi(x_0 / sigma)."""

    def forward(self, x):
        s = x[:, 0]
        return torch.stack([-s, s], dim=1)


def _rate(distance, r, sigma=0.5, alpha=0.05, reps=400, n=4000, radii=None):
    g = SequentialSmoothing(NoiseSampler(LinearBinary(), sigma, batch_size=4000))
    g.radii = radii or [r]
    certified, samples = 0, 0
    for s in range(reps):
        cert = g.certify(torch.tensor([distance, 0.0]), 20, n, alpha, torch.Generator().manual_seed(s))
        certified += cert.prediction == 1 and cert.radius >= r
        samples += cert.samples
    return certified, samples / reps


@pytest.mark.parametrize("gap", [0.0, -0.05])
def test_false_certification_rate_is_at_most_alpha_on_and_inside_the_boundary(gap):
    """x at distance r (+ gap) from the decision boundary: pA = Phi((r + gap)/sigma) <= Phi(r/sigma), so certifying
    radius r is a type-I error of the sequential test, whenever it happens in the sequence."""
    reps, alpha = 400, 0.05
    wrong, _ = _rate(0.3 + gap, 0.3, alpha=alpha, reps=reps)
    assert wrong <= binom.ppf(1 - 1e-6, reps, alpha), wrong


def test_union_over_target_radii_and_early_decisions():
    # x at distance 0.3: radius 0.2 is true, 0.3 on the boundary, 0.4 false -- with three radii at alpha/3 each,
    # claiming 0.3 or more is an error with probability <= alpha overall
    reps, alpha = 300, 0.05
    wrong, _ = _rate(0.3, 0.3, alpha=alpha, reps=reps, radii=[0.2, 0.3, 0.4])
    assert wrong <= binom.ppf(1 - 1e-6, reps, alpha)
    # clear cases stop early: far inside (pA = Phi(2) = 0.977 vs p0 = Phi(0.4) = 0.655) and far outside
    got, mean_samples = _rate(1.0, 0.2, reps=50, n=100_000)
    assert got == 50 and mean_samples < 1000
    got, mean_samples = _rate(-0.5, 0.2, reps=50, n=100_000)
    assert got == 0 and mean_samples < 1000


def test_bets_and_wealth_by_hand():
    assert kelly_bet(0.9, 0.6, True) == pytest.approx(0.5 / 0.6)       # Kelly 0.3 / 0.24 = 1.25, capped
    assert kelly_bet(0.62, 0.6, True) == pytest.approx(0.02 / 0.24)     # below the cap
    assert kelly_bet(0.5, 0.6, True) == 0.0 and kelly_bet(0.5, 0.6, False) == pytest.approx(0.1 / 0.24)
    import math
    assert log_wealth_step(3, 4, 0.5, 0.6, True) == pytest.approx(3 * math.log(1.2) + math.log(0.7))
    assert log_wealth_step(3, 4, 0.5, 0.6, False) == pytest.approx(3 * math.log(0.8) + math.log(1.3))


def test_cli_sequential_needs_radii_and_records_samples(cli, tmp_path):
    r = cli("certify", "--method", "sequential", "--radii", "0.25,0.5", "--max", 5, "--quiet", "--out",
            tmp_path / "s.tsv")
    assert r.exit_code == 0, r.output
    head = (tmp_path / "s.tsv").read_text().splitlines()[0].split("\t")
    assert head[-1] == "samples" and "0.25" in r.output and "0.50" in r.output
    assert_clean_error(cli("certify", "--method", "sequential", "--max", 2, "--out", tmp_path / "t.tsv"), "--radii")


@pytest.mark.parametrize("up", [True, False])
def test_wealth_step_is_a_fair_bet_under_the_null(up):
    """E[exp(step)] over k ~ Binomial(b, p0) is exactly 1 for any bet: the wealth is a martingale at pA = p0 (and a
    supermartingale beyond), which is what Ville's inequality needs."""
    import math

    for p0, lam, b in ((0.6, 0.4, 7), (0.84, 0.5, 30), (0.5, 0.99, 12)):
        lam = min(lam, 0.5 / (p0 if up else 1 - p0))
        mean = sum(binom.pmf(k, b, p0) * math.exp(log_wealth_step(k, b, lam, p0, up)) for k in range(b + 1))
        assert mean == pytest.approx(1.0, abs=1e-12)


class Hits:
    """A sampler whose base classifier always returns class 1 (pA = 1 whatever the noise)."""

    sigma = 0.5

    def counts(self, x, num, generator):
        return torch.tensor([0, num])


def test_decision_threshold_is_log_of_k_over_alpha():
    """With every sample a hit, the wealth after each batch is known in closed form: certification must happen at
    the first batch where the log wealth reaches log(k / alpha), not earlier, not later."""
    import math

    alpha, radii = 1e-3, [0.1 * k for k in range(1, 9)]  # the largest radius decides last
    g = SequentialSmoothing(Hits())
    g.radii, g.first_batch = radii, 1  # batches of 1, 2, 4, ... so that the stopping time resolves the threshold
    cert = g.certify(torch.zeros(2), 20, 100_000, alpha, None)
    p0 = norm_cdf(0.8 / 0.5)
    hits = trials = 20
    log_w, used, b = 0.0, 0, g.first_batch
    while log_w < math.log(len(radii) / alpha):
        lam = kelly_bet((hits + 0.5) / (trials + 1.0), p0, True)
        log_w += log_wealth_step(b, b, lam, p0, True)
        hits, trials, used, b = hits + b, trials + b, used + b, 2 * b
    assert cert.prediction == 1 and cert.radius == pytest.approx(0.8) and cert.samples == 20 + used


def norm_cdf(z):
    from scipy.stats import norm

    return float(norm.cdf(z))


def test_a_radius_beyond_float_reach_is_never_certified_and_does_not_stop_the_others():
    """Phi(r / sigma) rounds to 1 for r > 8.2 sigma: no sample count can prove pA above it, so that radius is
    refuted at once, while a reachable radius of the same run is still decided (every sample a hit)."""
    g = SequentialSmoothing(Hits())
    g.radii = [0.5, 8.5 * 0.5]
    cert = g.certify(torch.zeros(2), 20, 100_000, 1e-3, None)
    assert cert.prediction == 1 and cert.radius == pytest.approx(0.5)
    assert g.last["status"] == {0.5: 1, 4.25: -1}
