"""Forward-mode linear bounds over a box with few free coordinates (the forward mode of LiRPA).

Problem: bound every node of a bound graph over a box of inputs (B, *input_shape) in which only m coordinates are
free (m small: the one to three free features of each disjunct of VNN-COMP's nn4sys cardinality properties).
CROWN's intermediate bounds cost one backward pass per neuron; the forward mode carries, for every node, a linear
lower and a linear upper bound in the m free coordinates, so a node costs about 2(m+1) evaluations of its op. It is
looser than CROWN where relaxation errors compound through many unstable layers (a cGAN's ten layers).
Return: :func:`forward_bounds` the intervals of every node and the output's linear bounds;
with these intervals one backward pass from the specification rows gives the output bound (:func:`box_margins`).
Property: sound: the input box is written x = c + D e with e in [-1, 1]^m (D the half-widths of the free
coordinates); each op's ``forward_linear`` rule (verifiers/bounds/ops) maps valid linear bounds L(e) <= node <= U(e)
to valid bounds of its output (affine ops: W+ L + W- U; activations: their CROWN lines through L or U by the sign of
the slope), and a node's interval is [min L, max U] over the cube, intersected with IBP after non-affine ops.
Reference: Xu et al., "Automatic Perturbation Analysis for Scalable Certified Robustness and Beyond", NeurIPS 2020
(forward mode of LiRPA, Sec. 3.2); the relaxations are CROWN's (Zhang et al. NeurIPS 2018). Measured on VNN-COMP's
nn4sys and cgan_2023 in docs/results.md.
"""
from __future__ import annotations

import torch

from certkit.verifiers.bounds.ops.base import Interval, has_forward_rule
from certkit.verifiers.bounds.perturbation import Box


def forward_supported(bm) -> bool:
    """True when every op of ``bm``'s graph (a BoundedModule) has a forward-mode rule."""
    return all(has_forward_rule(n.op) for n in bm.graph.nodes[1:])


def concretize(T: torch.Tensor) -> Interval:
    """Rows T (B, m+1, *shape) of a linear function of e in [-1, 1]^m -> its (min, max) over the cube, each
    (B, *shape)."""
    spread = T[:, 1:].abs().sum(1)
    return T[:, 0] - spread, T[:, 0] + spread


def input_rows(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Boxes lo, hi (B, *input_shape) -> rows (B, m+1, *input_shape) of x = c + D e: row 0 the center; rows 1..m_b
    of box b the half-widths of its m_b free coordinates (wider than zero), in their order; m the largest m_b."""
    B = lo.shape[0]
    c, r = ((lo + hi) / 2).reshape(B, -1), ((hi - lo) / 2).reshape(B, -1)
    free = r > 0
    rank = free.long().cumsum(1) - 1                    # a free coordinate's row (minus one) within its box
    m = int(free.sum(1).max()) if B else 0
    rows = torch.zeros((B, m + 1, c.shape[1]), dtype=lo.dtype, device=lo.device)
    rows[:, 0] = c
    b, i = free.nonzero(as_tuple=True)
    rows[b, 1 + rank[b, i], i] = r[b, i]
    return rows.reshape((B, m + 1) + tuple(lo.shape[1:]))


def forward_bounds(bm, pert: Box, relax: dict | None = None
                   ) -> tuple[list[Interval], tuple[torch.Tensor, torch.Tensor]]:
    """Intervals of every node of ``bm`` (a BoundedModule whose ops all have forward rules, :func:`forward_supported`)
    over the boxes ``pert`` (B, *input_shape), from forward-mode linear bounds (intersected with IBP after non-affine
    ops: after an affine op, the forward bound is at least as tight as IBP of [min L, max U]), and the output
    node's linear bounds (L, U), each (B, m+1, *output_shape). A node that is constant on every box (its IBP interval
    has zero width: it depends on fixed inputs only) is evaluated, not propagated. Keeps ``bm.deadline`` between
    nodes. ``relax``: a dict filled with node -> the op's relaxation used (reusable by a CROWN pass on the same
    intervals: a relaxation depends on its inputs' intervals only).

    Raises:
        TimeoutError: ``bm.deadline`` passed.
        NotImplementedError: an op without a forward-mode rule.
    """
    g = bm.graph
    rows = input_rows(pert.x_L, pert.x_U)
    k = rows.shape[1]
    bounds: list[Interval] = [pert.box()]
    live: dict[int, tuple[torch.Tensor, torch.Tensor]] = {0: (rows, rows)}
    left = {i: len(n.consumers) for i, n in enumerate(g.nodes)}

    def rows_of(j: int) -> tuple[torch.Tensor, torch.Tensor]:
        if j not in live:                               # a constant node: its value in the constant row
            v = bounds[j][0]
            T = torch.zeros((v.shape[0], k) + tuple(v.shape[1:]), dtype=v.dtype, device=v.device)
            T[:, 0] = v
            live[j] = (T, T)
        return live[j]

    for i, n in enumerate(g.nodes[1:], start=1):
        bm.check_deadline()
        ins = [bounds[j] for j in n.inputs]
        if all(bool(torch.equal(*bounds[j])) for j in n.inputs):
            v = n.op.forward(*[b[0] for b in ins])
            bounds.append((v, v))
        else:
            relaxation = None if n.op.affine else n.op.relaxation(ins)
            if relax is not None and relaxation is not None:
                relax[i] = relaxation
            L, U = n.op.forward_linear([rows_of(j) for j in n.inputs], ins, relaxation)
            lo, _ = concretize(L)
            _, hi = concretize(U)
            if not n.op.affine:      # (IBP after affine ops: 6% of the time, the same sub-boxes on nn4sys mscn)
                l_ibp, u_ibp = n.op.ibp(*ins)
                lo, hi = torch.maximum(lo, l_ibp), torch.minimum(hi, u_ibp)
            bounds.append((lo, hi))
            live[i] = (L, U)
        for j in n.inputs:
            left[j] -= 1
            if left[j] == 0:
                live.pop(j, None)
    return bounds, rows_of(g.output)


def free_coordinates(pert: Box) -> int:
    """The largest number of free (wider than zero) input coordinates over the boxes of ``pert`` (a batch
    (B, *input_shape); 0 for an empty batch): the m of the forward mode, whose rows cost m+1 evaluations of each op."""
    B = pert.x_L.shape[0]
    return int((pert.x_U > pert.x_L).reshape(B, -1).sum(1).max()) if B else 0


class ForwardRows:
    """Forward-mode linear bounds carried node by node beside CROWN (``BoundedModule.crown_intermediate``).

    Problem: CROWN bounds a node's neurons by backward passes that cost about one pass per neuron IBP leaves
    unstable; over a box with few free coordinates the forward mode bounds a whole node for 2(m+1) evaluations of
    its op and, where relaxation errors have not compounded yet (the first layers), far more tightly than IBP
    (VNN-COMP cgan_2023's 32 x 32 generator over 4 free latent inputs: 751 of 28,800 neurons of its widest layer
    unstable instead of IBP's 25,765). Taking the forward interval before the backward passes leaves CROWN only
    the neurons it still finds unstable.
    Return: :meth:`node` gives a node's forward interval, computed from its inputs' rows with the relaxation of
    the node built from its inputs' final intervals (which CROWN may have tightened: the rows of later nodes
    profit too).
    Property: sound as :func:`forward_bounds`: every rule maps valid linear bounds of its inputs to valid bounds of
    its output, and an input without rows (a node that does not depend on the perturbed input) contributes its
    interval as constant rows.
    Reference: the forward mode of LiRPA (Xu et al. NeurIPS 2020, Sec. 3.2; its "forward+backward" method bounds
    intermediate nodes in forward mode and the output backward); here each node takes the tighter of both.
    """

    def __init__(self, graph, pert: Box):
        """``graph``: the BoundGraph bounded; ``pert``: the boxes (B, *input_shape), their free coordinates as rows
        (:func:`input_rows`)."""
        self.graph = graph
        rows = input_rows(pert.x_L, pert.x_U)
        self.k = rows.shape[1]
        self.live: dict[int, tuple[torch.Tensor, torch.Tensor]] = {0: (rows, rows)}
        self.left = {i: len(n.consumers) for i, n in enumerate(graph.nodes)}

    def _rows(self, j: int, bounds: list) -> tuple[torch.Tensor, torch.Tensor]:
        if j in self.live:
            return self.live[j]
        lo, hi = bounds[j]                                  # constant in e: its interval as row 0
        L = torch.zeros((lo.shape[0], self.k) + tuple(lo.shape[1:]), dtype=lo.dtype, device=lo.device)
        U = torch.zeros_like(L)
        L[:, 0], U[:, 0] = lo, hi
        return L, U

    def node(self, i: int, bounds: list, relaxation=None) -> Interval | None:
        """The forward interval (lo, hi), each (B, *shape), of node i (its inputs done, in topological order), or
        None when it does not depend on the perturbed input. ``relaxation``: the node's relaxation of its inputs'
        intervals ``bounds`` (non-affine ops)."""
        n = self.graph.nodes[i]
        out = None
        if any(j in self.live for j in n.inputs):
            L, U = n.op.forward_linear([self._rows(j, bounds) for j in n.inputs], [bounds[j] for j in n.inputs],
                                       relaxation)
            self.live[i] = (L, U)
            out = (concretize(L)[0], concretize(U)[1])
        for j in n.inputs:
            self.left[j] -= 1
            if self.left[j] == 0:
                self.live.pop(j, None)
        return out


def box_margins(bm, pert: Box, C: torch.Tensor) -> tuple[torch.Tensor, list[Interval], torch.Tensor]:
    """Lower bounds (B, S) of C y (C (B, S, *output_shape)) over the boxes ``pert``: the better of the forward
    output bound and one CROWN backward pass on the forward intervals; also the intervals and the input coefficients
    A_in (B, S, *input_shape) of the backward pass (for branching and for the bound minimisers)."""
    relax: dict = {}
    bounds, (L, U) = forward_bounds(bm, pert, relax)
    Cf = C.reshape(C.shape[:2] + (-1,))
    Lf, Uf = L.flatten(2), U.flatten(2)
    fwd = torch.einsum("bsk,bmk->bsm", Cf.clamp(min=0), Lf) + torch.einsum("bsk,bmk->bsm", Cf.clamp(max=0), Uf)
    lb_fwd = fwd[..., 0] - fwd[..., 1:].abs().sum(-1)
    A_in, bias = bm.propagate(bm.graph.output, C, bounds, relax)
    return torch.maximum(bias + pert.lower(A_in), lb_fwd), bounds, A_in


__all__ = ["ForwardRows", "box_margins", "concretize", "forward_bounds", "forward_supported", "free_coordinates",
           "input_rows"]
