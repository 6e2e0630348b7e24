"""soundness_bench/bugs.py: each synthetic bug does exactly its one wrong thing, and never leaks into sound code
(the verifier-contract test shows that each is caught on tiny instances with known answers)."""
from fractions import Fraction

import numpy as np
import torch

from certkit.soundness_bench.bugs import half_slope_relu, last_bound_property, lower_half_only
from certkit.verifiers.input_split import bisect
from certkit.verifiers.ops.relu import ReLU
from certkit.verifiers.vnnlib import Property, Term


def test_last_bound_pins_only_the_last_input():
    t = Term(x_L=np.array([0.0, -1.0, 2.0]), x_U=np.array([1.0, 1.0, 3.0]), C=np.zeros((0, 1)), d=np.zeros(0),
             strict=np.zeros(0, dtype=bool), x_L_exact=[Fraction(0), Fraction(-1), Fraction(2)],
             x_U_exact=[Fraction(1), Fraction(1), Fraction(3)])
    prop = Property(n_inputs=3, n_outputs=1, terms=[t])
    bad = last_bound_property(prop).terms[0]
    assert bad.x_U.tolist() == [1.0, 1.0, 2.0] and bad.x_U_exact == [Fraction(1), Fraction(1), Fraction(2)]
    assert bad.x_L.tolist() == t.x_L.tolist()


def test_half_slope_relu_is_wrong_inside_and_restored_after():
    relu = ReLU()
    l, u = torch.tensor([-1.0, 0.5, -2.0]), torch.tensor([1.0, 2.0, -0.5])
    sound = relu.relax(l, u)
    with half_slope_relu():
        aL, cL, aU, cU = relu.relax(l, u)
        assert float(aU[0] * u[0] + cU[0]) < float(torch.relu(u[0]))  # below the ReLU at u: unsound
        assert aU[1] == sound[2][1] and aU[2] == sound[2][2]          # stable neurons untouched
    assert all(torch.equal(a, b) for a, b in zip(relu.relax(l, u), sound))


def test_bab_drop_keeps_the_lower_half_and_bisect_covers_the_box():
    lo, hi = torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 2.0]])
    dim = torch.tensor([1])
    clo, chi = bisect(lo, hi, dim)
    assert clo.tolist() == [[0.0, 0.0], [0.0, 1.0]] and chi.tolist() == [[1.0, 1.0], [1.0, 2.0]]
    dlo, dhi = lower_half_only(lo, hi, dim)
    assert dlo.tolist() == [[0.0, 0.0]] and dhi.tolist() == [[1.0, 1.0]]
