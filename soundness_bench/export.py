"""Export of a generated model as a VNN-COMP benchmark folder.

Layout of ``out``:
    model.onnx                 opset 13, input "input" (batch, *shape) with a dynamic batch axis, output (batch, 2)
    vnnlib/<i>.vnnlib          one property per anchor: the planted (hidden) instances first, then the regular ones
    instances.csv              rows ``model.onnx,vnnlib/<i>.vnnlib,<timeout>`` (VNN-COMP format, no header)
    private/ground_truth.json  which instances are planted, their counterexamples and the attacks that broke the
                               pairs that were not hidden: NEVER give private/ to a verifier
Input boxes are [clip(x - eps), clip(x + eps)] in input units (no normalization); every bound is the float32 value
written as its EXACT decimal expansion, so the planted vertex lies in the box exactly, in floats and in rationals.
The unsafe region is OR over j != y of (Y_j >= Y_y).
"""
from __future__ import annotations

import csv
import json
import warnings
from decimal import Decimal
from pathlib import Path

import numpy as np
import torch

from certkit.common.errors import CertkitError


def require_onnx() -> None:
    """Raises CertkitError when onnx / onnxruntime are not importable (the ``onnx`` extra)."""
    import importlib.util

    if any(importlib.util.find_spec(m) is None for m in ("onnx", "onnxruntime")):
        raise CertkitError("the soundness benchmark needs onnx and onnxruntime: pip install \"certkit[onnx]\"")


def exact_decimal(v: float) -> str:
    """The exact decimal expansion of a binary float (no exponent), e.g. float32(0.1) -> 0.100000001490116119384765625."""
    s = format(Decimal(float(v)), "f")
    return "0.0" if s in ("0", "-0") else s


def export_onnx(model: torch.nn.Module, input_shape: tuple, path: str | Path):
    """Write ``model`` (float32, eval mode) as ONNX opset 13 with a dynamic batch axis, then check that certkit's
    importer and onnxruntime agree with it on random inputs. Returns the imported OnnxModel.

    Raises:
        CertkitError: the export fails or the exported graph computes something else.
    """
    from certkit.models.onnx_import import load_onnx

    model = model.float().eval()
    dummy = torch.zeros((1,) + tuple(input_shape))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (dummy,), str(path), dynamo=False, input_names=["input"], output_names=["output"],
                          opset_version=13, dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    om = load_onnx(path)
    x = torch.rand((16,) + tuple(input_shape)) * 0.2 - 0.1
    om.check_against_onnxruntime(x)
    with torch.no_grad():
        ref = model(x).numpy()
    got = om.run_onnxruntime(x)
    if not np.allclose(ref, got, rtol=1e-4, atol=1e-5):
        raise CertkitError(f"ONNX export of the model differs from torch by {np.abs(ref - got).max():.3g}")
    return om


def vnnlib_text(lo: np.ndarray, hi: np.ndarray, y: int, n_outputs: int) -> str:
    """VNN-LIB 1.0 text: box lo <= X <= hi (flat, row-major) and the unsafe region OR_{j != y} (Y_j >= Y_y)."""
    lo, hi = np.asarray(lo, dtype=np.float32).ravel(), np.asarray(hi, dtype=np.float32).ravel()
    lines = [f"; Linf box with {lo.size} inputs; unsafe: some class other than {y} scores at least as high as {y}"]
    lines += [f"(declare-const X_{i} Real)" for i in range(lo.size)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(n_outputs)]
    for i in range(lo.size):
        lines.append(f"(assert (>= X_{i} {exact_decimal(lo[i])}))")
        lines.append(f"(assert (<= X_{i} {exact_decimal(hi[i])}))")
    terms = " ".join(f"(and (>= Y_{j} Y_{y}))" for j in range(n_outputs) if j != y)
    lines.append(f"(assert (or {terms}))")
    return "\n".join(lines) + "\n"


def export_benchmark(cfg, model: torch.nn.Module, data, valid: torch.Tensor, hidden: torch.Tensor, report) -> dict:
    """Write model.onnx, vnnlib/, instances.csv and private/ground_truth.json for a trained model (module
    docstring). Planted instances = the pairs in ``hidden`` that onnxruntime confirms; regular = the regular anchors.

    Returns {"planted_instances", "regular_instances", "not_confirmed", "onnx", "instances"}.
    """
    from certkit.verifiers.vnncomp import check_witness
    from certkit.verifiers.vnnlib import parse_vnnlib

    out = Path(cfg.out)
    (out / "vnnlib").mkdir(parents=True, exist_ok=True)
    (out / "private").mkdir(parents=True, exist_ok=True)
    for old in (out / "vnnlib").glob("*.vnnlib"):
        old.unlink()
    onnx_path = out / "model.onnx"
    om = export_onnx(model, cfg.input_shape, onnx_path)
    P = data.n_planted
    rows, truth, not_confirmed, exposed = [], [], [], []

    def add(kind: str, i: int, extra: dict):
        k = len(rows)
        rel = f"vnnlib/{k}.vnnlib"
        (out / rel).write_text(vnnlib_text(data.lo[i].numpy(), data.hi[i].numpy(), int(data.y[i]), 2))
        rows.append(["model.onnx", rel, f"{cfg.timeout:g}"])
        truth.append({"vnnlib": rel, "kind": kind, "y": int(data.y[i]), **extra})
        return out / rel

    for i in range(P):
        if not bool(hidden[i]):
            exposed.append({"pair": i, "valid": bool(valid[i]), "found_by": report.found_by[i]})
            continue
        x_cex = data.x_cex[i].numpy().astype(np.float32).ravel()
        path = add("planted", i, {"pair": i, "target": int(data.target[i]), "x_cex": [float(v) for v in x_cex],
                                  "smallest_attack_margin": report.margin[i]})
        reason = check_witness(om, parse_vnnlib(path), x_cex)
        if reason is not None:  # never claim a counterexample onnxruntime does not confirm
            path.unlink()
            rows.pop()
            truth.pop()
            not_confirmed.append({"pair": i, "reason": reason})
    n_planted = len(rows)
    for i in range(P, data.x.shape[0]):
        add("regular", i, {"anchor": i - P})
    with open(out / "instances.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    gt = {"format": "certkit soundness ground truth v1", "model": "model.onnx", "eps_rel": cfg.eps_rel,
          "eps_abs": cfg.eps_abs, "data_range": cfg.data_range,
          "hiddenness": {"sweep": [list(t) for t in cfg.sweep], "sweep_restarts": cfg.sweep_restarts,
                         "strong": cfg.strong, "strong_restarts": cfg.strong_restarts,
                         "vertex_samples": cfg.vertex_samples},
          "instances": truth,
          "not_hidden": exposed, "not_confirmed_by_onnxruntime": not_confirmed}
    (out / "private" / "ground_truth.json").write_text(json.dumps(gt, indent=1) + "\n")
    return {"planted_instances": n_planted, "regular_instances": len(rows) - n_planted,
            "not_confirmed": len(not_confirmed), "onnx": str(onnx_path), "instances": str(out / "instances.csv")}


def load_ground_truth(bench_dir: str | Path) -> dict:
    """private/ground_truth.json of a generated folder, keyed by vnnlib path: {vnnlib: entry}.

    Raises:
        CertkitError: the file is missing or unreadable.
    """
    p = Path(bench_dir) / "private" / "ground_truth.json"
    if not p.is_file():
        raise CertkitError(f"no ground truth at {p}: score needs a folder made by `certkit soundness generate`")
    try:
        gt = json.loads(p.read_text())
        return {e["vnnlib"]: e for e in gt["instances"]}
    except (ValueError, KeyError, TypeError) as e:
        raise CertkitError(f"{p} is not a certkit ground-truth file ({e})") from None
