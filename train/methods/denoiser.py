"""denoiser: train a denoiser D for denoised smoothing of a frozen classifier F (models/denoisers.py).

Problem: given F (any ``--classifier`` source: certkit / reference checkpoint, ONNX, factory; never updated) and the
noise level sigma the smoothed classifier will use, find D such that F(D(x + e)), e ~ N(0, sigma^2 I), classifies
like F(x); then ``certkit certify --denoiser D --model F`` certifies F o D as one fixed base classifier.

Objectives (``--objective``; e, e' standard Gaussian noise in [0,1] pixel units, drawn from the run's generator):
    mse          mean ||D(x + sigma e) - x||^2 per pixel (Salman et al. NeurIPS 2020, "Denoised Smoothing", eq. (4));
                 needs no classifier.
    stability    CE(F(D(x + sigma e)), argmax F(x)) (Salman et al. eq. (5), "Stab"): F's own clean prediction is the
                 label, so the objective needs F's outputs only. Salman et al. fine-tune an MSE-trained D with it
                 ("Stab+MSE"): ``--init-from`` the MSE checkpoint.
    consistency  contrastive consistency across noise levels in the spirit of rRCM ("Robust Representation
                 Consistency Model via Contrastive Denoising"): representations r(v) = normalize(F(D(v))) (F's
                 logits) of x + sigma e and of x + s e' with s ~ U[0, sigma] per input (s near 0: nearly clean)
                 are positives, the other inputs of the batch negatives; loss = symmetric InfoNCE at temperature 0.1
                 + MSE / sigma^2 (the noise fraction D leaves, which keeps D an image-to-image denoiser).
``--zeroth-order`` (stability only): F is a BLACK BOX queried for outputs (ZO-AE-DS, Zhang et al. ICLR 2022). With
``ae_dncnn`` the decoder is frozen and merged into the black box, the gradient of the loss with respect to the
encoder's code z (``latent`` dims) is estimated from queries of F(decode(z + mu u)) (train/zeroth_order.py) and the
encoder and DnCNN train by backprop from z; with ``dncnn`` the estimate is taken at D's output (every pixel).
Queries per example and step: 1 (F(x)) + q + 1 (RGE) or d + 1 (CGE); the log and the checkpoint record them. The
paper's protocol: first ``--objective mse`` on ae_dncnn (white-box pre-training of the autoencoder), then
``--objective stability --zeroth-order --init-from`` that checkpoint.

Validation (the last ``val_fraction`` of the train split): val_mse (per pixel, one noise draw), and with a classifier
the accuracy of F(D(x)) on clean inputs and of F(D(x + sigma e)) under one noise draw.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from certkit.common.errors import CertkitError
from certkit.common.options import option
from certkit.models.checkpoint import load_checkpoint_file
from certkit.models.denoisers import (
    DENOISERS,
    AEDenoiser,
    build_denoiser,
    is_denoiser_checkpoint,
    read_denoiser,
    save_denoiser,
)
from certkit.train.harness import StepOutput
from certkit.train.network import NetworkTraining, augmentations, frozen_model, register_training
from certkit.train.zeroth_order import zo_gradient, zo_queries, zo_surrogate

OBJECTIVES = ("mse", "stability", "consistency")


@register_training
class DenoiserTraining(NetworkTraining):
    """Denoiser training for a frozen classifier (module docstring)."""

    name = "denoiser"
    help = ("a denoiser D for F = --classifier (denoised smoothing): --objective mse | stability | consistency, "
            "--zeroth-order for a black-box F (ZO-AE-DS)")
    default_arch = "dncnn"
    noisy = True
    log_columns = ("epoch", "loss", "train_accuracy", "val_mse", "val_accuracy", "val_noisy_accuracy", "queries",
                   "lr", "seconds")
    temperature = 0.1

    @dataclass
    class Options:
        """The frozen classifier the denoiser is trained for, the objective and the zeroth-order estimate."""

        init_from: str | None = option(None, "a denoiser checkpoint to continue from (e.g. MSE-trained, then "
                                       "fine-tuned with stability)")
        classifier: str | None = option(None, "the frozen classifier F (any --model source) the denoiser is trained "
                                        "for; needed by the stability and consistency objectives and for the "
                                        "validation accuracy of F(D(x + noise))")
        classifier_weights: str | None = option(None, "the state_dict of a --classifier package.module:factory")
        objective: str = option("mse", "mse ||D(x+e) - x||^2; stability CE(F(D(x+e)), F(x)) (Salman et al. 2020); "
                                "consistency (contrastive agreement of F(D(.)) across noise levels, rRCM-style, plus "
                                "MSE)", choices=("mse", "stability", "consistency"))
        zeroth_order: bool = option(False, "stability objective: F is a black box queried for outputs only; its "
                                    "gradient is estimated from queries (ZO-AE-DS, Zhang et al. 2022; with ae_dncnn "
                                    "the decoder is frozen and merged into the black box, and the estimate is taken "
                                    "in the code space)")
        zo_estimator: str = option("rge", "rge: --zo-queries random directions (q + 1 queries per example and "
                                   "step); cge: every coordinate (d + 1 queries)", choices=("rge", "cge"))
        zo_queries: int = option(20, "q: RGE random directions per example")
        zo_mu: float = option(0.005, "finite-difference step of the zeroth-order estimate (units of the code / "
                              "pixels)")

    def validate(self):
        super().validate()
        cfg = self.cfg
        if cfg.arch not in DENOISERS and not self.opts.init_from:
            raise CertkitError(f"--method denoiser trains {' or '.join(sorted(DENOISERS))}, not --arch {cfg.arch}")
        if self.opts.objective not in OBJECTIVES:
            raise CertkitError(f"unknown --objective {self.opts.objective!r}: use {', '.join(OBJECTIVES)}")
        if self.opts.objective != "mse" and not self.opts.classifier:
            raise CertkitError(f"--objective {self.opts.objective} needs the classifier: --classifier MODEL")
        if cfg.eps or cfg.init != "default":
            raise CertkitError("--method denoiser takes no --eps / --init (it trains for Gaussian noise)")
        if self.opts.zeroth_order:
            if self.opts.objective != "stability":
                raise CertkitError("--zeroth-order estimates the gradient of the black-box stability objective: "
                                   "use --objective stability (pre-train with --objective mse first)")
            if self.opts.zo_queries < 1 or not self.opts.zo_mu > 0:
                raise CertkitError(f"--zo-queries must be >= 1 and --zo-mu > 0, got {self.opts.zo_queries}, "
                                   f"{self.opts.zo_mu}")

    # -- set-up -------------------------------------------------------------------------------------
    def build_net(self, data):
        """The denoiser: ``init_from`` (a denoiser checkpoint for the data's input shape) or a new ``arch``; no
        normalization layer (a denoiser maps [0,1] images to [0,1] images)."""
        cfg = self.cfg
        shape = tuple(data.input_shape)
        if self.opts.init_from:
            ckpt = load_checkpoint_file(self.opts.init_from)
            if not is_denoiser_checkpoint(ckpt):
                raise CertkitError(f"--init-from {self.opts.init_from} is not a certkit denoiser checkpoint")
            net, init_shape = read_denoiser(ckpt, str(self.opts.init_from))
            if init_shape != shape:
                raise CertkitError(f"--init-from denoiser takes inputs {init_shape}, the data has {shape}")
            arch, arch_config = str(ckpt["arch"]), dict(ckpt.get("arch_config") or {})
        else:
            arch, arch_config = cfg.arch, dict(cfg.arch_config)
            net = build_denoiser(cfg.arch, shape, **arch_config)
        self.ae = isinstance(net, AEDenoiser)
        return arch, arch_config, None, net

    def parameters(self, model):
        """Every denoiser parameter, but the decoder's under --zeroth-order with ae_dncnn (merged into the black
        box, frozen)."""
        frozen = set(map(id, self.net.decoder_parameters())) if (self.opts.zeroth_order and self.ae) else set()
        for p in self.net.parameters():
            p.requires_grad_(id(p) not in frozen)
        return [p for p in self.net.parameters() if id(p) not in frozen]

    def setup(self, run):
        super().setup(run)
        cfg = self.cfg
        shape = tuple(self.data.input_shape)
        self.classifier = self._load_classifier(run, shape) if self.opts.classifier else None
        self.zo_generator = torch.Generator().manual_seed(cfg.seed + 7919 * (run.rank + 1))
        d = self.arch_config.get("latent", 32) if self.ae else math.prod(shape)
        o = self.opts
        self.queries = (1 + zo_queries(o.zo_estimator, d, o.zo_queries)) if o.zeroth_order else 0
        self.total_queries = 0

    def _load_classifier(self, run, shape) -> nn.Module:
        f = frozen_model(self.opts.classifier, run.device, "--classifier", self.opts.classifier_weights)
        try:
            with torch.no_grad():
                out = f(torch.full((2,) + shape, 0.5, device=run.device))
        except (RuntimeError, ValueError, TypeError, IndexError) as e:
            raise CertkitError(f"--classifier does not take the data's inputs of shape {shape}: "
                               f"{str(e).splitlines()[0][:160]}") from None
        if out.dim() != 2:
            raise CertkitError(f"--classifier must return logits (B, K), got shape {tuple(out.shape)} (a Dual RS "
                               f"model? train its denoiser on a single-head classifier)")
        return f

    def state_dict(self):
        return {"zo_generator": self.zo_generator.get_state(), "total_queries": self.total_queries}

    def load_state_dict(self, state):
        if "zo_generator" in state:
            self.zo_generator.set_state(state["zo_generator"])
        self.total_queries = int(state.get("total_queries", 0))

    def curves(self):
        return {"val_accuracy": "F(D(x)) clean", "val_noisy_accuracy": "F(D(x + noise))"}, "val_mse"

    # -- the loop -----------------------------------------------------------------------------------
    def batch_loss(self, run, batch):
        x, y = self.xy(run, batch)
        noisy = x + self.noise(run, batch).to(run.device)
        if self.opts.objective == "mse":
            loss = F.mse_loss(self.net(noisy), x)
            logits = None
            if self.classifier is not None:
                with torch.no_grad():
                    logits = self.classifier(self.net(noisy).detach())
        elif self.opts.objective == "stability":
            with torch.no_grad():
                target = self.classifier(x).argmax(1)
            if self.opts.zeroth_order:
                loss, logits = self._zo_stability(noisy, target, len(batch.idx))
            else:
                logits = self.classifier(self.net(noisy))
                loss = F.cross_entropy(logits, target)
        else:
            loss, logits = self._consistency(run, batch, x, noisy)
        correct = 0 if logits is None else int((logits.argmax(1) == y).sum())
        return StepOutput(loss, correct, len(batch.idx), len(batch.idx) / max(len(batch.idx_all), 1))

    def _zo_stability(self, noisy, target, count):
        """Stability loss through the black box: value exact, gradient estimated at the code (AE) or the output."""
        shape = tuple(noisy.shape[1:])
        if self.ae:
            z = self.net.encode(noisy)
            to_input = self.net.decode
        else:
            z = self.net(noisy).flatten(1)
            to_input = lambda v: v.reshape((-1,) + shape)

        @torch.no_grad()
        def black_box(points):  # (B, m, d) -> (B, m) losses, from F's outputs only
            B, m, _ = points.shape
            logits = self.classifier(to_input(points.reshape(B * m, -1)))
            return F.cross_entropy(logits, target.repeat_interleave(m), reduction="none").view(B, m)

        with torch.no_grad():
            logits = self.classifier(to_input(z.detach()))
            value = F.cross_entropy(logits, target)
        o = self.opts
        g = zo_gradient(black_box, z.detach(), o.zo_estimator, o.zo_queries, o.zo_mu, self.zo_generator)
        self.total_queries += self.queries * count
        return zo_surrogate(z, g, value), logits

    def _consistency(self, run, batch, x, noisy):
        cfg = self.cfg
        levels = torch.rand(len(batch.idx_all), generator=run.generator)[run.rank::run.world].to(run.device)
        other = x + cfg.sigma * levels.view((-1,) + (1,) * (x.dim() - 1)) * torch.randn(
            x.shape, generator=run.generator).to(run.device)
        den = self.net(noisy)
        logits = self.classifier(den)
        r1 = F.normalize(logits, dim=1)
        r2 = F.normalize(self.classifier(self.net(other)), dim=1)
        sim = r1 @ r2.T / self.temperature
        labels = torch.arange(len(x), device=x.device)
        nce = 0.5 * (F.cross_entropy(sim, labels) + F.cross_entropy(sim.T, labels))
        return nce + F.mse_loss(den, x) / cfg.sigma ** 2, logits

    @torch.no_grad()
    def end_epoch(self, run, epoch, stats):
        cfg = self.cfg
        self.net.eval()
        nan = float("nan")
        gen = torch.Generator().manual_seed(cfg.seed + 1)
        val = self.val_set
        row = {"epoch": epoch, "loss": float(stats[0] / stats[2]),
               "train_accuracy": float(stats[1] / stats[2]) if self.classifier is not None else nan,
               "val_mse": nan, "val_accuracy": nan, "val_noisy_accuracy": nan, "queries": self.queries,
               "lr": run.optimizer.param_groups[0]["lr"]}
        if val is not None:
            sq = clean = noisy_ok = 0.0
            for i in range(0, len(val), 512):
                xb, yb = val.x[i:i + 512], val.y[i:i + 512]
                noisy = xb + cfg.sigma * torch.randn(xb.shape, generator=gen)
                xb, yb, noisy = xb.to(run.device), yb.to(run.device), noisy.to(run.device)
                den = self.net(noisy)
                sq += float(((den - xb) ** 2).mean(dim=tuple(range(1, xb.dim()))).sum())
                if self.classifier is not None:
                    clean += int((self.classifier(self.net(xb)).argmax(1) == yb).sum())
                    noisy_ok += int((self.classifier(den).argmax(1) == yb).sum())
            row["val_mse"] = sq / len(val)
            if self.classifier is not None:
                row["val_accuracy"], row["val_noisy_accuracy"] = clean / len(val), noisy_ok / len(val)
        row["seconds"] = time.perf_counter() - run.epoch_started
        return row

    def postfix(self, row):
        return {k: f"{row[k]:.3f}" for k in ("val_mse", "val_noisy_accuracy") if row[k] == row[k]}

    # -- persistence --------------------------------------------------------------------------------
    def save(self, run, train_state, row):
        cfg = self.cfg
        meta = {"dataset": cfg.dataset, "method": self.name, "objective": self.opts.objective, "sigma": cfg.sigma,
                "epochs": row["epoch"], "seed": cfg.seed, "recipe": self.config(), "augment": augmentations(cfg),
                "classifier": str(self.opts.classifier) if self.opts.classifier else None,
                "init_from": str(self.opts.init_from) if self.opts.init_from else None,
                "zeroth_order": ({"estimator": self.opts.zo_estimator, "q": self.opts.zo_queries,
                                  "mu": self.opts.zo_mu,
                                  "queries_per_example_step": self.queries, "total_queries": self.total_queries,
                                  "estimated_at": "autoencoder code" if self.ae else "denoiser output"}
                                 if self.opts.zeroth_order else None),
                "world_size": run.world,
                **{k: row[k] for k in ("val_mse", "val_accuracy", "val_noisy_accuracy")},
                "data_split": (f"{cfg.dataset} train split minus the last {cfg.val_fraction:g} (validation)"
                               if self.val_set is not None else f"{cfg.dataset} train split")}
        save_denoiser(cfg.out, self.net, self.arch, self.arch_config, self.data.input_shape, metadata=meta,
                      extra={"train_state": train_state})
