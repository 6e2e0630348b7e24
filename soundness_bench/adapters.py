"""Built-in verifiers of ``certkit soundness run``, each run as a VNN-COMP-style command:

    python -m certkit.soundness_bench.adapters NAME ONNX VNNLIB RESULT TIMEOUT

writes the VNN-COMP result file RESULT (``sat`` + witness / ``unsat`` / ``unknown`` / ``timeout`` / ``error``) and
exits 0. The runner starts it like any external verifier (own process group, killed at the timeout), so built-in
and external verifiers are audited the same way. NAME is any registered verifier (verifiers/complete/registry.py:
certkit's
own, Marabou) or a deliberately unsound one of unsound_verifiers.py; :func:`audit_verifiers` lists them.

    python -m certkit.soundness_bench.adapters --worker NAME

is the same verifier as a persistent worker (:func:`serve`): ``soundness run`` starts one per audit and sends it the
instances one by one, killing and restarting it only when an instance overruns its time.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from certkit.common.errors import CertkitError
from certkit.common.memory import retain_freed_memory
from certkit.verifiers.complete.vnncomp_format import InstanceResult, write_result_file


def audit_verifiers() -> dict:
    """Every verifier ``soundness run --verifier`` accepts: the verifier registry's (certkit's own, Marabou), then the
    deliberately unsound ones of unsound_verifiers.py (their own registry, read only here)."""
    from certkit.soundness_bench.unsound_verifiers import unsound_verifiers
    from certkit.verifiers.complete.registry import verifiers

    return {**verifiers(), **unsound_verifiers()}


def unsound_by_design() -> tuple[str, ...]:
    """Names of the verifiers that declare themselves unsound (the audit's positive controls)."""
    return tuple(name for name, cls in audit_verifiers().items() if not cls.sound)


def run_adapter(name: str, onnx_path: str, vnnlib_path: str, timeout: float) -> InstanceResult:
    """Answer one instance with the verifier ``name``.

    Raises:
        CertkitError: unknown name.
    """
    from certkit.verifiers.complete.registry import Instance

    known = audit_verifiers()
    if name not in known:
        raise CertkitError(f"unknown built-in verifier {name!r}: choose from {', '.join(known)}")
    return known[name]().verify(Instance(Path(onnx_path), Path(vnnlib_path)), timeout)


def answer(name: str, onnx_path: str, vnnlib_path: str, result: str, timeout: float | str) -> InstanceResult:
    """Answer one instance with ``name`` and write its VNN-COMP result file; a failure of the verifier becomes an
    ``error`` answer with the reason (never an exception)."""
    try:
        res = run_adapter(name, onnx_path, vnnlib_path, float(timeout))
    except (CertkitError, ValueError) as e:
        res = InstanceResult("error", 0.0, str(e))
    except Exception as e:  # a crash of the verifier itself is an answer of "error", recorded with its reason
        res = InstanceResult("error", 0.0, f"{type(e).__name__}: {e}")
    write_result_file(result, res)
    return res


def serve(name: str, stdin=None, stdout=None) -> int:
    """Persistent worker (``--worker NAME``): answer instances read as JSON lines {"onnx", "vnnlib", "result",
    "timeout"} from stdin, one JSON line {"status", "reason"} per answer on stdout, until stdin closes. Prints
    {"ready": true} once imports are done, so the Python and torch start-up is paid once per audit, not once per
    instance. The runner kills the worker's process group when an instance overruns its time."""
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    audit_verifiers()  # imports torch, onnx and the verifiers now
    if name not in audit_verifiers():
        print(json.dumps({"error": f"unknown built-in verifier {name!r}"}), file=stdout, flush=True)
        return 2
    print(json.dumps({"ready": True}), file=stdout, flush=True)
    for line in stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        res = answer(name, req["onnx"], req["vnnlib"], req["result"], req["timeout"])
        print(json.dumps({"status": res.status, "reason": res.reason}), file=stdout, flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry (module docstring): answer one instance, write its result file, return exit status 0
    (2 for a wrong number of arguments); ``--worker NAME`` runs :func:`serve`. Failures of the verifier become an
    ``error`` result with the reason."""
    argv = sys.argv[1:] if argv is None else argv
    retain_freed_memory()   # this process is certkit's own (common/memory.py)
    if len(argv) == 2 and argv[0] == "--worker":
        # the protocol keeps the original stdout; anything else printed (by the verifier or a program it starts)
        # goes to stderr, the worker's log
        proto = os.fdopen(os.dup(1), "w")
        os.dup2(2, 1)
        return serve(argv[1], stdout=proto)
    if len(argv) != 5:
        print("usage: python -m certkit.soundness_bench.adapters NAME ONNX VNNLIB RESULT TIMEOUT\n"
              "       python -m certkit.soundness_bench.adapters --worker NAME", file=sys.stderr)
        return 2
    name, onnx_path, vnnlib_path, result, timeout = argv
    res = answer(name, onnx_path, vnnlib_path, result, timeout)
    if res.reason:
        print(f"{res.status}: {res.reason}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
