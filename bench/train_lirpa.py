"""CROWN-IBP training with certkit beside auto_LiRPA 0.7.1: the same network, data, batches, eps schedule and epochs,
epoch time ratio measured in one run, verified accuracy of both by the same verifier.

    PYTHONPATH=path/to/auto_LiRPA/source python bench/train_lirpa.py [--dataset fashion-mnist [DIR]]
        [--epochs 60] [--ramp-start 2] [--ramp-length 30] [--eps 0.1] [--eps-train 0.11] [--lr-milestones 45,55]
        [--train-max N] [--test-max N] [--device cpu|cuda] [--out DIR]

Both sides train the Wong-Kolter small CNN (cnn_a) from the same initial weights with Adam (lr 1e-3, x0.1 at the
milestones), batch 128, on the same shuffled batches of the training split (the last 10% held out, as ``certkit
train``), with the smoothed eps ramp of ``fmnist_crown_ibp_0.1`` (Linf, [0, 1] pixels) and the loss of auto_LiRPA's
examples/vision/cifar_training.py: clean cross-entropy while eps_t = 0, then the robust cross-entropy alone, its
CROWN-IBP part weighted by beta = (eps_train - eps_t) / eps_train. The robust losses are each library's own loss
fusion (Xu et al. NeurIPS 2020: one backward row bounding the cross-entropy itself):

* certkit: ``CROWNIBPTraining.robust_loss`` of train/methods/crown_ibp.py (beta min(fused, IBP) + (1 - beta) IBP
  per input);
* auto_LiRPA: ``BoundedModule(CrossEntropyWrapper(net), ..., bound_opts={'loss_fusion': True})``, IBP and then the
  backward (CROWN-IBP) upper bound of sum_j exp(z_j - z_y), mixed as ``cub * beta + iub * (1 - beta)``, loss mean(log
  ub + max_input), as its example.

The two take turns epoch by epoch (a slow spell of a shared machine hits both alike); each epoch is timed (data
batches included: both index the same in-memory tensors). At the end both networks are verified on the test split by
certkit's IBP and CROWN (and alpha-CROWN with ``--alpha``) at eps, and attacked by certkit's PGD. Target: certkit's
epoch <= 1.0x auto_LiRPA's at equal or better verified accuracy. Checkpoints and a JSON summary go to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from certkit.common.memory import retain_freed_memory
from certkit.datasets import load_dataset
from certkit.models import build_model
from certkit.train.methods.crown_ibp import CROWNIBPTraining
from certkit.train.network import TrainConfig
from certkit.train.schedules import EpsSchedule, beta_at
from certkit.verifiers import BoundedModule, linf_ball, margin_spec
from certkit.verifiers.attack import pgd_attack
from certkit.verifiers.external import auto_lirpa_available


class CertkitSide:
    """certkit's CROWN-IBP loss (loss fusion) on ``net``."""

    name = "certkit"

    def __init__(self, net: torch.nn.Module, shape: tuple[int, ...]):
        self.net = net
        self.bm = BoundedModule(net, shape)
        self.method = CROWNIBPTraining(TrainConfig(out="bench.pt", method="crown-ibp", eps=1.0,
                                                   options={"kappa_final": 0.0}))
        self.method.bm = self.bm

    def loss(self, xb: torch.Tensor, yb: torch.Tensor, eps_t: float, beta: float) -> torch.Tensor:
        if eps_t == 0:
            return F.cross_entropy(self.net(xb), yb)
        C = margin_spec(yb, 10)
        pert = linf_ball(xb, eps_t)
        lb_ibp, bounds = self.bm.ibp_margins(pert, C)
        return self.method.robust_loss(xb, yb, C, pert, lb_ibp, bounds, eps_t, beta)


class _CrossEntropyWrapper(torch.nn.Module):
    """auto_LiRPA's CrossEntropyWrapper (sum_j exp(z_j - z_y), whose log is the cross-entropy) with the label's logit
    taken by a one-hot product instead of torch.gather: on torch 2.13 gather traces to ONNX OneHot, which auto_LiRPA
    0.7.1 cannot bound."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
        z = self.net(x)
        return torch.exp(z - (z * onehot).sum(dim=-1, keepdim=True)).sum(dim=-1, keepdim=True)


class LirpaSide:
    """auto_LiRPA's CROWN-IBP loss with loss fusion on ``net`` (as its examples/vision/cifar_training.py)."""

    name = "auto_LiRPA"

    def __init__(self, net: torch.nn.Module, shape: tuple[int, ...], device: torch.device):
        from auto_LiRPA import BoundedModule as LirpaModule
        from auto_LiRPA.operators import BoundExp

        self.net = net
        dummy = (torch.zeros((1,) + shape, device=device), torch.zeros(1, 10, device=device))
        self.bm = LirpaModule(_CrossEntropyWrapper(net), dummy, bound_opts={"loss_fusion": True}, device=str(device))
        self.exp = next(m for m in self.bm.modules() if isinstance(m, BoundExp))

    def loss(self, xb: torch.Tensor, yb: torch.Tensor, eps_t: float, beta: float) -> torch.Tensor:
        from auto_LiRPA import BoundedTensor
        from auto_LiRPA.perturbations import PerturbationLpNorm

        if eps_t == 0:
            return F.cross_entropy(self.net(xb), yb)
        ptb = PerturbationLpNorm(norm=float("inf"), eps=eps_t, x_L=(xb - eps_t).clamp(0, 1),
                                 x_U=(xb + eps_t).clamp(0, 1))
        x = BoundedTensor(xb, ptb)
        onehot = F.one_hot(yb, 10).to(xb.dtype)
        self.bm(x, onehot)
        _, iub = self.bm.compute_bounds(x=(x, onehot), IBP=True, C=None, method=None)
        if beta > 1e-50:
            _, cub = self.bm.compute_bounds(IBP=False, C=None, method="backward", bound_lower=False,
                                            bound_upper=True)
            ub = cub * beta + iub * (1 - beta)
        else:
            ub = iub
        return torch.mean(torch.log(ub) + self.exp.max_input)


def train_epoch(side, x, y, order, batch, opt, sched: EpsSchedule, step0: int, eps_train: float,
                device: torch.device) -> tuple[float, int]:
    """One epoch of ``side`` over x[order]; returns (seconds, next global step)."""
    side.net.train()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    step = step0
    for i in range(0, len(order), batch):
        idx = order[i:i + batch]
        xb, yb = x[idx].to(device), y[idx].to(device)
        eps_t = sched(step)
        loss = side.loss(xb, yb, eps_t, beta_at(eps_t, eps_train, 0.0))
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, step


def evaluate(net, x, y, eps: float, methods: list[str], device: torch.device, batch: int = 256) -> dict:
    """Clean, PGD (50 steps) and verified accuracy of ``net`` on (x, y) at Linf ``eps`` by certkit's verifiers."""
    net.eval().requires_grad_(False)   # gradients w.r.t. the input only (PGD); bounds build no graph
    bm = BoundedModule(net, tuple(x.shape[1:]))
    hits = {k: 0 for k in ["clean", "PGD"] + methods}
    for i in range(0, len(y), batch):
        xb, yb = x[i:i + batch].to(device), y[i:i + batch].to(device)
        with torch.no_grad():
            hits["clean"] += int((net(xb).argmax(1) == yb).sum())
        _, robust = pgd_attack(net, xb, yb, eps, steps=50, restarts=1)
        hits["PGD"] += int(robust.sum())
        C = margin_spec(yb, 10)
        for m in methods:
            with torch.no_grad() if m != "alpha-CROWN" else torch.enable_grad():
                lb, _ = bm.compute_bounds(linf_ball(xb, eps), C=C, method=m, bound_upper=False)
            hits[m] += int((lb.detach() > 0).all(1).sum())
    return {k: v / len(y) for k, v in hits.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", nargs="+", default=["fashion-mnist"], help="fashion-mnist [DIR] or mnist DIR")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--ramp-start", type=int, default=2, help="first epoch of the smoothed eps ramp")
    ap.add_argument("--ramp-length", type=int, default=30, help="epochs of the ramp")
    ap.add_argument("--lr-milestones", default="45,55", help="epochs at which lr is multiplied by 0.1")
    ap.add_argument("--eps", type=float, default=0.1, help="Linf radius of the verification ([0, 1] pixels)")
    ap.add_argument("--eps-train", type=float, default=0.11, help="Linf radius at the end of the training ramp")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--train-max", type=int, default=0, help="train on the first N images of the split (0: all)")
    ap.add_argument("--test-max", type=int, default=10000, help="verify on the first N test images")
    ap.add_argument("--alpha", action="store_true", help="also verify with alpha-CROWN (minutes per 1,000 images)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench_train_lirpa", help="folder for the two checkpoints and summary.json")
    args = ap.parse_args()
    if not auto_lirpa_available():
        raise SystemExit("auto_LiRPA is not importable: put its public source on PYTHONPATH (see bench/README.md)")
    retain_freed_memory()
    device = torch.device(args.device)
    name, path = args.dataset[0], (args.dataset[1] if len(args.dataset) > 1 else None)
    train, test = load_dataset(name, path, "train"), load_dataset(name, path, "test")
    cut = len(train) - int(round(0.1 * len(train)))  # the last 10% held out, as certkit train
    x, y = train.x[:cut], train.y[:cut]
    if args.train_max:
        x, y = x[:args.train_max], y[:args.train_max]
    shape = tuple(x.shape[1:])
    torch.manual_seed(args.seed)
    init = build_model("cnn_a", shape, 10).state_dict()
    sides = []
    for make in (lambda n: CertkitSide(n, shape), lambda n: LirpaSide(n, shape, device)):
        net = build_model("cnn_a", shape, 10)
        net.load_state_dict(init)
        side = make(net.to(device))
        opt = torch.optim.Adam(net.parameters(), 1e-3)
        milestones = [int(m) for m in args.lr_milestones.split(",") if m.strip()]
        sides.append((side, opt, torch.optim.lr_scheduler.MultiStepLR(opt, milestones, 0.1)))
    n_batches = (len(y) + args.batch - 1) // args.batch
    sched = EpsSchedule(args.eps_train, args.ramp_start, args.ramp_length, n_batches)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, {len(y)} training images "
          f"of {name}, {args.epochs} epochs, ramp {args.ramp_start}+{args.ramp_length}, eps_train {args.eps_train}",
          flush=True)
    times: dict[str, list[float]] = {s.name: [] for s, _, _ in sides}
    steps = {s.name: 0 for s, _, _ in sides}
    g = torch.Generator().manual_seed(args.seed)
    for ep in range(1, args.epochs + 1):
        order = torch.randperm(len(y), generator=g)
        for side, opt, lr in sides:
            sec, steps[side.name] = train_epoch(side, x, y, order, args.batch, opt, sched, steps[side.name],
                                                args.eps_train, device)
            lr.step()
            times[side.name].append(sec)
        c, a = times["certkit"][-1], times["auto_LiRPA"][-1]
        print(f"epoch {ep:3d} eps_t {sched(steps['certkit'] - 1):.4f}  certkit {c:6.1f} s  auto_LiRPA {a:6.1f} s  "
              f"ratio {c / a:.2f}", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    robust = [e - 1 for e in range(1, args.epochs + 1) if e >= args.ramp_start]  # epochs with eps_t > 0
    summary: dict = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
                     "args": vars(args), "train_images": len(y)}
    methods = ["IBP", "CROWN"] + (["alpha-CROWN"] if args.alpha else [])
    for side, _, _ in sides:   # both networks and the times are kept before anything is evaluated
        torch.save(side.net.state_dict(), out / f"{side.name}.pt")
    (out / "epoch_seconds.json").write_text(json.dumps(times))
    for side, _, _ in sides:
        ts = times[side.name]
        res = evaluate(side.net, test.x[:args.test_max], test.y[:args.test_max], args.eps, methods, device)
        summary[side.name] = {"epoch_seconds": ts, "robust_epoch_seconds": sum(ts[i] for i in robust), **res}
        print(f"{side.name:<11} total {sum(ts):7.1f} s  " + "  ".join(f"{k} {v:.4f}" for k, v in res.items()),
              flush=True)
    c_rob, a_rob = summary["certkit"]["robust_epoch_seconds"], summary["auto_LiRPA"]["robust_epoch_seconds"]
    ratio = sum(times["certkit"]) / sum(times["auto_LiRPA"])
    summary["ratio_all_epochs"], summary["ratio_robust_epochs"] = ratio, c_rob / a_rob if a_rob else None
    print(f"certkit / auto_LiRPA epoch time: {ratio:.2f} over all epochs"
          + (f", {c_rob / a_rob:.2f} over the epochs with eps_t > 0" if a_rob else "")
          + f" (target <= 1.0); verified on {min(args.test_max, len(test))} test images at eps {args.eps}: "
          + ", ".join(f"{m} {summary['certkit'][m]:.4f} vs {summary['auto_LiRPA'][m]:.4f}" for m in methods))
    (out / "summary.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
