"""Every registered verifier (verifiers/complete/registry.py, plus the deliberately unsound ones of
soundness_bench/bugs.py)
on the same tiny instances with known answers.

The network is y = relu(x0) + 2 - relu(x1) on x in [0, 1]^2 (so y = x0 - x1 + 2 ranges over [1, 3]):
    robust   unsafe y <= 0      unsat (min y = 1: IBP alone proves it)
    easy     unsafe y <= 1.5    sat   (every x with x1 - x0 >= 0.5)
    corner   unsafe y <= 1.05   sat   (only near the corner (0, 1): a verifier that shrinks the box misses it)
and on x in [-1, 1]^2, where both ReLUs are unstable:
    unstable unsafe y <= 1.05   sat   (min y = 1 at x0 <= 0, x1 = 1; a wrong ReLU relaxation "proves" it)
and a precision trap, y = relu(x) - 1 on x in [0, 1.009765625] (1 + 2^-7 + 2^-9, exact in float32):
    precision unsafe y >= 0.009 sat   (only on the sliver x >= 1.009; bfloat16 rounds the box's upper bound to
                                       1.0078125, and a verifier without a sound final check then "proves" it)
A sound verifier never answers unsat on a sat instance nor sat on an unsat one, and every sat comes with a witness
that onnxruntime confirms; a complete one decides all three; a verifier declared unsound is caught here.
"""
import importlib.util

import pytest
import torch
from torch import nn

from conftest import export_onnx

pytest.importorskip("onnxruntime")

from certkit.soundness_bench.adapters import audit_verifiers  # noqa: E402
from certkit.verifiers.complete.registry import Instance  # noqa: E402
from certkit.verifiers.complete.vnncomp_format import RESULTS, check_witness  # noqa: E402

TRUTH = {"robust": "unsat", "easy": "sat", "corner": "sat", "unstable": "sat", "precision": "sat"}
BOUND = {"robust": "0.0", "easy": "1.5", "corner": "1.05", "unstable": "1.05"}


@pytest.fixture(scope="module")
def instances(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.eye(2))
        net[0].bias.zero_()
        net[2].weight.copy_(torch.tensor([[1.0, -1.0]]))
        net[2].bias.fill_(2.0)
    export_onnx(net, torch.rand(1, 2), root / "net.onnx")
    out = {}
    for name, bound in BOUND.items():
        text = "".join(f"(declare-const X_{i} Real)\n" for i in range(2)) + "(declare-const Y_0 Real)\n"
        low = "-1.0" if name == "unstable" else "0.0"
        text += "".join(f"(assert (>= X_{i} {low}))\n(assert (<= X_{i} 1.0))\n" for i in range(2))
        text += f"(assert (<= Y_0 {bound}))\n"
        (root / f"{name}.vnnlib").write_text(text)
        out[name] = Instance(root / "net.onnx", root / f"{name}.vnnlib")
    trap = nn.Sequential(nn.Linear(1, 1), nn.ReLU(), nn.Linear(1, 1))
    with torch.no_grad():
        trap[0].weight.fill_(1.0)
        trap[0].bias.zero_()
        trap[2].weight.fill_(1.0)
        trap[2].bias.fill_(-1.0)
    torch.onnx.export(trap, (torch.rand(1, 1),), str(root / "trap.onnx"), dynamo=False, input_names=["x"],
                      opset_version=13)
    (root / "precision.vnnlib").write_text("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n"
                                           "(assert (>= X_0 0.0))\n(assert (<= X_0 1.009765625))\n"
                                           "(assert (>= Y_0 0.009))\n")
    out["precision"] = Instance(root / "trap.onnx", root / "precision.vnnlib")
    return out


def _available(name, cls):
    return name != "marabou" or importlib.util.find_spec("maraboupy") is not None


@pytest.mark.parametrize("name", sorted(audit_verifiers()))
def test_registered_verifier_answers_tiny_instances_by_its_declared_contract(name, instances):
    cls = audit_verifiers()[name]
    if not _available(name, cls):
        pytest.skip(f"{name} is not installed")
    assert isinstance(cls.sound, bool) and isinstance(cls.complete, bool) and cls.help
    wrong = []
    for key, inst in instances.items():
        res = cls().verify(inst, timeout=20)
        assert res.status in RESULTS and res.seconds < 30, (name, key, res)
        if res.status == "sat" and res.x is not None:
            assert check_witness(inst.network(), inst.property(), res.x, tol=1e-4) is None, (name, key)
        if res.status in ("sat", "unsat") and res.status != TRUTH[key]:
            wrong.append(key)
        if cls.complete:
            assert res.status == TRUTH[key], (name, key, res)
    if cls.sound:
        assert not wrong, f"{name} declares itself sound but answered {wrong} wrongly"
        assert cls().verify(instances["robust"], 20).status == "unsat" or not name.startswith("certkit")
    else:
        assert wrong, f"{name} declares itself unsound, but these instances do not show it"
