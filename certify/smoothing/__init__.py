"""Randomized-smoothing methods, one module each, behind one interface (base.py). Importing this package imports
every module in it, so each registers itself: a new method is one new module here."""
import importlib
import pkgutil

from certkit.certify.smoothing.base import (ABSTAIN, Certificate, SmoothingMethod, check_certify_args,
                                            register_smoothing, smoothing_method, smoothing_methods)

for _m in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_m.name}")

__all__ = ["ABSTAIN", "Certificate", "SmoothingMethod", "check_certify_args", "register_smoothing",
           "smoothing_method", "smoothing_methods"]
