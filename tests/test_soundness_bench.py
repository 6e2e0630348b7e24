"""Soundness benchmark end to end on a tiny generated model: planted counterexamples are real (onnxruntime), the
instances parse (certkit's parser, maraboupy), a deliberately unsound verifier is flagged, certkit is not.

The generation here is scaled far down (width 32, 300 epochs, a 2-setting sweep) to stay fast: these tests check
the pipeline's guarantees, not how well the counterexamples are hidden (bench/soundness_bench.py measures that)."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from certkit.soundness_bench.generate import config_with_preset, generate, make_data

from conftest import assert_clean_error

onnxruntime = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("sb")
    cfg = config_with_preset("cpu", out=str(root / "mlp"), arch="mlp_4_hidden", eps_rel=0.5, seed=1, width=32,
                             epochs=300, attack_iters=10, attack_restarts=10, check_every=100, sweep_restarts=20,
                             n_planted=4, n_regular=2, timeout=20.0, lr=0.01)
    cfg.sweep = ((0.25, 0),)
    cfg.strong = False
    summary = generate(cfg, quiet=True)
    return root, cfg, summary


def _truth(folder):
    return json.loads((folder / "private" / "ground_truth.json").read_text())


def test_data_anchors_are_separated_and_cex_are_vertices():
    cfg = config_with_preset("cpu", out="unused", arch="cnn_1_conv", eps_rel=0.5, seed=3)
    d = make_data(cfg)
    n = d.x.shape[0]
    dist = (d.x[:, None] - d.x[None]).flatten(2).abs().amax(2) + 1e9 * np.eye(n)
    assert float(dist.min()) > 2 * cfg.eps_abs
    assert bool(((d.x_cex == d.lo[:10]) | (d.x_cex == d.hi[:10])).all())  # a vertex of the clipped box
    assert float(d.x.abs().max()) <= cfg.data_range and (d.target == 1 - d.y[:10]).all()


def test_planted_counterexamples_violate_in_onnxruntime(bench):
    root, cfg, summary = bench
    folder = root / "mlp"
    truth = _truth(folder)
    planted = [e for e in truth["instances"] if e["kind"] == "planted"]
    assert summary["planted_instances"] == len(planted) >= 1
    sess = onnxruntime.InferenceSession(str(folder / "model.onnx"))
    from certkit.verifiers.complete.vnnlib import parse_vnnlib

    for e in planted:
        x = np.asarray(e["x_cex"], dtype=np.float32)
        y = sess.run(None, {sess.get_inputs()[0].name: x[None]})[0][0]
        assert y[e["target"]] >= y[e["y"]]  # the unsafe region Y_target >= Y_y holds at the planted point
        prop = parse_vnnlib(folder / e["vnnlib"])  # certkit's parser reads every generated file
        term = prop.terms[0]
        assert all(lo <= float(v) <= hi for v, lo, hi in zip(x, term.x_L_exact, term.x_U_exact))
    rows = (folder / "instances.csv").read_text().split()
    kinds = [truth["instances"][i]["kind"] for i in range(len(rows))]
    assert kinds == ["planted"] * len(planted) + ["regular"] * (len(rows) - len(planted))  # planted first
    assert all(r.startswith("model.onnx,vnnlib/") and r.endswith(",20") for r in rows)


def test_instances_load_in_maraboupy(bench):
    Marabou = pytest.importorskip("maraboupy.Marabou")
    root, _, _ = bench
    net = Marabou.read_onnx(str(root / "mlp" / "model.onnx"))
    assert np.asarray(net.inputVars[0]).size == 10 and np.asarray(net.outputVars[0]).size == 2
    from certkit.verifiers.complete.solvers.marabou import marabou_verify

    truth = _truth(root / "mlp")
    e = truth["instances"][0]
    res = marabou_verify(root / "mlp" / "model.onnx", root / "mlp" / e["vnnlib"], timeout=5)
    assert res.status in ("sat", "unknown", "timeout")  # never unsat: a counterexample exists


def test_audit_flags_the_unsound_verifier_and_not_certkit(bench, tmp_path):
    from certkit.soundness_bench.runner import run_verifier
    from certkit.soundness_bench.score import format_audit_table, score

    root, _, _ = bench
    # the planted points are hidden from certkit's attack, so it attacks until the timeout there (2 s per instance;
    # what is checked is that it never answers unsat on them)
    # the bug verifier's answers come when its search ends (within 8 s each when alone); beside two CPU-bound jobs
    # they took 8.6-22.7 s, so the limit is generous: it costs time only on a loaded machine
    run_verifier(root, verifier="bug-shrink-input", timeout=30, quiet=True, overwrite=True)
    run_verifier(root, verifier="certkit", timeout=2, quiet=True, overwrite=True)
    summary = score(root)
    bug, ok = summary["bug-shrink-input"], summary["certkit"]
    assert bug["has_unsound"] and all(i.startswith("mlp/vnnlib/") for i in bug["unsound_instances"])
    assert not ok["has_unsound"] and ok["planted"]["unsat"] == 0
    assert ok["invalid_counterexamples"] == [] and bug["invalid_counterexamples"] == []
    assert sum(ok["planted"].values()) == len([e for e in _truth(root / "mlp")["instances"] if e["kind"] == "planted"])
    table = format_audit_table(summary)
    assert "UNSOUND: bug-shrink-input answered unsat on planted instance mlp/vnnlib/" in table
    from certkit.soundness_bench.score import write_report

    md, png = write_report(summary, tmp_path / "audit.md", positive_controls=("bug-shrink-input",))
    text = md.read_text()
    assert "- **certkit**: sound on this benchmark" in text
    assert "- **bug-shrink-input**: deliberately unsound (positive control): **flagged** on" in text
    assert f"unsat on planted instance `{bug['unsound_instances'][0]}`" in text
    assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG" and "](audit.png)" in text
    assert len(ok["seconds"]) == sum(ok["planted"].values()) + sum(ok["regular"].values())


def test_forged_counterexample_is_invalid(bench, tmp_path):
    """A verifier that answers sat with a point outside the box (or a made-up witness) is listed as invalid."""
    from certkit.soundness_bench.runner import run_verifier
    from certkit.soundness_bench.score import score

    root, _, _ = bench
    script = tmp_path / "liar.py"
    script.write_text("import sys\nopen(sys.argv[3], 'w').write('sat\\n' + ''.join(f'(X_{i} 0.5)' for i in "
                      "range(10)) + '(Y_0 0)(Y_1 1)')\n")
    run_verifier(root, command=[sys.executable, str(script), "{onnx}", "{vnnlib}", "{result}"], name="liar",
                 quiet=True, overwrite=True)
    s = score(root, [root / "results" / "liar"])["liar"]
    n = sum(s["planted"].values()) + sum(s["regular"].values())
    assert s["planted"]["sat"] + s["regular"]["sat"] == n
    assert len(s["invalid_counterexamples"]) == n
    assert all("outside every input box" in e["reason"] for e in s["invalid_counterexamples"])


def test_cli_generate_run_score(cli, tmp_path, bench):
    root, _, _ = bench
    r = cli("soundness", "run", "--bench", root, "--verifier", "certkit-ibp", "--timeout", "10", "--quiet")
    assert r.exit_code == 0, r.output
    out = tmp_path / "s.json"
    r = cli("soundness", "score", "--bench", root, "--results", root / "results" / "certkit-ibp",
            "--summary-json", out, "--fail-on-unsound")
    assert r.exit_code == 0, r.output
    s = json.loads(out.read_text())["certkit-ibp"]
    assert set(s) >= {"planted", "regular", "unsound_instances", "invalid_counterexamples"}
    assert set(s["planted"]) >= {"unsat", "sat", "unknown", "timeout", "error"}
    r = cli("soundness", "score", "--bench", root, "--results", root / "results" / "certkit-ibp", "--report",
            tmp_path / "rep" / "audit.md", "--quiet")
    assert r.exit_code == 0 and (tmp_path / "rep" / "audit.png").is_file(), r.output
    assert "- **certkit-ibp**: sound on this benchmark" in (tmp_path / "rep" / "audit.md").read_text()
    assert_clean_error(cli("soundness", "generate", "--out", root / "mlp", "--preset", "cpu"),
                       "already holds a benchmark")
    assert_clean_error(cli("soundness", "generate", "--out", tmp_path / "x", "--eps-rel", "2"),
                       "relative to the data range")
    assert_clean_error(cli("soundness", "run", "--bench", root, "--command", "verifier {onnx}"), "placeholders")
    assert_clean_error(cli("soundness", "score", "--bench", tmp_path), "no instances.csv")
