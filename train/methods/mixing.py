"""mixing: train the mixing network of adaptive smoothing (models/mixing.py) for a standard classifier g
(``--standard-model``) and a robust base classifier f (``--classifier``, smoothed with ``sigma``); both frozen.

After Bai, Anderson, Kim, Sojoudi (SIMODS 2024), which train the mixing network on clean and attacked inputs of the
mixed classifier. Per batch (surrogates, for gradients): p^r(v) ~ mean over ``n_noise`` = 8 draws of softmax f(v + e)
(the draws fixed within the step), h(v) = (1 - w(v)) softmax g(v) + w(v) p^r(v);
    loss = NLL(h(x), y) + NLL(h(x_adv), y),
x_adv = L2 PGD on NLL(h(.), y) within ``eps_l2`` ([0,1] pixel units; ``attack_steps`` steps of 2.5 eps / steps,
data range kept; no adversarial term when eps_l2 = 0). Only the mixing network trains. Validation: clean and attacked
accuracy of the surrogate h and the mean weight on each (``val_w_clean``, ``val_w_adv``): a useful network leans on g
for clean inputs and on the robust part under attack.

``--mixing-floor`` sets the least weight of the robust part; above 1/2 the mixture keeps the certificate of the
fixed weight ``floor`` (models/mixing.py); at or below 1/2 it is an EMPIRICAL classifier without a certificate.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from certkit.common.errors import CertkitError
from certkit.common.options import option
from certkit.models.mixing import MixingNetwork, save_mixing
from certkit.train.harness import StepOutput
from certkit.train.network import NetworkTraining, frozen_model, register_training
from certkit.verifiers.attack import pgd_l2


@register_training
class MixingTraining(NetworkTraining):
    """Adversarial training of the adaptive-smoothing mixing network (module docstring)."""

    name = "mixing"
    help = ("the mixing network of adaptive smoothing for --standard-model g and --classifier f (robust, smoothed "
            "with --sigma), trained on clean and L2-attacked (--eps-l2) inputs; --mixing-floor > 0.5 keeps a "
            "certificate")
    noisy = True
    log_columns = ("epoch", "loss", "train_accuracy", "val_accuracy", "val_adv_accuracy", "val_w_clean", "val_w_adv",
                   "lr", "seconds")
    n_noise, hidden = 8, 32

    @dataclass
    class Options:
        """The two classifiers the network mixes, its floor, and the training attack."""

        classifier: str | None = option(None, "the robust base classifier f (any --model source), smoothed with "
                                        "--sigma")
        standard_model: str | None = option(None, "the standard (accurate) classifier g whose mixture with the "
                                            "smoothed --classifier the mixing network weighs")
        classifier_weights: str | None = option(None, "the state_dict of a --classifier package.module:factory")
        standard_model_weights: str | None = option(None, "the state_dict of a --standard-model package.module:factory")
        mixing_floor: float = option(0.0, "least weight of the robust part; above 0.5 the mixture keeps the "
                                     "certificate of that fixed weight, else it is empirical only")
        eps_l2: float = option(0.0, "L2 radius (ABSOLUTE, [0,1] pixel units) of the training attack on the mixed "
                               "classifier")
        attack_steps: int = option(8, "PGD steps of the training attack (step 2.5 eps / steps)")

    def validate(self):
        super().validate()
        cfg = self.cfg
        if not self.opts.classifier or not self.opts.standard_model:
            raise CertkitError("--method mixing needs --standard-model G (accurate) and --classifier F (robust base "
                               "model, smoothed with --sigma)")
        if not 0 <= self.opts.mixing_floor < 1 or not self.opts.eps_l2 >= 0 or self.opts.attack_steps < 1:
            raise CertkitError("--mixing-floor must lie in [0, 1), --eps-l2 >= 0, --attack-steps >= 1")
        if cfg.eps or cfg.init != "default":
            raise CertkitError("--method mixing takes its attack radius as --eps-l2 (L2) and no --eps / --init")

    def build_net(self, data):
        """The mixing network for the classes of g and f (loaded here on the CPU, frozen); no normalization."""
        o = self.opts
        self.g = frozen_model(o.standard_model, torch.device("cpu"), "--standard-model", o.standard_model_weights)
        self.f = frozen_model(o.classifier, torch.device("cpu"), "--classifier", o.classifier_weights)
        with torch.no_grad():
            out_g, out_f = self.g(data.x[:2]), self.f(data.x[:2])
        if out_g.dim() != 2 or out_g.shape != out_f.shape:
            raise CertkitError(f"--standard-model returns {tuple(out_g.shape)}, --classifier {tuple(out_f.shape)}: "
                               f"both must be (batch, classes) logits with the same classes")
        self.num_classes = out_g.shape[1]
        return "mixing_mlp", {}, None, MixingNetwork(self.num_classes, self.hidden, self.opts.mixing_floor)

    def setup(self, run):
        super().setup(run)
        self.g, self.f = self.g.to(run.device), self.f.to(run.device)

    def curves(self):
        return {"val_accuracy": "h clean", "val_adv_accuracy": "h attacked", "val_w_clean": "mean w clean",
                "val_w_adv": "mean w attacked"}, None

    def mixture(self, v: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log h(v) (B, K), w(v) (B,)) with the surrogate p^r over ``noise`` (m, B, *shape)."""
        B = v.shape[0]
        p_g = torch.softmax(self.g(v), 1)
        p_f = torch.softmax(self.f(v), 1)
        noisy = (v.unsqueeze(0) + noise).reshape((-1,) + tuple(v.shape[1:]))
        p_r = torch.softmax(self.f(noisy), 1).view(noise.shape[0], B, -1).mean(0)
        w = self.net(p_g, p_f)
        h = (1 - w)[:, None] * p_g + w[:, None] * p_r
        return torch.log(h.clamp_min(1e-12)), w

    def attack(self, x, y, noise, generator) -> torch.Tensor:
        nll = lambda v: -torch.nn.functional.nll_loss(self.mixture(v, noise)[0], y, reduction="none")
        x_adv, _ = pgd_l2(nll, x, self.opts.eps_l2, self.opts.attack_steps, restarts=1, generator=generator,
                          early_stop=False)
        return x_adv

    def _noise(self, x, generator):  # validation noise: (n_noise, B, *shape)
        return self.cfg.sigma * torch.randn((self.n_noise,) + tuple(x.shape), generator=generator).to(x.device)

    def batch_loss(self, run, batch):
        x, y = self.xy(run, batch)
        noise = self.noise(run, batch, self.n_noise).view((self.n_noise,) + tuple(x.shape)).to(run.device)
        logh, _ = self.mixture(x, noise)
        loss = torch.nn.functional.nll_loss(logh, y)
        if self.opts.eps_l2 > 0:
            x_adv = self.attack(x, y, noise, None)
            loss = loss + torch.nn.functional.nll_loss(self.mixture(x_adv, noise)[0], y)
        return StepOutput(loss, int((logh.argmax(1) == y).sum()), len(batch.idx),
                          len(batch.idx) / max(len(batch.idx_all), 1))

    def end_epoch(self, run, epoch, stats):
        cfg = self.cfg
        self.net.eval()
        nan = float("nan")
        gen = torch.Generator().manual_seed(cfg.seed + 1)
        row = {"epoch": epoch, "loss": float(stats[0] / stats[2]), "train_accuracy": float(stats[1] / stats[2]),
               "val_accuracy": nan, "val_adv_accuracy": nan, "val_w_clean": nan, "val_w_adv": nan,
               "lr": run.optimizer.param_groups[0]["lr"]}
        val = self.val_set
        if val is not None:
            acc = adv = wc = wa = 0.0
            for i in range(0, len(val), 256):
                x, y = val.x[i:i + 256].to(run.device), val.y[i:i + 256].to(run.device)
                noise = self._noise(x, gen)
                with torch.no_grad():
                    logh, w = self.mixture(x, noise)
                acc += int((logh.argmax(1) == y).sum())
                wc += float(w.sum())
                x_adv = self.attack(x, y, noise, None) if self.opts.eps_l2 > 0 else x
                with torch.no_grad():
                    logh, w = self.mixture(x_adv, noise)
                adv += int((logh.argmax(1) == y).sum())
                wa += float(w.sum())
            n = len(val)
            row.update(val_accuracy=acc / n, val_adv_accuracy=adv / n, val_w_clean=wc / n, val_w_adv=wa / n)
        row["seconds"] = time.perf_counter() - run.epoch_started
        return row

    def postfix(self, row):
        return {k: f"{row[k]:.3f}" for k in ("val_accuracy", "val_adv_accuracy") if row[k] == row[k]}

    def save(self, run, train_state, row):
        cfg = self.cfg
        meta = {"dataset": cfg.dataset, "method": self.name, "epochs": row["epoch"], "seed": cfg.seed,
                "recipe": self.config(), "standard_model": str(self.opts.standard_model),
                "classifier": str(self.opts.classifier),
                "sigma": cfg.sigma, "eps_l2": self.opts.eps_l2, "floor": self.opts.mixing_floor,
                "certifies": self.net.certifies, "n_noise": self.n_noise, "world_size": run.world,
                **{k: row[k] for k in ("val_accuracy", "val_adv_accuracy", "val_w_clean", "val_w_adv")}}
        save_mixing(cfg.out, self.net, self.num_classes, self.hidden, meta, extra={"train_state": train_state})
