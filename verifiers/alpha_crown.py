"""alpha-CROWN (Xu, Zhang, Wang, Wang, Jana, Lin, Hsieh, ICLR 2021, "Fast and Complete", Sec. 3.1).

CROWN's relaxation of each activation has free parameters (alpha): the lower slope of an unstable ReLU, the tangent
points of Sigmoid/Tanh, ... (each op declares ``n_alpha`` and ``alpha_init``; every alpha in [0, 1] is sound).
alpha-CROWN maximises the output lower bound over them by projected gradient ascent, one set per specification row:
Adam (lr 0.5), ExponentialLR 0.98, up to 20 iterations, alphas clipped to [0, 1] after each step, the best bound per
row kept, stop after ``patience`` iterations without improvement or at a deadline. Intermediate bounds are CROWN's
(not re-optimised). Every iterate is a sound bound, so stopping early never breaks soundness.
"""
from __future__ import annotations

import time

import torch


def alpha_crown(bm, pert, CC: torch.Tensor, bounds: list, iterations: int = 20, lr: float = 0.5, decay: float = 0.98,
                patience: int = 10, deadline: float | None = None) -> torch.Tensor:
    """Optimised lower bounds of sum(CC * output), (B, S2), for a BoundedModule ``bm``.

    Args:
        pert: the input perturbation; CC: specification rows (B, S2, *output_shape); bounds: intervals of every node
            (CROWN's); deadline: a time.perf_counter() value after which optimisation stops.
    """
    g = bm.graph
    S2 = CC.shape[1]
    alphas, setups = {}, {}
    with torch.no_grad():
        for a in g.nonlinear():
            op = g.nodes[a].op
            if op.n_alpha == 0:
                continue
            in_bounds = [(b[0].detach(), b[1].detach()) for b in (bounds[j] for j in g.nodes[a].inputs)]
            init = op.alpha_init(in_bounds)                                      # (n_alpha, B, *shape)
            alphas[a] = init.unsqueeze(2).expand(-1, -1, S2, *[-1] * len(g.nodes[a].shape)).clone()
            setups[a] = op.relaxation_setup(in_bounds)                           # depends on the bounds only
    best = bm._backward(g.output, CC, pert, bounds, {}, alphas, setups).detach()
    if not alphas or iterations <= 0:
        return best
    params = [t.requires_grad_(True) for t in alphas.values()]
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, decay)
    fixed = [(b[0].detach(), b[1].detach()) for b in bounds]
    stale = 0
    for _ in range(iterations):
        with torch.enable_grad():
            lb = bm._backward(g.output, CC, pert, fixed, {}, alphas, setups)
            loss = -lb.sum()
            opt.zero_grad()
            loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            for p in params:
                p.clamp_(0, 1)
            improved = lb.detach() > best + 1e-7
            stale = 0 if improved.any() else stale + 1
            best = torch.maximum(best, lb.detach())
        if stale >= patience or (deadline is not None and time.perf_counter() > deadline):
            break  # every iterate is a sound bound: stopping early keeps soundness
    with torch.no_grad():  # the final alphas too (after the last step)
        best = torch.maximum(best, bm._backward(g.output, CC, pert, fixed, {}, alphas, setups))
    return best
