"""VNN-COMP instances on real published files: never unsat where a counterexample exists, every sat validated
by onnxruntime, result files in the competition format, and the instances.csv runner."""
import csv
import shutil
import time

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from certkit.models.onnx_import import load_onnx  # noqa: E402
from certkit.runs.vnncomp_benchmark import InstancesConfig, run_instances  # noqa: E402
from certkit.verifiers.complete.strategy import verify_instance  # noqa: E402
from certkit.verifiers.complete.vnncomp_format import format_result, violates  # noqa: E402
from certkit.verifiers.complete.vnnlib import parse_vnnlib, parse_vnnlib_text  # noqa: E402

from conftest import DATA, assert_clean_error  # noqa: E402

VNN = DATA / "vnncomp2021"
ACAS11 = VNN / "ACASXU_run2a_1_1_batch_2000.onnx"
ACAS17 = VNN / "ACASXU_run2a_1_7_batch_2000.onnx"


def _check_witness(res, onnx_path, vnnlib_path):
    """The reported counterexample lies in a box of the property EXACTLY and violates it in onnxruntime."""
    from fractions import Fraction

    prop = parse_vnnlib(vnnlib_path)
    m = load_onnx(onnx_path)
    import torch
    y = m.run_onnxruntime(torch.from_numpy(res.x.reshape((1,) + m.sample_shape)))[0]
    assert np.array_equal(y, res.y)
    hits = [t for t in prop.terms
            if all(lo <= Fraction(float(v)) <= hi for v, lo, hi in zip(res.x, t.x_L_exact, t.x_U_exact))
            and violates(t, y)]
    assert hits, "counterexample does not violate the property"
    text = format_result(res)
    assert text.startswith("sat\n((X_0 ") and text.rstrip().endswith(")")
    assert text.count("(X_") == prop.n_inputs and text.count("(Y_") == prop.n_outputs


@pytest.mark.parametrize("onnx_name,vnnlib_name", [("test_sat.onnx", "test_prop.vnnlib"),
                                                   (ACAS17.name, "prop_3.vnnlib"), (ACAS17.name, "prop_4.vnnlib")])
def test_sat_instances_give_validated_counterexamples(onnx_name, vnnlib_name):
    res = verify_instance(VNN / onnx_name, VNN / vnnlib_name, timeout=60)
    assert res.status == "sat", res
    _check_witness(res, VNN / onnx_name, VNN / vnnlib_name)
    assert res.checks == {"exact": True, "vnncomp": True}   # the written counterexample, re-checked both ways


@pytest.mark.parametrize("onnx_name,vnnlib_name", [
    ("test_nano.onnx", "test_nano.vnnlib"), ("test_tiny.onnx", "test_tiny.vnnlib"),
    ("test_small.onnx", "test_small.vnnlib"), ("test_unsat.onnx", "test_prop.vnnlib"),
    (ACAS11.name, "prop_1.vnnlib"), (ACAS11.name, "prop_4.vnnlib")])
def test_unsat_instances_are_proved(onnx_name, vnnlib_name):
    res = verify_instance(VNN / onnx_name, VNN / vnnlib_name, timeout=120)
    assert res.status == "unsat", res


def test_hard_instance_never_answers_unsat_wrongly_under_a_short_timeout():
    """ACAS 1_7 prop 3 is sat: with bounds alone (no time to search), certkit must not claim unsat."""
    res = verify_instance(ACAS17, VNN / "prop_3.vnnlib", timeout=60, bab=False)
    assert res.status in ("sat", "unknown"), res


def test_timeout_is_reported(tmp_path):
    res = verify_instance(ACAS11, VNN / "prop_6.vnnlib", timeout=1.5)
    assert res.status in ("timeout", "unsat")
    if res.status == "timeout":
        assert res.seconds < 30


def test_mismatched_sizes_is_an_error_not_a_verdict():
    res = verify_instance(VNN / "test_nano.onnx", VNN / "prop_1.vnnlib", timeout=10)
    assert res.status == "error" and "inputs" in res.reason


def test_instances_csv_runner(tmp_path):
    bench = tmp_path / "bench"
    bench.mkdir()
    for name in ("test_nano.onnx", "test_nano.vnnlib", "test_sat.onnx", "test_prop.vnnlib", "test_unsat.onnx"):
        shutil.copy(VNN / name, bench)
    (bench / "instances.csv").write_text("test_nano.onnx,test_nano.vnnlib,60\ntest_sat.onnx,test_prop.vnnlib,60\n"
                                         "test_unsat.onnx,test_prop.vnnlib,60\n")
    cfg = InstancesConfig(out=str(tmp_path / "results.tsv"), instances=str(bench / "instances.csv"),
                          result_dir=str(tmp_path / "res"), quiet=True)
    rows = run_instances(cfg)
    assert [r["result"] for r in rows] == ["unsat", "sat", "unsat"]
    saved = list(csv.DictReader(open(tmp_path / "results.tsv"), delimiter="\t"))
    assert [r["result"] for r in saved] == ["unsat", "sat", "unsat"]
    assert [r["witness"] for r in saved] == ["", "exact+vnncomp", ""]
    files = sorted((tmp_path / "res").iterdir())
    assert [f.read_text().split("\n")[0] for f in files] == ["unsat", "sat", "unsat"]


def test_cli_single_instance_and_errors(cli, tmp_path):
    out = tmp_path / "r.txt"
    r = cli("verify", "--mode", "instance", "--onnx", VNN / "test_sat.onnx", "--vnnlib", VNN / "test_prop.vnnlib",
            "--result", out)
    assert r.exit_code == 0, r.output
    assert out.read_text().startswith("sat\n((X_0")
    assert "holds exactly (zero tolerance) and within VNN-COMP tolerances" in r.output
    bad = tmp_path / "bad.vnnlib"
    bad.write_text("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= X_0 1)\n")
    r = cli("verify", "--mode", "instance", "--onnx", VNN / "test_nano.onnx", "--vnnlib", bad, "--result", out)
    assert r.exit_code == 1 and "bad.vnnlib:3:" in r.output and out.read_text() == "error\n"
    assert_clean_error(cli("verify", "--mode", "instance", "--onnx", VNN / "test_nano.onnx"), "--vnnlib")


def test_branch_and_bound_kind_is_checked_and_can_be_forced():
    # test_unsat needs more than IBP: a bad kind is an error, each real kind proves it
    bad = verify_instance(VNN / "test_unsat.onnx", VNN / "test_prop.vnnlib", timeout=60, methods=("IBP",), bab="foo")
    assert bad.status == "error" and "bab must be" in bad.reason
    for kind in ("input", "activation"):
        res = verify_instance(VNN / "test_unsat.onnx", VNN / "test_prop.vnnlib", timeout=60, methods=("IBP",),
                              bab=kind)
        assert res.status == "unsat", (kind, res)
    res = verify_instance(VNN / "test_unsat.onnx", VNN / "test_prop.vnnlib", timeout=60, methods=("IBP",), bab=False)
    assert res.status == "unknown" and "disabled" in res.reason


def test_the_command_writes_its_result_within_the_time_limit_from_its_start(tmp_path):
    """--mode instance counts --timeout from the start of the command (interpreter start-up and imports included) and
    writes the result file by then: a CNN with max pooling on a wide box keeps branch and bound busy far longer than
    the limit. Tolerance 1 s (the promise) + 0.5 s for this test's own process start."""
    import subprocess
    import sys

    import torch
    from torch import nn

    from conftest import export_onnx

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(8 * 4 * 4, 10)).eval()
    x = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    export_onnx(net, x, tmp_path / "net.onnx")
    y = int(net(x).argmax())
    lines = [f"(declare-const X_{i} Real)" for i in range(64)] + [f"(declare-const Y_{j} Real)" for j in range(10)]
    for i, v in enumerate(x.flatten().tolist()):
        lines += [f"(assert (>= X_{i} {max(0.0, v - 0.06)}))", f"(assert (<= X_{i} {min(1.0, v + 0.06)}))"]
    lines.append("(assert (or " + " ".join(f"(and (>= Y_{j} Y_{y}))" for j in range(10) if j != y) + "))")
    (tmp_path / "prop.vnnlib").write_text("\n".join(lines) + "\n")
    limit = 6.0
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "certkit.cli", "verify", "--mode", "instance", "--onnx",
                           str(tmp_path / "net.onnx"), "--vnnlib", str(tmp_path / "prop.vnnlib"), "--timeout",
                           str(limit), "--result", str(tmp_path / "r.txt")], capture_output=True, text=True)
    written = (tmp_path / "r.txt").stat().st_mtime - t0
    answer = (tmp_path / "r.txt").read_text().split("\n")[0]
    assert proc.returncode == 0, proc.stderr
    assert answer == "timeout", answer          # the search was still going at the limit
    assert written <= limit + 1.5, (written, answer, proc.stderr[-300:])


def test_the_time_limit_holds_when_the_verifier_does_not_return(tmp_path):
    """A verifier stuck in one call (injected: a 60 s sleep where the instance starts) still gets `timeout` written
    by the limit: the command's time guard answers and ends the process."""
    import os
    import subprocess
    import sys

    limit = 4.0
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "certkit.cli", "verify", "--mode", "instance", "--onnx",
                           str(VNN / "test_nano.onnx"), "--vnnlib", str(VNN / "test_nano.vnnlib"), "--timeout",
                           str(limit), "--result", str(tmp_path / "r.txt")], capture_output=True, text=True,
                          env={**os.environ, "CERTKIT_FAULT": "stall:verify:1"})
    ended = time.time() - t0
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "r.txt").read_text().split("\n")[0] == "timeout"
    assert (tmp_path / "r.txt").stat().st_mtime - t0 <= limit + 1.5 and ended <= limit + 1.5, ended
    assert proc.stdout.startswith("timeout")


def test_witness_checks_tell_exact_from_tolerance_only():
    """A counterexample whose written output is off by less than the competition's tolerance passes the VNN-COMP
    check only if the output's real value violates the property; a point just outside the box passes neither."""
    from certkit.verifiers.complete.vnncomp_format import InstanceResult, witness_checks

    m = load_onnx(VNN / "test_sat.onnx")
    prop = parse_vnnlib(VNN / "test_prop.vnnlib")
    good = verify_instance(VNN / "test_sat.onnx", VNN / "test_prop.vnnlib", timeout=60)
    assert good.status == "sat"
    shifted = InstanceResult("sat", 0.0, x=good.x, y=good.y * (1 + 5e-4))      # written y off by 0.05%
    assert witness_checks(m, prop, shifted) == {"exact": True, "vnncomp": True}
    far = InstanceResult("sat", 0.0, x=good.x, y=good.y + 1.0)                 # written y far off
    assert witness_checks(m, prop, far)["vnncomp"] is False
    term = prop.terms[0]
    outside = np.array([float(hi) for hi in term.x_U_exact], dtype=np.float64) + 5e-5
    res = InstanceResult("sat", 0.0, x=outside.astype(np.float32), y=good.y)
    assert witness_checks(m, prop, res)["exact"] is False


def test_no_unknown_while_time_remains(tmp_path):
    """A product (a.x)(b.x) of the first 20 of 40 free inputs: no activation to branch on and more free inputs than
    input splitting takes, and a threshold between McCormick's bound and the exact minimum (enumerated over the 2^20
    vertices, where a bilinear form on a box attains it): bounds cannot refute it and no attack can falsify it. The
    verifier branches on the product's operands until the limit instead of answering ``unknown`` early."""
    import itertools

    import torch
    from torch import nn

    from conftest import export_onnx

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(20, 1, generator=g), torch.randn(20, 1, generator=g)

    class Product(nn.Module):     # 40 free inputs (more than input splitting takes), the last 20 unused
        def forward(self, x):
            return (x[:, :20] @ a) * (x[:, :20] @ b)

    verts = np.array(list(itertools.product((-1.0, 1.0), repeat=20)))
    exact = float(((verts @ a.numpy()) * (verts @ b.numpy())).min())
    export_onnx(Product(), torch.zeros(1, 40), tmp_path / "p.onnx")
    decl = "".join(f"(declare-const X_{i} Real)\n(assert (>= X_{i} -1.0))\n(assert (<= X_{i} 1.0))\n"
                   for i in range(40))
    (tmp_path / "p.vnnlib").write_text(decl + f"(declare-const Y_0 Real)\n(assert (<= Y_0 {exact - 0.5}))\n")
    res = verify_instance(tmp_path / "p.onnx", tmp_path / "p.vnnlib", timeout=4)
    assert res.status in ("timeout", "unsat"), res
    assert res.status == "unsat" or (res.seconds > 3.5 and res.domains > 1), res


def test_an_input_fixed_at_a_value_no_float32_holds_gets_the_nearest_float32(tmp_path):
    """VNN-COMP's cGAN properties fix inputs at decimals such as -0.23234923183918, which no float32 equals: a
    counterexample must use the nearest float32 (the network cannot be fed the exact value), reported as holding
    within the competition's tolerances but not exactly; any x in the other, proper intervals stays inside them."""
    import torch

    from certkit.verifiers.complete.vnncomp_format import snap_into_box

    from conftest import export_onnx

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1)).eval()
    onnx_path = export_onnx(net, torch.zeros(1, 2), tmp_path / "n.onnx")
    text = ("(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n"
            "(assert (>= X_0 0.1))\n(assert (<= X_0 0.1))\n(assert (>= X_1 -0.5))\n(assert (<= X_1 0.5))\n"
            "(assert (<= Y_0 1000.0))\n")
    (tmp_path / "p.vnnlib").write_text(text)
    prop = parse_vnnlib(tmp_path / "p.vnnlib")
    term = prop.terms[0]
    assert snap_into_box(np.array([0.1, 0.0]), term) is None                 # no float32 equals 1/10
    near = snap_into_box(np.array([0.3, 0.7]), term, nearest_if_empty=True)
    assert near[0] == np.float32(0.1) and near[1] == np.float32(0.5)
    res = verify_instance(onnx_path, tmp_path / "p.vnnlib", timeout=20)
    assert res.status == "sat" and res.checks == {"exact": False, "vnncomp": True}, res


@pytest.mark.parametrize("sat", [False, True], ids=["all refuted", "one open"])
def test_disjuncts_refuted_by_cheap_bounds_are_not_attacked(sat, tmp_path, monkeypatch):
    """Y_0 <= -1e6 and Y_1 <= -1e6 on ACAS Xu's prop 1 box are refuted by IBP (the outputs are a few hundred at most):
    neither is attacked; the instance is unsat by IBP, or, with a third disjunct Y_0 >= -1e6 that every input
    violates, sat from attacking that one alone."""
    from certkit.verifiers.complete import strategy

    box = "".join(ln + "\n" for ln in (VNN / "prop_1.vnnlib").read_text().splitlines()
                  if "declare" in ln or " X_" in ln)
    rows = ["(and (<= Y_0 -1000000.0))", "(and (<= Y_1 -1000000.0))"] + (["(and (>= Y_0 -1000000.0))"] if sat else [])
    (tmp_path / "p.vnnlib").write_text(box + "(assert (or " + " ".join(rows) + "))\n")
    attacked = []
    real = strategy.falsify

    def spy(net32, onnx_model, term, *args, **kwargs):
        attacked.append(float(term.d[0]))
        return real(net32, onnx_model, term, *args, **kwargs)

    monkeypatch.setattr(strategy, "falsify", spy)
    res = verify_instance(ACAS11, tmp_path / "p.vnnlib", timeout=30)
    if sat:
        assert res.status == "sat" and attacked and set(attacked) == {1e6}, (res, attacked)
        _check_witness(res, ACAS11, tmp_path / "p.vnnlib")
    else:
        assert res.status == "unsat" and res.method == "IBP" and not attacked, (res, attacked)


@pytest.mark.parametrize("bab", [True, "activation"])
def test_each_disjunct_of_a_shared_box_is_attacked_alone_only_if_the_bounds_leave_it_open(tmp_path, monkeypatch,
                                                                                          bab):
    """Two disjuncts over ACAS Xu's prop 1 box: Y_0 <= d, with d between IBP's and CROWN's lower bounds of Y_0
    (refuted by CROWN, not by IBP), and prop 1's own Y_0 >= 3.9911 (open after the root bounds, proved by input
    splitting). The joint attack on both runs before any bound; PGD on a disjunct alone runs after CROWN, on the
    second disjunct only; the answer is ``unsat``. Where activation-split BaB follows (forced here; it attacks each
    disjunct itself, and is replaced by a stub that records its call), no disjunct is attacked alone before it."""
    import copy

    import torch

    from certkit.verifiers.bounds.ibp_crown import BoundedModule
    from certkit.verifiers.bounds.perturbation import Box
    from certkit.verifiers.complete import strategy

    m = load_onnx(ACAS11)
    term = parse_vnnlib(VNN / "prop_1.vnnlib").terms[0]
    bm = BoundedModule(copy.deepcopy(m.module).double().eval(), m.sample_shape)
    shape = (1,) + tuple(m.sample_shape)
    pert = Box(torch.tensor(term.x_L).reshape(shape), torch.tensor(term.x_U).reshape(shape))
    C = torch.eye(5, dtype=torch.float64)[None, :1]
    ibp, crown = (float(bm.compute_bounds(pert, C, method=k)[0][0, 0]) for k in ("IBP", "CROWN"))
    assert ibp < crown - 1e-3
    box = "".join(ln + "\n" for ln in (VNN / "prop_1.vnnlib").read_text().splitlines()
                  if "declare" in ln or " X_" in ln)
    (tmp_path / "p.vnnlib").write_text(
        box + f"(assert (or (and (<= Y_0 {(ibp + crown) / 2!r})) (and (>= Y_0 3.991125645861615))))\n")
    monkeypatch.setattr(strategy, "QUICK_CROWN", 0)                # CROWN after the first attacks
    monkeypatch.setattr(strategy, "ATTACK_SHARE_LOW_DIM", 0.5)     # share left for the attacks after the bounds
    events = []
    real_crown, real_falsify = strategy.RootBounds.crown_refuted_all, strategy.falsify

    def crown_spy(self, terms):
        events.append("CROWN")
        return real_crown(self, terms)

    def falsify_spy(net32, onnx_model, term, *args, pgd=True, **kwargs):
        events.append((len(term) if isinstance(term, list) else float(term.d[0]), pgd))
        return real_falsify(net32, onnx_model, term, *args, pgd=pgd, **kwargs)

    def bab_stub(*args, **kwargs):
        events.append("BaB")
        return "unsat", 0

    monkeypatch.setattr(strategy.RootBounds, "crown_refuted_all", crown_spy)
    monkeypatch.setattr(strategy, "falsify", falsify_spy)
    monkeypatch.setattr(strategy, "activation_bab", bab_stub)
    res = verify_instance(ACAS11, tmp_path / "p.vnnlib", timeout=30, bab=bab)
    assert res.status == "unsat", res
    first = events.index("CROWN")
    assert events[:first] == [(2, False), (2, True)], events
    if bab == "activation":
        assert events[first:] == ["CROWN", "BaB"], events
        return
    assert "BaB" not in events and (-3.991125645861615, True) in events[first:] and all(
        e == "CROWN" or e[0] == -3.991125645861615 for e in events[first:]), events


def test_intermediate_optimisation_leaves_half_the_time_to_branch_and_bound(monkeypatch):
    """alpha-CROWN on a whole disjunct that CROWN's intermediate bounds leave open optimises the intermediate bounds
    with a deadline of half the time left (branch and bound gets the other half)."""
    import copy

    from certkit.verifiers.bounds.ibp_crown import BoundedModule
    from certkit.verifiers.complete import strategy

    seen = []
    real = strategy.optimize_intermediate

    def spy(bm, pert, bounds, *args, deadline=None, **kwargs):
        seen.append(deadline - time.perf_counter())
        return real(bm, pert, bounds, *args, deadline=deadline, **kwargs)

    monkeypatch.setattr(strategy, "optimize_intermediate", spy)
    m = load_onnx(ACAS11)
    roots = strategy.RootBounds(BoundedModule(copy.deepcopy(m.module).double().eval(), m.sample_shape))
    term = parse_vnnlib(VNN / "prop_1.vnnlib").terms[0]
    assert not roots.refuted(term, time.perf_counter() + 20.0)     # open at the root: input splitting proves it
    assert len(seen) == 1 and 0 < seen[0] <= 10.0, seen


@pytest.mark.parametrize("act", ["ReLU", "Sigmoid", "Tanh"])
def test_the_root_optimises_intermediate_bounds_longer_through_sigmoid_and_tanh(act, monkeypatch):
    """A disjunct the root's bounds leave open gets intermediate bounds optimised with INTERMEDIATE_ITERATIONS
    alpha-CROWN iterations; on a network with a sigmoid or tanh (both lines of their relaxation move) the optimisation
    then continues to INTERMEDIATE_ITERATIONS_S_SHAPED in all. The disjunct holds at the box's center, so no sound
    bound refutes it and every stage runs."""
    import torch

    from certkit.verifiers.bounds.ibp_crown import BoundedModule
    from certkit.verifiers.complete import strategy

    seen = []
    real = strategy.optimize_intermediate

    def spy(bm, pert, bounds, *args, iterations, **kwargs):
        seen.append(iterations)
        return real(bm, pert, bounds, *args, iterations=iterations, **kwargs)

    monkeypatch.setattr(strategy, "optimize_intermediate", spy)
    torch.manual_seed(0)
    layer = getattr(torch.nn, act)
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), layer(), torch.nn.Linear(8, 8), layer(), torch.nn.Linear(8, 2))
    net = net.double().eval()
    with torch.no_grad():
        y0 = float(net(torch.zeros(1, 3, dtype=torch.float64))[0, 0])
    roots = strategy.RootBounds(BoundedModule(net, (3,)))
    term = parse_vnnlib_text("\n".join([f"(declare-const X_{i} Real)" for i in range(3)]
                                       + [f"(declare-const Y_{i} Real)" for i in range(2)]
                                       + [f"(assert (>= X_{i} -1.0))\n(assert (<= X_{i} 1.0))" for i in range(3)]
                                       + [f"(assert (>= Y_0 {y0 - 0.1!r}))"])).terms[0]
    assert roots.refuted_all([term], time.perf_counter() + 20.0) == [False]
    first, total = strategy.INTERMEDIATE_ITERATIONS, strategy.INTERMEDIATE_ITERATIONS_S_SHAPED
    assert seen == ([first] if act == "ReLU" else [first, total - first])
    assert total > first
    assert roots.get(term, time.perf_counter() + 20.0) is roots.tightest(term)    # cached: nothing computed again
    assert len(seen) == (1 if act == "ReLU" else 2)


def test_box_membership_is_exact_at_the_float_boundaries():
    """in_box (float64 screening, rationals where float64 cannot decide) agrees with the all-rational check on points
    one float32 ulp inside, on and outside decimal bounds that float64 cannot represent, with and without a
    tolerance."""
    from fractions import Fraction

    from certkit.verifiers.complete.vnncomp_format import in_box

    rng = np.random.default_rng(0)
    n = 120
    lo_dec = [f"{v:.11f}" for v in rng.uniform(-3, 3, n)]
    hi_dec = [f"{float(v) + w:.11f}" for v, w in zip(lo_dec, rng.uniform(0, 0.01, n))]
    for i in range(0, n, 2):      # every other bound a float32 exactly: points ON it take the rational comparison
        k = int(rng.integers(-192, 192))
        lo_dec[i], hi_dec[i] = repr(k / 64), repr((k + 1) / 64)
    text = "".join(f"(declare-const X_{i} Real)\n(assert (>= X_{i} {a}))\n(assert (<= X_{i} {b}))\n"
                   for i, (a, b) in enumerate(zip(lo_dec, hi_dec))) + "(declare-const Y_0 Real)\n(assert (<= Y_0 0))\n"
    term = parse_vnnlib_text(text).terms[0]
    base = ((term.x_L + term.x_U) / 2).astype(np.float32)
    for tol in (0.0, 1e-4):
        for bound in (term.x_L - tol, term.x_U + tol):
            for i in range(0, n, 3):
                for step in (-2, -1, 0, 1, 2):
                    x = base.copy()
                    v = np.float32(bound[i])
                    for _ in range(abs(step)):
                        v = np.nextafter(v, np.float32(np.inf if step > 0 else -np.inf))
                    x[i] = v
                    t = Fraction(tol)
                    exact = all(lo - t <= Fraction(float(u)) <= hi + t
                                for u, lo, hi in zip(x, term.x_L_exact, term.x_U_exact))
                    assert in_box(x, term, tol) == exact, (tol, i, step)


def test_disjuncts_over_one_box_are_attacked_jointly(tmp_path):
    """PGD on the minimum of the disjuncts' objectives over their shared box: group_objective equals the minimum of
    each disjunct's own objective, attack_units puts the box's group before the disjuncts, and the joint attack's
    counterexample validates against one of the disjuncts in onnxruntime."""
    import torch

    from certkit.verifiers.complete.strategy import (
        Deadline,
        attack_units,
        box_groups,
        falsify,
        group_objective,
        objective,
    )

    from conftest import export_onnx

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 5)).eval()
    onnx_path = export_onnx(net, torch.zeros(1, 4), tmp_path / "n.onnx")
    with torch.no_grad():
        label = int(net(torch.zeros(1, 4)).argmax())
    decl = "".join(f"(declare-const X_{i} Real)\n(assert (>= X_{i} -3))\n(assert (<= X_{i} 3))\n" for i in range(4))
    decl += "".join(f"(declare-const Y_{j} Real)\n" for j in range(5))
    rows = " ".join(f"(and (>= Y_{j} Y_{label}))" for j in range(5) if j != label)
    (tmp_path / "p.vnnlib").write_text(decl + f"(assert (or {rows}))\n")
    prop = parse_vnnlib(tmp_path / "p.vnnlib")
    m = load_onnx(onnx_path)
    net32 = m.module.float().eval()
    assert box_groups(prop.terms) == [prop.terms]
    assert attack_units(prop.terms) == [prop.terms] + prop.terms
    x = torch.rand(32, 4) * 6 - 3
    with torch.no_grad():
        each = torch.stack([objective(net32, torch.tensor(t.C, dtype=torch.float32),
                                      torch.tensor(t.d, dtype=torch.float32), m.sample_shape)(x) for t in prop.terms])
        torch.testing.assert_close(group_objective(net32, prop.terms, m.sample_shape)(x), each.min(0).values)
    found = falsify(net32, m, prop.terms, 16, torch.Generator().manual_seed(0), Deadline(30))
    assert found is not None and found.status == "sat"
    assert any(violates(t, found.y) for t in prop.terms)


def test_attacks_get_the_time_that_crown_cannot_use(monkeypatch):
    """When CROWN's bounds on the whole box run past their share of the time (here a share of 0), the instance does not
    end in a timeout inside CROWN: the attacks take the rest of the time and find ACAS Xu 1-7 prop 3's counterexample
    (the first attack is switched off, so that only the attacks after CROWN can find it)."""
    from certkit.verifiers.complete import strategy

    monkeypatch.setattr(strategy, "QUICK_CROWN", 0)
    monkeypatch.setattr(strategy, "ROOT_CROWN_SHARE", 0.0)
    crown_tried = []
    real_crown, real_falsify = strategy.RootBounds.crown_refuted_all, strategy.falsify

    def crown(self, terms):
        crown_tried.append(True)
        return real_crown(self, terms)

    def falsify(*args, **kwargs):
        return real_falsify(*args, **kwargs) if crown_tried else None

    kept = []
    real_keep = strategy.keep_attacking

    def keep_attacking(net32, onnx_model, terms, starts, gen, dl, res, *args):
        kept.append(res.reason)
        return real_keep(net32, onnx_model, terms, starts, gen, dl, res, *args)

    monkeypatch.setattr(strategy.RootBounds, "crown_refuted_all", crown)
    monkeypatch.setattr(strategy, "falsify", falsify)
    monkeypatch.setattr(strategy, "keep_attacking", keep_attacking)
    res = verify_instance(ACAS17, VNN / "prop_3.vnnlib", timeout=30)
    assert crown_tried and res.status == "sat", res
    assert len(kept) == 1 and "CROWN's intermediate bounds took over 0%" in kept[0], kept
    _check_witness(res, ACAS17, VNN / "prop_3.vnnlib")


def test_disjuncts_over_one_box_are_bounded_together(monkeypatch):
    """RootBounds bounds the disjuncts over one box in one CROWN pass and one alpha-CROWN run per stage (one set of
    alphas per row), and refutes exactly the disjuncts whose rows' own bounds exceed d: here one row that CROWN
    refutes, one that only alpha-CROWN refutes, one that nothing refutes (its d is above the value at the box
    center), and a disjunct of two rows refuted through its second."""
    import copy
    import dataclasses

    import torch

    from certkit.verifiers.bounds.alpha_crown import alpha_crown
    from certkit.verifiers.bounds.ibp_crown import BoundedModule
    from certkit.verifiers.complete import strategy

    m = load_onnx(ACAS11)
    base = parse_vnnlib(VNN / "prop_1.vnnlib").terms[0]
    bm = BoundedModule(copy.deepcopy(m.module).double().eval(), m.sample_shape)
    roots = strategy.RootBounds(bm)
    C = np.eye(5)[:3] - np.eye(5)[[4, 4, 4]]                       # y_i - y_4, i = 0, 1, 2
    CC = torch.tensor(C).reshape((1, 3, 5))
    pert = roots._pert(base)
    crown = roots.crown_bounds(base)
    with torch.no_grad():
        A, bias = bm.propagate(bm.graph.output, CC, crown, {})
        lb_crown = (bias + pert.lower(A))[0].numpy()
    lb_alpha = alpha_crown(bm, pert, CC, crown).detach()[0].numpy()
    center = C @ m.module.double()(torch.tensor((base.x_L + base.x_U) / 2).reshape(1, 5)).detach().numpy()[0]
    gain = lb_alpha - lb_crown
    assert gain[1] > 1e-6, gain                                    # alpha-CROWN tightens row 1 on this box

    def term(rows, d):
        return dataclasses.replace(base, C=C[rows], d=np.array(d, dtype=np.float64), strict=np.zeros(len(rows), bool))

    terms = [term([0], [lb_crown[0] - 1e-3]), term([1], [lb_crown[1] + gain[1] / 2]), term([2], [center[2] + 1.0]),
             term([2, 0], [center[2] + 1.0, lb_crown[0] - 1e-3])]
    calls = []
    real = strategy.alpha_crown

    def spy(bm_, pert_, CC_, *args, **kwargs):
        calls.append(CC_.shape[1])
        return real(bm_, pert_, CC_, *args, **kwargs)

    monkeypatch.setattr(strategy, "alpha_crown", spy)
    assert roots.crown_refuted_all(terms) == [True, False, False, True]
    assert [roots.crown_refuted(t) for t in terms] == [True, False, False, True]
    assert roots.refuted_all(terms[1:3], time.perf_counter() + 20.0) == [True, False]
    assert calls == [2, 1], calls            # both rows at once; then the open one over optimised bounds
    # a memory budget of two rows of the largest node: CROWN's rows go in groups of at most two rows (a disjunct is
    # never cut), alpha-CROWN's (a quarter of the budget) one disjunct at a time; the answers stay the same
    bm.budget = 2 * max(int(np.prod(n.shape)) for n in bm.graph.nodes)
    assert [[len(t.C) for t in c] for c in roots._chunks(terms)] == [[1, 1], [1], [2]]
    assert roots.crown_refuted_all(terms) == [True, False, False, True]
    calls.clear()
    assert roots.refuted_all(terms[1:3], time.perf_counter() + 20.0) == [True, False]
    assert calls == [1, 1, 1], calls


def test_counterexample_replays_stop_at_the_deadline(monkeypatch):
    """Hundreds of disjuncts can each have close candidates to replay in onnxruntime (VNN-COMP ml4acopf's 300-bus
    properties: 600 disjuncts, 30.8 s of wall time for a 30 s limit): with replays of 20 ms and 50 disjuncts whose
    unsafe region holds every point, the check returns within its deadline plus one replay instead of after 8 s."""
    import torch

    from certkit.verifiers.complete import input_split, strategy

    box = "".join(f"(declare-const X_{i} Real)\n(assert (>= X_{i} -0.1))\n(assert (<= X_{i} 0.1))\n" for i in range(5))
    outs = "".join(f"(declare-const Y_{j} Real)\n" for j in range(5))
    text = box + outs + "(assert (or " + " ".join("(and (<= Y_0 1000000.0))" for _ in range(50)) + "))\n"
    prop = parse_vnnlib_text(text)
    m = load_onnx(ACAS11)
    replays = []

    def slow_replay(onnx_model, term, x):
        replays.append(1)
        time.sleep(0.02)
        return None
    monkeypatch.setattr(input_split, "validate_witness", slow_replay)
    x = torch.zeros((8, 5), dtype=torch.float64)
    t0 = time.perf_counter()
    assert strategy._check_group(m.module.float(), m, prop.terms, x, deadline=t0 + 0.1) is None
    assert time.perf_counter() - t0 < 0.1 + 0.1 and 0 < len(replays) <= 7
