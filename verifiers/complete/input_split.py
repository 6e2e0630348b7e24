"""Input-split branch and bound for low-dimensional inputs (as in VNN-COMP ACAS Xu solvers): bound a batch of
sub-boxes with CROWN (alpha-CROWN where it nearly closes a box) for every disjunct over the box at once, falsify at
their centers and at the minimisers of their linear bounds, split each open box along the input dimension of
:func:`split_gains` (:func:`split_scores` where no dimension gains), until every leaf is refuted (``unsat``), a
counterexample is validated (``sat``), the time runs out (``timeout``) or the domain budget is spent (``unknown``).
"""
from __future__ import annotations

import time

import numpy as np
import torch

from certkit.common import threads
from certkit.common.errors import CertkitError
from certkit.verifiers.bounds.alpha_crown import alpha_crown
from certkit.verifiers.bounds.ibp_crown import BoundedModule
from certkit.verifiers.bounds.perturbation import Box
from certkit.verifiers.complete.alpha_gate import AlphaGate
from certkit.verifiers.complete.vnncomp_format import InstanceResult, validate_witness
from certkit.verifiers.complete.vnnlib import Term


def term_value(y: torch.Tensor, C: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Outputs y (N, K) -> max_j (C_j y - d_j) (N,): <= 0 inside the disjunct's unsafe region C y <= d; -1 for a
    disjunct without rows (every output is in it)."""
    return (y @ C.T - d).max(1).values if C.shape[0] else torch.full((y.shape[0],), -1.0, dtype=y.dtype)


def objective(net: torch.nn.Module, C: torch.Tensor, d: torch.Tensor, sample_shape):
    """x (N, n_in) -> max_j (C_j y - d_j): < 0 inside the unsafe region (minimized by PGD)."""
    def obj(x):
        return term_value(net(x.reshape((x.shape[0],) + tuple(sample_shape))).reshape(x.shape[0], -1), C, d)
    return obj


def candidate_checker(net32, onnx_model, term: Term, method: str, tries: int = 8, deadline: float | None = None):
    """x (N, *input) float64 -> a validated ``sat`` InstanceResult (labelled ``method``) or None: the ``tries``
    points with the lowest float32 objective max_r (C_r y - d_r) <= 1e-4 are replayed exactly
    (verifiers/complete/vnncomp_format.py validate_witness); none after the time.perf_counter() value ``deadline``
    (an onnxruntime replay of a large network takes milliseconds, and properties with hundreds of disjuncts can
    have a few to replay for each)."""
    obj = objective(net32, torch.tensor(term.C, dtype=torch.float32), torch.tensor(term.d, dtype=torch.float32),
                    onnx_model.sample_shape)

    def check(x: torch.Tensor):
        if x.shape[0] == 0:
            return None
        with torch.no_grad():
            val = obj(x.reshape(x.shape[0], -1).float())
        for k in torch.argsort(val)[:tries].tolist():
            if float(val[k]) > 1e-4 or (deadline is not None and time.perf_counter() > deadline):
                break
            found = validate_witness(onnx_model, term, x[k].reshape(-1).numpy())
            if found:
                return InstanceResult("sat", 0.0, x=found[0], y=found[1], method=method)
        return None
    return check


def refuted(bm: BoundedModule, term: Term, lo: torch.Tensor, hi: torch.Tensor, method: str,
             time_budget: float | None = None) -> torch.Tensor:
    """(N,) bool: the unsafe conjunction C y <= d is infeasible on each box (some row has lb > 0)."""
    N = lo.shape[0]
    if term.C.shape[0] == 0:
        return torch.zeros(N, dtype=torch.bool)
    shape = bm.graph.input_shape
    C = torch.tensor(term.C, dtype=torch.float64)[None].expand(N, -1, -1)
    pert = Box(lo.reshape((N,) + shape), hi.reshape((N,) + shape))
    with torch.enable_grad() if method == "alpha-CROWN" else torch.no_grad():
        lb, _ = bm.compute_bounds(pert, C, method, bound_upper=False, time_budget=time_budget)
    return ((lb.detach() - torch.tensor(term.d)) > 0).any(1)


def split_boxes(lo: torch.Tensor, hi: torch.Tensor, dim: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both halves of each box (N, n) split at the middle of dimension dim (N,): (lo, hi) of the 2N children."""
    mid = ((lo + hi) / 2).gather(1, dim[:, None])
    left_hi, right_lo = hi.clone(), lo.clone()
    left_hi.scatter_(1, dim[:, None], mid)
    right_lo.scatter_(1, dim[:, None], mid)
    return torch.cat([lo, right_lo]), torch.cat([left_hi, hi])


def crown_boxes(bm: BoundedModule, C: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bounds: list | None = None,
                init: list | None = None):
    """CROWN on N boxes (N, n) for the rows C (S, K): lower bounds (N, S) of C y, the input coefficients A_in
    (N, S, n) of the linear bounds (lb = min over the box of A_in x + bias), and the perturbation and intermediate
    bounds used (for alpha-CROWN on the same boxes). ``bounds``: the boxes' intermediate bounds when already known
    (CROWN's of the root box, computed before the search); ``init``: intervals that hold on the boxes (their parents'
    bounds), which CROWN's intermediate bounds start from (``BoundedModule.crown_intermediate``)."""
    N = lo.shape[0]
    shape = tuple(bm.graph.input_shape)
    pert = Box(lo.reshape((N,) + shape), hi.reshape((N,) + shape))
    CC = C.to(lo.dtype)[None].expand(N, -1, -1).reshape((N, -1) + tuple(bm.graph.output_shape))
    with torch.no_grad():
        if bounds is None:
            bounds = bm.crown_intermediate(pert, init)
        A_in, bias = bm.propagate(bm.graph.output, CC, bounds, {})
        lb = bias + pert.lower(A_in)
    if not bool(torch.isfinite(lb).all()):
        raise CertkitError("CROWN produced NaN or inf bounds on a sub-box")
    return lb, A_in.reshape(N, CC.shape[1], -1), pert, bounds


def per_term_max(values: torch.Tensor, owner: torch.Tensor, T: int) -> torch.Tensor:
    """(N, S) row values -> (N, T): the max over the rows of each term (owner (S,) gives each row's term)."""
    out = torch.full((values.shape[0], T), -torch.inf, dtype=values.dtype)
    return out.scatter_reduce_(1, owner[None].expand_as(values), values, "amax")


def clip_boxes(lo: torch.Tensor, hi: torch.Tensor, A: torch.Tensor, bias: torch.Tensor, d: torch.Tensor,
               owner: torch.Tensor, open_: torch.Tensor, rounds: int = 2, rtol: float = 1e-9):
    """Shrink N boxes to the parts where an open disjunct can still be violated, by its rows' linear lower bounds.

    Problem: on box k (lo, hi (N, n)) CROWN gives, for every row r of every disjunct, A[k, r] . x + bias[k, r] <=
    C_r y(x) (A (N, S, n), bias (N, S)). A counterexample for disjunct t satisfies all its rows, C_r y <= d_r, so it
    lies in {x in the box : A[k, r] . x + bias[k, r] <= d_r for the rows r of t}. Each of those half-spaces bounds
    every coordinate on the box: with the slack s = d_r - min over the box of (A x + bias), x_i <= lo_i + s / A_ri
    where A_ri > 0 and x_i >= hi_i + s / A_ri where A_ri < 0 (feasibility-based bound tightening, as in global
    optimization and MILP presolve, applied to CROWN's linear bounds). ``rounds`` passes intersect the half-spaces of
    each disjunct's rows on its own box (a box clipped by one row tightens the next row's slack), which refutes
    conjunctions that no single row refutes (a level-set precondition together with a safety row).

    Returns (lo, hi, open_): the hull over the still-open disjuncts of their clipped boxes (N, n) (a box with no open
    disjunct keeps its bounds) and open_ (N, T) with the disjuncts whose clipped box is empty removed. The slack is
    widened by ``rtol`` times the magnitudes involved, so float64 rounding cannot clip away a counterexample that
    the linear bounds admit.
    """
    N, S, n = A.shape
    T = open_.shape[1]
    t_lo, t_hi = lo[:, None].expand(N, T, n).clone(), hi[:, None].expand(N, T, n).clone()
    pos, neg = A > 0, A < 0
    safe = torch.where(A == 0, torch.ones_like(A), A)                                # (divisions where A != 0 only)
    index = owner[None, :, None].expand(N, S, n)
    for _ in range(rounds):
        r_lo, r_hi = t_lo[:, owner], t_hi[:, owner]                                   # (N, S, n) each row's box
        low = bias + torch.where(pos, A * r_lo, A * r_hi).sum(-1)                    # min of the row's bound
        scale = d.abs() + bias.abs() + (A.abs() * torch.maximum(r_lo.abs(), r_hi.abs())).sum(-1)
        slack = (d - low + rtol * scale)[..., None]                                  # (N, S, 1)
        upper = torch.where(pos, r_lo + slack / safe, torch.inf)
        lower = torch.where(neg, r_hi + slack / safe, -torch.inf)
        t_hi = t_hi.scatter_reduce(1, index, upper, "amin")
        t_lo = t_lo.scatter_reduce(1, index, lower, "amax")
        dead = per_term_max(-slack[..., 0], owner, T) > 0                            # a row with no room at all
        open_ = open_ & ~dead & ~(t_lo > t_hi).any(-1)
    keep = open_[..., None]
    new_lo = torch.where(keep, t_lo, torch.inf).amin(1)
    new_hi = torch.where(keep, t_hi, -torch.inf).amax(1)
    alive = open_.any(1, keepdim=True)
    return torch.where(alive, new_lo, lo), torch.where(alive, new_hi, hi), open_


#: the children of a box start their CROWN bounds from the box's (``crown_boxes`` ``init``) on networks of at least
#: this many values per sample, while the queued boxes' intervals fit in INHERIT_BYTES (below that size a box's CROWN
#: bounds cost less than carrying its parent's through the queue: lsnc quadrotor2d_state 1 and 4, the same boxes in
#: 1.2-1.3x the time with them)
INHERIT_MIN_VALUES = 2 ** 14
INHERIT_BYTES = 2 ** 28


def _push(held: list | None, bounds: list, mask: torch.Tensor, reps: int = 1) -> list | None:
    """The intervals of the boxes where ``mask`` (repeated ``reps`` times, as their children are) put in front of
    ``held`` (per node (l, u) of the queued boxes), or None (not kept) once they would exceed INHERIT_BYTES."""
    if held is None:
        return None
    new = [(l[mask].repeat((reps,) + (1,) * (l.dim() - 1)), u[mask].repeat((reps,) + (1,) * (u.dim() - 1)))
           for l, u in bounds]
    if held:
        new = [(torch.cat([nl, hl]), torch.cat([nu, hu])) for (nl, nu), (hl, hu) in zip(new, held)]
    size = sum(l.numel() + u.numel() for l, u in new) * new[0][0].element_size()
    return new if size <= INHERIT_BYTES else None


#: input splitting chooses its splits by :func:`split_gains` on networks of fewer values per sample than this
#: (lsnc's 157-384, ACAS Xu's 620, linearizenn's 2,119): a round's differentiated pass keeps the graph of every
#: intermediate bound of up to 2,048 boxes in memory, and on large networks one box's pass costs seconds (VNN-COMP
#: cgan_2023, 160-410k values, 4 free inputs: its 32 x 32 `unsat` instances in 2.1-2.3x the time, two 64 x 64 ones
#: past 30 s where the sensitivity score answers in 13-16 s)
GRADIENT_SPLIT_MAX_VALUES = 2 ** 12

#: :func:`split_gains` differentiates as many boxes at once as fit, by its estimate of the graph they keep, in this
#: many times the network's CROWN memory budget (``BoundedModule.budget`` floats: 256 MB in float64); ACAS Xu's
#: search peaked at 5.3 GB of memory with whole rounds of 1,024 boxes at once
GAINS_MEMORY = 4

#: a box that :func:`clip_boxes` cut to at most this share of its volume is bounded again before it is split
REBOUND_RATIO = 0.5


def volume_ratio(width: torch.Tensor, width0: torch.Tensor) -> torch.Tensor:
    """(N,) prod_i width_i / width0_i of N boxes (N, n) against their boxes before (N, n); degenerate dimensions
    (width0_i = 0) count as 1."""
    return torch.where(width0 > 0, width / width0.clamp(min=torch.finfo(width0.dtype).tiny), 1.0).prod(1)


def split_rows(owner: torch.Tensor, focus: torch.Tensor, row_center: torch.Tensor) -> torch.Tensor:
    """(N, S) bool: the rows whose input coefficients choose the split of each of N boxes. ``owner`` (S,) gives each
    row's disjunct, ``focus`` (N,) the disjunct each box is split for, ``row_center`` (N, S) C_r y - d_r at the box
    centers. Of the focus disjunct's rows, those the center lies outside of (C_r y > d_r: the rows whose bounds can
    refute the box), else all of them. A row the center satisfies cannot refute the box however tight its bound,
    and its sensitivity would steer the split away from the row that can: on lsnc's state network the level-set row
    V(x) <= rho (large coefficients) against the decrease row (small ones), quadrotor2d_state_1 unsat after 270k
    boxes in 9-11 s instead of 504k in 16 s; the 2021 ACAS Xu 1_9 prop 7, sat, after 16k boxes instead of 35k."""
    rows = owner[None] == focus[:, None]
    can = rows & (row_center > 0)
    return torch.where(can.any(1, keepdim=True), can, rows)


def split_scores(lo, hi, A_rows, width0, width_floor: float) -> torch.Tensor:
    """(N, n) scores of the input dimensions of N open boxes (lo, hi (N, n)); each is split along its largest.

    score_i = (w_i / w0_i) * (w0_i s_i + width_floor * max_j w0_j s_j), with w the box widths, w0 the root box's
    (1, n) and s_i = sum over r of |A_rows[:, r, i]| (CROWN's input coefficients (N, S, n) of the rows that matter,
    zero elsewhere): the relative width of dimension i times its sensitivity at root scale, floored at
    ``width_floor`` times the largest. Pure sensitivity
    (alpha-beta-CROWN's "sb" for inputs, summed over rows) leaves dimensions that the output bound hardly depends on
    wide, while they keep many ReLUs unstable; pure width ignores the network. Measured on the ACAS Xu sample
    (bench/README.md): 1_1 prop 6 disjunct 0, >86k boxes with sensitivity only, 2.3k with the floor 0.03."""
    s = A_rows.abs().sum(1) * width0
    return (hi - lo) / width0 * (s + width_floor * s.max(1, keepdim=True).values)


def split_gains(bm: BoundedModule, lo: torch.Tensor, hi: torch.Tensor, C: torch.Tensor,
                d: torch.Tensor) -> torch.Tensor:
    """(N, n) first-order estimates of how much bisecting each input dimension raises the margins of the two halves
    of N boxes (lo, hi (N, n)), from the gradient of CROWN's bound with respect to the box.

    The margin of box k is m_k = max_r (lb_kr - d_kr) over its rows C (N, R, K) with thresholds d (N, R), lb_kr the
    CROWN lower bound of C_kr y over the box (the box is refuted for those rows when m_k > 0). Bisecting dimension i
    gives the children [mid, hi] (lo_i raised by w_i / 2) and [lo, mid] (hi_i lowered by w_i / 2), so
    gain_i = (dm/dlo_i - dm/dhi_i) * w_i / 2 estimates the sum of the children's gains: the linear bound's
    slope over the box (the only gain that a score from CROWN's input coefficients sees, and it goes to one child)
    plus the tighter relaxations of both children (narrower intermediate bounds: products, sines, unstable ReLUs),
    which is what closes the child that the slope does not help. The branching rule of looking ahead at the
    children's bounds (as in alpha-beta-CROWN's brute-force input split), at the cost of one differentiated CROWN
    pass. Measured on VNN-COMP 2024 lsnc quadrotor2d_state (bench/README.md): 2.5-4x fewer boxes than
    :func:`split_scores`, the same counts as bounding all 2n children and summing their margins. The boxes are
    differentiated in chunks whose graphs fit in ``GAINS_MEMORY`` times ``bm.budget`` floats (by an estimate).

    Raises:
        TimeoutError: ``bm.deadline`` passed during a forward pass (the backward pass is not interrupted).
    """
    g = bm.graph
    # the graph of a box's pass holds about two rows per input of a non-affine node, each as wide as the network
    rows = sum(torch.Size(g.nodes[j].shape).numel() for a in g.nonlinear() for j in g.nodes[a].inputs)
    chunk = max(1, GAINS_MEMORY * bm.budget // max(1, 2 * rows * sum(torch.Size(n.shape).numel() for n in g.nodes)))
    out = []
    for k in range(0, lo.shape[0], chunk):
        x_L = lo[k:k + chunk].detach().clone().requires_grad_(True)
        x_U = hi[k:k + chunk].detach().clone().requires_grad_(True)
        N = x_L.shape[0]
        pert = Box(x_L.reshape((N,) + tuple(g.input_shape)), x_U.reshape((N,) + tuple(g.input_shape)))
        with torch.enable_grad():
            bounds = bm.crown_intermediate(pert)
            CC = C[k:k + chunk].to(lo.dtype).reshape((N, C.shape[1]) + tuple(g.output_shape))
            A_in, bias = bm.propagate(g.output, CC, bounds, {})
            margin = (bias + pert.lower(A_in) - d[k:k + chunk]).amax(1)
            g_lo, g_hi = torch.autograd.grad(margin.sum(), [x_L, x_U])
        out.append((g_lo - g_hi) * (x_U - x_L).detach() / 2)
    return torch.cat(out)


def input_split_bab(bm, net32, onnx_model, terms, dl, max_domains, batch, split=split_boxes, vertices: bool = True,
                    alpha_fraction: float = 0.5, alpha_iterations: int = 10, width_floor: float = 0.03,
                    sound=None, clip: bool = True, attack=None, attack_share: float = 0.1, attack_cost: float = 0.0,
                    root_bounds: list | None = None, gradient_split: bool = True, gain_levels: int = 12):
    """Input-split BaB on the disjuncts ``terms`` (a list of Terms over ONE input box) until the Deadline ``dl``.
    Returns ("unsat"|"timeout"|"unknown"|InstanceResult(sat), boxes bounded). ``split(lo, hi, dim) -> (lo, hi)``
    makes the children of the boxes to split; a sound one must cover every box with its children (:func:`split_boxes`).
    ``vertices``: also try the bound minimisers as counterexamples (off only to model a verifier without them,
    soundness_bench/unsound_verifiers.py). ``sound(lo, hi) -> (N, S)``: outward-rounded margins of the rows of every
    disjunct (verifiers/bounds/sound.py ``row_margins``) that alone decide which boxes are refuted (the sound mode;
    pass ``alpha_iterations=0`` with it).

    Each round bounds up to ``batch`` boxes with CROWN in one batched pass for the rows of every disjunct at once
    (the intermediate bounds, most of the cost, are shared); a disjunct is refuted on a box when one of its rows has
    lb > d, and stays refuted on the box's children; a box is closed when every disjunct is refuted on it. Boxes
    where each open disjunct needs less than ``alpha_fraction`` of the gap between its CROWN bound and its value at
    the box center get alpha-CROWN (``alpha_iterations``, intermediate bounds kept; boxes bounded on ACAS Xu 1_1
    without -> with it: prop 5 87.7k -> 3.0k, prop 3 3.4k -> 2.3k, prop 6's first box 5.4k -> 4.9k) while the
    search's own measurements say it pays (verifiers/complete/alpha_gate.py: the subtrees its closures save against
    its cost in CROWN boxes; on lsnc quadrotor2d_state_1 they do not, and the search ends in 17 s instead of
    running past 30 s).
    Counterexample candidates: every box center and, per open disjunct, the vertex minimising the linear bound of its
    row closest to refutation (float32 screen, exact replay). An open box is bisected along the dimension of
    :func:`split_scores` (``width_floor``) for the rows (:func:`split_rows`) of the open disjunct its center comes
    closest to violating (on the ACAS Xu 1_9 prop 7 pair of disjuncts, sat, the counterexample came after 31k boxes
    instead of 127k with the rows of all open disjuncts); with ``gradient_split`` (the default) along the dimension
    of the largest :func:`split_gains` for those rows instead, where one is positive (on networks of fewer than
    ``GRADIENT_SPLIT_MAX_VALUES`` values per sample), one gains pass deciding
    ``gain_levels`` generations of splits (the children inherit the parent's gains with the split dimension's
    halved: fresh gains barely change the choices and cost 1.5-3x a CROWN box; lsnc quadrotor2d_state_1 in 3.3 s
    with 6 generations, 4.8 s with 1; lsnc state_3 and 18 and ACAS Xu 4_2 prop_2 4-10% faster with 12 than with 6,
    ACAS Xu's with 24 1.5x slower). With ``clip`` and a disjunct of two or more rows (a
    conjunction), each box is first shrunk by :func:`clip_boxes` to where an open disjunct's linear bounds admit a
    violation (the bounds of all its rows at once, which refutes what no single row refutes); a box cut to at most
    ``REBOUND_RATIO`` of its volume goes back to the queue unsplit (bounded again, it closes more often than not). A
    round is not started when the previous one took longer than the time left (the deadline is kept); a deadline of
    ``bm`` (``bm.deadline``) that passes inside a round ends the search as a timeout with the boxes bounded so far.
    ``attack(x) -> InstanceResult | None``: a search from the round's candidates x (N, n) (the bound minimisers of the
    open boxes), run when its expected cost (its last call's, ``attack_cost`` seconds before the first) fits within
    ``attack_share`` of the search's time so far (strategy.py: PGD with shrinking steps from the best of them).
    ``root_bounds``: CROWN's intermediate bounds of the whole box (batch of one), when the caller has them: the first
    round uses them instead of bounding the root box again (on a cGAN over 4 free inputs that pass takes 10 of the
    30 s).

    Raises:
        CertkitError: the terms do not share one input box; NaN or inf bounds.
    """
    terms = list(terms)
    if not terms or any(t.C.shape[0] == 0 for t in terms):
        return "unknown", 0   # no output constraint: every input is a counterexample, attacks decide it
    x_L, x_U = terms[0].x_L, terms[0].x_U
    if any(t.box_key() != terms[0].box_key() for t in terms):
        raise CertkitError("input_split_bab: the disjuncts must share one input box")
    T = len(terms)
    C = torch.tensor(np.concatenate([t.C for t in terms]), dtype=torch.float64)
    # rows shared by disjuncts (lsnc: the level-set row in each of 13 disjuncts, 14 distinct rows of 26) are bounded
    # once: the final backward pass carries one row per distinct C_r
    C_rows, row_of = torch.unique(C, dim=0, return_inverse=True)
    d64 = torch.tensor(np.concatenate([t.d for t in terms]), dtype=torch.float64)
    owner = torch.cat([torch.full((t.C.shape[0],), k, dtype=torch.long) for k, t in enumerate(terms)])
    C32, d32 = C.float(), d64.float()
    # clipping pays for conjunctions (lsnc quadrotor2d_state: 3 of 9 instances unsat in 30 s instead of 2, boxes
    # needed 1.6-3x fewer); on single-row disjuncts it only moves the bisection points (ACAS Xu: within +-11%)
    clip = clip and any(t.C.shape[0] > 1 for t in terms)
    checks = [candidate_checker(net32, onnx_model, t, "input-split BaB") for t in terms]
    sample_shape = tuple(onnx_model.sample_shape)
    lo, hi = torch.tensor(x_L)[None], torch.tensor(x_U)[None]
    open_ = torch.ones((1, T), dtype=torch.bool)          # disjuncts not yet refuted on each queued box
    width0 = (hi - lo).clamp(min=1e-12)
    domains = 0
    last = 0.0                                          # seconds the previous round took
    gate = AlphaGate()                                  # whether alpha-CROWN on the near boxes pays
    tag = torch.full((1,), -1, dtype=torch.long)        # per queued box: the gate's withheld subtree, or -1
    # per queued box: the split gains its parent measured (its own split dimension's halved), NaN where none
    prior = torch.full((1, lo.shape[1]), torch.nan, dtype=torch.float64)
    left = torch.zeros(1, dtype=torch.long)             # per queued box: splits its prior may still decide
    # per node, the intervals (l, u) of the queued boxes' parents ([] before the first round; None: not kept)
    values = sum(torch.Size(n.shape).numel() for n in bm.graph.nodes)
    held: list | None = [] if values >= INHERIT_MIN_VALUES and sound is None else None
    gradient_split = gradient_split and values < GRADIENT_SPLIT_MAX_VALUES
    t_start, attack_spent = time.perf_counter(), 0.0
    one_sided, bm.one_sided = bm.one_sided, True       # each box's own bounds are all that matter here
    try:
        while lo.shape[0]:
            threads.tick()
            if dl.left() <= last:                           # another round would overrun the deadline
                return "timeout", domains
            t_round = time.perf_counter()
            if max_domains is not None and domains >= max_domains:
                return "unknown", domains
            lo_b, hi_b, open_b = lo[:batch], hi[:batch], open_[:batch]
            lo, hi, open_ = lo[batch:], hi[batch:], open_[batch:]
            tag_b, tag = tag[:batch].clone(), tag[batch:]
            prior_b, prior = prior[:batch], prior[batch:]
            left_b, left = left[:batch], left[batch:]
            init = None
            if held:
                init = [(l[:batch], u[:batch]) for l, u in held]
                assert init[0][0].shape[0] == lo_b.shape[0], "the parents' intervals follow the queue box by box"
                held = [(l[batch:], u[batch:]) for l, u in held]
            N = lo_b.shape[0]
            domains += N
            gate.count_bounded(tag_b)
            t_crown = time.perf_counter()
            first = root_bounds if domains == N and N == 1 else None   # the root box, bounded before the search
            lb, A, pert, bounds = crown_boxes(bm, C_rows, lo_b, hi_b, first, init)
            lb, A = lb[:, row_of], A[:, row_of]
            if first is None:       # (with the root's bounds given, the pass costs a fraction of a CROWN box)
                gate.record_crown(N, time.perf_counter() - t_crown)
            margin = lb - d64 if sound is None else sound(lo_b, hi_b)
            m = per_term_max(margin, owner, T)
            open_b = open_b & ~(m > 0)
            centers = (lo_b + hi_b) / 2
            with torch.no_grad():
                y = net32(centers.float().reshape((N,) + sample_shape)).reshape(N, -1)
            row_center = (y @ C32.T - d32).double()                                   # (N, S)
            at_center = per_term_max(row_center, owner, T)
            near = open_b.any(1) & (~open_b | (m > -alpha_fraction * (at_center - m))).all(1)
            near &= ~gate.measured(tag_b)
            if alpha_iterations > 0 and gate.wanted() and bool(near.any()):
                idx = near.nonzero().flatten()[:gate.limit()]
                CC = C_rows[None].expand(len(idx), -1, -1).reshape((len(idx), -1) + tuple(bm.graph.output_shape))
                t_alpha = time.perf_counter()
                with torch.enable_grad():
                    lb_a = alpha_crown(bm, Box(pert.x_L[idx], pert.x_U[idx]), CC, [(l[idx], u[idx]) for l, u in bounds],
                                       alpha_iterations, deadline=time.perf_counter() + max(dl.left(), 0.0)).detach()
                margin_a = torch.maximum(margin[idx], lb_a[:, row_of] - d64)
                open_a = open_b[idx] & ~(per_term_max(margin_a, owner, T) > 0)
                ids = gate.record_alpha(open_b[idx].any(1) & ~open_a.any(1), time.perf_counter() - t_alpha)
                used = ids < 0                                  # withheld closures stay open, their subtree measured
                margin[idx[used]], open_b[idx[used]] = margin_a[used], open_a[used]
                tag_b[idx] = torch.maximum(tag_b[idx], ids)
            shrunk = torch.zeros(N, dtype=torch.bool)
            if clip and sound is None and bool(open_b.any()):
                bias = lb - pert.lower(A.reshape(pert.x_L.shape[:1] + (A.shape[1],) + pert.x_L.shape[1:]))
                width = hi_b - lo_b
                lo_b, hi_b, open_b = clip_boxes(lo_b, hi_b, A, bias, d64[None], owner, open_b)
                shrunk = volume_ratio(hi_b - lo_b, width) <= REBOUND_RATIO
            minimisers = []
            for k in range(T):
                on = open_b[:, k]
                if not bool(on.any()):
                    continue
                cand = [centers[on]]
                if vertices:
                    row = margin[on].masked_fill(owner[None] != k, -torch.inf).argmax(1)
                    A_row = A[on][torch.arange(int(on.sum())), row]
                    cand.append(torch.where(A_row >= 0, lo_b[on], hi_b[on]))
                    minimisers.append(cand[-1])
                found = checks[k](torch.cat(cand))
                if found is not None:
                    return found, domains
            if (attack is not None and minimisers
                    and attack_spent + attack_cost <= attack_share * (time.perf_counter() - t_start)):
                t_attack = time.perf_counter()
                found = attack(torch.cat(minimisers))
                attack_cost = time.perf_counter() - t_attack
                attack_spent += attack_cost
                if found is not None:
                    return found, domains
            keep = open_b.any(1)
            # a box the clip has cut to at most half its volume (as much as a bisection would) is bounded again
            # as it is: its new bounds close it more often than not (lsnc quadrotor2d_state: 79-99%)
            again = keep & shrunk
            if bool(again.any()):
                lo, hi = torch.cat([lo_b[again], lo]), torch.cat([hi_b[again], hi])
                open_, tag = torch.cat([open_b[again], open_]), torch.cat([tag_b[again], tag])
                prior = torch.cat([torch.full_like(prior_b[again], torch.nan), prior])
                left = torch.cat([torch.zeros_like(left_b[again]), left])
                held = _push(held, bounds, again)
                keep &= ~shrunk
            if not bool(keep.any()):
                gate.end_round(tag)
                last = time.perf_counter() - t_round
                continue
            lo_b, hi_b, open_b = lo_b[keep], hi_b[keep], open_b[keep]
            # split for the open disjunct that the box center comes closest to violating
            focus = at_center[keep].masked_fill(~open_b, torch.inf).argmin(1)
            rows = split_rows(owner, focus, row_center[keep])
            scores = split_scores(lo_b, hi_b, A[keep] * rows.to(A.dtype)[..., None], width0, width_floor)
            fresh = left_b[keep] <= 0                   # boxes whose gains are measured (the others inherit them)
            gains = prior_b[keep].clone()
            if gradient_split and bool(fresh.any()):
                r = rows[fresh]                                             # the rows, padded by repeating one
                counts = r.sum(1, keepdim=True)
                pick = torch.argsort((~r).to(torch.int8), dim=1, stable=True)[:, :int(counts.max())]
                pick = torch.where(torch.arange(pick.shape[1])[None] < counts, pick, pick[:, :1])
                gains[fresh] = split_gains(bm, lo_b[fresh], hi_b[fresh], C[pick], d64[pick])
            scores = torch.where(gains.amax(1, keepdim=True) > 0, gains, scores)   # (NaN gains: none measured)
            dim = scores.argmax(1)
            children_lo, children_hi = split(lo_b, hi_b, dim)
            reps = children_lo.shape[0] // lo_b.shape[0]
            passed = gains.scatter(1, dim[:, None], gains.gather(1, dim[:, None]) / 2)   # (NaN without gains)
            prior = torch.cat([passed.repeat(reps, 1), prior])
            left = torch.cat([torch.where(fresh, gain_levels - 1, left_b[keep] - 1).repeat(reps), left])
            held = _push(held, bounds, keep, reps)
            lo, hi = torch.cat([children_lo, lo]), torch.cat([children_hi, hi])
            open_ = torch.cat([open_b.repeat(reps, 1), open_])
            tag = torch.cat([tag_b[keep].repeat(reps), tag])
            gate.end_round(tag)
            last = time.perf_counter() - t_round
    except TimeoutError:                                # bm.deadline passed inside a round
        return "timeout", domains
    finally:
        bm.one_sided = one_sided
    return "unsat", domains


# ------------------------------------------------------------------ benchmark folders
