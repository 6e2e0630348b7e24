"""The node sums of CROWN's backward rules, sum over a node's values of A * v: elementwise product and torch's sum
(how the rules computed them before) against verifiers/bounds/ops/base.py ``dot_node`` (one matrix product), in
one run, forward only and with the gradient (alpha-CROWN, certified training).

    python bench/node_sums.py [--repeat 20]

Shapes (B boxes, S rows, node shape): lsnc's state network in input splitting (8,000 boxes, nodes of 1-8 values),
an MLP layer and a convolutional map of CROWN-IBP training; v a constant (an affine op's shift) or one vector per
box (an activation's intercepts). Prints milliseconds per call and the ratio old / new (above 1: dot_node faster).
"""
from __future__ import annotations

import argparse
import time

import torch

from certkit.verifiers.bounds.ops.base import dot_node

SHAPES = [(8000, 14, (6,)), (8000, 26, (3,)), (8000, 2, (8,)), (128, 9, (100,)), (256, 10, (16, 14, 14))]


def timed(fn, A: torch.Tensor, v: torch.Tensor, grad: bool, repeat: int) -> float:
    """Milliseconds per call of fn(A, v) (and the backward pass of its sum with ``grad``), after 3 warm-up calls."""
    def call():
        out = fn(A, v)
        if grad:
            out.sum().backward()
    for _ in range(3):
        call()
    t = time.perf_counter()
    for _ in range(repeat):
        call()
    return (time.perf_counter() - t) / repeat * 1e3


def product_and_sum(A: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (A * v).flatten(2).sum(-1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    gen = torch.Generator().manual_seed(0)
    print(f"{'shape':<28} {'v':<9} {'grad':<5} {'old ms':>8} {'new ms':>8} {'ratio':>6}")
    for B, S, shape in SHAPES:
        for kind in ("constant", "per box"):
            for grad in (False, True):
                A = torch.randn((B, S) + shape, generator=gen, dtype=torch.float64, requires_grad=grad)
                v = torch.randn(shape if kind == "constant" else (B, 1) + shape, generator=gen, dtype=torch.float64)
                old = timed(product_and_sum, A, v, grad, args.repeat)
                new = timed(dot_node, A, v, grad, args.repeat)
                print(f"{str((B, S) + shape):<28} {kind:<9} {str(grad):<5} {old:8.3f} {new:8.3f} {old / new:6.2f}")


if __name__ == "__main__":
    main()
