"""Dual RS and LVM-RS: radius formulas against hand computation, validity on problems with closed-form (or
quadrature) answers at the stated rate, selection that never sees the certification samples, CLI."""
import math

import numpy as np
import pytest
import torch
from scipy import integrate
from scipy.stats import beta, binom, norm
from torch import nn

from certkit.certify import ABSTAIN, NoiseSampler
from certkit.certify.smoothing.dual import DualSmoothing, dual_radius
from certkit.certify.smoothing.lvm import LVMSmoothing, lvm_radius, simplex_map, sparsemax
from certkit.certify.stats import empirical_bernstein_shift
from conftest import assert_clean_error


def _max_failures(reps, alpha):
    return int(binom.ppf(1 - 1e-6, reps, alpha))


class FixedCounts:
    sigma = 0.5

    def __init__(self, *counts):
        self.queue = [torch.tensor(c) for c in counts]

    def counts(self, x, num, generator):
        return self.queue.pop(0)


def test_dual_radius_hand_computed_and_not_the_reference_formula():
    g = DualSmoothing(FixedCounts([[30, 70], [40, 60]], [[100, 900], [400, 600]]))
    cert = g.certify(torch.zeros(4), 100, 1000, 0.002, None)
    p_l, p_r = beta.ppf(0.001, 900, 101), beta.ppf(0.001, 600, 401)  # alpha/2 per branch
    assert g.last_bounds == pytest.approx((p_l, p_r), rel=1e-9)
    expected = 0.5 / math.sqrt(2) * (norm.ppf(p_l) + norm.ppf(p_r))
    assert cert.prediction == 1 and cert.radius == pytest.approx(expected, rel=1e-9)
    # the reference code's sqrt(R_l^2 + R_r^2) (negative terms clipped) is larger unless R_l = R_r: not used
    R_l, R_r = 0.5 * norm.ppf(p_l), 0.5 * norm.ppf(p_r)
    assert math.sqrt(max(R_l, 0) ** 2 + max(R_r, 0) ** 2) > cert.radius
    # one branch below 1/2 but a positive sum still certifies; a non-positive sum abstains
    assert dual_radius(0.9, 0.4, 1.0) == pytest.approx((norm.ppf(0.9) + norm.ppf(0.4)) / math.sqrt(2))
    assert dual_radius(0.55, 0.4, 1.0) < 0
    g = DualSmoothing(FixedCounts([[60, 40], [60, 40]], [[550, 450], [420, 580]]))
    assert g.certify(torch.zeros(4), 100, 1000, 0.002, None).prediction == ABSTAIN


def test_lvm_formulas_hand_computed():
    r_phi, r_lip = lvm_radius(0.8, 0.1, 0.5)
    assert r_phi == pytest.approx(0.25 * (norm.ppf(0.8) - norm.ppf(0.1)))
    assert r_lip == pytest.approx(0.5 * math.sqrt(math.pi / 2) * 0.7)
    shift = empirical_bernstein_shift(0.04, 100, 0.01)
    assert shift == pytest.approx(math.sqrt(2 * 0.04 * math.log(200) / 100) + 7 * math.log(200) / (3 * 99))
    z = torch.tensor([[1.0, 0.5, -1.0], [0.2, 0.2, 0.2]])
    assert torch.allclose(sparsemax(z), torch.tensor([[0.75, 0.25, 0.0], [1 / 3, 1 / 3, 1 / 3]]))
    assert torch.allclose(simplex_map("softmax", 2.0, z), torch.softmax(2 * z, -1))


class TwoLinearBranches(nn.Module):
    """Left branch sees coordinates 0, 2 and right 1, 3 (the vector checkerboard); f = [w.x + b > 0]."""

    def __init__(self, w_l, b_l, w_r, b_r):
        super().__init__()
        self.w_l, self.b_l = torch.tensor(w_l), b_l
        self.w_r, self.b_r = torch.tensor(w_r), b_r

    def forward(self, z):
        mask = torch.tensor([1.0, 0.0, 1.0, 0.0])
        s_l = (z * mask) @ self.w_l + self.b_l
        s_r = (z * (1 - mask)) @ self.w_r + self.b_r
        return torch.stack([torch.stack([-s_l, s_l], 1), torch.stack([-s_r, s_r], 1)], 1)


def test_dual_bounds_hold_at_stated_rate():
    sigma, alpha, reps, n = 0.5, 0.1, 800, 200
    w_l, w_r = [3.0, 0.0, 4.0, 0.0], [0.0, 1.0, 0.0, 0.0]
    b_l, b_r = 0.35 * 5, 0.2 * 1.0              # distances 0.35 and 0.2 to each branch's boundary
    p_l, p_r = norm.cdf(0.35 / sigma), norm.cdf(0.2 / sigma)
    g = DualSmoothing(NoiseSampler(TwoLinearBranches(w_l, b_l, w_r, b_r), sigma, batch_size=n))
    failures = 0
    for s in range(reps):
        cert = g.certify(torch.zeros(4), 20, n, alpha, torch.Generator().manual_seed(s))
        lo_l, lo_r = g.last_bounds
        if lo_l > p_l or lo_r > p_r:
            failures += 1
        elif cert.prediction != ABSTAIN:
            assert cert.prediction == 1
            assert cert.radius <= dual_radius(p_l, p_r, sigma) + 1e-9
    assert failures <= _max_failures(reps, alpha), failures


class Projection3(nn.Module):
    """Logits linear in the projection u = x_0: z(u) = (2u, 0, 0.5 - 2u)."""

    def forward(self, x):
        u = x[:, 0]
        return torch.stack([2 * u, torch.zeros_like(u), 0.5 - 2 * u], 1)


def _smoothed_soft(name, t, u0, sigma):
    """H(x) = E_s[S(t z(u0 + sigma s))] by quadrature over the 1-D Gaussian."""
    def comp(c):
        f = lambda s: float(simplex_map(name, t, torch.tensor([[2 * (u0 + sigma * s), 0.0, 0.5 - 2 * (u0 + sigma * s)]]))[0, c]) * norm.pdf(s)
        return integrate.quad(f, -9, 9, limit=200)[0]
    return np.array([comp(c) for c in range(3)])


def test_lvm_bounds_hold_at_stated_rate():
    sigma, alpha, reps, n = 0.5, 0.1, 300, 400
    g = LVMSmoothing(NoiseSampler(Projection3(), sigma, batch_size=n), temperatures=(1.0, 4.0))
    cache, failures = {}, 0
    for s in range(reps):
        g.certify(torch.tensor([0.3, 0.0]), 50, n, alpha, torch.Generator().manual_seed(s))
        sel = g.last_selection
        key = (sel["map"], sel["t"])
        if key not in cache:
            cache[key] = _smoothed_soft(sel["map"], sel["t"], 0.3, sigma)
        H = cache[key]
        A = sel["class"]
        if sel["pA_lower"] > H[A] or sel["pB_upper"] < np.delete(H, A).max():
            failures += 1
    assert failures <= _max_failures(reps, alpha), failures


class CorruptAfter(nn.Module):
    """Returns the true logits for the first ``n0`` rows it ever sees, then reversed logits (as if the
    certification samples were adversarial): the selection must not change."""

    def __init__(self, base, n0, corrupt):
        super().__init__()
        self.base, self.n0, self.corrupt, self.seen = base, n0, corrupt, 0

    def forward(self, x):
        out = self.base(x)
        if self.corrupt and self.seen >= self.n0:
            out = out.flip(-1) * 3
        self.seen += x.shape[0]
        return out


def test_lvm_selection_never_sees_the_certification_samples():
    picks = []
    for corrupt in (False, True):
        model = CorruptAfter(Projection3(), 50, corrupt)
        g = LVMSmoothing(NoiseSampler(model, 0.5, batch_size=50))
        g.certify(torch.tensor([0.3, 0.0]), 50, 500, 0.01, torch.Generator().manual_seed(1))
        sel = g.last_selection
        picks.append((sel["map"], sel["t"], sel["class"], sel["predicted_radius"]))
    assert picks[0] == picks[1]


def test_cli_compare_dual_and_errors(cli, tmp_path):
    r = cli("certify", "--method", "gaussian,lvm", "--n0", 20, "--n", 300, "--max", 4, "--quiet",
            "--out", tmp_path / "c.tsv", "--plot", tmp_path / "c.png")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "c_gaussian.tsv").exists() and (tmp_path / "c_lvm.tsv").exists()
    assert "LVM-RS smoothing" in r.output and (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    import json
    s = json.loads((tmp_path / "c_lvm.summary.json").read_text())
    assert s["method"] == "lvm" and "selection samples" in s["procedure"]
    base = tmp_path / "base.pt"
    assert cli("train", "--method", "gaussian", "--sigma", 0.25, "--hidden", "32", "--epochs", 2, "--out", base,
               "--quiet").exit_code == 0
    drs = tmp_path / "drs.pt"
    r = cli("train", "--method", "dual", "--init-from", base, "--sigma", 0.25, "--epochs", 2, "--consistency", 15,
            "--out", drs, "--quiet")
    assert r.exit_code == 0, r.output
    r = cli("certify", "--method", "dual", "--model", drs, "--n0", 20, "--n", 300, "--max", 3, "--quiet",
            "--out", tmp_path / "d.tsv")
    assert r.exit_code == 0 and "Dual RS smoothing" in r.output, r.output
    assert_clean_error(cli("certify", "--method", "dual", "--max", 1, "--out", tmp_path / "e.tsv"), "two branches")
    assert_clean_error(cli("certify", "--method", "lvm", "--model", drs, "--max", 1, "--out", tmp_path / "f.tsv"),
                       "--method dual")
    assert_clean_error(cli("certify", "--method", "median", "--out", tmp_path / "g.tsv"), "median")
    assert_clean_error(cli("train", "--method", "dual", "--out", tmp_path / "h.pt"), "--init-from")


def test_dual_from_reference_checkpoint(cli, tmp_path, cifar_dir):
    """Dual RS branches can start from a published Gaussian-smoothing checkpoint (reference format)."""
    from certkit.models import NormalizeLayer, build_model
    from certkit.models.zoo import CIFAR10_MEAN, CIFAR10_STD

    ref = nn.Sequential(NormalizeLayer(CIFAR10_MEAN, CIFAR10_STD), build_model("cifar_resnet20", (3, 32, 32), 10))
    torch.save({"arch": "cifar_resnet20", "state_dict": ref.state_dict()}, tmp_path / "ref.pth.tar")
    r = cli("train", "--method", "dual", "--init-from", tmp_path / "ref.pth.tar", "--dataset", "cifar10", cifar_dir,
            "--sigma", 0.25, "--epochs", 1, "--batch", 10, "--out", tmp_path / "drs.pt", "--quiet")
    assert r.exit_code == 0, r.output
    r = cli("certify", "--method", "dual", "--model", tmp_path / "drs.pt", "--dataset", "cifar10", cifar_dir,
            "--n0", 4, "--n", 16, "--batch", 16, "--max", 1, "--quiet", "--out", tmp_path / "d.tsv")
    assert r.exit_code == 0, r.output
