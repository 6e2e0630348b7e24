"""Generator pieces of the soundness benchmark that need no training: the paper's architectures, the exact folding
of the training input scale, and certkit's pocket loss (soundness_bench/generate.py, archs.py)."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from certkit.soundness_bench import archs
from certkit.soundness_bench.generate import PlantedData, config_with_preset, make_data, pocket_loss, pocket_points


def _layers(model, kind):
    return [m for m in model if isinstance(m, kind)]


def test_architectures_match_the_paper_table():
    # MLP 4 Hidden: FC100, FC1000 x3, FC20, FC2; MLP 5 Hidden: FC100, FC1000 x4, FC20, FC2 (paper Table / README).
    for arch, wide in (("mlp_4_hidden", 3), ("mlp_5_hidden", 4)):
        outs = [m.out_features for m in _layers(archs.build(arch, (10,), 1000), nn.Linear)]
        assert outs == [100] + [1000] * wide + [20, 2]
    convs = _layers(archs.build("cnn_3_conv", (1, 5, 5), 1000), nn.Conv2d)
    assert [c.out_channels for c in convs] == [5, 10, 20] and all(c.kernel_size == (3, 3) for c in convs)
    # Tanh / Sigmoid CNNs: 5x5 stride-2 conv on 1 channel, the 1-conv 3x3 layout on 3 channels (their models/).
    assert _layers(archs.build("cnn_tanh", (1, 5, 5), 50), nn.Conv2d)[0].stride == (2, 2)
    c3 = _layers(archs.build("cnn_sigmoid", (3, 5, 5), 50), nn.Conv2d)[0]
    assert c3.stride == (1, 1) and c3.kernel_size == (3, 3)
    assert _layers(archs.build("cnn_sigmoid", (3, 5, 5), 50), nn.Sigmoid)
    for arch in archs.FAMILIES:
        shape = archs.input_shape_for(arch, 3)
        assert archs.build(arch, shape, 30)(torch.zeros((4,) + shape)).shape == (4, 2)


@pytest.mark.parametrize("arch", ["mlp_4_hidden", "cnn_1_conv", "cnn_tanh"])
def test_fold_input_scale_is_exact(arch):
    torch.manual_seed(0)
    shape = archs.input_shape_for(arch, 1)
    wrapped = nn.Sequential(archs.InputScale(10.0), archs.build(arch, shape, 40)).double()
    x = (torch.rand((64,) + shape, dtype=torch.float64) * 2 - 1) * 0.1
    before = wrapped(x)
    folded = archs.fold_input_scale(wrapped)
    assert not any(isinstance(m, archs.InputScale) for m in folded.modules())
    torch.testing.assert_close(folded(x), before, rtol=1e-12, atol=1e-12)  # zero padding included (CNNs)


def _data(arch="cnn_1_conv", eps=0.5, seed=2):
    cfg = config_with_preset("cpu", out="unused", arch=arch, eps_rel=eps, seed=seed)
    return cfg, make_data(cfg)


def test_pocket_points_lie_in_the_corner_of_each_box():
    cfg, d = _data()
    P, eps = d.n_planted, cfg.eps_abs
    p = pocket_points(d, eps, cfg.pocket_radius, 50, torch.Generator().manual_seed(0))
    assert p.shape == (50, P) + d.x.shape[1:]
    assert bool((p >= d.lo[:P][None]).all() and (p <= d.hi[:P][None]).all())
    dist = (p - d.x_cex[None]).flatten(2).abs().amax(2)
    width = (d.hi[:P] - d.lo[:P]).flatten(1).amin(1)[None]
    assert bool((dist >= torch.minimum(torch.full_like(dist, cfg.pocket_radius * eps), width) - 1e-9).all())
    assert bool((dist <= 2 * eps + 1e-9).all())


class _LinearMargin(nn.Module):
    """2-class logits whose margin z_y - z_{1-y} is c + a * (inward distance from x_cex), per planted pair."""

    def __init__(self, d: PlantedData, c: float, a: float):
        super().__init__()
        self.d, self.c, self.a = d, c, a

    def forward(self, x):
        P = self.d.n_planted
        inward = torch.where(self.d.x_cex == self.d.hi[:P], -1.0, 1.0)
        k = x.shape[0] // P  # pocket_loss stacks (samples, P) points, pair index fastest
        dist = ((x.view((k, P) + x.shape[1:]) - self.d.x_cex[None]) * inward[None]).flatten(2).sum(2).flatten()
        m = self.c + self.a * dist
        yv = self.d.y[:P].repeat(k)
        z = torch.zeros(x.shape[0], 2)
        return z.scatter(1, yv[:, None], m[:, None])


def test_pocket_loss_rewards_a_margin_rising_toward_the_planted_vertex():
    cfg, d = _data()
    gen = torch.Generator().manual_seed(1)
    flat = pocket_loss(_LinearMargin(d, c=cfg.pocket_margin + 0.5, a=0.0), d, cfg, gen)
    max_dist = d.x[0].numel() * 2 * cfg.eps_abs  # largest inward L1 distance inside a box
    rising = pocket_loss(_LinearMargin(d, c=cfg.pocket_margin + 50.0 * max_dist, a=-50.0), d, cfg, gen)
    funnel = pocket_loss(_LinearMargin(d, c=cfg.pocket_margin + 0.5, a=50.0), d, cfg, gen)
    assert float(flat) == 0.0 and float(rising) == 0.0  # margin >= pocket_margin and never falling toward x_cex
    assert float(funnel) > 0.0  # the paper's failure mode: margin sloping down to x_cex
    low = pocket_loss(_LinearMargin(d, c=cfg.pocket_margin - 0.5, a=0.0), d, cfg, gen)
    assert float(low) == pytest.approx(0.5)


def test_interrupted_training_resumes_to_the_same_model(tmp_path, monkeypatch):
    import importlib

    gen_mod = importlib.import_module("certkit.soundness_bench.generate")
    from certkit.common.errors import CertkitError

    def cfg(out):
        return config_with_preset("cpu", out=str(out), arch="cnn_1_conv", eps_rel=0.5, seed=4, width=16, epochs=30,
                                  attack_iters=3, attack_restarts=2, attack_vertex_starts=0.5, check_every=10,
                                  n_planted=2, n_regular=1, steps_per_epoch=2, sweep=((0.25, 0),))

    c_full = cfg(tmp_path / "full")
    full, _ = gen_mod.train_model(c_full, make_data(c_full), quiet=True)

    c_cut = cfg(tmp_path / "cut")
    real, calls = gen_mod.pgd_search, {"n": 0}

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == 30:  # in epoch 15 (uniform and vertex starts: 2 calls each), after the check at 10 saved
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(gen_mod, "pgd_search", dying)
    with pytest.raises(KeyboardInterrupt):
        gen_mod.train_model(c_cut, make_data(c_cut), quiet=True)
    monkeypatch.setattr(gen_mod, "pgd_search", real)
    with pytest.raises(CertkitError, match="--resume"):
        gen_mod.train_model(c_cut, make_data(c_cut), quiet=True)
    resumed, _ = gen_mod.train_model(c_cut, make_data(c_cut), resume=True, quiet=True)
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)


def test_odi_search_reaches_the_closed_form_minimum_inside_each_box():
    # 2-class linear model: margin z_y - z_{1-y} = +-(w . x + b); its minimum over a box is at the vertex opposite
    # to the margin's gradient signs, in closed form.
    from certkit.soundness_bench.hide import odi_search

    torch.manual_seed(0)
    lin = nn.Linear(6, 2).double()
    lo = (torch.rand(3, 6, dtype=torch.float64) - 0.5) * 0.2
    hi = lo + 0.04
    y = torch.tensor([0, 1, 0])
    x_best, m_best = odi_search(lin, y, lo, hi, restarts=8, iters=20, generator=torch.Generator().manual_seed(1))
    assert bool((x_best >= lo).all() and (x_best <= hi).all())
    W, b = lin.weight.detach(), lin.bias.detach()
    for i in range(3):
        w = W[y[i]] - W[1 - y[i]]
        exact = float(torch.where(w > 0, lo[i], hi[i]) @ w + b[y[i]] - b[1 - y[i]])
        assert float(m_best[i]) == pytest.approx(exact, abs=1e-12)
        with torch.no_grad():
            z = lin(x_best[i:i + 1])[0]
        assert float(m_best[i]) == pytest.approx(float(z[y[i]] - z[1 - y[i]]), abs=1e-12)


def test_cpu_preset_adapts_to_family_and_radius_and_explicit_options_win():
    from certkit.soundness_bench.generate import LARGE_EPS_REL, PRESETS

    def cfg(**kw):
        return config_with_preset("cpu", out="unused", **kw)

    base = PRESETS["cpu"]
    relu_small, relu_large = cfg(arch="cnn_1_conv", eps_rel=0.2), cfg(arch="cnn_1_conv", eps_rel=0.5)
    assert relu_small.attack_restarts == base["attack_restarts"] < relu_large.attack_restarts
    assert cfg(arch="cnn_1_conv", eps_rel=LARGE_EPS_REL).attack_restarts == base["attack_restarts"]
    assert {k for k, v in vars(relu_large).items() if vars(relu_small)[k] != v} == {"eps_rel", "attack_restarts"}
    for arch in ("cnn_tanh", "cnn_sigmoid"):  # smooth activations train longer at a larger learning rate
        small, large = cfg(arch=arch, eps_rel=0.2), cfg(arch=arch, eps_rel=0.5)
        assert small.lr > relu_small.lr and small.epochs > relu_small.epochs
        assert small.attack_restarts == base["attack_restarts"] < large.attack_restarts
    assert cfg(arch="mlp_4_hidden").attack_restarts == base["attack_restarts"]  # the default eps_rel is 0.2
    assert cfg(arch="cnn_sigmoid", eps_rel=0.5, attack_restarts=7, lr=0.5).attack_restarts == 7
    assert cfg(arch="cnn_sigmoid", eps_rel=0.5, lr=0.5).lr == 0.5
    paper = config_with_preset("paper", out="unused", arch="cnn_sigmoid", eps_rel=0.5)
    assert (paper.attack_restarts, paper.lr, paper.epochs) == (PRESETS["paper"]["attack_restarts"], 1e-3, 10000)


def test_a_benchmark_without_planted_instances_ends_with_a_warning(cli, tmp_path, monkeypatch):
    """A generation that plants nothing says so, and what to change, instead of one easily missed count."""
    import importlib

    generate_module = importlib.import_module("certkit.soundness_bench.generate")  # the package shadows the name

    summary = {"valid_pairs": 10, "planted_pairs": 10, "survive_sweep": 3, "hidden": 0, "planted_instances": 0,
               "regular_instances": 10, "instances": 10, "not_confirmed": 0, "seconds_total": 1.0,
               "seconds_train": 0.5, "seconds_hiddenness": 0.5}
    monkeypatch.setattr(generate_module, "generate", lambda cfg, resume=False, quiet=False: summary)
    r = cli("soundness", "generate", "--out", tmp_path / "b", "--preset", "cpu", "--quiet")
    assert r.exit_code == 0, r.output
    assert "NO planted instance" in r.output and "--attack-restarts" in r.output
    monkeypatch.setattr(generate_module, "generate",
                        lambda cfg, resume=False, quiet=False: {**summary, "valid_pairs": 0, "survive_sweep": 0})
    r = cli("soundness", "generate", "--out", tmp_path / "c", "--preset", "cpu", "--quiet")
    assert "NO planted instance" in r.output and "never fitted" in r.output
