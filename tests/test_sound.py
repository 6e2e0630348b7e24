"""The sound mode of bound propagation (verifiers/bounds/sound.py): bounds that hold in exact arithmetic and in float32.

Checks: outward-rounded bounds contain the network's outputs computed exactly (rationals) and in float32 on many
random boxes; a network built to exploit rounding (as Jia & Rinard 2020 do) fools float64 CROWN and the default
complete verifier, which answer unsat although a float32 counterexample exists, and fools neither sound CROWN nor
``--sound``; unsupported ops are refused by name.
"""
from __future__ import annotations

import copy
from fractions import Fraction

import numpy as np
import pytest
import torch
from torch import nn

from certkit.common.errors import CertkitError
from certkit.verifiers.bounds.ibp_crown import BoundedModule
from certkit.verifiers.bounds.sound import SoundBounds, gamma

from conftest import export_onnx

METHODS = ("IBP", "CROWN-IBP", "CROWN", "alpha-CROWN")


def exact_forward(net: nn.Sequential, x) -> list[Fraction]:
    """The network (Linear / ReLU layers, float32 weights) evaluated in exact rational arithmetic at x."""
    v = [Fraction(float(t)) for t in x]
    for layer in net:
        if isinstance(layer, nn.Linear):
            W = [[Fraction(float(w)) for w in row] for row in layer.weight.detach().tolist()]
            b = [Fraction(float(t)) for t in layer.bias.detach().tolist()]
            v = [sum((w * a for w, a in zip(row, v)), bi) for row, bi in zip(W, b)]
        else:
            v = [max(a, Fraction(0)) for a in v]
    return v


def test_gamma_is_highams_bound():
    assert gamma(1, 2.0 ** -24) == pytest.approx(2.0 ** -24, rel=1e-6)
    assert gamma(100, 2.0 ** -53) > 100 * 2.0 ** -53
    with pytest.raises(CertkitError):
        gamma(2 ** 30, 2.0 ** -24)


def test_sound_bounds_contain_exact_and_float32_outputs_on_random_boxes():
    gen = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    with torch.no_grad():   # weights of mixed scale, so that rounding is not negligible everywhere
        for p in net.parameters():
            p.mul_(torch.exp2(torch.randint(-6, 7, p.shape, generator=gen).float()))
    net64 = copy.deepcopy(net).double()
    sb = SoundBounds(BoundedModule(net64, (3,)))
    C = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0], [1.0, -1.0]], dtype=torch.float64)
    boxes = 40
    centers = torch.randn(boxes, 3, generator=gen, dtype=torch.float64) * 4
    widths = torch.exp2(torch.randint(-20, 2, (boxes, 1), generator=gen)).double() * torch.rand(boxes, 3, generator=gen,
                                                                                                   dtype=torch.float64)
    lo, hi = (centers - widths).float().double(), (centers + widths).float().double()   # float32 box corners
    for method in METHODS:
        lb = sb.compute_bounds(lo, hi, C[None].expand(boxes, -1, -1), method)
        for b in range(0, boxes, 4):
            pts = lo[b] + (hi[b] - lo[b]) * torch.rand(12, 3, generator=gen, dtype=torch.float64)
            pts = torch.cat([pts.float().double().clamp(lo[b], hi[b]), lo[b][None], hi[b][None]])
            with torch.no_grad():
                y32 = net(pts.float()).double()
            for k in range(pts.shape[0]):
                exact = exact_forward(net, pts[k].tolist())
                for r in range(C.shape[0]):
                    cy = sum(Fraction(float(c)) * e for c, e in zip(C[r].tolist(), exact))
                    assert Fraction(float(lb[b, r])) <= cy, (method, b, r)
                    assert float(lb[b, r]) <= float(C[r] @ y32[k]), (method, b, r)


def test_sound_bounds_cost_little_tightness_on_an_ordinary_network():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                        nn.Linear(64, 20), nn.ReLU(), nn.Linear(20, 3)).double().eval()
    bm = BoundedModule(net, (1, 8, 8))
    sb = SoundBounds(bm)
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    C = torch.eye(3, dtype=torch.float64)[None].expand(3, 3, 3)
    net32 = copy.deepcopy(net).float()
    pts = (x + 0.02 * (2 * torch.rand((64,) + x.shape, dtype=torch.float64) - 1)).float()   # 64 points per box
    with torch.no_grad():
        y32 = net32(pts.reshape((-1,) + x.shape[1:])).reshape(64, 3, 3).double()
    for method in ("IBP", "CROWN", "alpha-CROWN"):
        lb = sb.compute_bounds(x - 0.02, x + 0.02, C, method)
        with torch.enable_grad() if method == "alpha-CROWN" else torch.no_grad():
            ref, _ = bm.compute_bounds((x - 0.02, x + 0.02), C, method, bound_upper=False)
        assert (lb <= ref.detach()).all()
        assert (ref.detach() - lb).max() < 1e-4   # float32 rounding of a small network is worth < 1e-4 here
        assert (lb[None] <= y32).all()                # and the bounds hold for the float32 network's outputs


def rounding_trap() -> nn.Sequential:
    """y = relu(relu(x + 2^24) - 2^24) - relu(x) + 0.999: exactly 0.999 > 0 for x >= 0, but float32 rounds x + 2^24 to
    an even integer, so y < 0 in float32 wherever x lies within 0.001 below an odd integer (x = 0.9995: y = -0.0005)."""
    net = nn.Sequential(nn.Linear(1, 2), nn.ReLU(), nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1)).eval()
    M = 2.0 ** 24
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0], [1.0]]))
        net[0].bias.copy_(torch.tensor([M, 0.0]))
        net[2].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        net[2].bias.copy_(torch.tensor([-M, 0.0]))
        net[4].weight.copy_(torch.tensor([[1.0, -1.0]]))
        net[4].bias.copy_(torch.tensor([0.999]))
    return net


def test_rounding_trap_fools_float64_crown_but_not_sound_crown():
    net = rounding_trap()
    x = torch.tensor([[0.9995]])
    assert float(net(x).detach()) < 0                                  # the float32 counterexample
    assert exact_forward(net, [0.9995])[0] > 0                         # exact arithmetic: 0.999
    net64 = copy.deepcopy(net).double()
    lo, hi = torch.zeros(1, 1, dtype=torch.float64), torch.full((1, 1), 1000.0, dtype=torch.float64)
    C = torch.ones(1, 1, 1, dtype=torch.float64)
    lb, _ = BoundedModule(net64, (1,)).compute_bounds((lo, hi), C, "CROWN", bound_upper=False)
    assert float(lb.detach()) > 0.9                                    # "verified", wrongly for float32
    lb32, _ = BoundedModule(net, (1,)).compute_bounds((lo.float(), hi.float()), C.float(), "CROWN", bound_upper=False)
    assert float(lb32.detach()) > 0.9                                  # float32 CROWN too
    for method in METHODS:
        lbs = SoundBounds(BoundedModule(net64, (1,))).compute_bounds(lo, hi, C, method)
        assert float(lbs) <= float(net(x).detach())                    # contains the float32 output


@pytest.fixture(scope="module")
def trap_instance(tmp_path_factory):
    root = tmp_path_factory.mktemp("trap")
    export_onnx(rounding_trap(), torch.rand(1, 1), root / "trap.onnx")
    (root / "trap.vnnlib").write_text("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n"
                                      "(assert (>= X_0 0.0))\n(assert (<= X_0 1000.0))\n(assert (<= Y_0 0.0))\n")
    return root / "trap.onnx", root / "trap.vnnlib"


def test_default_complete_verifier_is_fooled_and_sound_mode_is_not(trap_instance):
    from certkit.models.onnx_import import load_onnx
    from certkit.verifiers.complete.strategy import verify_instance
    from certkit.verifiers.complete.vnncomp_format import check_witness
    from certkit.verifiers.complete.vnnlib import parse_vnnlib

    onnx_path, vnnlib_path = trap_instance
    # the float32 counterexamples exist (checked in onnxruntime, exactly)
    assert check_witness(load_onnx(onnx_path), parse_vnnlib(vnnlib_path), np.array([0.9995], np.float32)) is None
    default = verify_instance(onnx_path, vnnlib_path, timeout=30)
    assert default.status == "unsat"                                   # fooled: rounding hides the counterexamples
    sound = verify_instance(onnx_path, vnnlib_path, timeout=3, sound=True)
    assert sound.status != "unsat", sound
    if sound.status == "sat":
        assert check_witness(load_onnx(onnx_path), parse_vnnlib(vnnlib_path), sound.x) is None


def test_sound_mode_proves_an_ordinary_instance(tmp_path):
    from certkit.verifiers.complete.strategy import verify_instance

    net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1)).eval()
    with torch.no_grad():
        net[0].weight.copy_(torch.eye(2))
        net[0].bias.zero_()
        net[2].weight.copy_(torch.tensor([[1.0, -1.0]]))
        net[2].bias.fill_(2.0)
    export_onnx(net, torch.rand(1, 2), tmp_path / "net.onnx")
    text = "".join(f"(declare-const X_{i} Real)\n(assert (>= X_{i} -1.0))\n(assert (<= X_{i} 1.0))\n" for i in range(2))
    (tmp_path / "p.vnnlib").write_text(text + "(declare-const Y_0 Real)\n(assert (<= Y_0 0.5))\n")
    res = verify_instance(tmp_path / "net.onnx", tmp_path / "p.vnnlib", timeout=20, sound=True)
    assert res.status == "unsat" and "sound" in res.method, res


def test_sound_mode_refuses_unsupported_ops_by_name():
    net = nn.Sequential(nn.Linear(2, 3), nn.Sigmoid(), nn.Linear(3, 1)).double()
    with pytest.raises(CertkitError, match="Sigmoid"):
        SoundBounds(BoundedModule(net, (2,)))
    with pytest.raises(CertkitError, match="float64"):
        SoundBounds(BoundedModule(nn.Sequential(nn.Linear(2, 1)), (2,)))


def test_cli_instance_with_sound_flag(cli, trap_instance, tmp_path):
    onnx_path, vnnlib_path = trap_instance
    r = cli("verify", "--mode", "instance", "--onnx", onnx_path, "--vnnlib", vnnlib_path, "--timeout", 4, "--sound",
            "--result", tmp_path / "r.txt")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "r.txt").read_text().split()[0] in ("timeout", "unknown", "sat")


def test_cli_dataset_mode_with_sound_flag(cli, tmp_path):
    import json

    common = ("verify", "--model", "bundled", "--max", 24, "--eps", 0.02, "--method", "IBP,CROWN", "--quiet")
    r = cli(*common, "--out", tmp_path / "plain.tsv")
    assert r.exit_code == 0, r.output
    r = cli(*common, "--sound", "--out", tmp_path / "sound.tsv")
    assert r.exit_code == 0, r.output
    assert "sound bounds" in r.output
    plain = json.loads((tmp_path / "plain.summary.json").read_text())
    sound = json.loads((tmp_path / "sound.summary.json").read_text())
    assert sound["sound"] is True and plain["sound"] is False
    for m in ("IBP", "CROWN"):   # sound bounds are looser, never tighter; on this network by little
        assert plain["verified_accuracy"][m] - 0.1 <= sound["verified_accuracy"][m] <= plain["verified_accuracy"][m]
    r = cli(*common, "--sound", "--norm", "2", "--out", tmp_path / "l2.tsv")
    assert r.exit_code != 0 and "--norm inf" in r.output
