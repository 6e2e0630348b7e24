"""What certkit promises when things go wrong, each promise tested.

Kill and resume: every long command is SIGKILLed at a random point (common/faults.py, ``CERTKIT_FAULT``: for result
files in the middle of writing a row, so a torn half row is on disk; for training between a log row and its
checkpoint or after the checkpoint), then resumed; the final outputs equal an uninterrupted run with the same seed
(row for row, timing columns aside; training weights bit for bit), no row is duplicated or torn, and a resume with
other settings is refused. Output faults (uncreatable path, full disk, read-only file system) are one-line errors
that leave what was written intact; a second writer of the same output refuses while the first runs.
"""
import csv
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
import torch

from certkit.common import faults

from conftest import DATA, assert_clean_error

TIMING = ("time", "seconds")


def killed(args, fault: str) -> subprocess.CompletedProcess:
    """Run ``certkit ARGS`` in a subprocess that SIGKILLs itself at ``fault`` (ACTION:POINT:N); it must die so."""
    env = {**os.environ, "CERTKIT_FAULT": fault}
    r = subprocess.run([sys.executable, "-m", "certkit.cli", *map(str, args)], env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == -signal.SIGKILL, f"not killed at {fault}: rc {r.returncode}\n{r.stderr[-2000:]}"
    return r


def rows(path, sep="\t"):
    """The rows of a results file without timing columns; asserts every line is whole and no key repeats."""
    text = Path(path).read_text()
    assert text.endswith("\n")
    lines = text.split("\n")[:-1]
    head = lines[0].split(sep)
    out = []
    for line in lines[1:]:
        cells = line.split(sep)
        assert len(cells) == len(head), f"torn row {line!r}"
        out.append(tuple(c for h, c in zip(head, cells) if h not in TIMING))
    keys = [r[0] for r in out]
    assert len(keys) == len(set(keys)), "a row is duplicated"
    return out


def point(name: str, low: int, high: int) -> int:
    """A random kill point in [low, high], the same in every run of the tests (seeded by ``name``)."""
    return random.Random(zlib.crc32(name.encode())).randint(low, high)


def run_ok(cli, *args):
    r = cli(*args)
    assert r.exit_code == 0, r.output
    return r


@pytest.fixture(scope="module")
def dual_model(tmp_path_factory):
    from click.testing import CliRunner

    from certkit.cli import main

    d = tmp_path_factory.mktemp("dual")
    r = CliRunner().invoke(main, ["train", "--method", "gaussian", "--hidden", "32", "--epochs", "2", "--out",
                                  str(d / "g.pt"), "--quiet"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["train", "--method", "dual", "--init-from", str(d / "g.pt"), "--epochs", "1",
                                  "--out", str(d / "dual.pt"), "--quiet"])
    assert r.exit_code == 0, r.output
    return d


# ------------------------------------------------------------------------------------------ result files
@pytest.mark.parametrize("command,args,total", [
    ("certify-gaussian", ["certify", "--n", 400, "--n0", 20, "--max", 10], 10),
    ("certify-lvm", ["certify", "--method", "lvm", "--n", 200, "--n0", 20, "--max", 10, "--calibration-size", 20,
                     "--calibration-noise", 200], 10),
    ("certify-dual", ["certify", "--method", "dual", "--n", 200, "--n0", 20, "--max", 10], 10),
    ("certify-sequential", ["certify", "--method", "sequential", "--radii", "0.25,0.5", "--n", 3000, "--max", 10], 10),
    ("certify-shard", ["certify", "--shard", "1/2", "--n", 300, "--n0", 20, "--max", 20], 10),
    ("predict", ["predict", "--n", 300, "--max", 10], 10),
    ("verify", ["verify", "--eps", 0.02, "--method", "IBP,CROWN", "--max", 24, "--batch", 4, "--pgd-steps", 5,
                "--pgd-restarts", 1], 24),
    ("conformal", ["conformal", "--no-ptt", "--splits", 6, "--n-mc", 16, "--max", 60, "--attack-steps", 2,
                   "--eps-l2", 0.1], 6),
])
def test_killed_run_resumes_to_the_uninterrupted_result(cli, tmp_path, dual_model, command, args, total):
    if command == "certify-dual":
        args = args + ["--model", dual_model / "dual.pt"]
    args = args + ["--quiet"]
    run_ok(cli, *args, "--out", tmp_path / "ref.tsv")
    n = point(command, 2, total - 1)
    killed(args + ["--out", tmp_path / "k.tsv"], f"kill:row:{n}")
    assert (tmp_path / "k.tsv.lock").exists()  # the killed process left its lock: a stale one must not block
    assert len(_complete_rows(tmp_path / "k.tsv")) == n - 1  # and a torn half of row n
    assert_clean_error(cli(*args, "--out", tmp_path / "k.tsv", "--seed", 7, "--resume"), "different settings")
    run_ok(cli, *args, "--out", tmp_path / "k.tsv", "--resume")
    assert rows(tmp_path / "k.tsv") == rows(tmp_path / "ref.tsv")
    assert not (tmp_path / "k.tsv.lock").exists()


def test_killed_vnncomp_benchmark_run_resumes(cli, tmp_path):
    bench = tmp_path / "bench"
    bench.mkdir()
    for name in ("test_nano.onnx", "test_nano.vnnlib", "test_tiny.onnx", "test_tiny.vnnlib", "test_sat.onnx",
                 "test_prop.vnnlib", "test_unsat.onnx"):
        shutil.copy(DATA / "vnncomp2021" / name, bench)
    (bench / "instances.csv").write_text("test_nano.onnx,test_nano.vnnlib,30\ntest_tiny.onnx,test_tiny.vnnlib,30\n"
                                         "test_sat.onnx,test_prop.vnnlib,30\ntest_unsat.onnx,test_prop.vnnlib,30\n")
    args = ["verify", "--mode", "benchmark", "--instances", bench / "instances.csv", "--quiet"]
    run_ok(cli, *args, "--out", tmp_path / "ref.tsv")
    killed(args + ["--out", tmp_path / "k.tsv"], f"kill:row:{point('vnncomp', 2, 3)}")
    assert_clean_error(cli(*args, "--out", tmp_path / "k.tsv", "--no-bab", "--resume"), "different settings")
    run_ok(cli, *args, "--out", tmp_path / "k.tsv", "--resume")
    assert rows(tmp_path / "k.tsv") == rows(tmp_path / "ref.tsv")
    assert [r[3] for r in rows(tmp_path / "k.tsv")] == ["unsat", "unsat", "sat", "unsat"]


# ------------------------------------------------------------------------------------------ training
def _weights(path):
    return torch.load(path, weights_only=True)["state_dict"]


def _log(path):
    lines = list(csv.reader(open(path, newline="")))
    epochs = [r[0] for r in lines[1:]]
    assert len(epochs) == len(set(epochs)), "a log row is duplicated"
    keep = [i for i, c in enumerate(lines[0]) if not c.endswith("seconds")]   # times differ from run to run
    return [[r[i] for i in keep] for r in lines]


@pytest.mark.parametrize("method,extra", [
    ("natural", []), ("gaussian", []), ("ibp", ["--eps", 0.1]), ("crown-ibp", ["--eps", 0.1]),
    ("dual", ["--init-from", "DUAL_BASE"]), ("rct", ["--init-from", "BUNDLED", "--eps-l2", 0.1]),
])
def test_killed_training_resumes_bit_for_bit(cli, tmp_path, dual_model, method, extra):
    from certkit.models import bundled_checkpoint_path

    extra = [dual_model / "g.pt" if a == "DUAL_BASE" else bundled_checkpoint_path() if a == "BUNDLED" else a
             for a in extra]
    hidden = [] if method in ("dual", "rct") else ["--hidden", 16]
    # a fixed thread count: the governor would otherwise pick one from the machine's load, and sums reduced over
    # another number of threads differ in the last bits
    args = ["train", "--method", method, *extra, *hidden, "--epochs", 4, "--quiet", "--threads", 1]
    run_ok(cli, *args, "--out", tmp_path / "ref.pt")
    # between a log row and its checkpoint (from epoch 2: a checkpoint must exist) or after a checkpoint
    where = random.Random(zlib.crc32(method.encode())).choice(["epoch-log", "epoch"])
    killed(args + ["--out", tmp_path / "k.pt"], f"kill:{where}:{point(method, 2 if where == 'epoch-log' else 1, 3)}")
    assert_clean_error(cli(*args, "--out", tmp_path / "k.pt", "--lr", 0.5, "--resume"), "other settings")
    assert_clean_error(cli(*args, "--out", tmp_path / "k.pt"), "--resume")
    run_ok(cli, *args, "--out", tmp_path / "k.pt", "--resume")
    a, b = _weights(tmp_path / "ref.pt"), _weights(tmp_path / "k.pt")
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert _log(tmp_path / "k.log.csv") == _log(tmp_path / "ref.log.csv")


# ------------------------------------------------------------------------------------------ soundness benchmark
GEN = ["soundness", "generate", "--arch", "mlp_4_hidden", "--input-size", 12, "--eps-rel", 0.2, "--preset", "cpu",
       "--epochs", 20, "--check-every", 5, "--width", 16, "--sweep", "0.25:0,0.25:20", "--sweep-restarts", 1,
       "--strong-restarts", 1, "--vertex-samples", 8, "--n-planted", 2, "--n-regular", 2, "--timeout", 5, "--quiet"]


def _benchmark_files(d: Path) -> dict:
    out = {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*"))
           if p.is_file() and p.suffix in (".csv", ".vnnlib") and "private" not in p.parts}
    out["ground_truth"] = (d / "private" / "ground_truth.json").read_bytes()
    out["log"] = _log(d / "private" / "train_log.csv")
    state = torch.load(d / "private" / "train_state.pt", weights_only=True)["model"]
    out["weights"] = {k: v.tolist() for k, v in state.items()}
    return out


def test_killed_generation_and_audit_resume(cli, tmp_path):
    pytest.importorskip("onnxruntime")
    run_ok(cli, *GEN, "--out", tmp_path / "ref")
    killed(GEN + ["--out", tmp_path / "k"], f"kill:epoch:{point('generate', 1, 3)}")
    assert_clean_error(cli(*GEN[:-1], "--width", 8, "--quiet", "--out", tmp_path / "k", "--resume"), "other settings")
    run_ok(cli, *GEN, "--out", tmp_path / "k", "--resume")
    assert _benchmark_files(tmp_path / "k") == _benchmark_files(tmp_path / "ref")
    # the audit: killed while writing its second answer, resumed, same answers
    run = ["soundness", "run", "--bench", tmp_path / "ref", "--verifier", "certkit-ibp", "--timeout", 5, "--quiet"]
    run_ok(cli, *run, "--out", tmp_path / "audit_ref")
    killed(run + ["--out", tmp_path / "audit_k"], "kill:row:2")
    assert_clean_error(cli(*run[:-3], "--timeout", 3, "--quiet", "--out", tmp_path / "audit_k", "--resume"),
                       "different settings")
    run_ok(cli, *run, "--out", tmp_path / "audit_k", "--resume")
    assert rows(tmp_path / "audit_k" / "results.tsv") == rows(tmp_path / "audit_ref" / "results.tsv")


# ------------------------------------------------------------------------------------------ output faults
def test_uncreatable_output_is_a_one_line_error(cli, tmp_path):
    assert_clean_error(cli("certify", "--n", 50, "--max", 2, "--quiet", "--out", "/proc/x/y.tsv"), "/proc/x/y.tsv")
    assert_clean_error(cli("verify", "--eps", 0.01, "--max", 2, "--quiet", "--out", "/proc/x/y.tsv"), "/proc/x/y.tsv")
    (tmp_path / "f").write_text("a file where a folder should be\n")
    assert_clean_error(cli("train", "--epochs", 1, "--hidden", 8, "--quiet", "--out", tmp_path / "f" / "m.pt"),
                       "cannot")


@pytest.mark.parametrize("action,words", [("enospc", "No space left on device"),
                                          ("erofs", "Read-only file system")])
def test_full_disk_or_read_only_keeps_written_rows_and_resumes(cli, tmp_path, monkeypatch, action, words):
    args = ["certify", "--n", 300, "--n0", 10, "--max", 6, "--quiet"]
    run_ok(cli, *args, "--out", tmp_path / "ref.tsv")
    monkeypatch.setenv("CERTKIT_FAULT", f"{action}:row:4")
    faults.reset()
    assert_clean_error(cli(*args, "--out", tmp_path / "k.tsv"), words, "3 rows written before are intact")
    assert _complete_rows(tmp_path / "k.tsv") == rows(tmp_path / "ref.tsv")[:3]
    monkeypatch.delenv("CERTKIT_FAULT")
    run_ok(cli, *args, "--out", tmp_path / "k.tsv", "--resume")
    assert rows(tmp_path / "k.tsv") == rows(tmp_path / "ref.tsv")


def _complete_rows(path):
    """Rows (timing columns aside) of a file whose last line may be torn."""
    text = Path(path).read_text()
    lines = text.split("\n")
    head = lines[0].split("\t")
    return [tuple(c for h, c in zip(head, ln.split("\t")) if h not in TIMING) for ln in lines[1:-1]]


def test_training_that_cannot_write_its_checkpoint_keeps_the_last_one(cli, tmp_path, monkeypatch):
    args = ["train", "--hidden", 8, "--epochs", 3, "--quiet"]
    run_ok(cli, *args, "--out", tmp_path / "ref.pt")
    monkeypatch.setenv("CERTKIT_FAULT", "enospc:epoch-log:2")
    faults.reset()
    assert_clean_error(cli(*args, "--out", tmp_path / "k.pt"), "No space left on device", "--resume")
    assert torch.load(tmp_path / "k.pt", weights_only=True)["train_state"]["epoch"] == 1
    monkeypatch.delenv("CERTKIT_FAULT")
    run_ok(cli, *args, "--out", tmp_path / "k.pt", "--resume")
    a, b = _weights(tmp_path / "ref.pt"), _weights(tmp_path / "k.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _log(tmp_path / "k.log.csv") == _log(tmp_path / "ref.log.csv")


def test_a_second_writer_refuses_while_the_first_runs(cli, tmp_path):
    out = tmp_path / "c.tsv"
    args = ["certify", "--n", 200, "--n0", 10, "--max", 5, "--quiet", "--out", out]
    env = {**os.environ, "CERTKIT_FAULT": "stall:row:2"}  # holds the file for 60 s after one row and a half
    first = subprocess.Popen([sys.executable, "-m", "certkit.cli", *map(str, args)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        torn = lambda t: t.count("\n") >= 2 and not t.endswith("\n")  # row 1 and half of row 2: now it stalls
        while not (out.exists() and torn(out.read_text())) and time.time() < deadline:
            time.sleep(0.2)
        before = out.read_text()
        assert torn(before)
        r = cli(*args, "--resume")
        assert_clean_error(r, "another certkit process", f"pid {first.pid}")
        assert_clean_error(cli(*args, "--overwrite"), "another certkit process")
        assert out.read_text() == before  # nothing interleaved, nothing replaced
    finally:
        first.kill()
        first.wait()
    run_ok(cli, *args, "--resume")  # the holder is gone: its lock is stale and taken over
    assert len(rows(out)) == 5
