"""Expressive losses (De Palma, Bunel, Dvijotham, Kumar, Stanforth, Lomuscio, ICLR 2024, "Expressive losses for
verified robustness via convex combinations"): losses that range, through one coefficient alpha in [0, 1], from the
adversarial loss (alpha = 0) to IBP's verified loss (alpha = 1). With x_adv a PGD point of the Linf ball of radius
eps_t, z the logits and m = (z_y - z_j)_j the margins:

    mtl-ibp  L = (1 - alpha) CE(z(x_adv), y) + alpha L_IBP                      (convex combination of losses)
    cc-ibp   L = CE_m((1 - alpha) m(x_adv) + alpha m_IBP_lower)                (of margins, before the CE)
    exp-ibp  L = CE(z(x_adv), y)^(1 - alpha) L_IBP^alpha                        (geometric combination)

where L_IBP = CE_m(m_IBP_lower) is IBP's worst-case cross-entropy and CE_m(m) = log(1 + sum_j exp(-m_j)) (equal to
CE(z, y) when m are the margins of z). ``--expressive-alpha`` (default 0.5; the paper tunes it per setting, e.g.
MTL-IBP CIFAR-10 8/255: 0.5, MNIST 0.3: 0.5 in the CTBench reproductions) and ``--attack-steps`` (default 8). The eps
ramp, kappa and short-warmup options are the IBP recipe of ibp.py (the paper uses kappa_final = 0).
"""
from dataclasses import dataclass

import torch

from certkit.common.errors import CertkitError
from certkit.common.options import option
from certkit.train.losses import robust_cross_entropy
from certkit.train.methods.ibp import IBPTraining
from certkit.train.network import register_training


def margins(logits: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """m = C z: the margins z_y - z_j (B, K-1) of logits (B, K) for the rows C (B, K-1, K) of margin_spec."""
    return torch.einsum("bsk,bk->bs", C, logits)


class ExpressiveTraining(IBPTraining):
    """Shared part: the adversarial margins and IBP's margins over the ball; ``combine`` makes the loss."""

    @dataclass
    class Options(IBPTraining.Options):
        expressive_alpha: float = option(0.5, "weight of the IBP term (0 = adversarial training, 1 = IBP)")
        attack_steps: int = option(8, "PGD steps of the training attack (step 2.5 eps / steps)")

    def validate(self):
        super().validate()
        if not 0 <= self.opts.expressive_alpha <= 1 or self.opts.attack_steps < 0:
            raise CertkitError("--expressive-alpha must be in [0, 1] and --attack-steps >= 0")

    def robust_loss(self, xb, yb, C, pert, lb_ibp, bounds, eps_t, beta):
        m_adv = margins(self.run.model(self.adversarial(xb, yb, eps_t)), C)
        return self.combine(m_adv, lb_ibp, self.opts.expressive_alpha)

    @staticmethod
    def combine(m_adv: torch.Tensor, m_ibp: torch.Tensor, alpha: float) -> torch.Tensor:
        raise NotImplementedError


@register_training
class MTLIBPTraining(ExpressiveTraining):
    """MTL-IBP: (1 - alpha) adversarial CE + alpha IBP loss."""

    name = "mtl-ibp"
    help = "MTL-IBP: (1 - alpha) adversarial + alpha IBP loss, --expressive-alpha (De Palma et al. ICLR 2024)"

    @staticmethod
    def combine(m_adv, m_ibp, alpha):
        return (1 - alpha) * robust_cross_entropy(m_adv) + alpha * robust_cross_entropy(m_ibp)


@register_training
class CCIBPTraining(ExpressiveTraining):
    """CC-IBP: the CE of the convex combination of adversarial and IBP margins."""

    name = "cc-ibp"
    help = "CC-IBP: CE of (1 - alpha) adversarial + alpha IBP margins, --expressive-alpha (De Palma et al. 2024)"

    @staticmethod
    def combine(m_adv, m_ibp, alpha):
        return robust_cross_entropy((1 - alpha) * m_adv + alpha * m_ibp)


@register_training
class EXPIBPTraining(ExpressiveTraining):
    """EXP-IBP: adversarial CE^(1 - alpha) x IBP loss^alpha."""

    name = "exp-ibp"
    help = "EXP-IBP: adversarial loss^(1 - alpha) x IBP loss^alpha, --expressive-alpha (De Palma et al. 2024)"

    @staticmethod
    def combine(m_adv, m_ibp, alpha):
        return robust_cross_entropy(m_adv) ** (1 - alpha) * robust_cross_entropy(m_ibp) ** alpha
