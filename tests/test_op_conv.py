"""verifiers/bounds/ops/conv.py: the backward rule is the adjoint of the convolution, by transposed convolution or by
the
layer's transfer matrix (used for many rows on a small layer), with the same values and weight gradients."""
import pytest
import torch
from torch import nn

import certkit.verifiers.bounds.ops.conv as conv_mod
from certkit.verifiers import BoundedModule


@pytest.mark.parametrize("matmul", [False, True])
def test_conv_backward_is_the_adjoint_and_differentiable(matmul, monkeypatch):
    monkeypatch.setattr(conv_mod, "MATMUL_FLOATS", 2 ** 40 if matmul else 0)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2)).double()
    bm = BoundedModule(net, (4, 7, 6))
    op = bm.graph.nodes[1].op
    B, S = 2, 300                                       # B * S >= 4 * rows: the transfer-matrix path when allowed
    A = torch.randn((B, S) + tuple(op.out_shape), dtype=torch.float64)
    x = torch.randn((B, 4, 7, 6), dtype=torch.float64)
    (A_in,), bias = op.backward(A)
    y = net(x)
    lhs = (A * y.unsqueeze(1)).flatten(2).sum(-1)       # sum(A * conv(x)) = sum(A_in * x) + bias
    rhs = (A_in * x.unsqueeze(1)).flatten(2).sum(-1) + bias
    assert torch.allclose(lhs, rhs, atol=1e-10)
    g = torch.autograd.grad(A_in.square().sum(), net[0].weight)[0]
    monkeypatch.setattr(conv_mod, "MATMUL_FLOATS", 0 if matmul else 2 ** 40)   # the other path
    (A_other,), _ = op.backward(A)
    g_other = torch.autograd.grad(A_other.square().sum(), net[0].weight)[0]
    assert torch.allclose(A_in, A_other, atol=1e-10) and torch.allclose(g, g_other, atol=1e-8)
