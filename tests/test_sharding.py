"""Sharded certification: `--shard K/N` + `certkit merge`, and torchrun ranks (2 gloo processes on CPU), give the
rows of a single-process run in the same order; shards with other settings are refused; a killed torchrun job
resumes."""
import os
import subprocess
import sys

from test_faults import rows

from conftest import assert_clean_error

ARGS = ["certify", "--n", 300, "--n0", 20, "--max", 9, "--quiet"]


def test_shards_merge_to_the_single_process_result(cli, tmp_path):
    r = cli(*ARGS, "--out", tmp_path / "one.tsv")
    assert r.exit_code == 0, r.output
    for k in range(3):
        r = cli(*ARGS, "--shard", f"{k}/3", "--out", tmp_path / f"s{k}.tsv")
        assert r.exit_code == 0, r.output
    shards = [tmp_path / f"s{k}.tsv" for k in (2, 0, 1)]  # any order
    r = cli("merge", "--out", tmp_path / "m.tsv", *shards)
    assert r.exit_code == 0, r.output
    assert rows(tmp_path / "m.tsv") == rows(tmp_path / "one.tsv")
    assert r.output.splitlines()[1:4] == cli(*ARGS, "--out", tmp_path / "again.tsv").output.splitlines()[1:4]
    assert_clean_error(cli("merge", "--out", tmp_path / "m2.tsv", *shards[:2]), "exactly once")
    assert_clean_error(cli("merge", "--out", tmp_path / "m3.tsv", shards[0], shards[0], shards[1]), "exactly once")
    r = cli(*ARGS[:-1], "--seed", 1, "--quiet", "--shard", "1/3", "--out", tmp_path / "other.tsv")
    assert r.exit_code == 0, r.output
    assert_clean_error(cli("merge", "--out", tmp_path / "m4.tsv", shards[0], tmp_path / "other.tsv", shards[0]),
                       "exactly once")
    assert_clean_error(cli("merge", "--out", tmp_path / "m5.tsv", tmp_path / "s0.tsv", tmp_path / "other.tsv",
                           tmp_path / "s2.tsv"), "other settings")
    assert_clean_error(cli("merge", "--out", tmp_path / "m.tsv", *shards), "exists")
    assert_clean_error(cli(*ARGS, "--shard", "3/3", "--out", tmp_path / "x.tsv"), "0 <= K < N")
    assert_clean_error(cli(*ARGS, "--shard", "a/b", "--out", tmp_path / "y.tsv"), "K/N")


def _torchrun(args, tmp_path, port, fault=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}  # torchrun leaves torchelastic_* folders
    if fault:
        env["CERTKIT_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           str(port), "-m", "certkit.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=env, cwd=tmp_path)


def test_torchrun_ranks_share_the_inputs_and_a_killed_job_resumes(cli, tmp_path):
    one = cli(*ARGS, "--out", tmp_path / "one.tsv")
    assert one.exit_code == 0, one.output
    # torchrun's own options swallow --n and --max: the long names pass through
    args = ["certify", "--num-samples", 300, "--n0", 20, "--max-inputs", 9, "--quiet", "--device", "cpu",
            "--out", tmp_path / "tr.tsv"]
    r = _torchrun(args, tmp_path, 29541, fault="kill:row:3")
    assert r.returncode != 0 and not (tmp_path / "tr.tsv").exists()
    r = _torchrun(args + ["--resume"], tmp_path, 29542)
    assert r.returncode == 0, r.stderr[-2000:]
    assert rows(tmp_path / "tr.tsv") == rows(tmp_path / "one.tsv")
    assert "certified accuracy" in r.stdout and r.stdout.count("results:") == 1  # rank 0 reports, once


def test_benchmark_shards_and_torchrun_ranks_give_the_single_process_rows(cli, tmp_path):
    """`verify --mode benchmark --shard K/N` + `certkit merge`, and two torchrun ranks: the rows (and settings) of
    one process; a merged file resumes as a finished single-process run."""
    from pathlib import Path

    data = Path(__file__).parent / "data" / "vnncomp2021"
    csv = tmp_path / "instances.csv"
    csv.write_text("".join(f"{data / o},{data / v},60\n" for o, v in (
        ("test_nano.onnx", "test_nano.vnnlib"), ("test_tiny.onnx", "test_tiny.vnnlib"),
        ("test_sat.onnx", "test_prop.vnnlib"), ("test_unsat.onnx", "test_prop.vnnlib"))))
    args = ["verify", "--mode", "benchmark", "--instances", csv, "--quiet"]
    r = cli(*args, "--out", tmp_path / "one.tsv")
    assert r.exit_code == 0, r.output
    for k in range(2):
        r = cli(*args, "--shard", f"{k}/2", "--out", tmp_path / f"s{k}.tsv")
        assert r.exit_code == 0, r.output
    assert [x[0] for x in rows(tmp_path / "s1.tsv")] == ["1", "3"]
    r = cli("merge", "--out", tmp_path / "m.tsv", tmp_path / "s1.tsv", tmp_path / "s0.tsv")
    assert r.exit_code == 0, r.output
    assert "unsat 3" in r.output and "sat 1" in r.output
    assert rows(tmp_path / "m.tsv") == rows(tmp_path / "one.tsv")
    assert (tmp_path / "m.tsv.config.json").read_text() == (tmp_path / "one.tsv.config.json").read_text()
    r = cli(*args, "--out", tmp_path / "m.tsv", "--resume")  # nothing left to do
    assert r.exit_code == 0 and rows(tmp_path / "m.tsv") == rows(tmp_path / "one.tsv"), r.output
    assert_clean_error(cli("merge", "--out", tmp_path / "m2.tsv", tmp_path / "s0.tsv"), "exactly once")
    assert_clean_error(cli("merge", "--out", tmp_path / "m3.tsv", tmp_path / "s0.tsv", tmp_path / "one.tsv"),
                       "not computed as a shard")
    r = cli(*args, "--no-bab", "--shard", "1/2", "--out", tmp_path / "other.tsv")
    assert r.exit_code == 0, r.output
    assert_clean_error(cli("merge", "--out", tmp_path / "m4.tsv", tmp_path / "s0.tsv", tmp_path / "other.tsv"),
                       "other settings")
    assert_clean_error(cli(*args, "--shard", "2/2", "--out", tmp_path / "x.tsv"), "0 <= K < N")
    assert_clean_error(cli("verify", "--mode", "dataset", "--eps", 0.1, "--shard", "0/2"), "--mode benchmark")

    tr = _torchrun(["verify", "--mode", "benchmark", "--instances", csv, "--quiet", "--out", tmp_path / "tr.tsv"],
                   tmp_path, 29543)
    assert tr.returncode == 0, tr.stderr[-2000:]
    assert rows(tmp_path / "tr.tsv") == rows(tmp_path / "one.tsv")
    assert tr.stdout.count("results:") == 1  # rank 0 reports, once
