"""`certkit` end to end: certify / predict / train on every data format, resume, and bad input."""
import csv
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from certkit.models import NormalizeLayer, build_model, save_checkpoint
from certkit.models.zoo import CIFAR10_MEAN, CIFAR10_STD

from conftest import assert_clean_error, export_onnx

FAST = ["--n0", "10", "--n", "300", "--batch", "300", "--quiet"]


def read_tsv(path):
    with open(path) as f:
        return list(csv.DictReader(f, delimiter="\t"))


def test_certify_bundled_digits_end_to_end(cli, tmp_path):
    out, summ, plot = tmp_path / "r.tsv", tmp_path / "s.json", tmp_path / "p.png"
    r = cli("certify", *FAST, "--max", 8, "--out", out, "--summary-json", summ, "--plot", plot)
    assert r.exit_code == 0, r.output
    assert "certified accuracy" in r.output and "8 of 450" in r.output
    rows = read_tsv(out)
    assert list(rows[0]) == ["idx", "label", "predict", "radius", "correct", "time"]
    assert [int(x["idx"]) for x in rows] == list(range(8))
    for x in rows:
        assert int(x["correct"]) == int(int(x["predict"]) == int(x["label"]))
        assert (int(x["predict"]) == -1) <= (float(x["radius"]) == 0.0)
    s = json.loads(summ.read_text())
    for key in ("method", "sigma", "n0", "n", "alpha", "n_inputs", "certified_accuracy", "abstain_rate",
                "average_certified_radius", "seconds"):
        assert key in s, key
    assert s["method"] == "gaussian" and s["sigma"] == 0.25 and s["n_inputs"] == 8 and s["n"] == 300
    assert s["inputs"]["split_size"] == 450 and s["inputs"]["full_split"] is False
    acc0 = np.mean([int(x["correct"]) for x in rows])
    assert s["certified_accuracy"]["0"] == pytest.approx(acc0)
    assert list(s["certified_accuracy"])[:3] == ["0", "0.25", "0.5"]
    radii = np.array([float(x["radius"]) for x in rows])
    correct = np.array([int(x["correct"]) for x in rows])
    assert s["average_certified_radius"] == pytest.approx(float(np.mean(radii * correct)), abs=1e-3)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_continues_and_matches_fresh_run(cli, tmp_path):
    a, b = tmp_path / "a.tsv", tmp_path / "b.tsv"
    assert cli("certify", *FAST, "--max", 3, "--out", a).exit_code == 0
    first = a.read_text().splitlines()
    with open(a, "a") as f:
        f.write("3\t5\t")  # a torn last line, as after a crash
    r = cli("certify", *FAST, "--max", 6, "--out", a, "--resume")
    assert r.exit_code == 0, r.output
    resumed = a.read_text().splitlines()
    assert resumed[:4] == first and len(resumed) == 7
    assert cli("certify", *FAST, "--max", 6, "--out", b).exit_code == 0
    strip = lambda rows: [(x["idx"], x["predict"], x["radius"]) for x in rows]
    assert strip(read_tsv(a)) == strip(read_tsv(b))  # per-input seeds: resume == fresh run
    # every 2nd input: the same certificates as in the full run
    c = tmp_path / "c.tsv"
    assert cli("certify", *FAST, "--max", 3, "--skip", 2, "--out", c).exit_code == 0
    assert strip(read_tsv(c)) == [t for t in strip(read_tsv(b)) if int(t[0]) % 2 == 0]


def test_output_is_never_silently_replaced(cli, tmp_path):
    out = tmp_path / "r.tsv"
    assert cli("certify", *FAST, "--max", 1, "--out", out).exit_code == 0
    assert_clean_error(cli("certify", *FAST, "--max", 1, "--out", out), "--resume")
    assert_clean_error(cli("certify", *FAST, "--max", 2, "--out", out, "--resume", "--sigma", 0.5),
                       "different settings")
    assert cli("certify", *FAST, "--max", 1, "--out", out, "--overwrite").exit_code == 0


def test_predict(cli, tmp_path):
    r = cli("predict", "--n", 200, "--max", 5, "--quiet", "--out", tmp_path / "p.tsv")
    assert r.exit_code == 0, r.output
    rows = read_tsv(tmp_path / "p.tsv")
    assert len(rows) == 5 and list(rows[0]) == ["idx", "label", "predict", "correct", "time"]
    assert "smoothed accuracy" in r.output


def test_sigma_mismatch_warns(cli, tmp_path):
    r = cli("certify", *FAST, "--max", 1, "--sigma", 0.5, "--out", tmp_path / "r.tsv")
    assert r.exit_code == 0 and "trained with sigma=0.25" in r.output


def test_reference_checkpoint_on_cifar10_files(cli, tmp_path, cifar_dir):
    """Done-when criterion: a random-weight cifar_resnet20 in the reference format on CIFAR-format files."""
    model = nn.Sequential(NormalizeLayer(CIFAR10_MEAN, CIFAR10_STD), build_model("cifar_resnet20", (3, 32, 32), 10))
    torch.save({"arch": "cifar_resnet20", "state_dict": model.state_dict()}, tmp_path / "ref.pth.tar")
    out = tmp_path / "r.tsv"
    r = cli("certify", "--model", tmp_path / "ref.pth.tar", "--dataset", "cifar10", cifar_dir, "--sigma", 0.25,
            "--n0", 4, "--n", 16, "--batch", 16, "--max", 2, "--quiet", "--out", out)
    assert r.exit_code == 0, r.output
    assert len(read_tsv(out)) == 2
    assert_clean_error(cli("certify", "--model", tmp_path / "ref.pth.tar", "--dataset", "cifar10", cifar_dir,
                           "--n", 16, "--out", tmp_path / "x.tsv"), "--sigma")


def test_train_then_certify_on_npz_and_mnist(cli, tmp_path, npz_file, mnist_dir):
    ck = tmp_path / "npz.pt"
    r = cli("train", "--dataset", "npz", npz_file, "--arch", "mlp", "--hidden", "16", "--epochs", 2,
            "--sigma", 0.2, "--out", ck, "--quiet", "--val-fraction", 0.2)
    assert r.exit_code == 0, r.output
    r = cli("certify", "--model", ck, "--dataset", "npz", npz_file, *FAST, "--max", 3, "--out", tmp_path / "a.tsv")
    assert r.exit_code == 0, r.output
    ck2 = tmp_path / "mnist.pt"
    r = cli("train", "--dataset", "mnist", mnist_dir, "--arch", "cnn", "--epochs", 1, "--out", ck2, "--quiet")
    assert r.exit_code == 0, r.output
    r = cli("certify", "--model", ck2, "--dataset", "mnist", mnist_dir, *FAST, "--max", 2, "--out", tmp_path / "b.tsv")
    assert r.exit_code == 0, r.output
    assert len(read_tsv(tmp_path / "b.tsv")) == 2


def test_onnx_and_factory_models(cli, tmp_path, npz_file, monkeypatch):
    net = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    path = tmp_path / "m.onnx"
    export_onnx(net, torch.rand(1, 5), path)
    r = cli("certify", "--model", path, "--dataset", "npz", npz_file, "--sigma", 0.1, *FAST, "--max", 2,
            "--out", tmp_path / "o.tsv")
    assert r.exit_code == 0, r.output
    (tmp_path / "userarch.py").write_text(textwrap.dedent("""
        import torch.nn as nn
        def make():
            return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.save(net.state_dict(), tmp_path / "w.pt")
    r = cli("certify", "--model", "userarch:make", "--weights", tmp_path / "w.pt", "--dataset", "npz", npz_file,
            "--sigma", 0.1, *FAST, "--max", 2, "--out", tmp_path / "f.tsv")
    assert r.exit_code == 0, r.output
    # the two loaders give the same certificates for the same network
    assert [x["radius"] for x in read_tsv(tmp_path / "o.tsv")] == [x["radius"] for x in read_tsv(tmp_path / "f.tsv")]
    # a factory without weights is never certified by accident: an error, unless --random-init says so
    common = ["--dataset", "npz", npz_file, "--sigma", 0.1, *FAST, "--max", 2]
    assert_clean_error(cli("certify", "--model", "userarch:make", *common, "--out", tmp_path / "g.tsv"),
                       "--weights", "--random-init")
    assert not (tmp_path / "g.tsv").exists()
    r = cli("certify", "--model", "userarch:make", "--random-init", *common, "--out", tmp_path / "h.tsv")
    assert r.exit_code == 0, r.output
    assert_clean_error(cli("certify", "--method", "adaptive", "--standard-model", "userarch:make",
                           "--mixing-weight", 0.9, "--model", path, *common, "--out", tmp_path / "i.tsv"),
                       "--standard-model-weights FILE")
    assert_clean_error(cli("train", "--method", "denoiser", "--objective", "stability", "--classifier",
                           "userarch:make", "--out", tmp_path / "d.pt"), "--classifier-weights FILE")


# ------------------------------------------------------------------ bad input: one line, non-zero exit
def _nan_factory(tmp_path, monkeypatch):
    (tmp_path / "nannet.py").write_text(textwrap.dedent("""
        import torch, torch.nn as nn
        class NaNNet(nn.Module):
            def forward(self, x):
                out = torch.zeros(x.shape[0], 10)
                return out / (x.flatten(1).sum(1, keepdim=True) > 1e9).float()  # 0/0 = nan
        def make():
            return NaNNet()
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "nannet:make"


@pytest.mark.parametrize("case", ["missing_ckpt", "corrupt_ckpt", "missing_data", "corrupt_data", "shape_mismatch",
                                  "sigma_zero", "sigma_negative", "alpha_zero", "alpha_one", "n0_zero", "n_zero",
                                  "nan_logits", "unknown_arch", "unsupported_onnx", "unknown_dataset",
                                  "cuda_missing", "amp_on_cpu", "resume_without_out", "skip_zero"])
def test_bad_input_is_a_one_line_error(cli, tmp_path, monkeypatch, case, cifar_dir):
    base = ["certify", "--n0", 5, "--n", 20, "--max", 1, "--quiet", "--out", tmp_path / "r.tsv"]
    if case == "missing_ckpt":
        args, words = base + ["--model", tmp_path / "nope.pt"], ["not found"]
    elif case == "corrupt_ckpt":
        (tmp_path / "c.pt").write_bytes(b"\x00" * 40)
        args, words = base + ["--model", tmp_path / "c.pt"], ["not a valid torch checkpoint"]
    elif case == "missing_data":
        args, words = base + ["--dataset", "mnist", tmp_path / "none"], ["does not exist"]
    elif case == "corrupt_data":
        (tmp_path / "d.npz").write_bytes(b"PK\x03\x04broken")
        args, words = base + ["--dataset", "npz", tmp_path / "d.npz"], ["cannot read"]
    elif case == "shape_mismatch":
        args, words = base + ["--dataset", "cifar10", cifar_dir], ["shape"]
    elif case == "sigma_zero":
        args, words = base + ["--sigma", 0], ["sigma"]
    elif case == "sigma_negative":
        args, words = base + ["--sigma", -0.5], ["sigma"]
    elif case == "alpha_zero":
        args, words = base + ["--alpha", 0], ["alpha"]
    elif case == "alpha_one":
        args, words = base + ["--alpha", 1.5], ["alpha"]
    elif case == "n0_zero":
        args, words = ["certify", "--n0", 0, "--n", 20, "--out", tmp_path / "r.tsv"], ["n0"]
    elif case == "n_zero":
        args, words = ["certify", "--n0", 5, "--n", 0, "--out", tmp_path / "r.tsv"], ["n0 and n"]
    elif case == "nan_logits":
        args, words = base + ["--model", _nan_factory(tmp_path, monkeypatch), "--random-init", "--sigma", 0.25], ["NaN"]
    elif case == "unknown_arch":
        save_checkpoint(tmp_path / "u.pt", nn.Linear(1, 1), "mlp", {}, (1, 8, 8), 10)
        ck = torch.load(tmp_path / "u.pt", weights_only=True)
        ck["arch"] = "vit_huge"
        torch.save(ck, tmp_path / "u.pt")
        args, words = base + ["--model", tmp_path / "u.pt"], ["unknown architecture", "vit_huge"]
    elif case == "unsupported_onnx":
        onnx = pytest.importorskip("onnx")
        from onnx import TensorProto, helper
        g = helper.make_graph([helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("Hardmax", ["f"], ["y"])],
                              "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])])
        onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(tmp_path / "s.onnx"))
        args, words = base + ["--model", tmp_path / "s.onnx", "--sigma", 0.25], ["Hardmax"]
    elif case == "unknown_dataset":
        args, words = base + ["--dataset", "imagenet"], ["unknown dataset"]
    elif case == "cuda_missing":
        if torch.cuda.is_available():
            pytest.skip("CUDA is available here")
        args, words = base + ["--device", "cuda"], ["CUDA"]
    elif case == "amp_on_cpu":
        args, words = base + ["--device", "cpu", "--amp"], ["--amp"]
    elif case == "resume_without_out":
        args, words = ["certify", "--resume"], ["--out"]
    else:
        args, words = base + ["--skip", 0], ["--skip"]
    assert_clean_error(cli(*args), *words)


def test_train_bad_input(cli, tmp_path):
    assert_clean_error(cli("train", "--arch", "resnet9000", "--epochs", 1, "--out", tmp_path / "m.pt"),
                       "unknown architecture")
    assert_clean_error(cli("train", "--sigma", 0, "--epochs", 1, "--out", tmp_path / "m.pt"), "sigma")
    assert_clean_error(cli("train", "--hidden", "a,b", "--out", tmp_path / "m.pt"), "--hidden")


def test_console_script_runs_in_a_subprocess(tmp_path):
    """The installed `certkit` entry point, as a user runs it (no in-process state)."""
    exe = [sys.executable, "-c", "from certkit.cli import main; main()"]
    r = subprocess.run(exe + ["certify", "--n0", "5", "--n", "50", "--max", "2", "--quiet",
                              "--out", str(tmp_path / "r.tsv")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "certified accuracy" in r.stdout
    r = subprocess.run(exe + ["certify", "--sigma", "-1"], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "Traceback" not in r.stderr and r.stderr.strip().startswith("Error:")


def test_eps_has_one_meaning_per_option_name(cli):
    """--eps is an ABSOLUTE radius in data-range units everywhere it exists (verify, train); the L2 radius of
    conformal is --eps-l2 and the relative radius of soundness generate is --eps-rel; the old names give a one-line
    error pointing to the new one."""
    for cmd in (["verify"], ["train"]):
        text = " ".join(cli(*cmd, "--help").output.split())
        assert "--eps FLOAT" in text and "ABSOLUTE" in text, cmd
    conf = " ".join(cli("conformal", "--help").output.split())
    assert "--eps-l2 FLOAT" in conf and "L2 radius (ABSOLUTE" in conf and "--eps FLOAT" not in conf
    gen = " ".join(cli("soundness", "generate", "--help").output.split())
    assert "--eps-rel FLOAT" in gen and "RELATIVE" in gen and "--eps FLOAT" not in gen
    r = cli("conformal", "--eps", "0.1")
    assert r.exit_code == 2 and "renamed --eps-l2" in r.output and "Traceback" not in r.output
    r = cli("soundness", "generate", "--out", "x", "--eps", "0.2")
    assert r.exit_code == 2 and "renamed --eps-rel" in r.output


def test_choices_and_help_come_from_the_registries(cli):
    from certkit.certify.smoothing import smoothing_methods
    from certkit.soundness_bench.adapters import audit_verifiers
    from certkit.train import training_methods

    assert set(training_methods()) >= {"natural", "gaussian", "ibp", "crown-ibp", "dual", "rct"}
    certify_help = "".join(cli("certify", "--help").output.split())  # no whitespace: click wraps at hyphens
    train_help = "".join(cli("train", "--help").output.split())
    run_help = "".join(cli("soundness", "run", "--help").output.split())
    assert all(f"{n}:" in certify_help for n in smoothing_methods())
    assert all(f"{n}:" in train_help for n in training_methods())
    assert all(n in run_help for n in audit_verifiers()) and "DELIBERATELYUNSOUND" in run_help


def test_every_subcommand_takes_quiet_and_seed_where_it_applies(cli):
    for cmd in (["certify"], ["predict"], ["verify"], ["conformal"], ["train"], ["soundness", "generate"],
                ["soundness", "run"], ["soundness", "score"]):
        assert "--quiet" in cli(*cmd, "--help").output, cmd
    for cmd in (["certify"], ["predict"], ["verify"], ["conformal"], ["train"], ["soundness", "generate"]):
        assert "--seed" in cli(*cmd, "--help").output, cmd


def test_stored_radii_are_exact_and_resume_checks_batch_and_device(cli, tmp_path):
    """The TSV holds each radius exactly as computed (it was rounded to nearest 4 decimals, half of the time up), and
    --resume refuses another --batch or device, on which the noise stream depends."""
    from certkit.certify import GaussianSmoothing, NoiseSampler, input_generator
    from certkit.datasets import load_dataset
    from certkit.models import load_model

    out = tmp_path / "c.tsv"
    r = cli("certify", "--n", 500, "--n0", 20, "--max", 6, "--batch", 250, "--device", "cpu", "--quiet", "--out", out)
    assert r.exit_code == 0, r.output
    lines = [ln.split("\t") for ln in out.read_text().splitlines()[1:]]
    g = GaussianSmoothing(NoiseSampler(load_model().module, 0.25, 250, "cpu"))
    x = load_dataset("digits").x
    for idx, _, pred, radius, *_ in lines:
        cert = g.certify(x[int(idx)], 20, 500, 0.001, input_generator(0, int(idx), torch.device("cpu")))
        assert (cert.prediction, cert.radius) == (int(pred), float(radius))
    assert_clean_error(cli("certify", "--n", 500, "--n0", 20, "--max", 6, "--batch", 100, "--device", "cpu",
                           "--quiet", "--out", out, "--resume"), "batch: 250 -> 100")
