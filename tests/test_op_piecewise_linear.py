"""verifiers/bounds/ops/piecewise_linear.py: sums of ReLUs of one variable, fused into one function before the bound
graph is built: the rewrite keeps the values bit for bit, the fused op's lines and intervals hold on the dense
interval grid, its interval of a monotone function is exact, network bounds contain sampled and attacked outputs,
the ONNX export of the pattern (as ml4acopf's networks write it) is fused, and branch and bound splits at kinks."""
import torch
from torch import fx, nn

from certkit.models.onnx_import import reshape_batch
from certkit.verifiers.bounds.ibp_crown import BoundedModule
from certkit.verifiers.bounds.ops.piecewise_linear import PiecewiseLinear, piecewise_linear
from certkit.verifiers.bounds.perturbation import Box

from relaxation_checks import check_activation, check_network_bounds, check_onnx_bounds

fx.wrap("reshape_batch")   # traced as a call, as in the graphs models/onnx_import.py builds


def _op(K=9, seed=0, monotone=False):
    gen = torch.Generator().manual_seed(seed)
    t = (torch.rand(K, generator=gen, dtype=torch.float64) - 0.5) * 8
    w = torch.randn(K, generator=gen, dtype=torch.float64)
    if monotone:   # the slopes right of each kink, S_j = w_0 + ... + w_j, all >= 0
        t = torch.sort(t).values
        w = torch.diff(w.abs(), prepend=torch.zeros(1, dtype=torch.float64))
    return PiecewiseLinear(t, w, torch.tensor([0.3], dtype=torch.float64)), t, w


def test_function_equals_the_relu_sum():
    op, t, w = _op()
    z = torch.linspace(-10, 10, 4001, dtype=torch.float64)
    direct = (torch.relu(z[:, None] - t) * w).sum(1) + 0.3
    assert torch.allclose(op.function(z), direct, atol=1e-12)
    assert torch.allclose(piecewise_linear(z[None], t, w[None], torch.tensor([0.3], dtype=torch.float64))[0],
                          direct, atol=1e-12)


def test_relaxation_is_sound_on_every_interval():
    for seed in range(3):
        check_activation(_op(seed=seed)[0])


def test_interval_is_the_exact_range():
    for monotone in (False, True):
        op, _, _ = _op(seed=4, monotone=monotone)
        l = torch.tensor([-9.0, -2.0, 0.5, 3.0, -1.0], dtype=torch.float64)
        u = torch.tensor([9.0, 1.0, 0.5, 7.0, 2.0], dtype=torch.float64)
        z = l[:, None] + torch.linspace(0, 1, 2001, dtype=torch.float64) * (u - l)[:, None]
        z = torch.cat([z, torch.maximum(torch.minimum(op.t, u[:, None]), l[:, None])], 1)   # the kinks too
        f = op.function(z)
        lo, hi = op.ibp((l, u))
        assert torch.allclose(lo, f.amin(1), atol=1e-12) and torch.allclose(hi, f.amax(1), atol=1e-12)
        if monotone:   # the range is [f(l), f(u)]
            assert torch.allclose(lo, op.function(l)) and torch.allclose(hi, op.function(u))


def test_branching_splits_at_a_kink_and_linear_pieces_are_exact():
    op, t, _ = _op(seed=1)
    ts = torch.sort(t).values
    l = torch.tensor([float(ts[0] - 1), float((ts[2] + ts[3]) / 2), float(ts[-1] + 1)], dtype=torch.float64)
    u = torch.tensor([float(ts[-1] + 1), float((ts[3] + ts[2]) / 2 + 1e-12), float(ts[-1] + 2)], dtype=torch.float64)
    assert op.unstable(l, u).tolist() == [True, False, False]
    p = op.split_point(l, u)
    assert bool(torch.isin(p[0], ts)) and l[0] < p[0] < u[0]
    aL, cL, aU, cU = op.relax(l[2:], u[2:])   # beyond the last kink: one line, both bounds equal
    assert torch.allclose(cL, cU) and torch.allclose(aL, aU)


class SumOfRelus(nn.Module):
    """Linear 5 -> n, then y_i = sum_k w_k relu(z_i - t_k) (+ b) written as ml4acopf's import writes it."""

    def __init__(self, n=6, K=7, bias=True, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.fc, self.n = nn.Linear(5, n), n
        self.register_buffer("t", torch.linspace(-1.5, 1.5, K))
        self.relu, self.mix = nn.ReLU(), nn.Linear(K, 1, bias=bias)
        self.out = nn.Linear(n, 3)

    def forward(self, x):
        h = torch.sub(reshape_batch(self.fc(x), (self.n, 1)), self.t)
        return self.out(reshape_batch(self.mix(self.relu(h)), (self.n,)))


def _ops(net, shape):
    return [type(n.op).__name__ for n in BoundedModule(net, shape).graph.nodes]


def test_the_chain_is_fused_and_bounds_contain_sampled_and_attacked_outputs():
    for bias in (True, False):
        net = SumOfRelus(bias=bias).double().eval()
        ops = _ops(net, (5,))
        assert "PiecewiseLinear" in ops and "ReLU" not in ops
        check_network_bounds(net, 5)


def test_fusion_keeps_the_values_bit_for_bit():
    net = SumOfRelus().eval()
    gm = fx.symbolic_trace(net)
    from certkit.verifiers.bounds.graph import _rewritten

    fused = _rewritten(gm)
    assert any(n.target is piecewise_linear for n in fused.graph.nodes)
    x = torch.randn(64, 5)
    assert torch.equal(fused(x), net(x))


def test_a_chain_of_another_activation_is_left_alone():
    net = SumOfRelus()
    net.relu = nn.Sigmoid()
    ops = _ops(net.double().eval(), (5,))
    assert "PiecewiseLinear" not in ops and "Sigmoid" in ops


def test_a_chain_whose_relus_are_used_elsewhere_is_left_alone():
    class Shared(SumOfRelus):
        def forward(self, x):
            r = self.relu(torch.sub(reshape_batch(self.fc(x), (self.n, 1)), self.t))
            return self.out(reshape_batch(self.mix(r), (self.n,))) + r.sum(2)[:, :1]

    ops = _ops(Shared().double().eval(), (5,))
    assert "PiecewiseLinear" not in ops and "ReLU" in ops


def test_tighter_than_separate_relus_on_a_monotone_function():
    """A sigmoid-like function (increasing, convex then concave): IBP through the fused op gives [f(l), f(u)] of the
    layer's own interval; CROWN's chord lines are at least as tight as bounding the K ReLUs one by one."""
    net = SumOfRelus(n=1, K=21, bias=False).double().eval()
    with torch.no_grad():
        k = torch.linspace(-1.5, 1.5, 21, dtype=torch.float64)
        slopes = torch.exp(-k ** 2)                     # increasing f, convex then concave
        net.mix.weight.copy_(torch.diff(torch.cat([torch.zeros(1, dtype=torch.float64), slopes]))[None])
        net.out = nn.Identity()
    x = torch.zeros(1, 5, dtype=torch.float64)
    pert = Box(x - 0.5, x + 0.5)
    zl, zu = BoundedModule(net.fc, (5,)).compute_bounds(pert, method="IBP")
    f = lambda z: (torch.relu(z[..., None] - k) * net.mix.weight[0]).sum(-1)   # noqa: E731
    lb, ub = BoundedModule(net, (5,)).compute_bounds(pert, method="IBP")
    assert torch.allclose(lb, f(zl), atol=1e-12) and torch.allclose(ub, f(zu), atol=1e-12)

    class Unfused(nn.Module):   # the same function with the ReLUs' results used twice: not fused
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            r = self.net.relu(torch.sub(reshape_batch(self.net.fc(x), (1, 1)), self.net.t))
            return reshape_batch(self.net.mix(r), (1,)) + 0 * r.sum(2)

    fused = BoundedModule(net, (5,)).compute_bounds(pert, method="CROWN")
    separate = BoundedModule(Unfused(), (5,)).compute_bounds(pert, method="CROWN")
    assert "PiecewiseLinear" not in _ops(Unfused(), (5,))
    assert (fused[0] >= separate[0] - 1e-12).all() and (fused[1] <= separate[1] + 1e-12).all()
    assert (fused[1] - fused[0]).item() < (separate[1] - separate[0]).item() - 1e-6   # strictly tighter


def test_onnx_export_of_the_pattern_is_fused_and_sound(tmp_path):
    from certkit.models.onnx_import import load_onnx

    check_onnx_bounds(SumOfRelus().eval(), 5, tmp_path / "pwl.onnx")
    model = load_onnx(tmp_path / "pwl.onnx")
    assert "PiecewiseLinear" in _ops(model.module.double(), (5,))


def test_the_sound_mode_keeps_the_relus_it_has_rounding_rules_for():
    """The fused op has no floating-point rounding rule: graphs for the sound mode are built without the fusion, so
    a network the sound mode accepted is still accepted."""
    from certkit.verifiers.bounds.sound import unsupported

    net = SumOfRelus().double().eval()
    assert [u for u in unsupported(BoundedModule(net, (5,)).graph) if "PiecewiseLinear" in u]
    plain = BoundedModule(net, (5,), fusing=False)
    assert unsupported(plain.graph) == []
    assert "PiecewiseLinear" not in [type(n.op).__name__ for n in plain.graph.nodes]


def test_branch_and_bound_on_the_fused_op_never_contradicts_a_counterexample(tmp_path):
    """Complete verification of 'Y_0 >= v' on a non-monotone fused network (ONNX), thresholds v from below to above
    its maximum: activation splitting (which splits the fused neurons at their kinks) and input splitting answer,
    every `sat` is a counterexample replayed in onnxruntime, and no `unsat` lies at or below a `sat` threshold."""

    from certkit.verifiers.complete.strategy import verify_instance

    from conftest import export_onnx

    net = SumOfRelus(n=12, K=9, seed=3).eval()
    with torch.no_grad():
        net.mix.weight.normal_(0, 1.0, generator=torch.Generator().manual_seed(3))
    export_onnx(net, torch.zeros(1, 5), tmp_path / "n.onnx")
    with torch.no_grad():
        top = float(net(torch.rand(100000, 5, generator=torch.Generator().manual_seed(0)) - 0.5)[:, 0].max())
    answers = []
    for k in range(0, 12, 2):
        v = top + 0.02 * k * (abs(top) + 1)
        lines = [f"(declare-const X_{i} Real)" for i in range(5)] + [f"(declare-const Y_{j} Real)" for j in range(3)]
        lines += [f"(assert (>= X_{i} -0.5))\n(assert (<= X_{i} 0.5))" for i in range(5)] + [f"(assert (>= Y_0 {v!r}))"]
        (tmp_path / "p.vnnlib").write_text("\n".join(lines) + "\n")
        for bab in ("activation", "input"):
            r = verify_instance(tmp_path / "n.onnx", tmp_path / "p.vnnlib", 10, bab=bab)
            assert r.status in ("sat", "unsat"), (v, bab, r.status, r.reason)
            if r.status == "sat":
                assert r.checks == {"exact": True, "vnncomp": True} and float(r.y[0]) >= v
            answers.append((v, bab, r.status, r.domains))
    sat = [v for v, _, s, _ in answers if s == "sat"]
    unsat = [v for v, _, s, _ in answers if s == "unsat"]
    assert sat and unsat and max(sat) < min(unsat)
    assert any(b == "activation" and s == "unsat" and n > 0 for _, b, s, n in answers)   # the search split
