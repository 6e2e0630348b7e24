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
