"""verifiers/attack.py: output-diversified starts (ODI) against closed forms on linear maps."""
import torch

from certkit.verifiers.attack import output_diversified_starts


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
    assert falsifier_step_sizes(lo, hi) == (None, 0.25 * float((hi - lo).max()))
    # one start: only the center, no pool
    x1, pool1 = falsifier_starts(obj, lambda x: x @ A.T, lo, hi, 1)
    assert pool1 is None
    torch.testing.assert_close(x1[0], ((lo + hi) / 2)[0])
