"""Training recipes as YAML files (train/recipe.py, train/recipes/) and data augmentation."""
import pytest
import torch

from certkit.common.errors import CertkitError
from certkit.train.harness import TrainingRun
from certkit.train.network import Batch, TrainConfig, augment, augmentations
from certkit.train.recipe import load_recipe, shipped_recipes

from conftest import assert_clean_error


def _params(args):
    from certkit.cli import main

    cmd = main.commands["train"]
    with cmd.make_context("train", [str(a) for a in args]) as ctx:
        return dict(ctx.params)


def test_every_shipped_recipe_is_valid_and_every_train_option_is_expressible(tmp_path):
    from certkit.cli import main

    assert {"digits_ibp", "digits_crown_ibp", "digits_sabr", "digits_mtl_ibp", "mnist_ibp_shi_0.4",
            "mnist_crown_ibp_0.3", "mnist_sabr_0.1", "mnist_mtl_ibp_0.3", "cifar10_ibp_shi_8",
            "cifar10_crown_ibp_2", "cifar10_sabr_2", "cifar10_mtl_ibp_8"} <= set(shipped_recipes())
    for name in shipped_recipes():
        params = _params(["--config", name, "--out", tmp_path / "m.pt"])
        for key, value in load_recipe(name).items():
            key = {"batch": "batch_size"}.get(key, key)
            assert str(params[key]) == str(value) or params[key] == value, (name, key)
    # a file naming every option of `certkit train` (with its default) is accepted
    options = [p for p in main.commands["train"].params if p.name not in ("config", "help") and p.expose_value]
    def value(p):
        if getattr(p, "is_flag", False):
            return "false"
        return "null" if p.default is None else p.default

    lines = [f"{p.opts[0].lstrip('-') if p.opts[0].startswith('--') else p.name}: {value(p)}"
             for p in options if p.name != "out"]
    (tmp_path / "all.yaml").write_text("\n".join(lines) + "\nout: m.pt\n")
    params = _params(["--config", tmp_path / "all.yaml"])
    assert params["out"] == "m.pt" and params["lr"] == 1e-3


def test_command_line_overrides_the_recipe_and_the_checkpoint_records_it(cli, tmp_path):
    (tmp_path / "r.yaml").write_text("method: natural\nhidden: [16, 16]\nepochs: 5\nlr: 0.01\nlr-milestones: [3]\n")
    params = _params(["--config", tmp_path / "r.yaml", "--epochs", 2, "--out", tmp_path / "m.pt"])
    assert params["epochs"] == 2 and params["lr"] == 0.01 and params["hidden"] == "16,16"
    r = cli("train", "--config", tmp_path / "r.yaml", "--epochs", 1, "--quiet", "--out", tmp_path / "m.pt")
    assert r.exit_code == 0, r.output
    recipe = torch.load(tmp_path / "m.pt", weights_only=True)["metadata"]["recipe"]
    assert recipe["epochs"] == 1 and recipe["lr"] == 0.01 and recipe["arch_config"] == {"hidden": [16, 16]}
    assert recipe["lr_milestones"] == [3] and recipe["method"] == "natural"
    (tmp_path / "bad.yaml").write_text("methd: ibp\n")
    assert_clean_error(cli("train", "--config", tmp_path / "bad.yaml", "--out", tmp_path / "x.pt"), "methd")
    (tmp_path / "list.yaml").write_text("- ibp\n")
    assert_clean_error(cli("train", "--config", tmp_path / "list.yaml", "--out", tmp_path / "x.pt"), "mapping")


def test_augmentation_crops_and_flips_reproducibly_and_is_off_for_digits():
    assert augmentations(TrainConfig(out="m", dataset="cifar10")) == ["crop", "flip"]
    assert augmentations(TrainConfig(out="m", dataset="digits")) == []
    assert augmentations(TrainConfig(out="m", dataset="digits", augment="flip")) == ["flip"]
    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).view(2, 3, 5, 5)
    b = Batch(torch.arange(2), torch.arange(2), 1, 0)
    run = TrainingRun(torch.device("cpu"), generator=torch.Generator().manual_seed(0))
    a = augment(x, b, run, ["crop", "flip"], pad=2)
    run2 = TrainingRun(torch.device("cpu"), generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, augment(x, b, run2, ["crop", "flip"], pad=2)) and a.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):  # each output is a 5x5 window of the padded image, maybe mirrored
        windows = [padded[i, :, dy:dy + 5, dx:dx + 5] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(a[i], w) or torch.equal(a[i], w.flip(-1)) for w in windows)
    flip_only = augment(x, b, TrainingRun(torch.device("cpu"), generator=torch.Generator().manual_seed(1)), ["flip"])
    assert all(torch.equal(flip_only[i], x[i]) or torch.equal(flip_only[i], x[i].flip(-1)) for i in range(2))


def test_unknown_augmentation_is_refused(cli, tmp_path):
    assert_clean_error(cli("train", "--augment", "rotate", "--out", tmp_path / "m.pt"), "--augment")
    with pytest.raises(CertkitError, match="missing.yaml"):
        load_recipe(str(tmp_path / "missing.yaml"))


def test_a_bare_method_starts_from_its_recommended_recipe(cli, tmp_path):
    """Defaults are the recommendation: `--method crown-ibp` on digits trains the shipped digits_crown_ibp_long
    settings; options given override them, a given --eps keeps the recipe's eps_train / eps ratio, options of another
    architecture drop the recipe's, and --config none gives the plain defaults."""
    from certkit.train.recipe import recommended_recipe, recommended_recipes

    assert recommended_recipe("crown-ibp", "digits") == "digits_crown_ibp_long"
    assert recommended_recipe("gaussian", "digits") is None
    for (method, dataset), name in recommended_recipes().items():     # each names its own method and data set
        recipe = load_recipe(name)
        assert (recipe["method"], recipe["dataset"]) == (method, dataset) and "recommended" not in recipe

    def recipe_of(*args):
        out = tmp_path / f"m{len(list(tmp_path.glob('*.pt')))}.pt"
        r = cli("train", *args, "--epochs", 1, "--quiet", "--out", out)
        assert r.exit_code == 0, r.output
        return torch.load(out, weights_only=True)["metadata"]["recipe"]

    bare = recipe_of("--method", "crown-ibp")
    assert (bare["arch"], bare["eps"], bare["eps_train"], bare["kappa_final"], bare["loss_fusion"]) == \
        ("cnn_a", 0.1, 0.11, 0.0, False)
    scaled = recipe_of("--method", "crown-ibp", "--eps", 0.2)
    assert scaled["eps"] == 0.2 and scaled["eps_train"] == pytest.approx(0.22)
    assert recipe_of("--method", "crown-ibp", "--eps", 0.2, "--eps-train", 0.3)["eps_train"] == 0.3
    mlp = recipe_of("--method", "ibp", "--hidden", 16)
    assert mlp["arch"] == "mlp" and mlp["arch_config"] == {"hidden": [16]} and mlp["eps"] == 0.1
    plain = recipe_of("--method", "crown-ibp", "--config", "none", "--eps", 0.1)
    assert plain["arch"] == "mlp" and plain["eps_train"] is None and plain["loss_fusion"] is True
