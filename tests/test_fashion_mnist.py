"""Fashion-MNIST (Xiao, Rasul, Vollgraf 2017), certkit's real-scale data set, read from Debian's package
dataset-fashion-mnist. The tests that need the real files skip, saying why, where the package is not installed."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from certkit.common.errors import CertkitError
from certkit.datasets import core, load_dataset

from conftest import assert_clean_error

FOLDER = Path(core.DEFAULT_PATHS["fashion-mnist"][0])
needs_files = pytest.mark.skipif(not FOLDER.is_dir(), reason=f"{FOLDER} absent: apt-get install dataset-fashion-mnist")


@needs_files
def test_real_files_have_the_published_sizes_and_balance():
    train, test = load_dataset("fashion-mnist", split="train"), load_dataset("fashion-mnist", split="test")
    assert train.x.shape == (60_000, 1, 28, 28) and test.x.shape == (10_000, 1, 28, 28)
    assert train.x.dtype == torch.float32 and 0.0 <= float(train.x.min()) and float(train.x.max()) <= 1.0
    # 6,000 training and 1,000 test images per class (the data set's paper, Table 1)
    assert torch.bincount(train.y).tolist() == [6000] * 10 and torch.bincount(test.y).tolist() == [1000] * 10
    assert train.num_classes == 10 and train.source == str(FOLDER) and test.name == "fashion-mnist"
    # the same files given as a folder read the same
    assert torch.equal(load_dataset("fashion-mnist", FOLDER, "test").y, test.y)


def test_a_missing_default_folder_names_the_package(monkeypatch, tmp_path, mnist_dir):
    monkeypatch.setitem(core.DEFAULT_PATHS, "fashion-mnist", (str(tmp_path / "absent"), "install it with apt-get"))
    with pytest.raises(CertkitError, match="apt-get, or give its folder: --dataset fashion-mnist DIR"):
        load_dataset("fashion-mnist")
    d = load_dataset("fashion-mnist", mnist_dir, "test")            # any folder in MNIST's layout
    assert d.x.shape == (6, 1, 28, 28) and d.num_classes == 10
    with pytest.raises(CertkitError, match="fashion-mnist file t10k-images-idx3-ubyte"):
        load_dataset("fashion-mnist", tmp_path, "test")


@needs_files
def test_train_certify_and_verify_on_the_real_files(cli, tmp_path):
    """One epoch of noise training on all 54,000 training images (10% held out), then both certificates on a few test
    images; the model must have learned (a random one is right 1 time in 10)."""
    r = cli("train", "--method", "gaussian", "--dataset", "fashion-mnist", "--sigma", 0.25, "--epochs", 1,
            "--batch", 256, "--lr", 3e-3, "--out", tmp_path / "fm.pt", "--quiet")
    assert r.exit_code == 0, r.output
    ckpt = torch.load(tmp_path / "fm.pt", weights_only=True)
    assert ckpt["input_shape"] == [1, 28, 28] and ckpt["metadata"]["dataset"] == "fashion-mnist"
    r = cli("certify", "--dataset", "fashion-mnist", "--model", tmp_path / "fm.pt", "--skip", 500, "--n", 500,
            "--out", tmp_path / "c.tsv", "--quiet")
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "c.summary.json").read_text())
    assert summary["inputs"]["selected"] == 20 and summary["certified_accuracy"]["0"] >= 0.5
    r = cli("verify", "--dataset", "fashion-mnist", "--model", tmp_path / "fm.pt", "--eps", 0.001, "--max", 20,
            "--out", tmp_path / "v.tsv", "--quiet")
    assert r.exit_code == 0, r.output
    assert_clean_error(cli("certify", "--dataset", "fashion-mnist", tmp_path / "absent", "--out", tmp_path / "x.tsv"),
                       "does not exist")
