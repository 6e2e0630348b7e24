"""Elementwise activations: the shared part of the op contract for CROWN relaxations.

An activation gives, for pre-activation bounds l <= z <= u, linear bounds
    a_L z + c_L <= act(z) <= a_U z + c_U    on [l, u]
(``relax``). Its backward rule is the same for every activation (CROWN, Zhang et al. 2018, Thm 3.2): a lower bound
on sum(A * act(z)) takes the lower line where A >= 0 and the upper line where A < 0. An activation with something
to optimise (alpha-CROWN, Xu et al. ICLR 2021) declares ``n_alpha`` > 0 parameters per neuron, each in [0, 1], and
``alpha_init`` values that reproduce its CROWN relaxation; any alpha in [0, 1]^n_alpha must give sound lines.
"""
from __future__ import annotations

import torch

from certkit.verifiers.bounds.ops.base import Op, dot_node, scaled_rows, with_constant

Relaxation = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


class Activation(Op):
    """An elementwise activation z -> act(z). Subclasses give ``function``, ``derivative`` and ``relax``.

    ``ibp`` maps interval endpoints, which is exact for non-decreasing functions (override otherwise).
    """

    affine = False
    zero_lower_intercept = False  # True when c_L = 0 always (ReLU): skips a multiply in backward
    piecewise_linear = False      # True when both pieces of a split at 0 are exact lines (ReLU, LeakyReLU)
    branchable = True             # branch and bound splits activation inputs (ReLU at 0, GenBaB elsewhere)

    def function(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def derivative(self, *xs: torch.Tensor) -> torch.Tensor:
        """act'(z) (a subgradient where act is not differentiable); one input z."""
        raise NotImplementedError

    def relax(self, l: torch.Tensor, u: torch.Tensor, alpha: torch.Tensor | None = None, setup=None) -> Relaxation:
        """Lines a_L z + c_L <= act(z) <= a_U z + c_U valid for l <= z <= u (tensors (B, *shape)).

        Returns (a_L, c_L, a_U, c_U), each (B, *shape); with ``alpha`` of shape (n_alpha, B, S, *shape) (one set
        per specification row, values in [0, 1]) each is (B, S, *shape) or broadcastable to it. ``setup`` is
        :meth:`relaxation_setup` of the same bounds (computed here when None).
        """
        raise NotImplementedError

    def unstable(self, l: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Neurons whose relaxation is inexact and whose bounds CROWN refines (default: l < 0 < u)."""
        return (l < 0) & (u > 0)

    def splittable(self, l: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Neurons worth splitting in branch and bound (bool, like l): for piecewise-linear activations the
        unstable ones (l < 0 < u: each half is exact); otherwise every interval wider than 1e-4 (GenBaB, Shi et al.
        2024: each half gets a tighter relaxation)."""
        if self.piecewise_linear:
            return (l < 0) & (u > 0)
        return (u - l) > 1e-4

    def split_point(self, l: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Where branch and bound splits [l, u]: 0 when l < 0 < u (the kink of ReLU, the inflection point of
        Sigmoid/Tanh, so each half is linear, convex or concave), else the midpoint."""
        return torch.where((l < 0) & (u > 0), torch.zeros_like(l), (l + u) / 2)

    def split_points(self, l: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """:meth:`split_point` of every neuron (the branching contract of ops/base.py; elementwise here)."""
        return self.split_point(l, u)

    # -- the generic parts of the op contract -------------------------------------------------------
    def forward(self, z):
        return self.function(z)

    def ibp(self, iv):  # monotone non-decreasing
        return self.function(iv[0]), self.function(iv[1])

    def relaxation(self, in_bounds, alpha=None, setup=None) -> Relaxation:
        l, u = in_bounds[0]
        return self.relax(l, u, alpha, setup)

    def forward_linear(self, rows, in_bounds=(), relaxation: Relaxation | None = None):
        """a_L z + c_L <= act(z) <= a_U z + c_U on the input's interval; with L <= z <= U, a line of slope a >= 0
        is bounded below through L and above through U (the other way round for a < 0)."""
        L, U = rows[0]
        aL, cL, aU, cU = relaxation if relaxation is not None else self.relaxation(in_bounds)
        return with_constant(scaled_rows(aL, L, U), cL), with_constant(scaled_rows(aU, U, L), cU)

    def backward(self, A, in_bounds=(), relaxation: Relaxation | None = None):
        """Lower bound: A+ takes the lower line, A- the upper line."""
        aL, cL, aU, cU = relaxation if relaxation is not None else self.relaxation(in_bounds)
        if aL.dim() < A.dim():
            aL, cL, aU, cU = (t.unsqueeze(1) for t in (aL, cL, aU, cU))
        # A+ a_L + A- a_U = a_U A + (a_L - a_U) relu(A): the slope difference lives on the small (B, 1, *shape)
        # tensors, and relu's backward is one fused mask (cheaper than where(A >= 0, ...) and its gradient).
        # In-place updates of fresh results (never of A or of a tensor autograd saved) halve the passes over the
        # (B, S, *shape) tensors, which dominate the time of intermediate bounds on MLPs.
        Ap = torch.relu(A)
        A_in = (A * aU).addcmul_(Ap, aL - aU)
        # the intercepts as matrix products (base.dot_node): A- c_U + A+ c_L = A c_U + A+ (c_L - c_U)
        if self.zero_lower_intercept:  # c_L = 0: only the upper line has an intercept; A - relu(A) = min(A, 0)
            return [A_in], dot_node(A - Ap, cU)   # not A.clamp(max=0): its gradient is a `where` pass, 3x slower
        return [A_in], dot_node(A, cU) + dot_node(Ap, cL - cU)


def constant_alpha(n_alpha: int, in_bounds, value: float) -> torch.Tensor:
    """Starting alphas (n_alpha, B, *shape) all equal to ``value``, for the first input's bounds (B, *shape)."""
    l = in_bounds[0][0]
    return torch.full((n_alpha,) + tuple(l.shape), value, dtype=l.dtype, device=l.device)


def per_row(t: torch.Tensor, alpha: torch.Tensor | None) -> torch.Tensor:
    """(B, *shape) -> (B, 1, *shape) when per-row alphas (n_alpha, B, S, *shape) are given, else unchanged."""
    return t if alpha is None else t.unsqueeze(1)


def float32_units(t: torch.Tensor) -> float:
    """eps(t.dtype) / eps(float32): 1 for float32, 2^-29 (1.9e-9) for float64.

    The rounding allowances of the smooth activations' lines (an outward shift of 1e-6 (1 + |f(l)| + |f(u)|), the
    width below which an interval gets constant bounds, 1e-5) are written for float32 and multiplied by this, so that
    they cover the rounding of the dtype the bounds are computed in and no more. In float64 (every complete verifier
    in certkit) a float32-sized shift loosened a sum of products of sines and cosines (VNN-COMP ml4acopf's power-flow
    networks) by 1e-4 where the property's margin is 1e-4: no box, however small, could be refuted. The default mode
    bounds the network in real arithmetic (docs/guarantees.md); the float32 execution of sin, exp, ... is no more
    covered there than that of a matrix product, and ``--sound`` refuses these ops.
    """
    return torch.finfo(t.dtype).eps / torch.finfo(torch.float32).eps
