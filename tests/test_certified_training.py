"""Certified training: schedules against their closed form, IBP init, regularizers on hand-made bounds,
robust-loss decrease, exact resume, agreement with `certkit verify`, and data-parallel training."""
import csv
import math
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from certkit.train import TrainConfig, train
from certkit.train.init import ibp_init
from certkit.train.losses import robust_cross_entropy
from certkit.train.regularizers import relu_balance_regularizer, tightness_regularizer
from certkit.train.schedules import EpsSchedule, beta_at, kappa_at


def test_smoothed_schedule_closed_form():
    s = EpsSchedule(0.3, start=2, length=5, batches_per_epoch=10, kind="smoothed")
    T0, T1, Tm = 10, 60, 10 + math.floor(50 * 0.25)
    t = (Tm - T0) ** 3
    a = 0.3 / (4 * t * (T1 - Tm) + (Tm - T0) * t)
    eps_m = a * (Tm - T0) ** 4
    assert (s.T0, s.T1, s.Tm) == (T0, T1, Tm)
    assert s(0) == 0 and s(10) == 0
    assert s(16) == pytest.approx(a * 6 ** 4, rel=1e-12)
    assert s(22) == pytest.approx(eps_m, rel=1e-12)
    assert s(40) == pytest.approx(eps_m + (0.3 - eps_m) * 18 / 38, rel=1e-12)
    assert s(60) == pytest.approx(0.3) and s(500) == 0.3
    # the polynomial and the linear piece meet with the same slope at Tm
    left = 4 * a * (Tm - T0) ** 3
    right = (0.3 - eps_m) / (T1 - Tm)
    assert left == pytest.approx(right, rel=1e-9)
    vals = [s(i) for i in range(0, 70)]
    assert all(b >= a_ for a_, b in zip(vals, vals[1:]))  # non-decreasing


def test_linear_schedule_and_kappa_beta():
    s = EpsSchedule(0.4, start=1, length=5, batches_per_epoch=10, kind="linear")
    assert s(0) == 0 and s(25) == pytest.approx(0.4 * 25 / 50) and s(50) == 0.4
    assert kappa_at(0.0, 0.4, 0.5) == 1 and kappa_at(0.2, 0.4, 0.5) == pytest.approx(0.75)
    assert kappa_at(0.4, 0.4, 0.0) == 0
    assert beta_at(0.1, 0.4, 0.0) == pytest.approx(0.75) and beta_at(0.4, 0.4, 1.0) == 1


def test_ibp_init_statistics():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 64, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64 * 6 * 6, 500), nn.ReLU(),
                        nn.Linear(500, 10))
    last = net[5].weight.detach().clone()
    names = ibp_init(net, torch.Generator().manual_seed(1))
    assert names == ["0", "3"]
    for layer, fan_in in ((net[0], 27), (net[3], 64 * 36)):
        std = math.sqrt(2 * math.pi) / fan_in
        assert float(layer.weight.detach().std()) == pytest.approx(std, rel=0.05)
        assert abs(float(layer.weight.detach().mean())) < 0.05 * std
    assert torch.equal(net[5].weight, last)


def test_regularizers_on_hand_made_bounds():
    l = torch.tensor([[-1.0, 1.0, -2.0, 3.0]])
    u = torch.tensor([[1.0, 2.0, -1.0, 4.0]])
    # Delta_1 = mean((u - l) / 2) = 0.625; Delta_0 = 0.5 -> ratio 0.8 > tau: no penalty
    assert float(tightness_regularizer(torch.tensor(0.5), [(l, u)])) == pytest.approx(0.0)
    # a second layer with Delta = 2: ratio 0.25 -> ReLU(0.5 - 0.25) / 0.5 = 0.5; mean over 2 layers = 0.25
    l2, u2 = torch.full((1, 3), -2.0), torch.full((1, 3), 2.0)
    assert float(tightness_regularizer(torch.tensor(0.5), [(l, u), (l2, u2)])) == pytest.approx(0.25)
    # centers (0, 1.5, -1.5, 3.5); r_m = 1.25 / 0.375 -> 0.3 -> 0.2; r_v = 7.28125 / 5.640625 -> 0.7747 -> 0
    assert float(relu_balance_regularizer([(l, u)])) == pytest.approx(0.2 / 0.5, rel=1e-6)


def test_robust_cross_entropy_formula():
    m = torch.tensor([[1.0, 2.0], [-0.5, 0.0]])
    expected = torch.log(1 + torch.exp(-m).sum(1)).mean()
    assert float(robust_cross_entropy(m)) == pytest.approx(float(expected), rel=1e-6)


def _robust_loss(path, eps=0.1):
    from certkit.datasets import load_dataset
    from certkit.models import load_model
    from certkit.verifiers import BoundedModule, linf_ball, margin_spec

    m = load_model(path)
    d = load_dataset("digits", split="train")
    bm = BoundedModule(m.module, (1, 8, 8))
    with torch.no_grad():
        lb, _ = bm.compute_bounds(linf_ball(d.x[:300], eps), margin_spec(d.y[:300], 10), "IBP", bound_upper=False)
    return float(robust_cross_entropy(lb))


def test_ibp_training_lowers_robust_loss_and_resumes_exactly(tmp_path):
    kw = dict(method="ibp", eps=0.1, arch="cnn_a", device="cpu", val_fraction=0.1,
              options=dict(schedule_start=1, schedule_length=1, kappa_final=0.0))
    train(TrainConfig(out=str(tmp_path / "e1.pt"), epochs=1, **kw), quiet=True)
    train(TrainConfig(out=str(tmp_path / "e4.pt"), epochs=4, **kw), quiet=True)
    assert _robust_loss(tmp_path / "e4.pt") < _robust_loss(tmp_path / "e1.pt")
    train(TrainConfig(out=str(tmp_path / "r.pt"), epochs=2, **kw), quiet=True)
    train(TrainConfig(out=str(tmp_path / "r.pt"), epochs=4, **kw), resume=True, quiet=True)
    a = torch.load(tmp_path / "e4.pt", weights_only=True)
    b = torch.load(tmp_path / "r.pt", weights_only=True)
    for k in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][k], b["state_dict"][k], rtol=0, atol=0)
    log_a = list(csv.DictReader(open(tmp_path / "e4.log.csv")))
    log_b = list(csv.DictReader(open(tmp_path / "r.log.csv")))
    assert [r["loss"] for r in log_a] == [r["loss"] for r in log_b]  # the resumed epochs repeat the same losses
    assert (tmp_path / "e4.curves.png").read_bytes()[:4] == b"\x89PNG"


def test_pure_robust_loss_skips_the_clean_graph_without_changing_training(tmp_path, monkeypatch):
    """At kappa = 0 the clean logits only report accuracy: building no graph for them gives the same weights."""
    from certkit.train.methods.ibp import IBPTraining

    kw = dict(method="ibp", eps=0.1, arch="cnn_a", device="cpu", val_fraction=0.1, epochs=3,
              options=dict(schedule_start=1, schedule_length=1, kappa_final=0.0))
    calls = []
    real = IBPTraining.has_batchnorm
    monkeypatch.setattr(IBPTraining, "has_batchnorm", staticmethod(lambda m: calls.append(1) or real(m)))
    train(TrainConfig(out=str(tmp_path / "fast.pt"), **kw), quiet=True)
    assert calls  # the kappa = 0 phase was reached
    monkeypatch.setattr(IBPTraining, "has_batchnorm", staticmethod(lambda m: True))  # forces the clean graph
    train(TrainConfig(out=str(tmp_path / "graph.pt"), **kw), quiet=True)
    a = torch.load(tmp_path / "fast.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "graph.pt", weights_only=True)["state_dict"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-7)


def test_crown_ibp_model_is_verified_as_logged_and_certifiable(tmp_path, cli):
    """Per-epoch verified accuracy (training) == `certkit verify` on the same data; `certify` takes the model."""
    from certkit.datasets import load_dataset
    from certkit.models import load_model
    from certkit.train.classifier import verified_metrics
    from certkit.verifiers import BoundedModule

    ck = tmp_path / "c.pt"
    r = cli("train", "--method", "crown-ibp", "--eps", 0.1, "--arch", "cnn_a", "--epochs", 3, "--schedule-length", 1,
            "--out", ck, "--quiet")
    assert r.exit_code == 0, r.output
    assert "val ibp verified" in r.output and "val crown ibp verified" in r.output
    m = load_model(ck)
    assert m.metadata["method"] == "crown-ibp" and m.metadata["eps"] == 0.1
    d = load_dataset("digits")
    ours = verified_metrics(m.module, BoundedModule(m.module, (1, 8, 8)), d.x[:60], d.y[:60], 0.1, 10)
    summ = tmp_path / "v.json"
    r = cli("verify", "--model", ck, "--eps", 0.1, "--method", "IBP,CROWN-IBP", "--max", 60, "--quiet",
            "--out", tmp_path / "v.tsv", "--summary-json", summ)
    assert r.exit_code == 0, r.output
    import json
    s = json.loads(summ.read_text())
    assert s["verified_accuracy"]["IBP"] == pytest.approx(ours["val_ibp_verified"])
    assert s["verified_accuracy"]["CROWN-IBP"] == pytest.approx(ours["val_crown_ibp_verified"])
    r = cli("certify", "--model", ck, "--sigma", 0.25, "--n0", 5, "--n", 50, "--max", 2, "--quiet",
            "--out", tmp_path / "c.tsv")
    assert r.exit_code == 0, r.output


def test_certified_training_bad_input(cli, tmp_path):
    from conftest import assert_clean_error

    assert_clean_error(cli("train", "--method", "ibp", "--config", "none", "--out", tmp_path / "m.pt"), "--eps")
    assert_clean_error(cli("train", "--method", "ibp", "--eps", 0.1, "--kappa-final", 2, "--out", tmp_path / "m.pt"),
                       "kappa")


def test_two_process_training_matches_single_process(tmp_path):
    """torchrun with 2 CPU processes (gloo) gives the single-process result within float tolerance."""
    args = ["train", "--method", "ibp", "--eps", "0.1", "--arch", "mlp", "--hidden", "32", "--epochs", "2",
            "--batch", "64", "--schedule-length", "1", "--quiet", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}  # torchrun leaves torchelastic_* folders
    r = subprocess.run([sys.executable, "-m", "certkit.cli", *args, "--out", str(tmp_path / "one.pt")],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                        "29517", "-m", "certkit.cli", *args, "--out", str(tmp_path / "two.pt")],
                       capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    a = torch.load(tmp_path / "one.pt", weights_only=True)
    b = torch.load(tmp_path / "two.pt", weights_only=True)
    assert b["metadata"]["world_size"] == 2
    for k in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][k], b["state_dict"][k], rtol=1e-4, atol=1e-5)


def _tiny():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 4)).double()
    x = torch.rand(5, 6, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 1])
    return net, x, y


def test_expressive_losses_span_adversarial_to_ibp():
    """alpha = 1 gives IBP's loss, alpha = 0 the adversarial cross-entropy, for MTL-, CC- and EXP-IBP (De Palma et al.
    2024); in between MTL-IBP and EXP-IBP are the arithmetic and geometric means of the two."""
    import torch.nn.functional as F

    from certkit.train.methods.mtl_ibp import CCIBPTraining, EXPIBPTraining, MTLIBPTraining, margins
    from certkit.verifiers import BoundedModule, linf_ball, margin_spec

    net, x, y = _tiny()
    C = margin_spec(y, 4).double()
    with torch.no_grad():
        lb, _ = BoundedModule(net, (6,)).ibp_margins(linf_ball(x, 0.1), C)
        x_adv = (x + 0.05).clamp(0, 1)
        z = net(x_adv)
    m_adv = margins(z, C)
    l_ibp, l_adv = robust_cross_entropy(lb), F.cross_entropy(z, y)
    assert float(robust_cross_entropy(m_adv)) == pytest.approx(float(l_adv), rel=1e-12)  # CE sees margins only
    for cls in (MTLIBPTraining, CCIBPTraining, EXPIBPTraining):
        assert float(cls.combine(m_adv, lb, 1.0)) == pytest.approx(float(l_ibp), rel=1e-12)
        assert float(cls.combine(m_adv, lb, 0.0)) == pytest.approx(float(l_adv), rel=1e-12)
    assert float(MTLIBPTraining.combine(m_adv, lb, 0.3)) == pytest.approx(float(0.7 * l_adv + 0.3 * l_ibp))
    assert float(EXPIBPTraining.combine(m_adv, lb, 0.3)) == pytest.approx(float(l_adv ** 0.7 * l_ibp ** 0.3))
    cc = float(CCIBPTraining.combine(m_adv, lb, 0.3))
    assert float(l_adv) <= cc <= float(l_ibp)  # CE of margins is monotone: between the two ends


def test_sabr_box_is_the_ball_at_lambda_one_and_the_attack_point_at_zero():
    from certkit.train.methods.sabr import small_box
    from certkit.verifiers import BoundedModule, Box, linf_ball, margin_spec

    net, x, y = _tiny()
    eps = 0.1
    x_adv = (x + torch.empty_like(x).uniform_(-eps, eps, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    ball = linf_ball(x, eps)
    lo, hi = small_box(x, x_adv, eps, 1.0)
    assert torch.allclose(lo, ball.x_L, rtol=0, atol=1e-15) and torch.allclose(hi, ball.x_U, rtol=0, atol=1e-15)
    lo, hi = small_box(x, x_adv, eps, 0.25)
    assert (lo >= ball.x_L - 1e-12).all() and (hi <= ball.x_U + 1e-12).all() and ((hi - lo) <= 0.05 + 1e-12).all()
    lo, hi = small_box(x, x_adv, eps, 1e-12)  # a point: IBP's worst case is the loss at x_adv
    C = margin_spec(y, 4).double()
    import torch.nn.functional as F
    with torch.no_grad():
        lb, _ = BoundedModule(net, (6,)).ibp_margins(Box(lo, hi), C)
        assert float(robust_cross_entropy(lb)) == pytest.approx(float(F.cross_entropy(net(x_adv), y)), rel=1e-6)


@pytest.mark.parametrize("method", ["sabr", "mtl-ibp", "cc-ibp", "exp-ibp"])
def test_new_losses_train_through_the_harness(cli, tmp_path, method):
    r = cli("train", "--method", method, "--eps", 0.1, "--hidden", 32, "--epochs", 2, "--schedule-length", 1,
            "--attack-steps", 3, "--quiet", "--out", tmp_path / "m.pt")
    assert r.exit_code == 0, r.output
    ck = torch.load(tmp_path / "m.pt", weights_only=True)
    meta = ck["metadata"]
    # a verified accuracy was measured (a NaN would pass an `is not None` check) and it is at most the clean one
    assert meta["method"] == method and 0.0 <= meta["val_ibp_verified"] <= meta["val_accuracy"] <= 1.0, meta
