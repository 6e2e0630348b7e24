"""models/denoisers.py: composition F(D(x)) as one classifier, Dual RS branch independence, the shape check,
checkpoints, and one-shot diffusion denoising's noise-level matching."""
import pytest
import torch
from torch import nn

from certkit.common.errors import CertkitError
from certkit.models.checkpoint import LoadedModel, load_model
from certkit.models.denoisers import (
    DenoisedDual,
    LoadedDenoiser,
    OneShotDiffusion,
    build_denoiser,
    compose,
    load_denoiser,
    save_denoiser,
)
from certkit.models.zoo import build_model, checkerboard_mask

from conftest import export_onnx

SHAPE = (1, 8, 8)


def _classifier(heads=1):
    torch.manual_seed(0)
    net = build_model("cnn", SHAPE, 10)
    if heads == 2:
        class TwoHeads(nn.Module):
            def __init__(self):
                super().__init__()
                self.a, self.b = build_model("mlp", SHAPE, 10), build_model("mlp", SHAPE, 10)

            def forward(self, x):
                return torch.stack([self.a(x), self.b(x)], 1)
        net = TwoHeads()
    return LoadedModel(net.eval(), SHAPE, 10, (0.0, 1.0), 0.25, "certkit", "f.pt", {})


def _denoiser(arch="dncnn", sigma=0.5):
    torch.manual_seed(1)
    return LoadedDenoiser(build_denoiser(arch, SHAPE).eval(), SHAPE, sigma, "certkit", "d.pt", {}, arch)


@pytest.mark.parametrize("arch", ["dncnn", "ae_dncnn"])
def test_composition_is_f_of_d(arch):
    f, d = _classifier(), _denoiser(arch)
    m = compose(d, f, SHAPE)
    x = torch.rand(5, *SHAPE)
    with torch.no_grad():
        assert torch.allclose(m.module(x), f.module(d.module(x)))
    assert m.train_sigma == 0.5 and m.source == "d.pt -> f.pt" and m.metadata["denoiser"]["arch"] == arch
    assert m.num_classes == 10 and m.input_shape == SHAPE


def test_denoised_dual_branches_see_only_their_half():
    m = compose(_denoiser(), _classifier(heads=2), SHAPE).module
    assert isinstance(m, DenoisedDual)
    x = torch.rand(4, *SHAPE)
    right = 1 - checkerboard_mask(SHAPE)
    x2 = x + right * torch.randn_like(x)  # change only the right half
    with torch.no_grad():
        a, b = m(x), m(x2)
    assert torch.equal(a[:, 0], b[:, 0])  # left branch unchanged: the denoiser never mixes the halves in
    assert not torch.allclose(a[:, 1], b[:, 1])


def test_shape_mismatch_is_one_line_naming_both_shapes():
    crop = LoadedDenoiser(nn.Sequential(nn.AvgPool2d(2)), None, None, "factory", "x:y")
    with pytest.raises(CertkitError) as e:
        compose(crop, _classifier(), SHAPE)
    assert "(1, 4, 4)" in str(e.value) and "(1, 8, 8)" in str(e.value) and "\n" not in str(e.value)
    flat = LoadedDenoiser(nn.Linear(3, 3), None, None, "factory", "x:y")
    with pytest.raises(CertkitError, match=r"\(1, 8, 8\)"):
        compose(flat, _classifier(), SHAPE)


def test_checkpoint_round_trip_and_misuse(tmp_path):
    d = _denoiser()
    path = tmp_path / "d.pt"
    save_denoiser(path, d.module, "dncnn", {}, SHAPE, metadata={"sigma": 0.5})
    back = load_denoiser(path)
    x = torch.rand(2, *SHAPE)
    with torch.no_grad():
        assert torch.equal(back.module(x), d.module(x))
    assert back.train_sigma == 0.5 and back.kind == "certkit"
    with pytest.raises(CertkitError, match="--denoiser"):
        load_model(path)  # a denoiser is not a classifier
    with pytest.raises(CertkitError, match="not a certkit denoiser"):
        load_denoiser(_save_classifier(tmp_path))


def _save_classifier(tmp_path):
    from certkit.models.checkpoint import save_checkpoint

    p = tmp_path / "f.pt"
    save_checkpoint(p, build_model("mlp", SHAPE, 10), "mlp", {}, SHAPE, 10)
    return p


def test_one_shot_diffusion_matches_the_noise_level_and_inverts_exactly():
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)  # DDPM's linear schedule
    abar = torch.cumprod(1 - betas, 0)
    for sigma in (0.12, 0.25, 0.5, 1.0):
        dn = OneShotDiffusion(lambda xt, t: torch.zeros_like(xt), abar, sigma)
        # x_t* = sqrt(abar)(2(x + delta) - 1): its noise std sqrt(abar) 2 sigma equals the diffusion's sqrt(1 - abar)
        # up to the grid of timesteps (consecutive abar differ by < 2%)
        assert (dn.abar ** 0.5 * 2 * sigma) == pytest.approx((1 - dn.abar) ** 0.5, rel=0.02)
    # a point-mass data distribution at x0 has the exact noise predictor eps = (x_t - sqrt(abar)(2 x0 - 1)) /
    # sqrt(1 - abar): one-shot denoising must return x0 from any noisy input (checks the [0,1] <-> [-1,1] maps)
    x0 = torch.rand(1, *SHAPE)
    dn = OneShotDiffusion(None, abar, 0.25)
    dn.eps_model = lambda xt, t: (xt - dn.abar ** 0.5 * (2 * x0 - 1)) / (1 - dn.abar) ** 0.5
    assert torch.allclose(dn(x0 + 0.25 * torch.randn(3, *SHAPE)), x0.expand(3, *SHAPE), atol=1e-5)
    with pytest.raises(CertkitError):
        OneShotDiffusion(None, abar, 0.0)


def blur_denoiser():
    """A factory for ``--denoiser test_denoisers:blur_denoiser`` (a 3x3 mean filter)."""
    conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    nn.init.constant_(conv.weight, 1 / 9)
    return conv


def test_onnx_and_factory_denoisers(tmp_path):
    d = _denoiser("ae_dncnn")
    path = tmp_path / "d.onnx"
    export_onnx(d.module, torch.rand(1, *SHAPE), path)
    o = load_denoiser(path)
    x = torch.rand(3, *SHAPE)
    with torch.no_grad():
        assert torch.allclose(o.module(x), d.module(x), atol=1e-5)
    assert o.kind == "onnx" and o.input_shape == SHAPE
    fac = load_denoiser("test_denoisers:blur_denoiser")
    m = compose(fac, _classifier(), SHAPE)
    with torch.no_grad():
        assert torch.allclose(m.module(x), _classifier().module(blur_denoiser()(x)))
    assert fac.kind == "factory" and m.train_sigma == 0.25  # no sigma recorded: the classifier's
