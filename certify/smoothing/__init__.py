"""Randomized-smoothing methods, one module each, behind one interface (base.py). Reading the registry imports
every module in this package, so each registers itself: a new method is one new module here."""
from certkit.certify.smoothing.base import (
    ABSTAIN,
    Certificate,
    Prediction,
    SmoothingMethod,
    check_certify_args,
    register_smoothing,
    smoothing_method,
    smoothing_methods,
)

__all__ = ["ABSTAIN", "Certificate", "Prediction", "SmoothingMethod", "check_certify_args", "register_smoothing",
           "smoothing_method", "smoothing_methods"]
