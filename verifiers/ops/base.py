"""Op interface: each graph op carries its forward function, its interval rule (IBP) and its backward linear
rule (CROWN), side by side (the auto_LiRPA idea: a new op is one new class).

Conventions (B = batch, S = specification rows, node shapes are per sample, without B):
    intervals  (l, u): tensors (B, *shape) with l <= u elementwise.
    linear bounds: A of shape (B, S, *out_shape) and bias (B, S) describe sum(A * out) + bias; an op's
    ``backward`` maps a LOWER linear bound on its output to lower linear bounds on its inputs
    (upper bounds are computed as lower bounds of the negated rows).
"""
from __future__ import annotations

import torch

Interval = tuple[torch.Tensor, torch.Tensor]


def sum_node(t: torch.Tensor) -> torch.Tensor:
    """Sum over the node dims of a (B, S, *shape) tensor -> (B, S)."""
    return t.flatten(2).sum(-1)


class Op:
    """One node of a bound graph.

    Attributes:
        affine: True when the op is an affine map of its inputs (its backward rule ignores bounds).
        in_shapes / out_shape: per-sample shapes, set by the graph builder.
    """

    affine = True
    name = "op"

    def __init__(self):
        self.in_shapes: list[tuple] = []
        self.out_shape: tuple = ()

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        """The op on concrete inputs (B, *in_shape) -> (B, *out_shape)."""
        raise NotImplementedError

    def ibp(self, *intervals: Interval) -> Interval:
        """Interval rule (Gowal et al. 2018): bounds (l, u) of the output from input bounds, each (B, *shape)."""
        raise NotImplementedError

    def backward(self, A: torch.Tensor, *in_bounds: Interval | None) -> tuple[list[torch.Tensor | None], torch.Tensor | None]:
        """Lower linear bound on the output (A, (B,S,*out)) -> ([A_i for each input], bias (B,S) or None)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{self.name}{tuple(self.out_shape)}"


class ModuleOp(Op):
    """An op that evaluates a torch module (weights read live from it, so bounds are differentiable)."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, x):
        return self.module(x)


def center_radius(iv: Interval) -> Interval:
    l, u = iv
    return (u + l) / 2, (u - l) / 2
