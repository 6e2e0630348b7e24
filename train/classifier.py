"""``certkit train`` for classifiers: :class:`ClassifierTraining` on top of the shared network training
(train/network.py).

A classifier is a zoo architecture behind a normalization layer computed from the training data (or a network loaded
from ``init_from``); every epoch logs clean, under-noise, IBP- / CROWN-IBP-verified accuracy and IBP tightness on the
validation split, and rewrites the certkit checkpoint with the training state (so ``--resume`` continues exactly). A
loss is one subclass in ``train/methods/`` registered with :func:`register_training`; it overrides
:meth:`batch_loss` (and, where it needs to, how the model is built or which parameters train).
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from certkit.common.errors import CertkitError
from certkit.datasets import Dataset
from certkit.models.checkpoint import read_checkpoint, save_checkpoint
from certkit.models.zoo import NormalizeLayer, build_model
from certkit.train.harness import StepOutput, TrainingRun
from certkit.train.init import ibp_init
from certkit.train.network import Batch, NetworkTraining, TrainConfig, accuracy, augmentations

if TYPE_CHECKING:
    from certkit.verifiers import BoundedModule

LOG_COLUMNS: tuple[str, ...] = ("epoch", "loss", "train_accuracy", "val_accuracy", "val_noisy_accuracy",
                               "val_ibp_verified", "val_crown_ibp_verified", "val_tightness", "eps", "kappa", "beta",
                               "lr", "seconds", "train_seconds", "data_seconds")


def check_labels(data: Dataset) -> None:
    """Refuse training labels that do not start at 0 (data sets whose classes are not fixed, i.e. npz): a classifier
    has one output per class 0..max label, so labels 10..19 would give 20 outputs of which 10 never see an example.
    A class without an example otherwise only warns (a small subset may lack one).

    Raises:
        CertkitError: the smallest label is not 0.
    """
    import warnings

    from certkit.datasets.core import FIXED_CLASSES

    present = torch.unique(data.y)
    if len(present) == 0:
        raise CertkitError(f"{data.name} {data.split} split has no labels")
    if int(present[0]) != 0 and data.name not in FIXED_CLASSES:
        raise CertkitError(f"the {data.name} labels run from {int(present[0])} to {int(present[-1])}: a classifier "
                           f"needs labels 0..K-1 (shift them to start at 0)")
    missing = sorted(set(range(data.num_classes)) - {int(v) for v in present})
    if missing:
        warnings.warn(f"classes {missing[:10]}{' ...' if len(missing) > 10 else ''} have no training example in "
                      f"{data.name} {data.split}; the model still gets an output for each of the {data.num_classes} "
                      f"classes", stacklevel=2)


@torch.no_grad()
def verified_metrics(model: nn.Module, bm, x: torch.Tensor, y: torch.Tensor, eps: float, num_classes: int,
                     batch: int = 256) -> dict:
    """IBP- and CROWN-IBP-verified accuracy and mean IBP tightness (Mao et al. 2024) at Linf eps."""
    from certkit.verifiers import linf_ball, margin_spec
    from certkit.verifiers.bounds.tightness import tightness

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



class ClassifierTraining(NetworkTraining):
    """A classifier (module docstring).

    Class attributes a method may set, besides those of :class:`NetworkTraining`:
        certified: needs eps > 0 and the bound engine during training;
        loads_weights: the network starts from ``init_from`` (its normalization, if any, is kept as it is);
        normalizes: put a normalization layer computed from the training data in front of a new network.
    """

    normalizes = True
    certified = False
    loads_weights = False
    log_columns: tuple[str, ...] = LOG_COLUMNS

    def __init__(self, cfg: TrainConfig):
        super().__init__(cfg)
        self.bm: BoundedModule | None = None

    @property
    def eps_max(self) -> float:
        """The training radius: the method's ``eps_train`` when it declares and sets one, else ``eps``."""
        eps_train = getattr(self.opts, "eps_train", None)
        return self.cfg.eps if eps_train is None else eps_train

    def validate(self) -> None:
        super().validate()
        cfg = self.cfg
        if self.certified and not self.eps_max > 0:
            raise CertkitError(f"--method {self.name} needs --eps > 0 (Linf radius in [0,1] pixel units)")
        if cfg.init == "ibp" and self.loads_weights:
            raise CertkitError("--init ibp initializes a new network, but this method starts from --init-from")

    def curves(self):
        return ({"val_accuracy": "clean", "val_ibp_verified": "IBP verified",
                 "val_crown_ibp_verified": "CROWN-IBP verified", "val_noisy_accuracy": "under noise"}, "eps")

    # -- model ------------------------------------------------------------------------------------
    def build_net(self, data: Dataset) -> tuple[str, dict, dict | None, nn.Module]:
        """(arch, arch_config, normalization or None to compute it from the data, the network); sets
        ``self.num_classes`` (outputs of the network).

        Raises:
            CertkitError: labels that do not start at 0 (e.g. 10..19 would train a 20-class model whose classes
                0..9 never occur).
        """
        cfg = self.cfg
        check_labels(data)
        self.num_classes = data.num_classes
        return cfg.arch, cfg.arch_config, None, build_model(cfg.arch, data.input_shape, data.num_classes,
                                                           **cfg.arch_config)

    def init_checkpoint(self, data: Dataset) -> dict:
        """The ``init_from`` checkpoint (certkit or reference format, one converter) after checking that it fits the
        data; sets ``self.num_classes`` to its outputs.

        Raises:
            CertkitError: unreadable file, other input shape, fewer classes than the data's labels.
        """
        ckpt = read_checkpoint(self.opts.init_from)
        if tuple(ckpt["input_shape"]) != tuple(data.input_shape):
            raise CertkitError(f"--init-from model takes inputs {tuple(ckpt['input_shape'])}, data has "
                               f"{data.input_shape}")
        if int(ckpt["num_classes"]) < data.num_classes:
            raise CertkitError(f"--init-from model has {ckpt['num_classes']} classes, the data has labels up to "
                               f"{data.num_classes - 1}")
        self.num_classes = int(ckpt["num_classes"])
        return ckpt

    def wrap_net(self, net: nn.Module, norm: dict | None) -> tuple[nn.Module, dict | None]:
        """IBP initialization (``init='ibp'``) of a new network, and a normalization layer computed from the
        training data in front of it (unless the method loads weights or builds without one)."""
        cfg = self.cfg
        if cfg.init == "ibp":
            ibp_init(net, torch.Generator().manual_seed(cfg.seed))
        if norm is None and cfg.normalize and self.normalizes and not self.loads_weights:
            x = self.train_set.x
            dims = [0] + list(range(2, x.dim()))
            chan_mean = x.mean(dim=dims) if x.dim() > 2 else x.mean().reshape(1)
            chan_std = x.std(dim=dims) if x.dim() > 2 else x.std().reshape(1)
            norm = {"mean": [round(float(v), 6) for v in chan_mean],
                    "std": [round(max(float(v), 1e-3), 6) for v in chan_std]}
        return (nn.Sequential(NormalizeLayer(norm["mean"], norm["std"]), net) if norm else net), norm

    def prepare(self, run: TrainingRun) -> None:
        if self.certified or self.cfg.eps > 0:
            from certkit.verifiers import BoundedModule
            from certkit.verifiers.bounds.ops import track_batch_stats

            self.bm = BoundedModule(run.model, self.data.input_shape)
            track_batch_stats(run.model)

    def metadata(self, epoch: int, row: dict, world: int) -> dict:
        cfg = self.cfg
        certified = self.bm is not None
        return {"dataset": cfg.dataset, "method": self.name, "epochs": epoch, "seed": cfg.seed,
                "recipe": self.config(), "augment": augmentations(cfg),
                "sigma": cfg.sigma if self.noisy else None,
                "eps": cfg.eps if cfg.eps > 0 else None, "eps_train": self.eps_max if certified else None,
                "norm": "inf" if certified else None, "world_size": world,
                **{k: row[k] for k in ("val_accuracy", "val_noisy_accuracy", "val_ibp_verified",
                                       "val_crown_ibp_verified", "val_tightness")},
                "data_split": (f"{cfg.dataset} train split minus the last {cfg.val_fraction:g} (validation)"
                               if self.val_set is not None else f"{cfg.dataset} train split")}

    def save(self, run: TrainingRun, train_state: dict, row: dict) -> None:
        save_checkpoint(self.cfg.out, self.net, self.arch, self.arch_config, self.data.input_shape,
                        self.num_classes, self.norm, metadata=self.metadata(row["epoch"], row, run.world),
                        extra={"train_state": train_state})

    # -- the loop -----------------------------------------------------------------------------------
    def batch_loss(self, run: TrainingRun, batch: Batch) -> StepOutput:
        """The loss of one batch (default: cross-entropy on the clean inputs)."""
        xb, yb = self.xy(run, batch)
        logits = run.model(xb)
        return self.output(F.cross_entropy(logits, yb), logits, yb, batch)

    def end_epoch(self, run: TrainingRun, epoch: int, stats: torch.Tensor) -> dict:
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
        row["train_seconds"], row["data_seconds"] = run.train_seconds, self.data_seconds
        return row

