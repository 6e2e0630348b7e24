"""Bound-propagation ops: one file per op (family) with its IBP rule and backward (CROWN) rule, registered with
:func:`certkit.verifiers.bounds.ops.base.register_op`. Importing this package imports every module in it, so a new op is
one new file here (and its test); nothing else names it.
"""
import importlib
import pkgutil

from certkit.verifiers.bounds.ops.activation import Activation, Relaxation
from certkit.verifiers.bounds.ops.affine import ElementwiseAffine, constant_op
from certkit.verifiers.bounds.ops.base import (
    Call,
    Interval,
    Op,
    Unsupported,
    entry_for_function,
    entry_for_method,
    entry_for_module,
    onnx_op_types,
    register_op,
    register_rewrite,
    registered_modules,
    registered_ops,
    rewrites,
    unregister_op,
)
from certkit.verifiers.bounds.ops.batchnorm import track_batch_stats

for _m in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_m.name}")

__all__ = ["Activation", "Call", "ElementwiseAffine", "Interval", "Op", "Relaxation", "Unsupported", "constant_op",
           "entry_for_function", "entry_for_method", "entry_for_module", "onnx_op_types", "register_op",
           "register_rewrite", "registered_modules", "registered_ops", "rewrites", "track_batch_stats", "unregister_op"]
