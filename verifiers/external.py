"""Adapters to external bound engines. Optional: used only when the package imports.

auto_LiRPA (Xu et al. 2020, Verified-Intelligence/auto_LiRPA): the registry's 0.3 cannot import on current
torch; a newer build that imports is used through its public API
(BoundedModule, BoundedTensor, PerturbationLpNorm, compute_bounds(x=(bx,), C=C, method=...)).
"""
from __future__ import annotations

import copy

import torch

from certkit.common.errors import CertkitError
from certkit.models.zoo import NormalizeLayer
from certkit.verifiers.bounds.ibp_crown import canonical_method
from certkit.verifiers.bounds.perturbation import Box, L2Ball, Perturbation


def auto_lirpa_available() -> bool:
    """True when ``import auto_LiRPA`` succeeds in this environment."""
    try:
        import auto_LiRPA  # noqa: F401  (availability check)
    except Exception:
        return False
    return True


def _normalization_module(layer: NormalizeLayer, sample_shape: tuple) -> torch.nn.Module:
    """NormalizeLayer as a module auto_LiRPA bounds in its default (patches) mode: a per-channel 1x1 convolution
    for image inputs (C, H, W) (that mode fails on certkit's per-sample 3-D constants), else x * scale + shift."""
    scale, shift = layer.scale_shift(sample_shape)
    if len(sample_shape) == 3:
        c = sample_shape[0]
        conv = torch.nn.Conv2d(c, c, 1, groups=c)
        with torch.no_grad():
            conv.weight.copy_(scale.expand(c, 1, 1).reshape(c, 1, 1, 1))
            assert conv.bias is not None
            conv.bias.copy_(shift.expand(c, 1, 1).reshape(c))
        return conv.to(scale.device)
    return _Scale(scale, shift)


class _Scale(torch.nn.Module):
    def __init__(self, scale: torch.Tensor, shift: torch.Tensor):
        super().__init__()
        self.register_buffer("scale", scale.clone())
        self.register_buffer("shift", shift.clone())

    def forward(self, x):
        return x * self.scale + self.shift


def _batched_normalization(model: torch.nn.Module, input_shape: tuple) -> torch.nn.Module:
    """A copy of ``model`` whose NormalizeLayer modules (certkit models have one, first, on the input of shape
    ``input_shape``) are replaced by :func:`_normalization_module`; the model itself is left unchanged."""
    if not any(isinstance(m, NormalizeLayer) for m in model.modules()):
        return model
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, NormalizeLayer):
                setattr(parent, name, _normalization_module(child, input_shape))
    return model


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
        self.bm = BoundedModule(_batched_normalization(model, self.input_shape), torch.zeros((1,) + self.input_shape))

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
