"""Input-split branch and bound (verifiers/complete/input_split.py): decisions on disjunctions of conjunctions over
small
random ReLU nets against the exact MILP optimum (scipy HiGHS), counterexamples that violate the property, children
that cover their parent, clipped boxes that keep every point the linear bounds admit, split scores that follow the
formula, split gains that are the derivatives of the margin (the children's gains for an affine map), the deadline
kept.
"""
import copy
import time

import numpy as np
import pytest
import torch
from torch import nn

from certkit.common.errors import CertkitError
from certkit.verifiers.attack import pgd_box
from certkit.verifiers.bounds.ibp_crown import BoundedModule
from certkit.verifiers.bounds.perturbation import Box
from certkit.verifiers.complete import input_split
from certkit.verifiers.complete.input_split import (
    clip_boxes,
    input_split_bab,
    split_boxes,
    split_gains,
    split_rows,
    split_scores,
    volume_ratio,
)
from certkit.verifiers.complete.many_terms import neuron_count
from certkit.verifiers.complete.strategy import Deadline, input_split_batch, verify_property
from certkit.verifiers.complete.vnncomp_format import InstanceResult
from certkit.verifiers.complete.vnnlib import parse_vnnlib

from conftest import export_onnx
from milp import exact_min_max

pytest.importorskip("onnxruntime")

from certkit.models.onnx_import import load_onnx  # noqa: E402

N_IN, N_OUT = 3, 3


def relu_net(seed, hidden=(16, 16), n_in=N_IN):
    torch.manual_seed(seed)
    sizes = (n_in,) + hidden + (N_OUT,)
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1]).eval()


def onnx_of(net, path):
    return load_onnx(export_onnx(net, torch.rand(1, net[0].in_features), path))


def bounded(onnx_model):
    """A float64 BoundedModule of a copy of the imported network (the float32 one stays for attacks)."""
    return BoundedModule(copy.deepcopy(onnx_model.module).double().eval(), onnx_model.sample_shape)


def layers_np(net):
    return [(m.weight.detach().double().numpy(), m.bias.detach().double().numpy()) for m in net
            if isinstance(m, nn.Linear)]


def write_property(path, boxes, terms):
    """VNN-LIB file: the input is in one of ``boxes`` [(lo, hi)] and one of ``terms`` holds, each a list of rows
    (sign, output, c) meaning sign * Y_output <= sign * c (sign +1: <=, -1: >=). Every term applies to every box."""
    n_in = len(boxes[0][0])
    lines = [f"(declare-const X_{i} Real)" for i in range(n_in)] + [f"(declare-const Y_{j} Real)" for j in range(N_OUT)]
    box_txt = ["(and " + " ".join(f"(>= X_{i} {float(lo[i])!r}) (<= X_{i} {float(hi[i])!r})"
                                  for i in range(n_in)) + ")" for lo, hi in boxes]
    lines.append("(assert (or " + " ".join(box_txt) + "))")
    term_txt = ["(and " + " ".join(f"({'<=' if s > 0 else '>='} Y_{j} {float(c)!r})" for s, j, c in t) + ")"
                for t in terms]
    lines.append("(assert (or " + " ".join(term_txt) + "))")
    path.write_text("\n".join(lines) + "\n")
    return parse_vnnlib(path)


def rows_to_C(rows):
    C = np.zeros((len(rows), N_OUT))
    d = np.zeros(len(rows))
    for r, (s, j, c) in enumerate(rows):
        C[r, j], d[r] = s, s * c
    return C, d


def planted_property(net, seed, shape, sat, tmp_path):
    """A property whose answer is known exactly: each term's constants are shifted so that its exact
    min over the box of max_r (C_r y - d_r) is -delta (violated) or +delta (holds); ``shape`` = rows per term and
    number of boxes. Returns (parsed property, the exact per-(box, term) optima)."""
    rows_per_term, n_boxes = shape
    rng = np.random.default_rng(seed)
    layers = layers_np(net)
    boxes = []
    for _ in range(n_boxes):
        c = rng.uniform(-1, 1, N_IN)
        boxes.append((c - 0.6, c + 0.6))
    with torch.no_grad():
        y = net(torch.from_numpy(rng.uniform(-1.6, 1.6, (4096, N_IN))).float()).double().numpy()
    delta = 0.05 * float(y.std(0).mean())
    terms = []
    for k, n_rows in enumerate(rows_per_term):
        rows = [(int(rng.choice([-1, 1])), int(rng.integers(N_OUT)), float(rng.normal())) for _ in range(n_rows)]
        C, d = rows_to_C(rows)
        v0 = min(exact_min_max(layers, C, d, lo, hi) for lo, hi in boxes)
        # C y <= d - shift: the optimum becomes v0 + shift; violated (<= 0) only for the planted term when sat
        shift = -v0 - delta if (sat and k == 0) else -v0 + delta
        terms.append([(s, j, c - s * shift) for s, j, c in rows])
    prop = write_property(tmp_path / "p.vnnlib", boxes, terms)
    optima = [exact_min_max(layers, t.C, t.d, t.x_L, t.x_U) for t in prop.terms]
    return prop, optima


SHAPES = {"one row": ((1,), 1), "conjunction": ((3,), 1), "disjunction": ((1, 2, 1), 1), "two boxes": ((1, 2), 2)}


@pytest.mark.parametrize("sat", [False, True], ids=["holds", "violated"])
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("seed", [0, 1])
def test_decisions_match_the_exact_milp_answer(seed, shape, sat, tmp_path):
    net = relu_net(seed)
    onnx_model = onnx_of(net, tmp_path / "net.onnx")
    prop, optima = planted_property(net, seed, SHAPES[shape], sat, tmp_path)
    assert (min(optima) <= 0) == sat
    # the search itself, per box as strategy.py groups the disjuncts (no attack before it)
    bm = bounded(onnx_model)
    net32 = onnx_model.module.float().eval()
    answers = []
    for box in {t.box_key() for t in prop.terms}:
        group = [t for t in prop.terms if t.box_key() == box]
        status, n = input_split_bab(bm, net32, onnx_model, group, Deadline(60), 10 ** 6, 256)
        answers.append(status)
        assert n > 0
    assert all(isinstance(a, str) and a == "unsat" or getattr(a, "status", None) == "sat" for a in answers), answers
    assert any(getattr(a, "status", None) == "sat" for a in answers) == sat
    for a in answers:
        if not isinstance(a, str):   # the counterexample violates a term of the property in float64
            y = net.double()(torch.from_numpy(a.x.astype(np.float64))[None])[0].detach().numpy()
            assert any(np.all(t.x_L <= a.x) and np.all(a.x <= t.x_U) and np.all(t.C @ y <= t.d + 1e-9)
                       for t in prop.terms)
    # and the whole pipeline (attacks, bounds, grouped input split) agrees
    res = verify_property(onnx_model, prop, timeout=60, methods=("IBP",), bab="input")
    assert res.status == ("sat" if sat else "unsat"), res


def test_disjuncts_over_different_boxes_are_refused(tmp_path):
    net = relu_net(0)
    onnx_model = onnx_of(net, tmp_path / "net.onnx")
    prop = write_property(tmp_path / "p.vnnlib", [(np.zeros(N_IN), np.ones(N_IN)), (-np.ones(N_IN), np.zeros(N_IN))],
                          [[(1, 0, 0.0)]])
    bm = bounded(onnx_model)
    with pytest.raises(CertkitError, match="share one input box"):
        input_split_bab(bm, net, onnx_model, prop.terms, Deadline(5), 100, 16)


def test_bisect_children_cover_the_parent_exactly():
    gen = torch.Generator().manual_seed(0)
    lo = torch.rand(50, 4, generator=gen, dtype=torch.float64)
    hi = lo + torch.rand(50, 4, generator=gen, dtype=torch.float64)
    dim = torch.randint(0, 4, (50,), generator=gen)
    c_lo, c_hi = split_boxes(lo, hi, dim)
    left, right = (c_lo[:50], c_hi[:50]), (c_lo[50:], c_hi[50:])
    other = torch.ones_like(lo, dtype=torch.bool).scatter_(1, dim[:, None], False)
    for a, b in (left, right):   # untouched dimensions are the parent's
        assert torch.equal(a[other], lo[other]) and torch.equal(b[other], hi[other])
    k = torch.arange(50)
    assert torch.equal(left[0][k, dim], lo[k, dim]) and torch.equal(right[1][k, dim], hi[k, dim])
    assert torch.equal(left[1][k, dim], right[0][k, dim])          # the halves meet: nothing is dropped
    assert bool((left[1][k, dim] > lo[k, dim]).all() and (left[1][k, dim] < hi[k, dim]).all())


def test_clipping_keeps_every_admitted_point():
    """Random linear bounds A x + bias (rows of 3 disjuncts) on random boxes: every sampled point of a box that
    satisfies all rows of a disjunct (A x + bias <= d) lies in the clipped box and keeps that disjunct open."""
    gen = torch.Generator().manual_seed(2)
    N, n, owner = 64, 3, torch.tensor([0, 0, 1, 2, 2, 2])
    lo = torch.rand(N, n, generator=gen, dtype=torch.float64) - 1
    hi = lo + 2 * torch.rand(N, n, generator=gen, dtype=torch.float64)
    A = torch.randn(N, 6, n, generator=gen, dtype=torch.float64)
    bias = torch.randn(N, 6, generator=gen, dtype=torch.float64)
    d = torch.randn(1, 6, generator=gen, dtype=torch.float64)
    c_lo, c_hi, open_ = clip_boxes(lo, hi, A, bias, d, owner, torch.ones(N, 3, dtype=torch.bool))
    x = lo[:, None] + (hi - lo)[:, None] * torch.rand(N, 20000, n, generator=gen, dtype=torch.float64)
    ok_rows = (torch.einsum("nsi,nki->nks", A, x) + bias[:, None] <= d)                 # (N, points, rows)
    admitted = torch.stack([ok_rows[..., owner == t].all(-1) for t in range(3)], -1)      # (N, points, terms)
    assert bool(admitted.any())                                                          # the test has teeth
    inside = ((x >= c_lo[:, None]) & (x <= c_hi[:, None])).all(-1)
    assert bool((inside[..., None] | ~admitted).all())
    assert bool((open_[:, None] | ~admitted).all())
    shrunk = ((c_hi - c_lo) < (hi - lo) - 1e-9).any(1) & open_.any(1)
    assert int(shrunk.sum()) > N // 4                                                     # and it does clip


def test_clipping_refutes_a_conjunction_no_single_row_refutes():
    """On [0, 1] x <= 0.3 and x >= 0.7 each hold somewhere but never together; x0 + x1 <= 0.5 on [0, 1]^2 leaves
    [0, 0.5]^2."""
    one = torch.ones(1, 1, dtype=torch.float64)
    A = torch.tensor([[[1.0], [-1.0]]], dtype=torch.float64)
    _, _, open_ = clip_boxes(0 * one, one, A, torch.zeros(1, 2, dtype=torch.float64),
                             torch.tensor([[0.3, -0.7]], dtype=torch.float64), torch.tensor([0, 0]),
                             torch.ones(1, 1, dtype=torch.bool))
    assert not bool(open_.any())
    lo, hi = torch.zeros(1, 2, dtype=torch.float64), torch.ones(1, 2, dtype=torch.float64)
    c_lo, c_hi, open_ = clip_boxes(lo, hi, torch.ones(1, 1, 2, dtype=torch.float64), torch.zeros(1, 1).double(),
                                   torch.tensor([[0.5]], dtype=torch.float64), torch.tensor([0]),
                                   torch.ones(1, 1, dtype=torch.bool))
    assert bool(open_.all()) and torch.equal(c_lo, lo)
    assert torch.allclose(c_hi, torch.full((1, 2), 0.5, dtype=torch.float64), rtol=1e-8)


def test_split_scores_follow_the_formula():
    gen = torch.Generator().manual_seed(1)
    lo = torch.zeros(6, 5, dtype=torch.float64)
    hi = torch.rand(6, 5, generator=gen, dtype=torch.float64)
    w0 = torch.full((1, 5), 2.0, dtype=torch.float64)
    A = torch.randn(6, 3, 5, generator=gen, dtype=torch.float64)
    got = split_scores(lo, hi, A, w0, 0.03)
    for n in range(6):
        s = [float(A[n, :, i].abs().sum()) * 2.0 for i in range(5)]
        want = [float(hi[n, i]) / 2.0 * (s[i] + 0.03 * max(s)) for i in range(5)]
        assert np.allclose(got[n].numpy(), want, rtol=1e-12)
    # a dimension the bound does not depend on still gets split once it is the widest by far
    A[:, :, 0] = 0
    hi[:, 0], hi[:, 1:] = 2.0, 1e-3
    assert bool((split_scores(lo, hi, A, w0, 0.03).argmax(1) == 0).all())


@pytest.mark.parametrize("hidden, want", [((16, 16), 16384), ((100, 100), 4096), ((1500, 1500), 2048)])
def test_round_size_follows_the_network_size(hidden, want):
    """2^21 values per round over every node, as a power of two in [2048, 16384]: small nets get large rounds."""
    bm = BoundedModule(relu_net(0, hidden).double(), (N_IN,))
    values = N_IN + 2 * sum(hidden) + N_OUT        # input, each hidden Linear and ReLU output, the last Linear
    assert neuron_count(bm) == values
    assert input_split_batch(bm) == want == min(16384, max(2048, 2 ** int(np.floor(np.log2(2 ** 21 / values)))))


def test_the_deadline_is_kept(tmp_path):
    """16 inputs and a random 3 x 64 net: y_0 >= (the largest value PGD reaches +
    0.02 of the sampled spread) cannot be settled in 1.5 s (it takes far more splits to close, or to reach a
    counterexample if there is one); the search stops within 10% of its budget."""
    net = relu_net(3, hidden=(64, 64, 64), n_in=16)
    onnx_model = onnx_of(net, tmp_path / "net.onnx")
    lo, hi = -np.ones(16), np.ones(16)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        y0 = net(torch.rand(20000, 16, generator=gen) * 2 - 1)[:, 0]
    box = (-torch.ones(256, 16), torch.ones(256, 16))
    _, best = pgd_box(lambda x: -net(x)[:, 0], *box, steps=100, restarts=4, generator=gen, early_stop=False)
    c = float(-best.min() + 0.02 * (y0.max() - y0.min()))       # above the largest value PGD reached
    prop = write_property(tmp_path / "p.vnnlib", [(lo, hi)], [[(-1, 0, c)]])
    bm = bounded(onnx_model)
    budget = 1.5
    dl = Deadline(budget)
    status, n = input_split_bab(bm, onnx_model.module.float().eval(), onnx_model, prop.terms, dl, 10 ** 7, 256)
    elapsed = time.perf_counter() - dl.t0
    assert status == "timeout" and n > 0
    assert elapsed <= 1.1 * budget, elapsed


def test_the_leaf_attack_gets_the_bound_minimisers_within_its_time_share(tmp_path):
    """The search hands its attack the bound minimisers of its open boxes (points of the box), stops at the attack's
    answer, and spends on it at most its share of the search's time (plus the one call that crossed it)."""
    net = relu_net(3, hidden=(64, 64, 64), n_in=16)
    onnx_model = onnx_of(net, tmp_path / "net.onnx")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        y0 = net(torch.rand(20000, 16, generator=gen) * 2 - 1)[:, 0]
    box = (-torch.ones(256, 16), torch.ones(256, 16))
    _, best = pgd_box(lambda x: -net(x)[:, 0], *box, steps=100, restarts=4, generator=gen, early_stop=False)
    c = float(-best.min() + 0.02 * (y0.max() - y0.min()))      # y_0 >= c: not settled in 2 s (as above)
    prop = write_property(tmp_path / "p.vnnlib", [(-np.ones(16), np.ones(16))], [[(-1, 0, c)]])
    bm = bounded(onnx_model)
    calls, spent = [], []

    def attack(x):
        t = time.perf_counter()
        calls.append(x)
        time.sleep(0.03)
        spent.append(time.perf_counter() - t)
        return None
    dl = Deadline(2.0)
    status, n = input_split_bab(bm, onnx_model.module.float().eval(), onnx_model, prop.terms, dl, None, 64,
                                attack=attack, attack_share=0.1)
    elapsed = time.perf_counter() - dl.t0
    assert status == "timeout" and calls
    assert all(x.shape[1] == 16 and bool((x.abs() <= 1).all()) for x in calls)
    assert sum(spent) <= 0.1 * elapsed + max(spent) + 0.01, (sum(spent), elapsed)
    sentinel = InstanceResult("sat", 0.0, method="test")
    status, _ = input_split_bab(bounded(onnx_model), onnx_model.module.float().eval(), onnx_model, prop.terms,
                                Deadline(30), None, 64, attack=lambda x: sentinel)
    assert status is sentinel


def test_a_deadline_inside_a_round_is_a_timeout_with_its_box_count(tmp_path):
    """The bound graph's own deadline (set by the complete verifier so that CROWN's passes stop) passing inside the
    first round ends the search as ("timeout", boxes bounded so far), not as an exception without a count."""
    net = relu_net(4)
    onnx_model = onnx_of(net, tmp_path / "net.onnx")
    prop = write_property(tmp_path / "p.vnnlib", [(-np.ones(N_IN), np.ones(N_IN))], [[(-1, 0, 1e6)]])
    bm = bounded(onnx_model)
    bm.deadline = time.perf_counter() - 1.0
    status, n = input_split_bab(bm, onnx_model.module.float().eval(), onnx_model, prop.terms, Deadline(60), None, 256)
    assert (status, n) == ("timeout", 1)


def test_the_root_box_bounds_given_are_not_computed_again(tmp_path, monkeypatch):
    """With CROWN's intermediate bounds of the whole box given (``root_bounds``, as strategy.py passes the ones it
    computed for the root bounds), the first round does not bound the root box again; the answer and the boxes
    bounded are those of the search without them."""
    net = relu_net(3)
    onnx_model = onnx_of(net, tmp_path / "net.onnx")
    prop, optima = planted_property(net, 3, ((1,), 1), False, tmp_path)
    net32 = onnx_model.module.float().eval()
    runs = []
    for given in (False, True):
        bm = bounded(onnx_model)
        term = prop.terms[0]
        root = None
        if given:
            with torch.no_grad():
                root = bm.crown_intermediate(Box(torch.tensor(term.x_L)[None], torch.tensor(term.x_U)[None]))
        calls = []
        real = bm.crown_intermediate
        monkeypatch.setattr(bm, "crown_intermediate", lambda pert, init=None, real=real, calls=calls: calls.append(
            pert.x_L.shape[0]) or real(pert, init))
        status, n = input_split_bab(bm, net32, onnx_model, prop.terms, Deadline(60), 10 ** 6, 256, root_bounds=root)
        runs.append((status, n, calls))
    (s0, n0, calls0), (s1, n1, calls1) = runs
    assert s0 == s1 == "unsat" and n0 == n1 > 1
    assert calls0[0] == 1 and calls1 == calls0[1:]


@pytest.mark.parametrize("sat", [False, True], ids=["holds", "violated"])
@pytest.mark.parametrize("shape", ["one row", "conjunction"])
def test_children_start_from_their_parents_bounds(shape, sat, tmp_path, monkeypatch):
    """With the parents' intervals carried through the queue (forced on this small network): every box bounded
    with them lies inside the parent box they came from, its intermediate bounds lie inside the parent's and contain
    the network's values at sampled points of the box, and the answers are the exact ones."""
    monkeypatch.setattr(input_split, "INHERIT_MIN_VALUES", 0)
    net = relu_net(5)
    onnx_model = onnx_of(net, tmp_path / "net.onnx")
    prop, optima = planted_property(net, 5, SHAPES[shape], sat, tmp_path)
    assert (min(optima) <= 0) == sat
    bm = bounded(onnx_model)
    real = bm.crown_intermediate
    seen = []

    def spy(pert, init=None):
        out = real(pert, init)
        if init is not None:
            seen.append(pert.x_L.shape[0])
            assert bool((init[0][0] <= pert.x_L).all() and (pert.x_U <= init[0][1]).all())
            u = torch.rand((64,) + tuple(pert.x_L.shape), dtype=torch.float64)
            x = (pert.x_L + u * (pert.x_U - pert.x_L)).reshape(-1, N_IN)
            h = x
            for k, m in enumerate(net.double()):
                h = m(h)
                l, up = out[k + 1]
                v = h.reshape(64, -1, h.shape[-1])
                assert bool((v >= l - 1e-9).all() and (v <= up + 1e-9).all()), k
                assert bool((l >= init[k + 1][0]).all() and (up <= init[k + 1][1]).all()), k
        return out
    monkeypatch.setattr(bm, "crown_intermediate", spy)
    status, n = input_split_bab(bm, onnx_model.module.float().eval(), onnx_model, prop.terms, Deadline(60), 10 ** 6,
                                2)                                 # (rounds of 2: the queue holds more than a round)
    assert seen or sat                                             # the children did start from their parents'
    assert (getattr(status, "status", status) == "sat") == sat and (sat or status == "unsat")


def test_volume_ratio_counts_degenerate_dimensions_as_one():
    w0 = torch.tensor([[2.0, 0.0, 4.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
    w = torch.tensor([[1.0, 0.0, 1.0], [0.5, 0.0, 1.0]], dtype=torch.float64)
    assert torch.equal(volume_ratio(w, w0), torch.tensor([0.125, 0.0], dtype=torch.float64))


@pytest.mark.parametrize("seed", [0, 1])
def test_a_box_clipped_to_half_its_volume_is_bounded_again_as_it_is(seed, tmp_path, monkeypatch):
    """Conjunctions (3 rows per disjunct): every box that the clip cut to at most REBOUND_RATIO of its volume and left
    open is bounded by CROWN again exactly as clipped (not only its halves); the answer stays the exact one."""
    net = relu_net(seed)
    onnx_model = onnx_of(net, tmp_path / "net.onnx")
    prop, optima = planted_property(net, seed, ((3,), 1), False, tmp_path)
    assert min(optima) > 0
    bounded_boxes, clipped = [], []
    real_crown, real_clip = input_split.crown_boxes, input_split.clip_boxes

    def crown(bm, C, lo, hi, bounds=None, init=None):
        bounded_boxes.append(torch.cat([lo, hi], 1))
        return real_crown(bm, C, lo, hi, bounds, init)

    def clip(lo, hi, A, bias, d, owner, open_, **kw):
        c_lo, c_hi, c_open = real_clip(lo, hi, A, bias, d, owner, open_, **kw)
        again = (volume_ratio(c_hi - c_lo, hi - lo) <= input_split.REBOUND_RATIO) & c_open.any(1)
        clipped.append((len(bounded_boxes), torch.cat([c_lo, c_hi], 1)[again]))
        return c_lo, c_hi, c_open
    monkeypatch.setattr(input_split, "crown_boxes", crown)
    monkeypatch.setattr(input_split, "clip_boxes", clip)
    status, _ = input_split_bab(bounded(onnx_model), onnx_model.module.float().eval(), onnx_model, prop.terms,
                                Deadline(60), 10 ** 6, 64)
    assert status == "unsat"
    again = [(k, boxes) for k, boxes in clipped if boxes.shape[0]]
    assert again                                                   # the test has teeth: such boxes occur
    for k, boxes in again:
        later = torch.cat(bounded_boxes[k:])
        assert all(bool((later == box).all(1).any()) for box in boxes)


def test_the_split_follows_the_rows_that_can_refute_the_box():
    """Rows 0-1 belong to disjunct 0, rows 2-4 to disjunct 1. A box is split for the rows of its focus disjunct that
    its center lies outside of (C_r y - d_r > 0), or for all of that disjunct's rows when the center is inside every
    one (nothing to prefer)."""
    owner = torch.tensor([0, 0, 1, 1, 1])
    focus = torch.tensor([0, 0, 1, 1])
    row_center = torch.tensor([[0.3, -2.0, 9.0, 9.0, 9.0],      # the level-set-like row 1 is satisfied: row 0 only
                               [-0.1, -0.2, 9.0, 9.0, 9.0],     # inside both: both rows
                               [9.0, 9.0, -1.0, 0.5, 0.2],      # rows 3 and 4 of disjunct 1
                               [9.0, 9.0, -1.0, -0.5, 0.0]])    # 0 is not outside: all rows of disjunct 1
    want = torch.tensor([[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 0, 1, 1], [0, 0, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(split_rows(owner, focus, row_center), want)


def _margins(bm, lo, hi, C, d):
    """max_r (lb_r - d_r) per box from a plain CROWN pass (no gradients)."""
    with torch.no_grad():
        pert = Box(lo, hi)
        A_in, bias = bm.propagate(bm.graph.output, C, bm.crown_intermediate(pert), {})
        return (bias + pert.lower(A_in) - d).amax(1)


def test_split_gains_of_an_affine_map_are_the_sum_of_the_childrens_gains():
    """For y = W x + b the bound is exact: bisecting dimension i raises one child's margin by |(c W)_i| w_i / 2
    (its minimiser moves half a width) and the other's by nothing, and the gains say so."""
    torch.manual_seed(0)
    net = nn.Linear(N_IN, N_OUT).double()
    bm = BoundedModule(net, (N_IN,))
    gen = torch.Generator().manual_seed(3)
    N = 8
    lo = torch.randn(N, N_IN, generator=gen, dtype=torch.float64)
    hi = lo + torch.rand(N, N_IN, generator=gen, dtype=torch.float64) * 2
    C = torch.randn(N, 1, N_OUT, generator=gen, dtype=torch.float64)
    d = torch.randn(N, 1, generator=gen, dtype=torch.float64)
    got = split_gains(bm, lo, hi, C, d)
    want = (C[:, 0] @ net.weight.detach()).abs() * (hi - lo) / 2
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    m = _margins(bm, lo, hi, C, d)
    for i in range(N_IN):
        c_lo, c_hi = split_boxes(lo, hi, torch.full((N,), i))
        mc = _margins(bm, c_lo, c_hi, C.repeat(2, 1, 1), d.repeat(2, 1))
        torch.testing.assert_close(mc[:N] + mc[N:] - 2 * m, got[:, i], rtol=1e-9, atol=1e-12)


class Product(nn.Module):
    """(W1 x) * (W2 x): CROWN's bound depends on the box through the McCormick planes of the product too."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(N_IN, 2), nn.Linear(N_IN, 2)

    def forward(self, x):
        return self.a(x) * self.b(x)


def test_split_gains_are_the_derivatives_of_the_margin_along_each_bisection():
    """gain_i = (dm/dlo_i - dm/dhi_i) w_i / 2, checked against central differences of the margin m of CROWN's
    bound (whose relaxation of the product moves with the box), with two rows per box (m is their max)."""
    torch.manual_seed(1)
    bm = BoundedModule(Product().double().eval(), (N_IN,))
    gen = torch.Generator().manual_seed(4)
    N = 6
    lo = torch.randn(N, N_IN, generator=gen, dtype=torch.float64)
    hi = lo + 0.2 + torch.rand(N, N_IN, generator=gen, dtype=torch.float64)
    C = torch.randn(N, 2, 2, generator=gen, dtype=torch.float64)
    d = torch.zeros(N, 2, dtype=torch.float64)
    got = split_gains(bm, lo, hi, C, d)
    h = 1e-6
    for i in range(N_IN):
        e = torch.zeros(1, N_IN, dtype=torch.float64)
        e[0, i] = h
        d_lo = (_margins(bm, lo + e, hi, C, d) - _margins(bm, lo - e, hi, C, d)) / (2 * h)
        d_hi = (_margins(bm, lo, hi + e, C, d) - _margins(bm, lo, hi - e, C, d)) / (2 * h)
        torch.testing.assert_close(got[:, i], (d_lo - d_hi) * (hi - lo)[:, i] / 2, rtol=1e-5, atol=1e-8)
    assert bool((got > 0).any())
    bm.budget = 1                                                      # one box per differentiated chunk
    torch.testing.assert_close(split_gains(bm, lo, hi, C, d), got, rtol=1e-12, atol=1e-15)


def test_one_gains_pass_decides_several_generations_of_splits(tmp_path, monkeypatch):
    """With the gains (3, 2, 1) for every box and gain_levels=3, a box's next three splits take dimensions 0, 1, 0
    (each gain halved once used: 3 > 2, then 2 > 1.5, then 1.5 > 1), and gains are asked for again only by the boxes
    three generations down: every box they are asked for has the root's widths over (4^k, 2^k, 1)."""
    net = relu_net(2)
    onnx_model = onnx_of(net, tmp_path / "net.onnx")
    prop, _ = planted_property(net, 2, SHAPES["one row"], False, tmp_path)
    asked = []

    def fixed(bm, lo, hi, C, d):
        asked.append(hi - lo)
        return torch.tensor([3.0, 2.0, 1.0], dtype=lo.dtype).expand_as(lo).clone()

    monkeypatch.setattr(input_split, "split_gains", fixed)
    input_split_bab(bounded(onnx_model), onnx_model.module.float().eval(), onnx_model, prop.terms, Deadline(60),
                    3000, 64, gain_levels=3, attack=None)
    w0 = torch.tensor(prop.terms[0].x_U - prop.terms[0].x_L)
    ks = []
    for w in torch.cat(asked):
        k = round(float(torch.log2(w0[1] / w[1])))
        torch.testing.assert_close(w, w0 / torch.tensor([4.0 ** k, 2.0 ** k, 1.0], dtype=w0.dtype))
        ks.append(k)
    assert max(ks) >= 2
