"""dual: Dual randomized smoothing training (Xia, Yu, Jiang, Ding, ICLR 2024): two branches on the checkerboard
halves of the input (models.zoo.dual), both started from a noise-trained full-image checkpoint (``init_from``: a
certkit checkpoint or a Gaussian-smoothing reference checkpoint) and fine-tuned on x + N(0, sigma^2 I) with the
cross-entropy of both branches; with ``consistency`` > 0, 4 noise copies per input and weight * (mean KL(p_i ||
p_mean) + 0.05 H(p_mean)) as in the paper (which uses weight 15)."""
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from certkit.common.errors import CertkitError
from certkit.common.options import option
from certkit.models.zoo import build_model
from certkit.train.classifier import ClassifierTraining
from certkit.train.harness import StepOutput
from certkit.train.network import register_training


def dual_loss(logits: torch.Tensor, y: torch.Tensor, copies: int, weight: float) -> torch.Tensor:
    """CE of both branches (logits (B, 2, K)); with copies > 1 plus weight * (mean KL(p_i || p_mean) + 0.05
    H(p_mean)) over the noise copies of each input (rows ordered copy-major)."""
    loss = F.cross_entropy(logits[:, 0], y) + F.cross_entropy(logits[:, 1], y)
    if copies > 1 and weight > 0:
        logp = logits.log_softmax(-1).view((copies, -1) + tuple(logits.shape[1:]))
        p = logp.exp()
        p_mean = p.mean(0)
        log_mean = p_mean.clamp(min=1e-12).log()
        kl = (p * (logp - log_mean)).sum(-1).mean()
        entropy = -(p_mean * log_mean).sum(-1).mean()
        loss = loss + weight * (kl + 0.05 * entropy)
    return loss


@register_training
class DualTraining(ClassifierTraining):
    """Dual RS branches fine-tuned from ``init_from`` (module docstring)."""

    name = "dual"
    help = "Dual RS branches fine-tuned from --init-from with noise --sigma (Xia et al. 2024)"
    noisy = True
    loads_weights = True

    @dataclass
    class Options:
        init_from: str | None = option(None, "the noise-trained certkit or reference checkpoint training starts from")
        consistency: float = option(0.0, "consistency-loss weight over 4 noise copies (the DRS paper uses 15)")

    def validate(self):
        super().validate()
        if not self.opts.init_from:
            raise CertkitError("--method dual fine-tunes a noise-trained model: pass --init-from CHECKPOINT")
        if self.opts.consistency < 0:
            raise CertkitError("--consistency must be >= 0")

    def build_net(self, data):
        ckpt = self.init_checkpoint(data)
        if ckpt["arch"] == "dual":
            raise CertkitError(f"--init-from {self.opts.init_from} is already a Dual RS model")
        config = {"base_arch": ckpt["arch"], "base_config": dict(ckpt.get("arch_config") or {})}
        net = build_model("dual", data.input_shape, self.num_classes, **config)
        for branch in (net.left, net.right):
            branch.load_state_dict(ckpt["state_dict"])
        return "dual", config, ckpt.get("normalization"), net

    def batch_loss(self, run, batch):
        copies = 4 if self.opts.consistency > 0 else 1
        noise = self.noise(run, batch, copies)
        xb, yb = self.xy(run, batch)
        xb = xb.repeat((copies,) + (1,) * (xb.dim() - 1)) + noise.to(run.device)
        yb = yb.repeat(copies)
        logits = run.model(xb)
        loss = dual_loss(logits, yb, copies, self.opts.consistency)
        correct = int((logits.softmax(-1).sum(1).argmax(1) == yb).sum()) / copies
        return StepOutput(loss, correct, len(batch.idx), len(batch.idx) / max(len(batch.idx_all), 1))
