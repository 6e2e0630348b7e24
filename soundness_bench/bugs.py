"""Deliberately unsound verifiers: synthetic bugs the soundness audit must catch (Zhou et al. 2024, Sec. 5.3).

``shrink_input``: the paper's "shrinking bounds toward the clean value" bug applied to the input bounds:
l <- l + a (x0 - l), u <- u - a (u - x0) with x0 the box center and a = ``shrink`` (0.5 by default), after which
certkit's own (sound) procedure runs on the smaller box. Every answer it gives is about the wrong box: a planted
counterexample on a vertex of the real box is outside the shrunk one, so it typically answers ``unsat`` -- an
unsound verdict that ``certkit soundness score`` must flag. Never use it for anything but testing the audit.
"""
from __future__ import annotations

from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import numpy as np

from certkit.verifiers.registry import Instance, Verifier, register_verifier
from certkit.verifiers.strategy import verify_property
from certkit.verifiers.vnncomp import InstanceResult
from certkit.verifiers.vnnlib import Property, parse_vnnlib


def shrink_property(prop: Property, shrink: float) -> Property:
    """A copy of ``prop`` whose input boxes are shrunk toward their centers by the factor ``shrink`` in [0, 1]."""
    terms = []
    s = Fraction(shrink)
    for t in prop.terms:
        mids = [(lo + hi) / 2 for lo, hi in zip(t.x_L_exact, t.x_U_exact)]
        lo = [lo + s * (m - lo) for lo, m in zip(t.x_L_exact, mids)]
        hi = [hi - s * (hi - m) for hi, m in zip(t.x_U_exact, mids)]
        terms.append(replace(t, x_L=np.array([float(v) for v in lo]), x_U=np.array([float(v) for v in hi]),
                             x_L_exact=lo, x_U_exact=hi))
    return replace(prop, terms=terms)


def shrink_input_verify(onnx_path: str | Path, vnnlib_path: str | Path, timeout: float,
                        shrink: float = 0.5) -> InstanceResult:
    """UNSOUND: certkit's verification of the property with input boxes shrunk by ``shrink`` (see module doc)."""
    from certkit.models.onnx_import import load_onnx

    prop = shrink_property(parse_vnnlib(vnnlib_path), shrink)
    return verify_property(load_onnx(onnx_path), prop, timeout)


@register_verifier
class ShrinkInputBug(Verifier):
    """DELIBERATELY UNSOUND: :func:`shrink_input_verify` with the input boxes shrunk by half."""

    name = "bug-shrink-input"
    help = "synthetic UNSOUND verifier: input boxes shrunk by 0.5"
    sound = False

    def solve(self, instance: Instance, timeout: float) -> InstanceResult:
        return shrink_input_verify(instance.onnx, instance.vnnlib, timeout)
