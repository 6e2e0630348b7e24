"""Run a verifier on every instance of a benchmark, as VNN-COMP does: one subprocess per instance (built-in verifiers:
one persistent worker process per audit, :class:`Worker`, unless ``worker=False``).

The verifier is a command TEMPLATE with the placeholders {onnx}, {vnnlib}, {result} and optionally {timeout}. It
is split into an argument list ONCE (shell syntax, ``shlex``) and the placeholders are replaced inside the
arguments, so file names never pass through a shell. Each instance runs in its own process group (session); at
``timeout + grace`` seconds the whole group -- the verifier and every process it started -- gets SIGTERM, then
SIGKILL, and the answer is ``timeout``. After a normal exit, leftover processes of the group are killed too.

``--vnncomp-tool DIR`` drives a tool folder packaged for VNN-COMP (the competition's scripts, in DIR or in
DIR/vnncomp_scripts): per instance ``prepare_instance.sh v1 CATEGORY ONNX VNNLIB`` (optional; a non-zero exit means
the tool declines the instance, recorded as ``error``; its own time limit ``prepare_timeout``), then
``run_instance.sh v1 CATEGORY ONNX VNNLIB RESULT TIMEOUT``, both run from the scripts' folder in their own process
group with the same timeouts and parsing as any command. CATEGORY is the instance's benchmark folder name (the
--bench folder's own name for a single benchmark). Scripts without the execute bit run through bash.

The result file is parsed by exact token (verifiers.vnncomp.parse_result_text); a missing or unreadable file is
``error``. Results go row by row to ``<results>/results.tsv`` (resumable) with the verifier's output in
``<results>/logs/`` and its result files in ``<results>/files/``.
"""
from __future__ import annotations

import json
import os
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from certkit.common.errors import CertkitError
from certkit.common.locks import alive, start_time
from certkit.common.results import ResultWriter
from certkit.verifiers.complete.vnncomp_format import parse_result_text, read_instances

PLACEHOLDERS = ("{onnx}", "{vnnlib}", "{result}", "{timeout}", "{category}")
VNNCOMP_VERSION = "v1"  # the version string VNN-COMP passes to a tool's scripts
COLUMNS = ("idx", "benchmark", "onnx", "vnnlib", "result", "seconds", "reason")


@dataclass
class BenchInstance:
    """One row of an instances.csv: ``benchmark`` is its folder relative to the --bench root ('.' for the root)."""

    idx: int
    root: Path
    benchmark: str
    onnx: str
    vnnlib: str
    timeout: float

    @property
    def folder(self) -> Path:
        return self.root / self.benchmark

    @property
    def key(self) -> tuple[str, str]:
        return self.benchmark, self.vnnlib

    @property
    def category(self) -> str:
        """The VNN-COMP benchmark category: the benchmark folder's name."""
        return (self.root / self.benchmark).resolve().name


def find_instances(bench: str | Path) -> list[BenchInstance]:
    """The instances of ``bench``: its own instances.csv, or those of its direct subfolders (one per model).

    Raises:
        CertkitError: no instances.csv, or a malformed row (needs onnx,vnnlib,timeout).
    """
    root = Path(bench)
    if not root.is_dir():
        raise CertkitError(f"benchmark folder not found: {root}")
    csvs = [root / "instances.csv"] if (root / "instances.csv").is_file() else sorted(root.glob("*/instances.csv"))
    if not csvs:
        raise CertkitError(f"{root} has no instances.csv (nor do its subfolders): generate one with "
                           f"`certkit soundness generate`")
    out: list = []
    for path in csvs:
        rel = os.path.relpath(path.parent, root)
        for onnx, vnnlib, tmo in read_instances(path):
            out.append(BenchInstance(len(out), root, rel, onnx, vnnlib, tmo))
    return out


def builtin_template(name: str) -> list[str]:
    """Argument list of built-in verifier ``name`` (see adapters.py)."""
    # imported here, not at module level: the adapters module runs as ``python -m``, and importing it with the
    # package first makes runpy warn in every verifier log
    from certkit.soundness_bench.adapters import audit_verifiers

    known = audit_verifiers()
    if name not in known:
        raise CertkitError(f"unknown --verifier {name!r}: choose from {', '.join(known)} or pass --command")
    return [sys.executable, "-m", "certkit.soundness_bench.adapters", name, "{onnx}", "{vnnlib}", "{result}",
            "{timeout}"]


def split_template(template: str | list[str]) -> list[str]:
    """Split a command template into arguments (shell quoting rules, no shell) and check its placeholders.

    Raises:
        CertkitError: empty template, unbalanced quotes, or {onnx} / {vnnlib} / {result} missing.
    """
    if isinstance(template, str):
        try:
            args = shlex.split(template)
        except ValueError as e:
            raise CertkitError(f"cannot split --command: {e}") from None
    else:
        args = list(template)
    if not args:
        raise CertkitError("--command is empty")
    joined = " ".join(args)
    missing = [p for p in PLACEHOLDERS[:3] if p not in joined]
    if missing:
        raise CertkitError(f"--command needs the placeholders {', '.join(missing)} (and may use {{timeout}})")
    return args


def vnncomp_tool(tool: str | Path) -> tuple[list[str] | None, list[str], Path]:
    """(prepare argument list or None, run argument list, scripts folder) of a VNN-COMP tool folder (module
    docstring), with the placeholders {category} {onnx} {vnnlib} {result} {timeout}.

    Raises:
        CertkitError: not a folder, or no run_instance.sh in it or in its vnncomp_scripts/.
    """
    root = Path(tool)
    if not root.is_dir():
        raise CertkitError(f"--vnncomp-tool {root} is not a folder")
    scripts = next((d for d in (root, root / "vnncomp_scripts") if (d / "run_instance.sh").is_file()), None)
    if scripts is None:
        raise CertkitError(f"--vnncomp-tool {root} has no run_instance.sh (nor vnncomp_scripts/run_instance.sh)")
    scripts = scripts.resolve()

    def argv(name: str) -> list[str]:
        path = scripts / name
        return [str(path)] if os.access(path, os.X_OK) else ["bash", str(path)]

    run = argv("run_instance.sh") + [VNNCOMP_VERSION, "{category}", "{onnx}", "{vnnlib}", "{result}", "{timeout}"]
    prepare = (argv("prepare_instance.sh") + [VNNCOMP_VERSION, "{category}", "{onnx}", "{vnnlib}"]
               if (scripts / "prepare_instance.sh").is_file() else None)
    return prepare, run, scripts


def fill(args: list[str], onnx: str, vnnlib: str, result: str, timeout: float, category: str = "") -> list[str]:
    """Replace the placeholders inside every argument (plain text replacement, no shell, no format())."""
    vals = {"{onnx}": onnx, "{vnnlib}": vnnlib, "{result}": result, "{timeout}": f"{timeout:g}",
            "{category}": category}
    out = []
    for a in args:
        for k, v in vals.items():
            a = a.replace(k, v)
        out.append(a)
    return out


def _kill_group(pgid: int) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return
        if sig == signal.SIGTERM:
            time.sleep(0.5)


def run_command(argv: list[str], timeout: float, log_path: str | Path,
                running: str | Path | None = None, cwd: str | Path | None = None) -> tuple[int | None, float, bool]:
    """Run argv in a new process group with stdout+stderr to ``log_path``; kill the group at ``timeout`` seconds.

    ``running``: a file that names the group while it runs (pid, start time, host), so that a runner killed in the
    meantime can stop the orphaned verifier when it resumes (:func:`stop_orphan`).
    Returns (exit code or None when killed, seconds, timed_out).

    Raises:
        CertkitError: the program cannot be started (not found / not executable).
    """
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log_path, "wb") as log:
        try:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, cwd=cwd)
        except OSError as e:
            raise CertkitError(f"cannot start {argv[0]!r}: {e.strerror or e}") from None
        if running is not None:
            Path(running).write_text(json.dumps({"pid": proc.pid, "start": start_time(proc.pid),
                                                 "host": socket.gethostname()}) + "\n")
        try:
            code = proc.wait(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            code, timed_out = None, True
        _kill_group(proc.pid)  # the verifier's own group: stragglers after an exit, everything after a timeout
        if timed_out:
            proc.wait()
    if running is not None:
        Path(running).unlink(missing_ok=True)
    return code, time.perf_counter() - t0, timed_out


class Worker:
    """A persistent built-in verifier (``python -m certkit.soundness_bench.adapters --worker NAME``) in its own
    process group: instances go to it one by one, so Python and torch start once per audit. An instance that
    overruns its time kills the whole group (the answer is ``timeout``) and the next instance starts a fresh worker.
    """

    def __init__(self, name: str, log_path: Path, running: Path | None, start_timeout: float = 120.0):
        self.name, self.log_path, self.running, self.start_timeout = name, Path(log_path), running, start_timeout
        self.proc: subprocess.Popen | None = None

    def _start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "certkit.soundness_bench.adapters", "--worker",
                                          self.name], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                         start_new_session=True)
        finally:
            log.close()
        assert self.proc is not None
        if self.running is not None:
            Path(self.running).write_text(json.dumps({"pid": self.proc.pid, "start": start_time(self.proc.pid),
                                                      "host": socket.gethostname()}) + "\n")
        reply = self._read(self.start_timeout)
        if not reply or not reply.get("ready"):
            self.close()
            raise CertkitError(f"the {self.name} worker did not start ({(reply or {}).get('error') or 'no reply'}; "
                               f"see {self.log_path})")

    def _read(self, timeout: float) -> dict | None:
        """The next JSON line of the worker within ``timeout`` seconds; None on timeout or exit."""
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.perf_counter() + timeout
        buf = b""
        while not buf.endswith(b"\n"):
            left = deadline - time.perf_counter()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            buf += chunk
        try:
            return json.loads(buf.decode(errors="replace").strip().splitlines()[-1])
        except ValueError:
            return None

    def ask(self, onnx: str, vnnlib: str, result: str, timeout: float, limit: float) -> tuple[dict | None, float]:
        """Send one instance (the verifier's own ``timeout``), wait ``limit`` seconds for the answer. Returns (the
        reply {"status", "reason"} or None when the worker overran or died, seconds)."""
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        t0 = time.perf_counter()
        req = json.dumps({"onnx": onnx, "vnnlib": vnnlib, "result": result, "timeout": timeout}) + "\n"
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(req.encode())
            self.proc.stdin.flush()
            reply = self._read(limit)
        except (BrokenPipeError, OSError):
            reply = None
        secs = time.perf_counter() - t0
        if reply is None:
            self.close()
        return reply, secs

    def close(self) -> None:
        if self.proc is None:
            return
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            self.proc.wait(timeout=2)
        except (OSError, subprocess.TimeoutExpired):
            pass
        _kill_group(self.proc.pid)
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None
        if self.running is not None:
            Path(self.running).unlink(missing_ok=True)


def stop_orphan(running: str | Path) -> None:
    """Kill the process group named by ``running`` if it still runs (its runner was killed while it ran)."""
    path = Path(running)
    if not path.is_file():
        return
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        holder = {}
    if holder and holder.get("host") == socket.gethostname() and alive(holder):
        _kill_group(int(holder["pid"]))
    path.unlink(missing_ok=True)


def _tail(path: Path, n: int = 200) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return text[-1][:n] if text else ""


def results_dir(bench: str | Path, verifier: str | None = None, command: str | list | None = None,
                name: str | None = None, results: str | Path | None = None, tool: str | Path | None = None) -> Path:
    """The folder :func:`run_verifier` writes to: ``results``, else ``<bench>/results/<name>`` where name is the
    built-in verifier's name, ``name``, the VNN-COMP tool folder's name, or the command's program name.

    Raises:
        CertkitError: the name is not a plain folder name.
    """
    if results:
        return Path(results)
    if name is None and tool is not None:
        name = Path(tool).resolve().name
    if name is None and command is not None:
        name = Path(split_template(command)[0]).name
    name = verifier or name
    if not name or "/" in name or name.startswith("."):
        raise CertkitError(f"--name {name!r} must be a plain folder name")
    return Path(bench) / "results" / name


def run_verifier(bench: str | Path, verifier: str | None = None, command: str | list | None = None,
                 name: str | None = None, results: str | Path | None = None, timeout: float | None = None,
                 grace: float = 5.0, resume: bool = False, overwrite: bool = False, quiet: bool = False,
                 tool: str | Path | None = None, prepare_timeout: float = 60.0, worker: bool = True) -> list[dict]:
    """Run one verifier on every instance of ``bench`` (module docstring).

    Args:
        verifier: a built-in name (adapters.audit_verifiers()), or None with ``command``.
        command: a command template (str in shell syntax, or an argument list) with {onnx} {vnnlib} {result}
            and optionally ``{timeout}`` and ``{category}``; ``name`` labels it (default: the program's file name).
        tool: a VNN-COMP tool folder (module docstring) instead; ``prepare_timeout`` seconds for its
            prepare_instance.sh.
        results: output folder (default ``<bench>/results/<name>``).
        timeout: seconds per instance passed to the verifier (default: the instances.csv value); the runner kills
            the verifier at timeout + ``grace``.
        worker: built-in verifiers answer through one persistent :class:`Worker` (no start-up per instance;
            killed and restarted when an instance overruns); False starts a process per instance, as VNN-COMP does
            (external commands and tools always are).
    Returns:
        one dict per instance with COLUMNS.
    Raises:
        CertkitError: bad arguments, no instances, an existing results folder without resume/overwrite.
    """
    from tqdm import tqdm

    if sum(x is not None for x in (verifier, command, tool)) != 1:
        raise CertkitError("give exactly one of --verifier NAME, --command TEMPLATE or --vnncomp-tool DIR")
    if timeout is not None and timeout <= 0:
        raise CertkitError("--timeout must be positive (seconds)")
    if not prepare_timeout > 0:
        raise CertkitError("--prepare-timeout must be positive (seconds)")
    prepare, cwd = None, None
    if tool is not None:
        prepare, args, cwd = vnncomp_tool(tool)
    else:
        assert verifier or command is not None  # exactly one was given (checked above)
        args = builtin_template(verifier) if verifier else split_template(command or "")
    if shutil.which(args[0]) is None:
        raise CertkitError(f"cannot find the program {args[0]!r} of --command")
    instances = find_instances(bench)
    root = results_dir(bench, verifier, command, name, results, tool)
    config = {"verifier": root.name, "command": args, "timeout": timeout, "grace": grace,
              "instances": [list(i.key) for i in instances]}
    if tool is not None:
        config.update(prepare=prepare, prepare_timeout=prepare_timeout)
    writer = ResultWriter(root / "results.tsv", config, COLUMNS, resume=resume, overwrite=overwrite)
    running = root / "running.json"
    pool = Worker(verifier, root / "logs" / "worker.log", running) if verifier and worker else None
    try:
        stop_orphan(running)  # the lock is ours: a verifier still running was started by a runner that is gone
        rows = list(writer.rows)
        todo = [i for i in instances if i.idx not in writer.done]
        for inst in tqdm(todo, desc=root.name, unit="instance", disable=quiet, dynamic_ncols=True):
            tmo = inst.timeout if timeout is None else timeout
            result_file = result_file_of(root, inst).resolve()
            stem = result_file.stem
            result_file.parent.mkdir(parents=True, exist_ok=True)
            result_file.unlink(missing_ok=True)  # never read a stale answer
            files = (str((inst.folder / inst.onnx).resolve()), str((inst.folder / inst.vnnlib).resolve()),
                     str(result_file), tmo, inst.category)
            log = root / "logs" / f"{stem}.log"
            declined = None
            if prepare is not None:
                pcode, _, ptimed = run_command(fill(prepare, *files), prepare_timeout, root / "logs" /
                                               f"{stem}.prepare.log", running, cwd)
                if ptimed or pcode != 0:
                    declined = (f"prepare_instance.sh timed out after {prepare_timeout:g} s" if ptimed else
                                f"prepare_instance.sh exited {pcode}: the tool declines this instance")
            died = False
            code: int | None = 0
            if declined is None and pool is not None:
                reply, secs = pool.ask(*files[:4], limit=tmo + grace)
                timed_out = reply is None and secs >= tmo + grace - 0.05
                died, code = reply is None and not timed_out, 0
                log.parent.mkdir(parents=True, exist_ok=True)
                log.write_text(json.dumps(reply) + "\n" if reply else "no answer: see worker.log\n")
            elif declined is None:
                code, secs, timed_out = run_command(fill(args, *files), tmo + grace, log, running, cwd)
            if declined is not None:
                status, reason, secs = "error", declined, 0.0
            elif died:
                status, reason = "error", f"the worker exited ({_tail(root / 'logs' / 'worker.log')})"
            elif timed_out:
                status, reason = "timeout", f"killed after {tmo + grace:g} s"
            elif not result_file.is_file():
                status, reason = "error", f"no result file (exit code {code}; {_tail(log)})"
            else:
                status, _, reason = parse_result_text(result_file.read_text(errors="replace"))
            row = {"idx": inst.idx, "benchmark": inst.benchmark, "onnx": inst.onnx, "vnnlib": inst.vnnlib,
                   "result": status, "seconds": round(secs, 3), "reason": reason.replace("\t", " ").replace("\n", " ")}
            writer.write(row)
            rows.append(row)
    finally:
        if pool is not None:
            pool.close()
        writer.close()
    return sorted(rows, key=lambda r: int(r["idx"]))


def result_file_of(results_root: str | Path, inst: BenchInstance) -> Path:
    """Where :func:`run_verifier` keeps the result file of ``inst``."""
    stem = f"{inst.benchmark.replace('/', '__')}__{Path(inst.vnnlib).stem}" if inst.benchmark != "." \
        else Path(inst.vnnlib).stem
    return Path(results_root) / "files" / f"{stem}.txt"
