"""Built-in verifiers of ``certkit soundness run``, each a VNN-COMP-style command:

    python -m certkit.soundness_bench.adapters NAME ONNX VNNLIB RESULT TIMEOUT

writes the VNN-COMP result file RESULT (``sat`` + witness / ``unsat`` / ``unknown`` / ``timeout`` / ``error``) and
exits 0. The runner starts it like any external verifier (own process group, killed at the timeout), so built-in
and external verifiers are audited the same way.

NAME:
  certkit              PGD falsification, IBP -> CROWN -> alpha-CROWN, then input-split branch and bound
  certkit-ibp          PGD falsification, then IBP only (no branching)
  certkit-crown        PGD falsification, then CROWN only
  certkit-alpha-crown  PGD falsification, then alpha-CROWN only
  marabou              Marabou 2.0 through maraboupy (``pip install "certkit[marabou]"``): one query per disjunct
  bug-shrink-input     DELIBERATELY UNSOUND (bugs.py): certkit on input boxes shrunk by half toward the center
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from certkit.common.errors import CertkitError
from certkit.verifiers.vnncomp import InstanceResult, write_result_file

ADAPTERS: dict[str, str] = {
    "certkit": "PGD, IBP -> CROWN -> alpha-CROWN, input-split BaB",
    "certkit-ibp": "PGD, then IBP",
    "certkit-crown": "PGD, then CROWN",
    "certkit-alpha-crown": "PGD, then alpha-CROWN",
    "marabou": "Marabou 2.0 (maraboupy)",
    "bug-shrink-input": "synthetic UNSOUND verifier: input boxes shrunk by 0.5",
}
UNSOUND_BY_DESIGN = ("bug-shrink-input",)


def marabou_verify(onnx_path: str | Path, vnnlib_path: str | Path, timeout: float) -> InstanceResult:
    """Marabou (Wu et al. 2024) on one instance: for each disjunct of the property, a query with its input box and
    output rows C y <= d (non-strict: Marabou has no strict inequalities, so a strict row is checked as <=, which
    can only make Marabou answer sat more often; sat witnesses are validated by the scorer anyway).

    Returns sat with Marabou's input assignment, unsat when every disjunct is unsat, else unknown / timeout / error.
    """
    t0 = time.perf_counter()
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from maraboupy import Marabou
    except ImportError:
        return InstanceResult("error", 0.0, "maraboupy is not installed: pip install \"certkit[marabou]\"")
    from certkit.verifiers.vnnlib import parse_vnnlib

    prop = parse_vnnlib(vnnlib_path)
    status = "unsat"
    for term in prop.terms:
        left = timeout - (time.perf_counter() - t0)
        if left <= 0:
            return InstanceResult("timeout", time.perf_counter() - t0, "time ran out between disjuncts")
        net = Marabou.read_onnx(str(onnx_path))
        xin = np.asarray(net.inputVars[0]).ravel()
        yout = np.asarray(net.outputVars[0]).ravel()
        if xin.size != prop.n_inputs or yout.size != prop.n_outputs:
            return InstanceResult("error", time.perf_counter() - t0, "network and property sizes differ")
        for v, lo, hi in zip(xin, term.x_L, term.x_U):
            net.setLowerBound(int(v), float(lo))
            net.setUpperBound(int(v), float(hi))
        for row, d in zip(term.C, term.d):
            nz = np.nonzero(row)[0]
            net.addInequality([int(yout[j]) for j in nz], [float(row[j]) for j in nz], float(d))
        opts = Marabou.createOptions(verbosity=0, timeoutInSeconds=max(1, int(left)))
        code, vals, _ = net.solve(options=opts, verbose=False)
        code = str(code).lower()
        if code == "sat":
            x = np.array([vals[int(v)] for v in xin], dtype=np.float64)
            y = np.array([vals[int(v)] for v in yout], dtype=np.float64)
            return InstanceResult("sat", time.perf_counter() - t0, x=x, y=y, method="marabou")
        if code != "unsat":
            status = "timeout" if "timeout" in code else "unknown"
    return InstanceResult(status, time.perf_counter() - t0, method="marabou")


def run_adapter(name: str, onnx_path: str, vnnlib_path: str, timeout: float) -> InstanceResult:
    """Answer one instance with built-in verifier ``name`` (a key of ADAPTERS)."""
    from certkit.verifiers.vnncomp import verify_instance

    if name == "certkit":
        return verify_instance(onnx_path, vnnlib_path, timeout)
    if name in ("certkit-ibp", "certkit-crown", "certkit-alpha-crown"):
        method = {"certkit-ibp": "IBP", "certkit-crown": "CROWN", "certkit-alpha-crown": "alpha-CROWN"}[name]
        return verify_instance(onnx_path, vnnlib_path, timeout, methods=(method,), bab=False)
    if name == "marabou":
        return marabou_verify(onnx_path, vnnlib_path, timeout)
    if name == "bug-shrink-input":
        from certkit.soundness_bench.bugs import shrink_input_verify

        return shrink_input_verify(onnx_path, vnnlib_path, timeout)
    raise CertkitError(f"unknown built-in verifier {name!r}: choose from {', '.join(ADAPTERS)}")


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
