"""verifiers/bounds/ops/base.py: the node sums of the backward rules (sum_node, dot_node) equal the elementwise
product and sum they replace, values and gradients, for every kind of factor the rules pass."""
import pytest
import torch

from certkit.verifiers.bounds.ops.base import dot_node, sum_node


def reference(A, v):
    return (A * v).flatten(2).sum(-1)


@pytest.mark.parametrize("shape", [(6,), (1,), (3, 4), (2, 3, 5)])
def test_dot_node_and_sum_node_match_the_product_and_sum(shape):
    gen = torch.Generator().manual_seed(0)
    B, S = 5, 3
    A = torch.randn((B, S) + shape, generator=gen, dtype=torch.float64, requires_grad=True)
    factors = {
        "number": 0.7,
        "0-dim": torch.tensor(-1.3, dtype=torch.float64),
        "constant": torch.randn(shape, generator=gen, dtype=torch.float64),
        "broadcast constant": torch.randn(shape[:-1] + (1,), generator=gen, dtype=torch.float64),
        "per box": torch.randn((B, 1) + shape, generator=gen, dtype=torch.float64, requires_grad=True),
        "one box for all": torch.randn((1, 1) + shape, generator=gen, dtype=torch.float64),
        "per box and row": torch.randn((B, S) + shape, generator=gen, dtype=torch.float64),
        "per box, broadcast": torch.randn((B, 1) + shape[:-1] + (1,), generator=gen, dtype=torch.float64),
    }
    for name, v in factors.items():
        with torch.no_grad():                       # the matrix-product paths (no gradient through a factor)
            torch.testing.assert_close(dot_node(A, v), reference(A, v), msg=name)
        got, want = dot_node(A, v), reference(A, v)
        assert got.shape == (B, S), name
        torch.testing.assert_close(got, want, msg=name)
        g_got = torch.autograd.grad(got.square().sum(), [A] + ([v] if getattr(v, "requires_grad", False) else []))
        g_want = torch.autograd.grad(want.square().sum(), [A] + ([v] if getattr(v, "requires_grad", False) else []))
        for a, b in zip(g_got, g_want):
            torch.testing.assert_close(a, b, msg=name)
    torch.testing.assert_close(sum_node(A), A.flatten(2).sum(-1))
    with torch.no_grad():
        torch.testing.assert_close(sum_node(A), A.flatten(2).sum(-1))
