"""Verification of VNN-COMP instances (ONNX network + VNN-LIB property) and benchmark folders.

Procedure for one instance (answers are sound by construction):
  1. import the ONNX file and compare the converted network with onnxruntime on random points of every input
     box; refuse (``error``) on a mismatch;
  2. falsify: PGD on max_j (C_j y - d_j) inside each disjunct's box; a candidate is snapped into the box with
     exact rational comparisons, replayed in onnxruntime and reported ``sat`` only if it violates the property
     there (with the exact box and constants);
  3. prove: bound max_j lb(C_j y - d_j) > 0 for every disjunct (IBP, CROWN, then alpha-CROWN) in float64;
  4. branch and bound on the input (for low-dimensional inputs): split boxes along the dimension with the
     largest width x gradient, bound the batch of sub-boxes with CROWN, falsify at their centers, until every
     leaf is refuted (``unsat``), a counterexample is validated (``sat``), the time runs out (``timeout``) or the
     domain budget is spent (``unknown``).
NaN or inf anywhere in the bounds is an ``error``, never a verdict.
"""
from __future__ import annotations

import copy
import csv
import re
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from certkit.common.errors import CertkitError
from certkit.models.onnx_import import OnnxModel, load_onnx
from certkit.verifiers.attack import pgd_box
from certkit.verifiers.bounds import BoundedModule, canonical_method
from certkit.verifiers.perturbation import Box
from certkit.verifiers.vnnlib import Property, Term, parse_vnnlib

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


def format_result(res: InstanceResult) -> str:
    """Text of a VNN-COMP result file: the status line, and for sat the assignment ((X_0 v) ... (Y_0 w))."""
    if res.status != "sat":
        return res.status + "\n"
    parts = [f"(X_{i} {float(v)!r})" for i, v in enumerate(res.x)] + \
            [f"(Y_{j} {float(v)!r})" for j, v in enumerate(res.y)]
    return "sat\n(" + "\n ".join(parts) + ")\n"


# ------------------------------------------------------------------ exact witness handling
def _snap_into_box(x: np.ndarray, term: Term) -> np.ndarray | None:
    """float32 point inside the EXACT box of ``term`` (rational comparison), moving x as little as possible."""
    out = np.asarray(x, dtype=np.float32).copy()
    for i, (lo, hi) in enumerate(zip(term.x_L_exact, term.x_U_exact)):
        v = np.float32(min(max(float(out[i]), float(lo)), float(hi)))
        if Fraction(float(v)) < lo:
            v = np.nextafter(v, np.float32(np.inf))
        if Fraction(float(v)) > hi:
            v = np.nextafter(v, np.float32(-np.inf))
        if not (lo <= Fraction(float(v)) <= hi):
            return None  # no float32 inside [lo, hi]
        out[i] = v
    return out


def violates(term: Term, y: np.ndarray) -> bool:
    """True when output y (float) satisfies every row of the unsafe region C y <= d (strict rows: <)."""
    val = term.C @ np.asarray(y, dtype=np.float64) - term.d
    return bool(np.all(np.where(term.strict, val < 0, val <= 0)))


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
    t = Fraction(tol)
    xf = [Fraction(float(v)) for v in x]
    reason = "the witness lies outside every input box"
    for term in prop.terms:
        if not all(lo - t <= v <= hi + t for v, lo, hi in zip(xf, term.x_L_exact, term.x_U_exact)):
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


def _validate(onnx_model: OnnxModel, term: Term, x_flat: np.ndarray):
    x = _snap_into_box(x_flat, term)
    if x is None:
        return None
    y = onnx_model.run_onnxruntime(torch.from_numpy(x.reshape((1,) + onnx_model.sample_shape)))[0]
    if not np.all(np.isfinite(y)) or not violates(term, y):
        return None
    return x, y.astype(np.float32)


# ------------------------------------------------------------------ instance verification
class _Deadline:
    def __init__(self, seconds: float):
        self.t0, self.seconds = time.perf_counter(), seconds

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.t0)

    def passed(self) -> bool:
        return self.left() <= 0


def check_conversion(onnx_model: OnnxModel, prop: Property, points: int = 16, seed: int = 0) -> None:
    """Compare certkit's converted network with onnxruntime on random points in every input box.

    Raises:
        CertkitError: the outputs differ by more than 1e-4 * (1 + |y|).
    """
    gen = torch.Generator().manual_seed(seed)
    for term in prop.terms[:8]:
        lo = torch.from_numpy(term.x_L).float()
        hi = torch.from_numpy(term.x_U).float()
        x = lo + (hi - lo) * torch.rand((points, lo.numel()), generator=gen)
        onnx_model.check_against_onnxruntime(x.reshape((points,) + onnx_model.sample_shape))


def verify_instance(onnx_path: str | Path, vnnlib_path: str | Path, timeout: float = 60.0,
                    methods: tuple = ("IBP", "CROWN", "alpha-CROWN"), bab: bool = True, max_domains: int = 200_000,
                    batch: int = 2048, seed: int = 0) -> InstanceResult:
    """Answer one VNN-COMP instance: sat (validated counterexample), unsat, unknown, timeout or error.

    Args:
        timeout: seconds for the whole instance (loading included).
        methods: bound methods tried in order on each whole disjunct.
        bab: input-split branch and bound after the bounds (inputs of at most 64 dimensions).
    Never raises for a problem with the instance: errors are returned as status ``error`` with a reason.
    """
    dl = _Deadline(timeout)
    try:
        onnx_model = load_onnx(onnx_path)
        prop = parse_vnnlib(vnnlib_path)
    except CertkitError as e:
        return InstanceResult("error", time.perf_counter() - dl.t0, str(e))
    res = verify_property(onnx_model, prop, dl.left(), methods, bab, max_domains, batch, seed)
    res.seconds = time.perf_counter() - dl.t0
    return res


def verify_property(onnx_model: OnnxModel, prop: Property, timeout: float = 60.0,
                    methods: tuple = ("IBP", "CROWN", "alpha-CROWN"), bab: bool = True, max_domains: int = 200_000,
                    batch: int = 2048, seed: int = 0) -> InstanceResult:
    """:func:`verify_instance` on an already loaded network and parsed property (same arguments and result)."""
    dl = _Deadline(timeout)
    try:
        n_in = int(np.prod(onnx_model.sample_shape))
        if prop.n_inputs != n_in or prop.n_outputs != onnx_model.num_outputs:
            raise CertkitError(f"the property has {prop.n_inputs} inputs / {prop.n_outputs} outputs but the network "
                               f"has {n_in} / {onnx_model.num_outputs}")
        check_conversion(onnx_model, prop, seed=seed)
        return _solve(onnx_model, prop, dl, [canonical_method(m) for m in methods], bab, max_domains, batch, seed)
    except CertkitError as e:
        return InstanceResult("error", time.perf_counter() - dl.t0, str(e))
    except TimeoutError as e:
        return InstanceResult("timeout", time.perf_counter() - dl.t0, str(e) or f"no answer within {timeout:g} s")


def _objective(net: torch.nn.Module, C: torch.Tensor, d: torch.Tensor, sample_shape):
    """x (N, n_in) -> max_j (C_j y - d_j): < 0 inside the unsafe region (minimized by PGD)."""
    def obj(x):
        y = net(x.reshape((x.shape[0],) + tuple(sample_shape))).reshape(x.shape[0], -1)
        return (y @ C.T - d).max(1).values if C.shape[0] else torch.full((x.shape[0],), -1.0, dtype=x.dtype)
    return obj


def _solve(onnx_model, prop, dl, methods, bab, max_domains, batch, seed) -> InstanceResult:
    net32 = onnx_model.module.float().eval()
    net64 = copy.deepcopy(net32).double().eval()
    shape = onnx_model.sample_shape
    gen = torch.Generator().manual_seed(seed)
    # 2. falsification on every term
    for term in prop.terms:
        C32, d32 = torch.tensor(term.C, dtype=torch.float32), torch.tensor(term.d, dtype=torch.float32)
        lo, hi = torch.tensor(term.x_L, dtype=torch.float32)[None], torch.tensor(term.x_U, dtype=torch.float32)[None]
        x, val = pgd_box(_objective(net32, C32, d32, shape), lo, hi, steps=100, restarts=10, generator=gen)
        if float(val[0]) <= 1e-4:
            found = _validate(onnx_model, term, x[0].numpy())
            if found:
                return InstanceResult("sat", time.perf_counter() - dl.t0, x=found[0], y=found[1], method="PGD")
        if dl.passed():
            raise TimeoutError("timed out while searching for counterexamples")
    # 3. bounds on whole terms, 4. input-split branch and bound
    bm = BoundedModule(net64, shape)
    open_terms = list(prop.terms)
    used = ""
    for m in methods:
        still = []
        for term in open_terms:
            if not _refuted(bm, term, torch.tensor(term.x_L)[None], torch.tensor(term.x_U)[None], m,
                            time_budget=max(dl.left(), 0.0)).all():
                still.append(term)
            if dl.passed():
                raise TimeoutError(f"timed out while bounding with {m}")
        open_terms, used = still, m
        if not open_terms:
            return InstanceResult("unsat", time.perf_counter() - dl.t0, method=m)
    if not bab or prop.n_inputs > 64:
        return InstanceResult("unknown", time.perf_counter() - dl.t0,
                              f"{len(open_terms)} disjunct(s) not refuted by {used}; branch and bound "
                              f"{'disabled' if not bab else 'needs inputs of at most 64 dimensions'}")
    total = 0
    for term in open_terms:
        status, n = _input_bab(bm, net32, onnx_model, term, dl, max_domains - total, batch)
        total += n
        if status != "unsat":
            res = status if isinstance(status, InstanceResult) else None
            if res is not None:
                res.domains = total
                res.seconds = time.perf_counter() - dl.t0
                return res
            return InstanceResult(status, time.perf_counter() - dl.t0,
                                  f"branch and bound stopped after {total} domains ({status})", domains=total)
    return InstanceResult("unsat", time.perf_counter() - dl.t0, method="CROWN+input-split BaB", domains=total)


def _refuted(bm: BoundedModule, term: Term, lo: torch.Tensor, hi: torch.Tensor, method: str,
             time_budget: float | None = None) -> torch.Tensor:
    """(N,) bool: the unsafe conjunction C y <= d is infeasible on each box (some row has lb > 0)."""
    N = lo.shape[0]
    if term.C.shape[0] == 0:
        return torch.zeros(N, dtype=torch.bool)
    shape = bm.graph.input_shape
    C = torch.tensor(term.C, dtype=torch.float64)[None].expand(N, -1, -1)
    pert = Box(lo.reshape((N,) + shape), hi.reshape((N,) + shape))
    with torch.enable_grad() if method == "alpha-CROWN" else torch.no_grad():
        lb, _ = bm.compute_bounds(pert, C, method, bound_upper=False, time_budget=time_budget)
    return ((lb.detach() - torch.tensor(term.d)) > 0).any(1)


def _input_bab(bm, net32, onnx_model, term, dl, max_domains, batch):
    """Input-split BaB on one term. Returns ("unsat"|"timeout"|"unknown"|InstanceResult(sat), domains)."""
    lo, hi = torch.tensor(term.x_L)[None], torch.tensor(term.x_U)[None]
    C64, d64 = torch.tensor(term.C), torch.tensor(term.d)
    C32, d32 = C64.float(), d64.float()
    obj32 = _objective(net32, C32, d32, onnx_model.sample_shape)
    obj64 = _objective(bm.graph.forward, C64, d64, onnx_model.sample_shape)
    width0 = (hi - lo).clamp(min=1e-12)
    domains = 0
    while lo.shape[0]:
        if dl.passed():
            return "timeout", domains
        if domains >= max_domains:
            return "unknown", domains
        lo_b, hi_b, lo, hi = lo[:batch], hi[:batch], lo[batch:], hi[batch:]
        domains += lo_b.shape[0]
        with torch.no_grad():
            centers = (lo_b + hi_b) / 2
            cand = obj32(centers.float())
        for k in torch.nonzero(cand <= 1e-4).flatten()[:8].tolist():
            found = _validate(onnx_model, term, centers[k].numpy())
            if found:
                return InstanceResult("sat", 0.0, x=found[0], y=found[1], method="input-split BaB"), domains
        done = _refuted(bm, term, lo_b, hi_b, "CROWN")
        lo_b, hi_b = lo_b[~done], hi_b[~done]
        if not lo_b.shape[0]:
            continue
        # split the remaining boxes along argmax of width x |d objective / dx| at the center
        c = ((lo_b + hi_b) / 2).requires_grad_(True)
        with torch.enable_grad():
            g, = torch.autograd.grad(obj64(c).sum(), c)
        score = (hi_b - lo_b) * (g.abs() + 1e-9 * width0)
        dim = score.argmax(1)
        mid = ((lo_b + hi_b) / 2).gather(1, dim[:, None])
        left_hi, right_lo = hi_b.clone(), lo_b.clone()
        left_hi.scatter_(1, dim[:, None], mid)
        right_lo.scatter_(1, dim[:, None], mid)
        lo, hi = torch.cat([lo_b, right_lo, lo]), torch.cat([left_hi, hi_b, hi])
    return "unsat", domains


# ------------------------------------------------------------------ benchmark folders
def write_result_file(path: str | Path, res: InstanceResult) -> None:
    """Write ``res`` as a VNN-COMP result file (see :func:`format_result`), creating parent folders."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(format_result(res))


def run_instances(csv_path: str | Path, results_csv: str | Path, timeout_scale: float = 1.0,
                  result_dir: str | Path | None = None, quiet: bool = False, **kwargs) -> list[dict]:
    """Run every row (onnx, vnnlib, timeout) of a VNN-COMP ``instances.csv``; paths are relative to its folder.

    Writes ``results_csv`` (onnx, vnnlib, result, seconds, reason) row by row and, when ``result_dir`` is given,
    one VNN-COMP result file per instance.
    """
    from tqdm import tqdm

    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise CertkitError(f"instances file not found: {csv_path}")
    rows = [r for r in csv.reader(open(csv_path)) if r and not r[0].startswith("#")]
    for i, r in enumerate(rows, 1):
        if len(r) < 3:
            raise CertkitError(f"{csv_path}:{i}: expected onnx,vnnlib,timeout")
        try:
            float(r[2])
        except ValueError:
            raise CertkitError(f"{csv_path}:{i}: timeout {r[2]!r} is not a number") from None
    out = []
    Path(results_csv).parent.mkdir(parents=True, exist_ok=True)
    with open(results_csv, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["onnx", "vnnlib", "result", "seconds", "reason"])
        for k, (onnx_rel, vnn_rel, tmo, *_) in enumerate(tqdm(rows, desc="instances", disable=quiet)):
            res = verify_instance(csv_path.parent / onnx_rel.strip(), csv_path.parent / vnn_rel.strip(),
                                  float(tmo) * timeout_scale, **kwargs)
            if result_dir is not None:
                write_result_file(Path(result_dir) / f"{k:04d}_{Path(vnn_rel).stem}.txt", res)
            row = {"onnx": onnx_rel, "vnnlib": vnn_rel, "result": res.status, "seconds": round(res.seconds, 3),
                   "reason": res.reason}
            w.writerow(row.values())
            f.flush()
            out.append(row)
    return out


__all__ = ["InstanceResult", "RESULTS", "check_conversion", "check_witness", "format_result", "parse_result_text",
           "run_instances", "verify_instance", "verify_property", "violates", "write_result_file"]
