"""``certkit train``: classifiers trained in the harness (train/harness.py) with a registered loss.

:class:`ClassifierTraining` is what every ``certkit train --method`` shares: the data (train split, the last
``val_fraction`` held out for validation), the model (zoo architecture behind a normalization layer computed from the
training data), Adam or SGD with StepLR / MultiStepLR, shuffled minibatches split across ranks, the per-epoch log
row (clean, under-noise, IBP- / CROWN-IBP-verified accuracy and IBP tightness on the validation split), and the
certkit checkpoint (rewritten every epoch with the training state, so ``--resume`` continues exactly). A loss is
one subclass in ``train/methods/`` registered with :func:`register_training`; it overrides :meth:`batch_loss`
(and, where it needs to, how the model is built or which parameters train).
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from certkit.common.errors import CertkitError
from certkit.common.registry import Registry
from certkit.datasets import Dataset, load_dataset
from certkit.models.checkpoint import read_checkpoint, save_checkpoint
from certkit.models.zoo import NormalizeLayer, build_model
from certkit.train.harness import Run, StepOutput, TrainingMethod, fit
from certkit.train.init import ibp_init

LOG_COLUMNS = ("epoch", "loss", "train_accuracy", "val_accuracy", "val_noisy_accuracy", "val_ibp_verified",
               "val_crown_ibp_verified", "val_tightness", "eps", "kappa", "beta", "lr", "seconds")


@dataclass
class TrainConfig:
    """Settings of ``certkit train``. sigma and eps are in [0,1] data-range units (eps: Linf radius).

    Method-specific fields say which methods read them (see each method's module in train/methods/).
    """

    out: str
    method: str = "gaussian"
    dataset: str = "digits"
    data_path: str | None = None
    arch: str | None = None        # None: the method's default_arch (mlp; dncnn for denoiser)
    arch_config: dict = field(default_factory=dict)
    sigma: float = 0.25
    epochs: int = 30
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_step: int = 0          # StepLR period in epochs (0: constant lr)
    lr_gamma: float = 0.1
    lr_milestones: list = field(default_factory=list)  # MultiStepLR epochs (used instead of lr_step when given)
    val_fraction: float = 0.1
    normalize: bool = True
    seed: int = 0
    device: str = "auto"
    eps: float = 0.0               # target Linf eps: validation metrics, and the training eps unless eps_train
    eps_train: float | None = None
    schedule: str = "smoothed"
    schedule_start: int = 1        # first epoch of the eps ramp (eps = 0 before it)
    schedule_length: int = 0       # ramp length in epochs (0: half of the epochs)
    kappa_final: float = 0.5
    beta_final: float = 0.0
    loss_fusion: bool | None = None  # crown-ibp: bound the cross-entropy itself on one backward row (Xu et al.
    #                                  2020); None: on for crown-ibp (as auto_LiRPA and Shi et al. train), off else
    init: str = "default"          # "ibp": IBP initialization (Shi et al. 2021)
    reg_lambda: float = 0.0        # warm-up regularizers (Shi et al. 2021 use 0.5)
    grad_clip: float = 0.0         # max gradient norm (0: off)
    init_from: str | None = None   # dual, rct: the certkit or reference checkpoint training starts from
    consistency: float = 0.0       # dual: weight of the consistency loss over 4 noise copies (DRS paper: 15)
    sabr_lambda: float = 0.4       # sabr: small-box radius as a fraction of eps
    expressive_alpha: float = 0.5  # mtl-ibp, cc-ibp, exp-ibp: weight of the IBP term
    attack_steps: int = 8          # sabr, mtl-ibp, cc-ibp, exp-ibp: PGD steps of the training attack
    augment: str = "auto"          # "auto" (crop,flip for cifar10, none otherwise), "none", or a list: crop,flip
    alpha: float = 0.1             # rct: target miscoverage of the RSCP+ sets
    eps_l2: float = 0.0            # rct: L2 radius (data-range units) the RSCP+ sets must withstand
    classifier: str | None = None  # denoiser: the frozen classifier F; mixing: the robust base classifier
    objective: str = "mse"         # denoiser: mse, stability or consistency
    zeroth_order: bool = False     # denoiser: F is a black box, its gradient estimated from queries (ZO-AE-DS)
    zo_estimator: str = "rge"      # denoiser: rge (q random directions) or cge (every coordinate)
    zo_queries: int = 20           # denoiser: q of RGE
    zo_mu: float = 0.005           # denoiser: finite-difference step of the ZO estimate
    standard_model: str | None = None  # mixing: the standard classifier g of adaptive smoothing
    mixing_floor: float = 0.0      # mixing: least weight of the robust part (> 0.5 keeps a certificate)

    @property
    def eps_max(self) -> float:
        return self.eps if self.eps_train is None else self.eps_train


REGISTRY = Registry("training method", "certkit.train.methods")


def register_training(cls: type[ClassifierTraining]) -> type[ClassifierTraining]:
    """Class decorator: make ``cls`` available as ``certkit train --method cls.name``.

    Raises:
        ValueError: the name is empty or taken.
    """
    return REGISTRY.register(cls)


def training_methods() -> dict[str, type[ClassifierTraining]]:
    """Every registered training method by name (the modules of train/methods/ are imported first)."""
    return REGISTRY.all()


def _split(data: Dataset, fraction: float) -> tuple[Dataset, Dataset | None]:
    """Last ``fraction`` of the training split -> validation (fixed, no shuffling)."""
    n_val = int(round(len(data) * fraction))
    if n_val == 0:
        return data, None
    cut = len(data) - n_val
    mk = lambda sl, split: Dataset(data.x[sl], data.y[sl], data.name, split, data.num_classes, data.source)
    return mk(slice(0, cut), "train"), mk(slice(cut, None), "val")


@torch.inference_mode()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, sigma: float = 0.0, batch: int = 512,
             generator: torch.Generator | None = None) -> float:
    """Top-1 accuracy of ``model`` on (x, y); with sigma > 0 on one noisy copy x + N(0, sigma^2 I) per input."""
    device = next(model.parameters()).device
    correct = 0
    for i in range(0, len(y), batch):
        xb = x[i:i + batch].to(device)
        if sigma > 0:
            xb = xb + sigma * torch.randn(xb.shape, generator=generator, device=device)
        out = model(xb)
        pred = out.softmax(-1).sum(1).argmax(-1) if out.dim() == 3 else out.argmax(1)  # Dual RS: both branches
        correct += int((pred.cpu() == y[i:i + batch]).sum())
    return correct / max(len(y), 1)


@torch.no_grad()
def verified_metrics(model: nn.Module, bm, x: torch.Tensor, y: torch.Tensor, eps: float, num_classes: int,
                     batch: int = 256) -> dict:
    """IBP- and CROWN-IBP-verified accuracy and mean IBP tightness (Mao et al. 2024) at Linf eps."""
    from certkit.verifiers import linf_ball, margin_spec
    from certkit.verifiers.tightness import tightness

    device = next(model.parameters()).device
    ibp = cibp = 0
    taus = []
    for i in range(0, len(y), batch):
        xb, yb = x[i:i + batch].to(device), y[i:i + batch].to(device)
        C = margin_spec(yb, num_classes)
        pert = linf_ball(xb, eps)
        lb_ibp, bounds = bm.ibp_margins(pert, C)
        lb_cibp = bm.crown_ibp_lower(pert, C, bounds)
        ibp += int((lb_ibp > 0).all(1).sum())
        cibp += int((lb_cibp > 0).all(1).sum())
        taus.append(float(tightness(bm, xb, eps, C)) * len(yb))
    n = max(len(y), 1)
    return {"val_ibp_verified": ibp / n, "val_crown_ibp_verified": cibp / n, "val_tightness": sum(taus) / n}


def frozen_model(spec: str, device: torch.device) -> nn.Module:
    """A model that a method trains around but never updates (any ``--model`` source, models.load_model): on
    ``device``, in eval mode, without gradients for its parameters.

    Raises:
        CertkitError: what load_model raises for a missing, corrupt or unsupported model.
    """
    from certkit.models.checkpoint import load_model

    module = load_model(spec).module.to(device).eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def augmentations(cfg: TrainConfig) -> list[str]:
    """The augmentations of ``cfg.augment``: auto = crop and flip for CIFAR-10 (as the papers train), none else."""
    if cfg.augment == "auto":
        return ["crop", "flip"] if cfg.dataset == "cifar10" else []
    if cfg.augment in ("none", ""):
        return []
    return [a.strip() for a in cfg.augment.split(",") if a.strip()]


def augment(x: torch.Tensor, batch: Batch, run: Run, kinds: list, pad: int = 4) -> torch.Tensor:
    """Random crop after zero padding by ``pad`` and random horizontal flip of images (B, C, H, W), the randomness
    drawn from the run's generator for the whole global batch (every rank the same) and cut to this rank's rows."""
    n = len(batch.idx_all)
    shifts = torch.randint(0, 2 * pad + 1, (n, 2), generator=run.generator)[run.rank::run.world]
    flips = (torch.rand(n, generator=run.generator) < 0.5)[run.rank::run.world]
    out = x
    if "crop" in kinds:
        H, W = x.shape[-2:]
        padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
        out = torch.stack([padded[i, :, dy:dy + H, dx:dx + W] for i, (dy, dx) in enumerate(shifts.tolist())])
    if "flip" in kinds:
        out = torch.where(flips.view(-1, 1, 1, 1), out.flip(-1), out)
    return out


@dataclass
class Batch:
    """One minibatch: ``idx_all`` the global batch's indices into the train split, ``idx`` this rank's share,
    ``epoch`` (1-based) and ``b`` its index in the epoch."""

    idx_all: torch.Tensor
    idx: torch.Tensor
    epoch: int
    b: int


class ClassifierTraining(TrainingMethod):
    """The shared part of ``certkit train`` methods (module docstring).

    Class attributes a method may set:
        help: one line for ``certkit train --help``;
        noisy: trains on Gaussian noise of ``sigma`` (recorded in the checkpoint; validation under noise too);
        certified: needs eps > 0 and the bound engine during training;
        holds_out_validation: keep the last ``val_fraction`` of the train split for validation;
        min_batch: drop a last batch smaller than this;
        loads_weights: the network starts from ``init_from`` (its normalization, if any, is kept as it is);
        default_arch: the architecture when ``arch`` is None;
        normalizes: put a normalization layer computed from the training data in front of a new network.
    """

    help = ""
    default_arch = "mlp"
    normalizes = True
    noisy = False
    certified = False
    uses_crown_ibp = False  # the loss uses CROWN-IBP's bound (--loss-fusion applies)
    holds_out_validation = True
    min_batch = 1
    loads_weights = False
    log_columns = LOG_COLUMNS

    def __init__(self, cfg: TrainConfig):
        if cfg.arch is None:
            cfg = dataclasses.replace(cfg, arch=self.default_arch)
        if cfg.loss_fusion is None:
            cfg = dataclasses.replace(cfg, loss_fusion=self.uses_crown_ibp)
        self.cfg = cfg
        self.bm = None

    # -- options ------------------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise CertkitError for options out of range (extend in a method for its own options)."""
        cfg = self.cfg
        if self.noisy and not cfg.sigma > 0:
            raise CertkitError(f"sigma must be > 0 for {self.name} training, got {cfg.sigma}")
        if cfg.epochs < 1 or cfg.batch_size < 1:
            raise CertkitError("--epochs and --batch must be >= 1")
        if not cfg.lr > 0:
            raise CertkitError(f"--lr must be > 0, got {cfg.lr}")
        if not 0.0 <= cfg.val_fraction < 1.0:
            raise CertkitError(f"--val-fraction must be in [0, 1), got {cfg.val_fraction}")
        if cfg.optimizer not in ("adam", "sgd"):
            raise CertkitError(f"unknown optimizer {cfg.optimizer!r}: use adam or sgd")
        if not cfg.eps >= 0 or (cfg.eps_train is not None and not cfg.eps_train >= 0):
            raise CertkitError("--eps and --eps-train must be >= 0")
        if self.certified and not cfg.eps_max > 0:
            raise CertkitError(f"--method {self.name} needs --eps > 0 (Linf radius in [0,1] pixel units)")
        if cfg.init not in ("default", "ibp"):
            raise CertkitError(f"unknown --init {cfg.init!r}: use default or ibp")
        if not 0 <= cfg.kappa_final <= 1 or not 0 <= cfg.beta_final <= 1:
            raise CertkitError("--kappa-final and --beta-final must lie in [0, 1]")
        if not set(augmentations(cfg)) <= {"crop", "flip"}:
            raise CertkitError(f"unknown --augment {cfg.augment!r}: use auto, none, or crop,flip")
        if cfg.loss_fusion and not self.uses_crown_ibp:
            raise CertkitError(f"--loss-fusion is for --method crown-ibp, not {self.name}")
        if cfg.init == "ibp" and self.loads_weights:
            raise CertkitError("--init ibp initializes a new network, but this method starts from --init-from")

    def checkpoint_path(self) -> Path:
        return Path(self.cfg.out)

    def log_path(self) -> Path:
        return Path(self.cfg.out).with_suffix(".log.csv")

    def curves_path(self) -> Path:
        return Path(self.cfg.out).with_suffix(".curves.png")

    def curves(self):
        return ({"val_accuracy": "clean", "val_ibp_verified": "IBP verified",
                 "val_crown_ibp_verified": "CROWN-IBP verified", "val_noisy_accuracy": "under noise"}, "eps")

    # -- model --------------------------------------------------------------------------------------
    def build_net(self, data: Dataset) -> tuple[str, dict, dict | None, nn.Module]:
        """(arch, arch_config, normalization or None to compute it from the data, the network); sets
        ``self.num_classes`` (outputs of the network)."""
        cfg = self.cfg
        self.num_classes = data.num_classes
        return cfg.arch, cfg.arch_config, None, build_model(cfg.arch, data.input_shape, data.num_classes,
                                                           **cfg.arch_config)

    def init_checkpoint(self, data: Dataset) -> dict:
        """The ``init_from`` checkpoint (certkit or reference format, one converter) after checking that it fits the
        data; sets ``self.num_classes`` to its outputs.

        Raises:
            CertkitError: unreadable file, other input shape, fewer classes than the data's labels.
        """
        ckpt = read_checkpoint(self.cfg.init_from)
        if tuple(ckpt["input_shape"]) != tuple(data.input_shape):
            raise CertkitError(f"--init-from model takes inputs {tuple(ckpt['input_shape'])}, data has "
                               f"{data.input_shape}")
        if int(ckpt["num_classes"]) < data.num_classes:
            raise CertkitError(f"--init-from model has {ckpt['num_classes']} classes, the data has labels up to "
                               f"{data.num_classes - 1}")
        self.num_classes = int(ckpt["num_classes"])
        return ckpt

    def parameters(self, model: nn.Module):
        """The parameters the optimizer trains (default: all)."""
        return model.parameters()

    def make_optimizer(self, params):
        cfg = self.cfg
        if cfg.optimizer == "adam":
            opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        else:
            opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        if cfg.lr_milestones:
            sched = torch.optim.lr_scheduler.MultiStepLR(opt, list(cfg.lr_milestones), cfg.lr_gamma)
        else:
            sched = torch.optim.lr_scheduler.StepLR(opt, cfg.lr_step, cfg.lr_gamma) if cfg.lr_step > 0 else None
        return opt, sched

    def train_mode(self, model: nn.Module) -> None:
        model.train()

    def setup(self, run: Run) -> None:
        cfg = self.cfg
        self.validate()
        data = load_dataset(cfg.dataset, cfg.data_path, split="train")
        self.data = data
        self.train_set, self.val_set = _split(data, cfg.val_fraction if self.holds_out_validation else 0.0)
        torch.manual_seed(cfg.seed)
        self.arch, self.arch_config, norm, self.net = self.build_net(data)
        if cfg.init == "ibp":
            ibp_init(self.net, torch.Generator().manual_seed(cfg.seed))
        if norm is None and cfg.normalize and self.normalizes and not self.loads_weights:
            x = self.train_set.x
            dims = [0] + list(range(2, x.dim()))
            chan_mean = x.mean(dim=dims) if x.dim() > 2 else x.mean().reshape(1)
            chan_std = x.std(dim=dims) if x.dim() > 2 else x.std().reshape(1)
            norm = {"mean": [round(float(v), 6) for v in chan_mean],
                    "std": [round(max(float(v), 1e-3), 6) for v in chan_std]}
        self.norm = norm
        run.model = (nn.Sequential(NormalizeLayer(norm["mean"], norm["std"]), self.net) if norm else self.net
                     ).to(run.device)
        run.optimizer, run.scheduler = self.make_optimizer(self.parameters(run.model))
        run.generator = torch.Generator().manual_seed(cfg.seed)
        run.grad_clip = cfg.grad_clip

    def prepare(self, run: Run) -> None:
        if self.certified or self.cfg.eps > 0:
            from certkit.verifiers import BoundedModule
            from certkit.verifiers.ops import track_batch_stats

            self.bm = BoundedModule(run.model, self.data.input_shape)
            track_batch_stats(run.model)

    def metadata(self, epoch: int, row: dict, world: int) -> dict:
        cfg = self.cfg
        certified = self.bm is not None
        return {"dataset": cfg.dataset, "method": self.name, "epochs": epoch, "seed": cfg.seed,
                "recipe": self.config(), "augment": augmentations(cfg),
                "sigma": cfg.sigma if self.noisy else None,
                "eps": cfg.eps if cfg.eps > 0 else None, "eps_train": cfg.eps_max if certified else None,
                "norm": "inf" if certified else None, "world_size": world,
                **{k: row[k] for k in ("val_accuracy", "val_noisy_accuracy", "val_ibp_verified",
                                       "val_crown_ibp_verified", "val_tightness")},
                "data_split": (f"{cfg.dataset} train split minus the last {cfg.val_fraction:g} (validation)"
                               if self.val_set is not None else f"{cfg.dataset} train split")}

    def save(self, run: Run, train_state: dict, row: dict) -> None:
        save_checkpoint(self.cfg.out, self.net, self.arch, self.arch_config, self.data.input_shape,
                        self.num_classes, self.norm, metadata=self.metadata(row["epoch"], row, run.world),
                        extra={"train_state": train_state})

    def load(self) -> dict | None:
        from certkit.models.checkpoint import load_checkpoint_file

        ckpt = load_checkpoint_file(self.checkpoint_path(), allow_pickle=False)
        return ckpt if isinstance(ckpt, dict) else None

    def restore(self, run: Run, ckpt: dict) -> None:
        self.net.load_state_dict(ckpt["state_dict"])

    # -- the loop -----------------------------------------------------------------------------------
    def batches(self, run: Run, epoch: int):
        self.train_mode(run.model)
        n, bs = len(self.train_set), self.cfg.batch_size
        perm = torch.randperm(n, generator=run.generator)
        self.last_schedule = (0.0, 0.0, 0.0)
        for b, i in enumerate(range(0, n, bs)):
            idx_all = perm[i:i + bs]
            if len(idx_all) < self.min_batch:
                break
            yield Batch(idx_all, idx_all[run.rank::run.world], epoch, b)

    def noise(self, run: Run, batch: Batch, copies: int = 1) -> torch.Tensor:
        """Gaussian noise (sigma) for ``copies`` x the global batch, drawn from the run's generator (so every rank
        draws the same numbers) and cut to this rank's rows: (copies * |idx|, *input_shape)."""
        shape = tuple(self.train_set.x.shape[1:])
        noise = self.cfg.sigma * torch.randn((len(batch.idx_all) * copies,) + shape, generator=run.generator)
        noise = noise.view((copies, len(batch.idx_all)) + shape)[:, run.rank::run.world]
        return noise.reshape((-1,) + shape)

    def xy(self, run: Run, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's clean inputs (augmented when ``augment`` says so) and labels on the device."""
        x = self.train_set.x[batch.idx]
        kinds = augmentations(self.cfg)
        if kinds and x.dim() == 4:
            x = augment(x, batch, run, kinds)
        return x.to(run.device), self.train_set.y[batch.idx].to(run.device)

    def batch_loss(self, run: Run, batch: Batch) -> StepOutput:
        """The loss of one batch (default: cross-entropy on the clean inputs)."""
        xb, yb = self.xy(run, batch)
        logits = run.model(xb)
        return self.output(F.cross_entropy(logits, yb), logits, yb, batch)

    def output(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, batch: Batch) -> StepOutput:
        """StepOutput with the train accuracy of ``logits`` and this rank's share of the global batch."""
        return StepOutput(loss, int((logits.argmax(1) == y).sum()), len(batch.idx),
                          len(batch.idx) / max(len(batch.idx_all), 1))

    def step(self, run: Run, batch: Batch) -> StepOutput:
        return self.batch_loss(run, batch)

    def end_epoch(self, run: Run, epoch: int, stats: torch.Tensor) -> dict:
        cfg = self.cfg
        model = run.model
        model.eval()
        eval_gen = torch.Generator(device=run.device).manual_seed(cfg.seed + 1)
        nan = float("nan")
        eps_t, kappa, beta = self.last_schedule
        val = self.val_set
        row = {"epoch": epoch, "loss": float(stats[0] / stats[2]), "train_accuracy": float(stats[1] / stats[2]),
               "val_accuracy": accuracy(model, val.x, val.y) if val else nan,
               "val_noisy_accuracy": (accuracy(model, val.x, val.y, cfg.sigma, generator=eval_gen)
                                      if val and self.noisy else nan),
               "val_ibp_verified": nan, "val_crown_ibp_verified": nan, "val_tightness": nan,
               "eps": eps_t, "kappa": kappa, "beta": beta, "lr": run.optimizer.param_groups[0]["lr"]}
        if self.bm is not None and val is not None and cfg.eps > 0:
            row.update(verified_metrics(model, self.bm, val.x, val.y, cfg.eps, self.data.num_classes))
        row["seconds"] = time.perf_counter() - run.epoch_started
        return row


def train(cfg: TrainConfig, resume: bool = False, quiet: bool = False) -> dict:
    """Train a model with the registered method ``cfg.method`` and write it to ``cfg.out`` (certkit checkpoint)
    with a CSV log and a PNG of the curves beside it. Under torchrun (WORLD_SIZE > 1) the processes train
    data-parallel; rank 0 writes the files.

    Returns:
        the final epoch's log row (dict with LOG_COLUMNS).
    Raises:
        CertkitError: unknown method, bad options, unreadable data, or ``resume`` with a checkpoint of other settings.
    """
    method = REGISTRY.get(cfg.method)(cfg)
    return fit(method, cfg.device, resume, quiet, cfg.grad_clip)
