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
