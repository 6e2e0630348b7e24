"""runs/config.py: the shared run configuration, prepare() and the sigma and summary rules of every run."""
import json
import math

import pytest
import torch

from certkit.common.errors import CertkitError
from certkit.models import load_model
from certkit.runs.config import DatasetRunConfig, RunConfig, prepare, resolve_sigma, write_summary


def test_results_path_default_and_resume_rule(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = RunConfig()
    path = cfg.results_path("certify", "gaussian")
    assert path.startswith("certkit-results/certify_gaussian_") and path.endswith(".tsv") and cfg.out == path
    assert RunConfig(out="x.tsv").results_path("a") == "x.tsv"
    with pytest.raises(CertkitError, match="--resume needs --out"):
        RunConfig(resume=True).results_path("a")


def test_prepare_selects_inputs_and_puts_the_model_in_eval_mode():
    cfg = DatasetRunConfig(skip=10, max_inputs=7, device="cpu")
    p = prepare(cfg)
    assert p.indices == list(range(0, 70, 10)) and p.device == torch.device("cpu")
    assert not p.module.training
    summary = p.inputs_summary(cfg, done=7)
    assert summary["selected"] == 7 and summary["full_split"] is False
    assert p.settings(cfg)["seed"] == 0 and p.settings(cfg)["dataset"] == "digits"
    with pytest.raises(CertkitError, match="--denoiser"):
        prepare(DatasetRunConfig(denoiser_weights="w.pt", device="cpu"))


def test_resolve_sigma():
    model = load_model(None)                                # the bundled model, trained at sigma 0.25
    assert resolve_sigma(None, model) == 0.25
    with pytest.warns(UserWarning, match="trained with sigma=0.25"):
        assert resolve_sigma(0.5, model) == 0.5
    for bad in (0.0, -1.0, math.nan):
        with pytest.raises(CertkitError, match="sigma must be > 0"):
            resolve_sigma(bad, model)


def test_write_summary_beside_the_tsv(tmp_path):
    cfg = RunConfig(out=str(tmp_path / "sub" / "run.tsv"))
    path = write_summary({"radius": 0.5}, cfg)
    assert path == str(tmp_path / "sub" / "run.summary.json")
    assert json.loads(open(path).read()) == {"radius": 0.5}
    cfg = RunConfig(out="x.tsv", summary_json=str(tmp_path / "s.json"))
    assert write_summary({}, cfg) == str(tmp_path / "s.json")
