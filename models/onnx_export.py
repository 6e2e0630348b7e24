"""ONNX export of a torch model, checked against certkit's importer and onnxruntime (the soundness benchmark's
networks, and complete verification of a checkpoint, whose counterexamples are replayed in onnxruntime)."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from certkit.common.errors import CertkitError


def require_onnx(what: str = "this") -> None:
    """Raises CertkitError when onnx / onnxruntime are not importable (the ``onnx`` extra); ``what`` names the feature
    that needs them in the message."""
    import importlib.util

    if any(importlib.util.find_spec(m) is None for m in ("onnx", "onnxruntime")):
        raise CertkitError(f"{what} needs onnx and onnxruntime: pip install \"certkit[onnx]\"")


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
