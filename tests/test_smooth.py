"""certify/smooth.py (Cohen et al.'s ``Smooth`` interface), the smoothing methods called on a module, PREDICT's
Prediction, and the layouts the Python API accepts or refuses with one line."""
from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import norm
from torch import nn

import certkit
from certkit.certify import ABSTAIN, Certificate, GaussianSmoothing, Prediction, Smooth
from certkit.certify.sampling import input_generator
from certkit.common.errors import CertkitError


def halfplane() -> nn.Module:
    """f(x) = [x_0 > 0] on 1 x 2 x 2 inputs: P(f(x + e) = 1) = Phi(x_0 / sigma), so g's exact radius is |x_0|."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([[-1.0, 0, 0, 0], [1.0, 0, 0, 0]]))
    return net


def test_certify_one_input_and_a_batch_agree_and_reproduce():
    smooth = Smooth(halfplane(), num_classes=2, sigma=0.5)
    x = torch.zeros(5, 1, 2, 2)
    x[:, 0, 0, 0] = torch.tensor([0.4, -0.6, 0.05, 0.9, -0.2])
    batch = smooth.certify(x, n0=50, n=2000, alpha=0.001, batch_size=500)
    assert isinstance(batch, list) and len(batch) == 5 and all(isinstance(c, Certificate) for c in batch)
    for i in range(5):
        one = smooth.certify(x[i], n0=50, n=2000, alpha=0.001, batch_size=500)
        assert one == batch[i] and one.samples == 2050                       # seeded by the input's values
        prediction, radius = one                                               # core.py's (prediction, radius)
        assert (prediction, radius) == (one.prediction, one.radius)
        # sound: the certified radius never exceeds the exact one (|x_0|) on the true side (alpha = 0.001: a
        # failure here has probability <= 0.001 per input, and the seed is fixed)
        if prediction != ABSTAIN:
            assert prediction == int(x[i, 0, 0, 0] > 0) and radius <= abs(float(x[i, 0, 0, 0])) + 1e-12
    assert Smooth(halfplane(), 2, 0.5, seed=1).certify(x, n0=50, n=2000) != batch       # another seed, other noise
    # the radius follows sigma PhiInv(pA_lower) for the Clopper-Pearson bound of the counted nA
    c = batch[3]
    assert c.radius == pytest.approx(0.5 * norm.ppf(c.pA_lower), abs=1e-12) and c.nA <= 2000


def test_fresh_noise_with_seed_none():
    smooth = Smooth(halfplane(), 2, sigma=0.5, seed=None)
    x = torch.zeros(1, 2, 2)                       # on the boundary: nA ~ Binomial(200, 1/2)
    counts = {smooth.certify(x, n0=10, n=200).nA for _ in range(6)}
    assert len(counts) > 1                         # six equal draws: probability < 1e-5


def test_idx_uses_the_noise_of_the_command_line_rows(tmp_path):
    from certkit.runs.certify import CertifyConfig, run_certify

    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    torch.manual_seed(0)
    rows, _ = run_certify(CertifyConfig(model=net, sigma=0.25, n0=20, n=300, batch=100, max_inputs=4,
                                        out=str(tmp_path / "r.tsv"), quiet=True))
    data = certkit.load_dataset("digits", split="test")
    certs = Smooth(net, 10, 0.25).certify(data.x[:4], n0=20, n=300, batch_size=100, idx=[0, 1, 2, 3])
    assert [int(r["predict"]) for r in rows] == [c.prediction for c in certs]
    assert [float(r["radius"]) for r in rows] == pytest.approx([c.radius for c in certs], abs=1e-9)


def test_predict_returns_an_int_with_its_evidence():
    smooth = Smooth(halfplane(), 2, sigma=0.5)
    x = torch.zeros(2, 1, 2, 2)
    x[0, 0, 0, 0], x[1, 0, 0, 0] = 2.0, 0.0
    sure, tie = smooth.predict(x, n=400, alpha=0.001)
    assert isinstance(sure, Prediction) and isinstance(sure, int) and sure == 1 and str(sure) == "1"
    assert sure.nA + sure.nB == 400 and sure.p_value <= 0.001 and sure.samples == 400
    # on the boundary the two counts are close: a tie is not rejected unless |nA - 200| is large (p <= 0.001)
    assert tie == ABSTAIN or tie.p_value <= 0.001
    assert "p_value" in repr(sure)


def test_methods_take_a_module_and_sigma_and_seed_themselves():
    g = GaussianSmoothing(halfplane(), sigma=0.5)
    x = torch.zeros(1, 2, 2)
    x[0, 0, 0] = 1.0
    a, b = g.certify(x, 20, 500, 0.01), g.certify(x, 20, 500, 0.01)
    assert a == b and a.prediction == 1 and a.samples == 520
    with pytest.raises(CertkitError, match="sigma is required"):
        GaussianSmoothing(halfplane())
    with pytest.raises(CertkitError, match="ONE input"):
        g.certify(torch.zeros(3, 1, 2, 2), 20, 500, 0.01)        # a batch: one line, not a layer's message
    with pytest.raises(CertkitError, match="nn.Module"):
        GaussianSmoothing("not a model", sigma=0.5)
    from certkit.certify.smoothing.lvm import LVMSmoothing

    lvm = LVMSmoothing(halfplane(), map_name="softmax", t=1.0, sigma=0.5)   # records its samples too
    assert lvm.certify(x, 20, 100, 0.01).samples == 120


@pytest.mark.parametrize("bad, words", [
    (torch.zeros(3, 5), "1 x 2 x 2 or a batch N x 1 x 2 x 2, got 3 x 5"),
    (torch.zeros(2, 2), "1 x 2 x 2"),
    ("text", "tensor"),
])
def test_layouts_refused_in_one_line(bad, words):
    smooth = Smooth(halfplane(), 2, sigma=0.5, input_shape=(1, 2, 2))
    with pytest.raises(CertkitError, match=words.replace("(", r"\(").replace(")", r"\)")) as e:
        smooth.certify(bad, n=10)
    assert "\n" not in str(e.value)


def test_layout_inferred_without_input_shape_and_width_checked():
    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 6 * 6, 3))
    smooth = Smooth(conv, num_classes=3, sigma=0.25)
    one = smooth.certify(torch.rand(1, 8, 8), n0=10, n=50)
    assert isinstance(one, Certificate) and smooth.input_shape == (1, 8, 8)
    assert len(smooth.certify(torch.rand(4, 1, 8, 8), n0=10, n=50)) == 4
    with pytest.raises(CertkitError, match="neither as one input nor as a batch"):
        Smooth(conv, 3, 0.25).certify(torch.rand(5, 5), n=10)
    with pytest.raises(CertkitError, match="returns 3 logits per input, num_classes is 10"):
        Smooth(conv, num_classes=10, sigma=0.25).certify(torch.rand(1, 8, 8), n=10)
    with pytest.raises(CertkitError, match="batch_size"):
        smooth.certify(torch.rand(1, 8, 8), n=10, batch_size=0)
    with pytest.raises(CertkitError, match="idx"):
        smooth.certify(torch.rand(2, 1, 8, 8), n=10, idx=[0])


def test_smooth_from_a_checkpoint_takes_its_sigma_and_shape():
    smooth = Smooth("bundled")
    assert smooth.sigma == 0.25 and smooth.input_shape == (1, 8, 8) and smooth.num_classes == 10
    assert math.isfinite(smooth.certify(torch.full((1, 8, 8), 0.5), n0=10, n=100).pA_lower)


def test_input_generators_differ_by_index():
    a = torch.randn(3, generator=input_generator(0, 1, torch.device("cpu")))
    b = torch.randn(3, generator=input_generator(0, 2, torch.device("cpu")))
    assert not torch.equal(a, b)
