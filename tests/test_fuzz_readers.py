"""Property-based tests (hypothesis, derandomized) of every reader of user files: VNN-LIB parser, ONNX importer,
npz / IDX / CIFAR-10 readers, checkpoint loader, and the parser of verifiers' result files.

The contract: any byte string gives either a valid result or a one-line CertkitError -- never another exception,
never a hang (a deadline per example), never a silent wrong parse (valid inputs round-trip exactly) -- and a
pickle that would run code is never executed without --allow-pickle.
"""
import contextlib
import gzip
import io
import os
import pickle
import random
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from certkit.common.errors import CertkitError
from certkit.verifiers.complete.vnncomp_format import RESULTS, InstanceResult, format_result, parse_result_text
from certkit.verifiers.complete.vnnlib import parse_vnnlib, parse_vnnlib_text

from conftest import export_onnx

FUZZ = settings(max_examples=120, deadline=3000, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
VALID_VNNLIB = """; a property
(declare-const X_0 Real)
(declare-const X_1 Real)
(declare-const Y_0 Real)
(declare-const Y_1 Real)
(assert (>= X_0 -0.5))
(assert (<= X_0 0.25))
(assert (<= X_1 1e-1))
(assert (>= X_1 -3))
(assert (or (and (<= Y_0 Y_1) (>= Y_1 0.5)) (and (< Y_1 -2))))
"""


def _mutate(data: bytes, seed: int, edits: int) -> bytes:
    """``edits`` random byte deletions, insertions, flips and duplications of slices of ``data``."""
    rnd = random.Random(seed)
    b = bytearray(data)
    for _ in range(edits):
        if not b:
            b = bytearray(rnd.randbytes(4))
        i = rnd.randrange(len(b))
        kind = rnd.randrange(4)
        if kind == 0:
            del b[i:i + rnd.randint(1, 8)]
        elif kind == 1:
            b[i:i] = rnd.randbytes(rnd.randint(1, 8))
        elif kind == 2:
            b[i] ^= 1 << rnd.randrange(8)
        else:
            j = rnd.randrange(len(b))
            b[j:j] = b[i:i + rnd.randint(1, 16)]
    return bytes(b)


def _one_line(e: CertkitError) -> None:
    assert str(e) and "\n" not in str(e).strip(), repr(str(e))


@contextlib.contextmanager
def _folder():
    """A fresh folder for one example, removed afterwards (hypothesis runs thousands of examples)."""
    with tempfile.TemporaryDirectory(prefix="certkit-fuzz-") as d:
        yield Path(d)


@contextlib.contextmanager
def _written(data: bytes, name: str):
    with _folder() as d:
        (d / name).write_bytes(data)
        yield d / name


# ------------------------------------------------------------------------------------------ VNN-LIB
@FUZZ
@given(st.binary(max_size=600))
def test_vnnlib_any_bytes_parse_or_clean_error(data):
    try:
        with _written(data, "p.vnnlib") as f:
            parse_vnnlib(f)
    except CertkitError as e:
        _one_line(e)


@FUZZ
@given(st.integers(0, 10**9), st.integers(1, 12))
def test_vnnlib_mutations_parse_or_clean_error(seed, edits):
    text = _mutate(VALID_VNNLIB.encode(), seed, edits).decode("latin-1")
    try:
        p = parse_vnnlib_text(text)
    except CertkitError as e:
        _one_line(e)
        return
    for t in p.terms:  # whatever parses is a well-formed property
        assert all(lo <= hi for lo, hi in zip(t.x_L_exact, t.x_U_exact)) and t.C.shape == (len(t.d), p.n_outputs)


_number = st.fractions(min_value=-1000, max_value=1000, max_denominator=1000)


@FUZZ
@given(st.lists(st.tuples(_number, _number), min_size=1, max_size=4),
       st.lists(st.tuples(st.sampled_from(["<=", ">="]), _number), min_size=1, max_size=3))
def test_vnnlib_valid_properties_round_trip_exactly(box, outs):
    """No silent wrong parse: the box comes back as the exact rationals of the decimals written, the output rows
    as written."""
    box = [(min(a, b), max(a, b)) for a, b in box]
    lines = [f"(declare-const X_{i} Real)" for i in range(len(box))] + ["(declare-const Y_0 Real)"]
    for i, (lo, hi) in enumerate(box):
        lines += [f"(assert (>= X_{i} {float(lo)!r}))", f"(assert (<= X_{i} {float(hi)!r}))"]
    lines += [f"(assert ({op} Y_0 {float(v)!r}))" for op, v in outs]
    p = parse_vnnlib_text("\n".join(lines))
    t = p.terms[0]
    assert t.x_L_exact == [Fraction(repr(float(lo))) for lo, _ in box]
    assert t.x_U_exact == [Fraction(repr(float(hi))) for _, hi in box]
    for row, d, (op, v) in zip(t.C, t.d, outs):  # Y_0 <= v -> Y_0 - v <= 0 ; Y_0 >= v -> -Y_0 + v <= 0
        sign = 1.0 if op == "<=" else -1.0
        assert row.tolist() == [sign] and d == sign * float(v)


# ------------------------------------------------------------------------------------------ result files
@FUZZ
@given(st.text(max_size=300))
def test_result_parser_never_raises_and_never_guesses(text):
    status, x, reason = parse_result_text(text)
    assert status in RESULTS
    first = next((ln.strip().lower() for ln in text.splitlines() if ln.strip()), "")
    if status in ("sat", "unsat"):  # a verdict only from an exact first token
        assert first in (status, {"sat": "violated", "unsat": "holds"}[status])


@FUZZ
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), min_size=1, max_size=6),
       st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), min_size=1, max_size=3))
def test_result_files_round_trip_witnesses_exactly(xs, ys):
    res = InstanceResult("sat", 0.0, x=np.array(xs, dtype=np.float32), y=np.array(ys, dtype=np.float32))
    status, x, reason = parse_result_text(format_result(res))
    assert status == "sat" and reason == "" and np.array_equal(x, np.array(xs, dtype=np.float32).astype(np.float64))


# ------------------------------------------------------------------------------------------ ONNX
@pytest.fixture(scope="module")
def onnx_bytes():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8, 3))
    return export_onnx(net, torch.rand(1, 1, 4, 4), io.BytesIO()).getvalue()


def _load_onnx_or_clean_error(data: bytes):
    from certkit.models.onnx_import import load_onnx

    try:
        with _written(data, "m.onnx") as f:
            m = load_onnx(f)
    except CertkitError as e:
        _one_line(e)
        return None
    assert m.module(torch.zeros((1,) + m.sample_shape)).shape[0] == 1
    return m


@FUZZ
@given(st.binary(max_size=400))
def test_onnx_any_bytes_import_or_clean_error(data):
    pytest.importorskip("onnx")
    _load_onnx_or_clean_error(data)


@settings(max_examples=150, deadline=5000, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 10**9), st.integers(1, 6))
def test_onnx_mutations_import_or_clean_error(onnx_bytes, seed, edits):
    _load_onnx_or_clean_error(_mutate(onnx_bytes, seed, edits))


# ------------------------------------------------------------------------------------------ data files
def _dataset_or_clean_error(name, path, split="test"):
    from certkit.datasets import load_dataset

    try:
        d = load_dataset(name, path, split)
    except CertkitError as e:
        _one_line(e)
        return None
    assert d.x.dtype == torch.float32 and float(d.x.min()) >= 0 and float(d.x.max()) <= 1 and len(d) == len(d.y)
    return d


def _npz_bytes(seed: int) -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(seed)
    np.savez(buf, x=rng.random((3, 1, 2, 2), dtype=np.float32), y=np.arange(3))
    return buf.getvalue()


@FUZZ
@given(st.binary(max_size=400) | st.builds(_mutate, st.just(_npz_bytes(0)), st.integers(0, 10**9), st.integers(1, 6)))
def test_npz_any_bytes_read_or_clean_error(data):
    with _written(data, "d.npz") as f:
        _dataset_or_clean_error("npz", f)


def _idx(shape, dtype_code=0x08) -> bytes:
    head = b"\x00\x00" + bytes([dtype_code, len(shape)]) + b"".join(int(s).to_bytes(4, "big") for s in shape)
    return head + bytes(int(np.prod(shape)))


@FUZZ
@given(st.binary(max_size=200) | st.builds(_mutate, st.just(_idx((2, 3, 3))), st.integers(0, 10**9),
                                              st.integers(1, 4)),
       st.binary(max_size=40) | st.builds(_mutate, st.just(_idx((2,))), st.integers(0, 10**9), st.integers(1, 3)),
       st.booleans())
def test_mnist_idx_any_bytes_read_or_clean_error(images, labels, gz):
    wrap = gzip.compress if gz else (lambda b: b)
    suffix = ".gz" if gz else ""
    with _folder() as d:
        (d / f"t10k-images-idx3-ubyte{suffix}").write_bytes(wrap(images))
        (d / f"t10k-labels-idx1-ubyte{suffix}").write_bytes(wrap(labels))
        _dataset_or_clean_error("mnist", d)


def _cifar_batch(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return pickle.dumps({b"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8), b"labels": [1, 2]}, protocol=2)


@FUZZ
@given(st.binary(max_size=300) | st.builds(_mutate, st.just(_cifar_batch(0)), st.integers(0, 10**9),
                                              st.integers(1, 6)))
def test_cifar_any_bytes_read_or_clean_error(data):
    with _folder() as d:
        (d / "test_batch").write_bytes(data)
        _dataset_or_clean_error("cifar10", d)


# ------------------------------------------------------------------------------------------ checkpoints
def _ckpt_bytes() -> bytes:
    from certkit.models import bundled_checkpoint_path

    return bundled_checkpoint_path().read_bytes()


@settings(max_examples=60, deadline=5000, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300) | st.builds(_mutate, st.just(_ckpt_bytes()), st.integers(0, 10**9),
                                              st.integers(1, 4)))
def test_checkpoint_any_bytes_load_or_clean_error(data):
    from certkit.models import load_model

    try:
        with _written(data, "m.pt") as f:
            m = load_model(f)
    except CertkitError as e:
        _one_line(e)
        return
    assert isinstance(m.module, torch.nn.Module)


class _Evil:
    """Unpickling this runs os.system: it writes a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_code_in_pickles_never_runs_without_allow_pickle(tmp_path):
    from certkit.models import load_model

    marker = tmp_path / "pwned"
    torch.save({"format": "certkit-checkpoint", "payload": _Evil(marker)}, tmp_path / "evil.pt")
    with pytest.raises(CertkitError, match="--allow-pickle"):
        load_model(tmp_path / "evil.pt")
    assert not marker.exists()
    (tmp_path / "cifar").mkdir()
    (tmp_path / "cifar" / "test_batch").write_bytes(pickle.dumps({b"data": _Evil(marker), b"labels": []}))
    assert _dataset_or_clean_error("cifar10", tmp_path / "cifar") is None and not marker.exists()
    with pytest.raises(CertkitError):  # with the flag it is loaded (and runs): the flag is the only gate
        load_model(tmp_path / "evil.pt", allow_pickle=True)
    assert marker.exists()
