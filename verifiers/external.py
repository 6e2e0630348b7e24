"""Adapters to external bound engines. Optional: used only when the package imports.

auto_LiRPA (Xu et al. 2020, Verified-Intelligence/auto_LiRPA): the registry's 0.3 cannot import on current
torch; a newer build that imports is used through its public API
(BoundedModule, BoundedTensor, PerturbationLpNorm, compute_bounds(x=(bx,), C=C, method=...)).
"""
from __future__ import annotations

import torch

from certkit.common.errors import CertkitError
from certkit.verifiers.bounds import canonical_method
from certkit.verifiers.perturbation import Box, L2Ball, Perturbation


def auto_lirpa_available() -> bool:
    """True when ``import auto_LiRPA`` succeeds in this environment."""
    try:
        import auto_LiRPA  # noqa: F401  (availability check)
    except Exception:
        return False
    return True


class AutoLirpaBackend:
    """Same interface as :class:`certkit.verifiers.BoundedModule` (``compute_bounds``), computed by auto_LiRPA.

    Raises:
        CertkitError: auto_LiRPA is not importable.
    """

    def __init__(self, model: torch.nn.Module, input_shape: tuple):
        if not auto_lirpa_available():
            raise CertkitError("--backend auto_lirpa needs an importable auto_LiRPA (not installable from the "
                               "registry on current torch); use the default certkit backend")
        from auto_LiRPA import BoundedModule

        self.input_shape = tuple(input_shape)
        self.bm = BoundedModule(model, torch.zeros((1,) + self.input_shape))

    def compute_bounds(self, pert: Perturbation, C: torch.Tensor | None = None, method: str = "CROWN",
                       bound_upper: bool = True, **_):
        from auto_LiRPA import BoundedTensor
        from auto_LiRPA.perturbations import PerturbationLpNorm

        method = canonical_method(method)
        if isinstance(pert, Box):
            x_L, x_U = pert.box()
            ptb = PerturbationLpNorm(norm=float("inf"), x_L=x_L, x_U=x_U)
            x = pert.center()
        elif isinstance(pert, L2Ball):
            ptb = PerturbationLpNorm(norm=2.0, eps=pert.eps)
            x = pert.x0
        else:
            raise CertkitError(f"auto_LiRPA backend: unsupported perturbation {type(pert).__name__}")
        bx = BoundedTensor(x, ptb)
        return self.bm.compute_bounds(x=(bx,), C=C, method=method, bound_upper=bound_upper)
