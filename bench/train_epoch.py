"""Epoch time of natural, IBP and CROWN-IBP training on the same model and data, in one run.

    python bench/train_epoch.py [--device cpu|cuda] [--n 2048] [--batch 128] [--eps 0.1]

Model: cnn_a (Wong & Kolter; 1 x 28 x 28 -> Conv16 -> Conv32 -> FC100 -> FC10, the MNIST size). Data: n random
MNIST-shaped images with random labels (the timing does not depend on the values). One epoch each, after a short
warm-up; robust losses at full eps (the costliest phase of the schedule; CROWN-IBP with beta = 1; crown-ibp-fused is
CROWN-IBP with loss fusion, --loss-fusion: one backward row per input).
Targets (issue 4): IBP epoch <= 3x natural, CROWN-IBP epoch <= 8x natural, on CPU.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from certkit.models import build_model
from certkit.train.losses import fused_cross_entropy_upper, robust_cross_entropy, robust_cross_entropy_each
from certkit.verifiers import BoundedModule, linf_ball, margin_spec


def epoch(model, bm, x, y, batch, method, eps, opt):
    model.train()
    for i in range(0, len(y), batch):
        xb, yb = x[i:i + batch], y[i:i + batch]
        loss = F.cross_entropy(model(xb), yb)
        if method != "natural":
            C = margin_spec(yb, 10)
            pert = linf_ball(xb, eps)
            lb, bounds = bm.ibp_margins(pert, C)
            if method == "crown-ibp-fused":  # loss fusion: one backward row (as --loss-fusion at beta = 1)
                robust = torch.minimum(fused_cross_entropy_upper(bm, pert, C, bounds),
                                       robust_cross_entropy_each(lb)).mean()
            else:
                if method == "crown-ibp":
                    lb = bm.crown_ibp_lower(pert, C, bounds)
                robust = robust_cross_entropy(lb)
            loss = 0.5 * loss + 0.5 * robust
        opt.zero_grad()
        loss.backward()
        opt.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--eps", type=float, default=0.1)
    args = ap.parse_args()
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    x = torch.rand((args.n, 1, 28, 28), generator=g).to(device)
    y = torch.randint(0, 10, (args.n,), generator=g).to(device)
    times = {}
    for method in ("natural", "ibp", "crown-ibp", "crown-ibp-fused"):
        torch.manual_seed(0)
        model = build_model("cnn_a", (1, 28, 28), 10).to(device)
        bm = BoundedModule(model, (1, 28, 28))
        opt = torch.optim.Adam(model.parameters(), 1e-3)
        epoch(model, bm, x[:2 * args.batch], y[:2 * args.batch], args.batch, method, args.eps, opt)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        epoch(model, bm, x, y, args.batch, method, args.eps, opt)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times[method] = time.perf_counter() - t0
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, cnn_a on {args.n} "
          f"images 1x28x28, batch {args.batch}, eps {args.eps}")
    for m, t in times.items():
        print(f"{m:<16} epoch {t:7.2f} s   x natural {t / times['natural']:5.2f}")
    print(f"targets: IBP <= 3x natural ({times['ibp'] / times['natural']:.2f}x), "
          f"CROWN-IBP <= 8x natural ({times['crown-ibp'] / times['natural']:.2f}x; with --loss-fusion "
          f"{times['crown-ibp-fused'] / times['natural']:.2f}x)")


if __name__ == "__main__":
    main()
