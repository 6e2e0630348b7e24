"""Epoch time of natural, IBP, CROWN-IBP, SABR and MTL-IBP training on the same model and data, in one run.

    python bench/train_epoch.py [--device cpu|cuda] [--n 2048] [--batch 128] [--eps 0.1]
        [--models digits,mnist,cifar] [--repeats 5] [--malloc-default]

Models (``--models``): ``digits`` = cnn_a on 1 x 8 x 8 (the shipped digits recipes), ``mnist`` = cnn_a on 1 x 28 x
28 (Wong & Kolter's MNIST network: Conv16 -> Conv32 -> FC100 -> FC10), ``cifar`` = cnn_a on 3 x 32 x 32 (a CIFAR-
shaped CNN). Data: n random images of that shape with random labels (the timing does not depend on the values). The
median of ``--repeats`` epochs each (the methods take turns epoch by epoch), after a short warm-up; robust losses at
full eps (the costliest phase of the schedule): loss = kappa CE + (1 - kappa) robust CE with kappa = 0.5 (Gowal et
al.'s kappa_final, certkit's default); ibp-pure is kappa = 0, the pure robust loss of the short-warmup, MTL-IBP and
SABR recipes, where the clean forward pass only reports accuracy and builds no graph, as the training harness does
for networks without BatchNorm; CROWN-IBP with beta = 1: crown-ibp with loss fusion (one backward row per input,
certkit's default for --method crown-ibp), crown-ibp-margins with K - 1 = 9 margin rows (--no-loss-fusion). sabr
and mtl-ibp run the training methods' own robust loss (train/methods/sabr.py, mtl_ibp.py; their default
--sabr-lambda 0.4, --expressive-alpha 0.5, 8 PGD steps) at kappa = 0 as their recipes. Like the ``certkit`` command,
the bench keeps freed memory for reuse (common/memory.py) unless ``--malloc-default``.
Targets: IBP epoch <= 3x natural, CROWN-IBP epoch <= 8x natural, on CPU (SABR and MTL-IBP: no
target; the PGD attack of every step costs about 8 forward and backward passes).
"""
from __future__ import annotations

import argparse
import time
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from certkit.common.memory import retain_freed_memory
from certkit.models import build_model
from certkit.train.losses import fused_cross_entropy_upper, robust_cross_entropy, robust_cross_entropy_each
from certkit.train.network import TrainConfig, training_methods
from certkit.verifiers import BoundedModule, linf_ball, margin_spec

PURE = ("ibp-pure", "sabr", "mtl-ibp")  # kappa = 0


def trainer(method: str, model, bm, eps: float):
    """The registered training method ``method`` set up just enough for its robust_loss (model, bound module)."""
    t = training_methods()[method](TrainConfig(out="bench.pt", method=method, eps=eps,
                                               options={"kappa_final": 0.0}))
    t.bm, t.run = bm, SimpleNamespace(model=model)
    return t


def epoch(model, bm, x, y, batch, method, eps, opt):
    model.train()
    own = trainer(method, model, bm, eps) if method in ("sabr", "mtl-ibp") else None
    for i in range(0, len(y), batch):
        xb, yb = x[i:i + batch], y[i:i + batch]
        if method in PURE:  # kappa = 0: the clean logits only report accuracy (as train/methods/ibp.py)
            with torch.no_grad():
                model(xb)
            loss = 0.0
        else:
            loss = F.cross_entropy(model(xb), yb)
        if method != "natural":
            C = margin_spec(yb, 10)
            pert = linf_ball(xb, eps)
            lb, bounds = bm.ibp_margins(pert, C) if method != "sabr" else (None, None)
            if own is not None:
                robust = own.robust_loss(xb, yb, C, pert, lb, bounds, eps, 0.0)
            elif method == "crown-ibp":  # loss fusion: one backward row (certkit's default, at beta = 1)
                robust = torch.minimum(fused_cross_entropy_upper(bm, pert, C, bounds),
                                       robust_cross_entropy_each(lb)).mean()
            else:
                if method == "crown-ibp-margins":  # --no-loss-fusion
                    lb = bm.crown_ibp_lower(pert, C, bounds)
                robust = robust_cross_entropy(lb)
            loss = robust if method in PURE else 0.5 * loss + 0.5 * robust
        opt.zero_grad()
        loss.backward()
        opt.step()


SHAPES = {"digits": (1, 8, 8), "mnist": (1, 28, 28), "cifar": (3, 32, 32)}
METHODS = ("natural", "ibp", "ibp-pure", "crown-ibp", "crown-ibp-margins", "sabr", "mtl-ibp")


def time_model(shape, args, device) -> dict:
    """Median seconds of one epoch (over ``args.repeats`` epochs) per method for cnn_a on ``shape``. The methods take
    turns epoch by epoch (round robin), so a slow spell of a shared machine hits all of them alike."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand((args.n,) + shape, generator=g).to(device)
    y = torch.randint(0, 10, (args.n,), generator=g).to(device)
    setups = {}
    for method in METHODS:
        torch.manual_seed(0)
        model = build_model("cnn_a", shape, 10).to(device)
        bm = BoundedModule(model, shape)
        opt = torch.optim.Adam(model.parameters(), 1e-3)
        epoch(model, bm, x[:2 * args.batch], y[:2 * args.batch], args.batch, method, args.eps, opt)  # warm-up
        setups[method] = (model, bm, opt)
    runs = {m: [] for m in METHODS}
    for _ in range(args.repeats):
        for method, (model, bm, opt) in setups.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            epoch(model, bm, x, y, args.batch, method, args.eps, opt)
            if device.type == "cuda":
                torch.cuda.synchronize()
            runs[method].append(time.perf_counter() - t0)
    return {m: sorted(r)[len(r) // 2] for m, r in runs.items()}  # the median epoch: one disturbed epoch does not decide


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--repeats", type=int, default=5, help="epochs timed per method; the median is reported")
    ap.add_argument("--models", default="digits,mnist,cifar",
                    help="comma-separated: digits (cnn_a 1x8x8), mnist (cnn_a 1x28x28), cifar (cnn_a 3x32x32)")
    ap.add_argument("--malloc-default", action="store_true",
                    help="leave glibc's malloc as it is (the certkit command keeps freed memory: common/memory.py)")
    args = ap.parse_args()
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in names if m not in SHAPES]
    if unknown or not names:
        raise SystemExit(f"--models: choose from {', '.join(SHAPES)} (got {args.models!r})")
    if args.repeats < 1:
        raise SystemExit("--repeats must be at least 1")
    if not args.malloc_default:
        retain_freed_memory()
    device = torch.device(args.device)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, {args.n} images, "
          f"batch {args.batch}, eps {args.eps}")
    for name in names:
        times = time_model(SHAPES[name], args, device)
        shape = "x".join(map(str, SHAPES[name]))
        for m, t in times.items():
            print(f"{name:<7} cnn_a {shape:<8} {m:<18} epoch {t:7.2f} s   x natural {t / times['natural']:5.2f}")
        print(f"{name:<7} targets: IBP <= 3x natural ({times['ibp'] / times['natural']:.2f}x at kappa 0.5, "
              f"{times['ibp-pure'] / times['natural']:.2f}x at kappa 0), "
              f"CROWN-IBP <= 8x natural ({times['crown-ibp'] / times['natural']:.2f}x with loss fusion, the "
              f"default; {times['crown-ibp-margins'] / times['natural']:.2f}x with --no-loss-fusion)", flush=True)


if __name__ == "__main__":
    main()
