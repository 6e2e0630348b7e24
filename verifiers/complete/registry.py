"""The verifier contract and registry: ``verify(instance, timeout) -> InstanceResult`` with declared properties.

A verifier answers one VNN-COMP instance (ONNX network + VNN-LIB property) with ``sat`` (and a counterexample),
``unsat``, ``unknown``, ``timeout`` or ``error`` (verifiers/complete/vnncomp_format.py). It declares:
    sound     an ``unsat`` answer is never wrong (False only for the deliberately broken verifiers of
              soundness_bench/unsound_verifiers.py, which exist to test audits);
    complete  given enough time it decides every instance of the networks it supports (never ``unknown``).
Every class registered with :func:`register_verifier` becomes a ``certkit soundness run --verifier NAME`` choice
and is run on shared tiny problems with known answers by tests/test_verifier_contract.py. Built-in verifiers live
one module each in ``verifiers/complete/solvers/`` (imported by :func:`verifiers`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from certkit.common.errors import CertkitError
from certkit.common.options import build_options
from certkit.common.registry import Registry
from certkit.verifiers.complete.vnncomp_format import InstanceResult


@dataclass
class Instance:
    """One verification instance: the files, read once on first use.

    Attributes:
        onnx, vnnlib: paths of the network and the property.
    Raises (from ``network()`` / ``property()``):
        CertkitError: unreadable or unsupported files.
    """

    onnx: Path
    vnnlib: Path
    _net: object = field(default=None, repr=False)
    _prop: object = field(default=None, repr=False)

    def network(self):
        """The network as certkit's ONNX import (:class:`certkit.models.onnx_import.OnnxModel`)."""
        if self._net is None:
            from certkit.models.onnx_import import load_onnx
            self._net = load_onnx(self.onnx)
        return self._net

    def property(self):
        """The parsed VNN-LIB property (:class:`certkit.verifiers.complete.vnnlib.Property`)."""
        if self._prop is None:
            from certkit.verifiers.complete.vnnlib import parse_vnnlib
            self._prop = parse_vnnlib(self.vnnlib)
        return self._prop


class Verifier:
    """Base class of registered verifiers.

    Class attributes: ``name`` (the CLI name), ``help`` (one line), ``sound``, ``complete`` (module docstring),
    ``package`` (the distribution whose version :meth:`version` reports).
    Subclasses implement :meth:`solve`; :meth:`verify` adds the contract: the whole call (loading included) within
    ``timeout`` seconds as far as the verifier can tell, and every problem with the instance returned as ``error``,
    never raised.
    """

    name = ""
    help = ""
    sound = True
    complete = False
    package = "certkit"

    def __init__(self, options: dict | None = None):
        """``options``: values of the options the verifier declares (its ``Options`` dataclass), by name.

        Raises:
            CertkitError: an option the verifier does not declare.
        """
        self.opts = build_options(type(self), options or {}, f"--verifier {self.name}")

    def version(self) -> str:
        """The verifier's version string (recorded next to its answers)."""
        from importlib.metadata import PackageNotFoundError, version

        try:
            return f"{self.package} {version(self.package)}"
        except PackageNotFoundError:
            return f"{self.package} (not installed)"

    def solve(self, instance: Instance, timeout: float) -> InstanceResult:
        raise NotImplementedError

    def verify(self, instance: Instance, timeout: float) -> InstanceResult:
        """Answer ``instance`` within ``timeout`` seconds (see the class docstring)."""
        t0 = time.perf_counter()
        try:
            res = self.solve(instance, timeout)
        except CertkitError as e:
            res = InstanceResult("error", 0.0, str(e))
        res.seconds = time.perf_counter() - t0
        return res


REGISTRY = Registry("verifier", "certkit.verifiers.complete.solvers")


def register_verifier(cls: type[Verifier]) -> type[Verifier]:
    """Class decorator: register a verifier under ``cls.name``.

    Raises:
        ValueError: empty or duplicate name.
    """
    return REGISTRY.register(cls)


def verifiers() -> dict[str, type[Verifier]]:
    """Every registered verifier by name (the built-in ones of verifiers/complete/solvers/ are imported first)."""
    return REGISTRY.all()


def get_verifier(name: str, options: dict | None = None) -> Verifier:
    """An instance of the registered verifier ``name``.

    Raises:
        CertkitError: unknown name (the message lists the registered ones).
    """
    return REGISTRY.get(name)(options)
