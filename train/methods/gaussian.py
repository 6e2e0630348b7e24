"""gaussian: noise augmentation (Cohen, Rosenfeld, Kolter ICML 2019, Sec. 4), the training half of Gaussian
randomized smoothing: each batch is replaced by x + N(0, sigma^2 I) in raw [0,1] pixel units, before the model's
normalization layer."""
import torch.nn.functional as F

from certkit.train.classifier import ClassifierTraining
from certkit.train.network import register_training


@register_training
class Gaussian(ClassifierTraining):
    """Cross-entropy on one Gaussian-noised copy of each input."""

    name = "gaussian"
    help = "noise augmentation x + N(0, sigma^2) (Cohen et al. 2019)"
    noisy = True

    def batch_loss(self, run, batch):
        noise = self.noise(run, batch)
        xb, yb = self.xy(run, batch)
        xb = xb + noise.to(run.device)
        logits = run.model(xb)
        return self.output(F.cross_entropy(logits, yb), logits, yb, batch)
