"""verifiers/bounds/ops/matmul.py: X @ Y of two computed tensors: the backward bound and IBP hold on random boxes,
sound network bounds on a hand-written attention block (Q K^T / sqrt(d), softmax, times V), and the same block
exported to ONNX (MatMul of two computed tensors, Transpose, Softmax) against onnxruntime."""
import math

import torch
from torch import nn

from certkit.verifiers.bounds.ops.matmul import MatMul

from relaxation_checks import check_network_bounds, check_onnx_bounds


def test_backward_bound_and_ibp_hold_on_random_boxes():
    gen = torch.Generator().manual_seed(0)
    B, n, k, m = 3, 4, 5, 2
    cx, cy = torch.randn(B, n, k, generator=gen, dtype=torch.float64), torch.randn(B, k, m, generator=gen,
                                                                                  dtype=torch.float64)
    rx, ry = torch.rand(B, n, k, generator=gen, dtype=torch.float64), torch.rand(B, k, m, generator=gen,
                                                                                dtype=torch.float64)
    bounds = [(cx - rx, cx + rx), (cy - ry, cy + ry)]
    op = MatMul()
    A = torch.randn(B, 6, n, m, generator=gen, dtype=torch.float64)
    (A_x, A_y), bias = op.backward(A, bounds)
    lo, hi = op.ibp(*bounds)
    for _ in range(50):
        x = cx + rx * (2 * torch.rand(B, n, k, generator=gen, dtype=torch.float64) - 1)
        y = cy + ry * (2 * torch.rand(B, k, m, generator=gen, dtype=torch.float64) - 1)
        z = x @ y
        assert (z >= lo - 1e-12).all() and (z <= hi + 1e-12).all()
        exact = (A * z[:, None]).flatten(2).sum(-1)
        linear = (A_x * x[:, None]).flatten(2).sum(-1) + (A_y * y[:, None]).flatten(2).sum(-1) + bias
        assert (linear <= exact + 1e-9).all()


def test_ibp_is_the_exact_interval_product_in_any_slicing(monkeypatch):
    """Every entry's bounds are attained: the lower end by the x and y at the corners that minimise each product
    x_it y_tj separately (the entries of a row of X and a column of Y are independent); slicing the rows to fit
    the memory cap changes nothing."""
    import certkit.verifiers.bounds.ops.matmul as mm

    gen = torch.Generator().manual_seed(3)
    lx, ly = torch.randn(2, 5, 4, generator=gen, dtype=torch.float64), torch.randn(2, 4, 3, generator=gen,
                                                                                  dtype=torch.float64)
    ux, uy = lx + torch.rand(2, 5, 4, generator=gen, dtype=torch.float64), ly + torch.rand(2, 4, 3, generator=gen,
                                                                                          dtype=torch.float64)
    lo, hi = MatMul().ibp((lx, ux), (ly, uy))
    for b, i, j in ((0, 0, 0), (1, 4, 2), (0, 2, 1)):
        for end, pick in ((lo, torch.argmin), (hi, torch.argmax)):
            xs = torch.stack([lx[b, i], lx[b, i], ux[b, i], ux[b, i]])      # (4 corners, k)
            ys = torch.stack([ly[b, :, j], uy[b, :, j], ly[b, :, j], uy[b, :, j]])
            best = pick(xs * ys, 0)                                         # per t, the corner that attains it
            t = torch.arange(4)
            assert torch.isclose(xs[best, t] @ ys[best, t], end[b, i, j])   # a point of the box attains the end
    monkeypatch.setattr(mm, "CHUNK", 13)                                # 1 row of 4 x 3 products per slice
    lo2, hi2 = MatMul().ibp((lx, ux), (ly, uy))
    assert torch.equal(lo, lo2) and torch.equal(hi, hi2)


class Attention(nn.Module):
    """One head of self-attention over 3 tokens of width 4, then a linear read-out."""

    def __init__(self, tokens=3, width=4, out=2):
        super().__init__()
        self.tokens, self.width = tokens, width
        self.q, self.k, self.v = nn.Linear(width, width), nn.Linear(width, width), nn.Linear(width, width)
        self.out = nn.Linear(tokens * width, out)

    def forward(self, x):
        h = x.reshape(-1, self.tokens, self.width)
        scores = torch.matmul(self.q(h), self.k(h).transpose(1, 2)) / math.sqrt(self.width)
        z = torch.matmul(torch.softmax(scores, -1), self.v(h))
        return self.out(z.reshape(-1, self.tokens * self.width))


def test_attention_block_bounds_contain_sampled_and_attacked_outputs():
    torch.manual_seed(0)
    check_network_bounds(Attention().double().eval(), 12, eps=0.05)


def test_onnx_attention_imports_and_bounds_contain_onnxruntime_outputs(tmp_path):
    torch.manual_seed(0)
    check_onnx_bounds(Attention().eval(), 12, tmp_path / "attention.onnx", eps=0.02)


def test_alpha_planes_bound_the_product_and_alpha_init_is_crown():
    """Random weights in [0, 1] of each entry's two lower (upper) planes keep the bound below X @ Y at sampled
    points; alpha_init reproduces CROWN's bound."""
    gen = torch.Generator().manual_seed(1)
    B, n, k, m, S = 2, 3, 4, 2, 5
    cx, cy = torch.randn(B, n, k, generator=gen, dtype=torch.float64), torch.randn(B, k, m, generator=gen,
                                                                                  dtype=torch.float64)
    rx, ry = torch.rand(B, n, k, generator=gen, dtype=torch.float64), torch.rand(B, k, m, generator=gen,
                                                                                dtype=torch.float64)
    bounds = [(cx - rx, cx + rx), (cy - ry, cy + ry)]
    op = MatMul()
    A = torch.randn(B, S, n, m, generator=gen, dtype=torch.float64)
    init = op.alpha_init(bounds).unsqueeze(2).expand(-1, -1, S, -1, -1)
    torch.testing.assert_close(op.backward(A, bounds, op.relaxation(bounds, init)), op.backward(A, bounds))
    alpha = torch.rand(init.shape, generator=gen, dtype=torch.float64)
    (A_x, A_y), bias = op.backward(A, bounds, op.relaxation(bounds, alpha))
    for _ in range(50):
        x = cx + rx * (2 * torch.rand(B, n, k, generator=gen, dtype=torch.float64) - 1)
        y = cy + ry * (2 * torch.rand(B, k, m, generator=gen, dtype=torch.float64) - 1)
        exact = (A * (x @ y)[:, None]).flatten(2).sum(-1)
        linear = (A_x * x[:, None]).flatten(2).sum(-1) + (A_y * y[:, None]).flatten(2).sum(-1) + bias
        assert (linear <= exact + 1e-9).all()


def test_crown_planes_are_the_elementwise_products_midpoint_planes():
    """A matrix product with a shared index of length one is an outer product of elementwise products: CROWN's
    bound is the same as bilinear.py's (the midpoint planes) on every entry, for coefficients of either sign."""
    from certkit.verifiers.bounds.ops.bilinear import Mul
    gen = torch.Generator().manual_seed(3)
    B, n, m, S = 2, 3, 4, 5
    cx, cy = torch.randn(B, n, 1, generator=gen, dtype=torch.float64), torch.randn(B, 1, m, generator=gen,
                                                                                  dtype=torch.float64)
    rx, ry = torch.rand(B, n, 1, generator=gen, dtype=torch.float64), torch.rand(B, 1, m, generator=gen,
                                                                                dtype=torch.float64)
    A = torch.randn(B, S, n, m, generator=gen, dtype=torch.float64)
    (A_x, A_y), bias = MatMul().backward(A, [(cx - rx, cx + rx), (cy - ry, cy + ry)])
    ex = lambda t: t.expand(B, n, m)  # noqa: E731
    mul = Mul()
    mul.in_shapes, mul.out_shape = [(n, m), (n, m)], (n, m)
    (M_x, M_y), M_bias = mul.backward(A, [(ex(cx - rx), ex(cx + rx)), (ex(cy - ry), ex(cy + ry))])
    torch.testing.assert_close(A_x, M_x.sum(-1, keepdim=True))
    torch.testing.assert_close(A_y, M_y.sum(-2, keepdim=True))
    torch.testing.assert_close(bias, M_bias)
