"""Input perturbation sets and the concretization of linear bounds over them.

Units: x, eps, x_L, x_U are in the model's raw input units (for certkit checkpoints the [0,1] data range;
normalization is a layer inside the model, so eps is divided by std implicitly by propagation).
"""
from __future__ import annotations

import math

import torch

from certkit.common.errors import CertkitError


class Perturbation:
    """A set of inputs around a batch of points. ``box()`` encloses it; ``lower(A)`` = min over the set of
    sum(A * x) for A of shape (B, S, *input_shape), returning (B, S)."""

    def box(self) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def lower(self, A: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def center(self) -> torch.Tensor:
        raise NotImplementedError

    def unsqueeze(self) -> Perturbation:
        """The same set around ONE input (*input_shape) as a batch of one (1, *input_shape)."""
        raise NotImplementedError


class Box(Perturbation):
    """Per-input box x_L <= x <= x_U, shapes (B, *input_shape).

    Raises:
        CertkitError: (with ``check``) shapes differ, x_L > x_U somewhere, a bound is not finite. ``check=False`` is
            for boxes the caller built from checked ones (splits, clipped balls): it skips three passes over them.
    """

    def __init__(self, x_L: torch.Tensor, x_U: torch.Tensor, check: bool = True):
        if check:
            if x_L.shape != x_U.shape:
                raise CertkitError(f"x_L and x_U shapes differ: {tuple(x_L.shape)} vs {tuple(x_U.shape)}")
            if torch.any(x_L > x_U):
                raise CertkitError("x_L must be <= x_U everywhere")
            if not (torch.isfinite(x_L).all() and torch.isfinite(x_U).all()):
                raise CertkitError("input box bounds must be finite")
        self.x_L, self.x_U = x_L, x_U

    def box(self):
        return self.x_L, self.x_U

    def center(self):
        return (self.x_L + self.x_U) / 2

    def unsqueeze(self):
        return Box(self.x_L.unsqueeze(0), self.x_U.unsqueeze(0), check=False)

    def lower(self, A):
        return box_lower(self.x_L, self.x_U, A)


def box_lower(x_L: torch.Tensor, x_U: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """min over x_L <= x <= x_U of sum(A * x) = A . c - |A| . r (c, r: center and radius), for A (B, S, *shape) and
    bounds (B, *shape); returns (B, S). No checks (callers pass intervals they computed; :class:`Box` checks user
    input). Elementwise products and sums: on CPU 1.3-4x faster than batched matrix-vector products for the
    shapes of CROWN and IBP training, forward and backward (measured: bench/README.md). Source: the
    concretization of a linear bound over an Linf box (Zhang et al. NeurIPS 2018, CROWN, Cor. 3.3 with q = 1); units
    are those of x_L, x_U (raw input units for the input box)."""
    c = ((x_U + x_L) / 2).flatten(1).unsqueeze(1)
    r = ((x_U - x_L) / 2).flatten(1).unsqueeze(1)
    Af = A.flatten(2)
    if torch.is_grad_enabled() and (Af.requires_grad or c.requires_grad or r.requires_grad):
        return (Af * c).sum(-1) - (Af.abs() * r).sum(-1)
    return (Af * c).sub_(Af.abs().mul_(r)).sum(-1)             # in place: two (B, S, n) temporaries, not four


def linf_ball(x: torch.Tensor, eps: float, data_range: tuple[float, float] | None = (0.0, 1.0)) -> Box:
    """Linf ball of radius eps around x (B, *shape), clipped to the data range (raw input units; None: not clipped).

    Raises:
        CertkitError: eps negative or not finite; x not finite, or a point further than eps outside the data range
            (its clipped ball is empty). One pass over the box (certified training builds one per batch).
    """
    if not 0 <= eps < math.inf:
        raise CertkitError(f"eps must be >= 0 and finite, got {eps}")
    lo, hi = x - eps, x + eps
    if data_range is not None:
        lo, hi = lo.clamp(min=data_range[0]), hi.clamp(max=data_range[1])
    if x.numel() and not bool((hi - lo).amin() >= 0):   # NaN or inf in x makes hi - lo NaN or negative
        where = "" if data_range is None else f" and within eps of the data range [{data_range[0]:g}, " \
                                               f"{data_range[1]:g}]"
        raise CertkitError(f"the centres of a Linf ball must be finite{where}")
    return Box(lo, hi, check=False)


class L2Ball(Perturbation):
    """{x : ||x - x0||_2 <= eps} per input (not intersected with the data range: a sound superset)."""

    def __init__(self, x0: torch.Tensor, eps: float):
        if not eps >= 0:
            raise CertkitError(f"eps must be >= 0, got {eps}")
        self.x0, self.eps = x0, float(eps)

    def box(self):
        return self.x0 - self.eps, self.x0 + self.eps

    def center(self):
        return self.x0

    def unsqueeze(self):
        return L2Ball(self.x0.unsqueeze(0), self.eps)

    def lower(self, A):
        return (A * self.x0.unsqueeze(1)).flatten(2).sum(-1) - self.eps * A.flatten(2).norm(dim=-1)
