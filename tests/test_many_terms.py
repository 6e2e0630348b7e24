"""Properties with many disjuncts, each over its own input box (verifiers/complete/many_terms.py): the batched bounds
refute exactly the disjuncts that the same bound refutes one at a time, only ones that hold (exact MILP optimum > 0);
the batched attack returns only counterexamples that violate the property; the whole pipeline agrees with the MILP.
"""
import copy
import time

import numpy as np
import pytest
import torch

from certkit.verifiers.bounds.ibp_crown import BoundedModule
from certkit.verifiers.bounds.perturbation import Box
from certkit.verifiers.complete.many_terms import (
    MANY_BOXES,
    _Queue,
    batched_falsify,
    batched_refute,
    batched_split_refute,
    forward_split_applies,
)
from certkit.verifiers.complete.strategy import Deadline, verify_property
from certkit.verifiers.complete.vnnlib import parse_vnnlib

from milp import exact_min_max
from test_input_split import N_IN, N_OUT, layers_np, onnx_of, relu_net

pytest.importorskip("onnxruntime")

N_TERMS = MANY_BOXES + 8                 # every disjunct over a box of its own


def box_term_property(path, disjuncts):
    """VNN-LIB file ``(or (and box_k rows_k) ...)``: disjunct k is its own box (lo, hi) and rows (sign, output, c)
    meaning sign * Y_output <= sign * c, the layout of VNN-COMP's nn4sys properties."""
    lines = [f"(declare-const X_{i} Real)" for i in range(N_IN)] + [f"(declare-const Y_{j} Real)" for j in range(N_OUT)]
    parts = []
    for lo, hi, rows in disjuncts:
        box = " ".join(f"(>= X_{i} {float(lo[i])!r}) (<= X_{i} {float(hi[i])!r})" for i in range(N_IN))
        out = " ".join(f"({'<=' if s > 0 else '>='} Y_{j} {float(c)!r})" for s, j, c in rows)
        parts.append(f"(and {box} {out})")
    lines.append("(assert (or " + " ".join(parts) + "))")
    path.write_text("\n".join(lines) + "\n")
    return parse_vnnlib(path)


def planted(net, seed, tmp_path, violated=(), n_terms=N_TERMS):
    """``n_terms`` disjuncts over small random boxes, one or two rows each; the rows are shifted so that each disjunct's
    exact optimum (min over its box of max_r C_r y - d_r) is -delta for the indices in ``violated`` and a margin
    drawn from [-0.2, 1] x the outputs' spread, at least delta, for the others (some easy to refute, some close).
    Returns the parsed property and the exact optima (exact up to float64 rounding of the written constants)."""
    rng = np.random.default_rng(seed)
    layers = layers_np(net)
    with torch.no_grad():
        y = net(torch.from_numpy(rng.uniform(-1, 1, (4096, N_IN))).float()).double().numpy()
    spread = float(y.std(0).mean())
    delta = 0.05 * spread
    disjuncts, targets = [], []
    for k in range(n_terms):
        c, r = rng.uniform(-1, 1, N_IN), rng.uniform(0.02, 0.3)
        rows = [(int(rng.choice([-1, 1])), int(rng.integers(N_OUT)), float(rng.normal()))
                for _ in range(int(rng.integers(1, 3)))]
        C = np.zeros((len(rows), N_OUT))
        d = np.zeros(len(rows))
        for i, (s, j, cc) in enumerate(rows):
            C[i, j], d[i] = s, s * cc
        v0 = exact_min_max(layers, C, d, c - r, c + r)
        target = -delta if k in violated else max(delta, float(rng.uniform(-0.2, 1.0)) * spread)
        shift = target - v0                        # C y <= d - shift: the optimum becomes v0 + shift
        disjuncts.append((c - r, c + r, [(s, j, cc - s * shift) for s, j, cc in rows]))
        targets.append(target)
    return box_term_property(tmp_path / "p.vnnlib", disjuncts), targets


def refuted_alone(bm, term, method):
    pert = Box(torch.from_numpy(term.x_L)[None], torch.from_numpy(term.x_U)[None])
    with torch.no_grad():
        lb, _ = bm.compute_bounds(pert, torch.from_numpy(term.C)[None], method, bound_upper=False)
    return bool(((lb[0] - torch.from_numpy(term.d)) > 0).any())


@pytest.mark.parametrize("method", ["IBP", "CROWN"])
def test_batched_bounds_refute_what_each_disjunct_alone_refutes_and_only_true_ones(method, tmp_path):
    net = relu_net(4)
    onnx_model = onnx_of(net, tmp_path / "net.onnx")
    prop, optima = planted(net, 4, tmp_path)
    assert len(prop.terms) == N_TERMS and min(optima) > 0
    bm = BoundedModule(copy.deepcopy(onnx_model.module).double().eval(), onnx_model.sample_shape)
    still = batched_refute(bm, prop.terms, method, Deadline(60))
    open_ids = {id(t) for t in still}
    alone = [refuted_alone(bm, t, method) for t in prop.terms]
    assert [id(t) not in open_ids for t in prop.terms] == alone
    assert 0 < sum(alone) < N_TERMS               # the planted margins leave some disjuncts open, refute others
    assert all(opt > 0 for opt, t in zip(optima, prop.terms) if id(t) not in open_ids)


def test_batched_attack_finds_a_planted_violation_and_it_is_real(tmp_path):
    net = relu_net(5)
    onnx_model = onnx_of(net, tmp_path / "net.onnx")
    prop, optima = planted(net, 5, tmp_path, violated=(N_TERMS - 3,))
    assert [k for k, o in enumerate(optima) if o <= 0] == [N_TERMS - 3]
    net32 = onnx_model.module.float().eval()
    found = batched_falsify(net32, onnx_model, prop.terms, neurons=64, dl=Deadline(60), steps=50)
    assert found is not None and found.status == "sat"
    t = prop.terms[N_TERMS - 3]
    y = net.double()(torch.from_numpy(found.x.astype(np.float64))[None])[0].detach().numpy()
    assert np.all(t.x_L <= found.x) and np.all(found.x <= t.x_U) and np.all(t.C @ y <= t.d + 1e-9)


@pytest.mark.parametrize("violated", [(), (3,)], ids=["holds", "violated"])
def test_batched_input_splitting_answers_as_the_milp(violated, tmp_path):
    """Every disjunct's box split in forward-mode bounded sub-boxes: unsat only when every exact optimum is > 0, and
    a counterexample that violates its disjunct otherwise."""
    net = relu_net(8)
    onnx_model = onnx_of(net, tmp_path / "net.onnx")
    prop, optima = planted(net, 8, tmp_path, violated=violated, n_terms=12)
    bm = BoundedModule(copy.deepcopy(onnx_model.module).double().eval(), onnx_model.sample_shape)
    assert forward_split_applies(bm, prop.terms, max_free=N_IN)
    assert not forward_split_applies(bm, prop.terms, max_free=N_IN - 1)
    status, n = batched_split_refute(bm, onnx_model.module.float().eval(), onnx_model, prop.terms, Deadline(60),
                                     batch=64)
    if not violated:
        assert status == "unsat" and n > len(prop.terms)       # some disjuncts needed splitting
        return
    assert status.status == "sat"
    x = torch.from_numpy(status.x.astype(np.float64))
    y = net.double()(x[None])[0].detach().numpy()
    assert any(np.all(t.x_L <= status.x) and np.all(status.x <= t.x_U) and np.all(t.C @ y <= t.d + 1e-9)
               for t in prop.terms)


def test_batched_input_splitting_keeps_its_deadline_and_domain_budget(tmp_path):
    net = relu_net(8)
    onnx_model = onnx_of(net, tmp_path / "net.onnx")
    prop, _ = planted(net, 8, tmp_path, n_terms=12)
    bm = BoundedModule(copy.deepcopy(onnx_model.module).double().eval(), onnx_model.sample_shape)
    net32 = onnx_model.module.float().eval()
    assert batched_split_refute(bm, net32, onnx_model, prop.terms, Deadline(0.0), batch=4)[0] == "timeout"
    status, n = batched_split_refute(bm, net32, onnx_model, prop.terms, Deadline(60), batch=4, max_domains=8)
    assert status == "unknown" and n == 8
    bm.deadline = time.perf_counter() - 1.0            # the bound graph's deadline passes inside the first round
    assert batched_split_refute(bm, net32, onnx_model, prop.terms, Deadline(60), batch=4) == ("timeout", 4)


@pytest.mark.parametrize("violated", [(), (7,)], ids=["holds", "violated"])
def test_the_pipeline_answers_as_the_milp(violated, tmp_path):
    net = relu_net(6)
    onnx_model = onnx_of(net, tmp_path / "net.onnx")
    prop, optima = planted(net, 6, tmp_path, violated=violated, n_terms=MANY_BOXES + 2)
    # 20 s: the attacks on the disjuncts left open stop at a fifth of it, input splitting settles the rest in < 1 s
    res = verify_property(onnx_model, prop, timeout=20, methods=("IBP", "CROWN"), bab="input")
    assert res.status == ("sat" if min(optima) <= 0 else "unsat"), res


def test_many_disjuncts_over_one_box_share_its_root_bounds_instead(monkeypatch, tmp_path):
    """Batching stacks one copy of the box per disjunct: a classifier-style property (many disjuncts, one box) must
    keep the per-box path, whose root bounds are computed once."""
    from certkit.verifiers.complete import strategy

    def refuse(*a, **k):
        raise AssertionError("batched over copies of one box")
    monkeypatch.setattr(strategy, "batched_falsify", refuse)
    monkeypatch.setattr(strategy, "batched_refute", refuse)
    net = relu_net(7)
    onnx_model = onnx_of(net, tmp_path / "net.onnx")
    lo, hi = -0.1 * np.ones(N_IN), 0.1 * np.ones(N_IN)
    with torch.no_grad():
        y_max = net(torch.zeros(1, N_IN))[0].abs().max().item()
    rows = [[(-1, j % N_OUT, 100.0 * (1 + y_max) + k)] for k, j in enumerate(range(MANY_BOXES + 4))]
    prop = box_term_property(tmp_path / "p.vnnlib", [(lo, hi, r) for r in rows])
    assert len({t.box_key() for t in prop.terms}) == 1 and len(prop.terms) > MANY_BOXES
    assert verify_property(onnx_model, prop, timeout=5, methods=("IBP",), bab=False).status == "unsat"


def test_the_queue_of_sub_boxes_pops_in_the_order_of_one_concatenated_queue():
    """_Queue (chunks pushed in front, rows popped from the front without copying the rest) hands out the rows in
    the order of the queue it replaces: each round torch.cat([children, rest]), then the first ``batch`` rows."""
    gen = torch.Generator().manual_seed(0)
    rows = torch.arange(37.0)
    queue, flat = _Queue((rows, rows * 2)), rows.clone()
    popped, expected = [], []
    for batch in (5, 8, 3, 16, 7, 64, 4):
        a, b = queue.pop(batch)
        assert torch.equal(b, 2 * a)
        popped.append(a)
        expected.append(flat[:batch])
        flat = flat[batch:]
        children = torch.rand(int(torch.randint(0, 9, (1,), generator=gen)), generator=gen)
        queue.push((children, children * 2))
        flat = torch.cat([children, flat])
    assert all(torch.equal(p, e) for p, e in zip(popped, expected))
    assert sum(c[0].shape[0] for c in queue.chunks) == flat.shape[0]
    while queue.chunks:
        a, _ = queue.pop(6)
        assert torch.equal(a, flat[:6])
        flat = flat[6:]
    assert flat.shape[0] == 0
