"""How certkit answers one VNN-COMP instance (ONNX network + VNN-LIB property); answers are sound by construction:
  1. import the ONNX file and compare the converted network with onnxruntime on random points of every input
     box; refuse (``error``) on a mismatch;
  2. falsify: PGD on max_j (C_j y - d_j) inside each disjunct's box (first on the minimum of that over the
     disjuncts that share a box; on each of those disjuncts alone only after step 3, if its bounds leave it open),
     for at most a fifth of the time (at least 1 s); a candidate is snapped into the box with exact rational
     comparisons, replayed in onnxruntime and reported ``sat`` only if it violates the property there
     (verifiers/complete/vnncomp_format.py);
  3. prove: bound max_j lb(C_j y - d_j) > 0 for every disjunct (IBP, CROWN, then alpha-CROWN) in float64 (alpha-CROWN
     steered by float32 iterations on a float32 copy, its bounds evaluated in float64); the intermediate bounds of a
     box are computed once for all its disjuncts; CROWN that has not finished after 60% of the time left gives the
     rest to attacks (step 5);
  4. branch and bound on what bounds leave open: input splits for low-dimensional inputs (input_split.py), else
     activation splits with beta-CROWN bounds (ReLU) or GenBaB splits (Sigmoid/Tanh) (beta_crown.py), fully split
     ReLU subdomains decided by a checked linear program (leaf_lp.py);
  5. if the proof gives up (``unknown``) with time left, attack again until the limit: a MILP search on ReLU
     networks (milp_attack.py, half of the time left), then PGD with fresh starts.
NaN or inf anywhere in the bounds is an ``error``, never a verdict.

With ``sound=True`` (``certkit verify --sound``) steps 3 and 4 use outward-rounded bounds (verifiers/bounds/sound.py):
unsat then holds for the network in exact arithmetic and as run in float32; branch and bound splits inputs only (for
more than INPUT_SPLIT_MAX_DIM (32) free input dimensions the sound mode answers unknown once its bounds leave a
disjunct open).
"""
from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
import torch

from certkit.common import threads
from certkit.common.errors import CertkitError
from certkit.common.faults import fault_point
from certkit.common.numerics import flush_denormal
from certkit.models.onnx_import import OnnxModel, load_onnx
from certkit.verifiers.attack import (
    REFINE_STAGE_STEPS,
    REFINE_STEPS,
    falsifier_starts,
    falsifier_step_sizes,
    pgd_box,
    pgd_refine,
    straight_through,
    without_output_softmax,
)
from certkit.verifiers.bounds.alpha_crown import alpha_crown, optimize_intermediate
from certkit.verifiers.bounds.ibp_crown import BoundedModule, canonical_method
from certkit.verifiers.bounds.ops.sshaped import SShaped
from certkit.verifiers.bounds.perturbation import Box
from certkit.verifiers.bounds.sound import SoundBounds
from certkit.verifiers.complete.beta_crown import ActivationBaB
from certkit.verifiers.complete.input_split import (
    candidate_checker,
    input_split_bab,
    objective,
    per_term_max,
    refuted,
    term_value,
)
from certkit.verifiers.complete.many_terms import (
    MANY_BOXES,
    batched_falsify,
    batched_refute,
    batched_split_refute,
    forward_split_applies,
    neuron_count,
)
from certkit.verifiers.complete.milp_attack import milp_counterexample
from certkit.verifiers.complete.output_cone import in_output_cone
from certkit.verifiers.complete.vnncomp_format import InstanceResult, witness_checks
from certkit.verifiers.complete.vnnlib import Property, parse_vnnlib

#: input splitting when the disjuncts' boxes have at most this many free (non-degenerate) input dimensions; 32, not
#: 16, from VNN-COMP nn4sys pensieve_big_parallel (96 inputs, 32 free): 4 of 4 sampled instances unsat by input
#: splitting in 6-14 s, 0 of 4 by activation splitting in 30 s
INPUT_SPLIT_MAX_DIM = 32
#: the falsifier refines this many of its best PGD points with shrinking steps (verifiers/attack.py pgd_refine)
REFINE_POINTS = 64
#: networks with at most this many values per sample (neuron_count: every node's output, input included) get CROWN
#: before the attacks (ACAS Xu 620, lsnc 157 / 384, a 6 x 256 MNIST MLP about 4,000; sri_resnet_b's ResNet 33,490)
QUICK_CROWN = 10_000
#: the layer-by-layer alpha-CROWN optimisation of a box's intermediate bounds stops after this share of the time
#: left (later layers keep CROWN's bounds), so that branch and bound gets the rest: sri_resnet_b idx 5594 and 4836
#: (CIFAR ResNet) were timeouts inside that optimisation and are unsat in 20 s and 22 s
INTERMEDIATE_SHARE = 0.5
#: alpha-CROWN iterations per activation input of the root's optimised intermediate bounds: on VNN-COMP
#: sri_resnet_b (idx 3140) 10 iterations give 99.3% of 20's gain in the output bounds (worst row -0.091 instead of
#: -0.084, from CROWN's -1.114) in 58% of the time (7.3 s instead of 12.6 s), time branch and bound gets instead;
#: with branch and bound's 3 steps per batch, 5 iterations closed its hard instances 1.3-2.6 s sooner than 10
INTERMEDIATE_ITERATIONS = 5
#: on networks with an S-shaped activation (sigmoid, tanh), whose relaxation moves both lines' tangent points (a
#: ReLU's alpha moves the lower line only), the disjuncts still open after those get this many in all: on VNN-COMP
#: 2021 eran's 6 x 200 sigmoid network idx 1211 is refuted by the root's bounds in 2.8 s with 20 iterations and is
#: open after 10k subdomains with 5
INTERMEDIATE_ITERATIONS_S_SHAPED = 20
#: CROWN's bounds on the whole input box (after the first attack) stop at this share of the time left, and the rest
#: goes to attacks: on VNN-COMP's 48 x 48 and 64 x 64 traffic-sign networks (binarized convolutions) they take
#: minutes, and the instances' counterexamples were found by the attacks that followed
ROOT_CROWN_SHARE = 0.6
#: the first attack's share of an instance's time (at least ATTACK_MIN_SECONDS)
ATTACK_SHARE = 0.2
#: the same where input splitting follows (lsnc quadrotor2d_output: 6 s of PGD before an 11-box proof)
ATTACK_SHARE_LOW_DIM = 0.05
ATTACK_MIN_SECONDS = 1.0
#: a PGD round of the falsifier ends once the pace of the last this many steps cannot bring any start below 0 in the
#: steps left (``patience`` of :func:`~certkit.verifiers.attack.pgd_box`): on sri_resnet_b, where every `sat`
#: instance falls to the first starts, the first attack's PGD takes about 0.6 s instead of 4 s
PGD_PATIENCE = 10


class Deadline:
    """Seconds left of a time budget started at construction."""

    def __init__(self, seconds: float):
        self.t0, self.seconds = time.perf_counter(), seconds

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.t0)

    def passed(self) -> bool:
        return self.left() <= 0

    def at(self) -> float:
        """The time.perf_counter() value at which the budget ends."""
        return self.t0 + self.seconds


def check_conversion(onnx_model: OnnxModel, prop: Property, points: int = 16, seed: int = 0) -> None:
    """Compare certkit's converted network with onnxruntime on random points in every input box.

    Raises:
        CertkitError: the outputs differ by more than 1e-4 * (1 + |y|).
    """
    gen = torch.Generator().manual_seed(seed)
    for term in prop.terms[:8]:
        lo = torch.from_numpy(term.x_L).float()
        hi = torch.from_numpy(term.x_U).float()
        x = lo + (hi - lo) * torch.rand((points, lo.numel()), generator=gen)
        onnx_model.check_against_onnxruntime(x.reshape((points,) + onnx_model.sample_shape))


def verify_instance(onnx_path: str | Path, vnnlib_path: str | Path, timeout: float = 60.0,
                    methods: tuple = ("IBP", "CROWN", "alpha-CROWN"), bab: bool | str = True,
                    max_domains: int | None = None, batch: int | None = None, seed: int = 0,
                    sound: bool = False) -> InstanceResult:
    """Answer one VNN-COMP instance: sat (validated counterexample), unsat, unknown, timeout or error.

    Args:
        timeout: seconds for the whole instance (loading included).
        methods: bound methods tried in order on each whole disjunct.
        bab: branch and bound after the bounds: True = automatic (:func:`choose_bab`: input split for boxes with at
            most 32 free input dimensions, else activation split with beta-CROWN / GenBaB), ``input``,
            ``activation``, or False / ``none``.
        max_domains: subdomains (boxes or activation splits) bounded at most (``unknown`` after them); None: the
            time limit alone ends the search (both searches go deepest first, so memory stays bounded).
        batch: boxes per input-split pass; None: :func:`input_split_batch` of the network.
        sound: prove with outward-rounded bounds only (see the module docstring).
    Never raises for a problem with the instance: errors are returned as status ``error`` with a reason.
    """
    dl = Deadline(timeout)
    try:
        onnx_model = load_onnx(onnx_path)
        prop = parse_vnnlib(vnnlib_path)
    except CertkitError as e:
        return InstanceResult("error", time.perf_counter() - dl.t0, str(e))
    res = verify_property(onnx_model, prop, dl.left(), methods, bab, max_domains, batch, seed, sound)
    res.seconds = time.perf_counter() - dl.t0
    return res


def verify_property(onnx_model: OnnxModel, prop: Property, timeout: float = 60.0,
                    methods: tuple = ("IBP", "CROWN", "alpha-CROWN"), bab: bool | str = True,
                    max_domains: int | None = None, batch: int | None = None, seed: int = 0,
                    sound: bool = False) -> InstanceResult:
    """:func:`verify_instance` on an already loaded network and parsed property (same arguments and result)."""
    dl = Deadline(timeout)
    try:
        n_in = int(np.prod(onnx_model.sample_shape))
        if prop.n_inputs != n_in or prop.n_outputs != onnx_model.num_outputs:
            raise CertkitError(f"the property has {prop.n_inputs} inputs / {prop.n_outputs} outputs but the network "
                               f"has {n_in} / {onnx_model.num_outputs}")
        check_conversion(onnx_model, prop, seed=seed)
        # a property that reads few outputs is verified on the part of the network that computes them
        cone = in_output_cone(onnx_model, prop)
        model_used, prop_used = cone if cone is not None else (onnx_model, prop)
        res = _solve(model_used, prop_used, dl, [canonical_method(m) for m in methods], bab, max_domains, batch,
                     seed, sound)
        if res.status == "sat":
            if cone is not None:   # the whole output, and the original property re-checked below
                assert res.x is not None
                res.y = onnx_model.run_onnxruntime(
                    torch.from_numpy(np.asarray(res.x, np.float32).reshape((1,) + onnx_model.sample_shape)))[0]
            res.checks = witness_checks(onnx_model, prop, res)
        return res
    except CertkitError as e:
        return InstanceResult("error", time.perf_counter() - dl.t0, str(e))
    except TimeoutError as e:
        return InstanceResult("timeout", time.perf_counter() - dl.t0, str(e) or f"no answer within {timeout:g} s")


def _solve(onnx_model, prop, dl, methods, bab, max_domains, batch, seed, sound=False) -> InstanceResult:
    # float32 attacks on MNIST-style nets can crawl through subnormal numbers (20x slower measured); flushing them to
    # zero changes values by < 1e-38 (float32) / 1e-308 (float64), far below the rounding the bounds already absorb
    with flush_denormal():
        return _solve_flushed(onnx_model, prop, dl, methods, bab, max_domains, batch, seed, sound)


def _solve_flushed(onnx_model, prop, dl, methods, bab, max_domains, batch, seed, sound=False) -> InstanceResult:
    fault_point("verify")
    net32 = onnx_model.module.float().eval().requires_grad_(False)   # gradients w.r.t. inputs and alphas only
    net64 = copy.deepcopy(net32).double().eval()
    net32 = straight_through(net32)   # attacks get usable gradients through step functions (same values)
    if all(compares_two_outputs(t) for t in prop.terms):   # a saturated softmax hides the order of the logits
        x0 = torch.tensor((prop.terms[0].x_L + prop.terms[0].x_U) / 2, dtype=torch.float32)
        net32 = without_output_softmax(net32, x0.reshape((1,) + tuple(onnx_model.sample_shape)))
    shape = onnx_model.sample_shape
    gen = torch.Generator().manual_seed(seed)
    # 2. falsification on every term: PGD (batched starts) from the box center, the FGSM vertex of the center,
    #    the best half of a pool of output-diversified (ODI) points and uniform random points, with Madry's step size
    #    and with a step of a quarter of the box width
    n_in = int(np.prod(shape))
    starts = int(max(8, min(64, 2 ** 21 // max(1, n_in))))
    odi_pools: dict = {}  # box -> 4 x starts output-diversified points, shared by the disjuncts over one box
    # the first attack gets at most ATTACK_SHARE of the time (a large network's PGD would otherwise take it all
    # before any bound is tried); what the proof leaves goes to more attacks (keep_attacking)
    # (less when input splitting will follow: it tries box centers and bound minimisers as counterexamples itself)
    share = ATTACK_SHARE_LOW_DIM if input_split_follows(bab, prop.terms) else ATTACK_SHARE
    until = time.perf_counter() + max(ATTACK_MIN_SECONDS, share * dl.left())

    def bounded() -> BoundedModule:
        bm = BoundedModule(net64, shape, fusing=not sound)   # the sound mode's rounding rules are per op
        bm.deadline = time.perf_counter() + max(dl.left(), 0.0)   # CROWN's intermediate passes stop there too
        return bm

    bm = None
    open_terms, used = list(prop.terms), ""
    if len({t.box_key() for t in open_terms}) > MANY_BOXES and not sound:
        # thousands of disjuncts over their own boxes (nn4sys): one batched attack and batched IBP / CROWN first
        # (many disjuncts over few boxes, such as the classes of a classifier, share root bounds per box below)
        bm = bounded()
        found = batched_falsify(net32, onnx_model, open_terms, neuron_count(bm), dl, until=until)
        if found is not None:
            return found
        for m in [m for m in methods if m in ("IBP", "CROWN")]:
            if m == "CROWN" and bab in (True, "input") and forward_split_applies(bm, open_terms, INPUT_SPLIT_MAX_DIM):
                # few free inputs per disjunct: split them, bounded in forward mode (nn4sys mscn_128d_dual
                # cardinality_1_960: 15k sub-boxes in 8 s; CROWN costs 0.07 s per whole box there and refuted none
                # of the first 200)
                status, n = batched_split_refute(bm, net32, onnx_model, open_terms, dl, max_domains=max_domains)
                if isinstance(status, InstanceResult):
                    status.seconds, status.domains = time.perf_counter() - dl.t0, n
                    return status
                how = "forward-mode CROWN+input-split BaB"
                if status == "unsat":
                    return InstanceResult("unsat", time.perf_counter() - dl.t0, method=how, domains=n)
                return InstanceResult(status, time.perf_counter() - dl.t0,
                                      f"{how} stopped after {n} sub-boxes ({status})", domains=n)
            open_terms, used = batched_refute(bm, open_terms, m, dl), m
            if not open_terms:
                return InstanceResult("unsat", time.perf_counter() - dl.t0, method=m)
    # bounds that cost less than one PGD step first: IBP, and CROWN on small networks; the disjuncts they refute are
    # not attacked (lsnc quadrotor2d_output: unsat by IBP in 6 s, 5.9 s of it PGD on the 13 disjuncts)
    bm = bounded() if bm is None else bm
    roots = RootBounds(bm)
    quick = [m for m in methods if m == "IBP" or (m == "CROWN" and neuron_count(bm) <= QUICK_CROWN)]
    quick = [] if sound or used else quick            # (the many-box path has already run them, batched)
    for m in quick:
        if m == "CROWN":
            open_terms = [t for g in box_groups(open_terms) for t, c in zip(g, roots.crown_refuted_all(g)) if not c]
        else:
            open_terms = [t for t in open_terms
                          if not bool(refuted(bm, t, torch.tensor(t.x_L)[None], torch.tensor(t.x_U)[None], m).all())]
        used = m
        if not open_terms:
            return InstanceResult("unsat", time.perf_counter() - dl.t0, method=m)
    def attack(units: list, pgd: bool, end: float):
        for term in units:
            found = falsify(net32, onnx_model, term, starts, gen, dl, odi_pools, end, pgd=pgd)
            if found is not None:
                return found
            if pgd and time.perf_counter() > end:
                break     # the attacks' share is spent (each further disjunct would still cost its starts)
            if dl.passed():
                raise TimeoutError("timed out while searching for counterexamples")
        return None

    # the starts of every box (center, FGSM vertex, ODI points of the joint objective of its disjuncts: often a
    # counterexample already), then PGD on each box's disjuncts jointly; PGD on each disjunct of a shared box in turn
    # (the first disjuncts could otherwise spend the attacks' share on an unreachable region) waits until the bounds
    # on whole disjuncts have refuted what they can, with what is left of the attacks' share (sri_resnet_b: 9
    # disjuncts per image, all refuted by CROWN on most `unsat` instances, after 2.3 s of PGD on the first one),
    # and does not run where activation-split BaB follows (it attacks each disjunct itself)
    shared = {id(t) for g in box_groups(open_terms) if len(g) > 1 for t in g}   # disjuncts of shared boxes
    if len(open_terms) > 1:
        found = attack([g if len(g) > 1 else g[0] for g in box_groups(open_terms)], False, until)
        if found is not None:
            return found
    found = attack([u for u in attack_units(open_terms) if isinstance(u, list) or id(u) not in shared],
                   True, until)
    if found is not None:
        return found
    share_left = max(until - time.perf_counter(), 0.0)

    def attack_shared(terms: list):
        """PGD on each still open disjunct of a shared box, with what the first attacks left of their share."""
        if share_left <= 0:
            return None
        return attack([t for t in terms if id(t) in shared], True, time.perf_counter() + share_left)
    # 3. bounds on whole terms, 4. branch and bound (input or activation splits)
    if sound:
        found = attack_shared(open_terms)
        if found is not None:
            return found
        return _sound_prove(bm, net32, onnx_model, prop, dl, methods, bab, max_domains, batch)
    # input splitting runs alpha-CROWN on the boxes close to refutation itself, the root box included (lsnc
    # quadrotor2d_output_0: 3.3 s of alpha-CROWN on whole disjuncts, none refuted, before an 11-box proof)
    input_follows = input_split_follows(bab, open_terms)
    bm.one_sided = input_follows       # the root bounds serve the input split only (BoundedModule.one_sided)
    # CROWN's root bounds stop at ROOT_CROWN_SHARE of the time left: the rest goes to attacks when they cannot finish
    crown_until = time.perf_counter() + ROOT_CROWN_SHARE * max(dl.left(), 0.0)
    for m in [m for m in methods if m not in quick and not (m == "alpha-CROWN" and input_follows)]:
        still = []
        # the disjuncts over one box are bounded together: their intermediate bounds are shared, and CROWN's and
        # alpha-CROWN's final passes carry the rows of all of them at once
        for group in box_groups(open_terms):
            if m == "alpha-CROWN":
                done = roots.refuted_all(group, time.perf_counter() + max(dl.left(), 0.0))
            elif m == "CROWN":
                try:
                    bm.deadline = crown_until
                    done = roots.crown_refuted_all(group)
                except TimeoutError:
                    if dl.passed():
                        raise
                    res = InstanceResult("timeout", time.perf_counter() - dl.t0,
                                         f"CROWN's intermediate bounds took over {ROOT_CROWN_SHARE:.0%} of the time "
                                         "left")
                    return keep_attacking(net32, onnx_model, open_terms, starts, gen, dl, res)
                finally:
                    bm.deadline = time.perf_counter() + max(dl.left(), 0.0)
            else:
                done = [bool(refuted(bm, t, torch.tensor(t.x_L)[None], torch.tensor(t.x_U)[None], m).all())
                        for t in group]
            still += [t for t, c in zip(group, done) if not c]
            if dl.passed():
                raise TimeoutError(f"timed out while bounding with {m}")
        open_terms, used = still, m
        if not open_terms:
            return InstanceResult("unsat", time.perf_counter() - dl.t0, method=m)
    kind = choose_bab(bm, free_dims(open_terms)) if bab is True else (bab or "none")
    if kind not in ("input", "activation", "none"):
        raise CertkitError(f"bab must be True, False, 'input', 'activation' or 'none', got {bab!r}")
    # activation-split BaB attacks each disjunct itself (its subdomains' bound minimisers, replayed, and PGD from
    # them): PGD on each open disjunct beforehand only delays it (sri_resnet_b: 0.6 s for each of 7-8 open
    # disjuncts, after all counterexamples of its `sat` instances were found by the first attack's starts)
    found = attack_shared(open_terms) if kind != "activation" else None
    if found is not None:
        return found
    if kind == "none":
        why = ("disabled" if bab is not True else
               f"has no input of at most {INPUT_SPLIT_MAX_DIM} free dimensions nor activation to split")
        res = InstanceResult("unknown", time.perf_counter() - dl.t0,
                             f"{len(open_terms)} disjunct(s) not refuted by {used}; branch and bound {why}")
        return res if bab is not True else keep_attacking(net32, onnx_model, open_terms, starts, gen, dl, res,
                                                          roots.milp_falsifier(net32, onnx_model, dl))
    total = 0
    # the unit of a search: for input split all open disjuncts over one box (their sub-boxes share the bounds),
    # for activation split one disjunct
    if kind == "input":
        searches = box_groups(open_terms)
    else:
        searches = open_terms
    for unit in searches:
        if kind == "input":
            attack, cost = leaf_attack(net32, onnx_model, unit, dl)
            status, n = input_split_bab(bm, net32, onnx_model, unit, dl, left(max_domains, total),
                                       batch or input_split_batch(bm), attack=attack, attack_cost=cost,
                                       root_bounds=roots.crown.get(unit[0].box_key()))
        else:
            status, n = activation_bab(bm, net32, onnx_model, unit, dl, left(max_domains, total),
                                       root_bounds=roots.get(unit, time.perf_counter() + dl.left()), fast=roots.fast,
                                       root_alphas=roots.alphas.get(id(unit)))
        total += n
        if status != "unsat":
            if isinstance(status, InstanceResult):
                status.domains = total
                status.seconds = time.perf_counter() - dl.t0
                return status
            res = InstanceResult(status, time.perf_counter() - dl.t0,
                                 f"branch and bound stopped after {total} domains ({status})", domains=total)
            if status != "unknown":
                return res
            return keep_attacking(net32, onnx_model, open_terms, starts, gen, dl, res,
                                  roots.milp_falsifier(net32, onnx_model, dl))
    how = "CROWN+input-split BaB" if kind == "input" else "beta-CROWN activation-split BaB"
    return InstanceResult("unsat", time.perf_counter() - dl.t0, method=how, domains=total)


def compares_two_outputs(term) -> bool:
    """Whether every row of ``term`` reads c (y_i - y_j) <= 0 with c > 0 (which a monotone, order-keeping map of
    the outputs such as softmax leaves true or false)."""
    for row, d in zip(term.C, term.d):
        nz = np.flatnonzero(row)
        if d != 0 or len(nz) != 2 or row[nz[0]] != -row[nz[1]]:
            return False
    return term.C.shape[0] > 0


def attack_problem(net32, onnx_model, term):
    """The float32 attack objective of one disjunct (:func:`objective` of its C, d) and its input box as (1, n)
    tensors lo, hi: (objective, lo, hi)."""
    C32, d32 = torch.tensor(term.C, dtype=torch.float32), torch.tensor(term.d, dtype=torch.float32)
    lo, hi = torch.tensor(term.x_L, dtype=torch.float32)[None], torch.tensor(term.x_U, dtype=torch.float32)[None]
    return objective(net32, C32, d32, onnx_model.sample_shape), lo, hi


def box_groups(terms: list) -> list[list]:
    """The disjuncts grouped by their input box (first-seen order): [[term, ...], ...]."""
    groups: dict = {}
    for term in terms:
        groups.setdefault(term.box_key(), []).append(term)
    return list(groups.values())


def group_objective(net32, terms: list, sample_shape):
    """x (N, n_in) -> min over the disjuncts ``terms`` (one box) of max_r (C_r y - d_r), in one forward pass: < 0
    where some disjunct's unsafe region is reached (for a classifier's disjuncts "class j beats the label", the
    untargeted margin loss)."""
    Cs = [torch.tensor(t.C, dtype=torch.float32) for t in terms]
    ds = [torch.tensor(t.d, dtype=torch.float32) for t in terms]

    def obj(x):
        y = net32(x.reshape((x.shape[0],) + tuple(sample_shape))).reshape(x.shape[0], -1)
        return torch.stack([term_value(y, C, d) for C, d in zip(Cs, ds)]).min(0).values
    return obj


def _check_group(net32, onnx_model, terms: list, x: torch.Tensor, deadline: float | None = None):
    """A point of x (N, n_in) float64 that validates as a counterexample of one of ``terms``, as a ``sat``
    InstanceResult, or None: disjunct by disjunct, its points within 1e-4 of its unsafe region in float32, in the
    order of their objective (:func:`candidate_checker`); no replay after the time.perf_counter() value
    ``deadline``."""
    if len(terms) == 1:
        return candidate_checker(net32, onnx_model, terms[0], "PGD", deadline=deadline)(x)
    with torch.no_grad():
        y = net32(x.float().reshape((x.shape[0],) + tuple(onnx_model.sample_shape))).reshape(x.shape[0], -1)
    for term in terms:
        C, d = torch.tensor(term.C, dtype=torch.float32), torch.tensor(term.d, dtype=torch.float32)
        close = term_value(y, C, d) <= 1e-4
        if bool(close.any()):
            found = candidate_checker(net32, onnx_model, term, "PGD", deadline=deadline)(x[close])
            if found is not None:
                return found
        if deadline is not None and time.perf_counter() > deadline:
            break
    return None


def attack_units(terms: list) -> list:
    """What PGD attacks, in order: per box with several disjuncts the list of them (attacked jointly, through the
    minimum of their objectives: on VNN-COMP's 48 x 48 and 64 x 64 traffic-sign networks, 42 disjuncts "class j
    beats the label" over one image box, the joint attack finds in 1-40 steps counterexamples that 100 steps on each
    disjunct in turn did not reach within 30 s), then every disjunct alone."""
    return [g for g in box_groups(terms) if len(g) > 1] + list(terms)


def falsify(net32, onnx_model, term, starts: int, gen: torch.Generator, dl, pools: dict | None = None,
            until: float | None = None, pgd: bool = True):
    """certkit's attack on one disjunct, or jointly on a list of disjuncts over one box (PGD on the minimum of
    their objectives, :func:`group_objective`): PGD (100 steps, ended early once stalled, ``PGD_PATIENCE``;
    ``starts`` batched starts of :func:`~certkit.verifiers.attack.falsifier_starts`, each step size of
    ``falsifier_step_sizes``) until ``dl`` (or the time.perf_counter() value ``until``, if earlier); returns a
    validated ``sat`` InstanceResult or None.
    ``pools``: box -> ODI pool shared by disjuncts over one box (None: a fresh pool); ``pgd=False``: only the
    starts are tried (the quick pass over every disjunct before any one of them takes the attack's time)."""
    shape = onnx_model.sample_shape
    terms = term if isinstance(term, list) else [term]
    lo = torch.tensor(terms[0].x_L, dtype=torch.float32)[None]
    hi = torch.tensor(terms[0].x_U, dtype=torch.float32)[None]
    obj = group_objective(net32, terms, shape)
    key = terms[0].box_key()
    pools = {} if pools is None else pools
    # output-diversifying a new pool takes at most a third of the time this attack may use (on VNN-COMP's 64 x 64
    # traffic-sign network it took 6 s of the first attack's 6 s, leaving none to PGD)
    now = time.perf_counter()
    limit = now + max(dl.left(), 0.0) if until is None else min(until, now + max(dl.left(), 0.0))
    x0, pools[key] = falsifier_starts(obj, lambda x: net32(x.reshape((-1,) + tuple(shape))), lo, hi,
                                      starts, gen, pools.get(key), deadline=now + max(limit - now, 0.0) / 3)
    if not pgd:
        found = _check_group(net32, onnx_model, terms, x0.double(), dl.at())
        if found is not None:
            found.seconds = time.perf_counter() - dl.t0
        return found
    lo, hi = lo.expand(starts, -1), hi.expand(starts, -1)
    tried = []                                          # (points, objectives) of each step size
    for step in falsifier_step_sizes(lo, hi):
        end = time.perf_counter() + max(dl.left(), 0.0)
        x, val = pgd_box(obj, lo, hi, steps=100, restarts=1, x_init=x0, step_size=step, generator=gen,
                         early_stop="any", deadline=end if until is None else min(end, until), patience=PGD_PATIENCE)
        found = _check_group(net32, onnx_model, terms, x.double(), dl.at())
        if found is not None:
            found.seconds, found.method = time.perf_counter() - dl.t0, "PGD"
            return found
        tried.append((x, val))
        if dl.passed() or (until is not None and time.perf_counter() > until):
            return None
    if not tried:
        return None
    # the best REFINE_POINTS points, with shrinking steps (counterexamples in regions far narrower than the box)
    xs, vals = torch.cat([t[0] for t in tried]), torch.cat([t[1] for t in tried])
    return _refine_and_check(net32, onnx_model, terms, obj, lo[:1], hi[:1], xs, vals, dl, until, "PGD")


def _refine_and_check(net32, onnx_model, terms: list, obj, lo: torch.Tensor, hi: torch.Tensor, x: torch.Tensor,
                      val: torch.Tensor, dl, until: float | None, method: str):
    """The REFINE_POINTS points of x (N, n) with the lowest objective ``val`` (N,) refined by
    :func:`~certkit.verifiers.attack.pgd_refine` in the box lo, hi (1, n) until ``dl`` (or ``until``, if earlier),
    then replayed exactly (:func:`_check_group`): a validated ``sat`` InstanceResult stamped with ``method``, or
    None."""
    idx = val.argsort()[:REFINE_POINTS]
    end = time.perf_counter() + max(dl.left(), 0.0)
    k = len(idx)
    x, _ = pgd_refine(obj, lo.expand(k, -1), hi.expand(k, -1), x[idx],
                      deadline=end if until is None else min(end, until))
    found = _check_group(net32, onnx_model, terms, x.double(), dl.at())
    if found is not None:
        found.seconds, found.method = time.perf_counter() - dl.t0, method
    return found


def leaf_attack(net32, onnx_model, terms: list, dl):
    """The attack input-split branch and bound runs from its bound minimisers (``attack`` of
    :func:`~certkit.verifiers.complete.input_split.input_split_bab`): the REFINE_POINTS of them with the lowest
    objective (:func:`group_objective` of the disjuncts ``terms``, over their one box) refined by PGD with
    shrinking steps in the whole box (:func:`~certkit.verifiers.attack.pgd_refine`), then replayed exactly; the
    attack takes points x (N, n) of the box and returns a validated ``sat`` InstanceResult or None. Returns (attack,
    its expected cost in seconds: one gradient of the objective at REFINE_POINTS points, timed, times the steps of
    pgd_refine)."""
    obj = group_objective(net32, terms, onnx_model.sample_shape)
    lo = torch.tensor(terms[0].x_L, dtype=torch.float32)[None]
    hi = torch.tensor(terms[0].x_U, dtype=torch.float32)[None]
    probe = (lo + hi).expand(REFINE_POINTS, -1) / 2
    t = time.perf_counter()
    pgd_box(obj, lo.expand(REFINE_POINTS, -1), hi.expand(REFINE_POINTS, -1), steps=1, restarts=1, x_init=probe,
            early_stop=False)
    cost = (time.perf_counter() - t) * REFINE_STAGE_STEPS * len(REFINE_STEPS)

    def attack(x: torch.Tensor):
        x = x.float()
        with torch.no_grad():
            val = obj(x)
        return _refine_and_check(net32, onnx_model, terms, obj, lo, hi, x, val, dl, None, "input-split BaB + PGD")
    return attack, cost


def keep_attacking(net32, onnx_model, terms: list, starts: int, gen: torch.Generator, dl, res: InstanceResult,
                   exact=None):
    """What is left of the time limit after the proof gave up (``res``, ``unknown``): first ``exact(term, until)`` on
    each open disjunct (the MILP search of small ReLU networks, :meth:`RootBounds.milp_falsifier`, with half of the
    time left shared among the disjuncts; None: none), then fresh rounds of :func:`falsify` (new random and
    output-diversified starts from the advancing ``gen``) on the open disjuncts (:func:`attack_units`: jointly per
    box, then one by one) until the deadline. Returns a
    validated ``sat`` or ``res``, stamped with the time spent, never early."""
    for k, term in enumerate(terms if exact is not None else []):
        # half of what is left goes to the exact search, shared by the open disjuncts; PGD rounds get the rest
        found = exact(term, time.perf_counter() + 0.5 * max(dl.left(), 0.0) / (len(terms) - k))
        if found is not None:
            found.seconds = time.perf_counter() - dl.t0
            return found
        if dl.left() <= 0.05:
            break
    rounds = 0
    while dl.left() > 0.05 and terms:
        threads.tick()
        for term in attack_units(terms):
            found = falsify(net32, onnx_model, term, starts, gen, dl)
            if found is not None:
                return found
            if dl.left() <= 0.05:
                break
        rounds += 1
    res.reason += f"; {rounds} more round(s) of attacks found no counterexample"
    res.seconds = time.perf_counter() - dl.t0
    return res


def _sound_prove(bm, net32, onnx_model, prop, dl, methods, bab, max_domains, batch) -> InstanceResult:
    """Steps 3-4 with outward-rounded bounds (verifiers/bounds/sound.py): each method on whole disjuncts, then
    input-split BaB whose boxes are refuted by sound CROWN margins only."""
    sb = SoundBounds(bm)
    shape = tuple(bm.graph.input_shape)
    open_terms, used = list(prop.terms), ""
    for m in methods:
        still = []
        for term in open_terms:
            if term.C.shape[0] == 0:
                still.append(term)
                continue
            lo, hi = torch.tensor(term.x_L).reshape((1,) + shape), torch.tensor(term.x_U).reshape((1,) + shape)
            margins = sb.row_margins(lo, hi, torch.tensor(term.C), torch.tensor(term.d), m,
                                     deadline=time.perf_counter() + max(dl.left(), 0.0))
            if not bool((margins > 0).any()):
                still.append(term)
            if dl.passed():
                raise TimeoutError(f"timed out while bounding with sound {m}")
        open_terms, used = still, m
        if not open_terms:
            return InstanceResult("unsat", time.perf_counter() - dl.t0, method=f"sound {m}")
    kind = choose_bab(bm, free_dims(open_terms)) if bab is True else (bab or "none")
    if kind != "input":
        why = (f"the sound mode splits inputs only (at most {INPUT_SPLIT_MAX_DIM} free input dimensions)"
               if kind == "activation"
               else "branch and bound disabled")
        return InstanceResult("unknown", time.perf_counter() - dl.t0,
                              f"{len(open_terms)} disjunct(s) not refuted by sound {used}; {why}")
    total = 0
    for unit in box_groups(open_terms):
        C = torch.tensor(np.concatenate([t.C for t in unit]))
        d = torch.tensor(np.concatenate([t.d for t in unit]))

        def sound_margins(lo, hi, C=C, d=d):
            return sb.row_margins(lo.reshape((-1,) + shape), hi.reshape((-1,) + shape), C, d, "CROWN")
        status, n = input_split_bab(bm, net32, onnx_model, unit, dl, left(max_domains, total),
                                       batch or input_split_batch(bm),
                                    alpha_iterations=0, sound=sound_margins)
        total += n
        if status != "unsat":
            if isinstance(status, InstanceResult):
                status.domains, status.seconds = total, time.perf_counter() - dl.t0
                return status
            return InstanceResult(status, time.perf_counter() - dl.t0,
                                  f"sound input-split branch and bound stopped after {total} boxes ({status})",
                                  domains=total)
    return InstanceResult("unsat", time.perf_counter() - dl.t0, method="sound CROWN+input-split BaB", domains=total)


class RootBounds:
    """Intermediate bounds of the whole input box of a disjunct, computed once per box and shared by every disjunct
    with that box (VNN-LIB robustness properties list one disjunct per wrong class over one box): CROWN, then
    alpha-CROWN on every activation input (:func:`optimize_intermediate`). alpha-CROWN on a disjunct's rows tries
    CROWN's intermediate bounds first (cheap), the optimised ones only if that does not refute it."""

    def __init__(self, bm):
        self.bm, self.cache, self.crown = bm, {}, {}
        self.alphas: dict = {}    # id(term) -> alpha-CROWN's best alphas of its rows over the optimised bounds
        self._fast = None

    @property
    def fast(self):
        """A float32 BoundedModule of the network (built on first use): alpha-CROWN's and beta-CROWN's iterations
        run on it; every bound they report is evaluated on the float64 ``bm`` (:func:`alpha_crown`)."""
        if self._fast is None:
            net = copy.deepcopy(self.bm.model).float().eval().requires_grad_(False)
            self._fast = BoundedModule(net, tuple(self.bm.graph.input_shape))
        return self._fast

    def _pert(self, term) -> Box:
        shape = (1,) + tuple(self.bm.graph.input_shape)
        return Box(torch.tensor(term.x_L).reshape(shape), torch.tensor(term.x_U).reshape(shape))

    def crown_bounds(self, term) -> list:
        """CROWN's intermediate bounds of the disjunct's box (computed once per box)."""
        key = term.box_key()
        if key not in self.crown:
            with torch.no_grad():
                bounds = self.bm.crown_intermediate(self._pert(term))
                self.crown[key] = [(lb.detach(), ub.detach()) for lb, ub in bounds]
        return self.crown[key]

    def _rows(self, terms: list):
        """The rows of ``terms`` (one box) stacked: CC (1, S, *output shape), d (S,), owner (S,) (each row's term)."""
        C = np.concatenate([t.C for t in terms])
        CC = torch.tensor(C).reshape((1, -1) + tuple(self.bm.graph.output_shape))
        d = torch.tensor(np.concatenate([t.d for t in terms]))
        owner = torch.cat([torch.full((t.C.shape[0],), k, dtype=torch.long) for k, t in enumerate(terms)])
        return CC, d, owner

    def _chunks(self, terms: list, share: int = 1) -> list[list]:
        """``terms`` cut into consecutive groups whose rows, times the largest node's size, fit in ``1 / share`` of
        the BoundedModule's memory budget (at least one disjunct per group): the coefficient matrices of a backward
        pass hold one row per specification row at every node (a 224 x 224 image network fits few rows at once)."""
        biggest = max(max(1, torch.Size(n.shape).numel()) for n in self.bm.graph.nodes)
        cap = max(1, self.bm.budget // (share * biggest))
        out: list[list] = [[]]
        rows = 0
        for t in terms:
            if out[-1] and rows + t.C.shape[0] > cap:
                out.append([])
                rows = 0
            out[-1].append(t)
            rows += t.C.shape[0]
        return out

    def crown_refuted(self, term) -> bool:
        """CROWN on the disjunct's rows over the box's shared intermediate bounds: some row has lb > d."""
        return self.crown_refuted_all([term])[0]

    def crown_refuted_all(self, terms: list) -> list[bool]:
        """:meth:`crown_refuted` of each disjunct of ``terms`` (one box), in one backward pass over all their rows (in
        groups that fit the memory budget, :meth:`_chunks`).

        Raises:
            CertkitError: NaN or inf bounds.
        """
        rows = [t for t in terms if t.C.shape[0] > 0]
        if not rows:
            return [False] * len(terms)
        bounds, pert = self.crown_bounds(rows[0]), self._pert(rows[0])
        closed: list[bool] = []
        for chunk in self._chunks(rows):
            CC, d, owner = self._rows(chunk)
            with torch.no_grad():
                A_in, bias = self.bm.propagate(self.bm.graph.output, CC, bounds, {})
                lb = (bias if A_in is None else bias + pert.lower(A_in))[0]
            if not bool(torch.isfinite(lb).all()):
                raise CertkitError("CROWN produced NaN or inf bounds (weights or inputs too large?)")
            closed += (per_term_max((lb - d)[None], owner, len(chunk))[0] > 0).tolist()
        done = iter(closed)
        return [bool(next(done)) if t.C.shape[0] > 0 else False for t in terms]

    def milp_falsifier(self, net32, onnx_model, dl):
        """(term, until) -> a validated ``sat`` InstanceResult or None: the MILP counterexample search
        (verifiers/complete/milp_attack.py) over the box's tightest bounds computed so far (alpha-CROWN's if
        computed, else CROWN's) until the time.perf_counter() value ``until``, its point replayed exactly, after a
        50-step PGD from it if the replay misses."""
        def search(term, until: float):
            bounds = self.tightest(term)
            x = milp_counterexample(self.bm.graph, bounds, term.x_L, term.x_U, term.C, term.d,
                                    min(until, time.perf_counter() + max(dl.left(), 0.0)))
            if x is None:
                return None
            check = candidate_checker(net32, onnx_model, term, "MILP")
            found = check(torch.tensor(x)[None])
            if found is None and dl.left() > 0.05:
                obj, lo, hi = attack_problem(net32, onnx_model, term)
                x_pgd, _ = pgd_box(obj, lo, hi, steps=50, restarts=1, early_stop=True,
                                   x_init=torch.tensor(x, dtype=torch.float32)[None],
                                   deadline=time.perf_counter() + max(dl.left(), 0.0))
                found = check(x_pgd.double())
            return found
        return search

    def get(self, term, deadline: float, iterations: int | None = None) -> list:
        """The box's intermediate bounds optimised by alpha-CROWN (:func:`optimize_intermediate`) with
        ``iterations`` per activation input (default: as many as computed so far, at least
        INTERMEDIATE_ITERATIONS), computed once per box; more iterations than computed continue from the bounds
        computed (a relaxation is at least as tight on tighter bounds). Stops at ``deadline``."""
        key = term.box_key()
        done, bounds = self.cache.get(key, (0, None))
        want = max(done, INTERMEDIATE_ITERATIONS) if iterations is None else iterations
        if done < want:
            bounds = optimize_intermediate(self.bm, self._pert(term), bounds or self.crown_bounds(term),
                                           iterations=want - done, deadline=deadline, fast=self.fast)
            self.cache[key] = (want, bounds)
        return bounds

    def tightest(self, term) -> list:
        """The box's tightest intermediate bounds computed so far (alpha-CROWN's if computed, else CROWN's)."""
        key = term.box_key()
        return self.cache[key][1] if key in self.cache else self.crown_bounds(term)

    def refuted(self, term, deadline: float) -> bool:
        """alpha-CROWN on the disjunct's rows with the optimised intermediate bounds: some row has lb > d."""
        return self.refuted_all([term], deadline)[0]

    def refuted_all(self, terms: list, deadline: float) -> list[bool]:
        """:meth:`refuted` of each disjunct of ``terms`` (one box): alpha-CROWN on all their rows at once (in groups
        that fit a quarter of the memory budget, :meth:`_chunks`), one set of alphas per row (each row's alphas take
        the steps they take in a run for its disjunct alone; the run stops when no row improves), in one backward
        pass per step instead of one per disjunct (ml4acopf's 118-bus properties list 236 disjuncts over one box),
        first over CROWN's intermediate bounds, then over the optimised ones for the disjuncts still open
        (INTERMEDIATE_ITERATIONS, then on networks with a sigmoid or tanh INTERMEDIATE_ITERATIONS_S_SHAPED, continued
        from those, for the disjuncts still open)."""
        done = [False] * len(terms)
        todo = [k for k, t in enumerate(terms) if t.C.shape[0] > 0]
        # over CROWN's intermediate bounds (one backward pass per step), then over optimised ones (0: CROWN's)
        stages = sorted({INTERMEDIATE_ITERATIONS, intermediate_iterations(self.bm.graph)})
        for iterations, after in zip([0] + stages, stages + [None]):
            if not todo:
                break
            key = terms[todo[0]]
            if iterations:
                if time.perf_counter() > deadline:
                    break
                if after is not None and self.cache.get(key.box_key(), (0,))[0] >= after:
                    continue                    # the next stage's bounds are there already
                now = time.perf_counter()
                bounds = self.get(key, min(deadline, now + INTERMEDIATE_SHARE * (deadline - now)), iterations)
            else:
                bounds = self.crown_bounds(key)
            closed: list[bool] = []
            pert = self._pert(key)
            for chunk in self._chunks([terms[k] for k in todo], share=4):
                CC, d, owner = self._rows(chunk)
                found: dict | None = {} if iterations else None
                with torch.enable_grad():
                    lb = alpha_crown(self.bm, pert, CC, bounds, deadline=deadline, fast=self.fast,
                                     best_alphas=found).detach()[0]
                closed += (per_term_max((lb - d)[None], owner, len(chunk))[0] > 0).tolist()
                for k, t in enumerate(chunk if found is not None else []):   # each disjunct's rows, for its BaB
                    self.alphas[id(t)] = {a: v[:, :, owner == k].detach() for a, v in (found or {}).items()}
            for k, c in zip(todo, closed):
                done[k] = bool(c)
            todo = [k for k in todo if not done[k]]
        return done


def intermediate_iterations(graph) -> int:
    """alpha-CROWN iterations per activation input for the root's optimised intermediate bounds of ``graph`` (a
    BoundGraph): INTERMEDIATE_ITERATIONS_S_SHAPED when it has a sigmoid or tanh, INTERMEDIATE_ITERATIONS otherwise."""
    s_shaped = any(isinstance(graph.nodes[a].op, SShaped) for a in graph.nonlinear())
    return INTERMEDIATE_ITERATIONS_S_SHAPED if s_shaped else INTERMEDIATE_ITERATIONS


def left(max_domains: int | None, used: int) -> int | None:
    """The domain budget left after ``used`` (None: no budget)."""
    return None if max_domains is None else max_domains - used


def free_dims(terms: list) -> int:
    """The most input dimensions any disjunct of ``terms`` leaves free (x_U > x_L); fixed inputs are constants that
    input splitting never splits."""
    return max((int(np.sum(t.x_U > t.x_L)) for t in terms), default=0)


def input_split_follows(bab: bool | str, terms: list) -> bool:
    """Whether branch and bound on ``terms`` will split inputs: forced (``bab="input"``) or chosen by
    :func:`choose_bab` (``bab=True``, at most ``INPUT_SPLIT_MAX_DIM`` free input dimensions)."""
    return bab == "input" or (bab is True and free_dims(terms) <= INPUT_SPLIT_MAX_DIM)


def input_split_batch(bm) -> int:
    """Boxes per input-split round for ``bm``'s network: 2^21 values over every node (:func:`neuron_count`), as
    a power of two between 2,048 and 16,384. On a small network the per-op overhead of a round dominates, so
    larger rounds bound more boxes per second (lsnc quadrotor2d_state, 157 values per sample, 8,192 instead of
    2,048: state_1 unsat in 14.6 s instead of 21.0 s with the same boxes within 0.1%). ACAS Xu (620 values) keeps
    2,048: its bounds cost the same per box in larger rounds, and with 4,096 the VNN-COMP 2021 instance 1_9 prop 7
    (sat) ran past 60 s (73,727 boxes) where with 2,048 the search reached its counterexample at 61,439."""
    fit = 2 ** 21 // max(1, neuron_count(bm))
    return min(16384, max(2048, 1 << (max(1, fit).bit_length() - 1)))


def choose_bab(bm, n_free: int) -> str:
    """``input`` split when the boxes have at most ``INPUT_SPLIT_MAX_DIM`` free input dimensions (``n_free``, see
    :func:`free_dims`; ACAS Xu: 5, nn4sys pensieve: 32 of 96; few input dimensions control everything, and boxes
    shrink fast), else ``activation`` split when the network has a branchable op (ReLU, max-pooling, max of two
    tensors: beta-CROWN; smooth activations, products, softmax: GenBaB), else ``none``."""
    if n_free <= INPUT_SPLIT_MAX_DIM:
        return "input"
    if any(bm.graph.nodes[a].op.branchable for a in bm.graph.nonlinear()):
        return "activation"
    return "none"


def activation_bab(bm, net32, onnx_model, term, dl, max_domains, batch: int | None = None, branching: str = "auto",
                   root_bounds: list | None = None, fast=None, root_alphas: dict | None = None):
    """Activation-split BaB (verifiers/complete/beta_crown.py) on one disjunct until the Deadline ``dl``: returns
    ("unsat" | "timeout" | "unknown" | InstanceResult(sat), subdomains bounded). ``batch`` subdomains are bounded per
    backward pass (default: as many as keep one pass near 2^22 neuron-rows, at most 256); ``fast``: a float32 copy of
    the network for the optimisation; ``root_alphas``: alpha-CROWN's alphas of the disjunct's rows over
    ``root_bounds`` to start the root from (:class:`ActivationBaB`)."""
    if term.C.shape[0] == 0:   # no output constraint: every input is a counterexample, attacks decide it
        return "unknown", 0
    search = ActivationBaB(bm, torch.tensor(term.x_L), torch.tensor(term.x_U), torch.tensor(term.C),
                           torch.tensor(term.d), branching=branching, root_bounds=root_bounds, fast=fast,
                           root_alphas=root_alphas)
    if batch is None:
        batch = int(max(4, min(256, 2 ** 22 // max(1, neuron_count(bm) * term.C.shape[0]))))
    C32, d32 = torch.tensor(term.C, dtype=torch.float32), torch.tensor(term.d, dtype=torch.float32)
    obj = objective(net32, C32, d32, onnx_model.sample_shape)
    return search.run(time.perf_counter() + dl.left(), max_domains, batch,
                      candidate_checker(net32, onnx_model, term, "beta-CROWN BaB"),
                      lambda x: obj(x.reshape(x.shape[0], -1)))


__all__ = ["Deadline", "check_conversion", "verify_instance", "verify_property"]
