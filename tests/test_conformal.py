"""RSCP+ conformal prediction: exact order statistic, Monte-Carlo corrections, the all-classes rule, and coverage
at the stated level on clean and worst-case shifted inputs of a problem with a known worst case."""
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from certkit.certify.conformal import (
    SmoothedScorer,
    base_scores,
    conformal_quantile,
    hoeffding_correction,
    rscp_plus_sets,
)
from certkit.certify.stats import empirical_bernstein_shift

from conftest import assert_clean_error


def test_exact_order_statistic_not_interpolated():
    s = np.arange(1, 11, dtype=float)[::-1]                   # unsorted input
    assert conformal_quantile(s, 0.8) == 9.0                   # ceil(11 * 0.8) = 9th smallest
    assert np.quantile(s, 0.8) != 9.0                          # an interpolating quantile would differ
    assert conformal_quantile(s, 0.95) == math.inf             # ceil(11 * 0.95) = 11 > n
    assert conformal_quantile(s, 0.5) == 6.0                   # ceil(5.5) = 6


def test_scores_hand_computed():
    p = torch.tensor([[0.5, 0.3, 0.2]])
    assert torch.allclose(base_scores(p, "hps"), torch.tensor([[0.5, 0.7, 0.8]]))
    assert torch.allclose(base_scores(p, "aps", torch.tensor([0.5])), torch.tensor([[0.25, 0.65, 0.9]]))


def test_monte_carlo_corrections_and_configured_beta():
    assert hoeffding_correction(256, 0.001) == pytest.approx(math.sqrt(math.log(1000) / 512))
    mean = torch.tensor([[0.30, 0.60]], dtype=torch.float64)
    var = torch.tensor([[0.01, 0.01]], dtype=torch.float64)
    # hand: class k is in the set iff PhiInv(max(mean - b_B, 0)) - eps/sigma <= PhiInv(tau + b_H)
    from scipy.stats import norm
    for beta in (0.001, 0.05):
        b_B = empirical_bernstein_shift(0.01, 256, beta)
        level = 0.3 + hoeffding_correction(256, beta)
        expected = [norm.ppf(max(m - b_B, 0)) - 0.1 / 0.25 <= norm.ppf(level) for m in (0.30, 0.60)]
        got = rscp_plus_sets(mean, var, 0.3, 256, beta, 0.1, 0.25)[0].tolist()
        assert got == expected, beta
    assert rscp_plus_sets(mean, var, 0.3, 256, 0.001, 0.1, 0.25)[0].tolist() != \
        rscp_plus_sets(mean, var, 0.3, 256, 0.05, 0.1, 0.25)[0].tolist()  # beta matters on the test side


def test_all_classes_when_threshold_reaches_one():
    mean = torch.tensor([[0.99, 0.999, 0.5]], dtype=torch.float64)
    sets = rscp_plus_sets(mean, torch.zeros_like(mean), 0.95, 256, 0.001, 0.0, 0.25)  # 0.95 + b_H >= 1
    assert sets.all()


class Proj2(nn.Module):
    """Logits (k t, -k t) of t = x_0: class 0 confident for t > 0."""

    def forward(self, x):
        t = 8.0 * x[:, 0]
        return torch.stack([t, -t], 1)


def test_rscp_plus_covers_clean_and_worst_case_shifted_inputs():
    """HPS score of class 0 decreases in t (worst shift: t - eps), of class 1 increases (worst: t + eps); every
    other direction leaves the score unchanged. Coverage per repetition, R independent repetitions."""
    alpha, beta, eps, sigma, n_mc, reps, n = 0.1, 0.01, 0.1, 0.25, 1024, 30, 400
    gen = torch.Generator().manual_seed(0)
    scorer = SmoothedScorer(Proj2(), sigma, n_mc, "hps", batch=200_000)
    cov_clean, cov_shift, sizes = [], [], []
    for _ in range(reps):
        t = torch.rand(n, generator=gen) * 2 - 1
        y = (torch.rand(n, generator=gen) > torch.sigmoid(20 * t)).long()   # mostly class 0 for t > 0
        x = torch.stack([t, torch.zeros(n)], 1)
        u = torch.zeros(n)
        m, v = scorer(x, u, gen)
        cal, test = slice(0, n // 2), slice(n // 2, None)
        tau = conformal_quantile(m[cal].gather(1, y[cal, None]).numpy(), 1 - alpha + 2 * beta)
        worst = x[test].clone()
        worst[:, 0] += torch.where(y[test] == 0, -eps, eps)
        m_s, v_s = scorer(worst, u[test], gen)
        s_c = rscp_plus_sets(m[test], v[test], tau, n_mc, beta, eps, sigma)
        s_s = rscp_plus_sets(m_s, v_s, tau, n_mc, beta, eps, sigma)
        idx = torch.arange(n - n // 2)
        cov_clean.append(float(s_c[idx, y[test]].float().mean()))
        cov_shift.append(float(s_s[idx, y[test]].float().mean()))
        sizes.append(float(s_c.float().sum(1).mean()))
    for cov in (cov_clean, cov_shift):
        c = np.array(cov)
        assert c.mean() >= 1 - alpha - 4 * c.std(ddof=1) / math.sqrt(reps), c.mean()
    assert np.mean(sizes) < 1.9  # the sets are informative (not all classes), so the test can fail


def test_cli_conformal(cli, tmp_path):
    summ = tmp_path / "c.json"
    r = cli("conformal", "--n-mc", 32, "--splits", 3, "--max", 120, "--ptt", "--holdout", 40, "--eps-l2", 0.1,
            "--attack-steps", 3, "--quiet", "--out", tmp_path / "c.tsv", "--summary-json", summ, "--plot",
            tmp_path / "c.png")
    assert r.exit_code == 0, r.output
    s = json.loads(summ.read_text())
    for key in ("alpha", "beta", "eps_l2", "sigma", "n_mc", "score", "ptt", "coverage_clean", "coverage_attacked",
                "mean_set_size", "splits"):
        assert key in s, key
    assert s["ptt"] is True and s["n_pool"] == 80 and (tmp_path / "c.png").exists()
    assert_clean_error(cli("conformal", "--beta", 0.06, "--out", tmp_path / "d.tsv"), "beta")
    assert_clean_error(cli("conformal", "--model", tmp_path / "none.pt"), "not found")


def test_rct_loss_hand_computed():
    from scipy.stats import norm

    from certkit.train.methods.rct import rct_loss

    p = torch.tensor([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.5, 0.4, 0.1], [0.2, 0.7, 0.1]])
    y = torch.tensor([0, 0, 1, 1])
    # half 1 = rows 0, 1: true-class conformity PhiInv(0.7), PhiInv(0.6); alpha = 0.5 quantile = their mean
    tau = (norm.ppf(0.7) + norm.ppf(0.6)) / 2 - 0.1 / 0.25
    soft = 1 / (1 + np.exp(-(norm.ppf(p[2:].numpy()) - tau) / 0.1))
    l_class = np.mean(1 - soft[[0, 1], [1, 1]])
    l_size = np.mean(np.maximum(soft.sum(1) - 1, 0))
    expected = math.log(l_class + 1.0 * l_size + 1e-8)
    assert float(rct_loss(p, y, 0.5, 0.1, 0.25)) == pytest.approx(expected, rel=1e-5)


def test_cli_rct_trains_the_final_layer_only(cli, tmp_path):
    from certkit.models import bundled_checkpoint_path
    base = str(bundled_checkpoint_path())
    r = cli("train", "--method", "rct", "--init-from", base, "--sigma", 0.25, "--eps-l2", 0.125, "--epochs", 1,
            "--out", tmp_path / "r.pt", "--quiet")
    assert r.exit_code == 0, r.output
    a = torch.load(base, weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "r.pt", weights_only=True)
    assert b["metadata"]["method"] == "rct"
    changed = [k for k in a if not torch.equal(a[k], b["state_dict"][k])]
    assert changed and all(k.startswith("5.") for k in changed), changed  # the last Linear of the MLP
    assert_clean_error(cli("train", "--method", "rct", "--out", tmp_path / "x.pt"), "--init-from")
    assert_clean_error(cli("train", "--method", "rct", "--init-from", base, "--eps", 0.1, "--out", tmp_path / "y.pt"),
                       "--eps-l2")


def test_cli_conformal_never_overwrites_and_resumes_split_by_split(cli, tmp_path):
    """Results go through the shared ResultWriter: an existing file is refused without --overwrite, --resume keeps
    the rows and refuses other settings, and the rows equal an uninterrupted run's."""
    base = ["conformal", "--no-ptt", "--n-mc", 16, "--max", 60, "--eps-l2", 0.1, "--attack-steps", 2, "--quiet"]
    r = cli(*base, "--splits", 4, "--out", tmp_path / "full.tsv")
    assert r.exit_code == 0, r.output
    assert_clean_error(cli(*base, "--splits", 4, "--out", tmp_path / "full.tsv"), "exists")
    r = cli(*base, "--splits", 2, "--out", tmp_path / "part.tsv")
    assert r.exit_code == 0, r.output
    r = cli(*base, "--splits", 4, "--out", tmp_path / "part.tsv", "--resume")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "part.tsv").read_text() == (tmp_path / "full.tsv").read_text()
    assert_clean_error(cli(*base[:-5], "--max", 60, "--eps-l2", 0.2, "--attack-steps", 2, "--quiet", "--splits", 4,
                           "--out", tmp_path / "part.tsv", "--resume"), "different settings")
