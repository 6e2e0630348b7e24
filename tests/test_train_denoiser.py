"""train/methods/denoiser.py through the CLI: MSE, stability, consistency and zeroth-order training on digits, the
checkpoint's records, resume, the composition certified with every smoothing method, and bad input."""
import json

import pytest
import torch

from certkit.models.checkpoint import load_checkpoint_file
from certkit.models.denoisers import load_denoiser

from conftest import assert_certify_rows, assert_clean_error


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from click.testing import CliRunner

    from certkit.cli import main

    d = tmp_path_factory.mktemp("denoise")
    run = lambda *a: CliRunner().invoke(main, [str(x) for x in a], catch_exceptions=False)
    r = run("train", "--method", "natural", "--epochs", "4", "--out", d / "f.pt", "--quiet")
    assert r.exit_code == 0, r.output
    r = run("train", "--method", "denoiser", "--sigma", "0.5", "--epochs", "3", "--classifier", d / "f.pt",
            "--out", d / "mse.pt", "--quiet")
    assert r.exit_code == 0, r.output
    return d


def _log(path):
    import csv
    return list(csv.DictReader(open(path.with_suffix(".log.csv"))))


def test_mse_denoiser_learns_and_records_itself(trained):
    rows = _log(trained / "mse.pt")
    assert float(rows[-1]["val_mse"]) < float(rows[0]["val_mse"])
    assert float(rows[-1]["val_mse"]) < 0.25 * 0.8  # less than the noise it removes (sigma^2 = 0.25 per pixel)
    ckpt = load_checkpoint_file(trained / "mse.pt")
    assert ckpt["task"] == "denoiser" and ckpt["arch"] == "dncnn" and ckpt["metadata"]["sigma"] == 0.5
    assert ckpt["metadata"]["objective"] == "mse" and ckpt["metadata"]["zeroth_order"] is None


def test_stability_and_consistency_fine_tune_from_mse(cli, trained):
    for objective in ("stability", "consistency"):
        out = trained / f"{objective}.pt"
        r = cli("train", "--method", "denoiser", "--objective", objective, "--sigma", "0.5", "--epochs", "2",
                "--classifier", trained / "f.pt", "--init-from", trained / "mse.pt", "--out", out, "--quiet")
        assert r.exit_code == 0, r.output
        rows = _log(out)
        assert 0 <= float(rows[-1]["val_noisy_accuracy"]) <= 1 and rows[-1]["queries"] == "0"
        assert load_checkpoint_file(out)["metadata"]["init_from"] == str(trained / "mse.pt")


def test_zeroth_order_counts_its_queries_and_freezes_the_decoder(cli, trained):
    ae = trained / "ae.pt"
    r = cli("train", "--method", "denoiser", "--arch", "ae_dncnn", "--latent", "12", "--sigma", "0.5", "--epochs",
            "1", "--out", ae, "--quiet")
    assert r.exit_code == 0, r.output
    zo = trained / "zo.pt"
    r = cli("train", "--method", "denoiser", "--objective", "stability", "--zeroth-order", "--zo-queries", "5",
            "--sigma", "0.5", "--epochs", "2", "--classifier", trained / "f.pt", "--init-from", ae, "--out", zo,
            "--quiet")
    assert r.exit_code == 0, r.output
    meta = load_checkpoint_file(zo)["metadata"]["zeroth_order"]
    per = 1 + 5 + 1  # F(x), the base point, q = 5 directions
    assert meta["queries_per_example_step"] == per and meta["estimated_at"] == "autoencoder code"
    from certkit.datasets import load_dataset
    n_train = len(load_dataset("digits", None, "train"))
    n_train -= int(round(n_train * 0.1))
    assert meta["total_queries"] == per * n_train * 2
    before, after = load_denoiser(ae).module, load_denoiser(zo).module
    for a, b in zip(before.decoder_parameters(), after.decoder_parameters()):
        assert torch.equal(a, b)  # merged into the black box: never updated
    assert not torch.equal(before.encoder[0].weight, after.encoder[0].weight)
    # CGE on the code: latent + 1 queries per example, plus F(x)
    r = cli("train", "--method", "denoiser", "--objective", "stability", "--zeroth-order", "--zo-estimator", "cge",
            "--sigma", "0.5", "--epochs", "1", "--classifier", trained / "f.pt", "--init-from", ae, "--out",
            trained / "cge.pt", "--quiet")
    assert r.exit_code == 0, r.output
    assert load_checkpoint_file(trained / "cge.pt")["metadata"]["zeroth_order"]["queries_per_example_step"] == 14


def test_resume_continues_exactly(cli, trained, tmp_path):
    args = ["train", "--method", "denoiser", "--objective", "stability", "--zeroth-order", "--zo-queries", "3",
            "--sigma", "0.5", "--classifier", trained / "f.pt", "--init-from", trained / "mse.pt", "--quiet"]
    assert cli(*args, "--epochs", "2", "--out", tmp_path / "full.pt").exit_code == 0
    assert cli(*args, "--epochs", "1", "--out", tmp_path / "part.pt").exit_code == 0
    r = cli(*args, "--epochs", "2", "--out", tmp_path / "part.pt", "--resume")
    assert r.exit_code == 0, r.output
    a, b = load_checkpoint_file(tmp_path / "full.pt"), load_checkpoint_file(tmp_path / "part.pt")
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    assert a["metadata"]["zeroth_order"]["total_queries"] == b["metadata"]["zeroth_order"]["total_queries"]


@pytest.mark.parametrize("method,extra", [("gaussian", []), ("lvm", ["--calibration-size", "20",
                                                                     "--calibration-noise", "50"]),
                                          ("sequential", ["--radii", "0.25"])])
def test_certify_the_composition_with_every_method(cli, trained, tmp_path, method, extra):
    out = tmp_path / f"{method}.tsv"
    r = cli("certify", "--model", trained / "f.pt", "--denoiser", trained / "mse.pt", "--method", method, *extra,
            "--max-inputs", "4", "--n", "200", "--n0", "20", "--out", out, "--quiet")
    assert r.exit_code == 0, r.output
    summary = json.loads(out.with_suffix(".summary.json").read_text())
    assert summary["sigma"] == 0.5  # the denoiser's training sigma is the default
    assert summary["model"]["denoiser"]["source"] == str(trained / "mse.pt")
    assert len(out.read_text().splitlines()) == 5


def test_certify_dual_through_a_denoiser(cli, trained, tmp_path):
    r = cli("train", "--method", "dual", "--init-from", trained / "f.pt", "--epochs", "1", "--sigma", "0.5",
            "--out", tmp_path / "dual.pt", "--quiet")
    assert r.exit_code == 0, r.output
    assert load_checkpoint_file(tmp_path / "dual.pt")["metadata"]["method"] == "dual"
    r = cli("certify", "--model", tmp_path / "dual.pt", "--denoiser", trained / "mse.pt", "--method", "dual",
            "--max-inputs", "3", "--n", "100", "--n0", "10", "--out", tmp_path / "d.tsv", "--quiet")
    assert r.exit_code == 0, r.output
    assert_certify_rows(tmp_path / "d.tsv", 3, "dual")
    summary = json.loads((tmp_path / "d.summary.json").read_text())
    assert summary["model"]["denoiser"]["source"] == str(trained / "mse.pt") and summary["sigma"] == 0.5


def test_bad_input(cli, trained, tmp_path):
    out = tmp_path / "x.pt"
    assert_clean_error(cli("train", "--method", "denoiser", "--objective", "stability", "--out", out), "--classifier")
    assert_clean_error(cli("train", "--method", "denoiser", "--zeroth-order", "--out", out), "stability")
    assert_clean_error(cli("train", "--method", "denoiser", "--arch", "mlp", "--out", out), "dncnn")
    assert_clean_error(cli("train", "--method", "denoiser", "--init-from", trained / "f.pt", "--out", out),
                       "not a certkit denoiser")
    assert_clean_error(cli("certify", "--model", trained / "mse.pt", "--out", tmp_path / "a.tsv"), "--denoiser")
    assert_clean_error(cli("certify", "--denoiser", trained / "f.pt", "--out", tmp_path / "a.tsv"),
                       "not a certkit denoiser")
    assert_clean_error(cli("certify", "--denoiser-weights", trained / "f.pt", "--out", tmp_path / "a.tsv"),
                       "--denoiser")
