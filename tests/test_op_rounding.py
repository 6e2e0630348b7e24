"""verifiers/bounds/ops/activation.py ``float32_units``: the rounding allowance of the smooth activations' lines
(sin and cos, convex, concave and S-shaped ones; not those with inflection points known to 1e-9: GELU, SiLU, odd
powers) is sized by the dtype the bounds are computed in. In float64 the lines of a narrow interval are as close as
the function's curvature allows (a float32-sized shift of 1e-6 kept them 2e-6 apart on every interval, however
small); in float32 the allowance is the one the ops were written with."""
import pytest
import torch

from certkit.verifiers.bounds.ops.activation import float32_units
from certkit.verifiers.bounds.ops.erf import Erf
from certkit.verifiers.bounds.ops.exp import Exp
from certkit.verifiers.bounds.ops.log import Log
from certkit.verifiers.bounds.ops.pow import EvenPower
from certkit.verifiers.bounds.ops.reciprocal import Reciprocal
from certkit.verifiers.bounds.ops.sigmoid import Sigmoid
from certkit.verifiers.bounds.ops.sincos import Cos, Sin
from certkit.verifiers.bounds.ops.sqrt import Sqrt
from certkit.verifiers.bounds.ops.tanh import Tanh

from relaxation_checks import assert_lines_bound, points

OPS = [Sin(), Cos(), Exp(), EvenPower(2), Reciprocal(), Log(), Sqrt(), Sigmoid(), Tanh(), Erf()]
CENTERS = [0.3, 1.7, 4.0]          # inside every op's domain (log, sqrt: positive inputs)


def narrow(dtype, half_width: float = 1e-7):
    c = torch.tensor(CENTERS, dtype=dtype)
    return c - half_width, c + half_width


def gap(op, l, u):
    """The largest distance between the upper and the lower line over a grid of each interval (float64)."""
    aL, cL, aU, cU = (t.double() for t in op.relax(l, u))
    z = points(l.double(), u.double(), 65)
    return float(((aU[:, None] * z + cU[:, None]) - (aL[:, None] * z + cL[:, None])).max())


def test_units_of_float32_and_float64():
    assert float32_units(torch.zeros(1)) == 1.0
    assert float32_units(torch.zeros(1, dtype=torch.float64)) == 2.0 ** -29


@pytest.mark.parametrize("op", OPS, ids=lambda op: op.name)
def test_float64_lines_of_a_narrow_interval_are_tight_and_sound(op):
    l, u = narrow(torch.float64)
    # |f''| <= 60 on these intervals (exp(4); 1 / z^3 at 0.3: 74): the relaxation's own gap is at most 74 (2e-7)^2
    assert gap(op, l, u) < 1e-11, op.name
    assert_lines_bound(op, l, u, op.relax(l, u), points(l, u))


@pytest.mark.parametrize("op", OPS, ids=lambda op: op.name)
def test_float32_lines_keep_the_float32_allowance(op):
    l, u = narrow(torch.float32, 1e-3)       # wider than 1e-5: below that, constant bounds (no division by the width)
    assert gap(op, l, u) >= 1e-6, op.name
