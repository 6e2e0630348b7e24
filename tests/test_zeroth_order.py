"""train/zeroth_order.py: the ZO estimates against autograd on a small white-box model."""
import pytest
import torch

from certkit.common.errors import CertkitError
from certkit.train.zeroth_order import zo_gradient, zo_queries, zo_surrogate


def _model():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 3)).double()
    y = torch.tensor([0, 1, 2, 1])
    f = lambda pts: torch.nn.functional.cross_entropy(
        net(pts.reshape(-1, 16)), y.repeat_interleave(pts.shape[1]), reduction="none").view(pts.shape[:2])
    z = torch.randn(4, 16, dtype=torch.float64, requires_grad=True)
    value = f(z.unsqueeze(1)).sum()
    (g,) = torch.autograd.grad(value, z)
    return f, z.detach(), g


def test_rge_error_falls_as_its_variance_predicts():
    # For mu -> 0 the RGE is (d/q) sum_j (u_j.g) u_j: unbiased, E||g_hat - g||^2 / ||g||^2 = (d - 1)/q (module
    # docstring). Mean over T = 300 estimates x 4 examples: the relative error of one draw has coefficient of
    # variation <= sqrt(2) (q = 1; less for larger q), so the mean's standard error is <= sqrt(2)/sqrt(1200) ~ 4%;
    # a 20% tolerance is > 4.5 standard errors (plus the O(mu^2) bias at mu = 1e-5, negligible in float64).
    f, z, g = _model()
    d = z.shape[1]
    gen = torch.Generator().manual_seed(1)
    for q in (1, 4, 16):
        errs = []
        for _ in range(300):
            est = zo_gradient(f, z, "rge", q, 1e-5, gen)
            errs.append(((est - g) ** 2).sum(1) / (g ** 2).sum(1))
        rel = float(torch.cat(errs).mean())
        assert abs(rel / ((d - 1) / q) - 1) < 0.2, (q, rel, (d - 1) / q)
    # and the average of many estimates converges to the gradient (unbiased)
    mean = torch.stack([zo_gradient(f, z, "rge", 16, 1e-5, gen) for _ in range(400)]).mean(0)
    assert float(((mean - g) ** 2).sum() / (g ** 2).sum()) < 5 * (d - 1) / (16 * 400)


def test_cge_error_is_first_order_in_mu():
    f, z, g = _model()
    errs = [float((zo_gradient(f, z, "cge", 0, mu) - g).abs().max()) for mu in (1e-2, 1e-3, 1e-4)]
    assert errs[0] < 1e-2
    assert 5 < errs[0] / errs[1] < 20 and 5 < errs[1] / errs[2] < 20  # forward differences: error ~ mu


def test_surrogate_has_the_loss_value_and_the_estimate_as_gradient():
    z = torch.randn(3, 5, requires_grad=True)
    g = torch.randn(3, 5)
    s = zo_surrogate(z, g, torch.tensor(2.5))
    assert float(s.detach()) == pytest.approx(2.5)
    s.backward()
    assert torch.allclose(z.grad, g / 3)


def test_queries_and_errors():
    assert zo_queries("rge", 64, 20) == 21 and zo_queries("cge", 64, 20) == 65
    f, z, _ = _model()
    with pytest.raises(CertkitError, match="estimator"):
        zo_gradient(f, z, "sge")
    with pytest.raises(CertkitError, match="mu"):
        zo_gradient(f, z, "rge", 4, 0.0)
    with pytest.raises(CertkitError, match="q >= 1"):
        zo_gradient(f, z, "rge", 0)
