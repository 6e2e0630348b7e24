"""The soundness runner and result parsing: exact tokens, argument lists without a shell, timeouts that kill the
verifier's whole process group."""
from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from certkit.common.errors import CertkitError
from certkit.soundness_bench.runner import fill, find_instances, run_verifier, split_template
from certkit.verifiers.complete.vnncomp_format import parse_result_text


@pytest.mark.parametrize("text,status", [
    ("unsat\n", "unsat"), ("UNSAT", "unsat"), ("  sat  \n((X_0 0.5)\n (Y_0 1.0))", "sat"),
    ("unknown", "unknown"), ("timeout\n", "timeout"), ("error", "error"),
    ("holds", "unsat"), ("violated", "sat"),
    # substrings of a real token are NOT that token (the reference's scorer read 'unsat' as 'sat')
    ("unsafe", "error"), ("safe", "error"), ("sat (maybe)", "error"), ("result: unsat", "error"),
    ("unsatisfiable", "error"), ("", "error"), ("\n\n", "error"),
])
def test_result_tokens_match_exactly(text, status):
    assert parse_result_text(text)[0] == status


def test_sat_witness_parsing():
    status, x, why = parse_result_text("sat\n((X_0 0.25)\n (X_1 -1e-3)\n (Y_0 2.0)\n (Y_1 3.5))\n")
    assert status == "sat" and why == "" and x.tolist() == [0.25, -0.001]
    assert parse_result_text("sat\n")[1] is None and parse_result_text("sat\n")[2] == "no witness"
    assert parse_result_text("sat\n((X_0 1)(X_2 3))")[2] == "the witness skips inputs"


def test_template_is_split_once_and_filled_without_a_shell():
    args = split_template("my-verifier --net {onnx} --spec={vnnlib} -o {result} -t {timeout}")
    filled = fill(args, "/a b/net;rm -rf x.onnx", "$(touch pwned).vnnlib", "/r/out.txt", 12.5)
    assert filled == ["my-verifier", "--net", "/a b/net;rm -rf x.onnx", "--spec=$(touch pwned).vnnlib", "-o",
                      "/r/out.txt", "-t", "12.5"]
    with pytest.raises(CertkitError, match="placeholders"):
        split_template("verifier {onnx} {vnnlib}")
    with pytest.raises(CertkitError, match="cannot split"):
        split_template("verifier '{onnx} {vnnlib} {result}")


def _fake_bench(root: Path, names: list[str], timeout: float = 1.0) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "model.onnx").write_bytes(b"not used by the fake verifiers")
    (root / "vnnlib").mkdir(exist_ok=True)
    rows = []
    for n in names:
        (root / "vnnlib" / n).write_text("(declare-const X_0 Real)\n")
        rows.append(f"model.onnx,vnnlib/{n},{timeout:g}")
    (root / "instances.csv").write_text("\n".join(rows) + "\n")
    return root


def _script(tmp_path: Path, body: str) -> str:
    p = tmp_path / "fake_verifier.py"
    p.write_text(textwrap.dedent(body))
    return str(p)


def test_runner_passes_file_names_as_arguments(tmp_path):
    bench = _fake_bench(tmp_path / "bench", ["a b;$(touch pwned).vnnlib"])
    script = _script(tmp_path, """
        import json, sys
        onnx, vnnlib, result, timeout = sys.argv[1:]
        open(result, "w").write("unknown\\n")
        open(result + ".argv.json", "w").write(json.dumps(sys.argv[1:]))
    """)
    rows = run_verifier(bench, command=f"{sys.executable} {script} {{onnx}} {{vnnlib}} {{result}} {{timeout}}",
                        name="fake", quiet=True)
    assert [r["result"] for r in rows] == ["unknown"]
    argv_file = next((bench / "results" / "fake" / "files").glob("*.argv.json"))
    import json

    got = json.loads(argv_file.read_text())
    assert got[1] == str((bench / "vnnlib" / "a b;$(touch pwned).vnnlib").resolve())
    assert got[3] == "1"
    assert not list(tmp_path.rglob("pwned")) and not Path("pwned").exists()


def test_runner_statuses_from_result_files(tmp_path):
    # the fake verifier answers with the text stored in the vnnlib file's name
    names = ["unsat.vnnlib", "unsafe.vnnlib", "sat.vnnlib", "nofile.vnnlib", "crash.vnnlib"]
    bench = _fake_bench(tmp_path / "bench", names)
    script = _script(tmp_path, """
        import os, sys
        onnx, vnnlib, result, timeout = sys.argv[1:]
        word = os.path.basename(vnnlib).split(".")[0]
        if word == "crash":
            raise SystemExit("verifier crashed")
        if word != "nofile":
            open(result, "w").write(word + "\\n")
    """)
    rows = run_verifier(bench, command=[sys.executable, script, "{onnx}", "{vnnlib}", "{result}", "{timeout}"],
                        name="fake", quiet=True)
    got = {Path(r["vnnlib"]).stem: r["result"] for r in rows}
    assert got == {"unsat": "unsat", "unsafe": "error", "sat": "sat", "nofile": "error", "crash": "error"}
    crash = next(r for r in rows if "crash" in r["vnnlib"])
    assert "exit code 1" in crash["reason"] and "verifier crashed" in crash["reason"]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return not any(line.startswith("State:") and "Z" in line.split()[1] for line in f)
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="checks /proc")
def test_timeout_kills_the_verifier_and_its_children(tmp_path):
    bench = _fake_bench(tmp_path / "bench", ["slow.vnnlib"], timeout=0.5)
    pids = tmp_path / "pids.txt"
    script = _script(tmp_path, f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        open({str(pids)!r}, "w").write(f"{{child.pid}}\\n")
        import os
        open({str(pids)!r}, "a").write(f"{{os.getpid()}}\\n")
        time.sleep(120)
    """)
    t0 = time.perf_counter()
    rows = run_verifier(bench, command=[sys.executable, script, "{onnx}", "{vnnlib}", "{result}"], name="slow",
                        grace=0.5, quiet=True)
    assert time.perf_counter() - t0 < 30
    assert rows[0]["result"] == "timeout"
    grandchild, child = (int(p) for p in pids.read_text().split())
    deadline = time.time() + 10
    while time.time() < deadline and (_alive(child) or _alive(grandchild)):
        time.sleep(0.1)
    assert not _alive(child) and not _alive(grandchild)


def test_resume_skips_answered_instances(tmp_path):
    bench = _fake_bench(tmp_path / "bench", ["a.vnnlib", "b.vnnlib"])
    counter = tmp_path / "calls.txt"
    script = _script(tmp_path, f"""
        import sys
        open({str(counter)!r}, "a").write("x")
        open(sys.argv[3], "w").write("unknown")
    """)
    cmd = [sys.executable, script, "{onnx}", "{vnnlib}", "{result}"]
    run_verifier(bench, command=cmd, name="f", quiet=True)
    with pytest.raises(CertkitError, match="--resume"):
        run_verifier(bench, command=cmd, name="f", quiet=True)
    rows = run_verifier(bench, command=cmd, name="f", quiet=True, resume=True)
    assert len(rows) == 2 and counter.read_text() == "xx"


def test_find_instances_errors(tmp_path):
    with pytest.raises(CertkitError, match="not found"):
        find_instances(tmp_path / "nope")
    with pytest.raises(CertkitError, match="no instances.csv"):
        find_instances(tmp_path)
    (tmp_path / "instances.csv").write_text("model.onnx,vnnlib/0.vnnlib,abc\n")
    with pytest.raises(CertkitError, match="not a number"):
        find_instances(tmp_path)


def test_unknown_builtin_verifier_is_a_clean_error(tmp_path):
    bench = _fake_bench(tmp_path / "bench", ["a.vnnlib"])
    with pytest.raises(CertkitError, match="unknown --verifier"):
        run_verifier(bench, verifier="nosuch", quiet=True)
    with pytest.raises(CertkitError, match="exactly one"):
        run_verifier(bench, quiet=True)
    with pytest.raises(CertkitError, match="cannot find"):
        run_verifier(bench, command="/no/such/program {onnx} {vnnlib} {result}", name="x", quiet=True)
    assert os.path.exists(bench / "instances.csv")


def test_a_resumed_runner_stops_the_verifier_its_killed_predecessor_left_running(tmp_path):
    """A runner killed by SIGKILL cannot kill its verifier's process group; the next run (holding the results lock)
    stops it before starting its own, so two verifiers never write the same result file."""
    import json
    import signal as sig
    import socket
    import subprocess
    import time

    from certkit.common.locks import start_time
    from certkit.soundness_bench.runner import stop_orphan

    orphan = subprocess.Popen(["sleep", "60"], start_new_session=True)
    running = tmp_path / "running.json"
    running.write_text(json.dumps({"pid": orphan.pid, "start": start_time(orphan.pid), "host": socket.gethostname()}))
    stop_orphan(running)
    deadline = time.time() + 10
    while orphan.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert orphan.returncode in (-sig.SIGTERM, -sig.SIGKILL) and not running.exists()
    stop_orphan(running)  # nothing to do: no error


def _tool(folder: Path, run_body: str, prepare_body: str | None = None, executable: bool = True) -> Path:
    """A VNN-COMP tool folder with its scripts in vnncomp_scripts/ (as competition repositories keep them)."""
    scripts = folder / "vnncomp_scripts"
    scripts.mkdir(parents=True)
    for name, body in (("run_instance.sh", run_body), ("prepare_instance.sh", prepare_body)):
        if body is None:
            continue
        p = scripts / name
        p.write_text("#!/bin/bash\n" + textwrap.dedent(body))
        if executable:
            p.chmod(0o755)
    return folder


@pytest.mark.parametrize("executable", [True, False])
def test_vnncomp_tool_scripts_get_the_competition_arguments(tmp_path, executable):
    bench = _fake_bench(tmp_path / "mybench", ["unsat.vnnlib", "sat.vnnlib", "skip.vnnlib"])
    tool = _tool(tmp_path / "mytool", """
        [ "$1" = v1 ] || { echo "bad version $1"; exit 1; }
        printf '%s\\n' "$@" > "$5.args"
        echo "$(pwd)" > "$5.cwd"
        case "$(basename "$4")" in unsat.*) echo unsat > "$5";; *) echo unknown > "$5";; esac
    """, """
        [ "$1" = v1 ] || exit 1
        case "$(basename "$4")" in skip.*) exit 3;; esac
        exit 0
    """, executable)
    rows = run_verifier(bench, tool=tool, quiet=True)
    assert [r["result"] for r in rows] == ["unsat", "unknown", "error"]
    assert "prepare_instance.sh exited 3" in rows[2]["reason"]
    files = bench / "results" / "mytool" / "files"
    args = (files / "unsat.txt.args").read_text().split("\n")[:6]
    assert args == ["v1", "mybench", str((bench / "model.onnx").resolve()), str((bench / "vnnlib" / "unsat.vnnlib")
                    .resolve()), str((files / "unsat.txt").resolve()), "1"]
    assert (files / "unsat.txt.cwd").read_text().strip() == str((tool / "vnncomp_scripts").resolve())


def test_vnncomp_tool_timeouts_kill_the_group_and_bad_folders_are_one_line_errors(tmp_path):
    bench = _fake_bench(tmp_path / "b", ["slow.vnnlib"], timeout=0.5)
    marker = tmp_path / "survivor"
    tool = _tool(tmp_path / "slowtool", f"""
        (sleep 4; touch {marker}) &
        sleep 30
    """)
    t0 = time.perf_counter()
    rows = run_verifier(bench, tool=tool, grace=0.5, quiet=True)
    assert rows[0]["result"] == "timeout" and time.perf_counter() - t0 < 6
    time.sleep(4.5)
    assert not marker.exists()  # the child of run_instance.sh died with its process group
    prep = _tool(tmp_path / "slowprep", "echo unsat > \"$5\"\n", "sleep 30\n")
    rows = run_verifier(bench, tool=prep, prepare_timeout=0.5, quiet=True)
    assert rows[0]["result"] == "error" and "timed out" in rows[0]["reason"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(CertkitError, match="run_instance.sh"):
        run_verifier(bench, tool=tmp_path / "empty", quiet=True)
    with pytest.raises(CertkitError, match="exactly one"):
        run_verifier(bench, verifier="certkit", tool=tool, quiet=True)


def _tiny_vnncomp_bench(root: Path) -> Path:
    from conftest import DATA

    src = DATA / "vnncomp2021"
    root.mkdir(parents=True)
    rows = []
    for onnx, vnnlib in (("test_sat.onnx", "test_prop.vnnlib"), ("test_unsat.onnx", "test_prop.vnnlib"),
                         ("test_nano.onnx", "test_nano.vnnlib")):
        for f in (onnx, vnnlib):
            if not (root / f).exists():
                (root / f).write_bytes((src / f).read_bytes())
        rows.append(f"{onnx},{vnnlib},20")
    (root / "instances.csv").write_text("\n".join(rows) + "\n")
    return root


def test_persistent_worker_answers_like_a_process_per_instance_and_restarts_after_a_kill(tmp_path):
    pytest.importorskip("onnxruntime")
    bench = _tiny_vnncomp_bench(tmp_path / "b")
    fresh = run_verifier(bench, verifier="certkit", quiet=True, results=tmp_path / "fresh", worker=False)
    pooled = run_verifier(bench, verifier="certkit", quiet=True, results=tmp_path / "pooled")
    assert [r["result"] for r in pooled] == [r["result"] for r in fresh] == ["sat", "unsat", "unsat"]
    assert "ready" not in (tmp_path / "pooled" / "logs" / "worker.log").read_text()  # protocol stays on stdout
    assert not (tmp_path / "pooled" / "running.json").exists()                       # the worker is gone
    # a limit far below the time an answer takes: every instance is killed, and each gets a fresh worker
    killed = run_verifier(bench, verifier="certkit", quiet=True, results=tmp_path / "killed", timeout=5,
                          grace=-4.99)
    assert [r["result"] for r in killed] == ["timeout"] * 3
    assert not (tmp_path / "killed" / "running.json").exists()
