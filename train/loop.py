"""One training loop for every method certkit trains with.

Methods here: ``natural`` (cross-entropy on clean inputs) and ``gaussian`` (noise augmentation,
Cohen et al. 2019 Sec. 4: each batch is replaced by x + N(0, sigma^2 I) in raw [0,1] pixel units, before the
model's normalization layer; the certification sigma should equal the training sigma).

Each epoch writes the checkpoint (certkit format, with optimizer/RNG state for ``resume``) and a CSV log row.
"""
from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from certkit.common.device import resolve_device
from certkit.common.errors import CertkitError
from certkit.datasets import Dataset, load_dataset
from certkit.models.checkpoint import load_checkpoint_file, save_checkpoint
from certkit.models.zoo import NormalizeLayer, build_model

METHODS = ("natural", "gaussian")
LOG_COLUMNS = ("epoch", "loss", "train_accuracy", "val_accuracy", "val_noisy_accuracy", "lr", "seconds")


@dataclass
class TrainConfig:
    """Settings of ``certkit train``. sigma is in [0,1] data-range units; lr for the chosen optimizer."""

    out: str
    method: str = "gaussian"
    dataset: str = "digits"
    data_path: str | None = None
    arch: str = "mlp"
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
    val_fraction: float = 0.1
    normalize: bool = True
    seed: int = 0
    device: str = "auto"

    def validate(self) -> None:
        """Raise CertkitError for options out of range."""
        if self.method not in METHODS:
            raise CertkitError(f"unknown training method {self.method!r}: choose one of {', '.join(METHODS)}")
        if self.method == "gaussian" and not self.sigma > 0:
            raise CertkitError(f"sigma must be > 0 for gaussian training, got {self.sigma}")
        if self.epochs < 1 or self.batch_size < 1:
            raise CertkitError("--epochs and --batch must be >= 1")
        if not self.lr > 0:
            raise CertkitError(f"--lr must be > 0, got {self.lr}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise CertkitError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        if self.optimizer not in ("adam", "sgd"):
            raise CertkitError(f"unknown optimizer {self.optimizer!r}: use adam or sgd")


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
        correct += int((model(xb).argmax(1).cpu() == y[i:i + batch]).sum())
    return correct / max(len(y), 1)


def train(cfg: TrainConfig, resume: bool = False, quiet: bool = False) -> dict:
    """Train a model and write it to ``cfg.out`` (certkit checkpoint) with a CSV log beside it.

    Returns:
        the final epoch's log row (dict with LOG_COLUMNS).

    Raises:
        CertkitError: bad options, unreadable data, or ``resume`` with a checkpoint of other settings.
    """
    cfg.validate()
    out = Path(cfg.out)
    log_path = out.with_suffix(".log.csv")
    device = resolve_device(cfg.device)
    data = load_dataset(cfg.dataset, cfg.data_path, split="train")
    train_set, val_set = _split(data, cfg.val_fraction)
    torch.manual_seed(cfg.seed)
    net = build_model(cfg.arch, data.input_shape, data.num_classes, **cfg.arch_config)
    norm = None
    if cfg.normalize:
        dims = [0] + list(range(2, train_set.x.dim()))
        chan_mean = train_set.x.mean(dim=dims) if train_set.x.dim() > 2 else train_set.x.mean().reshape(1)
        chan_std = train_set.x.std(dim=dims) if train_set.x.dim() > 2 else train_set.x.std().reshape(1)
        norm = {"mean": [round(float(v), 6) for v in chan_mean],
                "std": [round(max(float(v), 1e-3), 6) for v in chan_std]}
    model = (nn.Sequential(NormalizeLayer(norm["mean"], norm["std"]), net) if norm else net).to(device)
    if cfg.optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, cfg.lr_step, cfg.lr_gamma) if cfg.lr_step > 0 else None
    gen = torch.Generator().manual_seed(cfg.seed)
    start_epoch = 1
    config_json = json.loads(json.dumps(asdict(cfg)))
    if resume and out.exists():
        ckpt = load_checkpoint_file(out, allow_pickle=False)
        state = ckpt.get("train_state")
        if state is None:
            raise CertkitError(f"{out} has no training state to resume from")
        saved = {k: v for k, v in state["config"].items() if k not in ("epochs", "device")}
        now = {k: v for k, v in config_json.items() if k not in ("epochs", "device")}
        if saved != now:
            diff = [k for k in now if saved.get(k) != now.get(k)]
            raise CertkitError(f"cannot resume {out}: it was trained with other settings ({', '.join(diff)})")
        net.load_state_dict(ckpt["state_dict"])
        opt.load_state_dict(state["optimizer"])
        if sched is not None and state.get("scheduler"):
            sched.load_state_dict(state["scheduler"])
        gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        start_epoch = int(state["epoch"]) + 1
    elif out.exists() and not resume:
        raise CertkitError(f"{out} exists: pass --resume to continue training it or choose another --out")
    if start_epoch == 1:
        with open(log_path, "w", newline="") as f:
            csv.writer(f).writerow(LOG_COLUMNS)
    row: dict = {}
    n = len(train_set)
    for epoch in tqdm(range(start_epoch, cfg.epochs + 1), desc=f"train {cfg.method}", unit="epoch",
                      disable=quiet, initial=start_epoch - 1, total=cfg.epochs, dynamic_ncols=True):
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(n, generator=gen)
        total_loss, total_correct = 0.0, 0
        for i in range(0, n, cfg.batch_size):
            idx = perm[i:i + cfg.batch_size]
            xb, yb = train_set.x[idx].to(device), train_set.y[idx].to(device)
            if cfg.method == "gaussian":
                xb = xb + cfg.sigma * torch.randn(xb.shape, generator=gen).to(device)
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total_loss += float(loss.detach()) * len(idx)
            total_correct += int((logits.argmax(1) == yb).sum())
        if sched is not None:
            sched.step()
        model.eval()
        eval_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
        row = {"epoch": epoch, "loss": total_loss / n, "train_accuracy": total_correct / n,
               "val_accuracy": accuracy(model, val_set.x, val_set.y) if val_set else float("nan"),
               "val_noisy_accuracy": (accuracy(model, val_set.x, val_set.y, cfg.sigma, generator=eval_gen)
                                      if val_set and cfg.method == "gaussian" else float("nan")),
               "lr": opt.param_groups[0]["lr"], "seconds": time.perf_counter() - t0}
        with open(log_path, "a", newline="") as f:
            csv.writer(f).writerow([f"{row[c]:.5g}" if isinstance(row[c], float) else row[c] for c in LOG_COLUMNS])
        meta = {"dataset": cfg.dataset, "method": cfg.method, "epochs": epoch, "seed": cfg.seed,
                "sigma": cfg.sigma if cfg.method == "gaussian" else None,
                "val_accuracy": row["val_accuracy"], "val_noisy_accuracy": row["val_noisy_accuracy"],
                "data_split": f"{cfg.dataset} train split minus the last {cfg.val_fraction:g} (validation)"}
        state = {"epoch": epoch, "config": config_json, "optimizer": opt.state_dict(),
                 "scheduler": sched.state_dict() if sched is not None else None,
                 "generator": gen.get_state(), "torch_rng": torch.get_rng_state()}
        save_checkpoint(out, net, cfg.arch, cfg.arch_config, data.input_shape, data.num_classes, norm,
                        metadata=meta, extra={"train_state": state})
    return row
