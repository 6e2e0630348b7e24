"""File-format readers. Each returns (x, y) numpy arrays with x already scaled to [0, 1]."""
from __future__ import annotations

import gzip
import math
import pickle
import zipfile
from pathlib import Path

import numpy as np

from certkit.common.errors import CertkitError


def read_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 1797 real 8x8 handwritten digits (values 0..16), scaled by 1/16."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None, :, :]
    return x, d.target.astype(np.int64)


# ---------------------------------------------------------------- MNIST (IDX)
_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _find_idx(root: Path, stem: str, name: str = "MNIST") -> Path:
    alt = stem.replace("-idx", ".idx")  # some mirrors name them t10k-images.idx3-ubyte
    for d in (root, root / "MNIST" / "raw", root / "raw"):
        for s in (stem, alt):
            for suffix in ("", ".gz"):
                p = d / (s + suffix)
                if p.is_file():
                    return p
    raise CertkitError(f"{name} file {stem}[.gz] not found in {root}")


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    try:
        raw = gzip.open(path, "rb").read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as e:
        raise CertkitError(f"cannot read {path}: {' '.join(str(e).split())[:200]}") from None
    if len(raw) < 4 + 4 * ndim:
        raise CertkitError(f"{path} is not an IDX file (too short)")
    zero, dtype_code, dims = raw[0:2], raw[2], raw[3]
    if zero != b"\x00\x00" or dtype_code != 0x08 or dims != ndim:
        raise CertkitError(f"{path} is not an IDX{ndim} unsigned-byte file (bad magic number)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != math.prod(shape):
        raise CertkitError(f"{path} is truncated: header says {shape}, found {data.size} values")
    return data.reshape(shape)


def read_mnist(root: Path, split: str, name: str = "mnist") -> tuple[np.ndarray, np.ndarray]:
    """MNIST-layout IDX files (``train-images-idx3-ubyte[.gz]`` etc.: MNIST, Fashion-MNIST) from a directory ->
    N x 1 x 28 x 28."""
    if not root.is_dir():
        raise CertkitError(f"{name} needs a directory holding the IDX files, got {root}")
    img_name, lab_name = _MNIST_FILES[split]
    x = _read_idx(_find_idx(root, img_name, name), 3)
    y = _read_idx(_find_idx(root, lab_name, name), 1)
    if x.shape[0] != y.shape[0]:
        raise CertkitError(f"{name} {split}: {x.shape[0]} images but {y.shape[0]} labels")
    return (x.astype(np.float32) / 255.0)[:, None], y.astype(np.int64)


# ---------------------------------------------------------------- CIFAR-10 (python pickles)
class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that only builds the numpy arrays, dicts and lists the CIFAR-10 batches contain.

    The official batches are pickles; a plain ``pickle.load`` would run any code a tampered file holds.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR-10 batch")


def _load_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            d = _CifarUnpickler(f, encoding="bytes").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError,
            IndexError, KeyError) as e:
        raise CertkitError(f"{path} is not a CIFAR-10 python batch: {' '.join(str(e).split())[:200]}") from None
    if not isinstance(d, dict):
        raise CertkitError(f"{path} is not a CIFAR-10 python batch (no dict inside)")
    d = {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}
    if "data" not in d or "labels" not in d:
        raise CertkitError(f"{path} is not a CIFAR-10 python batch (missing data/labels)")
    data = np.asarray(d["data"], dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3072:
        raise CertkitError(f"{path}: data must be N x 3072 uint8, got {data.shape}")
    return data.reshape(-1, 3, 32, 32), np.asarray(d["labels"], dtype=np.int64)


def read_cifar10(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 python batches (``data_batch_1..5``, ``test_batch``) -> N x 3 x 32 x 32."""
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    missing = [n for n in names if not (root / n).is_file()]
    if missing:
        raise CertkitError(f"CIFAR-10 {split} files missing in {root}: {', '.join(missing)}")
    parts = [_load_cifar_batch(root / n) for n in names]
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    return x.astype(np.float32) / 255.0, y


# ---------------------------------------------------------------- npz
def read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """An ``.npz`` with arrays ``x`` (N x C x H x W or N x D, [0,1]) and ``y`` (N integer labels)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if "x" not in z.files or "y" not in z.files:
                raise CertkitError(f"{path} must contain arrays 'x' and 'y', found {z.files}")
            return np.asarray(z["x"]), np.asarray(z["y"])
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise CertkitError(f"cannot read {path} as .npz: {' '.join(str(e).split())[:200]}") from None


__all__ = ["read_digits", "read_mnist", "read_cifar10", "read_npz"]
