"""alpha-CROWN (Xu, Zhang, Wang, Wang, Jana, Lin, Hsieh, ICLR 2021, "Fast and Complete", Sec. 3.1).

CROWN's relaxation of each activation has free parameters (alpha): the lower slope of an unstable ReLU, the tangent
points of Sigmoid/Tanh, ... (each op declares ``n_alpha`` and ``alpha_init``; every alpha in [0, 1] is sound).
alpha-CROWN maximises the output lower bound over them by projected gradient ascent, one set per specification row:
Adam (lr 0.5), ExponentialLR 0.98, up to 20 iterations, alphas clipped to [0, 1] after each step, the best bound per
row kept, stop after ``patience`` iterations without improvement or at a deadline. Intermediate bounds are CROWN's
(not re-optimised). Every iterate is a sound bound, so stopping early never breaks soundness.
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence

import torch

from certkit.verifiers.bounds.perturbation import Box


class ProjectedAdam:
    """Adam (Kingma & Ba, ICLR 2015, Algorithm 1: beta1 0.9, beta2 0.999, eps 1e-8, bias-corrected) on lists of
    tensors, each group with its own learning rate multiplied by ``decay`` after every step (ExponentialLR), followed
    by the projection of :func:`projected_step`. The same arithmetic as ``torch.optim.Adam`` (tests check the
    trajectories agree), written here because constructing a torch optimizer imports torch's compiler stack (about a
    second at a verifier's start-up).

    Args:
        groups: (tensors, lr) pairs; the tensors are updated in place.
        decay: per-step learning-rate factor.
    """

    def __init__(self, groups: Sequence[tuple[Sequence[torch.Tensor], float]], decay: float = 1.0,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.groups = [(list(ts), float(lr)) for ts, lr in groups]
        self.params = [t for ts, _ in self.groups for t in ts]
        self.decay, self.betas, self.eps = decay, betas, eps
        self.m = [torch.zeros_like(t) for t in self.params]
        self.v = [torch.zeros_like(t) for t in self.params]
        self.t = 0

    @torch.no_grad()
    def step(self, grads: Sequence[torch.Tensor | None]) -> None:
        """One Adam step with ``grads`` (one per tensor, in group order; None: no gradient, left unchanged)."""
        b1, b2 = self.betas
        self.t += 1
        c1, c2 = 1 - b1 ** self.t, 1 - b2 ** self.t
        k = 0
        for i, (ts, lr) in enumerate(self.groups):
            for t in ts:
                g = grads[k]
                if g is not None:
                    m, v = self.m[k], self.v[k]
                    m.lerp_(g, 1 - b1)
                    v.mul_(b2).addcmul_(g, g, value=1 - b2)
                    t.addcdiv_(m, (v.sqrt() / math.sqrt(c2)).add_(self.eps), value=-lr / c1)
                k += 1
            self.groups[i] = (ts, lr * self.decay)


def projected_step(opt: ProjectedAdam, loss: torch.Tensor, unit: list, nonneg: Sequence = ()) -> None:
    """One step of projected gradient descent on ``loss`` with ``opt``: ``unit`` parameters (alphas) clipped to
    [0, 1], ``nonneg`` ones (beta-CROWN's betas) to [0, inf) -- the sets on which every bound stays sound."""
    with torch.enable_grad():
        grads = torch.autograd.grad(loss, opt.params, allow_unused=True)
    opt.step(grads)
    with torch.no_grad():
        for p in unit:
            p.clamp_(0, 1)
        for b in nonneg:
            b.clamp_(min=0)
#: the float32 iterations of :func:`alpha_crown`'s fast path are used only when float32 CROWN agrees with float64
#: CROWN to this fraction of the bound's magnitude (1 + max |lb|): their gradients then point where float64's do
FAST_AGREEMENT = 1e-4


def _crown_alphas(g, bounds: list, start: int, S2: int) -> tuple[dict, dict]:
    """CROWN's alphas (n_alpha, B, S2, *shape), one set per row, and the relaxation setups of every activation
    before node ``start`` for ``bounds``."""
    alphas, setups = {}, {}
    with torch.no_grad():
        for a in (a for a in g.nonlinear() if a < start):
            op = g.nodes[a].op
            if op.n_alpha == 0:
                continue
            in_bounds = [(b[0].detach(), b[1].detach()) for b in (bounds[j] for j in g.nodes[a].inputs)]
            init = op.alpha_init(in_bounds)                                      # (n_alpha, B, *shape)
            alphas[a] = init.unsqueeze(2).expand(-1, -1, S2, *[-1] * len(g.nodes[a].shape)).clone()
            setups[a] = op.relaxation_setup(in_bounds)                           # depends on the bounds only
    return alphas, setups


def alpha_crown(bm, pert, CC: torch.Tensor, bounds: list, iterations: int = 20, lr: float = 0.5, decay: float = 0.98,
                patience: int = 10, deadline: float | None = None, start: int | None = None,
                best_alphas: dict | None = None, fast=None) -> torch.Tensor:
    """Optimised lower bounds of sum(CC * node_start), (B, S2), for a BoundedModule ``bm``.

    Args:
        pert: the input perturbation; CC: specification rows (B, S2, *shape of node ``start``); bounds: intervals of
            every node (CROWN's); deadline: a time.perf_counter() value after which optimisation stops; start: the
            node bounded (default the output).
        best_alphas: when given, filled with node -> the alphas (n_alpha, B, S2, *shape) that gave each row its best
            bound (the sound mode re-evaluates them with outward rounding, verifiers/bounds/sound.py; branch and
            bound starts its root from them).
        fast: a float32 BoundedModule of the same network (``bm`` float64, ``pert`` a :class:`Box`): the iterations
            run on it (float64 convolutions cost 4-15x float32 ones on CPUs) and the bound returned is the larger,
            per row, of two float64 passes on ``bm``: CROWN's alphas and each row's best float32 alphas (any alpha
            in [0, 1] gives a sound bound, so float32 only steers the search; the bound keeps ``bm``'s precision).
            Ignored (float64 iterations) when float32 CROWN misses float64 CROWN by more than ``FAST_AGREEMENT``.
    """
    g = bm.graph
    start = g.output if start is None else start
    S2 = CC.shape[1]
    alphas, setups = _crown_alphas(g, bounds, start, S2)
    best = bm._backward(start, CC, pert, bounds, {}, alphas, setups).detach()
    if fast is not None and alphas and iterations > 0 and isinstance(pert, Box) and CC.dtype == torch.float64:
        found = _fast_alphas(fast, pert, CC, bounds, best, iterations, lr, decay, patience, deadline, start)
        if found is not None:
            with torch.no_grad():
                try:
                    lb = bm._backward(start, CC, pert, bounds, {}, found, setups)
                except TimeoutError:   # the caller's hard deadline passed: CROWN's bound is what there is
                    lb = None
            if best_alphas is not None:   # per row, the alphas of the larger of the two float64 bounds
                won = torch.zeros_like(best, dtype=torch.bool) if lb is None else lb > best
                best_alphas.update({a: torch.where(won.view(won.shape + (1,) * (t.dim() - 3)), found[a], t)
                                    for a, t in alphas.items()})
            return best if lb is None else torch.maximum(best, lb)
    keep = best_alphas is not None
    if best_alphas is not None:
        best_alphas.update({a: t.clone() for a, t in alphas.items()})
    if not alphas or iterations <= 0:
        return best

    def remember(improved):  # per row: the alphas of its best bound so far
        assert best_alphas is not None
        for a, t in alphas.items():
            mask = improved.view(improved.shape + (1,) * (t.dim() - 3))
            best_alphas[a] = torch.where(mask, t.detach(), best_alphas[a])
    params = [t.requires_grad_(True) for t in alphas.values()]
    opt = ProjectedAdam([(params, lr)], decay)
    fixed = [(b[0].detach(), b[1].detach()) for b in bounds]
    stale = 0
    for _ in range(iterations):
        try:
            with torch.enable_grad():
                lb = bm._backward(start, CC, pert, fixed, {}, alphas, setups)
        except TimeoutError:   # the caller's hard deadline (bm.deadline) passed inside a pass: keep the best so far
            return best
        if not lb.requires_grad:   # no alpha reaches the bound (an op with constant bounds in between): nothing to do
            break
        if keep:
            with torch.no_grad():
                remember(lb.detach() > best)  # the alphas that gave lb, before the step moves them
        projected_step(opt, -lb.sum(), params)
        with torch.no_grad():
            improved = lb.detach() > best + 1e-7
            stale = 0 if improved.any() else stale + 1
            best = torch.maximum(best, lb.detach())
        if stale >= patience or (deadline is not None and time.perf_counter() > deadline):
            break  # every iterate is a sound bound: stopping early keeps soundness
    with torch.no_grad():  # the final alphas too (after the last step)
        try:
            last = bm._backward(start, CC, pert, fixed, {}, alphas, setups)
        except TimeoutError:
            return best
        if keep:
            remember(last > best)
        best = torch.maximum(best, last)
    return best


def _fast_alphas(fast, pert, CC: torch.Tensor, bounds: list, crown64: torch.Tensor, iterations: int, lr: float,
                 decay: float, patience: int, deadline: float | None, start: int) -> dict | None:
    """alpha-CROWN's iterations on the float32 module ``fast``: node -> each row's best alphas, cast to float64
    (n_alpha, B, S2, *shape), or None when float32 CROWN misses ``crown64`` (float64 CROWN, (B, S2)) by more than
    ``FAST_AGREEMENT`` of its magnitude (or is not finite)."""
    f32 = torch.float32
    b32 = [(lb.detach().to(f32), ub.detach().to(f32)) for lb, ub in bounds]
    x_L, x_U = pert.box()
    p32, CC32 = Box(x_L.to(f32), x_U.to(f32), check=False), CC.detach().to(f32)
    alphas, setups = _crown_alphas(fast.graph, b32, start, CC.shape[1])
    with torch.no_grad():
        crown32 = fast._backward(start, CC32, p32, b32, {}, alphas, setups).double()
    finite = torch.isfinite(crown64)
    miss = float((crown32 - crown64)[finite].abs().max()) if bool(finite.any()) else 0.0
    scale = 1.0 + (float(crown64[finite].abs().max()) if bool(finite.any()) else 0.0)
    if not bool(torch.isfinite(crown32[finite]).all()) or miss > FAST_AGREEMENT * scale:
        return None
    found: dict = {}
    alpha_crown(fast, p32, CC32, b32, iterations, lr, decay, patience, deadline, start, best_alphas=found)
    return {a: t.double() for a, t in found.items()}


def optimize_intermediate(bm, pert, bounds: list, iterations: int = 20, lr: float = 0.5,
                          deadline: float | None = None, fast=None) -> list:
    """alpha-CROWN bounds of the input of every activation (the "optimise intermediate layers" choice of Xu et al.
    2021, done layer by layer): for each activation input in topological order, its neurons left unstable by
    ``bounds`` are bounded from +-identity rows with alphas of all earlier activations optimised per row (the
    earlier layers' optimised bounds fixed), then intersected with ``bounds``. Sound for any alphas, so stopping at
    ``deadline`` keeps soundness (later layers keep their given bounds). Returns a new list (B, *shape) per node.
    ``fast``: a float32 copy of the network for the iterations (:func:`alpha_crown`).
    """
    g = bm.graph
    out = list(bounds)
    first = min(g.nonlinear(), default=None)
    done = set()
    for a in g.nonlinear():
        j = g.nodes[a].inputs[0]
        if j in done or first is None or j < first:  # nothing non-linear before j: CROWN is already exact there
            continue
        done.add(j)
        if deadline is not None and time.perf_counter() > deadline:
            break
        l0, u0 = out[j]
        B = l0.shape[0]
        n = l0[0].numel()
        picked = torch.nonzero(g.nodes[a].op.unstable(l0, u0).flatten(1).any(0)).flatten()
        if picked.numel() == 0:
            continue
        l, u = l0.flatten(1).clone(), u0.flatten(1).clone()
        biggest = max(max(1, torch.Size(nd.shape).numel()) for nd in g.nodes[:j + 1])
        chunk = max(1, bm.budget // max(1, 4 * B * biggest))
        for s0 in range(0, picked.numel(), chunk):
            sel = picked[s0:s0 + chunk]
            rows = torch.zeros((sel.numel(), n), dtype=l0.dtype, device=l0.device)
            rows[torch.arange(sel.numel()), sel] = 1.0
            CC = torch.cat([rows, -rows]).unsqueeze(0).expand(B, -1, -1).reshape((B, 2 * sel.numel()) + l0.shape[1:])
            with torch.enable_grad():
                lb = alpha_crown(bm, pert, CC, out, iterations, lr, deadline=deadline, start=j, fast=fast).detach()
            l[:, sel] = torch.maximum(l[:, sel], lb[:, :sel.numel()])
            u[:, sel] = torch.minimum(u[:, sel], -lb[:, sel.numel():])
        out[j] = (l.view_as(l0), u.view_as(u0))
    return out
