"""Forward-mode bounds (verifiers/bounds/forward.py): on networks of every op with a forward rule (MLPs with ReLU and
Sigmoid, a convolutional generator with BatchNorm and transposed convolutions, one with nearest and bilinear
upsampling, a set network with slices, a mask product, sums, a quotient by a fixed sum, concatenation and a difference
of two heads, a quotient of two computed tensors), over boxes where only a few inputs are free, every node's interval
contains the node's value at sampled and vertex points, the output's linear bounds hold at those points, the output
bound is below the sampled minimum, nodes of fixed inputs are exact, a linear network's bound is its exact minimum,
and the bound closes on the true minimum as the box shrinks; the product and quotient rules bound their function on a
grid of two free operands. Beside CROWN (crown_intermediate), the rows keep every node's interval sound and leave the
backward passes fewer neurons.
"""
import itertools

import pytest
import torch
from torch import nn

from certkit.verifiers.bounds.forward import box_margins, forward_bounds, forward_supported, input_rows
from certkit.verifiers.bounds.ibp_crown import BoundedModule
from certkit.verifiers.bounds.perturbation import Box


class SetNet(nn.Module):
    """x (n, 5): per-element MLP of the first 4 features, weighted by the mask in column 4, averaged by the mask's
    sum; the pooled features and two raw features of element 0 feed two heads whose difference is the output."""

    def __init__(self):
        super().__init__()
        self.elem = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU())
        self.head_a = nn.Sequential(nn.Linear(10, 6), nn.ReLU(), nn.Linear(6, 2), nn.Sigmoid())
        self.head_b = nn.Sequential(nn.Linear(10, 2), nn.Sigmoid())

    def forward(self, x):
        mask = x[:, :, 4:5]
        pooled = (self.elem(x[:, :, :4]) * mask).sum(1) / mask.sum(1)
        z = torch.cat([pooled, x[:, 0, :2]], 1)
        return self.head_a(z) - self.head_b(z)


class RatioNet(nn.Module):
    """relu(W1 x) / (sigmoid(W2 x) + 0.5), then a linear layer: a quotient of two computed tensors (Div)."""

    def __init__(self):
        super().__init__()
        self.num, self.den, self.out = nn.Linear(4, 3), nn.Linear(4, 3), nn.Linear(3, 2)

    def forward(self, x):
        return self.out(torch.relu(self.num(x)) / (torch.sigmoid(self.den(x)) + 0.5))


def mlp():
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 12), nn.Sigmoid(), nn.Linear(12, 8), nn.ReLU(),
                         nn.Linear(8, 3))


def generator():
    bn = nn.BatchNorm2d(4)
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    return nn.Sequential(nn.Linear(5, 4 * 2 * 2), nn.Unflatten(1, (4, 2, 2)), nn.ConvTranspose2d(4, 4, 3, stride=2),
                         bn, nn.ReLU(), nn.Conv2d(4, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(75, 3))


def upsampler():
    return nn.Sequential(nn.Linear(5, 3 * 2 * 2), nn.Unflatten(1, (3, 2, 2)), nn.Upsample(scale_factor=2),
                         nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Upsample(scale_factor=2, mode="bilinear"),
                         nn.Conv2d(4, 2, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(18, 3))


NETS = {"mlp": (mlp, (6,)), "generator": (generator, (5,)), "set": (SetNet, (3, 5)), "ratio": (RatioNet, (4,)),
        "upsampler": (upsampler, (5,))}


def boxes(shape, n_boxes, free, width, seed, fixed_mask=True):
    """``n_boxes`` boxes of the given input shape, each with ``free`` random coordinates of half-width ``width``
    (different ones per box) and the others fixed; the set network's mask column stays positive and fixed."""
    gen = torch.Generator().manual_seed(seed)
    n = int(torch.Size(shape).numel())
    c = torch.rand((n_boxes, n), generator=gen, dtype=torch.float64) * 2 - 1
    allowed = torch.ones(n, dtype=torch.bool)
    if fixed_mask and len(shape) == 2:
        idx = torch.arange(n).reshape(shape)
        c.view(n_boxes, *shape)[..., -1] = 0.5 + torch.rand((n_boxes, shape[0]), generator=gen, dtype=torch.float64)
        allowed[idx[:, -1]] = False
    r = torch.zeros_like(c)
    for b in range(n_boxes):
        cand = allowed.nonzero().flatten()
        pick = cand[torch.randperm(len(cand), generator=gen)[:free]]
        r[b, pick] = width * (0.2 + torch.rand(len(pick), generator=gen, dtype=torch.float64))
    return (c - r).reshape((n_boxes,) + shape), (c + r).reshape((n_boxes,) + shape)


def samples(lo, hi, n, seed):
    """(B, n + vertices, *shape): uniform points of each box and (for at most 3 free coordinates) its vertices."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.rand((lo.shape[0], n) + tuple(lo.shape[1:]), generator=gen, dtype=torch.float64)
    pts = lo[:, None] + t * (hi - lo)[:, None]
    flat_lo, flat_hi = lo.flatten(1), hi.flatten(1)
    verts = []
    for b in range(lo.shape[0]):
        free = (flat_hi[b] > flat_lo[b]).nonzero().flatten()[:3]
        vs = []
        for corner in itertools.product((0, 1), repeat=len(free)):
            v = (flat_lo[b] + flat_hi[b]) / 2
            for i, s in zip(free, corner):
                v[i] = flat_hi[b, i] if s else flat_lo[b, i]
            vs.append(v)
        verts.append(torch.stack(vs + [vs[0]] * (8 - len(vs))))
    return torch.cat([pts, torch.stack(verts).reshape((lo.shape[0], 8) + tuple(lo.shape[1:]))], 1)


def node_values(bm, x):
    vals = [x]
    for n in bm.graph.nodes[1:]:
        vals.append(n.op.forward(*[vals[i] for i in n.inputs]))
    return vals


def build(name, seed=0):
    torch.manual_seed(seed)
    make, shape = NETS[name]
    net = make().double().eval()
    return net, BoundedModule(net, shape), shape


@pytest.mark.parametrize("name", sorted(NETS))
@pytest.mark.parametrize("free", [1, 3])
def test_every_node_interval_contains_the_sampled_values(name, free):
    net, bm, shape = build(name)
    assert forward_supported(bm)
    lo, hi = boxes(shape, 6, free, 0.3, seed=free)
    with torch.no_grad():
        bounds, _ = forward_bounds(bm, Box(lo, hi))
        x = samples(lo, hi, 200, seed=1)
        vals = node_values(bm, x.reshape((-1,) + shape))
    for i, (v, (l, u)) in enumerate(zip(vals, bounds)):
        v = v.reshape((lo.shape[0], x.shape[1]) + tuple(l.shape[1:]))
        tol = 1e-9 * (1 + v.abs())
        assert bool((v >= l[:, None] - tol).all() and (v <= u[:, None] + tol).all()), f"node {i} {bm.graph.nodes[i]}"


@pytest.mark.parametrize("name", sorted(NETS))
def test_the_output_linear_bounds_hold_at_every_sampled_point(name):
    """L(e) <= y(x) <= U(e) with e the point's coordinates in its box's cube (the claim each op's forward rule
    keeps), before any interval is taken."""
    net, bm, shape = build(name, seed=5)
    lo, hi = boxes(shape, 5, 3, 0.4, seed=11)
    with torch.no_grad():
        _, (L, U) = forward_bounds(bm, Box(lo, hi))
        x = samples(lo, hi, 300, seed=3)
        y = net(x.reshape((-1,) + shape)).reshape(lo.shape[0], x.shape[1], -1)
    c, r = ((lo + hi) / 2).flatten(1), ((hi - lo) / 2).flatten(1)
    for b in range(lo.shape[0]):
        free = (r[b] > 0).nonzero().flatten()
        e = (x[b].flatten(1)[:, free] - c[b, free]) / r[b, free]               # (points, m_b)
        low = L[b, 0].flatten() + e @ L[b, 1:1 + len(free)].flatten(1)
        high = U[b, 0].flatten() + e @ U[b, 1:1 + len(free)].flatten(1)
        tol = 1e-9 * (1 + y[b].abs())
        assert bool((low <= y[b] + tol).all() and (y[b] <= high + tol).all())


@pytest.mark.parametrize("name", sorted(NETS))
def test_the_output_bound_is_below_every_sampled_value_and_closes_on_small_boxes(name):
    net, bm, shape = build(name, seed=3)
    K = {"set": 2, "ratio": 2}.get(name, 3)
    gen = torch.Generator().manual_seed(0)
    C = torch.randn((4, 2, K), generator=gen, dtype=torch.float64)
    gaps = []
    for width in (0.3, 0.03, 0.003):
        lo, hi = boxes(shape, 4, 2, width, seed=7)
        with torch.no_grad():
            lb, _, _ = box_margins(bm, Box(lo, hi), C)
            y = net(samples(lo, hi, 300, seed=2).reshape((-1,) + shape)).reshape(4, -1, K)
        true_min = torch.einsum("bsk,bnk->bns", C, y).min(1).values
        assert bool((lb <= true_min + 1e-9 * (1 + true_min.abs())).all())
        gaps.append(float((true_min - lb).max()))
    # the relaxation error shrinks at least linearly with the width (ReLUs), quadratically where they are stable
    assert gaps[2] < 0.1 * gaps[0] + 1e-9, gaps


def test_nodes_of_fixed_inputs_are_exact_and_a_point_box_gives_the_value():
    net, bm, shape = build("set", seed=4)
    lo, hi = boxes(shape, 3, 0, 0.0, seed=0)
    with torch.no_grad():
        bounds, _ = forward_bounds(bm, Box(lo, hi))
        vals = node_values(bm, lo)
    for (l, u), v in zip(bounds, vals):
        assert torch.equal(l, u) and torch.allclose(l, v, rtol=0, atol=1e-12)


def test_a_linear_network_gets_its_exact_minimum():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 7), nn.Linear(7, 3)).double().eval()
    bm = BoundedModule(net, (4,))
    lo, hi = boxes((4,), 5, 3, 0.5, seed=3)
    C = torch.eye(3, dtype=torch.float64)[None].expand(5, 3, 3)
    with torch.no_grad():
        lb, _, _ = box_margins(bm, Box(lo, hi), C)
        W = net[1].weight @ net[0].weight
        b = net[1].weight @ net[0].bias + net[1].bias
        exact = (W.clamp(min=0) @ lo.T + W.clamp(max=0) @ hi.T).T + b
    assert torch.allclose(lb, exact, rtol=0, atol=1e-10)


def test_input_rows_give_each_box_its_own_free_coordinates():
    lo = torch.tensor([[0.0, 1.0, 2.0, 3.0], [0.0, 1.0, 2.0, 3.0]], dtype=torch.float64)
    hi = lo + torch.tensor([[0.0, 2.0, 0.0, 0.0], [4.0, 0.0, 0.0, 6.0]], dtype=torch.float64)
    rows = input_rows(lo, hi)
    assert rows.shape == (2, 3, 4)                 # at most two free coordinates per box: 1 + 2 rows
    assert torch.equal(rows[:, 0], (lo + hi) / 2)
    assert torch.equal(rows[0, 1], torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=torch.float64))
    assert torch.equal(rows[0, 2], torch.zeros(4, dtype=torch.float64))
    assert torch.equal(rows[1, 1], torch.tensor([2.0, 0.0, 0.0, 0.0], dtype=torch.float64))
    assert torch.equal(rows[1, 2], torch.tensor([0.0, 0.0, 0.0, 3.0], dtype=torch.float64))


@pytest.mark.parametrize("op_name", ["Mul", "Div"])
def test_product_and_quotient_rules_bound_the_exact_function_of_two_free_operands(op_name):
    """x = cx + rx e1 and y = cy + ry e2 exactly (so only the op's own relaxation is tested): on a grid of the cube
    L(e) <= x * y (or x / y, y > 0) <= U(e), and equality holds somewhere (the planes touch at the corners)."""
    from certkit.verifiers.bounds.ops.bilinear import Mul
    from certkit.verifiers.bounds.ops.divide import Div
    op = Mul() if op_name == "Mul" else Div()
    gen = torch.Generator().manual_seed(0)
    n = 64
    cx, rx = torch.randn(n, generator=gen, dtype=torch.float64), torch.rand(n, generator=gen, dtype=torch.float64)
    if op_name == "Mul":
        cy, ry = torch.randn(n, generator=gen, dtype=torch.float64), torch.rand(n, generator=gen, dtype=torch.float64)
    else:
        cy = 0.2 + 2 * torch.rand(n, generator=gen, dtype=torch.float64)
        ry = cy * (0.1 + 0.8 * torch.rand(n, generator=gen, dtype=torch.float64))
    X = torch.stack([cx, rx, torch.zeros(n, dtype=torch.float64)], 1)[:, :, None]     # (B, 3, 1)
    Y = torch.stack([cy, torch.zeros(n, dtype=torch.float64), ry], 1)[:, :, None]
    in_bounds = [((cx - rx)[:, None], (cx + rx)[:, None]), ((cy - ry)[:, None], (cy + ry)[:, None])]
    op.in_shapes, op.out_shape = [(1,), (1,)], (1,)
    L, U = op.forward_linear([(X, X), (Y, Y)], in_bounds)
    g = torch.linspace(-1, 1, 41, dtype=torch.float64)
    e1, e2 = torch.meshgrid(g, g, indexing="ij")
    e1, e2 = e1.flatten(), e2.flatten()
    x, y = cx[:, None] + rx[:, None] * e1, cy[:, None] + ry[:, None] * e2
    f = x * y if op_name == "Mul" else x / y
    low = L[:, 0, 0, None] + L[:, 1, 0, None] * e1 + L[:, 2, 0, None] * e2
    high = U[:, 0, 0, None] + U[:, 1, 0, None] * e1 + U[:, 2, 0, None] * e2
    tol = 1e-9 * (1 + f.abs())
    assert bool((low <= f + tol).all() and (f <= high + tol).all())
    assert float((f - low).min(1).values.max()) < 0.05 * float((f.amax(1) - f.amin(1)).min())


def test_a_graph_with_an_op_without_a_forward_rule_is_not_supported():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2, 2)).double().eval()
    assert not forward_supported(BoundedModule(net, (1, 4, 4)))


class ShiftNet(nn.Module):
    """relu(x + s) with a constant s of shape (2, 3) broadcast over x (3,): the data grows to the constant's shape."""

    def __init__(self):
        super().__init__()
        self.register_buffer("s", torch.tensor([[0.5, -0.2, 0.1], [-0.4, 0.3, 0.0]]))
        self.out = nn.Linear(6, 2)

    def forward(self, x):
        return self.out(torch.relu(x.reshape(-1, 1, 3) + self.s).flatten(1))


def test_a_constant_that_broadcasts_the_data_grows_the_rows_to_its_shape():
    torch.manual_seed(0)
    net = ShiftNet().double().eval()
    bm = BoundedModule(net, (3,))
    assert forward_supported(bm)
    lo, hi = boxes((3,), 4, 2, 0.5, seed=2)
    with torch.no_grad():
        bounds, (L, U) = forward_bounds(bm, Box(lo, hi))
        vals = node_values(bm, samples(lo, hi, 100, seed=0).reshape(-1, 3))
    assert L.shape[1:] == (3, 2) and U.shape == L.shape
    for v, (lo_i, hi_i) in zip(vals, bounds):
        v = v.reshape((4, -1) + tuple(lo_i.shape[1:]))
        assert bool((v >= lo_i[:, None] - 1e-9).all() and (v <= hi_i[:, None] + 1e-9).all())


def wide_mlp():
    return nn.Sequential(nn.Linear(4, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                         nn.Linear(64, 3))


HYBRID_NETS = {"wide_mlp": (wide_mlp, (4,)), "generator": (generator, (5,)), "mlp": (mlp, (6,))}


def hybrid_problem(name):
    """A HYBRID_NETS network in float64, 3 boxes of 4 inputs each over its input shape and 200 points in each."""
    torch.manual_seed(1)
    make, shape = HYBRID_NETS[name]
    net = make().double().eval()
    lo, hi = boxes(shape, 4, 3, 0.3, seed=5)
    return net, shape, lo, hi, samples(lo, hi, 200, seed=4)


def assert_contains(bm, bounds, lo, x, tag):
    """Every node's values at the points x (B, P, *input) lie in its bounds (each (B, *shape))."""
    vals = node_values(bm, x.reshape((-1,) + tuple(x.shape[2:])))
    for i, (v, (l, u)) in enumerate(zip(vals, bounds)):
        v = v.reshape((lo.shape[0], x.shape[1]) + tuple(l.shape[1:]))
        tol = 1e-9 * (1 + v.abs())
        assert bool((v >= l[:, None] - tol).all() and (v <= u[:, None] + tol).all()), (tag, i)
    return vals


@pytest.mark.parametrize("name", sorted(HYBRID_NETS))
def test_crown_with_forward_rows_contains_every_node_and_bounds_fewer_neurons(name, monkeypatch):
    """crown_intermediate over boxes with few free inputs, with the forward rows (the default there) and without:
    both contain every node's sampled values; with them the backward passes bound no more neurons, strictly fewer
    on the ReLU networks; the output bounds of both hold at the samples."""
    net, shape, lo, hi, x = hybrid_problem(name)
    counted = {False: 0, True: 0}
    original = BoundedModule._backward_interval

    def spy(self, i, pert, bounds, relax, only=None, **kw):
        counted[bool(self.forward_rows)] += int(only.sum()) if only is not None else 10 ** 9
        return original(self, i, pert, bounds, relax, only, **kw)
    monkeypatch.setattr(BoundedModule, "_backward_interval", spy)
    for forward in (False, True):
        bm = BoundedModule(net, shape)
        bm.forward_rows, bm.one_sided = forward, False
        with torch.no_grad():
            bounds = bm.crown_intermediate(Box(lo, hi))
            vals = assert_contains(bm, bounds, lo, x, forward)
            lb, ub = bm.compute_bounds(Box(lo, hi), method="CROWN")
        y = vals[-1].reshape(lo.shape[0], x.shape[1], -1)
        assert bool((lb[:, None] <= y + 1e-9).all() and (y <= ub[:, None] + 1e-9).all())
    assert counted[True] <= counted[False]
    if name != "mlp":
        assert counted[True] < counted[False], counted


@pytest.mark.parametrize("name", ["wide_mlp", "generator"])
def test_one_sided_rows_find_the_same_unstable_neurons_with_fewer_passes(name, monkeypatch):
    """ReLU inputs bounded on the side of their center value first: every node's bounds still contain the sampled
    values, the same neurons end unstable (with the same bounds up to rounding), and fewer rows are propagated."""
    net, shape, lo, hi, x = hybrid_problem(name)
    rows = {False: 0, True: 0}
    original = BoundedModule._signed_rows

    def spy(self, i, pert, bounds, relax, want_l, want_u):
        rows[bool(self.one_sided)] += int(want_l.sum() + want_u.sum())
        return original(self, i, pert, bounds, relax, want_l, want_u)
    monkeypatch.setattr(BoundedModule, "_signed_rows", spy)
    out = {}
    for one_sided in (False, True):
        bm = BoundedModule(net, shape)
        bm.forward_rows, bm.one_sided = True, one_sided
        with torch.no_grad():
            out[one_sided] = bm.crown_intermediate(Box(lo, hi))
            assert_contains(bm, out[one_sided], lo, x, one_sided)
    g = bm.graph
    for a in g.nonlinear():
        j = g.nodes[a].inputs[0]
        (l0, u0), (l1, u1) = out[False][j], out[True][j]
        unstable = (l0 < 0) & (u0 > 0)
        assert torch.equal(unstable, (l1 < 0) & (u1 > 0)), j
        assert torch.allclose(l0[unstable], l1[unstable]) and torch.allclose(u0[unstable], u1[unstable])
    assert rows[True] <= rows[False], rows
    if name == "wide_mlp":      # (the generator's few candidates all stay unstable: both sides of each, either way)
        assert rows[True] < rows[False], rows


def test_forward_rows_are_used_where_they_pay():
    """By default: boxes with 1 to FORWARD_MAX_FREE free coordinates and a non-affine op with an input of at least
    FORWARD_MIN_WIDTH (m+1) neurons; never for other perturbations; ``forward_rows`` overrides."""
    from certkit.verifiers.bounds.ibp_crown import FORWARD_MAX_FREE, FORWARD_MIN_WIDTH
    from certkit.verifiers.bounds.perturbation import L2Ball
    torch.manual_seed(0)
    bm = BoundedModule(wide_mlp().double().eval(), (4,))        # widest input of a ReLU: 64 neurons
    lo = torch.zeros((2, 4), dtype=torch.float64)
    assert not bm.forward_hybrid(Box(lo, lo))                    # no free coordinate
    m = 64 // FORWARD_MIN_WIDTH - 1
    assert m >= 4 and bm.forward_hybrid(Box(lo, lo + 1))
    narrow = BoundedModule(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)).double().eval(), (4,))
    assert 8 < FORWARD_MIN_WIDTH * 5 and not narrow.forward_hybrid(Box(lo, lo + 1))
    wide_in = BoundedModule(nn.Sequential(nn.Linear(FORWARD_MAX_FREE + 1, 4096), nn.ReLU()).double().eval(),
                            (FORWARD_MAX_FREE + 1,))
    z = torch.zeros((1, FORWARD_MAX_FREE + 1), dtype=torch.float64)
    assert not wide_in.forward_hybrid(Box(z, z + 1))
    assert not bm.forward_hybrid(L2Ball(lo, 0.1))
    narrow.forward_rows = True
    assert narrow.forward_hybrid(Box(lo, lo + 1))
    x = torch.rand((3, 4), dtype=torch.float64)
    torch.testing.assert_close(narrow.forward(x), narrow.model(x))      # the setting leaves the method alone
    bm.forward_rows = False
    assert not bm.forward_hybrid(Box(lo, lo + 1))
