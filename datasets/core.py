"""Dataset container and the single entry point :func:`load_dataset`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from certkit.common.errors import CertkitError
from certkit.datasets import readers

DATASET_NAMES = ("digits", "mnist", "fashion-mnist", "cifar10", "npz")
#: data sets whose classes are fixed (labels 0..9 whatever a subset holds); an npz's are 0..its largest label
FIXED_CLASSES = {"digits": 10, "mnist": 10, "fashion-mnist": 10, "cifar10": 10}
#: where a data set is read from when no path is given, and how to get it there
DEFAULT_PATHS = {"fashion-mnist": ("/usr/share/datasets/fashion-mnist",
                                   "install it with `apt-get install dataset-fashion-mnist` (Debian and Ubuntu)")}

#: The digits test split is the LAST 450 of scikit-learn's 1797 images in load_digits() order;
#: the first 1347 are the training split. Fixed so results are comparable across machines.
DIGITS_TEST_SIZE = 450


@dataclass
class Dataset:
    """Images and labels of one split.

    Attributes:
        x: float32 tensor, shape (N, C, H, W) for images or (N, D) for vectors, values in [0, 1].
        y: int64 tensor, shape (N,), labels in [0, num_classes).
        name: dataset name (``digits``, ``mnist``, ``fashion-mnist``, ``cifar10``, ``npz``).
        split: ``train``, ``test`` or ``all`` (npz files hold one split).
        num_classes: 1 + the largest label (10 for digits, MNIST, Fashion-MNIST and CIFAR-10).
        source: where the data came from (path, or ``sklearn.datasets.load_digits``).
    """

    x: torch.Tensor
    y: torch.Tensor
    name: str
    split: str
    num_classes: int
    source: str

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input, without the batch dimension."""
        return tuple(self.x.shape[1:])

    def describe(self) -> dict:
        """A JSON-ready description (name, split, size, source) recorded in result summaries."""
        return {"dataset": self.name, "split": self.split, "split_size": len(self),
                "input_shape": list(self.input_shape), "num_classes": self.num_classes,
                "source": self.source}


def _validate(x: np.ndarray, y: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    if x.ndim < 2:
        raise CertkitError(f"{where}: x must have shape N x D or N x C x H x W, got {x.shape}")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise CertkitError(f"{where}: y must have shape ({x.shape[0]},), got {y.shape}")
    if x.shape[0] == 0:
        raise CertkitError(f"{where}: the data set is empty")
    if np.issubdtype(x.dtype, np.uint8):
        x = x.astype(np.float32) / 255.0
    if not np.issubdtype(x.dtype, np.floating):
        raise CertkitError(f"{where}: x must be float in [0,1] (or uint8 in 0..255), got dtype {x.dtype}")
    if not np.all(np.isfinite(x)):
        raise CertkitError(f"{where}: x contains NaN or inf")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise CertkitError(f"{where}: x must lie in [0, 1] (certkit's data range), found [{lo:g}, {hi:g}]")
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise CertkitError(f"{where}: y must hold integer labels, got dtype {y.dtype}")
    if y.min() < 0:
        raise CertkitError(f"{where}: labels must be >= 0, found {int(y.min())}")
    return x.astype(np.float32, copy=False), y.astype(np.int64, copy=False)


def select_indices(n_total: int, skip: int = 1, max_inputs: int | None = None) -> list[int]:
    """Every ``skip``-th index of a split of size n_total, at most ``max_inputs`` of them (reference semantics).

    Raises:
        CertkitError: skip < 1 or max_inputs < 1.
    """
    if skip < 1:
        raise CertkitError(f"--skip must be >= 1, got {skip}")
    if max_inputs is not None and max_inputs < 1:
        raise CertkitError(f"--max must be >= 1, got {max_inputs}")
    idx = list(range(0, n_total, skip))
    return idx if max_inputs is None else idx[:max_inputs]


def load_dataset(name: str, path: str | Path | None = None, split: str = "test") -> Dataset:
    """Load a dataset split with images in [0, 1].

    Args:
        name: ``digits`` (bundled, scikit-learn's 8x8 digits, shape N x 1 x 8 x 8, values /16; the test
            split is the last 450 images, the train split the first 1347), ``mnist`` (IDX files,
            optionally gzipped, N x 1 x 28 x 28, values /255), ``fashion-mnist`` (Xiao, Rasul, Vollgraf 2017:
            MNIST's layout and sizes, 60,000 train and 10,000 test images of clothing; default folder
            /usr/share/datasets/fashion-mnist, Debian's package dataset-fashion-mnist), ``cifar10``
            (``cifar-10-batches-py`` pickles, N x 3 x 32 x 32, values /255) or ``npz`` (arrays ``x`` in [0,1],
            N x C x H x W or N x D, and integer ``y``).
        path: directory (mnist, fashion-mnist, cifar10) or file (npz); unused for digits; None for fashion-mnist:
            its default folder.
        split: ``train`` or ``test`` (npz files hold a single split, reported as ``all``).

    Raises:
        CertkitError: unknown name or split, missing path, missing or corrupt files, values outside [0,1].
    """
    name = name.lower()
    if name not in DATASET_NAMES:
        raise CertkitError(f"unknown dataset {name!r}: choose one of {', '.join(DATASET_NAMES)}")
    if split not in ("train", "test"):
        raise CertkitError(f"unknown split {split!r}: use train or test")
    if name == "digits":
        x, y = readers.read_digits()
        cut = len(y) - DIGITS_TEST_SIZE
        x, y = (x[:cut], y[:cut]) if split == "train" else (x[cut:], y[cut:])
        source = "sklearn.datasets.load_digits"
    else:
        if path is None and name in DEFAULT_PATHS:
            default, how = DEFAULT_PATHS[name]
            if not Path(default).is_dir():
                raise CertkitError(f"{name} data not found in {default}: {how}, or give its folder: "
                                   f"--dataset {name} DIR")
            path = default
        if path is None:
            raise CertkitError(f"dataset {name} needs a path: --dataset {name} PATH")
        path = Path(path)
        if not path.exists():
            raise CertkitError(f"{name} data not found: {path} does not exist")
        try:
            if name in ("mnist", "fashion-mnist"):
                x, y = readers.read_mnist(path, split, name)
            elif name == "cifar10":
                x, y = readers.read_cifar10(path, split)
            else:
                x, y = readers.read_npz(path)
                split = "all"
            x, y = _validate(x, y, f"{name} ({path})")
        except CertkitError:
            raise
        except MemoryError:
            raise CertkitError(f"{name} data in {path} asks for more memory than there is") from None
        except Exception as e:  # damaged files raise many types from numpy, zipfile, gzip, pickle
            msg = str(e).splitlines()[0][:160] if str(e) else ""
            raise CertkitError(f"cannot read {name} data from {path} ({type(e).__name__}: {msg})") from None
        source = str(path)
    if name == "digits":
        x, y = _validate(x, y, f"{name} ({source})")
    num_classes = max(int(y.max()) + 1, FIXED_CLASSES.get(name, 0))
    return Dataset(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y), name, split,
                   num_classes, source)
