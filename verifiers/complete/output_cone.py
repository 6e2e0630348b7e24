"""Verify a property on the part of the network that computes the outputs it reads (the output cone).

:func:`certkit.models.output_cone.restrict_outputs` cuts the network; this module picks the columns from the
property and rewrites its output rows for the cut network. A counterexample found on the cut network is an input:
its output is recomputed on the whole network and re-checked against the original property before it is reported.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from certkit.models.onnx_import import OnnxModel
from certkit.models.output_cone import restrict_outputs
from certkit.verifiers.complete.vnnlib import Property

#: cut only when the property reads at most this share of the outputs (a cut costs a shape propagation and a copy)
MAX_READ_SHARE = 0.5


def read_columns(prop: Property) -> np.ndarray:
    """Sorted indices of the outputs some disjunct's rows C y <= d have a nonzero coefficient for."""
    used = np.zeros(prop.n_outputs, dtype=bool)
    for t in prop.terms:
        used |= np.any(np.asarray(t.C) != 0, axis=0)
    return np.flatnonzero(used)


def in_output_cone(onnx_model: OnnxModel, prop: Property) -> tuple[OnnxModel, Property] | None:
    """The network cut to the columns ``prop`` reads and the property over the cut network's outputs, or None when
    the property reads more than MAX_READ_SHARE of the outputs or the network's outputs cannot be narrowed.

    The cut network's module computes the same values as the whole one's columns offset .. offset + width - 1 (the
    same fx nodes); its ``output_window`` makes onnxruntime's replays read the same columns of the ORIGINAL file.
    """
    cols = read_columns(prop)
    if onnx_model.output_window is not None or cols.size == 0 or cols.size > MAX_READ_SHARE * prop.n_outputs:
        return None
    cut = restrict_outputs(onnx_model.module, onnx_model.sample_shape, int(cols[0]), int(cols[-1]) + 1)
    if cut is None:
        return None
    module, offset, width = cut
    model = dataclasses.replace(onnx_model, module=module, num_outputs=width, output_window=(offset, width))
    terms = [dataclasses.replace(t, C=np.ascontiguousarray(np.asarray(t.C)[:, offset:offset + width]))
             for t in prop.terms]
    return model, dataclasses.replace(prop, n_outputs=width, terms=terms)
