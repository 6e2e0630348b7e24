"""alpha-CROWN's optimised intermediate bounds (verifiers/bounds/alpha_crown.py: optimize_intermediate): they contain
every sampled and attacked pre-activation, lie inside CROWN's, and are strictly tighter somewhere on nets where CROWN
is loose, with float64 iterations and with float32 ones (``fast``) evaluated in float64; the float32 path agrees with
the float64 one and steps aside where float32 cannot represent the bound."""
import copy

import pytest
import torch
from torch import nn

from certkit.verifiers import BoundedModule, linf_ball
from certkit.verifiers.attack import pgd_box
from certkit.verifiers.bounds.alpha_crown import FAST_AGREEMENT, alpha_crown, optimize_intermediate
from certkit.verifiers.bounds.perturbation import Box


def nets():
    torch.manual_seed(0)
    return {
        "relu_mlp": (nn.Sequential(nn.Linear(6, 24), nn.ReLU(), nn.Linear(24, 24), nn.ReLU(), nn.Linear(24, 24),
                                   nn.ReLU(), nn.Linear(24, 3)), (6,)),
        "cnn": (nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(), nn.Flatten(),
                              nn.Linear(4 * 3 * 3, 3)), (1, 7, 7)),
        "sigmoid_tanh": (nn.Sequential(nn.Linear(5, 16), nn.Sigmoid(), nn.Linear(16, 16), nn.Tanh(),
                                       nn.Linear(16, 16), nn.Sigmoid(), nn.Linear(16, 3)), (5,)),
    }


def float32_twin(bm: BoundedModule, shape) -> BoundedModule:
    return BoundedModule(copy.deepcopy(bm.model).float(), shape)


@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize("name", list(nets()))
def test_optimised_intermediate_bounds_are_sound_and_inside_crowns(name, fast):
    net, shape = nets()[name]
    net = net.double().eval()
    for m in net:
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            m.weight.data *= 2
    gen = torch.Generator().manual_seed(1)
    x = torch.rand((2,) + shape, generator=gen, dtype=torch.float64)
    pert = linf_ball(x, 0.2, None)
    bm = BoundedModule(net, shape)
    with torch.no_grad():
        crown = bm.crown_intermediate(pert)
    opt = optimize_intermediate(bm, pert, crown, iterations=20, fast=float32_twin(bm, shape) if fast else None)
    acts = [bm.graph.nodes[a].inputs[0] for a in bm.graph.nonlinear()]
    tighter = 0.0
    for j in acts:
        (l0, u0), (l, u) = crown[j], opt[j]
        assert bool((l >= l0).all() and (u <= u0).all() and (l <= u).all())
        tighter += float((l - l0).sum() + (u0 - u).sum())
    assert tighter > 1e-3
    # every sampled and PGD-attacked pre-activation lies inside the optimised bounds
    prefixes = {j: net[:j] for j in acts}  # node j of a Sequential's graph is the output of its first j modules
    assert all(tuple(f(x).shape[1:]) == tuple(bm.graph.nodes[j].shape) for j, f in prefixes.items())
    u_ = torch.rand((4000,) + tuple(pert.x_L.shape), generator=gen, dtype=torch.float64)
    xs = pert.x_L + u_ * (pert.x_U - pert.x_L)
    for j, f in prefixes.items():
        l, u = opt[j]
        with torch.no_grad():
            z = f(xs.reshape((-1,) + shape)).reshape((4000,) + tuple(l.shape))
        assert bool((z >= l - 1e-9).all() and (z <= u + 1e-9).all()), j
        flat_l = l.flatten(1)
        for k in range(min(3, flat_l.shape[1])):
            for sign in (1.0, -1.0):
                xa, _ = pgd_box(lambda v, sign=sign, f=f, k=k: sign * f(v).flatten(1)[:, k], pert.x_L, pert.x_U,
                                steps=30, restarts=2,
                                generator=gen, early_stop=False)
                zk = f(xa).flatten(1)[:, k].detach()
                assert bool((zk >= flat_l[:, k] - 1e-9).all() and (zk <= u.flatten(1)[:, k] + 1e-9).all())


def test_projected_adam_follows_torch_adam_with_exponential_decay():
    """certkit's own Adam (no torch optimizer: that import costs a second at start-up) takes the same steps as
    torch.optim.Adam + ExponentialLR, per parameter group, on a loss with different curvature per coordinate."""
    from certkit.verifiers.bounds.alpha_crown import ProjectedAdam, projected_step

    g = torch.Generator().manual_seed(0)
    scale = torch.rand(5, 3, generator=g) * 10
    a0, b0 = torch.rand(5, 3, generator=g), torch.rand(4, generator=g)

    def loss(a, b):
        return (scale * (a - 0.3) ** 2).sum() + (b ** 3).sum() - b.sum()

    a, b = a0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
    ref = torch.optim.Adam([{"params": [a], "lr": 0.5}, {"params": [b], "lr": 0.05}])
    sched = torch.optim.lr_scheduler.ExponentialLR(ref, 0.98)
    x, y = a0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
    mine = ProjectedAdam([([x], 0.5), ([y], 0.05)], decay=0.98)
    for _ in range(30):
        ref.zero_grad()
        loss(a, b).backward()
        ref.step()
        sched.step()
        with torch.no_grad():
            a.clamp_(0, 1)
            b.clamp_(min=0)
        projected_step(mine, loss(x, y), [x], [y])
        assert torch.allclose(x, a, atol=1e-6) and torch.allclose(y, b, atol=1e-6)
    assert 0 <= float(x.min()) and float(x.max()) <= 1 and float(y.min()) >= 0
    assert not torch.allclose(x, a0)  # it moved


def output_bounds(name, fast: bool, scale: float = 2.0):
    """CROWN's and alpha-CROWN's lower bounds (B, 3) of the outputs of net ``name`` (weights x ``scale``), alpha-CROWN
    iterated in float64 or in float32 (``fast``)."""
    net, shape = nets()[name]
    net = net.double().eval()
    for m in net:
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            m.weight.data *= scale
    x = torch.rand((2,) + shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    pert = linf_ball(x, 0.2, None)
    bm = BoundedModule(net, shape)
    with torch.no_grad():
        bounds = bm.crown_intermediate(pert)
    CC = torch.eye(3, dtype=torch.float64).expand(2, 3, 3)
    crown = alpha_crown(bm, pert, CC, bounds, iterations=0)
    lb = alpha_crown(bm, pert, CC, bounds, iterations=20, fast=float32_twin(bm, shape) if fast else None)
    return crown, lb


@pytest.mark.parametrize("name", list(nets()))
def test_float32_iterations_give_float64_bounds_as_tight_as_float64_iterations(name):
    """The bound of the float32 path is a float64 evaluation: at least CROWN's, and its gain over CROWN within 10%
    (and 1e-6) of the float64 iterations' gain (the same Adam steps, up to float32 rounding of the gradients)."""
    crown, lb64 = output_bounds(name, fast=False)
    _, lb32 = output_bounds(name, fast=True)
    assert lb32.dtype == torch.float64
    assert bool((lb32 >= crown).all())
    gain64, gain32 = lb64 - crown, lb32 - crown
    assert float(gain64.sum()) > 1e-3                 # alpha matters on these nets
    assert bool((gain32 >= 0.9 * gain64 - 1e-6).all())


def test_float32_iterations_step_aside_where_float32_cannot_represent_the_bound():
    """relu(1e8 x + 1e8 + 0.5) - relu(1e8 x + 1e8) + relu(x + 0.1) + relu(-x + 0.1) on [-1, 1]: in float32 both large
    biases round to 1e8, so float32 CROWN misses float64's by 0.5, far above ``FAST_AGREEMENT``; the float64 iterations
    run instead, with their bound."""
    lin = nn.Linear(1, 4).double()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1e8], [1e8], [1.0], [-1.0]], dtype=torch.float64))
        lin.bias.copy_(torch.tensor([1e8 + 0.5, 1e8, 0.1, 0.1], dtype=torch.float64))
    out = nn.Linear(4, 1).double()
    with torch.no_grad():
        out.weight.copy_(torch.tensor([[1.0, -1.0, 1.0, 1.0]], dtype=torch.float64))
        out.bias.zero_()
    net = nn.Sequential(lin, nn.ReLU(), out).eval()
    pert = Box(torch.full((1, 1), -1.0, dtype=torch.float64), torch.full((1, 1), 1.0, dtype=torch.float64))
    bm = BoundedModule(net, (1,))
    with torch.no_grad():
        bounds = bm.crown_intermediate(pert)
    twin = float32_twin(bm, (1,))
    CC = torch.ones((1, 1, 1), dtype=torch.float64)
    crown64 = alpha_crown(bm, pert, CC, bounds, iterations=0)
    with torch.no_grad():
        b32 = [(lb.float(), ub.float()) for lb, ub in bounds]
        crown32 = alpha_crown(twin, Box(pert.x_L.float(), pert.x_U.float()), CC.float(), b32, iterations=0)
    assert abs(float(crown32) - float(crown64)) > 1e3 * FAST_AGREEMENT * (1 + abs(float(crown64)))
    passes = []
    backward = twin._backward
    twin._backward = lambda *a, **k: passes.append(1) or backward(*a, **k)
    assert torch.equal(alpha_crown(bm, pert, CC, bounds, fast=twin), alpha_crown(bm, pert, CC, bounds))
    assert len(passes) == 1           # float32 CROWN, compared; no float32 iteration
    # the same net without the 1e8-sized pair: float32 agrees, and the iterations run on it (with the pair kept but no
    # longer offset, whether float32 still cancels it exactly depends on the order of the CPU's sums)
    with torch.no_grad():
        lin.weight[:2] = 1.0
        lin.bias[:2] = 1.0
    bm = BoundedModule(net, (1,))
    with torch.no_grad():
        bounds = bm.crown_intermediate(pert)
    twin = float32_twin(bm, (1,))
    passes.clear()
    backward = twin._backward
    twin._backward = lambda *a, **k: passes.append(1) or backward(*a, **k)
    alpha_crown(bm, pert, CC, bounds, fast=twin)
    assert len(passes) > 2
