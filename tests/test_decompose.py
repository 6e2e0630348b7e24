"""Composite torch layers written out in primitive ops while tracing (verifiers/bounds/decompose.py): nn.LayerNorm,
F.layer_norm, nn.MultiheadAttention (in a small vision-transformer block), F.linear and x @ W with constant
weights. The traced graph computes what the model computes, and IBP / CROWN / alpha-CROWN bounds contain sampled
and PGD-attacked outputs; configurations certkit does not write out are refused by name."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from certkit.common.errors import CertkitError
from certkit.verifiers import BoundedModule, check_model

from relaxation_checks import check_network_bounds


class Norms(nn.Module):
    """LayerNorm over one dim (affine), over two dims (no affine) and F.layer_norm in user code."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 12)
        self.ln1 = nn.LayerNorm(12)
        self.ln2 = nn.LayerNorm((3, 4), elementwise_affine=False, eps=1e-3)
        self.out = nn.Linear(12, 3)

    def forward(self, x):
        h = torch.relu(self.ln1(self.fc(x)))
        h = self.ln2(h.unflatten(1, (3, 4))).flatten(1)
        return self.out(F.layer_norm(h, (12,), eps=1e-2))


class ViTBlock(nn.Module):
    """Patch embedding (x @ W), pre-norm attention (2 heads) and a GELU MLP with residuals, mean-pooled head."""

    def __init__(self, patches=4, patch_dim=6, E=8, heads=2):
        super().__init__()
        self.W = nn.Parameter(torch.randn(patch_dim, E) * 0.4)
        self.ln1, self.ln2 = nn.LayerNorm(E), nn.LayerNorm(E)
        self.attn = nn.MultiheadAttention(E, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(E, 16), nn.GELU(), nn.Linear(16, E))
        self.head = nn.Linear(E, 3)

    def forward(self, x):                      # x (B, patches, patch_dim)
        h = x @ self.W
        a, _ = self.attn(self.ln1(h), self.ln1(h), self.ln1(h))
        h = h + a
        h = h + self.mlp(self.ln2(h))
        return self.head(h.mean(1))


@pytest.mark.parametrize("make,shape", [(Norms, (6,)), (ViTBlock, (4, 6))])
def test_written_out_layers_compute_the_model_and_bound_it_soundly(make, shape):
    torch.manual_seed(0)
    net = make().double().eval()
    bm = BoundedModule(net, shape)
    x = torch.rand((5,) + shape, dtype=torch.float64)
    assert torch.allclose(bm.graph.forward(x), net(x), atol=1e-10)
    names = {type(n.op).__name__ for n in bm.graph.nodes[1:]}
    if make is ViTBlock:
        assert {"MatMul", "Softmax", "LinearConst", "Div", "Sqrt"} <= names
    check_network_bounds(net, shape, eps=0.02, samples=1000)


def test_configurations_not_written_out_are_refused_by_name():
    class Attn(nn.Module):
        def __init__(self, **kw):
            super().__init__()
            self.attn = nn.MultiheadAttention(4, 2, **kw)

        def forward(self, x):
            return self.attn(x, x, x)[0].flatten(1)

    with pytest.raises(CertkitError, match="batch_first"):
        BoundedModule(Attn(), (3, 4))
    with pytest.raises(CertkitError, match="add_bias_kv"):
        BoundedModule(Attn(batch_first=True, add_bias_kv=True), (3, 4))
    assert check_model(Attn(batch_first=True), (3, 4)) == []

    class LeftConst(nn.Module):
        def forward(self, x):
            return torch.ones(2, 3, dtype=x.dtype) @ x.unsqueeze(-1)

    problems = check_model(LeftConst(), (3,))
    assert problems and "W @ x" in " ".join(problems)


def test_layer_norm_of_a_wide_interval_keeps_its_epsilon():
    """IBP of var + eps next to a variance interval [0, 1e3] keeps eps (centre +- radius rounds it away in float32),
    so the square root stays >= sqrt(eps) and the bounds stay finite."""
    from certkit.verifiers import linf_ball

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2)).eval()
    with torch.no_grad():
        net[0].weight.mul_(100.0)
    x = torch.rand(3, 4)
    bm = BoundedModule(net, (4,))
    with torch.no_grad():
        bounds = bm.ibp(linf_ball(x, 0.5, None))
        lb, ub = bm.compute_bounds(linf_ball(x, 0.5, None), None, "IBP")
    sqrt_nodes = [i for i, n in enumerate(bm.graph.nodes) if type(n.op).__name__ == "Sqrt"]
    assert sqrt_nodes and all((bounds[i][0] >= 1e-5 ** 0.5 * 0.999).all() for i in sqrt_nodes)
    assert torch.isfinite(lb).all() and torch.isfinite(ub).all()
