"""soundness_bench/unsound_verifiers.py: each synthetic bug does exactly its one wrong thing, and never leaks into sound
code nor into the registry of ``certkit verify`` (the verifier-contract test shows that each is caught on tiny
instances with known answers)."""
from fractions import Fraction

import numpy as np
import pytest
import torch
from torch import nn

from certkit.soundness_bench.unsound_verifiers import (
    HalfSlopeReLU,
    last_bound_property,
    lower_half_only,
    register_unsound_verifier,
    unsound_verifiers,
    with_half_slope_relu,
)
from certkit.verifiers.bounds.ibp_crown import BoundedModule
from certkit.verifiers.bounds.ops.relu import ReLU
from certkit.verifiers.bounds.perturbation import Box
from certkit.verifiers.complete.input_split import split_boxes
from certkit.verifiers.complete.registry import Verifier, verifiers
from certkit.verifiers.complete.vnnlib import Property, Term


def test_last_bound_pins_only_the_last_input():
    t = Term(x_L=np.array([0.0, -1.0, 2.0]), x_U=np.array([1.0, 1.0, 3.0]), C=np.zeros((0, 1)), d=np.zeros(0),
             strict=np.zeros(0, dtype=bool), x_L_exact=[Fraction(0), Fraction(-1), Fraction(2)],
             x_U_exact=[Fraction(1), Fraction(1), Fraction(3)])
    prop = Property(n_inputs=3, n_outputs=1, terms=[t])
    bad = last_bound_property(prop).terms[0]
    assert bad.x_U.tolist() == [1.0, 1.0, 2.0] and bad.x_U_exact == [Fraction(1), Fraction(1), Fraction(2)]
    assert bad.x_L.tolist() == t.x_L.tolist()


def test_half_slope_relu_is_wrong_and_the_shared_relu_untouched():
    l, u = torch.tensor([-1.0, 0.5, -2.0]), torch.tensor([1.0, 2.0, -0.5])
    sound = ReLU().relax(l, u)
    aL, cL, aU, cU = HalfSlopeReLU().relax(l, u)
    assert float(aU[0] * u[0] + cU[0]) < float(torch.relu(u[0]))  # below the ReLU at u: unsound
    assert aU[1] == sound[2][1] and aU[2] == sound[2][2]          # stable neurons untouched
    # only the graph handed to with_half_slope_relu changes: a second graph of the same network stays sound
    net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)).double()
    bad, good = BoundedModule(net, (2,)), BoundedModule(net, (2,))
    with_half_slope_relu(bad)
    assert any(type(n.op) is HalfSlopeReLU for n in bad.graph.nodes)
    assert not any(isinstance(n.op, HalfSlopeReLU) for n in good.graph.nodes)
    assert ReLU.relax is not HalfSlopeReLU.relax and ReLU.relax.__qualname__ == "ReLU.relax"
    pert = Box(-torch.ones(1, 2, dtype=torch.float64), torch.ones(1, 2, dtype=torch.float64))
    C = torch.ones(1, 1, 1, dtype=torch.float64)
    lb_good, _ = good.compute_bounds(pert, C, "CROWN")
    x = torch.rand(20000, 2, dtype=torch.float64) * 2 - 1
    assert float(net(x).detach().min()) >= float(lb_good[0, 0].detach()) - 1e-12   # the untouched graph is sound


def test_unsound_verifiers_have_their_own_registry():
    names = set(unsound_verifiers())
    assert {"bug-shrink-input", "bug-relu-slope", "bug-bab-drop"} <= names
    assert not names & set(verifiers())               # certkit verify --verifier never offers them

    class Sound(Verifier):
        name = "sound-one"

    with pytest.raises(ValueError, match="sound = True"):
        register_unsound_verifier(Sound)


def test_bab_drop_keeps_the_lower_half_and_bisect_covers_the_box():
    lo, hi = torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 2.0]])
    dim = torch.tensor([1])
    clo, chi = split_boxes(lo, hi, dim)
    assert clo.tolist() == [[0.0, 0.0], [0.0, 1.0]] and chi.tolist() == [[1.0, 1.0], [1.0, 2.0]]
    dlo, dhi = lower_half_only(lo, hi, dim)
    assert dlo.tolist() == [[0.0, 0.0]] and dhi.tolist() == [[1.0, 1.0]]
