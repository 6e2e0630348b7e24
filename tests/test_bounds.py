"""Soundness and tightness of IBP / CROWN-IBP / CROWN / alpha-CROWN.

Soundness: lb <= C f(x') <= ub for 10^4 uniform samples and PGD points of the box, on random float64 nets
covering every supported op. Exactness: against the exact optimum of a MILP (scipy HiGHS) on tiny ReLU nets.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from certkit.common.errors import CertkitError
from certkit.models.zoo import NormalizeLayer
from certkit.verifiers import METHODS, BoundedModule, L2Ball, check_model, linf_ball, margin_spec
from certkit.verifiers.attack import pgd_box

from milp import exact_min, ibp_np

torch.set_default_dtype(torch.float32)


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(2, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 2, 3, padding=1)
        self.skip = nn.Identity()
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(2 * 6 * 6, 3)

    def forward(self, x):
        h = self.c2(torch.relu(self.c1(x)))
        y = self.skip(x) + h          # residual Add
        y = torch.relu(y) - 0.5 * h   # Sub of two data tensors, Mul by a constant
        return self.fc(self.drop(torch.flatten(y, 1)))


class ConstArith(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = NormalizeLayer([0.4, 0.6], [0.2, 0.3])
        self.fc1 = nn.Linear(2 * 3 * 3, 10)
        self.fc2 = nn.Linear(10, 4)

    def forward(self, x):
        x = 1.0 - self.norm(x) / 3.0 + 0.25       # RSub, Div, Add constants
        h = F.relu(self.fc1(x.view(x.size(0), -1)))  # view with x.size(0)
        return self.fc2(-h * 2.0)


def _bn(n, dim=2):
    bn = nn.BatchNorm2d(n) if dim == 2 else nn.BatchNorm1d(n)
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    bn.weight.data.uniform_(-1.5, 1.5)  # negative gamma too
    bn.bias.data.uniform_(-0.5, 0.5)
    return bn


def _nets():
    torch.manual_seed(0)
    return {
        "mlp": (nn.Sequential(nn.Flatten(), nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                              nn.Linear(16, 4)), (6,)),
        "cnn_bn_pool": (nn.Sequential(
            nn.Conv2d(2, 4, 3, stride=2, padding=1, dilation=1), _bn(4), nn.ReLU(),
            nn.Conv2d(4, 6, 3, padding=2, dilation=2, groups=2), nn.ReLU(),
            nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False), nn.Flatten(),
            nn.Linear(6 * 4 * 4, 3)), (2, 7, 7)),
        "residual": (Residual(), (2, 6, 6)),
        "sigmoid_tanh": (nn.Sequential(nn.Linear(5, 12), nn.Sigmoid(), nn.Linear(12, 12), nn.Tanh(),
                                       nn.Linear(12, 3)), (5,)),
        "bn1d_const": (nn.Sequential(nn.Linear(4, 8), _bn(8, 1), nn.ReLU(), nn.Linear(8, 3)), (4,)),
        "normalize_arith": (ConstArith(), (2, 3, 3)),
    }


def _check_sound(net, shape, method, eps, n_samples=10_000, B=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    net = net.double().eval()
    x = torch.rand((B,) + shape, generator=gen, dtype=torch.float64)
    pert = linf_ball(x, eps, None)
    bm = BoundedModule(net, shape)
    with torch.enable_grad() if method == "alpha-CROWN" else torch.no_grad():
        lb, ub = bm.compute_bounds(pert, None, method)
    lb, ub = lb.detach(), ub.detach()
    K = lb.shape[1]
    u = torch.rand((n_samples, B) + shape, generator=gen, dtype=torch.float64)
    xs = pert.x_L + u * (pert.x_U - pert.x_L)
    with torch.no_grad():
        ys = net(xs.reshape((-1,) + shape)).reshape(n_samples, B, K)
    tol = 1e-9 * (1 + ys.abs().max())
    assert (ys >= lb - tol).all(), (method, (lb - ys).max())
    assert (ys <= ub + tol).all(), (method, (ys - ub).max())
    # PGD points: minimize and maximize every output inside the box
    for k in range(K):
        for sign in (1.0, -1.0):
            xa, val = pgd_box(lambda z, sign=sign, k=k: sign * net(z)[:, k], pert.x_L, pert.x_U, steps=30, restarts=2,
                              generator=gen, early_stop=False)
            yk = net(xa)[:, k].detach()
            assert (yk >= lb[:, k] - tol).all() and (yk <= ub[:, k] + tol).all(), (method, k)
    return lb, ub


@pytest.mark.parametrize("name", list(_nets()))
@pytest.mark.parametrize("method", METHODS)
def test_bounds_contain_sampled_and_attacked_outputs(name, method):
    net, shape = _nets()[name]
    _check_sound(net, shape, method, eps=0.15)


def test_l2_ball_bounds_are_sound():
    net, shape = _nets()["mlp"]
    net = net.double()
    gen = torch.Generator().manual_seed(1)
    x = torch.rand((2,) + shape, dtype=torch.float64, generator=gen)
    bm = BoundedModule(net, shape)
    for method in METHODS:
        with torch.enable_grad():
            lb, ub = bm.compute_bounds(L2Ball(x, 0.3), None, method)
        d = torch.randn((5000, 2) + shape, generator=gen, dtype=torch.float64)
        d = d / d.flatten(2).norm(dim=2)[..., None] * 0.3 * torch.rand((5000, 2, 1), generator=gen, dtype=torch.float64)
        ys = net((x + d).reshape((-1,) + shape)).reshape(5000, 2, -1).detach()
        assert (ys >= lb.detach() - 1e-9).all() and (ys <= ub.detach() + 1e-9).all(), method


def test_tightness_order_and_alpha_improves_crown():
    net, shape = _nets()["mlp"]
    net = net.double()
    x = torch.rand((4,) + shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    C = margin_spec(torch.tensor([0, 1, 2, 3]), 4).double()
    bm = BoundedModule(net, shape)
    pert = linf_ball(x, 0.2, None)
    with torch.enable_grad():
        res = {m: bm.compute_bounds(pert, C, m)[0].detach() for m in METHODS}
    assert (res["alpha-CROWN"] >= res["CROWN"] - 1e-12).all()
    assert (res["alpha-CROWN"] > res["CROWN"] + 1e-6).any()  # the optimization does something here
    assert (res["CROWN"] >= res["CROWN-IBP"] - 1e-9).all()    # tighter intermediate bounds


def test_ibp_last_layer_elision_is_at_least_as_tight():
    for name, (net, shape) in _nets().items():
        net = net.double()
        x = torch.rand((3,) + shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
        K = net(x).shape[1]
        C = margin_spec(torch.zeros(3, dtype=torch.long), K).double()
        bm = BoundedModule(net, shape)
        pert = linf_ball(x, 0.1, None)
        lb_e, ub_e = bm.compute_bounds(pert, C, "IBP", elide=True)
        lb_n, ub_n = bm.compute_bounds(pert, C, "IBP", elide=False)
        assert (lb_e >= lb_n - 1e-12).all() and (ub_e <= ub_n + 1e-12).all(), name


@pytest.mark.parametrize("eps,seed", [(0.3, 0), (0.5, 1), (0.002, 2)])
def test_lower_bounds_below_exact_optimum_and_crown_exact_when_stable(eps, seed):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 2)).double()
    layers = [(m.weight.detach().numpy(), m.bias.detach().numpy()) for m in net if isinstance(m, nn.Linear)]
    x = torch.rand(1, 3, dtype=torch.float64)
    pert = linf_ball(x, eps, None)
    bm = BoundedModule(net, (3,))
    C = torch.tensor([[[1.0, -1.0], [-1.0, 1.0]]], dtype=torch.float64)
    exact = [exact_min(layers, C[0, j].numpy(), pert.x_L[0].numpy(), pert.x_U[0].numpy()) for j in range(2)]
    with torch.enable_grad():
        lbs = {m: bm.compute_bounds(pert, C, m)[0].detach()[0] for m in METHODS}
    for m, lb in lbs.items():
        assert all(lb[j] <= exact[j] + 1e-7 for j in range(2)), (m, lb, exact)
    pre = ibp_np(layers, pert.x_L[0].numpy(), pert.x_U[0].numpy())
    if all(((l >= 0) | (u <= 0)).all() for l, u in pre):  # every neuron stable: CROWN is exact
        assert np.allclose(lbs["CROWN"].numpy(), exact, atol=1e-9)
    else:
        assert eps > 0.01  # the small-eps case must be the stable one
        assert any(lbs["CROWN"][j] < exact[j] - 1e-6 for j in range(2))  # relaxation gap exists


def test_bounds_are_differentiable_wrt_weights():
    net, shape = _nets()["cnn_bn_pool"]
    x = torch.rand((2,) + shape)
    bm = BoundedModule(net, shape)
    C = margin_spec(torch.tensor([0, 1]), 3)
    for m in ("IBP", "CROWN-IBP"):
        net.zero_grad()
        lb, _ = bm.compute_bounds(linf_ball(x, 0.05), C, m)
        (-lb.sum()).backward()
        grads = [p.grad for p in net.parameters() if p.requires_grad]
        assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0, m


def test_preflight_lists_every_problem():
    class Bad(nn.Module):
        def __init__(self):
            super().__init__()
            self.pool = nn.MaxPool2d(2)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            y = self.pool(x).flatten(1)
            # (B, 1, 4) * (B, 4): a product whose broadcasting would mix samples
            return self.fc((torch.atan(y)[:, None] * y).sum(1)) + torch.cumsum(y, 1)[:, :2]

    problems = check_model(Bad(), (1, 4, 4))
    text = " ".join(problems)
    assert "atan" in text and "broadcast product of two data tensors" in text and "cumsum" in text, problems
    with pytest.raises(CertkitError, match="cumsum"):
        BoundedModule(Bad(), (1, 4, 4))


def test_unknown_method_and_bad_spec():
    net, shape = _nets()["mlp"]
    bm = BoundedModule(net, shape)
    x = torch.rand((2,) + shape)
    with pytest.raises(CertkitError, match="unknown bound method"):
        bm.compute_bounds(linf_ball(x, 0.1), None, "DeepPoly")
    with pytest.raises(CertkitError, match="C must have shape"):
        bm.compute_bounds(linf_ball(x, 0.1), torch.zeros(2, 3, 7), "IBP")


def test_lower_only_equals_lower_of_both():
    net, shape = _nets()["residual"]
    x = torch.rand((2,) + shape, generator=torch.Generator().manual_seed(4))
    bm = BoundedModule(net, shape)
    C = margin_spec(torch.tensor([0, 2]), 3)
    for m in ("IBP", "CROWN-IBP", "CROWN"):
        with torch.no_grad():
            lb, ub = bm.compute_bounds(linf_ball(x, 0.05), C, m)
            lb1, ub1 = bm.compute_bounds(linf_ball(x, 0.05), C, m, bound_upper=False)
        assert ub1 is None and torch.allclose(lb, lb1, atol=1e-6), m


def test_onnx_pad_and_transpose_import_and_bounds(tmp_path):
    """Zero Pad (opset 9 attribute form) and an NHWC->NCHW Transpose, as in published VNN-COMP conv nets."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    from certkit.models.onnx_import import load_onnx

    rng = np.random.default_rng(5)
    inits = [numpy_helper.from_array(rng.normal(size=(3, 2, 3, 3)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.normal(size=(3 * 5 * 4, 4)).astype(np.float32), "M"),
             numpy_helper.from_array(np.array([-1, 3 * 5 * 4], dtype=np.int64), "shape")]
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
             helper.make_node("Pad", ["t"], ["p"], mode="constant", pads=[0, 0, 1, 0, 0, 0, 2, 1], value=0.0),
             helper.make_node("Conv", ["p", "W"], ["c"]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Reshape", ["r", "shape"], ["f"]), helper.make_node("MatMul", ["f", "M"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 5, 2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 9)])
    model.ir_version = 7
    onnx.save(model, str(tmp_path / "pt.onnx"))
    m = load_onnx(tmp_path / "pt.onnx")
    xs = torch.rand((4,) + m.sample_shape)
    np.testing.assert_allclose(m.module(xs).detach().numpy(), m.run_onnxruntime(xs), atol=1e-5)
    for method in METHODS:
        _check_sound(m.module, m.sample_shape, method, eps=0.1, n_samples=2000)


def test_ibp_is_exact_on_a_box_through_one_mixing_op():
    """CROWN skips refining nodes whose IBP bounds over a box are exact (one Linear/Conv among coordinatewise affine
    ops: normalization, BatchNorm, Flatten); check the claim: the backward pass there gives the IBP interval, and a
    node behind two mixing ops is not called exact (CROWN does tighten it)."""
    torch.manual_seed(0)
    cnn = nn.Sequential(NormalizeLayer([0.4, 0.6], [0.2, 0.3]), nn.Conv2d(2, 3, 3, padding=1), _bn(3), nn.ReLU(),
                        nn.Conv2d(3, 2, 3), _bn(2), nn.ReLU(), nn.Flatten(), nn.Linear(18, 2))
    mlp = nn.Sequential(NormalizeLayer([0.5], [0.25]), nn.Flatten(), nn.Linear(50, 8), _bn(8, 1), nn.ReLU(),
                        nn.Linear(8, 2))
    for net, tightened in ((cnn, True), (mlp, False)):
        bm = BoundedModule(net.double().eval(), (2, 5, 5))
        x = torch.rand(4, 2, 5, 5, dtype=torch.float64)
        pert = linf_ball(x, 0.1, None)
        bounds = bm.ibp(pert)
        ins = [bm.graph.nodes[r].inputs[0] for r in bm.graph.nonlinear()]
        assert bm.ibp_exact_on_box(ins[0])
        l, u = bm._backward_interval(ins[0], pert, bounds, {})
        assert torch.allclose(l, bounds[ins[0]][0], atol=1e-12) and torch.allclose(u, bounds[ins[0]][1], atol=1e-12)
        if tightened:
            assert not bm.ibp_exact_on_box(ins[1])
            l2, _ = bm._backward_interval(ins[1], pert, bounds, {})
            assert (l2 > bounds[ins[1]][0] + 1e-9).any()


def test_boxes_unbatched_inputs_and_inferred_input_shape():
    """(lo, hi) boxes and one input without batch dim give the rows of the batched call; the input shape comes from
    the first perturbation; other layouts stop with one line naming the expected one."""
    import certkit

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 6 * 6, 4)).eval()
    x = torch.rand(5, 1, 8, 8)
    bm = certkit.BoundedModule(net)                     # no input_shape
    C = torch.randn(5, 2, 4)
    lb, ub = bm.compute_bounds(linf_ball(x, 0.03), C=C, method="CROWN")
    assert bm.graph.input_shape == (1, 8, 8) and lb.shape == (5, 2)
    lo, hi = linf_ball(x, 0.03).box()
    lb_box, ub_box = bm.compute_bounds((lo, hi), C=C, method="CROWN")
    torch.testing.assert_close(lb_box, lb, rtol=0, atol=0)
    lb1, ub1 = bm.compute_bounds(linf_ball(x[2], 0.03), C=C[2], method="CROWN")     # ONE input: (S,) bounds
    assert lb1.shape == (2,)
    torch.testing.assert_close(lb1, lb[2], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ub1, ub[2], rtol=1e-6, atol=1e-6)
    inside = lo[2] + (hi[2] - lo[2]) * torch.rand(500, 1, 8, 8)                    # sound on sampled points
    out = net(inside) @ C[2].T
    assert (out >= lb1 - 1e-5).all() and (out <= ub1 + 1e-5).all()
    with pytest.raises(CertkitError, match="batch N x 1 x 8 x 8 or one input 1 x 8 x 8, got 2 x 8 x 9"):
        bm.compute_bounds(linf_ball(torch.rand(2, 8, 9), 0.1))
    with pytest.raises(CertkitError, match="perturbation"):
        bm.compute_bounds(x)
    with pytest.raises(CertkitError, match="input shape is not known"):
        _ = certkit.BoundedModule(net).graph
    with pytest.raises(CertkitError, match="add the batch dimension"):
        certkit.BoundedModule(net).compute_bounds(linf_ball(torch.rand(8), 0.1))


def test_crown_intermediate_passes_stop_at_the_deadline():
    """A network slow to bound (transposed convolutions up to 32 x 32 x 8, rows in small chunks as on a large network):
    CROWN's intermediate passes check the complete verifier's deadline between chunks of rows, so an instance's time
    limit holds in this phase too."""
    import time

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 128), nn.ReLU(), nn.Unflatten(1, (8, 4, 4)),
                        nn.ConvTranspose2d(8, 8, 4, stride=2, padding=1), nn.ReLU(),
                        nn.ConvTranspose2d(8, 8, 4, stride=2, padding=1), nn.ReLU(),
                        nn.ConvTranspose2d(8, 1, 4, stride=2, padding=1), nn.Flatten()).double().eval()
    bm = BoundedModule(net, (5,), budget=2 ** 14)
    x = torch.rand(1, 5, dtype=torch.float64)
    t0 = time.perf_counter()
    bm.compute_bounds(linf_ball(x, 0.5, None), None, "CROWN")
    full = time.perf_counter() - t0
    bm.deadline = time.perf_counter() + full / 10       # well before the passes would finish
    with pytest.raises(TimeoutError):
        bm.compute_bounds(linf_ball(x, 0.5, None), None, "CROWN")
    bm.deadline = None
    lb, ub = bm.compute_bounds(linf_ball(x, 0.01, None), None, "IBP")
    assert torch.isfinite(lb).all()


def test_a_single_backward_pass_stops_at_the_deadline():
    """Every backward pass (final bounds, alpha-CROWN's steps, beta-CROWN's) checks the deadline node by node, not
    only between chunks of intermediate rows: a pass started after the deadline raises at its first node."""
    import time

    net, shape = _nets()["mlp"]
    bm = BoundedModule(net, shape)
    x = torch.rand((2,) + shape)
    pert = linf_ball(x, 0.1, None)
    bounds = bm.ibp(pert)
    CC = torch.ones((2, 1) + tuple(bm.graph.output_shape))
    bm.deadline = time.perf_counter() - 1.0
    with pytest.raises(TimeoutError):
        bm._backward(bm.graph.output, CC, pert, bounds, {})
    bm.deadline = None
    assert torch.isfinite(bm._backward(bm.graph.output, CC, pert, bounds, {})).all()


def test_data_broadcast_against_a_larger_constant():
    """x (B, 1) * c (4,): the backward rule sums the coefficients back onto the one input (a control network of
    VNN-COMP's lsnc benchmark)."""
    from relaxation_checks import check_network_bounds

    class Broadcast(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.a, self.b = torch.nn.Linear(3, 1), torch.nn.Linear(4, 2)
            self.register_buffer("c", torch.tensor([0.5, -1.0, 2.0, 0.25]))

        def forward(self, x):
            return self.b(torch.relu(self.a(x) * self.c + 0.1))

    check_network_bounds(Broadcast().double().eval(), 3)


def test_crown_intermediate_recomputes_ibp_from_tightened_inputs():
    """A LayerNorm after a deep enough MLP that IBP's variance is loose: once CROWN tightens the variance, the sqrt
    after it gets the exact image of the tighter interval (IBP of the tightened input), no wider than its own lines
    would give; every node's bounds lie inside plain IBP's and contain the values at sampled points."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 8), nn.LayerNorm(8),
                        nn.Linear(8, 3)).double().eval()
    bm = BoundedModule(net, (4,))
    x = torch.rand(2, 4, dtype=torch.float64)
    pert = linf_ball(x, 0.3, None)
    ibp, crown = bm.ibp(pert), bm.crown_intermediate(pert)
    nodes = bm.graph.nodes
    sq = next(i for i, n in enumerate(nodes) if n.op is not None and n.op.name == "Sqrt")
    (lv, uv), (ls, us) = crown[nodes[sq].inputs[0]], crown[sq]
    assert torch.allclose(ls, torch.sqrt(lv.clamp(min=0)), rtol=1e-6) and torch.allclose(us, torch.sqrt(uv), rtol=1e-6)
    assert (us < ibp[sq][1] * 0.5).any()                               # tighter than IBP's own sqrt
    z = x[:, None] + 0.3 * (2 * torch.rand((2, 300, 4), dtype=torch.float64) - 1)
    vals = [z.reshape(-1, 4)]
    for n in nodes[1:]:
        vals.append(n.op.forward(*[vals[i] for i in n.inputs]))
    for i in range(1, len(nodes)):
        (l0, u0), (l, u) = ibp[i], crown[i]
        assert (l >= l0).all() and (u <= u0).all()
        v = vals[i].reshape((2, 300) + tuple(nodes[i].shape))
        assert (v >= l[:, None] - 1e-9).all() and (v <= u[:, None] + 1e-9).all(), nodes[i].op.name
