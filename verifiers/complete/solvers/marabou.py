"""Marabou (Wu et al. CAV 2024, "Marabou 2.0") through maraboupy, a sound and complete SMT-based verifier of
piecewise-linear networks: ``pip install "certkit[marabou]"``."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from certkit.verifiers.complete.registry import Instance, Verifier, register_verifier
from certkit.verifiers.complete.vnncomp_format import InstanceResult


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
    from certkit.verifiers.complete.vnnlib import parse_vnnlib

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


@register_verifier
class MarabouVerifier(Verifier):
    """Marabou 2.0: one query per disjunct of the property (see :func:`marabou_verify`)."""

    name = "marabou"
    help = "Marabou 2.0 (maraboupy)"
    complete = True
    package = "maraboupy"

    def solve(self, instance: Instance, timeout: float) -> InstanceResult:
        return marabou_verify(instance.onnx, instance.vnnlib, timeout)
