"""Propagation tightness of IBP (Mao, Müller, Fischer, Vechev, ICLR 2024, "Understanding certified training with
interval bound propagation"; repo eth-sri/ibp-propagation-tightness).

tau = (radius of the optimal box of the locally linearized network) / (radius of IBP's box), in (0, 1].
The activation pattern is fixed at the clean input x (local linearization; for Sigmoid/Tanh the slopes are the
derivatives at x), giving the linear map A = C W_L D_{L-1} ... D_1 W_1. Then
    numerator   = |A| eps                       (the tightest box of the linear map over the eps-ball)
    denominator = |C W_L| D |W_{L-1}| ... D |W_1| eps   (IBP's radius propagated with absolute weights;
                                                     BatchNorm / normalization folded to |scale|)
per specification row, averaged over rows and inputs.
"""
from __future__ import annotations

import torch

from certkit.verifiers.bounds.ibp_crown import BoundedModule


def _slopes(bm: BoundedModule, x: torch.Tensor) -> dict:
    """Derivative of every non-affine (elementwise) node at its clean input: D of the linearization."""
    g = bm.graph
    vals = [x]
    slopes = {}
    for i, n in enumerate(g.nodes[1:], start=1):
        ins = [vals[j] for j in n.inputs]
        if not n.op.affine:
            slopes[i] = n.op.derivative(*ins)
        vals.append(n.op.forward(*ins))
    return slopes


@torch.no_grad()
def tightness(bm: BoundedModule, x: torch.Tensor, eps: float, C: torch.Tensor) -> torch.Tensor:
    """Mean propagation tightness tau over inputs and specification rows (Linf radius eps around x, (B, *shape)).

    Raises:
        NotImplementedError: a non-affine op without an elementwise derivative.
    """
    g = bm.graph
    B = x.shape[0]
    slopes = _slopes(bm, x)
    # numerator: |A| eps with A the linearized network's coefficients at the input
    relax = {i: (d, torch.zeros_like(d), d, torch.zeros_like(d)) for i, d in slopes.items()}
    A0 = C.reshape((B, C.shape[1]) + tuple(g.output_shape))
    A_in, _ = bm.propagate(g.output, A0, [None] * len(g.nodes), relax)
    numerator = A_in.abs().flatten(2).sum(-1) * eps
    # denominator: IBP radius with the activations replaced by their slopes, last affine layer elided into |C W_L|
    radius = [torch.full_like(x, eps)]
    for i, n in enumerate(g.nodes[1:], start=1):
        if i in slopes:
            radius.append(radius[n.inputs[0]] * slopes[i])
        else:
            ivs = [(-radius[j], radius[j]) for j in n.inputs]
            l, u = n.op.ibp(*ivs)
            radius.append((u - l) / 2)
    out = g.nodes[g.output]
    if out.op is not None and out.op.affine:
        A_ins, _ = out.op.backward(A0, [None] * len(out.inputs))
        denominator = sum((Aj.abs() * radius[j].unsqueeze(1)).flatten(2).sum(-1)
                          for j, Aj in zip(out.inputs, A_ins) if Aj is not None)
    else:
        denominator = (A0.abs().flatten(2) * radius[g.output].flatten(1).unsqueeze(1)).sum(-1)
    return (numerator / denominator.clamp(min=1e-30)).mean()
