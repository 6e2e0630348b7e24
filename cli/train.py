"""``certkit train``: every registered training method through one harness."""
from __future__ import annotations

from pathlib import Path

import click

from certkit.cli.main import main
from certkit.cli.options import (
    DATASET_HELP,
    LazyHelpOption,
    RegistryCommand,
    architecture_option_specs,
    architecture_options,
    build_config,
    device_option,
    friendly,
    given_registry_options,
    maps_to,
    method_option_specs,
    options_for,
    quiet_option,
    seed_option,
    threads_option,
    training_help,
    training_option_specs,
)
from certkit.common.errors import CertkitError


def _ints(text: str | None, name: str) -> list[int]:
    if not text:
        return []
    try:
        return [int(h) for h in text.split(",")]
    except ValueError:
        raise CertkitError(f"{name} must be comma-separated integers, got {text!r}") from None


_ALIASES = {"batch": "batch_size"}


def _recipe(ctx, param, value):
    """Load a recipe into the command's defaults: options on the command line still win. ``none``: no recipe, not
    even the recommended one."""
    if value is None:
        return None
    ctx.meta["certkit_config"] = value
    if value.lower() == "none":
        return value
    from certkit.train.recipe import load_recipe

    try:
        values = load_recipe(value)
    except CertkitError as e:
        raise click.BadParameter(str(e), ctx=ctx, param=param) from None
    names = {p.name for p in ctx.command.get_params(ctx)} - {"config"}
    values = {_ALIASES.get(k, k): v for k, v in values.items()}
    unknown = sorted(set(values) - names)
    if unknown:
        raise click.BadParameter(f"{value}: unknown option(s) {', '.join(unknown)}", ctx=ctx, param=param)
    ctx.meta["certkit_recipe_values"] = values
    ctx.default_map = {**(ctx.default_map or {}), **values}
    return value


def _recipes_help() -> str:
    from certkit.train.recipe import recommended_recipes, shipped_recipes

    rec = "; ".join(f"{m} on {d}: {r}" for (m, d), r in sorted(recommended_recipes().items(), key=lambda i: i[0][::-1]))
    return ("A YAML recipe: option names to values (lists for comma lists); the command line overrides it. A file, or "
            "a shipped recipe: " + ", ".join(shipped_recipes()) + ". Without --config, a method and data set with a "
            "recommended recipe start from it (" + rec + "); --config none trains with the plain defaults.")


def _is_default(ctx: click.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is None or source == click.core.ParameterSource.DEFAULT


def _recommended(ctx: click.Context, kw: dict, given: dict, arch_specs: dict) -> str | None:
    """Without --config: fill every option left at its default from the recommended recipe of (method, dataset), if
    one is shipped; returns its name. The recipe's architecture is dropped when the user gave options of another
    architecture (e.g. --hidden for the default mlp)."""
    from certkit.train.recipe import load_recipe, recommended_recipe

    if ctx.meta.get("certkit_config") is not None:
        return None
    name = recommended_recipe(kw["method"], kw["dataset"])
    if name is None:
        return None
    values = {_ALIASES.get(k, k): v for k, v in load_recipe(name).items() if k not in ("method", "dataset")}
    if "arch" in values and kw["arch"] is None and set(given) & set(arch_specs):
        values.pop("arch")
    params = {p.name: p for p in ctx.command.get_params(ctx)}
    for key, value in values.items():
        if key in params and _is_default(ctx, key) and (key not in given):
            typed = params[key].type_cast_value(ctx, value)
            if key in kw:
                kw[key] = typed
            else:
                given[key] = typed
    ctx.meta["certkit_recipe_values"] = values
    return name


def _scale_eps_train(ctx: click.Context, kw: dict, given: dict) -> None:
    """A recipe's training radius is a multiple of its eps (e.g. 1.1 eps): when --eps is given and --eps-train is not,
    keep the multiple for the given eps instead of training at the recipe's radius."""
    values = ctx.meta.get("certkit_recipe_values") or {}
    if "eps_train" in given and "eps" in values and float(values["eps"]) > 0 and "eps_train" in values \
            and ctx.get_parameter_source("eps") == click.core.ParameterSource.COMMANDLINE \
            and ctx.get_parameter_source("eps_train") != click.core.ParameterSource.COMMANDLINE:
        given["eps_train"] = kw["eps"] * float(values["eps_train"]) / float(values["eps"])


@maps_to("certkit.train.network:TrainConfig", handled=("lr_milestones", "resume", "quiet"))
@main.command(cls=RegistryCommand, option_specs=training_option_specs,
              short_help="Train a model with any registered method (checkpoint, log, curves).")
@click.option("--config", default=None, is_eager=True, expose_value=False, callback=_recipe, cls=LazyHelpOption,
              help_fn=_recipes_help)
@click.option("--method", type=str, default="gaussian", show_default=True, cls=LazyHelpOption,
              help_fn=training_help)
@click.option("--dataset", default="digits", show_default=True, help=DATASET_HELP)
@click.argument("data_path", required=False, type=click.Path())
@click.option("--arch", default=None,
              help="mlp (the default), cnn, cnn_a, cnn_7layer_bn, dm_large, resnet_small, cifar_resnet20 or "
                   "cifar_resnet110; denoiser: dncnn (the default) or ae_dncnn (DnCNN + autoencoder of ZO-AE-DS).")
@click.option("--eps", type=float, default=0.0, show_default=True,
              help="ABSOLUTE Linf radius in [0,1] pixel units: training radius of ibp/crown-ibp and the radius of the "
                   "per-epoch IBP / CROWN-IBP verified accuracy.")
@click.option("--augment", default="auto", show_default=True,
              help="Training-data augmentation: auto (random crop after 4-pixel zero padding and horizontal flip for "
                   "cifar10, as the papers train; none for other data), none, or a list: crop,flip.")
@click.option("--init", type=click.Choice(["default", "ibp"]), default="default", show_default=True,
              help="ibp: IBP initialization (Shi et al. 2021).")
@click.option("--grad-clip", type=float, default=0.0, show_default=True, help="Max gradient norm (0: off).")
@click.option("--lr-milestones", default=None, help="Epochs at which lr is multiplied by --lr-gamma, e.g. 50,60.")
@click.option("--lr-gamma", type=float, default=0.1, show_default=True,
              help="Factor the learning rate is multiplied by at each --lr-milestones epoch or --lr-step period.")
@click.option("--sigma", type=float, default=0.25, show_default=True,
              help="Training noise std in [0,1] pixel units (gaussian, dual, rct; denoiser: the noise it removes, "
                   "match it to the certify --sigma).")
@click.option("--epochs", type=int, default=30, show_default=True, help="Passes over the training split.")
@click.option("--batch", "batch_size", type=int, default=64, show_default=True,
              help="Examples per optimizer step (the global batch, shared by torchrun ranks).")
@click.option("--optimizer", type=click.Choice(["adam", "sgd"]), default="adam", show_default=True,
              help="Adam, or SGD with momentum 0.9.")
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Learning rate (the start of its schedule).")
@click.option("--weight-decay", type=float, default=0.0, show_default=True, help="L2 weight decay of the optimizer.")
@click.option("--lr-step", type=int, default=0, show_default=True, help="StepLR period in epochs (0: constant).")
@click.option("--val-fraction", type=float, default=0.1, show_default=True,
              help="Last fraction of the train split held out for validation.")
@seed_option
@device_option
@threads_option
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Checkpoint to write (certkit format).")
@click.option("--resume", is_flag=True, help="Continue training --out from its last epoch.")
@quiet_option
@friendly
@click.pass_context
def train(ctx, lr_milestones, resume, quiet, **kw):
    """Train a classifier and save a certkit checkpoint (with a CSV log and a PNG of the curves beside it).

    Under torchrun (e.g. `torchrun --nproc_per_node 2 -m certkit.cli train ...`) processes train data-parallel.
    """
    from certkit.common import distributed
    from certkit.common.options import parsed_values
    from certkit.train import TrainConfig, training_methods
    from certkit.train import train as run_train

    given = given_registry_options(ctx, kw)
    method = kw["method"]
    if method not in training_methods():
        raise CertkitError(f"unknown training method {method!r}: choose from {', '.join(training_methods())}")
    arch_specs = architecture_option_specs()
    kw["lr_milestones"] = lr_milestones
    recipe = _recommended(ctx, kw, given, arch_specs)
    lr_milestones = kw.pop("lr_milestones")
    _scale_eps_train(ctx, kw, given)
    if recipe is not None and not quiet and distributed.world()[0] == 0:
        click.echo(f"recipe: {recipe} (recommended for {method} on {kw['dataset']}; options given here override it, "
                   f"--config none trains with the plain defaults)")
    arch = kw["arch"] or training_methods()[method].default_arch
    arch_given = {k: v for k, v in given.items() if k in arch_specs}
    arch_config = options_for(arch_given, arch_specs, arch, [arch], what="--arch")
    arch_classes = architecture_options()
    if arch in arch_classes:
        arch_config = {k: v for k, v in parsed_values(arch_classes[arch], arch_config).items() if v is not None}
    options = options_for({k: v for k, v in given.items() if k not in arch_specs}, method_option_specs(), method,
                          [method])
    cfg = build_config(TrainConfig, kw, arch_config=arch_config, lr_milestones=_ints(lr_milestones, "--lr-milestones"),
                       options=options)
    row = run_train(cfg, resume=resume, quiet=quiet)
    if distributed.world()[0] != 0:
        return
    nan = float("nan")
    fmt = lambda k: "" if row.get(k, nan) != row.get(k, nan) else f"  {k.replace('_', ' ')} {row[k]:.3f}"
    click.echo(f"epoch {row['epoch']}: loss {row['loss']:.4f}" + fmt("train_accuracy").replace("train accuracy",
                                                                                               "train acc")
               + fmt("val_mse").replace("val mse", "val MSE")
               + fmt("val_accuracy").replace("val accuracy", "val acc")
               + fmt("val_adv_accuracy").replace("val adv accuracy", "val acc attacked")
               + fmt("val_noisy_accuracy").replace("val noisy accuracy", "val acc under noise")
               + fmt("val_ibp_verified") + fmt("val_crown_ibp_verified") + fmt("val_tightness"))
    out = Path(cfg.out)
    click.echo(f"checkpoint: {out}\nlog: {out.with_suffix('.log.csv')}\ncurves: {out.with_suffix('.curves.png')}")
