"""sabr: SABR, Small Adversarial Bounding boxes (Mueller, Eckert, Fischer, Vechev ICLR 2023, "Certified training:
small boxes are all you need", Sec. 3).

Per input: x_adv = a PGD point of the Linf ball B(x, eps_t); the small box B(c, tau) with radius tau = lambda eps_t
and center c = x_adv clipped to [x - eps_t + tau, x + eps_t - tau] (so the small box lies in the ball); the robust
loss is IBP's worst-case cross-entropy over that small box instead of the whole ball. lambda = 1 is IBP on the whole
ball; lambda -> 0 is adversarial training at x_adv. The paper's lambda: MNIST eps 0.1 -> 0.4, 0.3 -> 0.6, CIFAR-10
2/255 -> 0.1, 8/255 -> 0.7 (``--sabr-lambda``, default 0.4). Everything else (eps ramp, kappa, short-warmup options)
is the IBP recipe of ibp.py; the papers train with kappa_final = 0 (robust loss only after the ramp).
"""
from dataclasses import dataclass

import torch

from certkit.common.errors import CertkitError
from certkit.common.options import option
from certkit.train.losses import robust_cross_entropy
from certkit.train.methods.ibp import IBPTraining
from certkit.train.network import register_training


def small_box(x: torch.Tensor, x_adv: torch.Tensor, eps: float, lam: float,
              data_range: tuple = (0.0, 1.0)) -> tuple[torch.Tensor, torch.Tensor]:
    """(lower, upper) of SABR's box of radius lam * eps around x_adv, moved to lie inside the Linf ball of radius
    eps around x (both (B, *shape)); clipped to the data range like the ball."""
    tau = lam * eps
    center = torch.minimum(torch.maximum(x_adv, x - eps + tau), x + eps - tau)
    return (center - tau).clamp(min=data_range[0]), (center + tau).clamp(max=data_range[1])


@register_training
class SABRTraining(IBPTraining):
    """SABR (module docstring)."""

    name = "sabr"
    help = "SABR: IBP on a small box (--sabr-lambda x eps) around a PGD point (Mueller et al. ICLR 2023)"
    full_box_ibp = False

    @dataclass
    class Options(IBPTraining.Options):
        sabr_lambda: float = option(0.4, "small-box radius as a fraction of eps (paper: MNIST 0.1 -> 0.4, 0.3 -> "
                                    "0.6; CIFAR-10 2/255 -> 0.1, 8/255 -> 0.7)")
        attack_steps: int = option(8, "PGD steps of the training attack (step 2.5 eps / steps)")

    def validate(self):
        super().validate()
        if not 0 < self.opts.sabr_lambda <= 1 or self.opts.attack_steps < 0:
            raise CertkitError("--sabr-lambda must be in (0, 1] and --attack-steps >= 0")

    def robust_loss(self, xb, yb, C, pert, lb_ibp, bounds, eps_t, beta):
        from certkit.verifiers import Box

        x_adv = self.adversarial(xb, yb, eps_t)
        lo, hi = small_box(xb, x_adv, eps_t, self.opts.sabr_lambda)
        lb, _ = self.bm.ibp_margins(Box(lo, hi, check=False), C)   # clipped inside the checked eps_t ball
        return robust_cross_entropy(lb)
