"""Datasets certkit reads: the bundled digits data, MNIST / CIFAR-10 standard files, and npz arrays.

Every loader returns a :class:`Dataset` whose images are float32 in [0, 1] (the data range in which
certkit's sigma and eps are expressed) with integer labels.
"""
from certkit.datasets.core import DATASET_NAMES, DIGITS_TEST_SIZE, Dataset, load_dataset, select_indices

__all__ = ["DATASET_NAMES", "DIGITS_TEST_SIZE", "Dataset", "load_dataset", "select_indices"]
