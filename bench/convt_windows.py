"""CROWN's intermediate bounds of a cGAN-shaped network (transposed convolutions, then strided convolutions): one run.

    python bench/convt_windows.py [NET.onnx PROP.vnnlib ...]

Without arguments: a generator-discriminator ReLU network with fixed random weights (5 latent inputs -> 128 x 2 x 2
-> transposed convolutions with BatchNorm to 16 x 30 x 30 -> a transposed convolution to a 1 x 32 x 32 image ->
strided convolutions to 64 x 4 x 4 -> 1 output) over a box of half-width 0.005 in 4 of the 5 inputs, float64. With
NET.onnx PROP.vnnlib pairs: the first disjunct's input box of each property (VNN-COMP cgan_2023's 64 x 64 networks
are what these settings were measured on).

Settings, each timed by ``crown_intermediate`` (the fastest of two calls, one when it takes over 5 s):
  dense       rows of every neuron dense (``conv_windows=False``),
  one call    rows on their windows, through the transposed convolutions too, each convolution over the whole
              batch of rows in one call,
  windows     the same in slices of at most ``CONV_CALL_FLOATS`` floats of work buffer (the default),
  one-sided   and the inputs of ReLUs bounded on the side of their center value first (input splitting's setting).
Printed: seconds, the ratio dense / setting, and the largest difference from the dense bounds over the neurons the
dense bounds leave unstable (rounding only; the one-sided setting keeps the looser forward / IBP bound on the other
side of the neurons it finds stable, which are not compared).
"""
from __future__ import annotations

import argparse
import time


def _problems(pairs: list[str]):
    import torch
    from forward_hybrid import first_box, latent_boxes  # (bench/ is on the path of a script run from it)
    from torch import nn

    if not pairs:
        torch.manual_seed(0)

        def bn(c):
            b = nn.BatchNorm2d(c)
            b.running_mean.uniform_(-0.2, 0.2)
            b.running_var.uniform_(0.5, 1.5)
            return b
        net = nn.Sequential(
            nn.Linear(5, 512), nn.Unflatten(1, (128, 2, 2)), bn(128),
            nn.ConvTranspose2d(128, 64, 4, stride=2), bn(64), nn.ReLU(),                 # 6 x 6
            nn.ConvTranspose2d(64, 32, 4, stride=2), bn(32), nn.ReLU(),                  # 14 x 14
            nn.ConvTranspose2d(32, 16, 4, stride=2), bn(16), nn.ReLU(),                  # 30 x 30
            nn.ConvTranspose2d(16, 1, 3, stride=1),                                      # 32 x 32 image
            nn.Conv2d(1, 16, 4, stride=2, padding=1), nn.ReLU(),                         # 16 x 16
            nn.Conv2d(16, 32, 4, stride=2, padding=1), nn.ReLU(),                        # 8 x 8
            nn.Conv2d(32, 64, 4, stride=2, padding=1), nn.ReLU(),                        # 4 x 4
            nn.Flatten(), nn.Linear(64 * 16, 1)).double().eval()
        yield "random cGAN-shaped network", net, (5,), *latent_boxes(1, 0.005)
        return
    for onnx_path, vnnlib_path in zip(pairs[::2], pairs[1::2]):
        net, shape, lo, hi = first_box(onnx_path, vnnlib_path)
        yield onnx_path, net, shape, lo.reshape((1,) + shape), hi.reshape((1,) + shape)


def _timed(bm, pert):
    import torch
    best, bounds = float("inf"), None
    for _ in range(2):
        t0 = time.perf_counter()
        with torch.no_grad():
            bounds = bm.crown_intermediate(pert)
        best = min(best, time.perf_counter() - t0)
        if best > 5:
            break
    return best, bounds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("pairs", nargs="*", help="NET.onnx PROP.vnnlib pairs (default: a random cGAN-shaped network)")
    args = ap.parse_args()
    if len(args.pairs) % 2:
        raise SystemExit("give NET.onnx PROP.vnnlib pairs")
    import torch

    from certkit.common.memory import retain_freed_memory
    from certkit.verifiers.bounds.ibp_crown import BoundedModule
    from certkit.verifiers.bounds.ops import conv
    from certkit.verifiers.bounds.perturbation import Box
    retain_freed_memory()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    default_floats = conv.CONV_CALL_FLOATS
    for name, net, shape, lo, hi in _problems(args.pairs):
        pert = Box(lo, hi)
        print(name)
        ref = None
        for label, windows, floats, one_sided in (("dense", False, default_floats, False),
                                                   ("one call", True, 2 ** 62, False),
                                                   ("windows", True, default_floats, False),
                                                   ("one-sided", True, default_floats, True)):
            conv.CONV_CALL_FLOATS = floats
            bm = BoundedModule(net, shape, conv_windows=windows)
            bm.one_sided = one_sided
            seconds, bounds = _timed(bm, pert)
            conv.CONV_CALL_FLOATS = default_floats
            if ref is None:
                ref = seconds, bounds
                print(f"  {label:10s} {seconds:7.2f} s")
                continue
            diff = 0.0
            for a in bm.graph.nonlinear():
                j = bm.graph.nodes[a].inputs[0]
                (l0, u0), (l1, u1) = ref[1][j], bounds[j]
                keep = (l0 < 0) & (u0 > 0)
                if bool(keep.any()):
                    diff = max(diff, float((l0 - l1)[keep].abs().max()), float((u0 - u1)[keep].abs().max()))
            print(f"  {label:10s} {seconds:7.2f} s   dense / this {ref[0] / seconds:5.2f}x   "
                  f"largest difference {diff:.1e}")


if __name__ == "__main__":
    main()
