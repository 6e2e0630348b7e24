"""``certkit train``: one network trained on a data set's training split, in the harness (train/harness.py).

:class:`NetworkTraining` is what every ``certkit train --method`` shares: the shared settings (:class:`TrainConfig`)
and the method's own options (its ``Options``), the data (train split, the last ``val_fraction`` held out for
validation), Adam or SGD with StepLR / MultiStepLR, shuffled minibatches split across ranks (with the crop and flip
augmentation), Gaussian noise drawn alike on every rank, and the checkpoint paths. Classifiers build on it in
classifier.py; denoisers and mixing networks, which train no classifier, build on it directly (train/methods/). A
method is one subclass registered with :func:`register_training`.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from certkit.common.errors import CertkitError
from certkit.common.options import build_options, options_dict
from certkit.common.registry import Registry
from certkit.datasets import Dataset, load_dataset
from certkit.train.harness import StepOutput, TrainingMethod, TrainingRun, fit


@dataclass
class TrainConfig:
    """Settings of ``certkit train`` that every method shares. sigma and eps are in [0,1] data-range units (eps: Linf
    radius).

    ``options`` holds the values of the options the method itself declares (its ``Options`` dataclass in its module
    in train/methods/, e.g. ``kappa_final`` of the certified methods or ``objective`` of the denoiser), by name; the
    others keep the method's defaults.
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
    eps: float = 0.0               # target Linf eps: validation metrics, and the training eps of certified methods
    init: str = "default"          # "ibp": IBP initialization (Shi et al. 2021)
    grad_clip: float = 0.0         # max gradient norm (0: off)
    augment: str = "auto"          # "auto" (crop,flip for cifar10, none otherwise), "none", or a list: crop,flip
    options: dict = field(default_factory=dict)


REGISTRY = Registry("training method", "certkit.train.methods")


def register_training(cls: type[NetworkTraining]) -> type[NetworkTraining]:
    """Class decorator: make ``cls`` available as ``certkit train --method cls.name``.

    Raises:
        ValueError: the name is empty or taken.
    """
    return REGISTRY.register(cls)


def training_methods() -> dict[str, type[NetworkTraining]]:
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


def frozen_model(spec: str, device: torch.device, what: str, weights: str | None = None) -> nn.Module:
    """A model that a method trains around but never updates (any --model source, models.load_model: a certkit or
    reference checkpoint, an .onnx file, or a ``package.module:factory`` with its ``weights``): on ``device``, in eval
    mode, without gradients for its parameters. ``what`` names the option it came from in messages.

    Raises:
        CertkitError: what load_model raises for a missing, corrupt or unsupported model, and a factory without
            weights.
    """
    from certkit.models.checkpoint import load_model

    module = load_model(spec, weights, what=what).module.to(device).eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def check_init_from(spec: str | None) -> None:
    """Refuse, before any data is read, an ``--init-from`` that is not a checkpoint file: certkit train continues its
    own networks (certkit or reference-format checkpoints, a certkit denoiser checkpoint for denoisers).

    Raises:
        CertkitError: a ``package.module:factory`` or a missing file.
    """
    from certkit.models.checkpoint import is_factory_spec

    if spec is None:
        return
    if is_factory_spec(str(spec)):
        raise CertkitError(f"--init-from {spec}: certkit train continues a checkpoint FILE of a network it can build "
                           f"(certkit or reference format); a package.module:factory network is trained by its own "
                           f"code (certify it with --model {spec} --weights FILE)")
    if not Path(spec).is_file():
        raise CertkitError(f"--init-from {spec}: file not found")


def augmentations(cfg: TrainConfig) -> list[str]:
    """The augmentations of ``cfg.augment``: auto = crop and flip for CIFAR-10 (as the papers train), none else."""
    if cfg.augment == "auto":
        return ["crop", "flip"] if cfg.dataset == "cifar10" else []
    if cfg.augment in ("none", ""):
        return []
    return [a.strip() for a in cfg.augment.split(",") if a.strip()]


def augment(x: torch.Tensor, batch: Batch, run: TrainingRun, kinds: list, pad: int = 4) -> torch.Tensor:
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


class NetworkTraining(TrainingMethod):
    """What every ``certkit train --method`` shares (module docstring).

    Class attributes a method may set:
        help: one line for ``certkit train --help``;
        default_arch: the architecture when ``arch`` is None;
        noisy: trains on Gaussian noise of ``sigma`` (recorded in the checkpoint; validation under noise too);
        holds_out_validation: keep the last ``val_fraction`` of the train split for validation;
        min_batch: drop a last batch smaller than this;
        Options: the method's own options (certkit.common.options), filled from ``cfg.options`` into ``self.opts``.
    A method implements :meth:`build_net`, :meth:`batch_loss`, :meth:`end_epoch` and :meth:`save`.
    """

    help = ""
    default_arch = "mlp"
    noisy = False
    holds_out_validation = True
    min_batch = 1
    data_seconds = 0.0   # time spent preparing this epoch's batches (xy, noise), for the log

    def __init__(self, cfg: TrainConfig):
        if cfg.arch is None:
            cfg = dataclasses.replace(cfg, arch=self.default_arch)
        self.cfg = cfg
        self.opts = build_options(type(self), cfg.options, f"--method {self.name}")

    def config(self) -> dict:
        """The shared settings and the method's own options, flat (stored in the checkpoint as ``recipe`` and
        compared on resume)."""
        shared = {f.name: getattr(self.cfg, f.name) for f in dataclasses.fields(self.cfg) if f.name != "options"}
        return json.loads(json.dumps({**shared, **options_dict(self.opts)}))

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
        if not cfg.eps >= 0:
            raise CertkitError("--eps must be >= 0")
        if cfg.init not in ("default", "ibp"):
            raise CertkitError(f"unknown --init {cfg.init!r}: use default or ibp")
        if not set(augmentations(cfg)) <= {"crop", "flip"}:
            raise CertkitError(f"unknown --augment {cfg.augment!r}: use auto, none, or crop,flip")

    def checkpoint_path(self) -> Path:
        return Path(self.cfg.out)

    def log_path(self) -> Path:
        return Path(self.cfg.out).with_suffix(".log.csv")

    def curves_path(self) -> Path:
        return Path(self.cfg.out).with_suffix(".curves.png")

    # -- model --------------------------------------------------------------------------------------
    def build_net(self, data: Dataset) -> tuple[str, dict, dict | None, nn.Module]:
        """(arch, arch_config, normalization or None, the network) for the training data."""
        raise NotImplementedError

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

    def setup(self, run: TrainingRun) -> None:
        cfg = self.cfg
        self.validate()
        check_init_from(getattr(self.opts, "init_from", None))
        data = load_dataset(cfg.dataset, cfg.data_path, split="train")
        self.data = data
        self.train_set, self.val_set = _split(data, cfg.val_fraction if self.holds_out_validation else 0.0)
        torch.manual_seed(cfg.seed)
        self.arch, self.arch_config, norm, self.net = self.build_net(data)
        run.model, self.norm = self.wrap_net(self.net, norm)
        run.model = run.model.to(run.device)
        run.optimizer, run.scheduler = self.make_optimizer(self.parameters(run.model))
        run.generator = torch.Generator().manual_seed(cfg.seed)
        run.grad_clip = cfg.grad_clip

    def wrap_net(self, net: nn.Module, norm: dict | None) -> tuple[nn.Module, dict | None]:
        """(the module that trains, its normalization): ``net`` as it is by default."""
        return net, norm

    def load(self) -> dict | None:
        from certkit.models.checkpoint import load_checkpoint_file

        ckpt = load_checkpoint_file(self.checkpoint_path(), allow_pickle=False)
        return ckpt if isinstance(ckpt, dict) else None

    def restore(self, run: TrainingRun, ckpt: dict) -> None:
        self.net.load_state_dict(ckpt["state_dict"])

    # -- the loop -----------------------------------------------------------------------------------
    def batches(self, run: TrainingRun, epoch: int):
        self.train_mode(run.model)
        n, bs = len(self.train_set), self.cfg.batch_size
        perm = torch.randperm(n, generator=run.generator)
        self.last_schedule = (0.0, 0.0, 0.0)
        self.data_seconds = 0.0      # this epoch's time preparing batches: gathering, augmenting, noise, transfer
        for b, i in enumerate(range(0, n, bs)):
            idx_all = perm[i:i + bs]
            if len(idx_all) < self.min_batch:
                break
            yield Batch(idx_all, idx_all[run.rank::run.world], epoch, b)

    def noise(self, run: TrainingRun, batch: Batch, copies: int = 1) -> torch.Tensor:
        """Gaussian noise (sigma) for ``copies`` x the global batch, drawn from the run's generator (so every rank
        draws the same numbers) and cut to this rank's rows: (copies * |idx|, *input_shape)."""
        t0 = time.perf_counter()
        shape = tuple(self.train_set.x.shape[1:])
        noise = self.cfg.sigma * torch.randn((len(batch.idx_all) * copies,) + shape, generator=run.generator)
        noise = noise.view((copies, len(batch.idx_all)) + shape)[:, run.rank::run.world]
        noise = noise.reshape((-1,) + shape)
        self.data_seconds += time.perf_counter() - t0
        return noise

    def xy(self, run: TrainingRun, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's clean inputs (augmented when ``augment`` says so) and labels on the device."""
        t0 = time.perf_counter()
        x = self.train_set.x[batch.idx]
        kinds = augmentations(self.cfg)
        if kinds and x.dim() == 4:
            x = augment(x, batch, run, kinds)
        x, y = x.to(run.device), self.train_set.y[batch.idx].to(run.device)
        self.data_seconds += time.perf_counter() - t0
        return x, y

    def batch_loss(self, run: TrainingRun, batch: Batch) -> StepOutput:
        """The loss of one batch."""
        raise NotImplementedError

    def output(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, batch: Batch) -> StepOutput:
        """StepOutput with the train accuracy of ``logits`` and this rank's share of the global batch."""
        return StepOutput(loss, int((logits.argmax(1) == y).sum()), len(batch.idx),
                          len(batch.idx) / max(len(batch.idx_all), 1))

    def step(self, run: TrainingRun, batch: Batch) -> StepOutput:
        return self.batch_loss(run, batch)



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
