"""Time and tightness of IBP / CROWN-IBP / CROWN / alpha-CROWN on five naturally trained nets, in one run.

    python bench/bounds.py [--device cpu|cuda] [--batch 256] [--eps 0.01] [--epochs 15] [--models NAME ...]
        [--lirpa-alpha]

Models (trained here on the bundled digits data with natural cross-entropy for --epochs): an MLP, a CNN with
BatchNorm, a residual CNN and a sigmoid MLP on the 8x8 images, and certkit's `cnn` on the images resized to 28x28
(MNIST-shaped; 32 inputs at most: auto_LiRPA's CROWN on 64 of them needs more than 24 GB). On the convolutional
nets CROWN is also timed with dense rows on 32 inputs, to show what windowed convolution rows
(verifiers/bounds/windows.py)
save. For each method: seconds for one batch of margin bounds (Linf eps on
[0,1] pixels, C = true-class margins), mean bound width (ub - lb), mean lower bound, verified fraction, and the
time ratio to IBP, for lower and upper bounds and for the lower bound alone (what verification and certified
training compute). Targets: CROWN-IBP at most 4x the time of IBP; CROWN-IBP margins tighter than IBP's
on average. When auto_LiRPA imports (e.g. PYTHONPATH=its public source), the same bounds through it, in the same
run: time ratio (target for CROWN: <= 1.0) and the largest bound difference. Timings: fastest of two calls
after a warm-up call.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

from certkit.datasets import load_dataset
from certkit.models.zoo import NormalizeLayer, build_model
from certkit.verifiers import METHODS, BoundedModule, linf_ball, margin_spec
from certkit.verifiers.external import AutoLirpaBackend, auto_lirpa_available


class ResNetSmall(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = NormalizeLayer([0.3], [0.4])
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.block1 = nn.Conv2d(8, 8, 3, padding=1)
        self.block2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        h = torch.relu(self.conv(self.norm(x)))
        h = torch.relu(h + self.block2(torch.relu(self.block1(h))))
        return self.fc(torch.flatten(h, 1))


def models():
    """name -> (net, input side): nets on the 8x8 digits, and an MNIST-shaped CNN on the digits resized to 28x28."""
    norm = lambda: NormalizeLayer([0.3], [0.4])
    return {
        "mlp": (nn.Sequential(norm(), nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(),
                              nn.Linear(128, 10)), 8),
        "cnn+bn": (nn.Sequential(norm(), nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                 nn.Conv2d(16, 16, 4, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                 nn.Flatten(), nn.Linear(16 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10)), 8),
        "residual": (ResNetSmall(), 8),
        "sigmoid": (nn.Sequential(norm(), nn.Flatten(), nn.Linear(64, 128), nn.Sigmoid(), nn.Linear(128, 128),
                                  nn.Sigmoid(), nn.Linear(128, 10)), 8),
        "cnn 28x28": (nn.Sequential(norm(), build_model("cnn", (1, 28, 28), 10)), 28),
    }


def resized(x, side):
    return x if x.shape[-1] == side else F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)


def train(model, x, y, epochs, seed=0):
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            idx = perm[i:i + 64]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def timed(fn, device, repeats=2):
    """(result, fastest of ``repeats`` timed calls after one warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return out, best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--eps", type=float, default=0.01)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--models", nargs="*", help="only these nets (names as printed: mlp, cnn+bn, residual, sigmoid, "
                    "'cnn 28x28')")
    ap.add_argument("--lirpa-alpha", action="store_true",
                    help="also time auto_LiRPA's alpha-CROWN (minutes per net on 2 CPU cores: 58 s on the MLP)")
    args = ap.parse_args()
    device = torch.device(args.device)
    train_set, test = load_dataset("digits", split="train"), load_dataset("digits", split="test")
    x, y = test.x[:args.batch].to(device), test.y[:args.batch].to(device)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, batch {x.shape[0]}, "
          f"Linf eps {args.eps} on [0,1] pixels; models trained naturally on digits for {args.epochs} epochs")
    print(f"{'model':<10}{'method':<13}{'lb+ub s':>9}{'x IBP':>8}{'lb-only s':>10}{'x IBP':>8}{'mean width':>12}"
          f"{'mean lb':>10}{'verified':>10}")
    for name, (net, side) in models().items():
        if args.models and name not in args.models:
            continue
        nb = x.shape[0] if side == 8 else min(x.shape[0], 32)  # memory: auto_LiRPA CROWN on 64 such inputs > 24 GB
        xm, shape, C = resized(x[:nb], side), (1, side, side), margin_spec(y[:nb], 10)
        net = train(net, resized(train_set.x, side), train_set.y, args.epochs).to(device)
        acc = (net(xm).argmax(1) == y[:nb]).float().mean().item()
        pert = linf_ball(xm, args.eps)
        bms = {m: BoundedModule(net, shape) for m in METHODS}
        res = {}
        for m, bm in bms.items():
            method = m.split()[0]
            def run(bm=bm, method=method, upper=True, pert=pert, C=C):
                with torch.enable_grad() if method == "alpha-CROWN" else torch.no_grad():
                    lb, ub = bm.compute_bounds(pert, C, method, bound_upper=upper)
                return lb.detach(), (ub.detach() if upper else None)
            (lb, ub), sec = timed(run, device)
            _, sec_lb = timed(lambda run=run: run(upper=False), device)
            res[m] = (lb, ub, sec, sec_lb)
            print(f"{name:<10}{m:<13}{sec:>9.4f}{sec / res['IBP'][2]:>8.2f}{sec_lb:>10.4f}"
                  f"{sec_lb / res['IBP'][3]:>8.2f}"
                  f"{(ub - lb).mean().item():>12.3f}{lb.mean().item():>10.3f}"
                  f"{(lb > 0).all(1).float().mean().item():>10.3f}", flush=True)
        ibp_w = (res["IBP"][1] - res["IBP"][0]).mean().item()
        cibp_w = (res["CROWN-IBP"][1] - res["CROWN-IBP"][0]).mean().item()
        print(f"{name:<10}clean acc {acc:.3f}; CROWN-IBP/IBP time {res['CROWN-IBP'][2] / res['IBP'][2]:.2f}x "
              f"(lb+ub), {res['CROWN-IBP'][3] / res['IBP'][3]:.2f}x (lb only; target <= 4); "
              f"CROWN-IBP/IBP mean width {cibp_w / ibp_w:.3f} (target < 1)")
        if name != "mlp" and name != "sigmoid":  # CROWN with windowed vs dense rows for convolutional layers
            few = linf_ball(xm[:32], args.eps)
            sec = {}
            for windowed in (True, False):
                bm = BoundedModule(net, shape, conv_windows=windowed)
                with torch.no_grad():
                    (lb_w, _), sec[windowed] = timed(
                        lambda bm=bm, few=few, C=C: bm.compute_bounds(few, C[:32], "CROWN"), device, 1)
                res[windowed] = lb_w
            print(f"{name:<10}CROWN, first 32 inputs: windowed rows {sec[True]:.3f} s, dense rows {sec[False]:.3f} s, "
                  f"ratio {sec[True] / sec[False]:.3f}, max |lb difference| "
                  f"{(res[True] - res[False]).abs().max().item():.1e}", flush=True)
        if auto_lirpa_available():
            ext = AutoLirpaBackend(net, shape)
            for m in METHODS if args.lirpa_alpha else METHODS[:-1]:
                (lb2, ub2), sec2 = timed(
                    lambda m=m, ext=ext, pert=pert, C=C: [t.detach() for t in ext.compute_bounds(pert, C, m)], device)
                lb = res[m][0]
                diff = (lb2 - lb).abs().max().item() / (1 + lb.abs().max().item())
                print(f"{name:<10}{m:<13}certkit/auto_LiRPA time {res[m][2] / sec2:.2f} ({res[m][2]:.4f} s vs "
                      f"{sec2:.4f} s), max |lb difference| / (1 + max |lb|) {diff:.1e}, mean lb {lb.mean().item():.3f}"
                      f" vs {lb2.mean().item():.3f}", flush=True)
    if not auto_lirpa_available():
        print("auto_LiRPA is not importable here: no comparison (see bench/README.md)")


if __name__ == "__main__":
    main()
