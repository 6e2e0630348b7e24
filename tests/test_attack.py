"""verifiers/attack.py: output-diversified starts (ODI) against closed forms on linear maps; PGD with shrinking
steps reaching a counterexample region far narrower than its box."""
import torch

from certkit.verifiers.attack import REFINE_STEPS, falsifier_step_sizes, output_diversified_starts, pgd_box, pgd_refine


def _box(b, n, seed):
    g = torch.Generator().manual_seed(seed)
    lo = torch.rand(b, n, generator=g, dtype=torch.float64) - 1
    return lo, lo + 0.1 + torch.rand(b, n, generator=g, dtype=torch.float64)


def test_odi_reaches_the_vertex_maximizing_w_dot_f_on_a_linear_map():
    # f(x) = A x: w . f is linear, so 8 sign steps of (x_U - x_L) / 8 from anywhere reach argmax over the box:
    # the vertex with x_i = x_U where (A^T w)_i > 0, x_L where < 0
    g = torch.Generator().manual_seed(0)
    A = torch.randn(4, 7, generator=g, dtype=torch.float64)
    lo, hi = _box(32, 7, 1)
    w = torch.rand(32, 4, generator=g, dtype=torch.float64) * 2 - 1
    x = lo + (hi - lo) * torch.rand(lo.shape, generator=g, dtype=torch.float64)
    out = output_diversified_starts(lambda z: z @ A.T, x, lo, hi, steps=8, directions=w)
    expected = torch.where(w @ A > 0, hi, lo)
    assert torch.equal(out, expected)
    # fewer steps: every step increases w . f, and the point stays in its box
    prev = ((x @ A.T) * w).sum(1)
    for steps in range(1, 8):
        y = output_diversified_starts(lambda z: z @ A.T, x, lo, hi, steps=steps, directions=w)
        val = ((y @ A.T) * w).sum(1)
        assert (val >= prev - 1e-12).all() and (y >= lo).all() and (y <= hi).all()
        prev = val


def test_odi_random_directions_spread_starts_and_are_reproducible():
    # identity map on 10 inputs, one start point repeated: each random direction w sends its copy to the vertex
    # sign(w), uniform over 2^10 vertices; 64 copies: ~2 expected coincidences (2016 pairs / 1024), so fewer than 50
    # distinct vertices (>= 14 coincidences) has probability < 1e-7
    lo, hi = -torch.ones(64, 10), torch.ones(64, 10)
    x = torch.zeros(64, 10)
    a = output_diversified_starts(lambda z: z, x, lo, hi, generator=torch.Generator().manual_seed(3))
    b = output_diversified_starts(lambda z: z, x, lo, hi, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert ((a == 1) | (a == -1)).all()
    assert len({tuple(r.tolist()) for r in a}) >= 50


def test_odi_keeps_nonlinear_net_starts_in_their_boxes():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 20), torch.nn.ReLU(), torch.nn.Linear(20, 3)).double()
    lo, hi = _box(16, 6, 2)
    x = (lo + hi) / 2
    out = output_diversified_starts(net, x, lo, hi, steps=5, step_size=0.3, generator=torch.Generator().manual_seed(0))
    assert (out >= lo).all() and (out <= hi).all() and not torch.equal(out, x)


def test_falsifier_starts_center_fgsm_vertex_best_of_pool_and_shared_pool():
    # objective w . x on one box: the FGSM vertex of the center is its exact minimiser (x_L where w > 0, else x_U);
    # the pool's chosen points are its (starts - 2) // 2 best; a pool passed in is reused without drawing anew
    from certkit.verifiers.attack import falsifier_starts, falsifier_step_sizes

    lo, hi = _box(1, 6, 3)
    w = torch.tensor([1.0, -2.0, 0.5, -0.1, 3.0, -1.0], dtype=torch.float64)
    A = torch.randn(4, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def obj(x):
        return x @ w

    starts = 10
    x0, pool = falsifier_starts(obj, lambda x: x @ A.T, lo, hi, starts, torch.Generator().manual_seed(1))
    assert x0.shape == (starts, 6) and pool.shape == (4 * starts, 6)
    assert bool((x0 >= lo).all() and (x0 <= hi).all() and (pool >= lo).all() and (pool <= hi).all())
    torch.testing.assert_close(x0[0], ((lo + hi) / 2)[0])
    torch.testing.assert_close(x0[1], torch.where(w > 0, lo[0], hi[0]))
    k = (starts - 2) // 2
    torch.testing.assert_close(x0[2:2 + k], pool[obj(pool).argsort()[:k]])
    gen = torch.Generator().manual_seed(1)
    x0b, poolb = falsifier_starts(obj, lambda x: x @ A.T, lo, hi, starts, gen, pool=pool)
    assert poolb is pool
    torch.testing.assert_close(x0b[2:2 + k], x0[2:2 + k])
    assert falsifier_step_sizes(lo, hi) == (0.25 * float((hi - lo).max()), None)
    # one start: only the center, no pool
    x1, pool1 = falsifier_starts(obj, lambda x: x @ A.T, lo, hi, 1)
    assert pool1 is None
    torch.testing.assert_close(x1[0], ((lo + hi) / 2)[0])


def _sign_net(n: int) -> torch.nn.Module:
    """x (n,) -> w . sign(x) with weights of both signs, as the ONNX importer spells Sign (a module holding fn)."""
    from certkit.models.onnx_import import _Fn

    gen = torch.Generator().manual_seed(0)
    w = torch.randn(1, n, generator=gen)
    lin = torch.nn.Linear(n, 1, bias=False)
    lin.weight.data = w
    return torch.nn.Sequential(_Fn(torch.sign), lin).requires_grad_(False)


def test_straight_through_finds_what_a_zero_gradient_hides():
    """min over [-1, 1]^24 of w . sign(x) is -sum |w|, at sign(x) = -sign(w) only (one vertex orthant of 2^24): PGD
    through torch.sign sees a zero gradient and stays at its starts; through the straight-through copy one step
    reaches it. The copy computes the same values and the original is left as it was."""
    from certkit.verifiers.attack import pgd_box, straight_through

    n = 24
    net = _sign_net(n)
    target = -float(net[1].weight.abs().sum())
    lo, hi = -torch.ones(8, n), torch.ones(8, n)
    x0 = torch.rand((8, n), generator=torch.Generator().manual_seed(1)) * 2 - 1

    def objective(model):
        return lambda x: model(x)[:, 0] - (target + 1e-3)

    _, plain = pgd_box(objective(net), lo, hi, steps=20, restarts=1, x_init=x0.clone())
    ste = straight_through(net)
    _, through = pgd_box(objective(ste), lo, hi, steps=20, restarts=1, x_init=x0.clone())
    assert float(plain.min()) > 0 and float(through.min()) <= 0
    x = torch.rand((16, n)) * 2 - 1
    assert torch.equal(ste(x), net(x))
    assert net[0].fn is torch.sign and ste is not net
    plain_net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU())
    assert straight_through(plain_net) is plain_net


def test_straight_through_rewrites_step_calls_of_an_fx_graph():
    """The ONNX importer's graphs call torch.sign / torch.floor as functions: the copy calls the surrogate versions
    (same values; floor passes the gradient as the identity, sign as sech^2(x / tau) with tau SIGN_TAU times the
    mean |x| of the sample), the original keeps its calls."""
    from certkit.verifiers.attack import SIGN_TAU, straight_through

    class Net(torch.nn.Module):
        def forward(self, x):
            return torch.floor(3 * torch.sign(x) + x)

    gm = torch.fx.symbolic_trace(Net())
    ste = straight_through(gm)
    x = torch.randn(5, 4, requires_grad=True)
    ste(x).sum().backward()
    tau = SIGN_TAU * x.detach().abs().mean(1, keepdim=True)
    want = 3 / torch.cosh(x.detach() / tau) ** 2 + 1                  # d/dx (3 tanh(x / tau) tau + x) at both steps
    assert torch.allclose(x.grad, want, rtol=1e-6, atol=0)
    with torch.no_grad():
        assert torch.equal(ste(x), gm(x))
    assert any(n.target is torch.sign for n in gm.graph.nodes)
    assert not any(n.target in (torch.sign, torch.floor) for n in ste.graph.nodes)


def test_a_sign_of_a_sign_passes_the_gradient_unchanged():
    """sign(sign(x) + c) with |c| < 1 (Larq's sign with sign(0) = 1) moves no unit the inner sign did not: the copy
    differentiates the outer sign as the identity, so the gradient is the inner surrogate's alone; with |c| >= 1 (or
    an input that is not a sign) the outer sign keeps the surrogate."""
    from certkit.verifiers.attack import SIGN_TAU, straight_through

    class Net(torch.nn.Module):
        def __init__(self, c):
            super().__init__()
            self.register_buffer("c", torch.tensor(c))

        def forward(self, x):
            return torch.sign(torch.add(torch.sign(x), self.c)) + torch.sign(x - 0.1)

    x = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
    for c, binary in ((0.1, True), (-0.5, True), (1.5, False)):
        gm = torch.fx.symbolic_trace(Net(c))
        ste = straight_through(gm)
        xg = x.clone().requires_grad_(True)
        ste(xg).sum().backward()
        with torch.no_grad():
            assert torch.equal(ste(x), gm(x))

        def sech2(z):
            return 1 / torch.cosh(z / (SIGN_TAU * z.abs().mean(1, keepdim=True))) ** 2

        inner = sech2(x)
        outer = torch.ones_like(x) if binary else sech2(torch.sign(x) + c)
        torch.testing.assert_close(xg.grad, outer * inner + sech2(x - 0.1))


def test_order_only_properties_attack_the_logits_of_a_saturated_softmax():
    """A confident network's float32 softmax is exactly one-hot, so its gradient is zero: the logits copy has the
    same order of outputs and a gradient; other graphs (softmax over a non-final dim, no softmax) come back as they
    were. compares_two_outputs accepts rows c (y_i - y_j) <= 0 only."""
    import numpy as np

    from certkit.verifiers.attack import without_output_softmax
    from certkit.verifiers.complete.strategy import compares_two_outputs
    from certkit.verifiers.complete.vnnlib import Term

    class Net(torch.nn.Module):
        def __init__(self, dim=1):
            super().__init__()
            self.lin, self.dim = torch.nn.Linear(4, 3), dim

        def forward(self, x):
            return torch.softmax(self.lin(x) * 1e6, self.dim)

    torch.manual_seed(0)
    gm = torch.fx.symbolic_trace(Net())
    x = torch.randn(6, 4)
    logits = without_output_softmax(gm, x[:1])
    assert logits is not gm
    with torch.no_grad():
        z, y = logits(x), gm(x)
    assert torch.equal(z.argmax(1), y.argmax(1)) and torch.allclose(torch.softmax(z, 1), y)
    xg = x.clone().requires_grad_(True)
    (gm(xg)[:, 0] - gm(xg)[:, 1]).sum().backward()
    assert float(xg.grad.abs().max()) == 0.0                            # saturated: nothing to follow
    assert any(n.target is torch.softmax for n in gm.graph.nodes)
    plain = torch.fx.symbolic_trace(torch.nn.Sequential(torch.nn.Linear(4, 3)))
    assert without_output_softmax(plain, x[:1]) is plain

    class Grid(torch.nn.Module):
        def forward(self, x):
            return torch.softmax(x.reshape(-1, 2, 2), 1)
    grid = torch.fx.symbolic_trace(Grid())
    assert without_output_softmax(grid, x[:1]) is grid                  # 3-D output: groups the rows may cross

    def term(C, d):
        C = np.array(C, dtype=float)
        return Term(np.zeros(4), np.ones(4), C, np.array(d, dtype=float), np.zeros(len(d), dtype=bool))
    assert compares_two_outputs(term([[1, -1, 0], [0, 2, -2]], [0, 0]))
    assert not compares_two_outputs(term([[1, -1, 0]], [0.5]))
    assert not compares_two_outputs(term([[1, -2, 0]], [0]))
    assert not compares_two_outputs(term([[1, 0, 0]], [0]))


def test_shrinking_steps_reach_a_region_fixed_steps_circle():
    """objective |x - c|_1 - r on [0, 1]^5: its counterexamples are the L1 ball of radius r = 1e-3 around c. Signed
    steps of a fixed size s move every coordinate by s, so PGD at the falsifier's step sizes ends |x - c|_1 of order
    5 s / 2 > r; the schedule of pgd_refine ends each stage within one step of c per coordinate, and its last step
    (1e-5 of the width) puts |x - c|_1 <= 5e-5 < r."""
    g = torch.Generator().manual_seed(0)
    c = torch.rand(1, 5, generator=g, dtype=torch.float64) * 0.8 + 0.1
    r = 1e-3
    obj = lambda x: (x - c).abs().sum(1) - r  # noqa: E731
    lo, hi = torch.zeros(16, 5, dtype=torch.float64), torch.ones(16, 5, dtype=torch.float64)
    x0 = torch.rand(16, 5, generator=g, dtype=torch.float64)
    for step in falsifier_step_sizes(lo, hi):
        _, val = pgd_box(obj, lo, hi, steps=100, restarts=1, x_init=x0, step_size=step, early_stop=False)
        assert bool((val > 0).all())                    # the fixed steps alone do not get there
    x, val = pgd_refine(obj, lo, hi, x0)
    assert bool((val < 0).any()) and bool(((x >= lo) & (x <= hi)).all())
    assert torch.allclose(val, obj(x))
    assert REFINE_STEPS[-1] * 5 < r                    # the argument above, for the schedule as defined


def _counting(obj):
    calls = []

    def f(x):
        calls.append(x.shape[0])
        return obj(x)
    return f, calls


def test_patience_ends_a_stalled_restart_and_keeps_a_descent_that_gets_there():
    """pgd_box(patience=10): on a bowl min |x - c|_1 + 1 (> 0 everywhere) a fixed step reaches the minimum within ~10
    steps, then circles it: the restart ends about 10 steps later, not after 100. On the linear objective sum(x) - t
    over [0, 1]^4 with t chosen so that 60 steps of 0.01 from the top corner are needed, the pace never slows: the
    rule lets it run to the counterexample (obj < 0 at about step 60)."""
    c = torch.full((1, 4), 0.5, dtype=torch.float64)
    lo, hi = torch.zeros(8, 4, dtype=torch.float64), torch.ones(8, 4, dtype=torch.float64)
    x0 = torch.rand(8, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    bowl, calls = _counting(lambda x: (x - c).abs().sum(1) + 1.0)
    _, val = pgd_box(bowl, lo, hi, steps=100, restarts=1, x_init=x0, step_size=0.05, early_stop="any", patience=10)
    assert len(calls) < 40 and bool((val < 1.2).all())
    calls.clear()
    pgd_box(bowl, lo, hi, steps=100, restarts=1, x_init=x0, step_size=0.05, early_stop="any")
    assert len(calls) > 100                                         # without patience: every step
    t = 4.0 - 4 * 0.01 * 60 + 1e-3
    line, calls = _counting(lambda x: x.sum(1) - t)
    _, val = pgd_box(line, lo[:1], hi[:1], steps=100, restarts=1, x_init=hi[:1], step_size=0.01, early_stop="any",
                     patience=10)
    assert bool((val < 0).all()) and 55 <= len(calls) <= 65


def test_refine_stops_after_two_stalled_stages():
    """pgd_refine on a constant objective > 0 (no stage can lower it) ends after its first two stages, not all
    twelve (test_shrinking_steps_reach_a_region_fixed_steps_circle: with the rule, the stages that make progress
    still run until the narrow region is reached)."""
    x0 = torch.rand(4, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    lo, hi = torch.zeros(4, 3, dtype=torch.float64), torch.ones(4, 3, dtype=torch.float64)
    flat, calls = _counting(lambda x: x.sum(1) * 0 + 2.0)
    _, val = pgd_refine(flat, lo, hi, x0, steps=10)
    assert bool((val == 2.0).all()) and len(calls) <= 2 * 12 + 1
    assert len(REFINE_STEPS) * 10 > 2 * 12 + 1
