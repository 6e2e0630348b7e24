"""One training loop for every method certkit trains with.

    natural    cross-entropy on clean inputs.
    gaussian   noise augmentation (Cohen et al. 2019 Sec. 4): each batch replaced by x + N(0, sigma^2 I) in raw
               [0,1] pixel units, before the model's normalization layer.
    ibp        IBP certified training (Gowal et al. 2018): kappa CE(z, y) + (1 - kappa) CE(z_hat(eps_t), y), z_hat
               from IBP margin lower bounds over the Linf ball of radius eps_t (clipped to [0,1]).
    crown-ibp  CROWN-IBP (Zhang et al. ICLR 2020): z_hat from m = beta m_CROWN-IBP + (1 - beta) m_IBP.

eps_t follows the smoothed or linear schedule (train/schedules.py); kappa and beta follow eps_t. Options of the
short-warmup recipe (Shi et al. 2021): IBP initialization (``init='ibp'``), BatchNorm architectures (bounds use
the clean batch's statistics), the tightness and ReLU-balance regularizers (``reg_lambda``) during the ramp with
bounds at eps 1e-6 while eps_t = 0, and gradient-norm clipping.

Each epoch appends a CSV log row (clean, IBP- and CROWN-IBP-verified accuracy and IBP tightness on the validation
split at the target eps, eps/kappa/beta, loss, time), redraws ``<out>.curves.png`` and rewrites the checkpoint
(certkit format, with optimizer, scheduler and RNG state so ``resume`` continues exactly).
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
from certkit.train import distributed as dist
from certkit.train.init import ibp_init
from certkit.train.losses import mixed_margin, robust_cross_entropy
from certkit.train.regularizers import relu_balance_regularizer, tightness_regularizer
from certkit.train.schedules import EpsSchedule, beta_at, kappa_at

METHODS = ("natural", "gaussian", "ibp", "crown-ibp", "dual")
NOISY = ("gaussian", "dual")
CERTIFIED = ("ibp", "crown-ibp")
LOG_COLUMNS = ("epoch", "loss", "train_accuracy", "val_accuracy", "val_noisy_accuracy", "val_ibp_verified",
               "val_crown_ibp_verified", "val_tightness", "eps", "kappa", "beta", "lr", "seconds")


@dataclass
class TrainConfig:
    """Settings of ``certkit train``. sigma and eps are in [0,1] data-range units (eps: Linf radius)."""

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
    init: str = "default"          # "ibp": IBP initialization (Shi et al. 2021)
    reg_lambda: float = 0.0        # warm-up regularizers (Shi et al. 2021 use 0.5)
    grad_clip: float = 0.0         # max gradient norm (0: off)
    init_from: str | None = None   # dual: the noise-trained full-image certkit checkpoint both branches start from
    consistency: float = 0.0       # dual: weight of the consistency loss over 4 noise copies (DRS paper: 15)

    def validate(self) -> None:
        """Raise CertkitError for options out of range."""
        if self.method not in METHODS:
            raise CertkitError(f"unknown training method {self.method!r}: choose one of {', '.join(METHODS)}")
        if self.method in NOISY and not self.sigma > 0:
            raise CertkitError(f"sigma must be > 0 for {self.method} training, got {self.sigma}")
        if self.method == "dual" and not self.init_from:
            raise CertkitError("--method dual fine-tunes a noise-trained model: pass --init-from CHECKPOINT")
        if self.consistency < 0:
            raise CertkitError("--consistency must be >= 0")
        if self.epochs < 1 or self.batch_size < 1:
            raise CertkitError("--epochs and --batch must be >= 1")
        if not self.lr > 0:
            raise CertkitError(f"--lr must be > 0, got {self.lr}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise CertkitError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        if self.optimizer not in ("adam", "sgd"):
            raise CertkitError(f"unknown optimizer {self.optimizer!r}: use adam or sgd")
        if not self.eps >= 0 or (self.eps_train is not None and not self.eps_train >= 0):
            raise CertkitError("--eps and --eps-train must be >= 0")
        if self.method in CERTIFIED and not (self.eps_train or self.eps) > 0:
            raise CertkitError(f"--method {self.method} needs --eps > 0 (Linf radius in [0,1] pixel units)")
        if self.init not in ("default", "ibp"):
            raise CertkitError(f"unknown --init {self.init!r}: use default or ibp")
        if not 0 <= self.kappa_final <= 1 or not 0 <= self.beta_final <= 1:
            raise CertkitError("--kappa-final and --beta-final must lie in [0, 1]")

    @property
    def eps_max(self) -> float:
        return self.eps if self.eps_train is None else self.eps_train


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


def plot_log(log_path: Path, png_path: Path) -> None:
    """Accuracy curves (clean, IBP- and CROWN-IBP-verified) and eps per epoch, from the CSV log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(open(log_path)))
    if not rows:
        return
    ep = [int(r["epoch"]) for r in rows]
    val = lambda k: [float(r[k]) if r.get(k) not in (None, "", "nan") else float("nan") for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for key, label in (("val_accuracy", "clean"), ("val_ibp_verified", "IBP verified"),
                       ("val_crown_ibp_verified", "CROWN-IBP verified"), ("val_noisy_accuracy", "under noise")):
        ys = val(key)
        if any(v == v for v in ys):  # skip series that are all NaN (not computed for this method)
            ax.plot(ep, ys, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    ax.set_ylim(0, 1)
    ax2 = ax.twinx()
    ax2.plot(ep, val("eps"), "k--", alpha=0.4, label="eps")
    ax2.set_ylabel("training eps")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)


def train(cfg: TrainConfig, resume: bool = False, quiet: bool = False) -> dict:
    """Train a model and write it to ``cfg.out`` (certkit checkpoint) with a CSV log and a PNG of the curves.

    Under torchrun (WORLD_SIZE > 1) the processes train data-parallel; rank 0 writes the files.

    Returns:
        the final epoch's log row (dict with LOG_COLUMNS).

    Raises:
        CertkitError: bad options, unreadable data, or ``resume`` with a checkpoint of other settings.
    """
    cfg.validate()
    out = Path(cfg.out)
    log_path = out.with_suffix(".log.csv")
    device = resolve_device(cfg.device)
    rank, world_size = dist.init_from_env(device)
    data = load_dataset(cfg.dataset, cfg.data_path, split="train")
    train_set, val_set = _split(data, cfg.val_fraction)
    torch.manual_seed(cfg.seed)
    base_norm = None
    if cfg.method == "dual":
        cfg.arch, cfg.arch_config, base_norm, net = _dual_from(cfg.init_from, data)
    else:
        net = build_model(cfg.arch, data.input_shape, data.num_classes, **cfg.arch_config)
    if cfg.init == "ibp":
        ibp_init(net, torch.Generator().manual_seed(cfg.seed))
    norm = None
    if base_norm is not None:
        norm = base_norm
    elif cfg.normalize:
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
    if cfg.lr_milestones:
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, list(cfg.lr_milestones), cfg.lr_gamma)
    else:
        sched = torch.optim.lr_scheduler.StepLR(opt, cfg.lr_step, cfg.lr_gamma) if cfg.lr_step > 0 else None
    gen = torch.Generator().manual_seed(cfg.seed)
    start_epoch = 1
    config_json = json.loads(json.dumps(asdict(cfg)))
    if resume and out.exists():
        ckpt = load_checkpoint_file(out, allow_pickle=False)
        state = ckpt.get("train_state")
        if state is None:
            raise CertkitError(f"{out} has no training state to resume from")
        ignore = ("epochs", "device")
        saved = {k: v for k, v in state["config"].items() if k not in ignore}
        now = {k: v for k, v in config_json.items() if k not in ignore}
        if {k: v for k, v in saved.items() if k in now} != {k: v for k, v in now.items() if k in saved}:
            diff = [k for k in now if k in saved and saved.get(k) != now.get(k)]
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
    dist.broadcast_parameters(model)
    certified = cfg.method in CERTIFIED or cfg.eps > 0
    bm = None
    if certified:
        from certkit.verifiers import BoundedModule
        from certkit.verifiers.ops import track_batch_stats

        bm = BoundedModule(model, data.input_shape)
        track_batch_stats(model)
    n = len(train_set)
    steps_per_epoch = (n + cfg.batch_size - 1) // cfg.batch_size
    eps_sched = EpsSchedule(cfg.eps_max, cfg.schedule_start, cfg.schedule_length or max(1, cfg.epochs // 2),
                            steps_per_epoch, cfg.schedule) if cfg.method in CERTIFIED else None
    if start_epoch == 1 and rank == 0:
        with open(log_path, "w", newline="") as f:
            csv.writer(f).writerow(LOG_COLUMNS)
    row: dict = {}
    for epoch in tqdm(range(start_epoch, cfg.epochs + 1), desc=f"train {cfg.method}", unit="epoch",
                      disable=quiet or rank != 0, initial=start_epoch - 1, total=cfg.epochs, dynamic_ncols=True):
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(n, generator=gen)
        stats = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, count (this rank)
        eps_t = kappa = beta = 0.0
        for b, i in enumerate(range(0, n, cfg.batch_size)):
            idx_all = perm[i:i + cfg.batch_size]
            copies = 4 if cfg.method == "dual" and cfg.consistency > 0 else 1
            noise = (cfg.sigma * torch.randn((len(idx_all) * copies,) + tuple(train_set.x.shape[1:]), generator=gen)
                     if cfg.method in NOISY else None)
            if copies > 1:  # (copies, batch, ...) with each rank taking its rows of every copy
                noise = noise.view((copies, len(idx_all)) + tuple(train_set.x.shape[1:]))[:, rank::world_size]
                noise = noise.reshape((-1,) + tuple(train_set.x.shape[1:]))
            idx = idx_all[rank::world_size]
            xb, yb = train_set.x[idx].to(device), train_set.y[idx].to(device)
            if noise is not None and copies > 1:
                xb, yb = xb.repeat((copies,) + (1,) * (xb.dim() - 1)) + noise.to(device), yb.repeat(copies)
            elif noise is not None:
                xb = xb + noise[rank::world_size].to(device)
            logits = model(xb)
            if cfg.method == "dual":
                loss = _dual_loss(logits, yb, copies, cfg.consistency)
                logits = logits.softmax(-1).sum(1)
            else:
                loss = F.cross_entropy(logits, yb)
            if cfg.method in CERTIFIED:
                step = (epoch - 1) * steps_per_epoch + b
                eps_t = eps_sched(step)
                kappa = kappa_at(eps_t, cfg.eps_max, cfg.kappa_final)
                beta = beta_at(eps_t, cfg.eps_max, cfg.beta_final) if cfg.method == "crown-ibp" else 0.0
                loss = _certified_loss(bm, model, xb, yb, logits, loss, eps_t, kappa, beta, cfg, data.num_classes)
            opt.zero_grad(set_to_none=True)
            (loss * (len(idx) / max(len(idx_all), 1))).backward()
            dist.sync_gradients(model)
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            stats += torch.tensor([float(loss.detach()) * len(idx), int((logits.argmax(1) == yb).sum()) / copies
                                   if cfg.method == "dual" else int((logits.argmax(1) == yb).sum()), len(idx)],
                                  dtype=torch.float64)
        if sched is not None:
            sched.step()
        dist.all_reduce_sum(stats)
        model.eval()
        eval_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
        nan = float("nan")
        row = {"epoch": epoch, "loss": float(stats[0] / stats[2]), "train_accuracy": float(stats[1] / stats[2]),
               "val_accuracy": accuracy(model, val_set.x, val_set.y) if val_set else nan,
               "val_noisy_accuracy": (accuracy(model, val_set.x, val_set.y, cfg.sigma, generator=eval_gen)
                                      if val_set and cfg.method in NOISY else nan),
               "val_ibp_verified": nan, "val_crown_ibp_verified": nan, "val_tightness": nan,
               "eps": eps_t, "kappa": kappa, "beta": beta, "lr": opt.param_groups[0]["lr"]}
        if bm is not None and val_set is not None and cfg.eps > 0:
            row.update(verified_metrics(model, bm, val_set.x, val_set.y, cfg.eps, data.num_classes))
        row["seconds"] = time.perf_counter() - t0
        if rank == 0:
            with open(log_path, "a", newline="") as f:
                csv.writer(f).writerow([f"{row[c]:.5g}" if isinstance(row[c], float) else row[c] for c in LOG_COLUMNS])
            meta = {"dataset": cfg.dataset, "method": cfg.method, "epochs": epoch, "seed": cfg.seed,
                    "sigma": cfg.sigma if cfg.method in NOISY else None,
                    "eps": cfg.eps if cfg.eps > 0 else None, "eps_train": cfg.eps_max if certified else None,
                    "norm": "inf" if certified else None, "world_size": world_size,
                    **{k: row[k] for k in ("val_accuracy", "val_noisy_accuracy", "val_ibp_verified",
                                           "val_crown_ibp_verified", "val_tightness")},
                    "data_split": f"{cfg.dataset} train split minus the last {cfg.val_fraction:g} (validation)"}
            state = {"epoch": epoch, "config": config_json, "optimizer": opt.state_dict(),
                     "scheduler": sched.state_dict() if sched is not None else None,
                     "generator": gen.get_state(), "torch_rng": torch.get_rng_state()}
            save_checkpoint(out, net, cfg.arch, cfg.arch_config, data.input_shape, data.num_classes, norm,
                            metadata=meta, extra={"train_state": state})
            plot_log(log_path, out.with_suffix(".curves.png"))
        dist.barrier()
    return row


def _dual_from(init_from: str, data: Dataset):
    """Dual RS model whose two branches start from a noise-trained full-image certkit checkpoint."""
    from certkit.models.checkpoint import FORMAT, REFERENCE_ARCHS

    ckpt = load_checkpoint_file(Path(init_from), allow_pickle=False)
    if isinstance(ckpt, dict) and ckpt.get("arch") in REFERENCE_ARCHS and "format" not in ckpt:
        # a Gaussian-smoothing reference checkpoint: Sequential(normalize, net) with keys "1.*"
        mean, std = REFERENCE_ARCHS[ckpt["arch"]]
        ckpt = {"format": FORMAT, "arch": ckpt["arch"], "arch_config": {}, "input_shape": [3, 32, 32],
                "normalization": {"mean": list(mean), "std": list(std)},
                "state_dict": {k[2:]: v for k, v in ckpt["state_dict"].items() if k.startswith("1.")}}
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CertkitError(f"--init-from {init_from}: needs a certkit checkpoint (certkit train --method gaussian) "
                           f"or a Gaussian-smoothing reference checkpoint")
    if ckpt["arch"] == "dual":
        raise CertkitError(f"--init-from {init_from} is already a Dual RS model")
    if tuple(ckpt["input_shape"]) != tuple(data.input_shape):
        raise CertkitError(f"--init-from model takes inputs {tuple(ckpt['input_shape'])}, data has {data.input_shape}")
    config = {"base_arch": ckpt["arch"], "base_config": dict(ckpt.get("arch_config") or {})}
    net = build_model("dual", data.input_shape, data.num_classes, **config)
    for branch in (net.left, net.right):
        branch.load_state_dict(ckpt["state_dict"])
    return "dual", config, ckpt.get("normalization"), net


def _dual_loss(logits: torch.Tensor, y: torch.Tensor, copies: int, weight: float) -> torch.Tensor:
    """CE of both branches; with copies > 1 plus weight * (mean KL(p_i || p_mean) + 0.05 H(p_mean)) over the
    noise copies of each input (consistency regularization as in the DRS paper)."""
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


def _certified_loss(bm, model, xb, yb, logits, natural_loss, eps_t, kappa, beta, cfg, num_classes):
    """kappa * natural + (1 - kappa) * robust (+ warm-up regularizers); natural alone while eps_t = 0."""
    from certkit.verifiers import linf_ball, margin_spec

    reg_on = cfg.reg_lambda > 0 and eps_t < cfg.eps_max
    if eps_t <= 0 and not reg_on:
        return natural_loss
    C = margin_spec(yb, num_classes)
    pert = linf_ball(xb, max(eps_t, 1e-6))
    lb_ibp, bounds = bm.ibp_margins(pert, C)
    loss = natural_loss
    if eps_t > 0:
        lb_cibp = bm.crown_ibp_lower(pert, C, bounds) if beta > 0 else None
        loss = kappa * natural_loss + (1 - kappa) * robust_cross_entropy(mixed_margin(lb_ibp, lb_cibp, beta))
    if reg_on:
        relu_in = [bounds[bm.graph.nodes[a].inputs[0]] for a in bm.graph.nonlinear()]
        first = bm.graph.nodes[1] if len(bm.graph.nodes) > 1 else None
        x0 = bounds[1] if first is not None and first.op.name == "Normalize" else bounds[0]
        delta0 = ((x0[1] - x0[0]) / 2).mean()
        reg = tightness_regularizer(delta0, relu_in) + relu_balance_regularizer(relu_in)
        loss = loss + cfg.reg_lambda * (1 - eps_t / cfg.eps_max) * reg
    return loss
