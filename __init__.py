"""certkit: certified robustness for PyTorch models.

The main entry points, importable from ``certkit`` directly (each is loaded on first use, so ``import certkit`` stays
light)::

    import certkit
    data = certkit.load_dataset("digits", split="test")          # x: N x 1 x 8 x 8 in [0, 1]
    smooth = certkit.Smooth("bundled", num_classes=10, sigma=0.25)  # or any nn.Module, checkpoint, .onnx
    prediction, radius = smooth.certify(data.x[0], n0=100, n=10_000, alpha=0.001)
    certificates = smooth.certify(data.x[:8], n=10_000)              # a batch: one Certificate per input
    model = certkit.load_model("bundled").module
    lb, ub = certkit.BoundedModule(model).compute_bounds(certkit.linf_ball(data.x[:8], eps=0.01), method="CROWN")

The documentation site (docs/) has a guide per command, the methods, and the API reference.
"""
from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("certkit")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

_EXPORTS = {
    "CertkitError": "certkit.common.errors",
    "load_model": "certkit.models",
    "load_dataset": "certkit.datasets",
    "GaussianSmoothing": "certkit.certify",
    "NoiseSampler": "certkit.certify",
    "Smooth": "certkit.certify",
    "Prediction": "certkit.certify",
    "Certificate": "certkit.certify",
    "smoothing_methods": "certkit.certify.smoothing",
    "BoundedModule": "certkit.verifiers",
    "linf_ball": "certkit.verifiers",
    "margin_spec": "certkit.verifiers",
    "verify_instance": "certkit.verifiers.complete.strategy",
    "TrainConfig": "certkit.train",
    "train": "certkit.train",
    "CertifyConfig": "certkit.runs.certify",
    "run_certify": "certkit.runs.certify",
    "VerifyConfig": "certkit.runs.verify",
    "run_verify": "certkit.runs.verify",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'certkit' has no attribute {name!r}")
