"""Checks every activation op must pass, independent of whole networks (imported by tests/test_op_*.py).

On a dense grid of input intervals [l, u] (degenerate l = u, tiny, ordinary and very wide ones, on both sides of 0)
and dense points z in each: the CROWN lines and every alpha-CROWN line (alpha at 0, 1 and random values in [0, 1])
bound the function, IBP contains it, ``alpha_init`` reproduces the CROWN lines, and the backward rule gives a sound
lower bound of sum(A * act(z)) for random A of both signs, and the forward-mode rule bounds act(z) on the interval.
"""
import itertools

import torch

# +-1e-9 and 3e-9: intervals narrower than 1e-8 (a division guard of that size once made ReLU's lines unsound there)
ENDPOINTS = (-1e3, -40.0, -8.0, -3.0, -1.0, -0.3, -1e-3, -1e-7, -1e-9, 0.0, 1e-9, 3e-9, 1e-7, 1e-3, 0.3, 1.0, 3.0,
             8.0, 40.0, 1e3)


def intervals(extra_random: int = 200, seed: int = 0, domain: tuple | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(l, u), each (N,) float64: every ordered pair of ENDPOINTS (l == u included) plus random intervals; with
    ``domain`` (lo, hi) only the intervals inside it, plus its own endpoints paired with the others (functions
    defined on part of the line: log, sqrt, reciprocal; or overflowing outside it: exp)."""
    ends = ENDPOINTS if domain is None else tuple(sorted({e for e in ENDPOINTS if domain[0] <= e <= domain[1]}
                                                         | {float(domain[0]), float(domain[1])}))
    pairs = [(a, b) for a, b in itertools.product(ends, ends) if a <= b]
    gen = torch.Generator().manual_seed(seed)
    c = (torch.rand(extra_random, generator=gen, dtype=torch.float64) - 0.5) * 20
    w = torch.rand(extra_random, generator=gen, dtype=torch.float64) ** 3 * 20
    l = torch.cat([torch.tensor([p[0] for p in pairs], dtype=torch.float64), c - w / 2])
    u = torch.cat([torch.tensor([p[1] for p in pairs], dtype=torch.float64), c + w / 2])
    if domain is not None:
        l, u = l.clamp(*domain), u.clamp(*domain)
    return l, u


def points(l: torch.Tensor, u: torch.Tensor, n: int = 513) -> torch.Tensor:
    """(N, n) points of each interval: a uniform grid including both ends."""
    t = torch.linspace(0, 1, n, dtype=torch.float64)
    return l[:, None] + t[None] * (u - l)[:, None]


def _tol(*terms):
    return 1e-10 * (1 + sum(t.abs() for t in terms))


def assert_lines_bound(op, l, u, lines, z):
    """a_L z + c_L <= act(z) <= a_U z + c_U at every point z (N, n) (lines (N, ...) broadcast to (N, n))."""
    aL, cL, aU, cU = (t.reshape(t.shape[0], -1) for t in lines)
    f = op.function(z)
    low, up = aL * z + cL, aU * z + cU
    bad_low = low > f + _tol(aL * z, cL, f)
    bad_up = f > up + _tol(aU * z, cU, f)
    assert not bad_low.any(), f"lower line above {op.name} on [{l[bad_low.any(1)][0]}, {u[bad_low.any(1)][0]}]"
    assert not bad_up.any(), f"upper line below {op.name} on [{l[bad_up.any(1)][0]}, {u[bad_up.any(1)][0]}]"
    assert all(torch.isfinite(t).all() for t in lines), f"{op.name}: non-finite relaxation"


def check_activation(op, rows: int = 3, seed: int = 0, domain: tuple | None = None):
    """Run every check on activation op ``op`` (see the module docstring); ``domain``: see :func:`intervals`."""
    l, u = intervals(seed=seed, domain=domain)
    z = points(l, u)
    f = op.function(z)
    # IBP contains the function
    lo, hi = op.ibp((l, u))
    assert (lo[:, None] <= f + _tol(f)).all() and (f <= hi[:, None] + _tol(f)).all(), f"{op.name}: IBP misses values"
    # CROWN lines
    crown = op.relax(l, u)
    assert_lines_bound(op, l, u, crown, z)
    # alpha-CROWN lines: alpha at the corners and at random points of [0, 1]
    if op.n_alpha:
        init = op.alpha_init([(l, u)])
        assert init.shape == (op.n_alpha,) + l.shape and (init >= 0).all() and (init <= 1).all()
        same = op.relax(l, u, init.unsqueeze(2))
        for a, b in zip(crown, same):
            assert torch.allclose(a, b.reshape(a.shape), atol=1e-9, rtol=1e-9), \
                f"{op.name}: alpha_init does not reproduce the CROWN relaxation"
        gen = torch.Generator().manual_seed(seed + 1)
        alpha = torch.rand((op.n_alpha, l.shape[0], rows), generator=gen, dtype=torch.float64)
        alpha[:, :, 0], alpha[:, :, 1] = 0.0, 1.0
        lines = op.relax(l, u, alpha)
        for s in range(rows):
            row = tuple(t.expand(-1, rows)[:, s] for t in lines)
            assert_lines_bound(op, l, u, row, z)
    # backward: sum(A * act(z)) >= sum(A_in * z) + bias for A of both signs
    gen = torch.Generator().manual_seed(seed + 2)
    B = 4
    lB, uB = l[None].expand(B, -1), u[None].expand(B, -1)
    A = torch.randn((B, rows, l.shape[0]), generator=gen, dtype=torch.float64)
    (A_in,), bias = op.backward(A, [(lB, uB)])
    t = torch.rand((B, 64, l.shape[0]), generator=gen, dtype=torch.float64)
    zs = lB[:, None] + t * (uB - lB)[:, None]                               # (B, 64, N)
    exact = torch.einsum("bsn,bkn->bsk", A, op.function(zs))
    linear = torch.einsum("bsn,bkn->bsk", A_in, zs) + bias[..., None]
    assert (linear <= exact + 1e-8 * (1 + exact.abs())).all(), f"{op.name}: backward bound above the function"
    # forward mode: the input between L(e) = c - r/2 + (r/2) e and U(e) = c + r/2 + (r/2) e (e in [-1, 1]; together
    # they span [l, u]); for each grid point z an e with L(e) <= z <= U(e); the output's bounds in e hold there
    c, r = (l + u) / 2, (u - l) / 2
    L_in, U_in = torch.stack([c - r / 2, r / 2], 1), torch.stack([c + r / 2, r / 2], 1)    # (N, 2): constant, e
    L_out, U_out = op.forward_linear([(L_in, U_in)], [(l, u)])
    e = ((z - c[:, None]) / torch.where(r > 0, r / 2, 1.0)[:, None]).clamp(-1, 1)
    low, high = L_out[:, :1] + L_out[:, 1:] * e, U_out[:, :1] + U_out[:, 1:] * e
    assert (low <= f + _tol(f, low)).all(), f"{op.name}: forward-mode lower bound above the function"
    assert (f <= high + _tol(f, high)).all(), f"{op.name}: forward-mode upper bound below the function"


def check_network_bounds(net, in_shape, rows: int = 3, eps: float = 0.2, samples: int = 4000, seed: int = 0):
    """IBP, CROWN and alpha-CROWN bounds of a float64 network (inputs of ``in_shape``, an int for vectors -> outputs)
    on Linf balls contain its outputs at sampled points and at PGD-attacked points (both directions, each output);
    CROWN is no looser than IBP and alpha-CROWN no looser than CROWN, on the lower bounds. Returns
    {method: (lb, ub)}."""
    from certkit.verifiers import METHODS, BoundedModule, check_model, linf_ball
    from certkit.verifiers.attack import pgd_box

    shape = (in_shape,) if isinstance(in_shape, int) else tuple(in_shape)
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand((rows,) + shape, generator=gen, dtype=torch.float64)
    pert = linf_ball(x, eps, None)
    assert check_model(net, shape) == []
    bm = BoundedModule(net, shape)
    u = torch.rand((samples, rows) + shape, generator=gen, dtype=torch.float64)
    ys = net((pert.x_L + u * (pert.x_U - pert.x_L)).reshape((-1,) + shape)).reshape(samples, rows, -1).detach()
    bounds = {}
    for m in METHODS:
        with torch.enable_grad():
            lb, ub = bm.compute_bounds(pert, None, m)
        lb, ub = lb.detach(), ub.detach()
        bounds[m] = (lb, ub)
        assert (ys >= lb - 1e-9).all() and (ys <= ub + 1e-9).all(), m
        for k in range(ys.shape[2]):
            for sign in (1.0, -1.0):
                xa, _ = pgd_box(lambda z, sign=sign, k=k: sign * net(z)[:, k], pert.x_L, pert.x_U, steps=30, restarts=2,
                                generator=gen, early_stop=False)
                yk = net(xa)[:, k].detach()
                assert (yk >= lb[:, k] - 1e-9).all() and (yk <= ub[:, k] + 1e-9).all(), (m, k)
    assert (bounds["CROWN"][0] >= bounds["IBP"][0] - 1e-9).all()
    assert (bounds["alpha-CROWN"][0] >= bounds["CROWN"][0] - 1e-9).all()
    return bounds


def check_onnx_bounds(net, in_dim, path, eps: float = 0.1, seed: int = 2, **export_kwargs):
    """``net`` exported to ONNX at ``path`` (``export_kwargs`` go to the exporter) imports with every node bounded,
    and CROWN bounds of the import contain onnxruntime's outputs at sampled points (float32 tolerance). ``in_dim``:
    the per-sample input size (int) or shape (tuple)."""
    import pytest

    pytest.importorskip("onnxruntime")
    from certkit.models.onnx_import import load_onnx
    from certkit.verifiers import BoundedModule, check_model, linf_ball

    from conftest import export_onnx

    shape = (in_dim,) if isinstance(in_dim, int) else tuple(in_dim)
    export_onnx(net, torch.rand((1,) + shape), path, **export_kwargs)
    model = load_onnx(path)
    assert check_model(model.module, model.sample_shape) == []
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand((2,) + shape, generator=gen)
    bm = BoundedModule(model.module.double(), shape)
    lb, ub = bm.compute_bounds(linf_ball(x.double(), eps, None), None, "CROWN")
    pts = (x[:, None] - eps + 2 * eps * torch.rand((2, 200) + shape, generator=gen)).reshape((-1,) + shape)
    ref = torch.from_numpy(model.run_onnxruntime(pts)).double().reshape(2, 200, -1)
    assert (ref >= lb[:, None] - 1e-4).all() and (ref <= ub[:, None] + 1e-4).all()


def assert_same_bounds(a, b, in_shape, eps: float = 0.1, method: str = "CROWN", seed: int = 1):
    """Networks ``a`` and ``b`` (the functional and the module form of one op) get identical bounds."""
    from certkit.verifiers import BoundedModule, linf_ball

    shape = (in_shape,) if isinstance(in_shape, int) else tuple(in_shape)
    x = torch.rand((2,) + shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    ra = BoundedModule(a, shape).compute_bounds(linf_ball(x, eps, None), None, method)
    rb = BoundedModule(b, shape).compute_bounds(linf_ball(x, eps, None), None, method)
    assert torch.equal(ra[0], rb[0]) and torch.equal(ra[1], rb[1])


class ElementwiseNet(torch.nn.Module):
    """Linear -> fn -> Linear, the small network of an elementwise op's tests; ``positive``: the first layer has weights
    in [0, 0.3] and bias ``bias`` (positive on inputs >= -0.2: for log, sqrt, reciprocal)."""

    def __init__(self, fn, d_in: int = 4, hidden: int = 6, d_out: int = 2, positive: bool = False, bias: float = 1.0):
        super().__init__()
        self.fn = fn
        self.fc1, self.fc2 = torch.nn.Linear(d_in, hidden), torch.nn.Linear(hidden, d_out)
        if positive:
            with torch.no_grad():
                self.fc1.weight.uniform_(0.0, 0.3)
                self.fc1.bias.fill_(bias)

    def forward(self, x):
        return self.fc2(self.fn(self.fc1(x)))


def check_inflections(op, curvature: float, lo: float = -30.0, hi: float = 30.0):
    """An op on verifiers/bounds/ops/inflection.py: its ``derivative`` is f' (autograd of ``function``), f'' has the
    declared sign on each piece between ``inflections`` (dense grid; f' monotone there is what its lines rely on), and
    on the interval grid its CROWN lines are at the midpoint at least as close to f as the Taylor lines
    f(d) + f'(d)(z - d) -+ curvature w^2 / 2 (``curvature`` >= max |f''| on [lo, hi], checked there; the intervals
    inside [lo, hi]) and as the interval bounds."""
    z = torch.linspace(lo, hi, 600_001, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(op.function(z).sum(), z, create_graph=True)
    (h,) = torch.autograd.grad(g.sum(), z)
    z, g, h = z.detach(), g.detach(), h.detach()
    assert torch.allclose(op.derivative(z), g, atol=1e-12), f"{op.name}: derivative is not f'"
    assert float(h.abs().max()) <= curvature
    for p0, p1, convex in op._pieces():
        inner = (z > p0 + 1e-6) & (z < p1 - 1e-6)
        assert ((h[inner] >= -1e-12) if convex else (h[inner] <= 1e-12)).all(), (op.name, p0, p1, convex)
    l, u = intervals(domain=(lo, hi))      # where |f''| <= curvature holds
    aL, cL, aU, cU = op.relax(l, u)
    d, w = (l + u) / 2, (u - l) / 2
    fd = op.function(d)
    lo_c, hi_c = op.ibp((l, u))
    slack = 3e-6 * (1 + op.function(l).abs() + op.function(u).abs() + aL.abs() * (l.abs() + u.abs()) + w)
    assert (aL * d + cL >= torch.maximum(fd - curvature * w * w / 2, lo_c) - slack).all(), op.name
    slack = 3e-6 * (1 + op.function(l).abs() + op.function(u).abs() + aU.abs() * (l.abs() + u.abs()) + w)
    assert (aU * d + cU <= torch.minimum(fd + curvature * w * w / 2, hi_c) + slack).all(), op.name
