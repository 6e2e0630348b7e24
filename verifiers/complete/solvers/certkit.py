"""certkit's own verifiers (verifiers/complete/strategy.py): the full procedure, and one bound method alone."""
from __future__ import annotations

import time

from certkit.verifiers.complete.registry import Instance, Verifier, register_verifier
from certkit.verifiers.complete.strategy import verify_property
from certkit.verifiers.complete.vnncomp_format import InstanceResult


@register_verifier
class CertkitVerifier(Verifier):
    """PGD falsification, IBP -> CROWN -> alpha-CROWN, then input-split branch and bound (inputs <= 64 dims)."""

    name = "certkit"
    help = "PGD, IBP -> CROWN -> alpha-CROWN, input-split BaB"
    methods: tuple = ("IBP", "CROWN", "alpha-CROWN")
    bab = True

    def __init__(self, bab: bool | None = None):
        if bab is not None:
            self.bab = bab and type(self).bab

    def solve(self, instance: Instance, timeout: float) -> InstanceResult:
        t0 = time.perf_counter()
        net, prop = instance.network(), instance.property()  # loading counts against the timeout
        return verify_property(net, prop, timeout - (time.perf_counter() - t0), self.methods, self.bab)


@register_verifier
class CertkitIBP(CertkitVerifier):
    """PGD falsification, then IBP only (no branching)."""

    name = "certkit-ibp"
    help = "PGD, then IBP"
    methods = ("IBP",)
    bab = False


@register_verifier
class CertkitCROWN(CertkitVerifier):
    """PGD falsification, then CROWN only (no branching)."""

    name = "certkit-crown"
    help = "PGD, then CROWN"
    methods = ("CROWN",)
    bab = False


@register_verifier
class CertkitAlphaCROWN(CertkitVerifier):
    """PGD falsification, then alpha-CROWN only (no branching)."""

    name = "certkit-alpha-crown"
    help = "PGD, then alpha-CROWN"
    methods = ("alpha-CROWN",)
    bab = False
