"""Shared fixtures: tiny datasets in every supported file format, tiny models, and a CLI runner."""
from __future__ import annotations

import gzip
import io
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

DATA = Path(__file__).parent / "data"


def write_idx(path: Path, arr: np.ndarray, gz: bool) -> None:
    header = b"\x00\x00\x08" + bytes([arr.ndim]) + b"".join(struct.pack(">I", s) for s in arr.shape)
    raw = header + arr.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)


@pytest.fixture
def mnist_dir(tmp_path) -> Path:
    """Tiny MNIST in IDX format: 12 train (gzipped) and 6 test (raw) images of 28x28."""
    rng = np.random.default_rng(0)
    d = tmp_path / "mnist"
    d.mkdir()
    write_idx(d / "train-images-idx3-ubyte", rng.integers(0, 256, (12, 28, 28)), gz=True)
    write_idx(d / "train-labels-idx1-ubyte", rng.integers(0, 10, 12), gz=True)
    write_idx(d / "t10k-images-idx3-ubyte", rng.integers(0, 256, (6, 28, 28)), gz=False)
    write_idx(d / "t10k-labels-idx1-ubyte", np.arange(6) % 10, gz=False)
    return d


@pytest.fixture
def cifar_dir(tmp_path) -> Path:
    """Tiny CIFAR-10 python batches (cifar-10-batches-py layout), 4 images per batch."""
    rng = np.random.default_rng(1)
    d = tmp_path / "cifar" / "cifar-10-batches-py"
    d.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"batch_label": name.encode(), b"labels": [int(v) for v in rng.integers(0, 10, 4)],
                 b"data": rng.integers(0, 256, (4, 3072)).astype(np.uint8),
                 b"filenames": [b"x.png"] * 4}
        with open(d / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    return tmp_path / "cifar"


@pytest.fixture
def npz_file(tmp_path) -> Path:
    """20 vectors of 5 features in [0,1], 3 classes."""
    rng = np.random.default_rng(2)
    p = tmp_path / "data.npz"
    np.savez(p, x=rng.random((20, 5)).astype(np.float32), y=np.arange(20) % 3)
    return p


@pytest.fixture
def cli():
    """Run ``certkit ARGS`` in-process; returns click's Result (exit_code, output)."""
    from certkit.cli import main

    runner = CliRunner()

    def run(*args):
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=True)
    return run


def export_onnx(net: torch.nn.Module, example: torch.Tensor, path, **kwargs):
    """The one ONNX export of the tests: ``net`` as opset 13 with input name ``x`` (torch's TorchScript exporter),
    written to ``path`` (a file path or a binary buffer); returns ``path``.

    Skips the test when the ``onnx`` package is absent (the ``test`` extra installs it); an exporter failure FAILS it,
    so that a regression in what certkit exports or imports cannot hide behind a skip.
    """
    pytest.importorskip("onnx")
    torch.onnx.export(net, (example,), path if isinstance(path, io.IOBase) else str(path), dynamo=False,
                      input_names=["x"], opset_version=13, **kwargs)
    return path


def assert_certify_rows(tsv, n_inputs: int, method: str | None = None):
    """A finished certify run: ``n_inputs`` rows in the TSV, every abstention (predict -1) with radius 0 and every
    certified row with a finite radius >= 0, correct = (predict == label), and a summary JSON beside it that agrees
    (method, number of inputs, certified accuracy at radius 0). Returns the rows."""
    import csv
    import json
    import math

    rows = list(csv.DictReader(open(tsv), delimiter="\t"))
    assert len(rows) == n_inputs, rows
    for r in rows:
        radius, predict = float(r["radius"]), int(r["predict"])
        assert math.isfinite(radius) and radius >= 0, r
        assert predict != -1 or radius == 0, r
        assert int(r["correct"]) == int(predict == int(r["label"])), r
    summary = json.loads(Path(tsv).with_suffix(".summary.json").read_text())
    assert summary["n_inputs"] == n_inputs
    if method is not None:
        assert summary["method"] == method
    acc0 = sum(int(r["correct"]) for r in rows) / n_inputs
    at_zero = {float(k): v for k, v in summary["certified_accuracy"].items()}[0.0]
    assert at_zero == pytest.approx(acc0), summary["certified_accuracy"]
    return rows


def assert_clean_error(result, *fragments):
    """A user mistake: non-zero exit, one 'Error:' line, no traceback, and the expected words."""
    out = result.output
    assert result.exit_code != 0, out
    assert "Traceback" not in out, out
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    errors = [ln for ln in out.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1, out
    for frag in fragments:
        assert frag.lower() in errors[0].lower(), out


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
