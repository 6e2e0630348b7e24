"""ibp: IBP certified training against Linf perturbations of radius eps (clipped to [0,1]), Gowal et al. 2018 ("On
the effectiveness of interval bound propagation for training verifiably robust models"):
kappa CE(z, y) + (1 - kappa) CE(z_hat(eps_t), y), z_hat from IBP margin lower bounds over the Linf ball of radius
eps_t. The recipe (schedule, kappa, short warm-up) is shared by crown-ibp (crown_ibp.py), sabr and the expressive
losses (mtl_ibp.py), which change only the robust part of the loss.

eps_t follows the smoothed or linear schedule (train/schedules.py); kappa and beta follow eps_t. Options of the
short-warmup recipe (Shi et al. NeurIPS 2021): IBP initialization (``init='ibp'``), BatchNorm architectures (bounds
use the clean batch's statistics), the tightness and ReLU-balance regularizers (``reg_lambda``) during the ramp with
bounds at eps 1e-6 while eps_t = 0, and gradient-norm clipping.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from certkit.common.errors import CertkitError
from certkit.common.options import option
from certkit.train.classifier import ClassifierTraining
from certkit.train.losses import (
    robust_cross_entropy,
)
from certkit.train.network import register_training
from certkit.train.regularizers import relu_balance_regularizer, tightness_regularizer
from certkit.train.schedules import EpsSchedule, kappa_at


@register_training
class IBPTraining(ClassifierTraining):
    """IBP certified training (module docstring)."""

    name = "ibp"
    help = "IBP certified training against Linf perturbations of radius --eps (Gowal et al. 2018)"
    certified = True

    @dataclass
    class Options:
        """The eps ramp, the loss weights and the short-warmup regularizers of certified training."""

        eps_train: float | None = option(None, "training radius (ABSOLUTE Linf, [0,1] pixel units) if different "
                                         "from --eps (e.g. 1.1x)")
        schedule: str = option("smoothed", "eps ramp: smoothed (polynomial then linear, auto_LiRPA/DeepMind) or "
                               "linear", choices=("smoothed", "linear"))
        schedule_start: int = option(1, "first epoch of the eps ramp (eps = 0 before it)")
        schedule_length: int = option(0, "epochs of the eps ramp (0: half of --epochs)")
        kappa_final: float = option(0.5, "natural-loss weight at the end of the ramp (kappa: 1 -> kappa-final "
                                    "with eps)")
        reg_lambda: float = option(0.0, "weight of the tightness + ReLU-balance warm-up regularizers (Shi et al. "
                                   "2021 use 0.5)")

    def validate(self):
        super().validate()
        o = self.opts
        if o.eps_train is not None and not o.eps_train >= 0:
            raise CertkitError("--eps-train must be >= 0")
        if not 0 <= o.kappa_final <= 1:
            raise CertkitError("--kappa-final must lie in [0, 1]")

    def prepare(self, run):
        super().prepare(run)
        cfg, o = self.cfg, self.opts
        self.steps_per_epoch = (len(self.train_set) + cfg.batch_size - 1) // cfg.batch_size
        self.schedule = EpsSchedule(self.eps_max, o.schedule_start, o.schedule_length or max(1, cfg.epochs // 2),
                                    self.steps_per_epoch, o.schedule)

    def batch_loss(self, run, batch):
        o = self.opts
        self.run = run
        xb, yb = self.xy(run, batch)
        eps_t = self.schedule((batch.epoch - 1) * self.steps_per_epoch + batch.b)
        kappa = kappa_at(eps_t, self.eps_max, o.kappa_final)
        beta = self.beta(eps_t)
        self.last_schedule = (eps_t, kappa, beta)
        if kappa <= 0 and eps_t > 0 and not self.has_batchnorm(run.model):
            # pure robust loss (kappa_final 0 at full eps, the short-warmup and MTL-IBP recipes): the clean logits
            # only report train accuracy, so no graph is built for them (saves their backward pass). With
            # BatchNorm the bounds use the clean batch's statistics, whose gradient needs the clean graph.
            with torch.no_grad():
                logits = run.model(xb)
        else:
            logits = run.model(xb)
        loss = F.cross_entropy(logits, yb)
        return self.output(self.certified_loss(xb, yb, loss, eps_t, kappa, beta), logits, yb, batch)

    @staticmethod
    def has_batchnorm(model: torch.nn.Module) -> bool:
        """Whether ``model`` has a BatchNorm layer (its bounds then depend on the clean forward pass)."""
        return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())

    def certified_loss(self, xb, yb, natural_loss, eps_t, kappa, beta):
        """kappa * natural + (1 - kappa) * robust (+ warm-up regularizers); natural alone while eps_t = 0."""
        from certkit.verifiers import linf_ball, margin_spec

        o, bm = self.opts, self.bm
        reg_on = o.reg_lambda > 0 and eps_t < self.eps_max
        if eps_t <= 0 and not reg_on:
            return natural_loss
        C = margin_spec(yb, self.data.num_classes)
        pert = linf_ball(xb, max(eps_t, 1e-6))
        lb_ibp, bounds = bm.ibp_margins(pert, C) if (reg_on or self.full_box_ibp) else (None, None)
        loss = natural_loss
        if eps_t > 0:
            loss = kappa * natural_loss + (1 - kappa) * self.robust_loss(xb, yb, C, pert, lb_ibp, bounds, eps_t, beta)
        if reg_on:
            relu_in = [bounds[bm.graph.nodes[a].inputs[0]] for a in bm.graph.nonlinear()]
            first = bm.graph.nodes[1] if len(bm.graph.nodes) > 1 else None
            x0 = bounds[1] if first is not None and first.op.name == "Normalize" else bounds[0]
            delta0 = ((x0[1] - x0[0]) / 2).mean()
            reg = tightness_regularizer(delta0, relu_in) + relu_balance_regularizer(relu_in)
            loss = loss + o.reg_lambda * (1 - eps_t / self.eps_max) * reg
        return loss

    full_box_ibp = True  # robust_loss needs the IBP margins over the whole eps_t box

    def robust_loss(self, xb, yb, C, pert, lb_ibp, bounds, eps_t, beta):
        """The robust part of the loss over the Linf ball ``pert`` of radius eps_t (margin rows C): IBP's worst-case
        cross-entropy. crown_ibp.py, mtl_ibp.py and sabr.py override it."""
        return robust_cross_entropy(lb_ibp)

    def beta(self, eps_t: float) -> float:
        """The weight of CROWN-IBP's bound at eps_t (0 for IBP; crown_ibp.py overrides it)."""
        return 0.0

    def adversarial(self, xb, yb, eps_t):
        """A PGD point of the Linf ball of radius eps_t around xb (clipped to [0,1]; margin loss, the model in eval
        mode so the attack does not move BatchNorm statistics): ``attack_steps`` steps of 2.5 eps_t / steps from the
        clean input (Madry et al. 2018)."""
        from certkit.verifiers.attack import margin_objective, pgd_box

        model = self.run.model
        was = model.training
        model.eval()
        try:
            lo, hi = (xb - eps_t).clamp(min=0), (xb + eps_t).clamp(max=1)
            x_adv, _ = pgd_box(margin_objective(model, yb), lo, hi, steps=self.opts.attack_steps, restarts=1,
                               x_init=xb, early_stop=False)
        finally:
            model.train(was)
        return x_adv.detach()
