"""Sound Gaussian smoothing in floating point (certify/sound_noise.py, ``--sound``).

Checks: the noise table against the rounded Gaussian's atoms; every noisy input is exactly x_q + h k; CERTIFY's
lower bound holds at its stated rate on a linear classifier (closed form, tolerance from the binomial law); a base
classifier that reacts to floating-point representability (Voracek & Hein's point: smoothing's theorem is about
real-valued noise, float32 sampling is not) is certified by the default mode with a class that the smoothed classifier
it describes does not give, while the sound mode's certificate holds for the classifier it describes; the CLI.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import ndtr
from scipy.stats import binom, chi2, chisquare, norm
from test_gaussian_validity import LinearBinary
from torch import nn

from certkit.certify import ABSTAIN, GaussianSmoothing, NoiseSampler
from certkit.certify.sound_noise import RoundedGaussian
from certkit.common.errors import CertkitError


def test_table_gives_the_rounded_gaussian_atoms():
    g = RoundedGaussian(0.5)
    T = g.thresholds(torch.device("cpu"))
    assert T[0] == 0 and T[-1] == 2 ** 62 and bool((T[1:] >= T[:-1]).all())
    k = np.arange(-g.K, g.K + 1)
    q = (T[1:] - T[:-1]).double().numpy() * 2.0 ** -62
    p = ndtr((k + 0.5) * g.h / g.sigma) - ndtr((k - 0.5) * g.h / g.sigma)
    assert abs(q - p).max() < 1e-13        # float64 ndtr is accurate to ~1e-16 here; the table to 2^-62
    assert 0 < g.tau < 1e-12


def test_samples_follow_the_atoms_and_sums_are_exact():
    sigma = 0.25
    g = RoundedGaussian(sigma)
    gen = torch.Generator().manual_seed(0)
    noise = g.draw((400_000,), gen, torch.device("cpu"))
    k = torch.round(noise.double() / g.h)
    assert torch.equal(k * g.h, noise.double())
    # chi-square over 20 bins of equal probability (under the exact law of k): a correct sampler fails w.p. 1e-6
    edges = np.round(norm.ppf(np.linspace(0, 1, 21)[1:-1]) * sigma / g.h).astype(np.int64)
    counts = np.bincount(np.searchsorted(edges, k.numpy().astype(np.int64), side="left"), minlength=20)
    cdf = ndtr((np.concatenate([edges, [g.K]]) + 0.5) * g.h / sigma)
    probs = np.diff(np.concatenate([[0.0], cdf]))
    probs[-1] += 1 - probs.sum()
    stat, _ = chisquare(counts, probs * counts.sum())
    assert stat < chi2.ppf(1 - 1e-6, 19)
    x = torch.rand(1, 3, 4, 4, generator=gen)
    xq = g.quantize(x)
    z = xq + g.draw((64, 3, 4, 4), gen, torch.device("cpu"))          # float32 addition
    exact = xq.double() + (z.double() - xq.double())
    assert torch.equal(z.double(), exact) and torch.equal(torch.round(z.double() / g.h) * g.h, z.double())
    with pytest.raises(CertkitError, match="too large"):
        g.quantize(torch.full((3,), 1e6))


def test_sound_certify_bound_holds_at_stated_rate_on_a_linear_classifier():
    """H(x) = G(round(x)) for f~ = f o round_h: at x = 0 (on the grid) pA = P(w.round_h(g) + b > 0) <= Phi((dist +
    s) / sigma) with s = (h/2) ||w||_1 / ||w||; P(pA_lower > that) <= alpha, and radii stay below dist + s."""
    sigma, alpha, reps, n0, n = 0.5, 0.1, 800, 20, 200
    w = np.array([3.0, -4.0, 0.0, 12.0])
    b = 0.6 * 13.0
    dist = b / 13.0
    sampler = NoiseSampler(LinearBinary(w, b), sigma=sigma, batch_size=n, sound=True)
    slack = sampler.grid.h / 2 * np.abs(w).sum() / 13.0
    p_hi = norm.cdf((dist + slack) / sigma)
    g = GaussianSmoothing(sampler)
    failures = 0
    for seed in range(reps):
        cert = g.certify(torch.zeros(4), n0, n, alpha, torch.Generator().manual_seed(seed))
        if cert.pA_lower > p_hi:
            failures += 1
        elif cert.prediction != ABSTAIN:
            assert cert.prediction == 1 and cert.radius <= dist + slack, cert
    assert failures <= int(binom.ppf(1 - 1e-6, reps, alpha)), failures


class Representable(nn.Module):
    """Class 1 when every input coordinate is exactly a float32 number (tested in float64), else class 0.

    A measure-zero set: Gaussian smoothing with real-valued noise gives class 0 everywhere, but every float32 sample is
    representable."""

    def forward(self, z):
        z64 = z.double()
        rep = (z64 == z64.float().double()).flatten(1).all(1)
        s = rep.double() * 2 - 1
        return torch.stack([-s, s], 1).float()


def test_representability_trap_fools_the_default_mode_and_not_the_sound_one():
    sigma, n0, n, alpha = 0.25, 100, 2000, 0.001
    x = torch.rand(8, generator=torch.Generator().manual_seed(0))
    f = Representable()
    default = GaussianSmoothing(NoiseSampler(f, sigma)).certify(x, n0, n, alpha, torch.Generator().manual_seed(0))
    assert default.prediction == 1 and default.radius > 0.5
    # the smoothed classifier the default certificate describes: real-valued noise (float64 stands in for the reals,
    # where P(representable) ~ 2^-29 per coordinate) -> class 0 at x itself, inside any radius
    gen64 = torch.Generator().manual_seed(1)
    real = f(x.double() + sigma * torch.randn(n, 8, generator=gen64, dtype=torch.float64)).argmax(1)
    assert int(real.sum()) == 0
    # the sound mode certifies H(x') = G~(round_h(x')), G~ the real-noise smoothing of f o round_h; check H inside the
    # certified ball with real-valued (float64) noise rounded to the grid, and with the sound sampler itself
    sampler = NoiseSampler(f, sigma, sound=True)
    sound = GaussianSmoothing(sampler).certify(x, n0, n, alpha, torch.Generator().manual_seed(0))
    assert sound.prediction == 1 and 0 < sound.radius < default.radius
    h = sampler.grid.h
    u = torch.randn(8, generator=gen64, dtype=torch.float64)
    x2 = x.double() + 0.9 * sound.radius * u / u.norm()
    v = torch.round(x2 / h) * h + sigma * torch.randn(n, 8, generator=gen64, dtype=torch.float64)
    assert int(f(torch.round(v / h) * h).argmax(1).sum()) == n
    assert GaussianSmoothing(sampler).predict(x2.float(), n, alpha, torch.Generator().manual_seed(2)) == 1


def test_sound_radius_pays_for_grid_and_sampling():
    f = LinearBinary(np.array([1.0, 0.0]), 10.0)
    plain = GaussianSmoothing(NoiseSampler(f, 0.5)).certify(torch.zeros(2), 100, 10_000, 0.001,
                                                            torch.Generator().manual_seed(0))
    sampler = NoiseSampler(f, 0.5, sound=True)
    sound = GaussianSmoothing(sampler).certify(torch.zeros(2), 100, 10_000, 0.001, torch.Generator().manual_seed(0))
    loss = sampler.grid.h / 2 * math.sqrt(2)
    assert sound.pA_lower < plain.pA_lower
    assert plain.radius - loss - 1e-6 <= sound.radius < plain.radius - loss


def test_cli_certify_and_predict_with_sound(cli, tmp_path):
    import json

    r = cli("certify", "--max", 3, "--n", 2000, "--sound", "--out", tmp_path / "c.tsv", "--quiet")
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "c.summary.json").read_text())
    assert summary["options"]["sound"] is True
    r = cli("predict", "--max", 3, "--n", 500, "--sound", "--out", tmp_path / "p.tsv", "--quiet")
    assert r.exit_code == 0, r.output
    r = cli("certify", "--max", 3, "--n", 500, "--method", "dual", "--sound", "--out", tmp_path / "d.tsv")
    assert r.exit_code != 0 and "--sound" in r.output
