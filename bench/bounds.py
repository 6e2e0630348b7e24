"""Time and tightness of IBP / CROWN-IBP / CROWN / alpha-CROWN on four naturally trained nets, in one run.

    python bench/bounds.py [--device cpu|cuda] [--batch 256] [--eps 0.01] [--epochs 15]

Models (trained here on the bundled digits data with natural cross-entropy for --epochs): an MLP, a CNN with
BatchNorm, a residual CNN and a sigmoid MLP. For each method: seconds for one batch of margin bounds (Linf eps on
[0,1] pixels, C = true-class margins), mean bound width (ub - lb), mean lower bound, verified fraction, and the
time ratio to IBP, for lower and upper bounds and for the lower bound alone (what verification and certified
training compute). Targets (issue 3): CROWN-IBP at most 4x the time of IBP; CROWN-IBP margins tighter than IBP's
on average. When auto_LiRPA imports, the same bounds through it: time ratio and largest relative difference.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

from certkit.datasets import load_dataset
from certkit.models.zoo import NormalizeLayer
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
    norm = lambda: NormalizeLayer([0.3], [0.4])
    return {
        "mlp": nn.Sequential(norm(), nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(),
                             nn.Linear(128, 10)),
        "cnn+bn": nn.Sequential(norm(), nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                nn.Conv2d(16, 16, 4, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                nn.Flatten(), nn.Linear(16 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10)),
        "residual": ResNetSmall(),
        "sigmoid": nn.Sequential(norm(), nn.Flatten(), nn.Linear(64, 128), nn.Sigmoid(), nn.Linear(128, 128),
                                 nn.Sigmoid(), nn.Linear(128, 10)),
    }


def train(model, data, epochs, seed=0):
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(data))
        for i in range(0, len(data), 64):
            idx = perm[i:i + 64]
            loss = F.cross_entropy(model(data.x[idx]), data.y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def timed(fn, device):
    fn()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--eps", type=float, default=0.01)
    ap.add_argument("--epochs", type=int, default=15)
    args = ap.parse_args()
    device = torch.device(args.device)
    train_set, test = load_dataset("digits", split="train"), load_dataset("digits", split="test")
    x, y = test.x[:args.batch].to(device), test.y[:args.batch].to(device)
    C = margin_spec(y, 10)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, batch {x.shape[0]}, "
          f"Linf eps {args.eps} on [0,1] pixels; models trained naturally on digits for {args.epochs} epochs")
    print(f"{'model':<10}{'method':<13}{'lb+ub s':>9}{'x IBP':>8}{'lb-only s':>10}{'x IBP':>8}{'mean width':>12}"
          f"{'mean lb':>10}{'verified':>10}")
    for name, net in models().items():
        net = train(net, train_set, args.epochs).to(device)
        acc = (net(x).argmax(1) == y).float().mean().item()
        bm = BoundedModule(net, (1, 8, 8))
        pert = linf_ball(x, args.eps)
        res = {}
        for m in METHODS:
            def run(m=m):
                with torch.enable_grad() if m == "alpha-CROWN" else torch.no_grad():
                    lb, ub = bm.compute_bounds(pert, C, m)
                return lb.detach(), ub.detach()
            def run_lb(m=m):
                with torch.enable_grad() if m == "alpha-CROWN" else torch.no_grad():
                    return bm.compute_bounds(pert, C, m, bound_upper=False)[0]
            (lb, ub), sec = timed(run, device)
            _, sec_lb = timed(run_lb, device)
            res[m] = (lb, ub, sec, sec_lb)
            print(f"{name:<10}{m:<13}{sec:>9.4f}{sec / res['IBP'][2]:>8.2f}{sec_lb:>10.4f}{sec_lb / res['IBP'][3]:>8.2f}"
                  f"{(ub - lb).mean().item():>12.3f}{lb.mean().item():>10.3f}"
                  f"{(lb > 0).all(1).float().mean().item():>10.3f}", flush=True)
        ibp_w = (res["IBP"][1] - res["IBP"][0]).mean().item()
        cibp_w = (res["CROWN-IBP"][1] - res["CROWN-IBP"][0]).mean().item()
        print(f"{name:<10}clean acc {acc:.3f}; CROWN-IBP/IBP time {res['CROWN-IBP'][2] / res['IBP'][2]:.2f}x "
              f"(lb+ub), {res['CROWN-IBP'][3] / res['IBP'][3]:.2f}x (lb only; target <= 4); "
              f"CROWN-IBP/IBP mean width {cibp_w / ibp_w:.3f} (target < 1)")
        if auto_lirpa_available():
            ext = AutoLirpaBackend(net, (1, 8, 8))
            for m in METHODS:
                (lb2, ub2), sec2 = timed(lambda m=m: ext.compute_bounds(pert, C, m), device)
                lb = res[m][0]
                rel = ((lb2 - lb).abs() / (lb.abs() + 1e-6)).max().item()
                print(f"{name:<10}{m:<13}certkit/auto_LiRPA time {res[m][2] / sec2:.2f}, max rel diff {rel:.2e}")
    if not auto_lirpa_available():
        print("auto_LiRPA is not importable here: no comparison (see bench/README.md)")


if __name__ == "__main__":
    main()
