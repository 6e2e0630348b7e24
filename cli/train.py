"""``certkit train``: every registered training method through one harness."""
from __future__ import annotations

from pathlib import Path

import click

from certkit.cli.main import main
from certkit.cli.options import (
    DATASET_HELP,
    LazyHelpOption,
    build_config,
    device_option,
    friendly,
    quiet_option,
    seed_option,
    training_help,
)
from certkit.common.errors import CertkitError


def _ints(text: str | None, name: str) -> list[int]:
    if not text:
        return []
    try:
        return [int(h) for h in text.split(",")]
    except ValueError:
        raise CertkitError(f"{name} must be comma-separated integers, got {text!r}") from None


def _recipe(ctx, param, value):
    """Load a recipe into the command's defaults: options on the command line still win."""
    if value is None:
        return None
    from certkit.train.recipe import load_recipe

    try:
        values = load_recipe(value)
    except CertkitError as e:
        raise click.BadParameter(str(e), ctx=ctx, param=param) from None
    names = {p.name for p in ctx.command.params} - {"config"}
    aliases = {"batch": "batch_size"}
    values = {aliases.get(k, k): v for k, v in values.items()}
    unknown = sorted(set(values) - names)
    if unknown:
        raise click.BadParameter(f"{value}: unknown option(s) {', '.join(unknown)}", ctx=ctx, param=param)
    ctx.default_map = {**(ctx.default_map or {}), **values}
    return value


def _recipes_help() -> str:
    from certkit.train.recipe import shipped_recipes

    return ("A YAML recipe: option names to values (lists for comma lists); the command line overrides it. A file, or "
            "a shipped recipe: " + ", ".join(shipped_recipes()) + ".")


@main.command()
@click.option("--config", default=None, is_eager=True, expose_value=False, callback=_recipe, cls=LazyHelpOption,
              help_fn=_recipes_help)
@click.option("--method", type=str, default="gaussian", show_default=True, cls=LazyHelpOption,
              help_fn=training_help)
@click.option("--dataset", default="digits", show_default=True, help=DATASET_HELP)
@click.argument("data_path", required=False, type=click.Path())
@click.option("--alpha", type=float, default=0.1, show_default=True, help="rct: target miscoverage of the sets.")
@click.option("--init-from", type=click.Path(dir_okay=False), default=None,
              help="dual, rct: the noise-trained certkit or reference checkpoint training starts from; denoiser: a "
                   "denoiser checkpoint to continue from (e.g. MSE-trained, then fine-tuned with stability).")
@click.option("--consistency", type=float, default=0.0, show_default=True,
              help="dual: consistency-loss weight over 4 noise copies (the DRS paper uses 15).")
@click.option("--arch", default=None,
              help="mlp (the default), cnn, cnn_a, cnn_7layer_bn, dm_large, resnet_small, cifar_resnet20 or "
                   "cifar_resnet110; denoiser: dncnn (the default) or ae_dncnn (DnCNN + autoencoder of ZO-AE-DS).")
@click.option("--hidden", default=None, help="mlp hidden widths, comma separated (default 256,256).")
@click.option("--width", type=int, default=None,
              help="Base width of cnn_7layer_bn / dm_large / resnet_small / cnn; channels of dncnn / ae_dncnn.")
@click.option("--depth", type=int, default=None, help="denoiser: convolution layers of the DnCNN (default 5).")
@click.option("--latent", type=int, default=None,
              help="denoiser ae_dncnn: size of the autoencoder's code (default 32).")
@click.option("--classifier", type=click.Path(dir_okay=False), default=None,
              help="denoiser: the frozen classifier F (any --model source) the denoiser is trained for; needed by "
                   "the stability and consistency objectives and for the validation accuracy of F(D(x + noise)). "
                   "mixing: the robust base classifier (smoothed with --sigma).")
@click.option("--standard-model", default=None,
              help="mixing: the standard (accurate) classifier g whose mixture with the smoothed --classifier the "
                   "mixing network weighs.")
@click.option("--mixing-floor", type=float, default=0.0, show_default=True,
              help="mixing: least weight of the robust part; above 0.5 the mixture keeps the certificate of that "
                   "fixed weight, else it is empirical only.")
@click.option("--objective", type=click.Choice(["mse", "stability", "consistency"]), default="mse", show_default=True,
              help="denoiser: mse ||D(x+e) - x||^2; stability CE(F(D(x+e)), F(x)) (Salman et al. 2020); consistency "
                   "(contrastive agreement of F(D(.)) across noise levels, rRCM-style, plus MSE).")
@click.option("--zeroth-order", is_flag=True,
              help="denoiser, stability objective: F is a black box queried for outputs only; its gradient is "
                   "estimated from queries (ZO-AE-DS, Zhang et al. 2022; with ae_dncnn the decoder is frozen and "
                   "merged into the black box, and the estimate is taken in the code space).")
@click.option("--zo-estimator", type=click.Choice(["rge", "cge"]), default="rge", show_default=True,
              help="rge: --zo-queries random directions (q + 1 queries per example and step); cge: every coordinate "
                   "(d + 1 queries).")
@click.option("--zo-queries", type=int, default=20, show_default=True, help="q: RGE random directions per example.")
@click.option("--zo-mu", type=float, default=0.005, show_default=True,
              help="Finite-difference step of the zeroth-order estimate (units of the code / pixels).")
@click.option("--bn", is_flag=True, help="mlp: BatchNorm after every hidden layer.")
@click.option("--eps", type=float, default=0.0, show_default=True,
              help="ABSOLUTE Linf radius in [0,1] pixel units: training radius of ibp/crown-ibp and the radius of the "
                   "per-epoch IBP / CROWN-IBP verified accuracy.")
@click.option("--eps-l2", type=float, default=0.0, show_default=True,
              help="rct: the L2 radius (ABSOLUTE, [0,1] pixel units) its conformal sets must withstand; mixing: the "
                   "L2 radius of the training attack on the mixed classifier.")
@click.option("--eps-train", type=float, default=None, help="Training radius if different from --eps (e.g. 1.1x).")
@click.option("--schedule", type=click.Choice(["smoothed", "linear"]), default="smoothed", show_default=True,
              help="eps ramp: smoothed (polynomial then linear, auto_LiRPA/DeepMind) or linear.")
@click.option("--schedule-start", type=int, default=1, show_default=True, help="First epoch of the eps ramp.")
@click.option("--schedule-length", type=int, default=0, show_default=True,
              help="Epochs of the eps ramp (0: half of --epochs).")
@click.option("--kappa-final", type=float, default=0.5, show_default=True,
              help="Natural-loss weight at the end of the ramp (kappa: 1 -> kappa-final with eps).")
@click.option("--beta-final", type=float, default=0.0, show_default=True,
              help="crown-ibp: CROWN-IBP bound weight at the end of the ramp (beta: 1 -> beta-final).")
@click.option("--loss-fusion/--no-loss-fusion", default=None,
              help="crown-ibp: bound the cross-entropy itself with ONE backward row instead of K - 1 margin rows "
                   "(loss fusion, Xu et al. 2020; on by default for crown-ibp, as auto_LiRPA and Shi et al. train): "
                   "about 3x cheaper per epoch on MNIST- and CIFAR-shaped conv nets; the robust loss is beta "
                   "min(fused, IBP) + (1 - beta) IBP, still an upper bound of the worst-case loss. --no-loss-fusion: "
                   "CROWN-IBP's K - 1 margin bounds (Zhang et al. 2020; 0.3-2 points more verified accuracy on the "
                   "shipped digits recipes).")
@click.option("--sabr-lambda", type=float, default=0.4, show_default=True,
              help="sabr: small-box radius as a fraction of eps (paper: MNIST 0.1 -> 0.4, 0.3 -> 0.6; CIFAR-10 "
                   "2/255 -> 0.1, 8/255 -> 0.7).")
@click.option("--expressive-alpha", type=float, default=0.5, show_default=True,
              help="mtl-ibp, cc-ibp, exp-ibp: weight of the IBP term (0 = adversarial training, 1 = IBP).")
@click.option("--attack-steps", type=int, default=8, show_default=True,
              help="sabr, mtl-ibp, cc-ibp, exp-ibp, mixing: PGD steps of the training attack (step 2.5 eps / steps).")
@click.option("--augment", default="auto", show_default=True,
              help="Training-data augmentation: auto (random crop after 4-pixel zero padding and horizontal flip for "
                   "cifar10, as the papers train; none for other data), none, or a list: crop,flip.")
@click.option("--init", type=click.Choice(["default", "ibp"]), default="default", show_default=True,
              help="ibp: IBP initialization (Shi et al. 2021).")
@click.option("--reg-lambda", type=float, default=0.0, show_default=True,
              help="Weight of the tightness + ReLU-balance warm-up regularizers (Shi et al. 2021 use 0.5).")
@click.option("--grad-clip", type=float, default=0.0, show_default=True, help="Max gradient norm (0: off).")
@click.option("--lr-milestones", default=None, help="Epochs at which lr is multiplied by --lr-gamma, e.g. 50,60.")
@click.option("--lr-gamma", type=float, default=0.1, show_default=True)
@click.option("--sigma", type=float, default=0.25, show_default=True,
              help="Training noise std in [0,1] pixel units (gaussian, dual, rct; denoiser: the noise it removes, "
                   "match it to the certify --sigma).")
@click.option("--epochs", type=int, default=30, show_default=True)
@click.option("--batch", "batch_size", type=int, default=64, show_default=True)
@click.option("--optimizer", type=click.Choice(["adam", "sgd"]), default="adam", show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--weight-decay", type=float, default=0.0, show_default=True)
@click.option("--lr-step", type=int, default=0, show_default=True, help="StepLR period in epochs (0: constant).")
@click.option("--val-fraction", type=float, default=0.1, show_default=True,
              help="Last fraction of the train split held out for validation.")
@seed_option
@device_option
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Checkpoint to write (certkit format).")
@click.option("--resume", is_flag=True, help="Continue training --out from its last epoch.")
@quiet_option
@friendly
def train(hidden, width, depth, latent, bn, lr_milestones, resume, quiet, **kw):
    """Train a classifier and save a certkit checkpoint (with a CSV log and a PNG of the curves beside it).

    Under torchrun (e.g. `torchrun --nproc_per_node 2 -m certkit.cli train ...`) processes train data-parallel.
    """
    from certkit.common import distributed
    from certkit.train import TrainConfig
    from certkit.train import train as run_train

    arch_config = {}
    if hidden:
        arch_config["hidden"] = _ints(hidden, "--hidden")
    if width is not None:
        arch_config["width"] = width
    if depth is not None:
        arch_config["depth"] = depth
    if latent is not None:
        arch_config["latent"] = latent
    if bn:
        arch_config["bn"] = True
    cfg = build_config(TrainConfig, kw, arch_config=arch_config, lr_milestones=_ints(lr_milestones, "--lr-milestones"))
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
