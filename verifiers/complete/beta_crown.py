"""Branch and bound over activation splits with beta-CROWN bounds (complete verification of one VNN-LIB disjunct).

Problem: given a network f, an input box X and an unsafe region {y : C y <= d} (one disjunct of a VNN-LIB
property), decide whether some x in X has C f(x) <= d.
Return: ``unsat`` (no such x), a validated counterexample (``sat``), ``timeout`` or ``unknown``.
Property: ``unsat`` is returned only when every subdomain has max_r (lb_r - d_r) > 0 for a sound lower bound lb of
C f(x) over the subdomain, or (a fully split ReLU subdomain) its linear program's checked dual bound is positive
(leaf_lp.py); a counterexample is returned only after exact replay in onnxruntime.
Reference:
    beta-CROWN: Wang, Zhang, Xu, Lin, Jana, Hsieh, Kolter, NeurIPS 2021, "Beta-CROWN: Efficient Bound Propagation
        with Per-neuron Split Constraints for Neural Network Robustness Verification" (Sec. 3, Thm 3.1).
    GenBaB: Shi, Jin, Zhang, Hsieh (TACAS 2025 / arXiv 2024), "Neural network verification with branch-and-bound
        for general nonlinearities": split a Sigmoid/Tanh input interval at a point and relax each half.
    BaBSR: Bunel, Lu, Turkaslan, Torr, Kohli, Kumar, JMLR 2020 ("Branch and bound for piecewise linear neural
        network verification", Sec. 5.1); FSB: De Palma, Bunel, Desmaison, Dvijotham, Kohli, Torr, Kumar,
        "Improved branch and bound for neural network verification via Lagrangian decomposition" (2021).

A subdomain narrows the interval [lo, hi] of some inputs z of activation nodes (a ReLU split at 0 gives z >= 0 or
z <= 0; a Sigmoid/Tanh split at p gives z <= p or z >= p). Intermediate bounds are the root's CROWN bounds, narrowed
by the subdomain's intervals (sound on the subdomain, which is a subset of the root). Each narrowed bound is a
constraint c(x) <= 0 of the subdomain; beta-CROWN adds beta * c(z) (beta >= 0, optimised) to the objective in the
backward pass, which lower-bounds it on the subdomain, and optimises alpha (activation relaxations) and beta per
subdomain and per specification row by projected gradient ascent. Children inherit their parent's alpha and beta
(warm start). Subdomains are bounded ``batch`` at a time in one batched backward pass, lowest bound first (deepest
first when the open subdomains outgrow ``max_pending_bytes``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from certkit.common import threads
from certkit.verifiers.attack import pgd_box
from certkit.verifiers.bounds.alpha_crown import FAST_AGREEMENT, ProjectedAdam, projected_step
from certkit.verifiers.bounds.ops.activation import Activation
from certkit.verifiers.bounds.ops.base import sum_node
from certkit.verifiers.bounds.perturbation import Box
from certkit.verifiers.complete.leaf_lp import decide_leaf

BRANCHING = ("auto", "babsr", "fsb")


def babsr_score(A: torch.Tensor, l: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """BaBSR's split score of ReLU neurons (Bunel et al. JMLR 2020, Sec. 5.1, the intercept term): an unstable neuron
    whose output coefficient A < 0 takes the upper line with intercept -l u / (u - l), and splitting removes it,
    gaining about |A| (-l u / (u - l)); a small |A| min(u, -l) term ranks the neurons with A >= 0. A, l, u have one
    shape (the neurons of an activation input, per subdomain); returns scores of that shape (>= 0)."""
    width = (u - l).clamp(min=1e-12)
    return torch.relu(-A) * (-l.clamp(max=0) * u.clamp(min=0) / width) \
        + 1e-3 * A.abs() * torch.minimum(u.clamp(min=0), -l.clamp(max=0))


def genbab_score(op: Activation, A: torch.Tensor, l: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """A split score for neurons of a general activation ``op``, in the spirit of GenBaB (Shi et al. 2024, "Neural
    network verification with branch-and-bound for general nonlinearities", which scores a split by how much it
    tightens the bound): |A| times the largest gap between the upper and the lower relaxation line on [l, u] (at an
    endpoint, the lines being straight). Shapes as :func:`babsr_score`."""
    aL, cL, aU, cU = op.relax(l, u)
    gap = torch.maximum((aU - aL) * l + cU - cL, (aU - aL) * u + cU - cL)
    return A.abs() * gap.clamp(min=0)


@dataclass
class Precision:
    """The search's bound passes in one floating-point precision: the BoundedModule ``bm`` of the network in that
    dtype, the box x_L, x_U (1, *input_shape, raw input units), the rows C (S, K) and thresholds d (S,), and the
    root intervals (lb, ub) of every node, each (1, *node shape), all in that dtype."""

    bm: Any
    x_L: torch.Tensor
    x_U: torch.Tensor
    C: torch.Tensor
    d: torch.Tensor
    root_bounds: list

    @property
    def dtype(self) -> torch.dtype:
        return self.C.dtype

    def cast(self, bm, dtype: torch.dtype) -> Precision:
        """The same search data in ``dtype``, for ``bm`` (a copy of the network in that dtype)."""
        return Precision(bm, self.x_L.to(dtype), self.x_U.to(dtype), self.C.to(dtype), self.d.to(dtype),
                         [(lb.to(dtype), ub.to(dtype)) for lb, ub in self.root_bounds])


@dataclass
class Domains:
    """A batch of D subdomains of one disjunct.

    Attributes:
        lo, hi: node j (the input of an activation node) -> (D, *shape) interval of z_j on the subdomain.
        alphas: activation node -> (n_alpha, D, S, *shape) relaxation parameters (warm start for the children).
        betas: node j -> (2, D, S, *shape) multipliers (>= 0) of the constraints z_j >= lo and z_j <= hi.
        score: (D,) max_r (lb_r - d_r) of the best bound so far: > 0 only for a float64 bound (verified); where
            <= 0, possibly the float32 estimate that orders the search.
        depth: (D,) number of splits.
    """

    lo: dict
    hi: dict
    alphas: dict
    betas: dict
    score: torch.Tensor
    depth: torch.Tensor

    def __len__(self) -> int:
        return int(self.score.shape[0])

    def nbytes_each(self) -> int:
        """Bytes one subdomain holds (its intervals, alphas and betas)."""
        ts = list(self.lo.values()) + list(self.hi.values()) + list(self.alphas.values()) + list(self.betas.values())
        return max(1, sum(t.numel() * t.element_size() for t in ts) // max(1, len(self)))

    def take(self, idx: torch.Tensor) -> Domains:
        """The subdomains at ``idx`` (a (k,) index tensor)."""
        return Domains({j: t[idx] for j, t in self.lo.items()}, {j: t[idx] for j, t in self.hi.items()},
                       {a: t[:, idx] for a, t in self.alphas.items()}, {j: t[:, idx] for j, t in self.betas.items()},
                       self.score[idx], self.depth[idx])

    @staticmethod
    def cat(parts: list[Domains]) -> Domains:
        """Concatenate batches of subdomains (same nodes)."""
        if len(parts) == 1:
            return parts[0]
        p0 = parts[0]
        return Domains({j: torch.cat([p.lo[j] for p in parts]) for j in p0.lo},
                       {j: torch.cat([p.hi[j] for p in parts]) for j in p0.hi},
                       {a: torch.cat([p.alphas[a] for p in parts], 1) for a in p0.alphas},
                       {j: torch.cat([p.betas[j] for p in parts], 1) for j in p0.betas},
                       torch.cat([p.score for p in parts]), torch.cat([p.depth for p in parts]))


class _Pending:
    """The open subdomains waiting to be bounded, kept as the batches of children they came in. Taking the next
    batch copies only the subdomains taken: the others are marked taken and a part is compacted once under half of
    it is left (copying every open subdomain at every round cost sri_resnet_b's branch and bound 8%)."""

    def __init__(self):
        self.parts: list[Domains] = []
        self.left: list[torch.Tensor] = []        # per part, (n,) bool: not yet taken

    def __len__(self) -> int:
        return sum(int(m.sum()) for m in self.left)

    def add(self, dom: Domains) -> None:
        self.parts.append(dom)
        self.left.append(torch.ones(len(dom), dtype=torch.bool))

    def nbytes(self) -> int:
        """Bytes the open subdomains hold."""
        return sum(int(m.sum()) * p.nbytes_each() for p, m in zip(self.parts, self.left))

    def pop(self, k: int, deepest: bool) -> Domains:
        """The k open subdomains with the lowest score (``deepest``: the largest depth first), in that order."""
        inf = torch.tensor(torch.inf, dtype=torch.float64)
        keys = torch.cat([torch.where(m, -p.depth.double() if deepest else p.score, inf)
                          for p, m in zip(self.parts, self.left)])
        order = torch.argsort(keys, stable=True)[:min(k, len(self))]
        starts = torch.tensor([0] + [len(p) for p in self.parts]).cumsum(0)
        part_of = torch.bucketize(order, starts[1:], right=True)
        taken, where, n = [], torch.empty_like(order), 0
        for i in torch.unique(part_of).tolist():
            sel = part_of == i
            rows = order[sel] - starts[i]
            where[sel] = torch.arange(n, n + len(rows))
            n += len(rows)
            taken.append(self.parts[i].take(rows))
            self.left[i][rows] = False
        out = taken[0] if len(taken) == 1 else Domains.cat(taken).take(where)   # in the order of ``order``
        parts, left = [], []
        for p, m in zip(self.parts, self.left):
            alive = int(m.sum())
            if 2 * alive < len(p) and alive:      # compact: copy what is left of a mostly taken part
                p, m = p.take(torch.nonzero(m).flatten()), torch.ones(alive, dtype=torch.bool)
            if alive:
                parts.append(p)
                left.append(m)
        self.parts, self.left = parts, left
        return out


class _Best:
    """Each subdomain's best score so far (D,) and the alphas and betas that gave it (float32 optimisation keeps
    them: its score must be re-computed in float64 from them). Starts at CROWN's alphas (betas 0) and ``crown``."""

    def __init__(self, dom: Domains, crown: torch.Tensor, crown_alphas: dict, split: set | None = None):
        self.score = crown.clone()
        self.alphas = {a: crown_alphas[a].to(t.dtype).clone() for a, t in dom.alphas.items()}
        self.betas = {j: torch.zeros_like(t) for j, t in dom.betas.items()}
        self.split = set(dom.betas) if split is None else split   # the betas that can be nonzero (the others stay 0)

    def update(self, dom: Domains, s: torch.Tensor) -> None:
        """Keep ``dom``'s current parameters where its score ``s`` (D,) beats the best."""
        better = s > self.score
        if not bool(better.any()):
            return
        self.score = torch.where(better, s, self.score)
        betas = {j: t for j, t in dom.betas.items() if j in self.split}
        for store, cur in ((self.alphas, dom.alphas), (self.betas, betas)):
            for k, t in cur.items():
                m = better.view((1, -1) + (1,) * (t.dim() - 2))
                store[k] = torch.where(m, t.detach(), store[k])

    def take(self, dom: Domains, idx: torch.Tensor) -> Domains:
        """The subdomains ``idx`` (k,) of ``dom`` with their best parameters."""
        sub = dom.take(idx)
        sub.alphas = {a: t[:, idx] for a, t in self.alphas.items()}
        sub.betas = {j: t[:, idx] for j, t in self.betas.items()}
        return sub


class ActivationBaB:
    """Activation-split branch and bound with beta-CROWN for one disjunct (C y <= d over the box [x_L, x_U]).

    Args:
        bm: a float64 :class:`BoundedModule` of the network.
        x_L, x_U: the input box, each (*input_shape) (raw input units).
        C: (S, K) rows of the unsafe region, d: (S,); the disjunct is refuted on a subdomain when some row has
            lb(C_r f(x)) > d_r there.
        branching: ``babsr`` (BaBSR-style intercept score), ``fsb`` (filtered smart branching: bound both children
            of the ``topk`` best-scored neurons of every subdomain and keep the split whose worse child is best) or
            ``auto``: BaBSR when every split variable is piecewise linear (ReLU, max-pooling, max / min), FSB
            otherwise (its children's bounds decide between scores that are not comparable, :meth:`_candidates`).
            On VNN-COMP sri_resnet_b (ReLU) BaBSR closed the hard instances in 0.6-0.9x FSB's time with 0.6-0.95x its
            subdomains.
        iterations: alpha/beta optimisation steps per batch of subdomains (the root gets ``root_iterations``).
            Children start from their parent's alphas and betas, so the optimisation goes on down the tree: 3 steps
            per batch bound more subdomains per second and closed VNN-COMP sri_resnet_b's hard instances sooner
            than 10 (idx 865, 4909: 34, 33 s -> 23, 27 s; 20 steps' gain per batch was not worth its cost).
        lr_alpha, lr_beta: Adam step sizes of alpha and beta.
        root_bounds: intervals (1, *shape) of every node on the whole box (default: CROWN's; the strategy passes
            alpha-CROWN-optimised ones, alpha_crown.optimize_intermediate), kept for every subdomain.
        max_pending_bytes: when the open subdomains hold more than this, the deepest are bounded first (depth-first
            search keeps memory bounded) instead of the lowest-bounded.
        fast: a float32 BoundedModule of the network (``bm`` is float64): alpha, beta and the branching scores are
            optimised on it (float64 convolutions cost 4-15x float32 ones on CPUs) and a subdomain counts as refuted
            only when ONE float64 pass with its best parameters refutes it. Unused when the root's float32 and
            float64 CROWN bounds differ by more than ``FAST_AGREEMENT`` of their magnitude.
        root_alphas: activation node -> alphas (n_alpha, 1, S, *shape) the root starts from instead of CROWN's
            (alpha-CROWN's on ``root_bounds``; any alpha in [0, 1] is sound): the root then gets ``iterations``
            steps, not ``root_iterations`` (VNN-COMP sri_resnet_b: 0.4 s saved for each open disjunct).

    Raises:
        CertkitError: the box is not finite and ordered (x_L <= x_U); (from the graph) the network cannot be bounded.
    """

    def __init__(self, bm, x_L: torch.Tensor, x_U: torch.Tensor, C: torch.Tensor, d: torch.Tensor,
                 branching: str = "auto", topk: int = 3, iterations: int = 3, root_iterations: int = 50,
                 lr_alpha: float = 0.1, lr_beta: float = 0.05, root_bounds: list | None = None,
                 max_pending_bytes: int = 2 ** 31, fast=None, root_alphas: dict | None = None):
        if branching not in BRANCHING:
            raise ValueError(f"branching must be one of {BRANCHING}, got {branching!r}")
        self.bm, self.g = bm, bm.graph
        dt = torch.float64
        shape = tuple(self.g.input_shape)
        self.x_L, self.x_U = x_L.to(dt).reshape((1,) + shape), x_U.to(dt).reshape((1,) + shape)
        Box(self.x_L, self.x_U)  # checked once here; the batches of _pert repeat it unchecked
        self.C, self.d = C.to(dt), d.to(dt)
        self.branching, self.topk = branching, topk
        self.iterations, self.root_iterations = iterations, root_iterations
        self.lr_alpha, self.lr_beta = lr_alpha, lr_beta
        self.max_pending_bytes = max_pending_bytes
        self.visited = 0          # subdomains bounded by the last run
        # branchable node a (activations, max-pooling, max / min of two tensors, products, softmax) -> its first input
        # node; ``splits`` lists (a, k, j): input k of node a, node j, is a split variable (for max / min: the
        # difference of its operands; products: both operands). Node 0 (the input) is split by input BaB.
        branchable = [a for a in self.g.nonlinear() if self.g.nodes[a].op.branchable]
        self.splits = [(a, k, self.g.nodes[a].inputs[k]) for a in branchable
                       for k in self.g.nodes[a].op.split_inputs if self.g.nodes[a].inputs[k] != 0]
        self.acts = {a: self.g.nodes[a].inputs[0] for a in dict.fromkeys(a for a, _, _ in self.splits)}
        self.variables = sorted({j for _, _, j in self.splits})
        # (N,) over the concatenated split variables: whether each belongs to a piecewise-linear op
        self._pwl = torch.repeat_interleave(
            torch.tensor([self.g.nodes[a].op.piecewise_linear for a, _, _ in self.splits], dtype=torch.bool),
            torch.tensor([torch.Size(self.g.nodes[j].shape).numel() for _, _, j in self.splits], dtype=torch.long))
        if root_bounds is None:
            with torch.no_grad():
                root_bounds = bm.crown_intermediate(Box(self.x_L, self.x_U, check=False))
        self.root_bounds = [(lb.detach(), ub.detach()) for lb, ub in root_bounds]
        self.exact = Precision(bm, self.x_L, self.x_U, self.C, self.d, self.root_bounds)
        # the precision alpha and beta are optimised in (float32 with ``fast``, see :meth:`_fast_agrees`)
        self.work = self.exact if fast is None else self.exact.cast(fast, torch.float32)
        crown = self._crown_alphas(self.root_bounds)
        warm = {a: t.detach() for a, t in (root_alphas or {}).items() if a in crown and t.shape == crown[a].shape}
        self.root_alphas = {a: warm.get(a, t) for a, t in crown.items()}   # the root's starting alphas
        if warm:   # warm start: the root continues alpha-CROWN's optimisation for as long as a batch
            self.root_iterations = min(root_iterations, iterations)

    # ------------------------------------------------------------------ bounds of a batch
    def _pert(self, D: int, run: Precision | None = None) -> Box:
        run = run or self.exact
        shape = tuple(self.g.input_shape)
        return Box(run.x_L.expand((D,) + shape), run.x_U.expand((D,) + shape), check=False)

    def _bounds(self, dom: Domains, run: Precision | None = None) -> list:
        run = run or self.exact
        D = len(dom)
        out = []
        for i, (lb, ub) in enumerate(run.root_bounds):
            if i in dom.lo:
                out.append((dom.lo[i].to(run.dtype), dom.hi[i].to(run.dtype)))
            else:
                out.append((lb.expand((D,) + lb.shape[1:]), ub.expand((D,) + ub.shape[1:])))
        return out

    def _masks(self, dom: Domains, run: Precision | None = None) -> dict:
        """node j -> (m_lo, m_hi, lo, hi), each (D, 1, *shape) in ``run``'s dtype: where the subdomain narrows the
        root's lower / upper bound, and the subdomain's interval (converted once per batch, not at every step)."""
        dt = (run or self.exact).dtype
        out = {}
        for j in dom.betas:
            r_lo, r_hi = self.root_bounds[j]
            out[j] = ((dom.lo[j] > r_lo).to(dt).unsqueeze(1), (dom.hi[j] < r_hi).to(dt).unsqueeze(1),
                      dom.lo[j].to(dt).unsqueeze(1), dom.hi[j].to(dt).unsqueeze(1))
        return out

    @staticmethod
    def _split_only(masks: dict) -> dict:
        """The entries of :meth:`_masks` for the split variables some subdomain of the batch is split on: elsewhere
        every beta is 0 and stays 0 (no split, no gradient), so their beta terms are left out of the optimisation
        (sri_resnet_b: 3 of 8 nodes in its batches of 125; branch and bound 1.25x as fast)."""
        return {j: m for j, m in masks.items() if bool(m[0].any()) or bool(m[1].any())}

    def _extra(self, dom: Domains, masks: dict, run: Precision | None = None) -> dict:
        """beta-CROWN terms: -beta_lo (z - lo) - beta_hi (hi - z) <= 0 on the subdomain, for narrowed bounds."""
        dt = (run or self.exact).dtype
        extra = {}
        for j, (m_lo, m_hi, lo, hi) in masks.items():
            b_lo, b_hi = dom.betas[j][0].to(dt) * m_lo, dom.betas[j][1].to(dt) * m_hi
            extra[j] = (b_hi - b_lo, sum_node(b_lo * lo - b_hi * hi))
        return extra

    def _in_bounds(self, a: int, bounds: list) -> list:
        """The intervals of every input of node ``a`` (the split variable first)."""
        return [bounds[i] for i in self.g.nodes[a].inputs]

    def _setups(self, bounds: list) -> dict:
        return {a: self.g.nodes[a].op.relaxation_setup(self._in_bounds(a, bounds)) for a in self.acts}

    def _crown_alphas(self, bounds: list) -> dict:
        """activation node -> CROWN's alphas for ``bounds``, one set per spec row (n_alpha, D, S, *shape) (a view)."""
        S = self.C.shape[0]
        out = {}
        for a in self.acts:
            if self.g.nodes[a].op.n_alpha:
                init = self.g.nodes[a].op.alpha_init(self._in_bounds(a, bounds))
                out[a] = init.unsqueeze(2).expand(-1, -1, S, *[-1] * (init.dim() - 2))
        return out

    def _bound(self, D: int, bounds: list, alphas: dict, setups: dict, extra: dict | None = None,
               record: dict | None = None, run: Precision | None = None):
        """Lower bounds (D, S) of C f(x) and the input coefficients A_in (D, S, *input), in ``run``'s precision
        (default float64)."""
        run = run or self.exact
        CC = run.C.unsqueeze(0).expand(D, -1, -1).reshape((D, -1) + tuple(self.g.output_shape))
        alphas = {a: t.to(run.dtype) for a, t in alphas.items()}
        A_in, bias = run.bm.propagate(self.g.output, CC, bounds, {}, alphas, setups, extra, record)
        return bias + self._pert(D, run).lower(A_in), A_in

    def _lower(self, dom: Domains, record: dict | None = None, setups: dict | None = None,
               bounds: list | None = None, masks: dict | None = None, run: Precision | None = None):
        """Lower bounds (D, S) of C f(x) on each subdomain with its alphas and betas; also the input coefficients
        A_in (D, S, *input) (the minimiser of the linear bound is a counterexample candidate). ``setups``,
        ``bounds`` and ``masks`` depend on the intervals only: callers that keep them across steps pass them (in
        ``run``'s precision, default float64)."""
        bounds = self._bounds(dom, run) if bounds is None else bounds
        setups = self._setups(bounds) if setups is None else setups
        masks = self._masks(dom, run) if masks is None else masks
        return self._bound(len(dom), bounds, dom.alphas, setups, self._extra(dom, masks, run), record, run)

    def _crown(self, dom: Domains, bounds: list, setups: dict, run: Precision | None = None) -> torch.Tensor:
        """CROWN's lower bounds (D, S) on each subdomain: the CROWN relaxation of its intervals, no beta (the
        warm-started alphas can start below it)."""
        return self._bound(len(dom), bounds, self._crown_alphas(bounds), setups, run=run)[0]

    def _score(self, lb: torch.Tensor) -> torch.Tensor:
        """max_r (lb_r - d_r) per subdomain; NaN (never seen, but never a proof) counts as -inf."""
        s = (lb - self.d.to(lb.dtype)).max(1).values
        return torch.where(torch.isnan(s), torch.full_like(s, -torch.inf), s)

    def _fast_agrees(self) -> bool:
        """Whether float32 CROWN at the root is within ``FAST_AGREEMENT`` of float64 CROWN's magnitude (1 + max |lb|)
        and finite: then float32 bounds order the search and float32 gradients steer alpha and beta."""
        if self.work is self.exact:
            return False
        root = self.root()
        with torch.no_grad():
            b64, b32 = self._bounds(root), self._bounds(root, self.work)
            ref = self._crown(root, b64, self._setups(b64))
            got = self._crown(root, b32, self._setups(b32), self.work).double()
        if not (bool(torch.isfinite(ref).all()) and bool(torch.isfinite(got).all())):
            return False
        return float((got - ref).abs().max()) <= FAST_AGREEMENT * (1 + float(ref.abs().max()))

    def optimize(self, dom: Domains, iterations: int, deadline: float | None = None):
        """Optimise the alphas and betas of ``dom`` (in place) and raise ``dom.score`` to the best bound found.

        Every iterate is a sound bound (alpha in [0, 1], beta >= 0), so the best over iterates is kept. In float32
        (``fast``) the parameters of each subdomain's best iterate are kept aside, and a subdomain whose float32
        score is > 0 gets ONE float64 pass with them: its score is that pass's (a score > 0 is always a float64
        bound).
        Returns (A at every activation node's output for the best-scoring row (D, *shape), primal candidates x
        (D, *input)).
        """
        run = self.work
        fast = run is not self.exact
        bounds, masks = self._bounds(dom, run), self._split_only(self._masks(dom, run))
        with torch.no_grad():
            setups = self._setups(bounds)
            crown_alphas = self._crown_alphas(bounds)
            crown = self._score(self._bound(len(dom), bounds, crown_alphas, setups, run=run)[0])
        score = torch.maximum(dom.score, crown.to(dom.score.dtype))
        best = _Best(dom, crown, crown_alphas, set(masks)) if fast else None
        params = [t.requires_grad_(True) for t in dom.alphas.values()]
        betas = [dom.betas[j].requires_grad_(True) for j in masks]
        opt = ProjectedAdam([(params, self.lr_alpha), (betas, self.lr_beta)])
        for _ in range(iterations):
            if deadline is not None and time.perf_counter() > deadline:
                break
            with torch.enable_grad():
                lb, _ = self._lower(dom, setups=setups, bounds=bounds, masks=masks, run=run)
                s = self._score(lb.detach())
                if best is not None:
                    best.update(dom, s)
                score = torch.maximum(score, s.to(score.dtype))
                open_ = score <= 0
                if not bool(open_.any()) or not opt.params:   # nothing to optimise: no alpha, no split yet
                    break
                projected_step(opt, -(lb * open_.to(lb.dtype)[:, None]).sum(), params, betas)
        for t in params + betas:
            t.requires_grad_(False)
        record = {a: None for a in self.acts}
        with torch.no_grad():
            lb, A_in = self._lower(dom, record, setups, bounds, masks, run)
            s = self._score(lb)
            score = torch.maximum(score, s.to(score.dtype))
            if best is not None:
                best.update(dom, s)
                score = self._confirm(dom, score, best)
            dom.score = score
            row = (lb - run.d).argmax(1)                                    # the row closest to refuting
            D = len(dom)
            ar = torch.arange(D)
            coeffs = {a: (A[ar, row] if A is not None else None) for a, A in record.items()}
            A_row = A_in[ar, row]                                           # (D, *input)
            x = torch.where(A_row >= 0, self.x_L.expand_as(A_row), self.x_U.expand_as(A_row))
        return coeffs, x

    def _confirm(self, dom: Domains, score: torch.Tensor, best: _Best) -> torch.Tensor:
        """``score`` (D,) with every entry > 0 (a float32 estimate) replaced by the float64 bound of the subdomain's
        best parameters (:meth:`_lower` in float64): what is then > 0 is verified. The subdomains keep their last
        parameters as the children's warm start (as in float64: the best iterate can be CROWN's, without betas)."""
        idx = torch.nonzero(score > 0).flatten()
        if idx.numel() == 0:
            return score
        exact = self._score(self._lower(best.take(dom, idx))[0])
        out = score.clone()
        out[idx] = exact
        return out

    def _settle(self, leaves: Domains, check_candidates, deadline: float):
        """Fully split subdomains that their linear program did not decide (:func:`decide_leaf` handles ReLU-like
        activations only), all in one batch: ``root_iterations`` more alpha/beta steps (the batches' few steps can
        leave betas far from their optimum, which for an exact relaxation is the LP's dual). Returns (a
        counterexample result or None, how many are still open)."""
        _, x = self.optimize(leaves, self.root_iterations, deadline)
        still = leaves.score <= 0
        return check_candidates(x[still]), int(still.sum())

    # ------------------------------------------------------------------ branching
    def _neuron_scores(self, dom: Domains, coeffs: dict) -> torch.Tensor:
        """(D, N) split scores of every neuron of every split variable (-inf where not splittable):
        :func:`babsr_score` for piecewise-linear activations, :func:`genbab_score` for the other activations, the
        op's own ``branch_scores`` for the rest (max-pooling, max / min of two tensors, products, softmax)."""
        out = []
        bounds = None
        for a, k, j in self.splits:
            op = self.g.nodes[a].op
            l, u = dom.lo[j], dom.hi[j]
            A = coeffs.get(a)
            A = None if A is None else A.to(l.dtype)        # float32 coefficients of a float32 search
            if not isinstance(op, Activation):
                A = torch.zeros((len(dom),) + tuple(self.g.nodes[a].shape), dtype=l.dtype) if A is None else A
                bounds = self._bounds(dom) if bounds is None else bounds
                out.append(op.branch_scores(A, l, u, in_bounds=self._in_bounds(a, bounds), k=k).flatten(1))
                continue
            A = torch.zeros_like(l) if A is None else A
            ok = op.splittable(l, u)
            s = babsr_score(A, l, u) if op.piecewise_linear else genbab_score(op, A, l, u)
            s = torch.where(ok, s + 1e-12, torch.full_like(s, -torch.inf))
            out.append(s.flatten(1))
        return torch.cat(out, 1)

    def _locate(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat neuron indices (k,) -> (position of the split variable in ``self.splits``, local index), each (k,),
        over the concatenated split variables."""
        sizes = [torch.Size(self.g.nodes[j].shape).numel() for _, _, j in self.splits]
        starts = torch.tensor([0] + sizes).cumsum(0)
        node_of = torch.bucketize(flat, starts[1:], right=True)
        return node_of, flat - starts[node_of]

    def _children(self, dom: Domains, flat: torch.Tensor) -> Domains:
        """Both children of each subdomain split at its neuron ``flat`` (D,): left keeps z <= p, right z >= p."""
        D = len(dom)
        node_of, local = self._locate(flat)
        # one copy of everything: rows :D are the left children, D: the right ones
        lo = {j: t.repeat((2,) + (1,) * (t.dim() - 1)) for j, t in dom.lo.items()}
        hi = {j: t.repeat((2,) + (1,) * (t.dim() - 1)) for j, t in dom.hi.items()}
        ar = torch.arange(D)
        for k, (a, _, j) in enumerate(self.splits):
            sel = node_of == k
            if not bool(sel.any()):
                continue
            rows, idx = ar[sel], local[sel]
            op = self.g.nodes[a].op
            if isinstance(op, Activation):       # elementwise: the split point needs the neuron's interval only
                p = op.split_point(dom.lo[j].flatten(1)[rows, idx], dom.hi[j].flatten(1)[rows, idx])
            else:                                # max-pooling (the point depends on the windows), the others
                p = op.split_points(dom.lo[j][rows], dom.hi[j][rows]).flatten(1)[torch.arange(len(rows)), idx]
            hi[j].view(2 * D, -1)[rows, idx] = p
            lo[j].view(2 * D, -1)[rows + D, idx] = p
        def twice(t):                            # (n, D, ...) -> (n, 2D, ...)
            return t.repeat((1, 2) + (1,) * (t.dim() - 2))
        return Domains(lo, hi, {a: twice(t) for a, t in dom.alphas.items()},
                       {j: twice(t) for j, t in dom.betas.items()}, dom.score.repeat(2), dom.depth.repeat(2) + 1)

    def _has_split(self, dom: Domains) -> torch.Tensor:
        """(D,) bool: whether each subdomain has a neuron left to split."""
        out = torch.zeros(len(dom), dtype=torch.bool)
        for a, _, j in self.splits:
            out |= self.g.nodes[a].op.splittable(dom.lo[j], dom.hi[j]).flatten(1).any(1)
        return out

    def _candidates(self, scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The k split candidates (scores, flat indices), each (D, k), that filtered smart branching bounds: the
        top k scores, or, when piecewise-linear split variables (ReLU, max-pooling, max) and others (GenBaB's) are
        both present, the top k - 1 piecewise-linear ones and the top other one (their scores are not comparable;
        the children's bounds decide between them)."""
        pwl = self._pwl
        if k < 2 or bool(pwl.all()) or not bool(pwl.any()):
            return scores.topk(k, 1)
        ninf = torch.full_like(scores, -torch.inf)
        s1, i1 = torch.where(pwl, scores, ninf).topk(min(k - 1, int(pwl.sum())), 1)
        s2, i2 = torch.where(pwl, ninf, scores).topk(1, 1)
        return torch.cat([s1, s2], 1), torch.cat([i1, i2], 1)

    def branch(self, dom: Domains, coeffs: dict) -> Domains | None:
        """Children (2D subdomains: all left children, then all right) or None when some subdomain has nothing
        left to split (its bound cannot improve by branching)."""
        scores = self._neuron_scores(dom, coeffs)
        if not bool(torch.isfinite(scores.max(1).values).all()):
            return None
        fsb = self.branching == "fsb" or (self.branching == "auto" and not bool(self._pwl.all()))
        if not fsb or self.topk <= 1:
            return self._children(dom, scores.argmax(1))
        D = len(dom)
        k = min(self.topk, scores.shape[1])
        top_s, top_i = self._candidates(scores, k)                          # (D, k)
        k = top_i.shape[1]
        cands = Domains.cat([dom] * k)
        flat = top_i.T.reshape(-1)                                          # candidate c of domain i at c*D + i
        kids = self._children(cands, flat)
        with torch.no_grad():
            kids.score = torch.full_like(kids.score, -torch.inf)
            lb, _ = self._lower(kids, run=self.work)
        s = self._score(lb).view(2, k, D).min(0).values                     # worse child per candidate
        s = torch.where(torch.isfinite(top_s.T), s, torch.full_like(s, -torch.inf))
        best = s.argmax(0)                                                  # (D,)
        return self._children(dom, top_i[torch.arange(D), best])

    # ------------------------------------------------------------------ the search
    def root(self) -> Domains:
        """The root subdomain (alpha at CROWN's relaxation, or the ``root_alphas`` given, beta = 0, both in the
        optimisation's precision), with score -inf (not yet bounded)."""
        S = self.C.shape[0]
        bounds = self.root_bounds
        dt = self.work.dtype
        alphas = {a: t.to(dt).clone() for a, t in self.root_alphas.items()}
        lo = {j: bounds[j][0].clone() for j in self.variables}
        hi = {j: bounds[j][1].clone() for j in self.variables}
        betas = {j: torch.zeros((2, 1, S) + tuple(lo[j].shape[1:]), dtype=dt) for j in lo}
        return Domains(lo, hi, alphas, betas, torch.full((1,), -torch.inf, dtype=torch.float64),
                       torch.zeros(1, dtype=torch.long))

    def run(self, deadline: float, max_domains: int | None, batch: int, check_candidates, pgd_objective=None):
        """Search until every subdomain is refuted or ``check_candidates`` returns a counterexample.

        Args:
            deadline: a time.perf_counter() value.
            check_candidates: x (N, *input) float64 points inside the box -> a counterexample result or None.
            pgd_objective: x -> (N,) max_r (C_r f(x) - d_r) (float32 network) for PGD seeded at the candidates of
                the lowest-bounded subdomains; None skips PGD.

        Returns:
            ("unsat" | "timeout" | "unknown" | the counterexample result, number of subdomains bounded); a deadline
            that passes inside a bound computation (the network's own check) also gives "timeout".
        """
        self.visited = 0
        try:
            if not self._fast_agrees():
                self.work = self.exact
            return self._search(deadline, max_domains, batch, check_candidates, pgd_objective)
        except TimeoutError:
            return "timeout", self.visited

    def _search(self, deadline: float, max_domains: int | None, batch: int, check_candidates, pgd_objective):
        dom = self.root()
        coeffs, x = self.optimize(dom, self.root_iterations, deadline)
        self.visited = 1
        found = check_candidates(x)
        if found is not None:
            return found, self.visited
        queue = [(dom, coeffs)] if float(dom.score[0]) <= 0 else []
        pending = _Pending()
        undecided = 0                     # fully split subdomains that neither bounds nor their LP decided
        rounds = 0
        while queue or len(pending):
            threads.tick()
            if time.perf_counter() > deadline:
                return "timeout", self.visited
            if max_domains is not None and self.visited >= max_domains:
                return "unknown", self.visited
            # branch the queued (bounded) batches into children, then bound the lowest-scored children first;
            # a subdomain with nothing left to split is decided by the linear program of its (affine) network
            for d_, c_ in queue:
                splits = self._has_split(d_)
                open_leaves = []
                for i in torch.nonzero(~splits).flatten().tolist():
                    one = d_.take(torch.tensor([i]))
                    leaf = decide_leaf(self, one, check_candidates, deadline)
                    if leaf is None:
                        open_leaves.append(one)
                    elif leaf != "unsat":
                        return leaf, self.visited
                if open_leaves:
                    found, n_open = self._settle(Domains.cat(open_leaves), check_candidates, deadline)
                    if found is not None:
                        return found, self.visited
                    undecided += n_open
                if not bool(splits.any()):
                    continue
                idx = torch.nonzero(splits).flatten()
                d_, c_ = d_.take(idx), {a: (c[idx] if c is not None else None) for a, c in c_.items()}
                kids = self.branch(d_, c_)
                if kids is None:
                    return "unknown", self.visited
                pending.add(kids)
            queue = []
            if not len(pending):
                break
            # lowest (parent) bound first; deepest first once memory is short (it stays bounded)
            cur = pending.pop(batch, deepest=pending.nbytes() > self.max_pending_bytes)
            coeffs, x = self.optimize(cur, self.iterations, deadline)
            self.visited += len(cur)
            rounds += 1
            found = check_candidates(x[cur.score <= 0])
            if found is not None:
                return found, self.visited
            if pgd_objective is not None and rounds % 4 == 0:
                worst = torch.argsort(cur.score)[:8]
                lo, hi = self.x_L.expand_as(x[worst]).float(), self.x_U.expand_as(x[worst]).float()
                xa, val = pgd_box(pgd_objective, lo, hi, steps=20, restarts=1, x_init=x[worst].float(),
                                  deadline=deadline)
                found = check_candidates(xa[val <= 1e-4].double())
                if found is not None:
                    return found, self.visited
            keep = cur.score <= 0
            if bool(keep.any()):
                idx = torch.nonzero(keep).flatten()
                queue = [(cur.take(idx), {a: (c[idx] if c is not None else None) for a, c in coeffs.items()})]
        return ("unknown" if undecided else "unsat"), self.visited
