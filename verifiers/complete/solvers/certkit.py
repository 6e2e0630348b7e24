"""certkit's own verifiers (verifiers/complete/strategy.py): the full procedure, and one bound method alone."""
from __future__ import annotations

import time
from dataclasses import dataclass

from certkit.common.options import option
from certkit.verifiers.complete.registry import Instance, Verifier, register_verifier
from certkit.verifiers.complete.strategy import verify_property
from certkit.verifiers.complete.vnncomp_format import InstanceResult


@register_verifier
class CertkitVerifier(Verifier):
    """PGD falsification, IBP -> CROWN -> alpha-CROWN, then input-split branch and bound (inputs <= 64 dims)."""

    name = "certkit"
    help = "PGD, IBP -> CROWN -> alpha-CROWN, input-split BaB"
    methods: tuple = ("IBP", "CROWN", "alpha-CROWN")
    bab = True  # whether this verifier branches at all (the bounds-only variants below do not)

    @dataclass
    class Options:
        bab: bool = option(True, "branch and bound on what the bounds leave open (input splits for inputs of at most "
                           "32 free dimensions, else activation splits with beta-CROWN for ReLU and GenBaB for "
                           "Sigmoid/Tanh); --no-bab: bounds only")
        sound: bool = option(False, "prove with outward-rounded bounds, so that unsat holds for the network in exact "
                             "arithmetic and as run in float32 (ReLU networks of Linear/Conv/BatchNorm/AvgPool/"
                             "residual ops; branch and bound splits inputs only); sat answers are float32 "
                             "counterexamples checked in onnxruntime either way")

    def __init__(self, options: dict | None = None):
        super().__init__(options)
        self.bab = self.opts.bab and type(self).bab

    def solve(self, instance: Instance, timeout: float) -> InstanceResult:
        t0 = time.perf_counter()
        net, prop = instance.network(), instance.property()  # loading counts against the timeout
        return verify_property(net, prop, timeout - (time.perf_counter() - t0), self.methods, self.bab,
                               sound=self.opts.sound)


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
