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

from conftest import assert_certify_rows, assert_clean_error


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
    assert torch.allclose(simplex_map("softmax", 2.0, z), torch.softmax(2 * z.double(), -1))


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
        def f(s, name=name, t=t, c=c):
            z = torch.tensor([[2 * (u0 + sigma * s), 0.0, 0.5 - 2 * (u0 + sigma * s)]])
            return float(simplex_map(name, t, z)[0, c]) * norm.pdf(s)
        return integrate.quad(f, -9, 9, limit=200)[0]
    return np.array([comp(c) for c in range(3)])


@pytest.mark.parametrize("name,t", [("softmax", 1.0), ("softmax", 4.0), ("sparsemax", 4.0)])
def test_lvm_bounds_hold_at_stated_rate(name, t):
    """For one fixed smoothed classifier G_(S,t): P(pA_lower > H_A or pB_upper < max_c!=A H_c) <= alpha."""
    sigma, alpha, reps, n = 0.5, 0.1, 200, 400
    g = LVMSmoothing(NoiseSampler(Projection3(), sigma, batch_size=n), name, t)
    H = _smoothed_soft(name, t, 0.3, sigma)
    failures = 0
    for s in range(reps):
        g.certify(torch.tensor([0.3, 0.0]), 50, n, alpha, torch.Generator().manual_seed(s))
        sel = g.last_selection
        A = sel["class"]
        if sel["pA_lower"] > H[A] or sel["pB_upper"] < np.delete(H, A).max():
            failures += 1
    assert failures <= _max_failures(reps, alpha), failures


class CorruptAfter(nn.Module):
    """Returns the true logits for the first ``n0`` rows it ever sees, then reversed logits (as if the
    certification samples were adversarial): the class chosen on the n0 selection samples must not change."""

    def __init__(self, base, n0, corrupt):
        super().__init__()
        self.base, self.n0, self.corrupt, self.seen = base, n0, corrupt, 0

    def forward(self, x):
        out = self.base(x)
        if self.corrupt and self.seen >= self.n0:
            out = out.flip(-1) * 3
        self.seen += x.shape[0]
        return out


def test_lvm_class_selection_never_sees_the_certification_samples():
    picks = []
    for corrupt in (False, True):
        g = LVMSmoothing(NoiseSampler(CorruptAfter(Projection3(), 50, corrupt), 0.5, batch_size=50), "softmax", 4.0)
        g.certify(torch.tensor([0.3, 0.0]), 50, 500, 0.01, torch.Generator().manual_seed(1))
        picks.append(g.last_selection["class"])
    assert picks[0] == picks[1]


class Funnel(nn.Module):
    """A model built so that per-input selection fails: logits (0, -D(s)), D = 0.01 relu(s) - 20 relu(-s), s = x_0.
    Class 0 barely wins for s > 0, class 1 wins by far for s < 0: soft maps at low temperature see almost no margin
    on the right, a hard vote sees the sign."""

    def forward(self, x):
        s = x[:, 0]
        d = 0.01 * torch.relu(s) - 20 * torch.relu(-s)
        return torch.stack([torch.zeros_like(s), -d], 1)


def test_one_fixed_lvm_classifier_never_certifies_two_classes_in_one_ball():
    """Regression test (one fixed classifier): x at s = 0.5 and x' at s = 0.075 (0.425 apart), sigma 0.25. When (map, t)
    was picked per input, x was certified as class 0 beyond 0.425 and x' as class 1 in 25 of 30 repetitions; for a
    fixed smoothed classifier that has probability <= 2 alpha per repetition."""
    sigma, alpha = 0.25, 0.001
    x, x2 = torch.tensor([0.5]), torch.tensor([0.075])
    g = LVMSmoothing(NoiseSampler(Funnel(), sigma, batch_size=2000))
    held_out = torch.linspace(-1, 1, 21)[:, None]
    chosen = g.calibrate(held_out, (held_out[:, 0] < 0).long(), 200, 10_000, alpha, torch.Generator().manual_seed(0))
    assert chosen["map"] in ("softmax", "sparsemax") and g.t == chosen["t"]
    conflicts = certified = 0
    for s in range(30):
        c1 = g.certify(x, 100, 10_000, alpha, torch.Generator().manual_seed(2 * s))
        c2 = g.certify(x2, 100, 10_000, alpha, torch.Generator().manual_seed(2 * s + 1))
        certified += c1.prediction != ABSTAIN
        if c1.prediction != ABSTAIN and c2.prediction not in (ABSTAIN, c1.prediction) and c1.radius > 0.425:
            conflicts += 1
    assert certified > 0 and conflicts == 0


def test_lvm_two_classes_use_one_bound_at_alpha_and_sparsemax_is_float64():
    """K = 2: pA_low at alpha (not alpha/2) and pB_up = 1 - pA_low; sparsemax at t = 1e7 on float32 logits (which
    gave an index error in float32) is a valid distribution."""
    from certkit.certify.smoothing.lvm import lvm_bounds

    mean, var = np.array([0.8, 0.2]), np.array([0.05, 0.05])
    pA, pB = lvm_bounds(mean, var, 0, 1000, 0.01)
    assert pA == pytest.approx(0.8 - empirical_bernstein_shift(0.05, 1000, 0.01)) and pB == pytest.approx(1 - pA)
    pA3, pB3 = lvm_bounds(np.array([0.8, 0.15, 0.05]), np.array([0.05, 0.05, 0.01]), 0, 1000, 0.01)
    assert pA3 == pytest.approx(0.8 - empirical_bernstein_shift(0.05, 1000, 0.01 / 3)) and pB3 <= 1 - pA3
    z = torch.randn(100, 10, generator=torch.Generator().manual_seed(0))
    h = simplex_map("sparsemax", 1e7, z)
    assert h.dtype == torch.float64 and torch.allclose(h.sum(-1), torch.ones(100, dtype=torch.float64))
    assert (h >= 0).all() and torch.equal(h.argmax(-1), z.argmax(-1))


def test_cli_compare_dual_and_errors(cli, tmp_path):
    r = cli("certify", "--method", "gaussian,lvm", "--n0", 20, "--n", 300, "--max", 4, "--quiet",
            "--calibration-size", 20, "--calibration-noise", 100, "--out", tmp_path / "c.tsv", "--plot",
            tmp_path / "c.png")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "c_gaussian.tsv").exists() and (tmp_path / "c_lvm.tsv").exists()
    assert "LVM-RS smoothing" in r.output and (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    import json
    s = json.loads((tmp_path / "c_lvm.summary.json").read_text())
    assert s["method"] == "lvm" and "once per model" in s["procedure"]
    assert s["calibration"]["split"] == "train" and s["calibration"]["map"] in ("softmax", "sparsemax")
    assert_clean_error(cli("certify", "--method", "lvm", "--split", "train", "--n", 100, "--max", 2, "--skip", 1346,
                           "--calibration-size", 20, "--out", tmp_path / "overlap.tsv"), "would also be certified")
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
    assert_certify_rows(tmp_path / "d.tsv", 3, "dual")
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
    ck = torch.load(tmp_path / "drs.pt", weights_only=True)
    assert ck["metadata"]["method"] == "dual" and ck["metadata"]["recipe"]["init_from"] == str(tmp_path / "ref.pth.tar")
    r = cli("certify", "--method", "dual", "--model", tmp_path / "drs.pt", "--dataset", "cifar10", cifar_dir,
            "--n0", 4, "--n", 16, "--batch", 16, "--max", 1, "--quiet", "--out", tmp_path / "d.tsv")
    assert r.exit_code == 0, r.output
    assert_certify_rows(tmp_path / "d.tsv", 1, "dual")
