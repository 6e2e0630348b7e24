"""Whether alpha-CROWN on the boxes near refutation pays in input-split branch and bound, measured on the search.

alpha-CROWN (10 iterations) on a box costs r times a CROWN box. When it closes a box that CROWN left open, it saves
the box's subtree: the S boxes that CROWN and input splitting would bound before that part of the input is closed.
On the boxes given to it it closes a fraction p, so it pays when p * S >= r. All three numbers depend on the network
and the property: on ACAS Xu 1_1 prop 5 it closes 40% of the boxes it is given and the subtrees it saves are deep
(87.7k boxes without it, 3.0k with it); on lsnc quadrotor2d_state_1 it closes about half of them, but CROWN closes
those parts after a split or two, and the search takes 634k boxes in 18 s without it and does not end in 30 s with
it (r 13-40 there, p 0.4-1.0, S 2-14). No fixed fraction separates the two, so the gate measures S: in a probe,
some of the boxes that alpha-CROWN closed are withheld (left open, as if it had not run), their descendants carry
the withheld box's id, and each is counted when bounded. A probe ends when p * S_seen >= r (the count so far is a
lower bound on S: alpha-CROWN pays) or every withheld subtree has been closed (S is known: it pays or not). Where
p >= r already (alpha-CROWN cheaper than a CROWN box on large networks: S >= 1 suffices), nothing is withheld. The
decision holds for ``every`` rounds, after which the next probe starts (while it is off, a probe gives alpha-CROWN
only a few boxes a round, until it has closures to withhold). The search starts off, with such a probe: the first
probe can stay undecided for most of a search (on lsnc quadrotor2d_state_11 a withheld subtree of 160 boxes, of
subtrees of 4-53 otherwise, kept it open for 30 rounds), and alpha-CROWN on every near box meanwhile (10x a CROWN
box each) took 20 of the 30 s: `unsat` in 16 s once it starts off, instead of a timeout.
"""
from __future__ import annotations

import torch


class AlphaGate:
    """The on/off decision for alpha-CROWN in one input-split search (see the module docstring).

    Args:
        every: rounds between the end of one probe and the start of the next.
        withhold: closures withheld per probe (the subtrees measured); at most every other closure of a round is
            withheld, so a probe also keeps half of what alpha-CROWN closes.
        probe_boxes: a probe in which alpha-CROWN closed too few boxes to withhold ``withhold`` of them ends (off)
            once it has been given this many boxes and the withheld subtrees are closed.
    """

    def __init__(self, every: int = 32, withhold: int = 8, probe_boxes: int = 512):
        self.every, self.withhold, self.probe_boxes = every, withhold, probe_boxes
        self.on = False
        self.probing = True
        self.rounds_since = 0
        self.alpha_cost = self.crown_cost = torch.inf       # seconds per box, the cheapest call so far
        self.next_id = 0                                    # ids of withheld boxes grow over the whole search
        self._reset()

    def _reset(self):
        self.tried = self.closed = 0
        self.first_id = self.next_id                        # this probe's ids start here
        self.counts: list[int] = []

    def wanted(self) -> bool:
        """Run alpha-CROWN on this round's near boxes: it is on, or a probe still collects closures to withhold."""
        return self.on or (self.probing and len(self.counts) < self.withhold and self.tried < self.probe_boxes)

    def limit(self) -> int | None:
        """How many near boxes alpha-CROWN may take this round: all when it is on; while it is off, a probe takes a
        few (``4 * withhold``), enough to withhold from."""
        return None if self.on else 4 * self.withhold

    def record_crown(self, boxes: int, seconds: float) -> None:
        """The round's CROWN pass: ``boxes`` bounded in ``seconds`` (the unit of the cost ratio r). Until the first
        call the cost of a CROWN box is unknown (infinite: any closure of alpha-CROWN then pays)."""
        self.crown_cost = min(self.crown_cost, seconds / boxes)

    def measured(self, tags: torch.Tensor) -> torch.Tensor:
        """(N,) bool: the boxes of this probe's withheld subtrees (alpha-CROWN is not run on them)."""
        return tags >= self.first_id if self.probing else torch.zeros(tags.shape, dtype=torch.bool)

    def count_bounded(self, tags: torch.Tensor) -> None:
        """tags (N,) int64 of the boxes bounded this round: each tagged box (>= 0) adds one to its subtree."""
        if not self.probing:
            return
        t = tags[tags >= self.first_id] - self.first_id
        if t.numel():
            for i, c in zip(*torch.unique(t, return_counts=True)):
                self.counts[int(i)] += int(c)

    def record_alpha(self, closed: torch.Tensor, seconds: float) -> torch.Tensor:
        """alpha-CROWN ran on len(closed) boxes in ``seconds`` and closed those where ``closed`` (bool). Returns the
        ids (len(closed),) int64 for the closures to withhold (-1 for the others; those with an id stay open).
        The cost per box is that of the cheapest call (a few boxes cost nearly as much as many: the iterations'
        fixed cost, which large batches share)."""
        ids = torch.full(closed.shape, -1, dtype=torch.long)
        self.alpha_cost = min(self.alpha_cost, seconds / closed.numel())
        if not self.probing:
            return ids
        self.tried += closed.numel()
        self.closed += int(closed.sum())
        if self.closed and self.closed >= self.tried * self.alpha_cost / max(self.crown_cost, 1e-12):
            # p >= r: every closure saves at least one CROWN box (the withheld box's children, or the box bounded
            # again), so alpha-CROWN pays whatever S is; withholding would only spend CROWN boxes to measure it (a
            # 64 x 64 cGAN: a CROWN box costs 7-16 s, alpha-CROWN on it 0.2 s and closes the root)
            self.on, self.probing, self.rounds_since = True, False, 0
            return ids
        room = self.withhold - len(self.counts)
        if room > 0:
            pick = closed.nonzero().flatten()[::2][:room]
            ids[pick] = torch.arange(self.next_id, self.next_id + len(pick))
            self.next_id += len(pick)
            self.counts += [0] * len(pick)
        return ids

    def end_round(self, queue_tags: torch.Tensor) -> None:
        """After a round, with the tags (M,) of every queued box: end the probe when it can decide, and start the
        next one ``every`` rounds after the last decision."""
        if not self.probing:
            self.rounds_since += 1
            if self.rounds_since >= self.every:
                self.probing = True
                self._reset()
            return
        if self.tried == 0:
            return
        r = self.alpha_cost / max(self.crown_cost, 1e-12)
        p = self.closed / self.tried
        seen = sum(self.counts) / len(self.counts) if self.counts else 0.0
        if self.counts and p * seen >= r:
            self.on = True
        elif (len(self.counts) >= self.withhold or self.tried >= self.probe_boxes) and not bool(
                (queue_tags >= self.first_id).any()):
            self.on = False
        else:
            return
        self.probing = False
        self.rounds_since = 0
