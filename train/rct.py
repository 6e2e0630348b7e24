"""Robust conformal training, RCT (Yan, Romano, Weng ICLR 2024; after ConfTr, Stutz et al. 2022): fine-tune the
final linear layer (backbone frozen) so that RSCP+ sets get smaller at the same guaranteed coverage.

Per batch: p_bar = mean over n_train noise draws of softmax(f(x + e)); conformity c_k = PhiInv(p_bar_k) (higher is
more conforming). The batch is split 50/50: on half 1, tau = the alpha-quantile of the true-class conformity
(torch.quantile: subgradients through the selected order statistics, in place of a smooth sort), shifted by
-eps/sigma for robustness; on half 2 the soft set is C_k = sigmoid((c_k - tau) / temp).
Loss = log(L_class + w L_size + 1e-8), L_class = mean(1 - C_y), L_size = mean(max(sum_k C_k - target, 0)).
Optimizer: SGD with Nesterov momentum 0.9, weight decay 5e-4.
"""
from __future__ import annotations

import csv
import time
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from certkit.common.device import resolve_device
from certkit.common.errors import CertkitError
from certkit.datasets import load_dataset
from certkit.models.checkpoint import FORMAT, load_checkpoint_file, save_checkpoint
from certkit.models.zoo import NormalizeLayer, build_model

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


def train_rct(init_from: str, out: str, sigma: float, eps: float, alpha: float = 0.1, epochs: int = 10,
              lr: float = 0.001, batch: int = 128, n_train: int = 8, temp: float = 0.1, size_weight: float = 1.0,
              dataset: str = "digits", data_path=None, seed: int = 0, device: str = "auto",
              quiet: bool = False) -> dict:
    """Fine-tune the last nn.Linear of a certkit checkpoint with the RCT loss; write a certkit checkpoint.

    Raises:
        CertkitError: not a certkit checkpoint, no final linear layer, or bad options.
    """
    if not sigma > 0 or not eps >= 0 or not 0 < alpha < 1 or epochs < 1 or n_train < 1 or batch < 4:
        raise CertkitError("RCT needs sigma > 0, eps >= 0, 0 < alpha < 1, epochs >= 1, n_train >= 1, batch >= 4")
    if Path(out).exists():
        raise CertkitError(f"{out} exists: choose another --out")
    ckpt = load_checkpoint_file(Path(init_from))
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CertkitError(f"--init-from {init_from}: RCT needs a certkit checkpoint")
    dev = resolve_device(device)
    data = load_dataset(dataset, data_path, "train")
    torch.manual_seed(seed)
    net = build_model(ckpt["arch"], ckpt["input_shape"], ckpt["num_classes"], **(ckpt.get("arch_config") or {}))
    net.load_state_dict(ckpt["state_dict"])
    norm = ckpt.get("normalization")
    model = (nn.Sequential(NormalizeLayer(norm["mean"], norm["std"]), net) if norm else net).to(dev)
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise CertkitError("RCT trains the final linear layer, and this model has none")
    head = linears[-1]
    for p in model.parameters():
        p.requires_grad_(False)
    for p in head.parameters():
        p.requires_grad_(True)
    model.eval()  # frozen backbone (BatchNorm statistics included)
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(seed)
    log_path = Path(out).with_suffix(".log.csv")
    rows = []
    for epoch in tqdm(range(1, epochs + 1), desc="train rct", disable=quiet):
        t0 = time.perf_counter()
        perm = torch.randperm(len(data), generator=gen)
        total, count = 0.0, 0
        for i in range(0, len(data) - 3, batch):
            idx = perm[i:i + batch]
            x, y = data.x[idx].to(dev), data.y[idx].to(dev)
            noise = sigma * torch.randn((n_train,) + tuple(x.shape), generator=gen).to(dev)
            probs = torch.softmax(model((x.unsqueeze(0) + noise).reshape((-1,) + tuple(x.shape[1:]))), -1)
            p_bar = probs.view(n_train, x.shape[0], -1).mean(0)
            loss = rct_loss(p_bar, y, alpha, eps, sigma, temp, size_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        rows.append({"epoch": epoch, "loss": total / max(count, 1), "seconds": time.perf_counter() - t0})
    with open(log_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    meta = dict(ckpt.get("metadata") or {})
    meta.update({"method": "rct", "rct": {"init_from": str(init_from), "sigma": sigma, "eps": eps, "alpha": alpha,
                                          "epochs": epochs, "n_train": n_train, "temp": temp,
                                          "size_weight": size_weight}})
    save_checkpoint(out, net, ckpt["arch"], ckpt.get("arch_config") or {}, ckpt["input_shape"], ckpt["num_classes"],
                    norm, tuple(ckpt.get("data_range", (0.0, 1.0))), meta)
    return rows[-1]
