"""Dataset readers on tiny files written in each standard format."""
import os
import pickle

import numpy as np
import pytest

from certkit.common.errors import CertkitError
from certkit.datasets import DIGITS_TEST_SIZE, load_dataset


def test_digits_split_is_fixed_and_scaled():
    from sklearn.datasets import load_digits

    test, train = load_dataset("digits", split="test"), load_dataset("digits", split="train")
    assert len(test) == DIGITS_TEST_SIZE == 450 and len(train) == 1797 - 450
    assert test.x.shape[1:] == (1, 8, 8) and float(test.x.min()) >= 0 and float(test.x.max()) <= 1
    ref = load_digits()
    np.testing.assert_allclose(test.x[:, 0].numpy(), ref.images[-450:] / 16.0, rtol=0, atol=1e-7)
    assert (test.y.numpy() == ref.target[-450:]).all() and test.num_classes == 10


def test_mnist_idx_gz_and_raw(mnist_dir):
    tr, te = load_dataset("mnist", mnist_dir, "train"), load_dataset("mnist", mnist_dir, "test")
    assert tr.x.shape == (12, 1, 28, 28) and te.x.shape == (6, 1, 28, 28)
    assert te.y.tolist() == [0, 1, 2, 3, 4, 5]
    assert 0.0 <= float(tr.x.min()) and float(tr.x.max()) <= 1.0


def test_mnist_corrupt_and_missing(mnist_dir, tmp_path):
    (mnist_dir / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + b"\x00\x00\x00\x06" * 3 + b"12")
    with pytest.raises(CertkitError, match="truncated"):
        load_dataset("mnist", mnist_dir, "test")
    (mnist_dir / "t10k-images-idx3-ubyte").write_bytes(b"garbage!" * 4)
    with pytest.raises(CertkitError, match="IDX"):
        load_dataset("mnist", mnist_dir, "test")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CertkitError, match="not found"):
        load_dataset("mnist", empty, "test")


def test_cifar10_batches(cifar_dir):
    te, tr = load_dataset("cifar10", cifar_dir, "test"), load_dataset("cifar10", cifar_dir, "train")
    assert te.x.shape == (4, 3, 32, 32) and tr.x.shape == (20, 3, 32, 32)
    raw = pickle.load(open(cifar_dir / "cifar-10-batches-py" / "test_batch", "rb"), encoding="bytes")
    np.testing.assert_allclose(te.x.numpy().reshape(4, -1), raw[b"data"] / 255.0, atol=1e-7)


def test_cifar10_refuses_code_in_pickles(cifar_dir, tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with open(cifar_dir / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": [0]}, f, protocol=2)
    with pytest.raises(CertkitError, match="refusing"):
        load_dataset("cifar10", cifar_dir, "test")
    assert not marker.exists()


def test_npz(npz_file, tmp_path):
    d = load_dataset("npz", npz_file)
    assert d.x.shape == (20, 5) and d.num_classes == 3 and d.split == "all"
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.full((3, 2), 2.0), y=np.zeros(3, int))
    with pytest.raises(CertkitError, match=r"\[0, 1\]"):
        load_dataset("npz", bad)
    nan = tmp_path / "nan.npz"
    np.savez(nan, x=np.full((3, 2), np.nan), y=np.zeros(3, int))
    with pytest.raises(CertkitError, match="NaN"):
        load_dataset("npz", nan)
    nolabels = tmp_path / "nolabels.npz"
    np.savez(nolabels, x=np.zeros((3, 2)))
    with pytest.raises(CertkitError, match="'y'"):
        load_dataset("npz", nolabels)
    notzip = tmp_path / "notzip.npz"
    notzip.write_text("hello")
    with pytest.raises(CertkitError, match="cannot read"):
        load_dataset("npz", notzip)


def test_unknown_dataset_and_missing_path():
    with pytest.raises(CertkitError, match="unknown dataset"):
        load_dataset("imagenet")
    with pytest.raises(CertkitError, match="needs a path"):
        load_dataset("mnist")
    with pytest.raises(CertkitError, match="does not exist"):
        load_dataset("cifar10", "/nonexistent/dir")
