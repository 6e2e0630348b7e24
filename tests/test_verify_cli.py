"""`certkit verify --model` end to end, its modes (`--mode check` and the older spellings), and PGD on a problem
with a closed-form answer."""
import csv
import json

import numpy as np
import pytest
import torch
from torch import nn

from certkit.verifiers.attack import pgd_attack

from conftest import assert_clean_error, export_onnx
from test_cli import read_tsv


def test_verify_bundled_model(cli, tmp_path):
    out, summ = tmp_path / "v.tsv", tmp_path / "v.json"
    r = cli("verify", "--eps", 0.02, "--method", "IBP,CROWN-IBP,CROWN,alpha-CROWN", "--max", 40, "--quiet",
            "--out", out, "--summary-json", summ)
    assert r.exit_code == 0, r.output
    s = json.loads(summ.read_text())
    for key in ("eps", "norm", "n_inputs", "clean_accuracy", "pgd_accuracy", "verified_accuracy", "seconds"):
        assert key in s
    v = s["verified_accuracy"]
    assert s["n_inputs"] == 40 and set(v) == {"IBP", "CROWN-IBP", "CROWN", "alpha-CROWN"}
    assert max(v.values()) <= s["pgd_accuracy"] <= s["clean_accuracy"]
    assert v["IBP"] <= v["CROWN"] <= v["alpha-CROWN"] and v["CROWN"] > 0.5
    rows = list(csv.DictReader(open(out), delimiter="\t"))
    for row in rows:  # per input: verified => PGD-robust => clean-correct
        assert int(row["verified_alpha_CROWN"]) <= int(row["pgd_robust"]) <= int(row["clean_correct"])
    r = cli("verify", "--eps", 0.5, "--norm", "2", "--method", "CROWN", "--max", 10, "--quiet",
            "--out", tmp_path / "l2.tsv")
    assert r.exit_code == 0 and "verified accuracy CROWN" in r.output


def test_an_in_memory_model_is_bounded_without_weight_gradients_and_given_back_as_it_was(tmp_path):
    """From Python, `run_verify` takes the caller's module: alpha-CROWN runs with the weights' requires_grad off
    (graphs through the weights cost memory for nothing) and every flag is restored afterwards, also after an
    error."""
    from certkit.models import load_model
    from certkit.runs.verify import VerifyConfig, run_verify

    net = load_model(None).module
    first = net[1][1]                                       # the first Linear of the bundled MLP
    first.bias.requires_grad_(False)                        # a caller's own choice, kept
    seen = []
    hook = first.register_forward_hook(lambda m, i, o: seen.append(m.weight.requires_grad))
    cfg = VerifyConfig(model=net, eps=0.02, methods=["alpha-CROWN"], max_inputs=8, quiet=True,
                       out=str(tmp_path / "v.tsv"))
    run_verify(cfg)
    hook.remove()
    assert seen and not seen[-1]                            # the bounds ran with the flag off
    assert first.weight.requires_grad and not first.bias.requires_grad
    assert all(q.requires_grad for n, q in net.named_parameters() if n != "1.1.bias")


def test_verify_check(cli, tmp_path):
    r = cli("verify", "--mode", "check")
    assert r.exit_code == 0 and "OK" in r.output and "deprecated" not in r.output
    torch.save(nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2, dilation=2), nn.Flatten(), nn.Softmin(1)),
               tmp_path / "m.pt")
    r = cli("verify", "--mode", "check", "--model", tmp_path / "m.pt", "--allow-pickle", "--input-shape", "1,8,8")
    assert r.exit_code == 1 and "MaxPool2d with dilation" in r.output and "Softmin" in r.output


def test_verify_modes_are_explicit_and_old_spellings_still_work(cli, tmp_path):
    r = cli("verify", "--check")                                  # the older spelling: same answer, one notice
    assert r.exit_code == 0 and "OK" in r.output
    assert sum("deprecated" in line for line in r.output.splitlines()) == 1 and "--mode check" in r.output
    # options of another mode are refused, never silently ignored
    assert_clean_error(cli("verify", "--mode", "dataset", "--instances", tmp_path / "i.csv"), "--mode benchmark")
    assert_clean_error(cli("verify", "--mode", "benchmark", "--vnnlib", tmp_path / "p.vnnlib"), "--mode instance")
    assert_clean_error(cli("verify", "--mode", "instance", "--check"), "--check")
    assert_clean_error(cli("verify", "--mode", "dataset", "--onnx", tmp_path / "n.onnx"), "--model N.onnx")
    assert_clean_error(cli("verify", "--mode", "benchmark"), "--instances")
    assert_clean_error(cli("verify", "--mode", "bogus"), "bogus")


def test_verify_bad_input(cli, tmp_path):
    assert_clean_error(cli("verify"), "--eps")
    assert_clean_error(cli("verify", "--eps", -0.1, "--out", tmp_path / "a.tsv"), "eps")
    assert_clean_error(cli("verify", "--eps", 0.1, "--method", "DeepPoly", "--out", tmp_path / "b.tsv"), "DeepPoly")
    assert_clean_error(cli("verify", "--mode", "benchmark", "--instances", tmp_path / "none.csv"), "not found")


def test_pgd_finds_the_closest_counterexample_of_a_linear_classifier():
    """f(x) = [w.x + b > 0]: the Linf distance to the boundary is |w.x+b| / ||w||_1 and the L2 one |w.x+b| / ||w||_2."""
    w = torch.tensor([[1.0, -2.0, 0.5, 3.0]])
    net = nn.Sequential(nn.Linear(4, 1))
    with torch.no_grad():
        net[0].weight.copy_(w)
        net[0].bias.fill_(-0.2)
    model = lambda x: torch.cat([-net(x), net(x)], 1)
    x = torch.full((1, 4), 0.5)
    s = float(net(x).detach())  # 0.5*(1-2+0.5+3) - 0.2 = 1.05 -> class 1
    y = torch.tensor([1])
    d_inf, d_2 = s / float(w.abs().sum()), s / float(w.norm())
    _, robust = pgd_attack(model, x, y, 0.98 * d_inf, "inf", data_range=None)
    assert robust.item()
    _, robust = pgd_attack(model, x, y, 1.02 * d_inf, "inf", data_range=None)
    assert not robust.item()
    _, robust = pgd_attack(model, x, y, 0.98 * d_2, "2", data_range=None)
    assert robust.item()
    _, robust = pgd_attack(model, x, y, 1.02 * d_2, "2", data_range=None)
    assert not robust.item()


def test_verify_reports_tightness(cli, tmp_path):
    summ = tmp_path / "t.json"
    r = cli("verify", "--eps", 0.01, "--method", "IBP", "--tightness", "--max", 16, "--quiet", "--out",
            tmp_path / "t.tsv", "--summary-json", summ)
    assert r.exit_code == 0 and "IBP tightness" in r.output
    tau = json.loads(summ.read_text())["tightness"]
    assert 0 < tau <= 1


def test_auto_lirpa_backend_is_optional(cli, tmp_path):
    from certkit.verifiers.external import auto_lirpa_available

    r = cli("verify", "--eps", 0.01, "--method", "CROWN", "--max", 4, "--quiet", "--backend", "auto_lirpa",
            "--out", tmp_path / "a.tsv")
    if auto_lirpa_available():
        assert r.exit_code == 0, r.output
    else:
        assert_clean_error(r, "auto_LiRPA")


def test_verify_onnx_model_on_data(cli, tmp_path, npz_file):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    path = export_onnx(net, torch.rand(1, 5), tmp_path / "m.onnx")
    r = cli("verify", "--model", path, "--dataset", "npz", npz_file, "--eps", 0.05, "--method", "IBP,CROWN",
            "--quiet", "--out", tmp_path / "v.tsv", "--summary-json", tmp_path / "v.json")
    assert r.exit_code == 0, r.output
    # the ONNX network is the same function as the torch one: same clean predictions, and IBP never beats CROWN
    from certkit.datasets import load_dataset

    data = load_dataset("npz", str(npz_file), "test")
    with torch.no_grad():
        want = net(torch.as_tensor(data.x).float()).argmax(1)
    rows = read_tsv(tmp_path / "v.tsv")
    assert len(rows) == len(want)
    summary = json.loads((tmp_path / "v.json").read_text())
    assert summary["clean_accuracy"] == pytest.approx(float((want == torch.as_tensor(data.y)).float().mean()))
    assert summary["verified_accuracy"]["IBP"] <= summary["verified_accuracy"]["CROWN"] <= summary["clean_accuracy"]


def test_complete_verifier_on_a_checkpoint_matches_the_exact_milp_answer(cli, tmp_path, npz_file):
    """--complete-timeout: every input's robustness decided, and decided right: against the exact MILP optimum of
    each margin over the input's box (tests/milp.py), on a small ReLU MLP whose bounds leave many inputs open."""
    pytest.importorskip("onnxruntime")
    from certkit.models.checkpoint import save_checkpoint
    from certkit.models.zoo import build_model

    from milp import exact_min

    torch.manual_seed(4)
    net = build_model("mlp", (5,), 3, hidden=(20, 20)).eval()
    ckpt = tmp_path / "m.pt"
    save_checkpoint(ckpt, net, "mlp", {"hidden": [20, 20]}, (5,), 3)
    out, summ = tmp_path / "c.tsv", tmp_path / "c.json"
    eps = 0.12  # CROWN verifies 3 of the 6 exactly robust inputs here
    r = cli("verify", "--model", ckpt, "--dataset", "npz", npz_file, "--eps", eps, "--method", "IBP,CROWN",
            "--complete-timeout", 60, "--quiet", "--out", out, "--summary-json", summ)
    assert r.exit_code == 0, r.output
    assert "robust accuracy" in r.output
    rows = list(csv.DictReader(open(out), delimiter="\t"))
    s = json.loads(summ.read_text())
    data = np.load(npz_file)
    layers = [(m.weight.detach().double().numpy(), m.bias.detach().double().numpy())
              for m in net if isinstance(m, nn.Linear)]
    opened = 0
    for row in rows:
        i, y = int(row["idx"]), int(row["label"])
        x = data["x"][i].astype(np.float32)
        lo = np.clip(x - np.float32(eps), 0, 1).astype(np.float64)
        hi = np.clip(x + np.float32(eps), 0, 1).astype(np.float64)
        margins = [exact_min(layers, np.eye(3)[y] - np.eye(3)[j], lo, hi) for j in range(3) if j != y]
        robust = min(margins) > 0
        st = row["complete_status"]
        assert st in ("bounds", "unsat", "sat", "pgd"), st           # 60 s: nothing left open, even on a loaded machine
        assert int(row["verified_complete"]) == int(robust), (i, st, margins)
        assert int(row["verified_CROWN"]) <= int(row["verified_complete"])
        opened += st in ("unsat", "sat")
    assert opened >= 2, "the test should exercise the complete verifier on inputs the bounds leave open"
    assert s["complete"]["timeout"] == 0 and s["verified_accuracy"]["complete"] >= s["verified_accuracy"]["CROWN"]
    assert_clean_error(cli("verify", "--model", ckpt, "--dataset", "npz", npz_file, "--eps", eps, "--norm", "2",
                           "--complete-timeout", 5, "--out", tmp_path / "l2.tsv"), "--norm inf")
