"""A user's own network on every route that takes a model: factories with their weights behind every option that
names a model, whole pickled modules, reference-format checkpoints of custom architectures, and runs that check every
method, its data and its output files before the first input is certified."""
from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from conftest import assert_clean_error

NET = """
import torch
from torch import nn


class SmallMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def make():
    return SmallMLP()
"""


@pytest.fixture
def usernet(tmp_path, monkeypatch):
    """``usernets:make`` in the current folder and its weights (copied from the bundled model's first layers is not
    possible: a fresh seeded network, trained nowhere; the routes, not the accuracy, are under test)."""
    (tmp_path / "usernets.py").write_text(textwrap.dedent(NET))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib
    import sys

    sys.modules.pop("usernets", None)
    mod = importlib.import_module("usernets")
    torch.manual_seed(0)
    net = mod.make()
    torch.save(net.state_dict(), tmp_path / "w.pt")
    yield tmp_path, net
    sys.modules.pop("usernets", None)


def test_factory_options_take_their_weights(cli, usernet):
    d, net = usernet
    common = ["--max", 3, "--n0", 10, "--n", 100, "--quiet"]
    # --standard-model of adaptive smoothing: a factory needs --standard-model-weights, and then loads them
    assert_clean_error(cli("certify", "--method", "adaptive", "--standard-model", "usernets:make", "--mixing-weight",
                           0.8, *common, "--out", d / "a.tsv"), "--standard-model-weights FILE")
    assert not (d / "a.tsv").exists()
    r = cli("certify", "--method", "adaptive", "--standard-model", "usernets:make", "--standard-model-weights",
            d / "w.pt", "--mixing-weight", 0.8, *common, "--out", d / "a.tsv")
    assert r.exit_code == 0, r.output
    assert json.loads((d / "a.summary.json").read_text())["standard_model"]["kind"] == "factory"
    assert_clean_error(cli("certify", "--method", "adaptive", "--standard-model", "bundled", "--standard-model-weights",
                           d / "w.pt", "--mixing-weight", 0.8, *common, "--out", d / "b.tsv"),
                       "--standard-model-weights is only for a package.module:factory")
    # --classifier of denoiser training: the same
    train = ["train", "--method", "denoiser", "--objective", "stability", "--sigma", 0.5, "--epochs", 1, "--quiet"]
    assert_clean_error(cli(*train, "--classifier", "usernets:make", "--out", d / "den.pt"),
                       "--classifier-weights FILE")
    r = cli(*train, "--classifier", "usernets:make", "--classifier-weights", d / "w.pt", "--out", d / "den.pt")
    assert r.exit_code == 0, r.output
    ckpt = torch.load(d / "den.pt", weights_only=True)
    assert ckpt["metadata"]["classifier"] == "usernets:make"
    assert ckpt["metadata"]["recipe"]["classifier_weights"] == str(d / "w.pt")


def test_init_from_a_factory_says_what_to_do(cli, usernet):
    d, _ = usernet
    assert_clean_error(cli("train", "--method", "rct", "--sigma", 0.25, "--init-from", "usernets:make", "--out",
                           d / "r.pt"), "checkpoint FILE", "--model usernets:make --weights FILE")
    assert_clean_error(cli("train", "--method", "dual", "--sigma", 0.25, "--init-from", d / "none.pt", "--out",
                           d / "r.pt"), "file not found")


def test_pickled_modules_resolve_the_current_folder(cli, usernet, tmp_path):
    d, net = usernet
    torch.save(net, d / "whole.pt")                 # pickles usernets.SmallMLP
    r = cli("certify", "--model", d / "whole.pt", "--allow-pickle", "--sigma", 0.25, "--max", 2, "--n", 50,
            "--quiet", "--out", d / "p.tsv")
    assert r.exit_code == 0, r.output
    assert_clean_error(cli("certify", "--model", d / "whole.pt", "--sigma", 0.25, "--out", d / "q.tsv"),
                       "--allow-pickle")
    # a class defined in the saving script (__main__) cannot be found anywhere: say so, and what to save instead
    blob = d / "main.pt"
    import subprocess
    import sys

    subprocess.run([sys.executable, "-c", "import torch\nclass Net(torch.nn.Module):\n    def forward(self, x):\n"
                    "        return x.flatten(1)[:, :10]\n"
                    f"torch.save(Net(), {str(blob)!r})\n"], check=True, cwd=tmp_path)
    assert_clean_error(cli("certify", "--model", blob, "--allow-pickle", "--sigma", 0.25, "--out", d / "m.tsv"),
                       "__main__", "state_dict")


def test_reference_layout_of_a_custom_architecture(cli, usernet):
    d, net = usernet
    ref = {"arch": "SmallMLP", "epoch": 90, "state_dict": {"1.module." + k: v for k, v in net.state_dict().items()}}
    torch.save(ref, d / "checkpoint.pth.tar")
    assert_clean_error(cli("certify", "--model", d / "checkpoint.pth.tar", "--sigma", 0.25, "--out", d / "x.tsv"),
                       "'SmallMLP' is not one certkit builds",
                       f"--model package.module:factory --weights {d / 'checkpoint.pth.tar'}")
    r = cli("certify", "--model", "usernets:make", "--weights", d / "checkpoint.pth.tar", "--sigma", 0.25, "--max", 2,
            "--n", 50, "--quiet", "--out", d / "x.tsv")
    assert r.exit_code == 0, r.output


def test_every_method_is_checked_before_the_first_runs(cli, tmp_path):
    """--method gaussian,lvm on an npz: LVM's calibration inputs would be certified too; refused before Gaussian
    certifies anything. Existing output files and unwritable plots are refused up front too."""
    from certkit.datasets import load_dataset

    data = load_dataset("digits", split="test")
    np.savez(tmp_path / "d.npz", x=data.x[:120].numpy(), y=data.y[:120].numpy())
    args = ["certify", "--dataset", "npz", tmp_path / "d.npz", "--method", "gaussian,lvm", "--n", 100, "--quiet"]
    r = cli(*args, "--out", tmp_path / "r.tsv")
    assert_clean_error(r, "calibration inputs", "--calibration-path", "--max")
    assert not list(tmp_path.glob("r_*.tsv"))             # nothing was certified
    (tmp_path / "r_lvm.tsv").write_text("kept\n")
    assert_clean_error(cli(*args, "--max", 5, "--out", tmp_path / "r.tsv"), "r_lvm.tsv exists")
    assert not (tmp_path / "r_gaussian.tsv").exists() and (tmp_path / "r_lvm.tsv").read_text() == "kept\n"
    (tmp_path / "plot.png").mkdir()
    assert_clean_error(cli("certify", "--max", 2, "--n", 50, "--plot", tmp_path / "plot.png", "--out",
                           tmp_path / "g.tsv"), "is a directory")
    assert not (tmp_path / "g.tsv").exists()


def test_in_memory_modules_in_runs_are_named_by_their_weights(tmp_path):
    from certkit.common.errors import CertkitError
    from certkit.models import load_model
    from certkit.runs.certify import CertifyConfig, run_certify

    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    src = load_model(net).source
    assert src.startswith("<in-memory Sequential ") and load_model(net).source == src
    cfg = dict(sigma=0.25, n0=10, n=50, max_inputs=2, out=str(tmp_path / "m.tsv"), quiet=True)
    rows, summary = run_certify(CertifyConfig(model=net, **cfg))
    assert len(rows) == 2 and summary["model"]["kind"] == "module"
    with torch.no_grad():
        net[1].bias += 1.0                                  # other weights: resuming would mix two models
    assert load_model(net).source != src
    with pytest.raises(CertkitError, match="different settings \\(model: <in-memory"):
        run_certify(CertifyConfig(model=net, resume=True, **{**cfg, "max_inputs": 3}))
