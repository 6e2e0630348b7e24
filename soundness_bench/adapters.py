"""Built-in verifiers of ``certkit soundness run``, each run as a VNN-COMP-style command:

    python -m certkit.soundness_bench.adapters NAME ONNX VNNLIB RESULT TIMEOUT

writes the VNN-COMP result file RESULT (``sat`` + witness / ``unsat`` / ``unknown`` / ``timeout`` / ``error``) and
exits 0. The runner starts it like any external verifier (own process group, killed at the timeout), so built-in
and external verifiers are audited the same way. NAME is any registered verifier (verifiers/registry.py: certkit's
own, Marabou) or a deliberately unsound one of bugs.py; :func:`audit_verifiers` lists them.
"""
from __future__ import annotations

import sys
from pathlib import Path

from certkit.common.errors import CertkitError
from certkit.verifiers.vnncomp import InstanceResult, write_result_file


def audit_verifiers() -> dict:
    """Every verifier ``soundness run --verifier`` accepts: the registry's, plus the synthetic bugs of bugs.py."""
    import importlib

    from certkit.verifiers.registry import verifiers

    importlib.import_module("certkit.soundness_bench.bugs")  # registers the deliberately unsound verifiers

    return verifiers()


def unsound_by_design() -> tuple[str, ...]:
    """Names of the verifiers that declare themselves unsound (the audit's positive controls)."""
    return tuple(name for name, cls in audit_verifiers().items() if not cls.sound)


def run_adapter(name: str, onnx_path: str, vnnlib_path: str, timeout: float) -> InstanceResult:
    """Answer one instance with the verifier ``name``.

    Raises:
        CertkitError: unknown name.
    """
    from certkit.verifiers.registry import Instance

    known = audit_verifiers()
    if name not in known:
        raise CertkitError(f"unknown built-in verifier {name!r}: choose from {', '.join(known)}")
    return known[name]().verify(Instance(Path(onnx_path), Path(vnnlib_path)), timeout)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry (module docstring): answer one instance, write its result file, return exit status 0
    (2 for a wrong number of arguments). Failures of the verifier become an ``error`` result with the reason."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 5:
        print("usage: python -m certkit.soundness_bench.adapters NAME ONNX VNNLIB RESULT TIMEOUT", file=sys.stderr)
        return 2
    name, onnx_path, vnnlib_path, result, timeout = argv
    try:
        res = run_adapter(name, onnx_path, vnnlib_path, float(timeout))
    except (CertkitError, ValueError) as e:
        res = InstanceResult("error", 0.0, str(e))
    except Exception as e:  # a crash of the verifier itself is an answer of "error", recorded with its reason
        res = InstanceResult("error", 0.0, f"{type(e).__name__}: {e}")
    write_result_file(result, res)
    if res.reason:
        print(f"{res.status}: {res.reason}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
