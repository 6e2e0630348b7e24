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
from pathlib import Path

import numpy as np
import torch

from certkit.common.errors import CertkitError
from certkit.models.onnx_export import export_onnx
from certkit.verifiers.complete.vnnlib import vnnlib_text


def export_benchmark(cfg, model: torch.nn.Module, data, valid: torch.Tensor, hidden: torch.Tensor, report) -> dict:
    """Write model.onnx, vnnlib/, instances.csv and private/ground_truth.json for a trained model (module
    docstring). Planted instances = the pairs in ``hidden`` that onnxruntime confirms; regular = the regular anchors.

    Returns {"planted_instances", "regular_instances", "not_confirmed", "onnx", "instances"}.
    """
    from certkit.verifiers.complete.vnncomp_format import check_witness
    from certkit.verifiers.complete.vnnlib import parse_vnnlib

    out = Path(cfg.out)
    (out / "vnnlib").mkdir(parents=True, exist_ok=True)
    (out / "private").mkdir(parents=True, exist_ok=True)
    for old in (out / "vnnlib").glob("*.vnnlib"):
        old.unlink()
    onnx_path = out / "model.onnx"
    om = export_onnx(model, cfg.input_shape, onnx_path)
    P = data.n_planted
    rows: list = []
    truth: list = []
    not_confirmed: list = []
    exposed: list = []

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
