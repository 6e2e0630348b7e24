"""alpha-CROWN's optimised intermediate bounds (verifiers/bounds/alpha_crown.py: optimize_intermediate): they contain
every
sampled and attacked pre-activation, lie inside CROWN's, and are strictly tighter somewhere on nets where CROWN is
loose."""
import pytest
import torch
from torch import nn

from certkit.verifiers import BoundedModule, linf_ball
from certkit.verifiers.attack import pgd_box
from certkit.verifiers.bounds.alpha_crown import optimize_intermediate


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


@pytest.mark.parametrize("name", list(nets()))
def test_optimised_intermediate_bounds_are_sound_and_inside_crowns(name):
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
    opt = optimize_intermediate(bm, pert, crown, iterations=20)
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
