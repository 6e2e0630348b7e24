"""train/losses.py fused_cross_entropy_upper (loss fusion, Xu et al. 2020): an upper bound of the cross-entropy over
the Linf ball (against sampled and PGD points), exact at eps = 0, and training with it through the harness."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from certkit.train.losses import fused_cross_entropy_upper, robust_cross_entropy_each
from certkit.verifiers import BoundedModule, linf_ball, margin_spec
from certkit.verifiers.attack import pgd_box


def _net(bn=False):
    torch.manual_seed(0)
    layers = [nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 16), nn.ReLU(),
              nn.Linear(16, 5)]
    return nn.Sequential(*layers).eval()


@pytest.mark.parametrize("eps", [0.01, 0.05, 0.2])
def test_fused_bound_contains_sampled_and_attacked_losses(eps):
    net = _net()
    bm = BoundedModule(net, (1, 6, 6))
    g = torch.Generator().manual_seed(1)
    x = torch.rand((6, 1, 6, 6), generator=g)
    y = torch.arange(6) % 5
    C = margin_spec(y, 5)
    pert = linf_ball(x, eps)
    lb_ibp, bounds = bm.ibp_margins(pert, C)
    upper = fused_cross_entropy_upper(bm, pert, C, bounds, net(x))
    assert upper.shape == (6,) and bool(torch.isfinite(upper).all())
    with torch.no_grad():
        lo, hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
        for _ in range(20):
            pts = lo + (hi - lo) * torch.rand(x.shape, generator=g)
            assert bool((F.cross_entropy(net(pts), y, reduction="none") <= upper + 1e-5).all())
    x_adv, _ = pgd_box(lambda v: -F.cross_entropy(net(v), y, reduction="none"), lo, hi, steps=30, restarts=2,
                       x_init=x, generator=g, early_stop=False)
    with torch.no_grad():
        assert bool((F.cross_entropy(net(x_adv), y, reduction="none") <= upper + 1e-5).all())


def test_fused_bound_is_exact_at_zero_radius_and_beats_ibp_at_small_radius():
    net = _net()
    bm = BoundedModule(net, (1, 6, 6))
    x = torch.rand((4, 1, 6, 6), generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 1, 2, 3])
    C = margin_spec(y, 5)
    pert = linf_ball(x, 0.0)
    _, bounds = bm.ibp_margins(pert, C)
    with torch.no_grad():
        clean = F.cross_entropy(net(x), y, reduction="none")
    assert torch.allclose(fused_cross_entropy_upper(bm, pert, C, bounds, net(x)), clean, atol=1e-5)
    pert = linf_ball(x, 0.002)
    lb_ibp, bounds = bm.ibp_margins(pert, C)
    fused = fused_cross_entropy_upper(bm, pert, C, bounds, net(x))
    assert bool((fused >= clean - 1e-6).all()) and bool((fused <= robust_cross_entropy_each(lb_ibp) + 1e-6).all())


def test_crown_ibp_trains_with_loss_fusion_by_default(cli, tmp_path):
    """crown-ibp resolves loss fusion to on (as auto_LiRPA's and Shi et al.'s training), --no-loss-fusion to the
    K - 1 margin rows; the checkpoint records the resolved value; other methods refuse --loss-fusion."""
    from certkit.models.checkpoint import load_checkpoint_file

    from conftest import assert_clean_error

    for flag, expected in (([], True), (["--no-loss-fusion"], False)):
        out = tmp_path / f"f{expected}.pt"
        r = cli("train", "--method", "crown-ibp", "--config", "none", *flag, "--arch", "cnn_a", "--eps", "0.1",
                "--epochs", "2", "--quiet", "--out", out)
        assert r.exit_code == 0, r.output
        assert load_checkpoint_file(out)["metadata"]["recipe"]["loss_fusion"] is expected
    assert_clean_error(cli("train", "--method", "ibp", "--loss-fusion", "--eps", "0.1", "--out", tmp_path / "i.pt"),
                       "crown-ibp")


def test_crown_ibp_recipes_pin_the_margin_bounds():
    """The recipes behind the README's CROWN-IBP rows and the papers' runs keep K - 1 margin rows whatever the
    default; every CROWN-IBP recipe states its choice (the Fashion-MNIST ones were measured with loss fusion)."""
    from certkit.train.recipe import load_recipe, shipped_recipes

    crown = [n for n in shipped_recipes() if load_recipe(n).get("method") == "crown-ibp"]
    assert len(crown) == 6 and all("loss_fusion" in load_recipe(n) for n in crown)
    assert all(load_recipe(n)["loss_fusion"] is (n.startswith("fmnist_")) for n in crown)
