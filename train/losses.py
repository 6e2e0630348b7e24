"""Certified-training losses (Gowal et al. 2018, IBP; Zhang et al. ICLR 2020, CROWN-IBP)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def robust_cross_entropy(margin_lb: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the worst-case logits from margin lower bounds.

    With m_j <= z_y - z_j (j != y), the logits z_hat = [0, -m] (class 0 standing for y) give
    CE(z_hat, 0) = log(1 + sum_j exp(-m_j)), an upper bound on the cross-entropy of every input in the set.

    Args:
        margin_lb: (B, K-1) lower bounds of the true-class margins.
    Returns:
        scalar mean loss.
    """
    z_hat = torch.cat([torch.zeros_like(margin_lb[:, :1]), -margin_lb], dim=1)
    return F.cross_entropy(z_hat, torch.zeros(margin_lb.shape[0], dtype=torch.long, device=margin_lb.device))


def mixed_margin(lb_ibp: torch.Tensor, lb_crown_ibp: torch.Tensor | None, beta: float) -> torch.Tensor:
    """m = beta * m_CROWN-IBP + (1 - beta) * m_IBP (CROWN-IBP, Zhang et al. 2020, Eq. 8)."""
    if lb_crown_ibp is None or beta == 0:
        return lb_ibp
    return beta * lb_crown_ibp + (1 - beta) * lb_ibp


def robust_cross_entropy_each(margin_lb: torch.Tensor) -> torch.Tensor:
    """Per-example :func:`robust_cross_entropy`: log(1 + sum_j exp(-m_j)), (B,)."""
    z_hat = torch.cat([torch.zeros_like(margin_lb[:, :1]), -margin_lb], dim=1)
    return torch.logsumexp(z_hat, dim=1)


def fused_cross_entropy_upper(bm, pert, C: torch.Tensor, bounds: list,
                              logits: torch.Tensor | None = None) -> torch.Tensor:
    """Upper bound (B,) of the cross-entropy CE(f(x), y) over the perturbation set with ONE backward row per input
    (loss fusion: Xu, Shi, Li, Huang, Chang, Kailkhura, Lin, Hsieh, NeurIPS 2020, "Automatic Perturbation Analysis for
    Scalable Certified Robustness and Beyond", Sec. 3.3): the loss is bounded as part of the network, so CROWN-IBP
    propagates 1 row instead of the K - 1 margin rows.

    With v_j = z_j - z_y = -(C z)_j in [l_j, u_j] (IBP bounds of the margins) and M = max(0, max_j u_j) (for
    stability), CE = M + log S, S = e^-M + sum_j exp(v_j - M), and
        exp(v_j - M) <= e^(l_j - M) + a_j (v_j - l_j)     (chord of the convex exp on [l_j, u_j]; slope e^(u_j - M)
                                                           when u_j - l_j < 1e-4, still an upper bound)
        log S <= log s0 + (S - s0) / s0                   (tangent of the concave log at any s0 > 0)
    with s0 = the chord sum at the clean logits clipped into the box (the box's centre without logits; detached), so
        CE <= M + log s0 - 1 + (e^-M + sum_j (e^(l_j - M) - a_j l_j)) / s0 + max over the set of (a / s0) . v,
    and the last term is CROWN-IBP's bound of the single row -(a / s0)^T C. Exact at eps = 0.

    Args:
        bm: the BoundedModule; pert: the perturbation set (B inputs); C: margin rows (B, K-1, K) (margin_spec);
        bounds: IBP intervals of every node (from bm.ibp_margins); logits: clean logits (B, K) or None.
    Returns:
        (B,) upper bounds, differentiable in the weights.
    """
    lb_m, ub_m = bm.ibp_margin_bounds(pert, C, bounds)
    lo, hi = (-ub_m).double(), (-lb_m).double()                     # bounds of v_j = z_j - z_y
    M = hi.max(1).values.clamp(min=0).detach()
    e_lo, e_hi = torch.exp(lo - M[:, None]), torch.exp(hi - M[:, None])
    width = hi - lo
    wide = width > 1e-4
    slope = torch.where(wide, (e_hi - e_lo) / torch.where(wide, width, torch.ones_like(width)), e_hi)
    if logits is None:
        v0 = ((lo + hi) / 2).detach()
    else:
        v0 = -(C @ logits.detach().unsqueeze(-1)).squeeze(-1).double()
        v0 = torch.minimum(torch.maximum(v0, lo), hi).detach()
    s0 = (torch.exp(-M) + (e_lo + slope * (v0 - lo)).sum(1)).detach()
    const = M + torch.log(s0) - 1 + (torch.exp(-M) + (e_lo - slope * lo).sum(1)) / s0
    a = slope / s0[:, None]                                          # coefficients of v
    row = (a.unsqueeze(1).to(C.dtype) @ C)                           # (B, 1, K): sum_j a_j C_j = -(a . v) row
    max_av = -bm.crown_ibp_lower(pert, row, bounds)[:, 0]            # max of a . v = -min of sum_j a_j (C z)_j
    return (const + max_av.double()).to(C.dtype)
