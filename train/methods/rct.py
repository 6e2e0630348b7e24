"""rct: robust conformal training, RCT (Yan, Romano, Weng ICLR 2024; after ConfTr, Stutz et al. 2022): fine-tune the
final linear layer of ``init_from`` (backbone frozen, BatchNorm in eval mode) so that RSCP+ sets get smaller at the
same guaranteed coverage. Trains on the whole train split (no validation metrics).

Per batch: p_bar = mean over n_train = 8 noise draws of softmax(f(x + e)); conformity c_k = PhiInv(p_bar_k) (higher
is more conforming). The batch is split 50/50: on half 1, tau = the alpha-quantile of the true-class conformity
(torch.quantile: subgradients through the selected order statistics, in place of a smooth sort), shifted by
-eps_l2/sigma for robustness (``eps_l2``, an L2 radius in data-range units); on half 2 the soft set is
C_k = sigmoid((c_k - tau) / temp).
Loss = log(L_class + w L_size + 1e-8), L_class = mean(1 - C_y), L_size = mean(max(sum_k C_k - target, 0)).
Optimizer: SGD with Nesterov momentum 0.9, weight decay 5e-4, lr ``lr``.
"""
from dataclasses import dataclass

import torch
from torch import nn

from certkit.common.errors import CertkitError
from certkit.common.options import option
from certkit.models.zoo import build_model
from certkit.train.classifier import ClassifierTraining
from certkit.train.harness import StepOutput
from certkit.train.network import register_training

_PHI_CLAMP = 1e-6


def rct_loss(p_bar: torch.Tensor, y: torch.Tensor, alpha: float, eps: float, sigma: float, temp: float = 0.1,
             size_weight: float = 1.0, target: float = 1.0) -> torch.Tensor:
    """The RCT loss of one batch from noise-averaged probabilities p_bar (B, K) and labels y (B,)."""
    normal = torch.distributions.Normal(0.0, 1.0)
    conf = normal.icdf(p_bar.clamp(_PHI_CLAMP, 1 - _PHI_CLAMP))
    half = p_bar.shape[0] // 2
    if half < 1:
        raise CertkitError("RCT needs batches of at least 2 inputs")
    cal_true = conf[:half].gather(1, y[:half, None]).squeeze(1)
    tau = torch.quantile(cal_true, alpha) - eps / sigma
    soft = torch.sigmoid((conf[half:] - tau) / temp)
    l_class = (1 - soft.gather(1, y[half:, None])).mean()
    l_size = torch.relu(soft.sum(1) - target).mean()
    return torch.log(l_class + size_weight * l_size + 1e-8)


@register_training
class RCTTraining(ClassifierTraining):
    """RCT fine-tuning of the final linear layer of ``init_from`` (module docstring)."""

    name = "rct"
    help = "robust conformal training of the final layer of --init-from (RSCP+ sets at --alpha, L2 radius --eps-l2)"
    noisy = True
    loads_weights = True
    holds_out_validation = False
    min_batch = 4
    n_train, temp, size_weight = 8, 0.1, 1.0

    @dataclass
    class Options:
        init_from: str | None = option(None, "the noise-trained certkit or reference checkpoint training starts from")
        alpha: float = option(0.1, "target miscoverage of the sets")
        eps_l2: float = option(0.0, "the L2 radius (ABSOLUTE, [0,1] pixel units) its conformal sets must withstand")

    def validate(self):
        cfg = self.cfg
        if cfg.init == "ibp":
            raise CertkitError("--init ibp initializes a new network, but rct starts from --init-from")
        if not self.opts.init_from:
            raise CertkitError("--method rct fine-tunes the final layer of --init-from CHECKPOINT")
        if cfg.eps:
            raise CertkitError("--method rct takes the L2 radius of its sets as --eps-l2 (--eps is an Linf radius)")
        o = self.opts
        if not cfg.sigma > 0 or not o.eps_l2 >= 0 or not 0 < o.alpha < 1 or cfg.epochs < 1 or cfg.batch_size < 4:
            raise CertkitError("RCT needs sigma > 0, eps-l2 >= 0, 0 < alpha < 1, epochs >= 1, batch >= 4")
        if not cfg.lr > 0:
            raise CertkitError(f"--lr must be > 0, got {cfg.lr}")

    def build_net(self, data):
        ckpt = self.init_checkpoint(data)
        config = dict(ckpt.get("arch_config") or {})
        net = build_model(ckpt["arch"], ckpt["input_shape"], ckpt["num_classes"], **config)
        net.load_state_dict(ckpt["state_dict"])
        linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise CertkitError("RCT trains the final linear layer, and this model has none")
        self.head = linears[-1]
        return ckpt["arch"], config, ckpt.get("normalization"), net

    def parameters(self, model):
        for p in model.parameters():
            p.requires_grad_(False)
        for p in self.head.parameters():
            p.requires_grad_(True)
        return self.head.parameters()

    def make_optimizer(self, params):
        return torch.optim.SGD(params, lr=self.cfg.lr, momentum=0.9, nesterov=True, weight_decay=5e-4), None

    def train_mode(self, model):
        model.eval()  # frozen backbone (BatchNorm statistics included)

    def batch_loss(self, run, batch):
        cfg = self.cfg
        x, y = self.xy(run, batch)
        noise = cfg.sigma * torch.randn((self.n_train,) + tuple(x.shape), generator=run.generator).to(run.device)
        probs = torch.softmax(run.model((x.unsqueeze(0) + noise).reshape((-1,) + tuple(x.shape[1:]))), -1)
        p_bar = probs.view(self.n_train, x.shape[0], -1).mean(0)
        loss = rct_loss(p_bar, y, self.opts.alpha, self.opts.eps_l2, cfg.sigma, self.temp, self.size_weight)
        return StepOutput(loss, int((p_bar.argmax(1) == y).sum()), len(batch.idx),
                          len(batch.idx) / max(len(batch.idx_all), 1))

    def metadata(self, epoch, row, world):
        meta = super().metadata(epoch, row, world)
        meta["rct"] = {"init_from": str(self.opts.init_from), "sigma": self.cfg.sigma, "eps_l2": self.opts.eps_l2,
                       "alpha": self.opts.alpha, "n_train": self.n_train, "temp": self.temp,
                       "size_weight": self.size_weight}
        return meta
