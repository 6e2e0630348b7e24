"""Activation-split branch and bound with alpha and beta optimised in float64 against float32 (``fast``): one run.

    python bench/bab_precision.py [--seconds 20] [NET.onnx PROP.vnnlib ...]

Without arguments: a CIFAR-shaped ReLU CNN with fixed random weights (3 x 32 x 32 -> conv 16 -> conv 32 stride 2 ->
conv 32 stride 2 -> 100 -> 10), the margin "class 0 beats class 1" over an Linf box of eps 0.01 around a fixed
random image, thresholded between the root bound and the sampled minimum so that the search has to branch. With
NET.onnx PROP.vnnlib pairs: the first disjunct of each property over its box, root bounds as the complete verifier
computes them (CROWN, then alpha-CROWN's layer-by-layer optimisation, float64 iterations for both runs).

For each problem both searches get the same root bounds and at most ``--seconds``; prints the subdomains each bounded
and their rate, their answers (they must not contradict: neither may say ``unsat`` where the other found a
counterexample), the time of one CROWN pass and its gradient for 125 subdomains in each precision, and the ratios.
"""
from __future__ import annotations

import argparse
import copy
import time


def _problems(pairs: list[str]):
    import torch
    from torch import nn

    from certkit.verifiers.bounds.ibp_crown import BoundedModule
    from certkit.verifiers.bounds.perturbation import Box

    if not pairs:
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 4, stride=2, padding=1),
                            nn.ReLU(), nn.Conv2d(32, 32, 4, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                            nn.Linear(32 * 8 * 8, 100), nn.ReLU(), nn.Linear(100, 10)).double().eval()
        x0 = torch.rand((3, 32, 32), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        x_L, x_U = x0 - 0.01, x0 + 0.01
        C = torch.zeros((1, 10), dtype=torch.float64)
        C[0, 0], C[0, 1] = 1.0, -1.0
        bm = BoundedModule(net, (3, 32, 32))
        with torch.no_grad():
            root = bm.crown_intermediate(Box(x_L[None], x_U[None]))
            lb = float(bm._backward(bm.graph.output, C.reshape(1, 1, 10), Box(x_L[None], x_U[None]), root, {})[0, 0])
            xs = x_L + (x_U - x_L) * torch.rand((2000, 3, 32, 32), generator=torch.Generator().manual_seed(2),
                                                dtype=torch.float64)
            sampled = float((net(xs) @ C[0]).min())
        d = lb + 0.6 * (sampled - lb)
        yield "random CIFAR-shaped CNN", net, (3, 32, 32), x_L, x_U, C, torch.tensor([d], dtype=torch.float64), None
        return
    from certkit.models.onnx_import import load_onnx
    from certkit.verifiers.bounds.alpha_crown import optimize_intermediate
    from certkit.verifiers.complete.vnnlib import parse_vnnlib

    for net_path, prop_path in zip(pairs[::2], pairs[1::2]):
        model = load_onnx(net_path)
        term = parse_vnnlib(prop_path).terms[0]
        net = copy.deepcopy(model.module).double().eval()
        shape = tuple(model.sample_shape)
        x_L = torch.tensor(term.x_L).reshape(shape)
        x_U = torch.tensor(term.x_U).reshape(shape)
        bm = BoundedModule(net, shape)
        pert = Box(x_L[None], x_U[None])
        with torch.no_grad():
            crown = bm.crown_intermediate(pert)
        root = optimize_intermediate(bm, pert, crown, deadline=time.perf_counter() + 60)
        yield (f"{net_path} {prop_path}", net, shape, x_L, x_U, torch.tensor(term.C), torch.tensor(term.d), root)


def _pass_seconds(bm, bounds, C, x_L, x_U, D: int = 125) -> float:
    """One CROWN pass from the output and its gradient w.r.t. the alphas, for D copies of the root (seconds)."""
    import torch

    from certkit.verifiers.bounds.perturbation import Box

    g = bm.graph
    dt = C.dtype
    bnd = [(lb.expand((D,) + lb.shape[1:]).to(dt), ub.expand((D,) + ub.shape[1:]).to(dt)) for lb, ub in bounds]
    CC = C.reshape((1, C.shape[0]) + tuple(g.output_shape)).expand((D, -1) + tuple(g.output_shape))
    alphas = {}
    for a in g.nonlinear():
        op = g.nodes[a].op
        if op.n_alpha:
            init = op.alpha_init([bnd[j] for j in g.nodes[a].inputs])
            alphas[a] = init.unsqueeze(2).expand(-1, -1, C.shape[0], *[-1] * (init.dim() - 2)).clone()
            alphas[a].requires_grad_(True)
    setups = {a: g.nodes[a].op.relaxation_setup([bnd[j] for j in g.nodes[a].inputs]) for a in alphas}
    pert = Box(x_L.to(dt).expand((D,) + x_L.shape[1:]), x_U.to(dt).expand((D,) + x_U.shape[1:]), check=False)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        A, bias = bm.propagate(g.output, CC, bnd, {}, alphas, setups)
        lb = bias + pert.lower(A)
        torch.autograd.grad(lb.sum(), list(alphas.values()))
        best = min(best, time.perf_counter() - t)
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("pairs", nargs="*", help="NET.onnx PROP.vnnlib pairs (default: a random CIFAR-shaped CNN)")
    ap.add_argument("--seconds", type=float, default=20.0, help="time of each search")
    args = ap.parse_args(argv)
    if len(args.pairs) % 2:
        ap.error("give NET.onnx PROP.vnnlib pairs")

    import torch

    from certkit.verifiers.bounds.ibp_crown import BoundedModule
    from certkit.verifiers.bounds.perturbation import Box
    from certkit.verifiers.complete.beta_crown import ActivationBaB

    print("| problem | pass + gradient, 125 subdomains: float64 / float32 | subdomains in the time: float64 / float32 |"
          " answers | ratio |")
    print("| --- | --- | --- | --- | --- |")
    for name, net, shape, x_L, x_U, C, d, root in _problems(args.pairs):
        bm = BoundedModule(net, shape)
        twin = BoundedModule(copy.deepcopy(net).float().eval(), shape)
        if root is None:
            with torch.no_grad():
                root = bm.crown_intermediate(Box(x_L[None], x_U[None]))
        t64 = _pass_seconds(bm, root, C, x_L[None], x_U[None])
        t32 = _pass_seconds(twin, root, C.float(), x_L[None], x_U[None])
        rates, answers = [], []
        for fast in (None, twin):
            search = ActivationBaB(bm, x_L, x_U, C, d, root_bounds=root, fast=fast)
            t = time.perf_counter()
            status, n = search.run(t + args.seconds, None, 125, lambda x: None)
            rates.append((n, n / (time.perf_counter() - t)))
            answers.append(status if isinstance(status, str) else status[0])
        if "sat" in answers and "unsat" in answers:
            raise SystemExit(f"{name}: the two searches contradict each other: {answers}")
        (n64, r64), (n32, r32) = rates
        print(f"| {name} | {t64:.3f} s / {t32:.3f} s ({t64 / t32:.1f}x) | {n64} ({r64:.0f}/s) / {n32} ({r32:.0f}/s) "
              f"| {answers[0]} / {answers[1]} | {r32 / max(r64, 1e-9):.1f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
