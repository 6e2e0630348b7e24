"""Options live with their owner: every CLI option maps to a config field, to something the command handles itself,
or to a registered class's ``Options``; a method registered from outside the package with its own option is usable
through the CLI and a recipe with nothing else; options of another method are refused."""
import dataclasses
import importlib
import json
from dataclasses import dataclass

import click
import pytest
import torch
import torch.nn.functional as F

from certkit.cli import main
from certkit.common.options import build_options, merged_specs, option

from conftest import assert_clean_error


def _commands(group: click.Group, prefix=()):
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, prefix + (name,))
        else:
            yield prefix + (name,), cmd


def _config_fields(path: str) -> set[str]:
    module, _, cls = path.partition(":")
    return {f.name for f in dataclasses.fields(getattr(importlib.import_module(module), cls))}


def test_every_cli_option_maps_to_something():
    checked = 0
    for name, cmd in _commands(main):
        if not hasattr(cmd, "config_classes"):
            # commands whose callback takes every option by name (no **kw): python itself refuses a missing one
            params = {p.name for p in cmd.params if p.expose_value}
            fn = cmd.callback
            code = (fn.__wrapped__ if hasattr(fn, "__wrapped__") else fn).__code__
            assert not code.co_flags & 0x08, f"{' '.join(name)} takes **kw but declares no config (maps_to)"
            assert params <= set(code.co_varnames[:code.co_argcount]), name
            continue
        with click.Context(cmd) as ctx:
            params = {p.name for p in cmd.get_params(ctx) if p.expose_value}
        registry = set(cmd.registry_options()) if hasattr(cmd, "registry_options") else set()
        fields = set().union(*(_config_fields(c) for c in cmd.config_classes))
        # --threads is handled for every computing command by cli.options.friendly (common/threads.py)
        unmapped = params - fields - set(cmd.handled) - registry - {"threads"}
        assert not unmapped, f"certkit {' '.join(name)}: options that map to nothing: {sorted(unmapped)}"
        checked += 1
    assert checked >= 6


def test_build_config_refuses_a_keyword_without_a_field():
    from certkit.cli.options import build_config
    from certkit.runs.certify import CertifyConfig

    with pytest.raises(TypeError, match="no_such_option"):
        build_config(CertifyConfig, {"n": 10, "no_such_option": 1})


def test_conflicting_declarations_of_one_option_are_refused():
    class A:
        @dataclass
        class Options:
            steps: int = option(8, "PGD steps")

    class B:
        @dataclass
        class Options:
            steps: int = option(10, "PGD steps")

    with pytest.raises(TypeError, match="steps"):
        merged_specs({"a": A, "b": B})
    spec = merged_specs({"a": A, "a2": A})["steps"]
    assert spec.owners == ("a", "a2") and spec.help == "a, a2: PGD steps"


def test_options_of_another_method_are_refused(cli, tmp_path):
    assert_clean_error(cli("certify", "--mixing-weight", 0.9, "--max", 1, "--out", tmp_path / "a.tsv"),
                       "--mixing-weight", "adaptive")
    assert_clean_error(cli("train", "--method", "ibp", "--eps", 0.1, "--zo-mu", 0.01, "--out", tmp_path / "m.pt"),
                       "--zo-mu", "denoiser")
    assert_clean_error(cli("train", "--method", "gaussian", "--kappa-final", 0, "--out", tmp_path / "m.pt"),
                       "--kappa-final")


def test_a_new_smoothing_method_with_its_own_option_is_one_module(cli, tmp_path):
    """A method defined here, with an option of its own (a temperature on the logits), certifies through
    `certkit certify --method` and takes `--test-temperature` with nothing else; the run records the option."""
    from certkit.certify.smoothing import register_smoothing
    from certkit.certify.smoothing.base import REGISTRY
    from certkit.certify.smoothing.gaussian import GaussianSmoothing

    @register_smoothing
    class Tempered(GaussianSmoothing):
        name = "test-tempered"
        label = "tempered"
        help = "Gaussian smoothing that records a temperature (test)"

        @dataclass
        class Options:
            test_temperature: float = option(1.0, "a temperature (test option, no unit)")

    try:
        r = cli("certify", "--method", "test-tempered", "--test-temperature", 2.5, "--n", 100, "--n0", 10, "--max", 3,
                "--quiet", "--out", tmp_path / "t.tsv")
        assert r.exit_code == 0, r.output
        summary = json.loads((tmp_path / "t.summary.json").read_text())
        assert summary["options"] == {"test_temperature": 2.5}
        settings = json.loads((tmp_path / "t.tsv.config.json").read_text())
        assert settings["test_temperature"] == 2.5              # part of what --resume checks
        assert_clean_error(cli("certify", "--test-temperature", 2.5, "--max", 1, "--out", tmp_path / "g.tsv"),
                           "--test-temperature")
    finally:
        REGISTRY.unregister("test-tempered")
    r = cli("certify", "--help")
    assert "--test-temperature" not in r.output                 # gone with its method


def test_a_new_training_method_with_its_own_option_is_one_module(cli, tmp_path):
    """Label smoothing with its own --label-smoothing, defined here: trains through the CLI and a recipe, and the
    checkpoint records the option."""
    from certkit.train import ClassifierTraining, register_training
    from certkit.train.network import REGISTRY

    @register_training
    class LabelSmoothing(ClassifierTraining):
        name = "test-label-smoothing"
        help = "cross-entropy with label smoothing (test)"

        @dataclass
        class Options:
            label_smoothing: float = option(0.1, "label-smoothing weight in [0, 1) (test)")

        def batch_loss(self, run, batch):
            xb, yb = self.xy(run, batch)
            logits = run.model(xb)
            return self.output(F.cross_entropy(logits, yb, label_smoothing=self.opts.label_smoothing), logits, yb,
                               batch)

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("method: test-label-smoothing\nhidden: [16]\nepochs: 1\nlabel-smoothing: 0.3\n")
    try:
        r = cli("train", "--method", "test-label-smoothing", "--label-smoothing", 0.2, "--hidden", 16, "--epochs", 1,
                "--out", tmp_path / "a.pt", "--quiet")
        assert r.exit_code == 0, r.output
        r = cli("train", "--config", recipe, "--out", tmp_path / "b.pt", "--quiet")
        assert r.exit_code == 0, r.output
    finally:
        REGISTRY.unregister("test-label-smoothing")
    meta_a = torch.load(tmp_path / "a.pt", weights_only=True)["metadata"]
    meta_b = torch.load(tmp_path / "b.pt", weights_only=True)["metadata"]
    assert meta_a["recipe"]["label_smoothing"] == 0.2 and meta_b["recipe"]["label_smoothing"] == 0.3
    assert "kappa_final" not in meta_a["recipe"]                # other methods' options are not recorded


def test_build_options_checks_names_and_choices():
    from certkit.certify.smoothing.lvm import LVMSmoothing
    from certkit.common.errors import CertkitError

    opts = build_options(LVMSmoothing, {"calibration_size": 20}, "--method lvm")
    assert opts.calibration_size == 20 and opts.calibration_split == "train"
    with pytest.raises(CertkitError, match="--method lvm does not take --mixing-weight"):
        build_options(LVMSmoothing, {"mixing_weight": 0.9}, "--method lvm")
    with pytest.raises(CertkitError, match="one of train, test"):
        build_options(LVMSmoothing, {"calibration_split": "val"}, "--method lvm")


def test_a_verifier_declares_its_own_options(cli, tmp_path):
    """certkit's verifier declares --bab/--no-bab: the marabou adapter does not take it, and neither does the data-set
    mode; certkit-ibp is bounds only whatever --bab says."""
    from certkit.verifiers.complete.registry import get_verifier

    assert get_verifier("certkit").bab and not get_verifier("certkit", {"bab": False}).bab
    assert not get_verifier("certkit-ibp", {"bab": True}).bab
    vnn = "tests/data/vnncomp2021"
    assert_clean_error(cli("verify", "--mode", "instance", "--onnx", f"{vnn}/test_nano.onnx", "--vnnlib",
                           f"{vnn}/test_nano.vnnlib", "--verifier", "marabou", "--no-bab"), "--no-bab", "marabou")
    assert_clean_error(cli("verify", "--eps", 0.01, "--no-bab", "--out", tmp_path / "v.tsv"), "--no-bab",
                       "--mode instance")


def test_every_option_has_help_and_every_summary_is_whole(cli):
    """`certkit --help` lists each command with a complete summary (click cuts long ones with '...'), and every option
    of every command says what it is for."""
    for group in (("--help",), ("soundness", "--help")):
        out = cli(*group).output
        commands = out.split("Commands:", 1)[1]
        assert "..." not in commands, commands
    for name, cmd in _commands(main):
        with click.Context(cmd) as ctx:
            params = cmd.get_params(ctx)
        for p in params:
            if isinstance(p, click.Option) and not p.hidden and p.name != "help":
                assert (p.help or getattr(p, "help_fn", None)), f"certkit {' '.join(name)} {p.opts[0]} has no help"
