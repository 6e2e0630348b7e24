"""The one training harness (train/harness.py) and its registries: a new loss or smoothing method is one class."""
import csv

import pytest
import torch
import torch.nn.functional as F

from certkit.common.errors import CertkitError
from certkit.train.harness import StepOutput, TrainingMethod, TrainingRun, fit


class Toy(TrainingMethod):
    """Least squares on fixed data; stops when the loss is below ``goal``; records every ``every`` epochs."""

    name = "toy"

    def __init__(self, path, epochs=6, lr=0.1, every=1, goal=0.0):
        self.path, self.n_epochs, self.lr, self.every, self.goal = path, epochs, lr, every, goal
        self.last = float("inf")

    def config(self):
        return {"lr": self.lr, "epochs": self.n_epochs}

    @property
    def epochs(self):
        return self.n_epochs

    def checkpoint_path(self):
        return self.path

    def log_path(self):
        return self.path.with_suffix(".csv")

    def setup(self, run: TrainingRun):
        torch.manual_seed(0)
        run.model = torch.nn.Linear(3, 1)
        run.optimizer = torch.optim.SGD(run.model.parameters(), lr=self.lr)
        run.generator = torch.Generator().manual_seed(1)
        self.x = torch.randn(32, 3, generator=torch.Generator().manual_seed(2))
        self.y = self.x @ torch.tensor([[1.0], [-2.0], [0.5]])

    def save(self, run, train_state, row):
        torch.save({"model": run.model.state_dict(), "train_state": train_state}, self.path)

    def load(self):
        return torch.load(self.path, weights_only=True)

    def restore(self, run, ckpt):
        run.model.load_state_dict(ckpt["model"])

    def batches(self, run, epoch):
        perm = torch.randperm(32, generator=run.generator)
        for i in range(0, 32, 8):
            yield perm[i:i + 8]

    def step(self, run, idx):
        loss = F.mse_loss(run.model(self.x[idx]), self.y[idx])
        return StepOutput(loss, 0, len(idx))

    def end_epoch(self, run, epoch, stats):
        self.last = float(stats[0] / stats[2])
        return {"epoch": epoch, "loss": self.last, "seconds": 0.0} if epoch % self.every == 0 else None

    def finished(self, run):
        return self.last < self.goal


def test_resume_continues_exactly_and_refuses_other_settings(tmp_path):
    fit(Toy(tmp_path / "full.pt"), "cpu", quiet=True)
    fit(Toy(tmp_path / "part.pt", epochs=3), "cpu", quiet=True)
    with pytest.raises(CertkitError, match="exists: pass --resume"):
        fit(Toy(tmp_path / "part.pt"), "cpu", quiet=True)
    with pytest.raises(CertkitError, match=r"other settings \(lr\)"):
        fit(Toy(tmp_path / "part.pt", lr=0.2), "cpu", resume=True, quiet=True)
    fit(Toy(tmp_path / "part.pt"), "cpu", resume=True, quiet=True)
    a = torch.load(tmp_path / "full.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "part.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    full = list(csv.DictReader(open(tmp_path / "full.csv")))
    part = list(csv.DictReader(open(tmp_path / "part.csv")))
    assert [r["loss"] for r in full] == [r["loss"] for r in part] and len(full) == 6


def test_only_recorded_epochs_are_logged_and_a_finished_method_stops(tmp_path):
    last = fit(Toy(tmp_path / "e.pt", epochs=6, every=2), "cpu", quiet=True)
    assert [int(r["epoch"]) for r in csv.DictReader(open(tmp_path / "e.csv"))] == [2, 4, 6] and last["epoch"] == 6
    last = fit(Toy(tmp_path / "g.pt", epochs=50, goal=0.5), "cpu", quiet=True)
    assert last["epoch"] < 50 and last["loss"] < 0.5


def test_a_new_training_loss_is_one_registered_class(cli, tmp_path):
    """Label smoothing, defined here and registered, trains through `certkit train --method` with nothing else."""
    from certkit.train import ClassifierTraining, register_training, training_methods
    from certkit.train.network import REGISTRY

    @register_training
    class LabelSmoothing(ClassifierTraining):
        name = "test-label-smoothing"
        help = "cross-entropy with label smoothing 0.1 (test)"

        def batch_loss(self, run, batch):
            xb, yb = self.xy(run, batch)
            logits = run.model(xb)
            return self.output(F.cross_entropy(logits, yb, label_smoothing=0.1), logits, yb, batch)

    try:
        r = cli("train", "--method", "test-label-smoothing", "--hidden", 32, "--epochs", 2, "--out",
                tmp_path / "m.pt", "--quiet")
    finally:
        REGISTRY.unregister("test-label-smoothing")
    assert r.exit_code == 0, r.output
    assert torch.load(tmp_path / "m.pt", weights_only=True)["metadata"]["method"] == "test-label-smoothing"
    assert "test-label-smoothing" not in training_methods()


def test_a_new_smoothing_method_is_one_registered_class(tmp_path):
    """A method defined here and registered is certified by the shared run (files, summary) with nothing else."""
    from certkit.certify.smoothing import register_smoothing, smoothing_methods
    from certkit.certify.smoothing.base import REGISTRY
    from certkit.certify.smoothing.gaussian import GaussianSmoothing
    from certkit.runs.certify import CertifyConfig, run_certify

    @register_smoothing
    class Copy(GaussianSmoothing):
        name = "test-gaussian-copy"
        label = "copy"
        help = "Gaussian smoothing under another name (test)"
        procedure = "as gaussian"

    kw = dict(n0=10, n=200, max_inputs=5, quiet=True, device="cpu")
    try:
        rows_a, _ = run_certify(CertifyConfig(out=str(tmp_path / "a.tsv"), method="gaussian", **kw))
        rows_b, summary = run_certify(CertifyConfig(out=str(tmp_path / "b.tsv"), method="test-gaussian-copy", **kw))
    finally:
        REGISTRY.unregister("test-gaussian-copy")
    assert [(r["predict"], r["radius"]) for r in rows_a] == [(r["predict"], r["radius"]) for r in rows_b]
    assert summary["method"] == "test-gaussian-copy" and summary["procedure"] == "as gaussian"
    assert "test-gaussian-copy" not in smoothing_methods()
