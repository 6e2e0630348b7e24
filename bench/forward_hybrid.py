"""CROWN's intermediate bounds with and without forward-mode rows beside them (``BoundedModule.forward_rows``): one run.

    python bench/forward_hybrid.py [--boxes 16] [NET.onnx PROP.vnnlib ...]

Without arguments: a generator-shaped ReLU network with fixed random weights (5 latent inputs -> 128 x 2 x 2 ->
transposed convolutions to 64 x 8 x 8 and 32 x 16 x 16 -> convolutions back to 16 x 8 x 8 -> 1 output), over boxes of
half-width 0.05 in 4 of the 5 inputs. With NET.onnx PROP.vnnlib pairs: the first disjunct's input box of each
property, whole and split into ``--boxes`` sub-boxes along its free inputs (VNN-COMP cgan_2023, acasxu_2023 and
linearizenn are the networks the rows were measured on).

For each problem and both settings: the seconds of ``crown_intermediate`` (the fastest of two calls, one when it
takes over 5 s), the neurons the backward passes bounded, and the mean width of the outputs' CROWN bounds (one
backward pass from the outputs on those intermediate bounds); then the time ratio (without / with). Both are sound;
with the rows, CROWN skips neurons that forward mode already shows stable (their intervals stay the looser forward
ones, which a ReLU's exact relaxation does not feel) and bounds the others from tighter relaxations, so the widths
may differ slightly either way.
"""
from __future__ import annotations

import argparse
import itertools
import time


def latent_boxes(n: int, half_width: float):
    """n boxes (lo, hi), each (n, 5) float64, around fixed random centers in [0, 1)^5, of ``half_width`` in the first
    4 coordinates and fixed in the last (a cGAN's 4 free latent inputs and its class)."""
    import torch
    c = torch.rand((n, 5), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    r = torch.full_like(c, half_width)
    r[:, 4] = 0.0
    return c - r, c + r


def first_box(net_path: str, prop_path: str):
    """The float64 network of an ONNX file, its input shape and its property's first disjunct's box (lo, hi) as
    flat float64 tensors."""
    import torch

    from certkit.models.onnx_import import load_onnx
    from certkit.verifiers.complete.vnnlib import parse_vnnlib
    model = load_onnx(net_path)
    term = parse_vnnlib(prop_path).terms[0]
    return model.module.double().eval(), tuple(model.sample_shape), torch.tensor(term.x_L), torch.tensor(term.x_U)


def _problems(pairs: list[str], boxes: int):
    import torch
    from torch import nn

    if not pairs:
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(5, 512), nn.Unflatten(1, (128, 2, 2)), nn.ReLU(),
                            nn.ConvTranspose2d(128, 64, 4, stride=4), nn.ReLU(),
                            nn.ConvTranspose2d(64, 32, 2, stride=2), nn.ReLU(),
                            nn.Conv2d(32, 16, 4, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                            nn.Linear(16 * 8 * 8, 1)).double().eval()
        yield "random generator-shaped network", net, (5,), *latent_boxes(boxes, 0.05)
        return
    for net_path, prop_path in zip(pairs[::2], pairs[1::2]):
        net, shape, lo0, hi0 = first_box(net_path, prop_path)
        free = (hi0 > lo0).nonzero().flatten().tolist()
        yield f"{net_path} (whole box)", net, shape, lo0[None], hi0[None]
        if not free:
            continue
        k = 2
        while (k + 1) ** len(free) <= boxes:
            k += 1
        cells = list(itertools.product(range(k), repeat=len(free)))[:boxes]
        lo, hi = lo0.repeat(len(cells), 1), hi0.repeat(len(cells), 1)
        for b, cell in enumerate(cells):
            for d, j in zip(free, cell):
                w = (hi0[d] - lo0[d]) / k
                lo[b, d], hi[b, d] = lo0[d] + j * w, lo0[d] + (j + 1) * w
        yield f"{net_path} ({len(cells)} sub-boxes, {k} per free input)", net, shape, lo, hi


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pairs", nargs="*", help="NET.onnx PROP.vnnlib pairs (default: a random generator-shaped net)")
    ap.add_argument("--boxes", type=int, default=16, help="sub-boxes of each property's box (default 16)")
    args = ap.parse_args()
    if len(args.pairs) % 2:
        ap.error("give NET.onnx PROP.vnnlib pairs")
    import torch

    from certkit.common.memory import retain_freed_memory
    from certkit.verifiers.bounds.ibp_crown import BoundedModule
    from certkit.verifiers.bounds.perturbation import Box

    retain_freed_memory()
    for name, net, shape, lo, hi in _problems(args.pairs, args.boxes):
        pert = Box(lo.reshape((-1,) + shape), hi.reshape((-1,) + shape))
        seconds = {}
        print(name)
        for forward in (False, True):
            bm = BoundedModule(net, shape)
            bm.forward_rows = forward
            rows = []
            real = bm._backward_interval

            def counted(i, p, bounds, relax, only=None, real=real, rows=rows, **kw):
                rows.append(int(only.sum()) if only is not None else 0)
                return real(i, p, bounds, relax, only, **kw)
            bm._backward_interval = counted
            best = float("inf")
            for _ in range(2):
                rows.clear()
                t0 = time.perf_counter()
                with torch.no_grad():
                    bounds = bm.crown_intermediate(pert)
                best = min(best, time.perf_counter() - t0)
                if best > 5:           # slow enough for one call to be measured well
                    break
            seconds[forward] = best
            K = torch.Size(bm.graph.output_shape).numel()
            eye = torch.eye(K, dtype=lo.dtype)[None].expand(lo.shape[0], K, K)
            C = torch.cat([eye, -eye], 1).reshape((lo.shape[0], 2 * K) + tuple(bm.graph.output_shape))
            with torch.no_grad():
                both = bm._backward(bm.graph.output, C, pert, bounds, {})
            width = float((-both[:, K:] - both[:, :K]).mean())
            print(f"  forward rows {'on ' if forward else 'off'}: {best:7.2f} s, {sum(rows):8d} neurons by backward "
                  f"passes, output width {width:.4g}")
        print(f"  time without / with: {seconds[False] / seconds[True]:.2f}")


if __name__ == "__main__":
    main()
