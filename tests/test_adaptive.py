"""Adaptive smoothing (certify/smoothing/adaptive.py): the radius formula, its soundness at the stated rate and its
tightness on a linear problem with an adversarial standard classifier (closed form), and the CLI."""
import json

import numpy as np
import pytest
import torch
from scipy.stats import binom, norm
from torch import nn

from certkit.certify import ABSTAIN, NoiseSampler
from certkit.certify.smoothing.adaptive import AdaptiveSmoothing, adaptive_radius
from certkit.common.errors import CertkitError

from conftest import assert_clean_error

SIGMA = 0.5


class Linear2(nn.Module):
    """f(x) = class 1 iff x_0 > 0 (logits (-x_0, x_0)); smoothed p^r_1(x) = Phi(x_0 / sigma) exactly."""

    def forward(self, x):
        return torch.stack([-x[:, 0], x[:, 0]], 1)


class Adversary(nn.Module):
    """g puts (almost) all probability on class 0 everywhere: the worst standard classifier for class 1."""

    def forward(self, x):
        return torch.tensor([30.0, -30.0]).expand(x.shape[0], 2)


def exact_h(x0: float, w: float) -> int:
    """The mixed classifier with the EXACT smoothed probabilities at a point with first coordinate x0."""
    p1 = norm.cdf(x0 / SIGMA)
    p_g = torch.softmax(torch.tensor([30.0, -30.0], dtype=torch.float64), 0).numpy()
    h = (1 - w) * p_g + w * np.array([1 - p1, p1])
    return int(h.argmax())


def test_radius_formula_limits_and_monotone_in_w():
    assert adaptive_radius(0.9, 1.0, SIGMA) == pytest.approx(SIGMA * norm.ppf(0.9))  # w = 1: Cohen et al.
    radii = [adaptive_radius(0.95, w, SIGMA) for w in (1.0, 0.9, 0.75, 0.6)]
    assert all(a > b for a, b in zip(radii, radii[1:]))
    assert adaptive_radius(0.95, 0.9, SIGMA) == pytest.approx(SIGMA * (norm.ppf(0.95) - norm.ppf(1 / 1.8)))
    assert adaptive_radius(1 / 1.2, 0.6, SIGMA) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("w", [0.6, 0.8])
def test_certificates_sound_at_stated_rate_and_tight(w):
    # x0 = 0.6: p^r_1 = Phi(1.2) ~ 0.885 > 1/(2w). With the adversarial g, h's decision boundary along -e_0 lies at
    # exactly R_true = sigma (PhiInv(p) - PhiInv(1/(2w))) (module docstring), so every issued radius must be
    # <= R_true except with probability alpha, and h must flip just beyond R_true (the formula is not loose).
    x = torch.zeros(3)
    x[0] = 0.6
    p_true = norm.cdf(0.6 / SIGMA)
    r_true = SIGMA * (norm.ppf(p_true) - norm.ppf(1 / (2 * w)))
    assert exact_h(0.6 - r_true + 1e-6, w) == 1 and exact_h(0.6 - r_true - 1e-3, w) == 0
    g = AdaptiveSmoothing(NoiseSampler(Linear2(), SIGMA, batch_size=500))
    g.attach_standard(Adversary(), w)
    reps, alpha, failures, issued = 300, 0.05, 0, 0
    for s in range(reps):
        cert = g.certify(x, 20, 500, alpha, torch.Generator().manual_seed(s))
        if cert.prediction == ABSTAIN:
            continue
        issued += 1
        assert cert.prediction == 1
        assert cert.radius == pytest.approx(adaptive_radius(cert.pA_lower, w, SIGMA))
        if cert.radius > r_true or exact_h(0.6 - cert.radius, w) != 1:
            failures += 1
    assert issued > reps // 2
    assert failures <= int(binom.ppf(1 - 1e-6, reps, alpha)), failures


def test_mixed_prediction_follows_the_standard_model_where_the_robust_one_is_unsure():
    x = torch.zeros(3)  # p^r = (1/2, 1/2): r is unsure, g decides; nothing is certified for w < 1
    g = AdaptiveSmoothing(NoiseSampler(Linear2(), SIGMA, batch_size=500))
    g.attach_standard(Adversary(), 0.7)
    cert = g.certify(x, 20, 1000, 0.01, torch.Generator().manual_seed(0))
    assert cert.prediction == ABSTAIN and cert.mixed_predict == 0
    with pytest.raises(CertkitError, match="mixing-weight"):
        g.attach_standard(Adversary(), 0.5)


def test_cli_adaptive_end_to_end_and_errors(cli, tmp_path):
    out = tmp_path / "a.tsv"
    r = cli("certify", "--method", "adaptive", "--standard-model", "bundled", "--mixing-weight", "0.8",
            "--max-inputs", "6", "--n", "300", "--n0", "20", "--out", out, "--quiet")
    assert r.exit_code == 0, r.output
    assert "mixed classifier clean accuracy (empirical, no certificate)" in r.output
    lines = out.read_text().splitlines()
    assert lines[0].split("\t")[-1] == "mixed_predict" and len(lines) == 7
    summary = json.loads((tmp_path / "a.summary.json").read_text())
    assert summary["standard_model"]["mixing_weight"] == 0.8 and "mixed_accuracy_empirical" in summary
    # the same seed gives Gaussian smoothing the same noise, so the same pA_lower: where both certify,
    # R_adaptive = R_gaussian - sigma PhiInv(1 / (2w)) exactly
    r = cli("certify", "--max-inputs", "6", "--n", "300", "--n0", "20", "--out", tmp_path / "g.tsv", "--quiet")
    assert r.exit_code == 0, r.output
    sigma = summary["sigma"]
    gauss = [row.split("\t") for row in (tmp_path / "g.tsv").read_text().splitlines()[1:]]
    both = 0
    for a, b in zip((row.split("\t") for row in lines[1:]), gauss):
        assert a[0] == b[0]
        if int(a[2]) != ABSTAIN:
            both += 1
            assert int(a[2]) == int(b[2])
            assert float(a[3]) == pytest.approx(float(b[3]) - sigma * norm.ppf(1 / 1.6), abs=1e-9)
    assert both >= 3
    assert_clean_error(cli("certify", "--method", "adaptive", "--out", tmp_path / "b.tsv"), "--standard-model")
    assert_clean_error(cli("certify", "--method", "adaptive", "--standard-model", "bundled", "--mixing-weight", "0.4",
                           "--out", tmp_path / "b.tsv"), "(0.5, 1]")
    assert_clean_error(cli("certify", "--mixing-weight", "0.7", "--out", tmp_path / "b.tsv"), "adaptive")


def test_a_mixing_network_with_a_floor_above_half_keeps_the_floors_certificate():
    # models/mixing.py: 2 w p_y - 1 is increasing in w, so any w(x') >= floor keeps the fixed-weight radius at the
    # floor. Random network weights (w(x) varies with x), adversarial g; check h with the network's OWN weight at the
    # attacked point x - R e_0 for every issued certificate.
    from certkit.models.mixing import MixingNetwork

    torch.manual_seed(3)
    net = MixingNetwork(2, hidden=8, floor=0.6)
    nn.init.normal_(net.net[0].weight, std=3.0)
    x = torch.zeros(3)
    x[0] = 0.6
    g = AdaptiveSmoothing(NoiseSampler(Linear2(), SIGMA, batch_size=500))
    g.attach_standard(Adversary(), mixing=net)
    p_gs = torch.softmax(torch.tensor([[30.0, -30.0]]), 1)

    def h_at(x0):
        p1 = norm.cdf(x0 / SIGMA)
        with torch.no_grad():
            w = float(net(p_gs, torch.softmax(torch.tensor([[-x0, x0]], dtype=torch.float32), 1))[0])
        assert 0.6 <= w <= 1
        return int(((1 - w) * p_gs[0].double().numpy() + w * np.array([1 - p1, p1])).argmax())

    reps, alpha, failures = 200, 0.05, 0
    for s in range(reps):
        cert = g.certify(x, 20, 500, alpha, torch.Generator().manual_seed(s))
        if cert.prediction != ABSTAIN:
            assert cert.radius == pytest.approx(adaptive_radius(cert.pA_lower, 0.6, SIGMA))
            failures += h_at(0.6 - cert.radius) != 1
    assert failures <= int(binom.ppf(1 - 1e-6, reps, alpha)), failures
    low = AdaptiveSmoothing(NoiseSampler(Linear2(), SIGMA, batch_size=500))
    low.attach_standard(Adversary(), mixing=MixingNetwork(2, floor=0.3))
    cert = low.certify(x, 20, 500, alpha, torch.Generator().manual_seed(0))
    assert cert.prediction == ABSTAIN and cert.mixed_predict in (0, 1)  # empirical only
    with pytest.raises(CertkitError, match="either"):
        low.attach_standard(Adversary(), 0.8, MixingNetwork(2))


def test_cli_mixing_network_train_and_certify(cli, tmp_path):
    nat = tmp_path / "nat.pt"
    assert cli("train", "--method", "natural", "--epochs", "3", "--out", nat, "--quiet").exit_code == 0
    for floor in ("0.6", "0.0"):
        mix = tmp_path / f"mix{floor}.pt"
        r = cli("train", "--method", "mixing", "--standard-model", nat, "--classifier", "bundled", "--sigma", "0.25",
                "--eps-l2", "0.3", "--attack-steps", "2", "--epochs", "1", "--batch", "512", "--mixing-floor", floor,
                "--out", mix,
                "--quiet")
        assert r.exit_code == 0, r.output
        r = cli("certify", "--method", "adaptive", "--standard-model", nat, "--mixing-network", mix, "--max-inputs",
                "5", "--n", "200", "--n0", "20", "--out", tmp_path / f"m{floor}.tsv", "--quiet")
        assert r.exit_code == 0, r.output
        summary = json.loads((tmp_path / f"m{floor}.summary.json").read_text())
        assert summary["standard_model"]["certified_at_floor"] == (floor == "0.6")
    rows_net = [r.split("\t")[:5] for r in (tmp_path / "m0.6.tsv").read_text().splitlines()]
    r = cli("certify", "--method", "adaptive", "--standard-model", nat, "--mixing-weight", "0.6", "--max-inputs", "5",
            "--n", "200", "--n0", "20", "--out", tmp_path / "w.tsv", "--quiet")
    assert r.exit_code == 0, r.output
    assert rows_net == [r.split("\t")[:5] for r in (tmp_path / "w.tsv").read_text().splitlines()]
    assert all(r.split("\t")[2] == str(ABSTAIN) for r in (tmp_path / "m0.0.tsv").read_text().splitlines()[1:])
    assert_clean_error(cli("certify", "--method", "adaptive", "--standard-model", nat, "--mixing-weight", "0.7",
                           "--mixing-network", tmp_path / "mix0.6.pt", "--out", tmp_path / "e.tsv"), "one of")
    assert_clean_error(cli("certify", "--method", "adaptive", "--standard-model", nat, "--mixing-network", nat,
                           "--out", tmp_path / "e.tsv"), "not a certkit mixing network")
    assert_clean_error(cli("train", "--method", "mixing", "--classifier", nat, "--out", tmp_path / "e.pt"),
                       "--standard-model")
