"""Windowed (patch) backward bounds for convolutional layers: same CROWN bounds as dense rows, contain samples."""
import pytest
import torch
from torch import nn

from certkit.models.zoo import NormalizeLayer
from certkit.verifiers import BoundedModule, L2Ball, linf_ball
from certkit.verifiers.bounds import windows
from certkit.verifiers.bounds.windows import Window, plan


def _bn(n):
    bn = nn.BatchNorm2d(n)
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    bn.weight.data.uniform_(-1.5, 1.5)  # negative gamma too
    bn.bias.data.uniform_(-0.5, 0.5)
    return bn


class Skip(nn.Module):
    """A residual block in the middle: the windows branch at the Add and merge at its input."""

    def __init__(self, c):
        super().__init__()
        self.a, self.b = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return torch.relu(x + self.b(torch.relu(self.a(x))))


class SpatialConstants(nn.Module):
    """Constants that vary over W and over H between convolutions: they need the dense rule (a (W,) constant
    broadcast onto a window of width W would silently be wrong)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 3, 3, padding=1), nn.Conv2d(3, 2, 3, stride=2)
        self.register_buffer("cw", torch.linspace(0.5, 1.5, 9))
        self.register_buffer("ch", torch.linspace(-0.3, 0.3, 9).view(9, 1))

    def forward(self, x):
        h = torch.relu(self.a(x) + self.ch) * self.cw
        return torch.flatten(torch.relu(self.b(h)), 1)


class CatSkip(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1, stride=1)

    def forward(self, x):
        return torch.cat([x, torch.relu(self.conv(x))], dim=1)


class SubSkip(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=2, dilation=2)

    def forward(self, x):
        return self.conv(torch.relu(x)) - x


class Gan(nn.Module):
    """A small cGAN: a vector through Linear and transposed convolutions (stride 2, padding, output_padding,
    dilation) to an image, then strided convolutions (a discriminator): rows from the discriminator reach the
    transposed convolutions with strides they divide, rows from the generator do not (they turn dense)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(40, 4 * 3 * 3)         # 40 free inputs: no forward-mode rows (CROWN bounds all)
        self.g = nn.Sequential(
            nn.ConvTranspose2d(4, 4, 4, stride=2, padding=1), _bn(4), nn.ReLU(),                      # 3 -> 6
            nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),           # 6 -> 12
            nn.ConvTranspose2d(3, 2, 2, stride=1, dilation=2), nn.ReLU(),                            # 12 -> 14
            nn.Conv2d(2, 4, 4, stride=2, padding=1), nn.ReLU(),                                       # 14 -> 7
            nn.Conv2d(4, 4, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.LazyLinear(3))

    def forward(self, x):
        return self.g(torch.relu(self.fc(x.flatten(1))).view(-1, 4, 3, 3))


def _nets():
    torch.manual_seed(0)
    return {
        # stride, padding, BatchNorm with negative gamma, rectangular input, non-square kernel and stride
        "strided_bn": (nn.Sequential(
            NormalizeLayer([0.4, 0.6], [0.2, 0.3]), nn.Conv2d(2, 4, 3, padding=1), _bn(4), nn.ReLU(),
            nn.Conv2d(4, 6, (4, 3), stride=(2, 1), padding=(1, 1)), _bn(6), nn.ReLU(),
            nn.Conv2d(6, 5, 3, stride=2, padding=0), nn.ReLU(), nn.Flatten(), nn.LazyLinear(3)), (2, 14, 11)),
        # dilation and groups, sigmoid and tanh relaxations on windows
        "dilated_sigmoid": (nn.Sequential(
            nn.Conv2d(2, 4, 3, padding=2, dilation=2), nn.Sigmoid(), nn.Conv2d(4, 6, 3, padding=1, groups=2),
            nn.Tanh(), nn.Conv2d(6, 4, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.LazyLinear(3)), (2, 12, 12)),
        "spatial_constants": (nn.Sequential(SpatialConstants(), nn.LazyLinear(3)), (1, 9, 9)),
        "residual": (nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), Skip(3), nn.Conv2d(3, 4, 3, stride=2),
                                   nn.ReLU(), nn.Flatten(), nn.LazyLinear(3)), (1, 12, 12)),
        # concatenated skips (DenseNet style) and a residual Sub: the windows branch and merge
        "concat": (nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), CatSkip(3), nn.Conv2d(6, 4, 3, stride=2),
                                 nn.ReLU(), SubSkip(4), nn.Conv2d(4, 3, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(3)),
                   (1, 13, 12)),
        # max pooling between convolutions: disjoint and overlapping windows, padding
        "maxpool": (nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(3, 4, 3),
                                  nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1), nn.Conv2d(4, 3, 2), nn.ReLU(),
                                  nn.Flatten(), nn.LazyLinear(3)), (1, 14, 13)),
        "gan": (Gan(), (1, 5, 8)),
    }


def _bounds(net, shape, pert, windows):
    bm = BoundedModule(net, shape, conv_windows=windows)
    with torch.no_grad():
        return bm, bm.compute_bounds(pert, None, "CROWN")


@pytest.mark.parametrize("name", list(_nets()))
@pytest.mark.parametrize("norm,transfer_matrix", [("linf", True), ("l2", True), ("linf", False)])
def test_windowed_crown_equals_dense_and_contains_samples(name, norm, transfer_matrix, monkeypatch):
    if not transfer_matrix:  # windows through transposed convolutions instead of transfer matrices
        monkeypatch.setattr(windows, "MATMUL_FLOATS", 0)
    net, shape = _nets()[name]
    net(torch.zeros((1,) + shape))  # materialise LazyLinear
    net = net.double().eval()
    gen = torch.Generator().manual_seed(1)
    x = torch.rand((3,) + shape, generator=gen, dtype=torch.float64)
    pert = linf_ball(x, 0.05, None) if norm == "linf" else L2Ball(x, 0.3)
    bm, (lb_w, ub_w) = _bounds(net, shape, pert, True)
    _, (lb_d, ub_d) = _bounds(net, shape, pert, False)
    walked = [plan(bm.graph, i)[0] for i, n in enumerate(bm.graph.nodes) if len(n.shape) == 3 and i]
    assert any(any(rule == "conv" for _, rule in steps) for steps in walked), "no row went through a windowed conv"
    for kind in {"maxpool": ["maxpool"], "concat": ["concat", "sub"], "residual": ["add"], "gan": ["convt"]}.get(
            name, []):
        assert any(any(rule == kind for _, rule in steps) for steps in walked), f"no row went through {kind}"
    scale = 1 + lb_d.abs().max()
    assert torch.allclose(lb_w, lb_d, atol=1e-10 * scale, rtol=0) and torch.allclose(ub_w, ub_d, atol=1e-10 * scale)
    # and sound: sampled points of the set stay inside
    if norm == "linf":
        u = torch.rand((2000,) + x.shape, generator=gen, dtype=torch.float64)
        xs = pert.x_L + u * (pert.x_U - pert.x_L)
    else:
        d = torch.randn((2000,) + x.shape, generator=gen, dtype=torch.float64)
        d = d / d.flatten(2).norm(dim=-1)[..., None, None, None] * torch.rand((2000, 3, 1, 1, 1), generator=gen,
                                                                              dtype=torch.float64)
        xs = x + 0.3 * d
    with torch.no_grad():
        ys = net(xs.reshape((-1,) + shape)).reshape(2000, 3, -1)
    assert (ys >= lb_w - 1e-9).all() and (ys <= ub_w + 1e-9).all()


def test_window_gather_is_the_adjoint_of_dense():
    """sum(A_window * window of T) = sum(dense(A) * T) for windows reaching past every edge of the node."""
    gen = torch.Generator().manual_seed(0)
    B, S, C, H, W = 2, 5, 3, 7, 6
    A = torch.randn((B, S, C, 4, 5), generator=gen, dtype=torch.float64)
    pos = torch.randint(0, 4, (B, S, 2), generator=gen)
    win = Window(A, pos, (2, 2), (2, 3))                  # origins from -2/-3 to 4/3: past top, left, bottom, right
    T = torch.randn((B, C, H, W), generator=gen, dtype=torch.float64)
    lhs = (A * win.gather(T)).flatten(2).sum(-1)
    dense = win.dense((C, H, W))
    assert dense.shape == (B, S, C, H, W)
    rhs = (dense * T.unsqueeze(1)).flatten(2).sum(-1)
    assert torch.allclose(lhs, rhs, atol=1e-12)
    # the window really reaches outside: part of A is dropped by dense()
    assert dense.abs().sum() < A.abs().sum()
