"""verifiers/bounds/ops/softmax.py: softmax / log-softmax interval bounds are tight per output (attained at box
vertices) and contain sampled values; sound network bounds with a softmax output and in the middle of a network; the
functional forms; ONNX ``Softmax`` / ``LogSoftmax`` against onnxruntime."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from certkit.verifiers import BoundedModule, linf_ball
from certkit.verifiers.bounds.ops.softmax import softmax_interval

from relaxation_checks import check_network_bounds


@pytest.mark.parametrize("log", [False, True])
def test_interval_contains_samples_and_is_attained_at_vertices(log):
    gen = torch.Generator().manual_seed(0)
    c = torch.randn(50, 5, generator=gen, dtype=torch.float64) * 4
    w = torch.rand(50, 5, generator=gen, dtype=torch.float64) * 3
    l, u = c - w, c + w
    lo, hi = softmax_interval(l, u, 1, log)
    fn = (lambda z: F.log_softmax(z, 1)) if log else (lambda z: F.softmax(z, 1))
    z = l[:, None] + torch.rand((50, 2000, 5), generator=gen, dtype=torch.float64) * (u - l)[:, None]
    y = fn(z.reshape(-1, 5)).reshape(50, 2000, 5)
    assert (y >= lo[:, None]).all() and (y <= hi[:, None]).all()
    eye = torch.eye(5, dtype=torch.bool)
    for i in range(5):   # output i is smallest at (l_i, u_others) and largest at (u_i, l_others)
        low_vertex = torch.where(eye[i], l, u)
        high_vertex = torch.where(eye[i], u, l)
        assert torch.allclose(fn(low_vertex)[:, i], lo[:, i], rtol=1e-5, atol=1e-5)
        assert torch.allclose(fn(high_vertex)[:, i], hi[:, i], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("act", [nn.Softmax(dim=1), nn.LogSoftmax(dim=1)])
def test_network_bounds_contain_sampled_and_attacked_outputs(act):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 5), act).double().eval()
    check_network_bounds(net, 4)


def test_softmax_inside_a_network_and_functional_forms():
    class Attn(nn.Module):   # a softmax over tokens, then a linear read-out
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(6, 6), nn.Linear(6, 2)

        def forward(self, x):
            h = self.fc1(x).view(-1, 2, 3)
            return self.fc2(torch.softmax(h, -1).flatten(1) + x.log_softmax(1))

    torch.manual_seed(1)
    f = Attn().double().eval()
    x = torch.rand(3, 6, dtype=torch.float64)
    lb, ub = BoundedModule(f, (6,)).compute_bounds(linf_ball(x, 0.2, None), None, "CROWN")
    pts = x[:, None] + 0.2 * (2 * torch.rand((3, 1000, 6), dtype=torch.float64) - 1)
    y = f(pts.reshape(-1, 6)).detach().reshape(3, 1000, 2)
    assert (y >= lb[:, None] - 1e-9).all() and (y <= ub[:, None] + 1e-9).all()


def test_onnx_softmax_imports_and_bounds_contain_onnxruntime_outputs(tmp_path):
    from relaxation_checks import check_onnx_bounds

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 5), nn.Softmax(dim=1)).eval()
    check_onnx_bounds(net, 4, tmp_path / "softmax.onnx")
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 5), nn.LogSoftmax(dim=-1)).eval()
    check_onnx_bounds(net, 4, tmp_path / "logsoftmax.onnx")


def test_intervals_of_any_width_give_finite_bounds_that_hold():
    """IBP widths inside attention reach 1e7: the bounds stay finite, within [0, 1] (softmax) / <= 0 (log), and
    contain the outputs at sampled points, including the corners where one input dominates."""
    g = torch.Generator().manual_seed(0)
    for width in (1e-12, 1.0, 1e3, 1e7):
        c = torch.randn(4, 6, generator=g, dtype=torch.float64) * width
        l, u = c - width, c + width
        z = l + (u - l) * torch.rand((500, 4, 6), generator=g, dtype=torch.float64)
        z[:6] = torch.where(torch.eye(6, dtype=torch.bool)[:, None, :], u, l)   # one input up, the others down
        for log in (False, True):
            lo, hi = softmax_interval(l, u, -1, log)
            assert torch.isfinite(lo).all() and torch.isfinite(hi).all(), (width, log)
            y = torch.log_softmax(z, -1) if log else torch.softmax(z, -1)
            assert (y >= lo).all() and (y <= hi).all(), (width, log)


@pytest.mark.parametrize("family", ["lse", "reciprocal", "chosen"])
def test_linear_bounds_hold_on_the_box_and_beat_the_constants_somewhere(family):
    """Both families of lines and CROWN's per-output choice between them: lower line <= softmax <= upper line at
    sampled points and corners of boxes of several widths (wide ones fall back to the constants); on moderate boxes
    the lines are tighter than the constant bounds at some sampled points (they follow the input)."""
    from certkit.verifiers.bounds.ops import softmax as sm

    softmax_lines = {"lse": sm.softmax_lines_lse, "reciprocal": sm.softmax_lines_reciprocal,
                     "chosen": lambda l, u, d: sm.softmax_lines(l, u, d)[0]}[family]
    g = torch.Generator().manual_seed(1)
    tighter = 0
    for width in (0.0, 1e-6, 0.1, 1.0, 5.0, 40.0):
        c = torch.randn(3, 5, generator=g, dtype=torch.float64) * 2
        l, u = c - width, c + width
        z = l + (u - l) * torch.rand((400, 3, 5), generator=g, dtype=torch.float64)
        corners = torch.rand((64, 3, 5), generator=g) < 0.5
        z = torch.cat([z, torch.where(corners, u, l)])
        aL, cL, aU, cU = softmax_lines(l, u, -1)
        y = torch.softmax(z, -1)
        low = (aL * z.unsqueeze(-2)).sum(-1) + cL
        up = (aU * z.unsqueeze(-2)).sum(-1) + cU
        assert (low <= y).all() and (y <= up).all(), width
        lo_c, hi_c = softmax_interval(l, u, -1, log=False)
        tighter += int(((low > lo_c + 1e-9) | (up < hi_c - 1e-9)).any())
    assert tighter >= 2


def test_linear_bounds_close_in_quadratically_on_small_boxes():
    """The log-sum-exp tangent planes are taken at the box's middle: there the gap between each plane and softmax
    shrinks with the square of the box's width (the chords of exp and of exp(-t) are off by O(width^2))."""
    from certkit.verifiers.bounds.ops.softmax import softmax_lines_lse as softmax_lines

    g = torch.Generator().manual_seed(2)
    c = torch.randn(8, 6, generator=g, dtype=torch.float64) * 2
    gaps = []
    for width in (1e-1, 1e-2):
        aL, cL, aU, cU = softmax_lines(c - width, c + width, -1)
        y = torch.softmax(c, -1)
        low = (aL * c.unsqueeze(-2)).sum(-1) + cL
        up = (aU * c.unsqueeze(-2)).sum(-1) + cU
        gaps.append(max((y - low).max().item(), (up - y).max().item()))
    assert gaps[1] < gaps[0] / 30 and gaps[1] < 1e-3


def test_alpha_tangent_points_anywhere_in_the_box_give_sound_lines():
    """alpha-CROWN moves both tangent points (alpha 0 and 1: the box's corners l and u; random values between) and
    the weights of the log-sum-exp planes against the reciprocal's lines: every row's lines still bound softmax at
    sampled points and corners; alpha_init reproduces CROWN's lines."""
    from certkit.verifiers.bounds.ops.softmax import Softmax

    g = torch.Generator().manual_seed(4)
    op = Softmax(1)
    B, S, n = 3, 5, 6
    c = torch.randn(B, n, generator=g, dtype=torch.float64) * 2
    w = torch.rand(B, n, generator=g, dtype=torch.float64) * 2
    l, u = c - w, c + w
    init = op.alpha_init([(l, u)])
    crown = op.relaxation([(l, u)])
    same = op.relaxation([(l, u)], alpha=init.unsqueeze(2).expand(4, B, S, n))
    assert all(torch.allclose(a[:, None].expand_as(b), b) for a, b in zip(crown, same))
    alpha = torch.rand((4, B, S, n), generator=g, dtype=torch.float64)
    alpha[:, :, 0], alpha[:, :, 1] = 0.0, 1.0
    aL, cL, aU, cU = op.relaxation([(l, u)], alpha=alpha)                 # (B, S, n, n), (B, S, n)
    z = l + (u - l) * torch.rand((300, B, n), generator=g, dtype=torch.float64)
    z = torch.cat([z, torch.where(torch.rand((64, B, n), generator=g) < 0.5, u, l)])[:, :, None]   # (P, B, 1, n)
    y = torch.softmax(z, -1)
    assert ((aL * z.unsqueeze(-2)).sum(-1) + cL <= y).all() and (y <= (aU * z.unsqueeze(-2)).sum(-1) + cU).all()


def test_alpha_crown_through_a_softmax_is_sound_and_no_looser_than_crown():
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(4, 5), nn.Softmax(dim=1), nn.Linear(5, 3)).double()   # only the softmax has alphas
    x = torch.rand(4, 4, dtype=torch.float64)
    bm = BoundedModule(net.eval(), (4,))
    pert = linf_ball(x, 0.3, None)
    lb_c, ub_c = bm.compute_bounds(pert, None, "CROWN")
    with torch.enable_grad():
        lb_a, ub_a = bm.compute_bounds(pert, None, "alpha-CROWN")
    assert (lb_a >= lb_c - 1e-9).all() and (ub_a <= ub_c + 1e-9).all() and (lb_a > lb_c + 1e-6).any()
    pts = x[:, None] + 0.3 * (2 * torch.rand((4, 2000, 4), dtype=torch.float64) - 1)
    y = net(pts.reshape(-1, 4)).detach().reshape(4, 2000, 3)
    assert (y >= lb_a[:, None] - 1e-9).all() and (y <= ub_a[:, None] + 1e-9).all()
