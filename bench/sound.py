"""What the sound mode costs: time and verified / certified accuracy of ``--sound`` against the default mode.

    python bench/sound.py [--inputs 200] [--n 10000] [--skip-fmnist]

Bound propagation: IBP, CROWN and alpha-CROWN lower bounds of the margins of the true class over Linf balls, default
(certkit's engine on the float32 model, as ``certkit verify --model`` runs it; also on the float64 model, as the
VNN-COMP modes run it) against sound (verifiers/bounds/sound.py, in
float64 with outward rounding), on the bundled digits MLP and on a Fashion-MNIST MLP trained here for two epochs
(IBP, eps 0.02 ramped; about a minute), each on its first ``--inputs`` test images.
Gaussian smoothing: CERTIFY (n0 100, ``--n``, alpha 0.001) with float32 noise against the sound sampler
(certify/sound_noise.py) on the bundled digits MLP (sigma 0.25) and a Fashion-MNIST MLP trained here with Gaussian
noise (sigma 0.25, two epochs). Each pair is timed one after the other, never at the same time; the table prints the
ratios (goals: bounds <= 1.5x, smoothing <= 1.2x, accuracy within 1 point).
"""
from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.nn.functional as F
from torch import nn

from certkit.certify import GaussianSmoothing, NoiseSampler
from certkit.certify.sampling import input_generator
from certkit.datasets import load_dataset
from certkit.models import load_model
from certkit.verifiers import BoundedModule, linf_ball, margin_spec
from certkit.verifiers.bounds.sound import SoundBounds, outward


def fmnist_mlp(mode: str, seed: int = 0) -> nn.Module:
    """784-256-256-10 ReLU MLP on Fashion-MNIST, two epochs: ``ibp`` (IBP loss mixed in, eps ramped to 0.02) or
    ``noise`` (Gaussian noise, sigma 0.25)."""
    torch.manual_seed(seed)
    data = load_dataset("fashion-mnist", split="train")
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                        nn.Linear(256, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    bm = BoundedModule(net, (1, 28, 28))
    steps = 2 * (len(data) // 128)
    for step in range(steps):
        idx = torch.randint(0, len(data), (128,))
        x, y = data.x[idx], data.y[idx]
        if mode == "noise":
            loss = F.cross_entropy(net(x + 0.25 * torch.randn_like(x)), y)
        else:
            eps = 0.02 * min(1.0, step / (0.5 * steps))
            lb, _ = bm.compute_bounds(linf_ball(x, eps), margin_spec(y, 10), "IBP", bound_upper=False)
            robust = F.cross_entropy(torch.cat([torch.zeros_like(lb[:, :1]), -lb], 1), torch.zeros_like(y))
            loss = 0.5 * F.cross_entropy(net(x), y) + 0.5 * robust
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def bounds_row(name: str, net: nn.Module, data, eps: float, inputs: int) -> list[str]:
    x, y = data.x[:inputs], data.y[:inputs]
    C = margin_spec(y, 10)
    bm = BoundedModule(net, data.input_shape)
    net64 = copy.deepcopy(net).double()
    bm64 = BoundedModule(net64, data.input_shape)
    sb = SoundBounds(BoundedModule(net64, data.input_shape, fusing=False))
    lo, hi = outward((x.double() - eps).clamp(0, 1), (x.double() + eps).clamp(0, 1))
    with torch.no_grad():
        clean = float((net(x).argmax(1) == y).float().mean())
    lines = []
    for method in ("IBP", "CROWN", "alpha-CROWN"):
        t0 = time.perf_counter()
        with torch.enable_grad() if method == "alpha-CROWN" else torch.no_grad():
            lb, _ = bm.compute_bounds(linf_ball(x, eps, (0.0, 1.0)), C, method, bound_upper=False)
        t_default = time.perf_counter() - t0
        t0 = time.perf_counter()
        with torch.enable_grad() if method == "alpha-CROWN" else torch.no_grad():
            bm64.compute_bounds(linf_ball(x.double(), eps, (0.0, 1.0)), C.double(), method, bound_upper=False)
        t64 = time.perf_counter() - t0
        t0 = time.perf_counter()
        lbs = sb.compute_bounds(lo, hi, C.double(), method)
        t_sound = time.perf_counter() - t0
        v_default = float((lb.detach() > 0).all(1).float().mean())
        v_sound = float((lbs > 0).all(1).float().mean())
        lines.append(f"| {name} (clean {clean:.3f}), Linf {eps:g} | {method} | {v_default:.3f} | {v_sound:.3f} | "
                     f"{t_default:.2f} s | {t64:.2f} s | {t_sound:.2f} s | {t_sound / t_default:.2f} | "
                     f"{t_sound / t64:.2f} |")
    return lines


def smoothing_row(name: str, net: nn.Module, data, inputs: int, n: int) -> str:
    results = {}
    for sound in (False, True):
        g = GaussianSmoothing(NoiseSampler(net, 0.25, batch_size=1000, sound=sound))
        if sound:
            g.sampler.grid.thresholds(torch.device("cpu"))   # the table is built once per sigma (not timed)
        t0 = time.perf_counter()
        certs = [g.certify(data.x[i], 100, n, 0.001, input_generator(0, i, torch.device("cpu")))
                 for i in range(inputs)]
        secs = time.perf_counter() - t0
        correct = [c.prediction == int(data.y[i]) for i, c in enumerate(certs)]
        acc = {r: sum(ok and c.radius >= r for ok, c in zip(correct, certs)) / inputs for r in (0.0, 0.25, 0.5)}
        acr = sum(c.radius for ok, c in zip(correct, certs) if ok) / inputs
        results[sound] = (acc, acr, secs)
    (a0, r0, s0), (a1, r1, s1) = results[False], results[True]
    fmt = lambda a: " / ".join(f"{a[r]:.3f}" for r in (0.0, 0.25, 0.5))  # noqa: E731
    return (f"| {name} | {fmt(a0)} (ACR {r0:.3f}) | {fmt(a1)} (ACR {r1:.3f}) | {s0:.1f} s | {s1:.1f} s | "
            f"{s1 / s0:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inputs", type=int, default=200)
    ap.add_argument("--n", type=int, default=10_000, help="certification samples per input (smoothing)")
    ap.add_argument("--smoothing-inputs", type=int, default=50)
    ap.add_argument("--skip-fmnist", action="store_true")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    digits = load_dataset("digits", split="test")
    bundled = load_model("bundled").module.eval()
    rows_b = bounds_row("digits MLP (bundled)", bundled, digits, 0.01, min(args.inputs, len(digits)))
    rows_s = [smoothing_row("digits MLP (bundled), sigma 0.25", bundled, digits, args.smoothing_inputs, args.n)]
    if not args.skip_fmnist:
        fm = load_dataset("fashion-mnist", split="test")
        with torch.enable_grad():
            ibp_net, noise_net = fmnist_mlp("ibp"), fmnist_mlp("noise")
        rows_b += bounds_row("Fashion-MNIST MLP (IBP, 2 epochs)", ibp_net, fm, 0.02, args.inputs)
        rows_s.append(smoothing_row("Fashion-MNIST MLP (noise, 2 epochs), sigma 0.25", noise_net, fm,
                                    args.smoothing_inputs, args.n))
    print("| model, ball | method | verified (default) | verified (--sound) | default (float32) | float64 | --sound | "
          "x default | x float64 |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows_b))
    print()
    print("| model | certified accuracy at r = 0 / 0.25 / 0.5, default | --sound | default | --sound | x default |")
    print("| --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows_s))


if __name__ == "__main__":
    main()
