"""The VNN-COMP result format and exact witness handling (what every verifier's answer is checked against).

A result file's first line is one of ``sat``, ``unsat``, ``unknown``, ``timeout``, ``error`` (the VNN-COMP rules;
2021's ``holds`` / ``violated`` are read as unsat / sat); a ``sat`` answer continues with the counterexample
``((X_0 v) ... (Y_0 w) ...)``. A witness counts only when it lies in an input box of the property (compared as exact
rationals) and onnxruntime's output there lies in that disjunct's unsafe region. How certkit itself answers an
instance is verifiers/complete/strategy.py.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from certkit.common.errors import CertkitError
from certkit.models.onnx_import import OnnxModel
from certkit.verifiers.complete.vnnlib import Property, Term

RESULTS = ("sat", "unsat", "unknown", "timeout", "error")


@dataclass
class InstanceResult:
    """Outcome of one instance: ``status`` in RESULTS; for sat, the validated input x (float32, flat) and the
    onnxruntime output y; ``reason`` explains unknown/timeout/error."""

    status: str
    seconds: float
    reason: str = ""
    x: np.ndarray | None = None
    y: np.ndarray | None = None
    method: str = ""
    domains: int = 0
    checks: dict | None = None   # sat: which re-checks of the written counterexample held (:func:`witness_checks`)


def format_result(res: InstanceResult) -> str:
    """Text of a VNN-COMP result file: the status line, and for sat the assignment ((X_0 v) ... (Y_0 w))."""
    if res.status != "sat":
        return res.status + "\n"
    assert res.x is not None and res.y is not None  # a sat result carries its counterexample
    parts = [f"(X_{i} {float(v)!r})" for i, v in enumerate(res.x)] + \
            [f"(Y_{j} {float(v)!r})" for j, v in enumerate(res.y)]
    return "sat\n(" + "\n ".join(parts) + ")\n"


# ------------------------------------------------------------------ exact witness handling
def snap_into_box(x: np.ndarray, term: Term, nearest_if_empty: bool = False) -> np.ndarray | None:
    """float32 point inside the EXACT box of ``term`` (rational comparison), moving x as little as possible.

    An interval may hold no float32 at all (a fixed input written as a decimal that float32 cannot represent, such as
    VNN-COMP cGAN's ``(<= X_1 -0.23234923183918) (>= X_1 -0.23234923183918)``): then None, or with
    ``nearest_if_empty`` the float32 nearest to the interval (off by less than half a float32 ulp; the network
    cannot be fed the exact value)."""
    out = np.asarray(x, dtype=np.float32).copy()
    for i, (lo, hi) in enumerate(zip(term.x_L_exact, term.x_U_exact)):
        v = np.float32(min(max(float(out[i]), float(lo)), float(hi)))
        if Fraction(float(v)) < lo:
            v = np.nextafter(v, np.float32(np.inf))
        if Fraction(float(v)) > hi:
            v = np.nextafter(v, np.float32(-np.inf))
        if not (lo <= Fraction(float(v)) <= hi):
            if not nearest_if_empty:
                return None  # no float32 inside [lo, hi]
            below, above = np.float32(float(lo)), np.float32(float(hi))
            below = below if Fraction(float(below)) < lo else np.nextafter(below, np.float32(-np.inf))
            above = above if Fraction(float(above)) > hi else np.nextafter(above, np.float32(np.inf))
            v = below if lo - Fraction(float(below)) <= Fraction(float(above)) - hi else above
        out[i] = v
    return out


def violates(term: Term, y: np.ndarray) -> bool:
    """True when output y (float) satisfies every row of the unsafe region C y <= d (strict rows: <)."""
    val = term.C @ np.asarray(y, dtype=np.float64) - term.d
    return bool(np.all(np.where(term.strict, val < 0, val <= 0)))


def in_box(x: np.ndarray, term: Term, tol: float = 0.0) -> bool:
    """Whether x (flat float32 or float64) lies in the disjunct's input box widened by ``tol``, compared exactly as
    rationals with the box as written in the VNN-LIB file (``x_L_exact``, ``x_U_exact``). Coordinates that float64
    arithmetic already decides with a margin of 4 ulps (the box's float64 values are within half an ulp of the exact
    ones) skip the rational comparison."""
    xd = np.asarray(x, dtype=np.float64).ravel()
    lo, hi = term.x_L - tol, term.x_U + tol
    slack = 4 * np.spacing(np.maximum(np.maximum(np.abs(term.x_L), np.abs(term.x_U)), np.abs(xd)) + tol)
    if bool(np.any(xd < lo - slack) | np.any(xd > hi + slack)):
        return False
    t = Fraction(tol)
    unsure = np.flatnonzero((xd < lo + slack) | (xd > hi - slack))
    return all(term.x_L_exact[i] - t <= Fraction(float(xd[i])) <= term.x_U_exact[i] + t for i in unsure.tolist())


def check_witness(onnx_model: OnnxModel, prop: Property, x_flat: np.ndarray, tol: float = 0.0) -> str | None:
    """Check a claimed counterexample: None when the input x (flat, row-major, used as float32) lies in the input box
    of some disjunct (within ``tol``, compared exactly as rationals) and onnxruntime's output at x lies in that
    disjunct's unsafe region (each row C_j y - d_j <= tol; strict rows < 0 when tol = 0). Otherwise the reason.

    tol = 0 is the exact check used for planted counterexamples; VNN-COMP-style scoring uses a small tolerance
    (1e-4) for witnesses printed with rounding.
    """
    x = np.asarray(x_flat, dtype=np.float32).ravel()
    if x.size != prop.n_inputs:
        return f"the witness has {x.size} inputs, the property {prop.n_inputs}"
    if not np.all(np.isfinite(x)):
        return "the witness has NaN or inf inputs"
    y = onnx_model.run_onnxruntime(torch.from_numpy(x.reshape((1,) + onnx_model.sample_shape)))[0]
    if not np.all(np.isfinite(y)):
        return "onnxruntime gives NaN or inf at the witness"
    reason = "the witness lies outside every input box"
    inside: dict = {}    # box -> whether x lies in it (disjuncts over one box share the answer)
    for term in prop.terms:
        key = term.box_key()
        if key not in inside:
            inside[key] = in_box(x, term, tol)
        if not inside[key]:
            continue
        if violates(term, y) if tol == 0 else np.all(term.C @ np.asarray(y, dtype=np.float64) - term.d <= tol):
            return None
        reason = f"onnxruntime output {np.array2string(y, precision=6)} is outside the unsafe region"
    return reason


_ALIASES = {"holds": "unsat", "violated": "sat"}
_PAIR = re.compile(r"\(\s*([XY])_(\d+)\s+([^\s()]+)\s*\)")


def parse_result_text(text: str) -> tuple[str, np.ndarray | None, str]:
    """Parse a VNN-COMP result file: (status, witness x or None, reason).

    The first non-empty line must be EXACTLY one token of RESULTS (case-insensitive; the 2021 names ``holds`` /
    ``violated`` map to unsat / sat). Anything else -- ``unsafe``, ``sat (maybe)``, ``result: unsat`` -- is status
    ``error`` with the reason, never a verdict found by substring matching. For sat, the ``(X_i value)`` pairs give the
    witness (None when absent or incomplete).
    """
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return "error", None, "empty result file"
    tok = lines[0].lower()
    tok = _ALIASES.get(tok, tok)
    if tok not in RESULTS:
        return "error", None, f"unrecognized result {lines[0][:60]!r}"
    if tok != "sat":
        return tok, None, ""
    xs: dict[int, float] = {}
    for kind, i, v in _PAIR.findall("\n".join(lines[1:])):
        if kind == "X":
            try:
                xs[int(i)] = float(v)
            except ValueError:
                return "sat", None, f"witness value {v!r} is not a number"
    if not xs:
        return "sat", None, "no witness"
    if sorted(xs) != list(range(len(xs))):
        return "sat", None, "the witness skips inputs"
    return "sat", np.array([xs[i] for i in range(len(xs))]), ""


VNNCOMP_ATOL, VNNCOMP_RTOL = 1e-4, 1e-3   # the competition's counterexample tolerances


def _written_y(text: str) -> np.ndarray | None:
    ys = {int(i): float(v) for kind, i, v in _PAIR.findall(text) if kind == "Y"}
    return np.array([ys[i] for i in range(len(ys))]) if ys and sorted(ys) == list(range(len(ys))) else None


def witness_checks(onnx_model: OnnxModel, prop: Property, res: InstanceResult) -> dict:
    """Re-check a sat answer's counterexample as WRITTEN to the result file, two ways (onnxruntime, float32):

    ``exact``: x lies in an input box of the property (exact rationals) and onnxruntime's output at x lies in that
    disjunct's unsafe region with exact comparisons (zero tolerance);
    ``vnncomp``: the competition's check: onnxruntime's output at x is within atol + rtol |y| of the written y
    (atol 1e-4, rtol 1e-3), and x lies in a box and the output in its unsafe region within atol.
    Returns {"exact": bool, "vnncomp": bool}; both False when the file holds no complete counterexample."""
    text = format_result(res)
    _, x, _ = parse_result_text(text)
    y_written = _written_y(text)
    if x is None or y_written is None:
        return {"exact": False, "vnncomp": False}
    exact = check_witness(onnx_model, prop, x, 0.0) is None
    x32 = np.asarray(x, dtype=np.float32)
    y = onnx_model.run_onnxruntime(torch.from_numpy(x32.reshape((1,) + onnx_model.sample_shape)))[0]
    close = y.shape == y_written.shape and bool(np.all(np.abs(y - y_written)
                                                        <= VNNCOMP_ATOL + VNNCOMP_RTOL * np.abs(y_written)))
    vnncomp = close and check_witness(onnx_model, prop, x, VNNCOMP_ATOL) is None
    return {"exact": exact, "vnncomp": vnncomp}


def checks_text(checks: dict | None) -> str:
    """One line for people: which re-checks of a counterexample held."""
    if not checks:
        return ""
    held = [name for name, ok in (("exactly (zero tolerance)", checks["exact"]),
                                  (f"within VNN-COMP tolerances (atol {VNNCOMP_ATOL:g}, rtol {VNNCOMP_RTOL:g})",
                                   checks["vnncomp"])) if ok]
    return ("counterexample re-checked in onnxruntime float32: holds " + " and ".join(held) if held
            else "counterexample re-checked in onnxruntime float32: holds neither exactly nor within VNN-COMP "
                 "tolerances")


def validate_witness(onnx_model: OnnxModel, term: Term, x_flat: np.ndarray):
    """(x, y) when the candidate x_flat, snapped into the exact box of ``term``, violates the property in onnxruntime
    (x float32 flat, y the onnxruntime output); None otherwise. Where an input interval holds no float32 the nearest
    float32 is used (:func:`snap_into_box`): such a counterexample holds within VNN-COMP's tolerances but not exactly,
    and :func:`witness_checks` says so."""
    x = snap_into_box(x_flat, term)
    if x is None:
        x = snap_into_box(x_flat, term, nearest_if_empty=True)
    if x is None:
        return None
    y = onnx_model.run_onnxruntime(torch.from_numpy(x.reshape((1,) + onnx_model.sample_shape)))[0]
    if not np.all(np.isfinite(y)) or not violates(term, y):
        return None
    return x, y.astype(np.float32)


def write_result_file(path: str | Path, res: InstanceResult) -> None:
    """Write ``res`` as a VNN-COMP result file (see :func:`format_result`), creating parent folders."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(format_result(res))


def read_instances(path: str | Path) -> list[tuple[str, str, float]]:
    """Rows (onnx, vnnlib, timeout seconds) of a VNN-COMP instances.csv (paths as written: relative to its folder;
    empty lines and lines starting with # are skipped).

    Raises:
        CertkitError: missing file or a malformed row (with its line number).
    """
    path = Path(path)
    if not path.is_file():
        raise CertkitError(f"instances file not found: {path}")
    out = []
    for i, r in enumerate(csv.reader(open(path)), 1):
        if not r or r[0].startswith("#"):
            continue
        if len(r) < 3:
            raise CertkitError(f"{path}:{i}: expected onnx,vnnlib,timeout")
        try:
            out.append((r[0].strip(), r[1].strip(), float(r[2])))
        except ValueError:
            raise CertkitError(f"{path}:{i}: timeout {r[2]!r} is not a number") from None
    return out


__all__ = ["InstanceResult", "RESULTS", "check_witness", "format_result", "parse_result_text", "read_instances",
           "snap_into_box",
           "validate_witness", "violates", "write_result_file"]
