"""Deliberately unsound verifiers: synthetic bugs the soundness audit must catch (Zhou et al. 2024, Sec. 5.3).
Never use them for anything but testing an audit; each declares ``sound = False``.

They live in their own registry (:func:`unsound_verifiers`), which only ``certkit soundness`` reads: the verifier
registry of ``certkit verify`` never lists them, and none of them changes a shared class (the half-slope ReLU is an op
subclass put into the bug verifier's own copy of the graph).

``bug-shrink-input``: the paper's "shrinking bounds toward the clean value" bug applied to the input bounds:
    l <- l + a (x0 - l), u <- u - a (u - x0) with x0 the box center and a = ``shrink`` (0.5 by default), after which
    certkit's own (sound) procedure runs on the smaller box. A planted counterexample on a vertex of the real box is
    outside the shrunk one, so it typically answers ``unsat``: an unsound verdict the audit must flag.
``bug-vnnlib-last-bound``: an off-by-one in reading the VNN-LIB input box (``for i in range(n - 1)`` over the upper
    bounds): the last input's upper bound is never read and stays at its lower bound, so that input is pinned and
    the rest of certkit's procedure answers about a slice of the box.
``bug-relu-slope``: CROWN with a wrong upper line for unstable ReLUs (through (l, 0) with HALF the slope u / (u - l),
    so it lies below the ReLU at u), bounds only (no attack: like the incomplete verifiers that answer only
    unsat / unknown); lower bounds come out too high, so it proves properties that are false.
``bug-bab-drop``: input-split branch and bound (no attack first) whose split keeps only the lower half of each split
    box and silently drops the upper half; it answers ``unsat`` once every kept leaf is refuted.
``bug-low-precision``: CROWN with the network and the input box in bfloat16 (8 significant bits) and its bounds
    compared with the property's thresholds as they are, without a float64 re-check (the "reduced precision without a
    sound final check" bug); rounding the box bounds to nearest can cut off a sliver of the box that holds the only
    counterexamples, and rounding in the bound itself can lift it above the true minimum.
Which benchmark families catch which bug is measured in docs/results.md ("Soundness benchmark").
"""
from __future__ import annotations

import copy
import time
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from certkit.common.registry import Registry
from certkit.verifiers.bounds.ops.relu import ReLU
from certkit.verifiers.complete.registry import Instance, Verifier
from certkit.verifiers.complete.strategy import verify_property
from certkit.verifiers.complete.vnncomp_format import InstanceResult
from certkit.verifiers.complete.vnnlib import Property, parse_vnnlib

UNSOUND_REGISTRY = Registry("deliberately unsound verifier")


def register_unsound_verifier(cls: type[Verifier]) -> type[Verifier]:
    """Class decorator: register a deliberately unsound verifier (``sound = False`` required) for the audits.

    Raises:
        ValueError: empty or duplicate name, or a class that declares itself sound.
    """
    if cls.sound:
        raise ValueError(f"{cls.__name__} declares sound = True: only deliberately unsound verifiers belong here")
    return UNSOUND_REGISTRY.register(cls)


def unsound_verifiers() -> dict[str, type[Verifier]]:
    """The deliberately unsound verifiers by name (the audit's positive controls)."""
    return UNSOUND_REGISTRY.all()


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


@register_unsound_verifier
class ShrinkInputBug(Verifier):
    """DELIBERATELY UNSOUND: :func:`shrink_input_verify` with the input boxes shrunk by half."""

    name = "bug-shrink-input"
    help = "synthetic UNSOUND verifier: input boxes shrunk by 0.5"
    sound = False

    def solve(self, instance: Instance, timeout: float) -> InstanceResult:
        return shrink_input_verify(instance.onnx, instance.vnnlib, timeout)


def last_bound_property(prop: Property) -> Property:
    """A copy of ``prop`` whose last input's upper bound equals its lower bound (the off-by-one of the module doc)."""
    terms = []
    for t in prop.terms:
        hi_exact = list(t.x_U_exact[:-1]) + [t.x_L_exact[-1]]
        hi = np.array(t.x_U, dtype=float).copy()
        hi[-1] = t.x_L[-1]
        terms.append(replace(t, x_U=hi, x_U_exact=hi_exact))
    return replace(prop, terms=terms)


@register_unsound_verifier
class LastBoundBug(Verifier):
    """DELIBERATELY UNSOUND: certkit's procedure on the box read with an off-by-one (module docstring)."""

    name = "bug-vnnlib-last-bound"
    help = "synthetic UNSOUND verifier: the last input's upper bound is never read (off-by-one)"
    sound = False

    def solve(self, instance: Instance, timeout: float) -> InstanceResult:
        return verify_property(instance.network(), last_bound_property(instance.property()), timeout)


class HalfSlopeReLU(ReLU):
    """ReLU whose upper line for unstable neurons has HALF the correct slope (through (l, 0), so it lies below the
    ReLU at u): the relaxation of ``bug-relu-slope``. Used only in that verifier's own copy of the graph."""

    def relax(self, l, u, alpha=None, setup=None):
        aL, cL, aU, cU = super().relax(l, u, alpha, setup)
        unstable = (l < 0) & (u > 0)
        if aU.dim() > unstable.dim():
            unstable = unstable.unsqueeze(1).expand_as(aU)
        half = torch.where(unstable, aU / 2, aU)
        return aL, cL, half, torch.where(unstable, cU / 2, cU)  # the line through (l, 0) with half the slope


def with_half_slope_relu(bm) -> None:
    """Replace every ReLU op of the bounded module ``bm``'s graph by a :class:`HalfSlopeReLU` copy (this ``bm`` only;
    the op class and every other graph are untouched)."""
    for node in bm.graph.nodes:
        if type(node.op) is ReLU:
            bad = copy.copy(node.op)
            bad.__class__ = HalfSlopeReLU
            node.op = bad


def _bounds_only(instance: Instance, timeout: float, dtype: torch.dtype = torch.float64,
                 label: str = "CROWN (half-slope ReLU)", half_slope: bool = False) -> InstanceResult:
    """unsat when CROWN (network and input boxes in ``dtype``) refutes every disjunct on its whole box, else unknown
    (no attack, no branching); the bounds are compared with the thresholds exactly, with no sound final check."""
    from certkit.verifiers.bounds.ibp_crown import BoundedModule
    from certkit.verifiers.complete.input_split import refuted

    t0 = time.perf_counter()
    net = instance.network()
    bm = BoundedModule(copy.deepcopy(net.module).to(dtype).eval(), net.sample_shape)
    if half_slope:
        with_half_slope_relu(bm)
    for term in instance.property().terms:
        lo, hi = torch.tensor(term.x_L)[None].to(dtype), torch.tensor(term.x_U)[None].to(dtype)
        if not bool(refuted(bm, term, lo, hi, "CROWN").all()):
            return InstanceResult("unknown", time.perf_counter() - t0, "CROWN does not refute every disjunct")
    return InstanceResult("unsat", time.perf_counter() - t0, method=label)


@register_unsound_verifier
class LowPrecisionBug(Verifier):
    """DELIBERATELY UNSOUND: CROWN computed in bfloat16, bounds only, no sound final check (module docstring)."""

    name = "bug-low-precision"
    help = "synthetic UNSOUND verifier: CROWN in bfloat16 (network and input box rounded), no float64 re-check"
    sound = False

    def solve(self, instance: Instance, timeout: float) -> InstanceResult:
        return _bounds_only(instance, timeout, torch.bfloat16, "CROWN in bfloat16")


@register_unsound_verifier
class ReluSlopeBug(Verifier):
    """DELIBERATELY UNSOUND: CROWN with half the upper slope on unstable ReLUs, bounds only (module docstring)."""

    name = "bug-relu-slope"
    help = "synthetic UNSOUND verifier: CROWN whose unstable-ReLU upper line has half the correct slope"
    sound = False

    def solve(self, instance: Instance, timeout: float) -> InstanceResult:
        return _bounds_only(instance, timeout, half_slope=True)


def lower_half_only(lo: torch.Tensor, hi: torch.Tensor, dim: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The bug of ``bug-bab-drop``: of each split box only the half below the middle of ``dim`` (N,) is kept."""
    from certkit.verifiers.complete.input_split import split_boxes

    lo2, hi2 = split_boxes(lo, hi, dim)
    return lo2[:lo.shape[0]], hi2[:lo.shape[0]]


@register_unsound_verifier
class BaBDropBug(Verifier):
    """DELIBERATELY UNSOUND: input-split BaB that drops the upper half of every split box (module docstring)."""

    name = "bug-bab-drop"
    help = "synthetic UNSOUND verifier: input-split branch and bound that drops half of every split"
    sound = False

    def solve(self, instance: Instance, timeout: float) -> InstanceResult:
        from certkit.verifiers.bounds.ibp_crown import BoundedModule
        from certkit.verifiers.complete.input_split import input_split_bab
        from certkit.verifiers.complete.strategy import Deadline

        dl = Deadline(timeout)
        net = instance.network()
        net32 = copy.deepcopy(net.module).float().eval()
        bm = BoundedModule(copy.deepcopy(net.module).double().eval(), net.sample_shape)
        total = 0
        for term in instance.property().terms:
            status, n = input_split_bab(bm, net32, net, [term], dl, 20_000 - total, 256, split=lower_half_only,
                                        vertices=False)
            total += n
            if status != "unsat":
                if isinstance(status, InstanceResult):
                    return status
                return InstanceResult(status, time.perf_counter() - dl.t0, f"branch and bound: {status}")
        return InstanceResult("unsat", time.perf_counter() - dl.t0, method="input-split BaB (drops halves)",
                              domains=total)
