"""Properties with many disjuncts over many input boxes: attacks and bounds batched over the disjuncts.

Problem: a VNN-LIB property whose disjuncts each come with their own input box (VNN-COMP's nn4sys: thousands of
one-row disjuncts, one per box of a learned index or a cardinality estimator) is answered ``sat`` when any disjunct
has a point of its box in its unsafe region, ``unsat`` when every one is refuted. One attack and one bound per
disjunct costs thousands of small passes; here every disjunct with the same number of rows is attacked and bounded
in one batched pass (the boxes stacked as the batch), before the per-disjunct pipeline of strategy.py takes what is
left.
Return: :func:`batched_falsify` a validated ``sat`` result or None; :func:`batched_refute` the disjuncts still open.
Property: a disjunct is dropped only when a sound lower bound (IBP or CROWN over its own box, the same bound as
when it is alone) of one of its rows exceeds its d; a counterexample is returned only after exact replay in
onnxruntime (input_split.candidate_checker). Both keep the deadline between chunks.
Reference: the bounds are IBP (Gowal et al. 2018) and CROWN (Zhang et al. NeurIPS 2018); the attack is PGD
(Madry et al. ICLR 2018) on the box of each disjunct.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from certkit.verifiers.attack import pgd_box
from certkit.verifiers.bounds.forward import box_margins, forward_supported
from certkit.verifiers.bounds.perturbation import Box
from certkit.verifiers.complete.input_split import candidate_checker, split_boxes, split_scores

#: properties whose disjuncts have more distinct input boxes than this are attacked and bounded in batches first
MANY_BOXES = 16
#: neuron-rows bounded per batch (the activation-split BaB's budget per backward pass)
BATCH_NEURON_ROWS = 2 ** 22
#: exact replays of points that miss their disjunct's unsafe region in float32 by at most 1e-4 (float32 rounding of the
#: network could hide a counterexample there), per batched search: the near-tight sub-boxes of nn4sys mscn produced
#: 684 such replays, 3.5 s, none a counterexample
BORDERLINE_REPLAYS = 32


def neuron_count(bm) -> int:
    """Values per sample over every node of ``bm``'s graph (input included): the unit of the batch budgets."""
    return sum(torch.Size(n.shape).numel() for n in bm.graph.nodes)


def _groups(terms: list, neurons: int) -> list:
    """Chunks of the disjuncts with equal numbers of rows, each small enough for one batched pass."""
    by_rows: dict = {}
    for t in terms:
        by_rows.setdefault(t.C.shape[0], []).append(t)
    out = []
    for rows, group in by_rows.items():
        size = int(max(1, min(4096, BATCH_NEURON_ROWS // max(1, neurons * max(rows, 1)))))
        out += [group[i:i + size] for i in range(0, len(group), size)]
    return out


def _stack(terms: list, dtype):
    lo = torch.tensor(np.stack([t.x_L for t in terms]), dtype=dtype)
    hi = torch.tensor(np.stack([t.x_U for t in terms]), dtype=dtype)
    C = torch.tensor(np.stack([t.C for t in terms]), dtype=dtype)
    d = torch.tensor(np.stack([t.d for t in terms]), dtype=dtype)
    return lo, hi, C, d


def batched_falsify(net32: torch.nn.Module, onnx_model, terms: list, neurons: int, dl, steps: int = 20,
                    until: float | None = None):
    """PGD from the center of every disjunct's box at once (``steps`` steps), each point on its own disjunct's
    objective max_r (C_r y - d_r); the points that reach the unsafe region (in float32) are replayed exactly.
    Returns a ``sat`` InstanceResult or None. ``dl``: the strategy's Deadline; ``until``: a time.perf_counter()
    value where the attack stops even if ``dl`` leaves more (the strategy's share of the time for attacks)."""
    shape = tuple(onnx_model.sample_shape)
    for chunk in _groups([t for t in terms if t.C.shape[0] > 0], neurons):
        lo, hi, C, d = _stack(chunk, torch.float32)

        def obj(x, C=C, d=d):
            y = net32(x.reshape((x.shape[0],) + shape)).reshape(x.shape[0], -1)
            return (torch.einsum("nsk,nk->ns", C, y) - d).max(1).values
        end = time.perf_counter() + max(dl.left(), 0.0)
        x, val = pgd_box(obj, lo, hi, steps=steps, restarts=1, early_stop="any",
                         deadline=end if until is None else min(end, until))
        for k in torch.nonzero(val <= 1e-4).flatten().tolist()[:8]:
            found = candidate_checker(net32, onnx_model, chunk[k], "PGD")(x[k:k + 1].double())
            if found is not None:
                return found
        if dl.passed():
            raise TimeoutError("timed out while attacking the disjuncts in batches")
        if until is not None and time.perf_counter() > until:
            break
    return None


def batched_refute(bm, terms: list, method: str, dl) -> list:
    """The disjuncts of ``terms`` that ``method`` (IBP or CROWN, float64 BoundedModule ``bm``) does not refute over
    their own boxes, each chunk of disjuncts bounded in one pass. Raises TimeoutError when ``dl`` passes."""
    shape = tuple(bm.graph.input_shape)
    neurons = neuron_count(bm)
    still = [t for t in terms if t.C.shape[0] == 0]
    for chunk in _groups([t for t in terms if t.C.shape[0] > 0], neurons):
        lo, hi, C, d = _stack(chunk, torch.float64)
        N = len(chunk)
        pert = Box(lo.reshape((N,) + shape), hi.reshape((N,) + shape))
        with torch.no_grad():
            lb, _ = bm.compute_bounds(pert, C, method, bound_upper=False)
        ok = ((lb.reshape(N, -1) - d) > 0).any(1) & torch.isfinite(lb.reshape(N, -1)).all(1)
        still += [t for t, r in zip(chunk, ok.tolist()) if not r]
        if dl.passed():
            raise TimeoutError(f"timed out while bounding the disjuncts in batches with {method}")
    return still


def forward_split_applies(bm, terms: list, max_free: int) -> bool:
    """True when :func:`batched_split_refute` can take ``terms``: every op of ``bm`` has a forward-mode rule and no
    disjunct's box has more than ``max_free`` free (wider than zero) input coordinates, and every disjunct has rows."""
    return forward_supported(bm) and all(t.C.shape[0] > 0 and int((t.x_U > t.x_L).sum()) <= max_free for t in terms)


def batched_split_refute(bm, net32, onnx_model, terms: list, dl, batch: int = 512, max_domains: int | None = None,
                         width_floor: float = 0.03):
    """Input-split branch and bound over the boxes of many disjuncts at once (each sub-box keeps its disjunct's
    rows), bounded by forward-mode intermediate bounds and one CROWN pass (verifiers/bounds/forward.py box_margins:
    the disjuncts of nn4sys free one to three of hundreds of inputs, where CROWN's per-neuron passes cost ~25x more).

    Each round bounds up to ``batch`` sub-boxes (children first, depth first); a sub-box is closed when a row of its
    disjunct has lb > d; the centers of the open ones and the vertices minimising their rows' linear bounds are
    screened in float32 and replayed exactly (input_split.candidate_checker); an open sub-box is bisected along the
    coordinate of input_split.split_scores. Returns (status, sub-boxes bounded): "unsat" when every disjunct is
    refuted, a validated ``sat`` InstanceResult, "timeout" when the next round would pass ``dl``, or "unknown"
    after ``max_domains``; "timeout" too when ``bm.deadline`` passes inside a round (with the sub-boxes bounded so
    far)."""
    shape = tuple(bm.graph.input_shape)
    domains = 0
    last = 0.0
    replays = [BORDERLINE_REPLAYS]
    groups: dict = {}
    for t in terms:
        groups.setdefault(t.C.shape[0], []).append(t)
    try:
        for group in groups.values():
            lo, hi, C, d = _stack(group, torch.float64)
            queue = _Queue((lo, hi, C, d, torch.arange(len(group)), (hi - lo).clamp(min=1e-12)))
            while queue.chunks:
                if dl.left() <= last:
                    return "timeout", domains
                if max_domains is not None and domains >= max_domains:
                    return "unknown", domains
                t_round = time.perf_counter()
                L, U, CC, dd, own, W = queue.pop(batch)
                N = L.shape[0]
                domains += N
                with torch.no_grad():
                    lb, _, A = box_margins(bm, Box(L.reshape((N,) + shape), U.reshape((N,) + shape)), CC)
                keep = ((lb - dd) <= 0).all(1)
                L, U, CC, dd, own, W, A, lb = (v[keep] for v in (L, U, CC, dd, own, W, A, lb))
                if L.shape[0]:
                    A = A.reshape(A.shape[:2] + (-1,))
                    row = (lb - dd).argmax(1)                     # the row closest to refutation
                    A_row = A[torch.arange(A.shape[0]), row]
                    for cand in ((L + U) / 2, torch.where(A_row >= 0, L, U)):
                        found = _screen(net32, onnx_model, group, cand, own, CC, dd, replays)
                        if found is not None:
                            return found, domains
                    children_lo, children_hi = split_boxes(L, U, split_scores(L, U, A, W, width_floor).argmax(1))
                    queue.push((children_lo, children_hi, torch.cat([CC, CC]), torch.cat([dd, dd]),
                                torch.cat([own, own]), torch.cat([W, W])))
                last = time.perf_counter() - t_round
    except TimeoutError:                                # bm.deadline passed inside a round
        return "timeout", domains
    return "unsat", domains


class _Queue:
    """The open sub-boxes of :func:`batched_split_refute` as a stack of chunks, each a tuple of row-aligned tensors:
    :meth:`push` puts a chunk in front, :meth:`pop` takes the first rows, so that the rest of the queue is never
    copied (a whole-queue concatenation per round copied up to 100 MB of boxes on nn4sys's 11,080-box properties)."""

    def __init__(self, first: tuple):
        self.chunks: list = []
        self.push(first)

    def push(self, chunk: tuple) -> None:
        if chunk[0].shape[0]:
            self.chunks.append(chunk)

    def pop(self, n: int) -> tuple:
        """The first ``n`` rows (fewer if the queue holds fewer), removed from the queue."""
        parts = []
        while n > 0 and self.chunks:
            top = self.chunks[-1]
            if top[0].shape[0] <= n:
                parts.append(self.chunks.pop())
                n -= top[0].shape[0]
            else:
                parts.append(tuple(v[:n] for v in top))
                self.chunks[-1] = tuple(v[n:] for v in top)
                n = 0
        return parts[0] if len(parts) == 1 else tuple(torch.cat(vs) for vs in zip(*parts))


def _screen(net32, onnx_model, group: list, x: torch.Tensor, own: torch.Tensor, C: torch.Tensor, d: torch.Tensor,
            replays: list):
    """Points x (N, n) float64 for the disjuncts group[own]: those with max_r (C_r y - d_r) <= 1e-4 in float32 (the 8
    lowest) replayed exactly, those above 0 only while ``replays[0]`` (decremented) lasts; a validated ``sat``
    InstanceResult or None."""
    shape = tuple(onnx_model.sample_shape)
    with torch.no_grad():
        y = net32(x.float().reshape((x.shape[0],) + shape)).reshape(x.shape[0], -1)
    val = (torch.einsum("nsk,nk->ns", C.float(), y) - d.float()).max(1).values
    for k in torch.argsort(val)[:8].tolist():
        if float(val[k]) > 1e-4 or (float(val[k]) > 0 and replays[0] <= 0):
            break
        replays[0] -= float(val[k]) > 0
        found = candidate_checker(net32, onnx_model, group[int(own[k])], "input-split BaB")(x[k:k + 1])
        if found is not None:
            return found
    return None


__all__ = ["MANY_BOXES", "batched_falsify", "batched_refute", "batched_split_refute", "forward_split_applies",
           "neuron_count"]
