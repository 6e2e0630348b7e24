"""The alpha-CROWN gate of input-split branch and bound (verifiers/complete/alpha_gate.py): it starts off and
probes, turns on when the subtrees its closures save outweigh its cost (p * S >= r), off when they do not (once every
withheld subtree is closed), never decides off on an unfinished subtree, probes again after ``every`` rounds, and
withholds at most every other closure."""
import torch

from certkit.verifiers.complete.alpha_gate import AlphaGate


def probe(gate, closed, alpha_s_per_box, crown_s_per_box=1e-3, crown_boxes=100):
    """One probe round: CROWN on crown_boxes boxes, alpha-CROWN on len(closed) boxes; returns the withheld ids."""
    gate.record_crown(crown_boxes, crown_boxes * crown_s_per_box)
    return gate.record_alpha(torch.tensor(closed), alpha_s_per_box * len(closed))


def grow(gate, ids, sizes):
    """Bound the subtrees of the withheld ids: sizes[i] descendants of ids[i], bounded in one round each."""
    tags = torch.cat([torch.full((s,), int(i)) for i, s in zip(ids, sizes)])
    gate.count_bounded(tags)


def test_deep_subtrees_keep_alpha_on_before_they_finish():
    gate = AlphaGate(withhold=4)
    ids = probe(gate, [True, False] * 8, alpha_s_per_box=10e-3)      # p = 0.5, r = 10
    withheld = ids[ids >= 0]
    assert len(withheld) == 4 and bool((ids[1::2] < 0).all())          # only closed boxes, every other one
    grow(gate, withheld, [19] * 4)                                     # 0.5 * 19 < 10: not yet
    gate.end_round(withheld.repeat(2))                                 # subtrees still queued
    assert gate.probing and not gate.on and not gate.wanted()          # (off until decided; all withheld)
    grow(gate, withheld, [2] * 4)                                      # 0.5 * 21 >= 10
    gate.end_round(withheld.repeat(2))
    assert gate.on and not gate.probing


def test_shallow_subtrees_turn_alpha_off_only_once_they_are_closed():
    gate = AlphaGate(withhold=4)
    ids = probe(gate, [True] * 16, alpha_s_per_box=10e-3)             # p = 1, r = 10
    withheld = ids[ids >= 0]
    assert bool((ids[1::2] < 0).all()) and bool((ids[:8:2] >= 0).all())   # every other closure, up to withhold
    grow(gate, withheld, [3] * 4)
    gate.end_round(withheld[:1])                                       # one subtree still open: no decision
    assert gate.probing and not gate.on
    gate.end_round(torch.full((5,), -1))                               # all closed: S = 3 < 10
    assert not gate.on and not gate.probing and not gate.wanted()
    assert gate.limit() == 4 * gate.withhold


def test_off_gate_probes_again_after_every_rounds_with_fresh_ids():
    gate = AlphaGate(every=3, withhold=2)
    ids = probe(gate, [True] * 4, alpha_s_per_box=10e-3)
    grow(gate, ids[ids >= 0], [1, 1])
    gate.end_round(torch.full((1,), -1))
    assert not gate.on
    for _ in range(3):
        assert not gate.wanted()
        gate.end_round(torch.full((1,), -1))
    assert gate.probing and gate.wanted()
    old = ids[ids >= 0]
    assert not bool(gate.measured(old).any())                          # the last probe's subtrees no longer count
    new = probe(gate, [True] * 4, alpha_s_per_box=10e-3)
    assert int(new[new >= 0].min()) > int(old.max())
    grow(gate, new[new >= 0], [40, 40])                                # alpha-CROWN pays now
    gate.end_round(new[new >= 0])
    assert gate.on


def test_cost_ratio_uses_the_cheapest_calls():
    gate = AlphaGate(withhold=2)
    gate.record_crown(4, 4 * 5e-3)                                     # a small first round: 5 ms a box
    ids = probe(gate, [True] * 4, alpha_s_per_box=10e-3)               # cheapest CROWN 1 ms: r = 10, not 2
    grow(gate, ids[ids >= 0], [4, 4])                                  # p * S = 4
    gate.end_round(torch.full((1,), -1))
    assert not gate.on


def test_a_gate_that_closes_nothing_turns_off_after_probe_boxes():
    gate = AlphaGate(withhold=2, probe_boxes=64)
    probe(gate, [False] * 32, alpha_s_per_box=10e-3)
    gate.end_round(torch.full((1,), -1))
    assert gate.probing and gate.wanted() and gate.limit() == 4 * gate.withhold   # 32 of 64 boxes tried
    probe(gate, [False] * 32, alpha_s_per_box=10e-3)
    gate.end_round(torch.full((1,), -1))
    assert not gate.on


def test_alpha_cheaper_than_crown_withholds_nothing():
    # r = 0.01: each closure saves at least one CROWN box, so p * S >= p >= r without measuring S
    gate = AlphaGate(withhold=4)
    ids = probe(gate, [True], alpha_s_per_box=1e-3, crown_s_per_box=0.1, crown_boxes=1)
    assert bool((ids < 0).all()) and gate.on and not gate.probing and not bool(gate.measured(torch.zeros(1)).any())
    gate = AlphaGate(withhold=4)                                       # no CROWN cost measured yet (the root
    ids = gate.record_alpha(torch.tensor([False, True]), 0.5)          # box's bounds came with the search)
    assert bool((ids < 0).all()) and gate.on and not gate.probing
    gate = AlphaGate(withhold=4)                                       # nothing closed: no decision
    probe(gate, [False] * 4, alpha_s_per_box=1e-6)
    assert gate.probing
    gate = AlphaGate(withhold=4)                                       # p = 0.25 < r = 0.5: a probe as before
    ids = probe(gate, [True, False, False, False], alpha_s_per_box=0.5e-3, crown_s_per_box=1e-3, crown_boxes=1)
    assert bool((ids >= 0).any()) and gate.probing
