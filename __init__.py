"""certkit: certified robustness for PyTorch models.

The main entry points, importable from ``certkit`` directly (each is loaded on first use, so ``import certkit`` stays
light)::

    import certkit
    model = certkit.load_model("bundled")                      # a checkpoint, .onnx, "pkg.mod:factory" or "bundled"
    data = certkit.load_dataset("digits", split="test")
    smoothed = certkit.GaussianSmoothing(certkit.NoiseSampler(model.module, sigma=0.25))
    bm = certkit.BoundedModule(model.module, input_shape=(1, 8, 8))

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
