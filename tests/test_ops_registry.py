"""The op registry (verifiers/bounds/ops/base.py): what the graph builder and the ONNX importer rely on."""
from pathlib import Path

import pytest
from torch import nn

from certkit.models.onnx_import import SUPPORTED_OPS
from certkit.verifiers.bounds import ops
from certkit.verifiers.bounds.ops.activation import Activation


def _concrete_activations():
    out, todo = [], list(Activation.__subclasses__())
    while todo:
        c = todo.pop()
        todo.extend(c.__subclasses__())
        if any(e.factory == c.from_call for e in ops.registered_ops()):
            out.append(c)
    return out


def test_every_declared_onnx_type_is_imported_by_the_onnx_importer():
    assert set(ops.onnx_op_types()) <= set(SUPPORTED_OPS)


def test_every_registered_activation_has_its_own_relaxation_test_file():
    """One op = one file in verifiers/ops + one tests/test_op_<file>.py that runs relaxation_checks on it."""
    tests = Path(__file__).parent
    acts = _concrete_activations()
    assert {a.__name__ for a in acts} >= {"ReLU", "Sigmoid", "Tanh"}
    for cls in acts:
        stem = cls.__module__.rsplit(".", 1)[1]
        path = tests / f"test_op_{stem}.py"
        assert path.is_file(), f"{cls.__name__} ({cls.__module__}) has no {path.name}"
        assert "check_activation" in path.read_text(), f"{path.name} does not run the relaxation checks"


def test_registering_a_module_twice_is_refused():
    class Twice(nn.Module):
        pass

    first = ops.register_op(modules=(Twice,))(type("First", (ops.Op,), {}))
    try:
        with pytest.raises(ValueError, match="already bound"):
            ops.register_op(modules=(Twice,))(type("Second", (ops.Op,), {}))
    finally:
        ops.unregister_op(first)
    assert ops.entry_for_module(Twice()) is None and all(e.name != "First" for e in ops.registered_ops())


def test_unregistered_layers_are_listed_by_the_pre_flight_check():
    from certkit.verifiers import check_model

    net = nn.Sequential(nn.Linear(4, 4), nn.Mish(), nn.Linear(4, 2), nn.Softsign())
    problems = check_model(net, (4,))
    assert len(problems) == 2 and "Mish" in problems[0] and "Softsign" in problems[1]
    assert check_model(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)), (4,)) == []
