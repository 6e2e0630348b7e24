"""Noise-augmented training: it learns, records its settings, and resumes exactly."""
import torch

from certkit.models import load_model
from certkit.train import TrainConfig, train


def test_gaussian_training_learns_and_records_metadata(tmp_path):
    cfg = TrainConfig(out=str(tmp_path / "m.pt"), method="gaussian", sigma=0.25, arch="mlp",
                      arch_config={"hidden": [64]}, epochs=5, device="cpu")
    row = train(cfg, quiet=True)
    assert row["val_accuracy"] > 0.8 and row["val_noisy_accuracy"] > 0.6  # chance is 0.1
    m = load_model(tmp_path / "m.pt")
    assert m.train_sigma == 0.25 and m.metadata["method"] == "gaussian" and m.metadata["dataset"] == "digits"
    assert (tmp_path / "m.log.csv").read_text().count("\n") == 6


def test_resume_reproduces_uninterrupted_training(tmp_path):
    kw = dict(method="gaussian", sigma=0.25, arch="mlp", arch_config={"hidden": [32]}, device="cpu")
    train(TrainConfig(out=str(tmp_path / "full.pt"), epochs=3, **kw), quiet=True)
    train(TrainConfig(out=str(tmp_path / "part.pt"), epochs=2, **kw), quiet=True)
    train(TrainConfig(out=str(tmp_path / "part.pt"), epochs=3, **kw), resume=True, quiet=True)
    a = torch.load(tmp_path / "full.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "part.pt", weights_only=True)["state_dict"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_log_times_and_resuming_a_log_with_fewer_columns(tmp_path):
    """The log's time columns: the optimisation loop within the epoch, the batch preparation within the loop. A log
    written before the last two columns existed is resumed with the new header and its rows padded (nothing lost)."""
    import csv

    kw = dict(method="gaussian", sigma=0.25, arch="mlp", arch_config={"hidden": [32]}, device="cpu")
    train(TrainConfig(out=str(tmp_path / "m.pt"), epochs=2, **kw), quiet=True)
    log = tmp_path / "m.log.csv"
    rows = list(csv.DictReader(open(log)))
    for r in rows:
        assert 0 < float(r["data_seconds"]) < float(r["train_seconds"]) <= float(r["seconds"])
    old = [line.rsplit(",", 2)[0] for line in log.read_text().splitlines()]     # drop the two new columns
    log.write_text("\r\n".join(old) + "\r\n")
    train(TrainConfig(out=str(tmp_path / "m.pt"), epochs=3, **kw), resume=True, quiet=True)
    again = list(csv.DictReader(open(log)))
    assert [r["epoch"] for r in again] == ["1", "2", "3"]
    assert again[0]["val_accuracy"] == rows[0]["val_accuracy"] and again[0]["data_seconds"] == ""
    assert float(again[2]["data_seconds"]) > 0


def test_labels_must_start_at_zero(cli, tmp_path):
    """An npz with labels 10..19 would train a 20-class model with 10 empty classes: refused in one line."""
    import numpy as np

    from conftest import assert_clean_error

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "shifted.npz", x=rng.random((40, 5)).astype(np.float32), y=10 + np.arange(40) % 10)
    assert_clean_error(cli("train", "--method", "natural", "--dataset", "npz", tmp_path / "shifted.npz",
                           "--hidden", 8, "--epochs", 1, "--out", tmp_path / "m.pt"), "labels run from 10 to 19")
    assert not (tmp_path / "m.pt").exists()
