"""The ``certkit`` command: a thin click layer over the library (no maths here).

Every user mistake surfaces as ``Error: <one line>`` with exit status 1; partial results stay on disk. Options that
several subcommands share are declared once below (``model_options``, ``data_options``, ``run_options``, ...) and
mean the same everywhere; the choices and help of ``--method`` / ``--verifier`` come from the registries.
"""
from __future__ import annotations

import dataclasses
import functools
import sys
import warnings
from pathlib import Path
from typing import Callable

import click

from certkit.common.errors import CertkitError

SIGMA_HELP = "Gaussian noise std in data-range units ([0,1] pixels). Default: the sigma the model was trained with."
EPS_HELP = ("Perturbation radius in data-range units ([0,1] pixels), an ABSOLUTE radius: Linf (balls clipped to "
            "[0,1]) unless --norm 2 says L2.")


def _friendly(fn):
    """Turn CertkitError (and Ctrl-C) into one-line messages with a non-zero exit."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CertkitError as e:
            raise click.ClickException(" ".join(str(e).split())) from None
        except OSError as e:  # the file system refused (full disk, read-only, missing directory): not a bug
            where = f"{e.filename}: " if getattr(e, "filename", None) else ""
            raise click.ClickException(f"cannot read or write {where}{e.strerror or e}") from None
        except KeyboardInterrupt:
            click.echo("\ninterrupted: rows computed so far are saved; rerun with --resume to continue", err=True)
            sys.exit(130)
    return wrapper


def _warn_to_stderr(message, category, filename, lineno, file=None, line=None):
    click.echo(f"Warning: {message}", err=True)


class LazyHelpOption(click.Option):
    """An option whose help text is computed only when help is shown (it reads a registry, which imports torch)."""

    def __init__(self, *args, help_fn: Callable[[], str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.help_fn = help_fn

    def get_help_record(self, ctx):
        if self.help_fn is not None:
            self.help = self.help_fn()
        return super().get_help_record(ctx)


def _renamed(old: str, new: str, meaning: str):
    """A hidden option that refuses an old name with a pointer to the new one (one meaning per option name)."""
    def fail(ctx, param, value):
        if value is not None:
            raise click.BadParameter(f"{old} was renamed {new}: {meaning}", ctx=ctx, param=param)
    dest = "renamed_" + old.strip("-").replace("-", "_")  # never the name of the option that replaced it
    return click.option(old, dest, type=str, default=None, hidden=True, expose_value=False, callback=fail)


def _options(*decorators):
    def apply(fn):
        for d in reversed(decorators):
            fn = d(fn)
        return fn
    return apply


def _build(cls, kw: dict, **extra):
    """A config dataclass from the command's keyword arguments (fields it does not have are ignored)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in kw.items() if k in names}, **extra)


# ------------------------------------------------------------------------------------ shared options
model_options = _options(
    click.option("--model", "model", default="bundled", show_default=True,
                 help="certkit checkpoint, reference checkpoint {'arch','state_dict'} (cifar_resnet20/110), .onnx "
                      "file, or package.module:factory. 'bundled' is the shipped digits model."),
    click.option("--weights", type=click.Path(dir_okay=False),
                 help="state_dict file for a --model package.module:factory model."),
    click.option("--allow-pickle", is_flag=True,
                 help="Load checkpoints with full pickle (EXECUTES code stored in the file). Only for files you trust; "
                      "default is torch.load(weights_only=True)."),
)
denoiser_options = _options(
    click.option("--denoiser", default=None,
                 help="Denoised smoothing: a denoiser D put in front of --model F; the run certifies F(D(x + noise)) "
                      "as ONE fixed classifier. A certkit denoiser checkpoint (certkit train --method denoiser), an "
                      ".onnx file, or package.module:factory (your own diffusion / consistency model: see README)."),
    click.option("--denoiser-weights", type=click.Path(dir_okay=False), default=None,
                 help="state_dict file for a --denoiser package.module:factory."),
)
DATASET_HELP = ("digits (bundled 8x8 scikit-learn digits), mnist DIR (IDX files), cifar10 DIR (python batches) or npz "
                "FILE (x in [0,1], integer y). The path follows as an argument: --dataset cifar10 DIR.")
data_options = _options(
    click.option("--dataset", default="digits", show_default=True, help=DATASET_HELP),
    click.argument("data_path", required=False, type=click.Path()),
    click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True),
    click.option("--skip", type=int, default=1, show_default=True, help="Use every skip-th input of the split."),
    click.option("--max", "--max-inputs", "max_inputs", type=int, default=None,
                 help="At most this many inputs (--max-inputs under torchrun, whose own options swallow --max)."),
)
seed_option = click.option("--seed", type=int, default=0, show_default=True,
                           help="Random seed (noise, attacks, data order); the same seed gives the same results.")
device_option = click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N].")
quiet_option = click.option("--quiet", is_flag=True, help="No progress bar.")
run_options = _options(
    click.option("--out", type=click.Path(dir_okay=False), default=None,
                 help="Per-row results (TSV, written row by row). Default: a new file in ./certkit-results/."),
    click.option("--resume", is_flag=True, help="Continue --out, skipping rows already in it (refused when it was "
                                                "computed with other settings)."),
    click.option("--overwrite", is_flag=True, help="Replace --out if it exists."),
    click.option("--summary-json", type=click.Path(dir_okay=False), default=None,
                 help="Summary JSON. Default: <out>.summary.json."),
    seed_option, device_option, quiet_option,
)
def _floats(text: str | None, name: str):
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{name} must be comma-separated numbers, got {text!r}") from None


def _parse_shard(ctx, param, value):
    if value is None:
        return None
    try:
        k, n = (int(v) for v in value.split("/"))
    except ValueError:
        raise click.BadParameter(f"expected K/N, e.g. 0/4, got {value!r}") from None
    return k, n


smoothing_options = _options(
    click.option("--sigma", type=float, default=None, help=SIGMA_HELP),
    click.option("--n", "--num-samples", "n", type=int, default=100_000, show_default=True,
                 help="Monte-Carlo samples for the estimate (--num-samples under torchrun, whose own options "
                      "swallow --n)."),
    click.option("--alpha", type=float, default=0.001, show_default=True,
                 help="Failure probability: the answer is wrong with probability at most alpha."),
    click.option("--batch", type=int, default=1000, show_default=True,
                 help="Noisy copies drawn at a time (one noise chunk; on the CPU the forward pass runs a chunk in the "
                      "fastest of batch/1..16 rows: speed only, same counts)."),
    click.option("--compile", "compile", is_flag=True, help="torch.compile the model (first call ~20 s)."),
    click.option("--amp", is_flag=True, help="CUDA only: bfloat16 autocast forward passes (the certificate is then "
                                             "for the model as evaluated in bfloat16)."),
    click.option("--shard", default=None, callback=_parse_shard,
                 help="K/N: certify only the K-th (0-based) of N interleaved shares of the inputs, for job arrays "
                      "(then `certkit merge`). Under torchrun ranks share the inputs by themselves."),
)


def _first(registry: dict, default: str) -> list:
    """Registry items with the default first, then by name (deliberately unsound verifiers last)."""
    return sorted(registry.items(), key=lambda kv: (kv[0] != default, not getattr(kv[1], "sound", True), kv[0]))


def _smoothing_help() -> str:
    from certkit.certify.smoothing import smoothing_methods

    return "; ".join(f"{n}: {c.help}" for n, c in _first(smoothing_methods(), "gaussian")) + \
        ". A comma list certifies the same inputs with several (one TSV per method)."


def _training_help() -> str:
    from certkit.train import training_methods

    return "; ".join(f"{n}: {c.help}" for n, c in _first(training_methods(), "gaussian")) + "."


def _verifier_help() -> str:
    from certkit.soundness_bench.adapters import audit_verifiers

    return "Built-in verifier: " + "; ".join(f"{n} ({c.help}{'' if c.sound else ', DELIBERATELY UNSOUND'})"
                                             for n, c in _first(audit_verifiers(), "certkit")) + "."


def _registry_verifier_help() -> str:
    from certkit.verifiers.registry import verifiers

    return "Verifier for --instances and --onnx: " + ", ".join(n for n, _ in _first(verifiers(), "certkit")) + "."


def _ops_help() -> str:
    from certkit.verifiers.ops import registered_ops

    return ("Only run the pre-flight check of --model / --onnx: list every unsupported op, node and shape problem. "
            "Bounded ops: " + ", ".join(e.name for e in registered_ops()) + ".")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="certkit")
def main():
    """certkit: certified robustness for PyTorch models.

    Radii and noise levels are in the model's data range ([0,1] pixels), before normalization.
    """
    from certkit.common.memory import retain_freed_memory

    warnings.showwarning = _warn_to_stderr
    retain_freed_memory()   # the command owns its process: keep freed memory for reuse (common/memory.py)


def _quiet_rank() -> bool:
    """True on torchrun ranks other than 0 (rank 0 prints the merged result)."""
    from certkit.common import distributed

    return distributed.world()[0] != 0


def _echo_outputs(cfg, summary) -> None:
    from certkit.runs import write_summary

    click.echo(f"results: {cfg.out}")
    click.echo(f"summary: {write_summary(summary, cfg)}")


# ------------------------------------------------------------------------------------ certify / predict
@main.command()
@model_options
@denoiser_options
@data_options
@smoothing_options
@run_options
@click.option("--n0", type=int, default=100, show_default=True,
              help="Selection samples (top class; for lvm also the simplex map and temperature).")
@click.option("--method", "methods", default="gaussian", show_default=True, cls=LazyHelpOption, help_fn=_smoothing_help)
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="PNG of certified accuracy against L2 radius (one curve per method).")
@click.option("--radii", default=None, callback=lambda ctx, p, v: _floats(v, "--radii"),
              help="Comma list of L2 radii (data-range units): the target radii of --method sequential, and the "
                   "radius grid of the summary table for every method.")
@click.option("--calibration-split", type=click.Choice(["train", "test"]), default="train", show_default=True,
              help="lvm: split whose LAST --calibration-size inputs choose the simplex map and temperature once per "
                   "model (they must not be certified in the same run).")
@click.option("--calibration-size", type=int, default=100, show_default=True, help="lvm: held-out inputs.")
@click.option("--calibration-noise", type=int, default=1000, show_default=True,
              help="lvm: noisy copies per held-out input.")
@click.option("--calibration-dataset", default=None,
              help="lvm: another data set for the held-out inputs (digits, mnist, cifar10, npz; default: --dataset).")
@click.option("--calibration-path", type=click.Path(), default=None, help="lvm: its directory or file.")
@click.option("--standard-model", default=None,
              help="adaptive: the standard (accurate, non-robust) classifier g mixed with the smoothed --model; any "
                   "--model source.")
@click.option("--mixing-weight", type=float, default=None,
              help="adaptive: weight w in (0.5, 1] of the smoothed model in (1 - w) softmax(g) + w smoothed; fixed "
                   "once per model. The certified radius sigma (PhiInv(pA_lower) - PhiInv(1/(2w))) shrinks as w falls.")
@click.option("--mixing-network", type=click.Path(dir_okay=False), default=None,
              help="adaptive: a trained mixing network (certkit train --method mixing) choosing w per input instead; "
                   "certified at its floor when the floor exceeds 0.5, else empirical only (every row abstains; see "
                   "mixed_predict).")
@_friendly
def certify(methods, plot, **kw):
    """Certify inputs with randomized smoothing: Gaussian (CERTIFY, Cohen et al. 2019), Dual RS, LVM-RS, sequential
    or adaptive smoothing; with --denoiser D the base classifier is F(D(x)) (denoised smoothing).

    For each input: the smoothed prediction and a certified L2 radius (data-range units) that holds with
    probability at least 1 - alpha; predict -1 means abstain. Bare `certkit certify` certifies the bundled
    digits model on the digits test split.
    """
    from certkit.certify.report import format_table, plot_curves
    from certkit.certify.smoothing import smoothing_method
    from certkit.runs.certify import CertifyConfig, default_out, run_certify

    names = [m.strip().lower() for m in methods.split(",") if m.strip()]
    if not names:
        raise CertkitError("--method is empty")
    classes = [smoothing_method(m) for m in names]
    if kw["summary_json"] and len(names) > 1:
        raise CertkitError("--summary-json names one file: with several methods each summary goes beside its TSV")
    if kw["resume"] and kw["out"] is None:
        raise CertkitError("--resume needs --out FILE (the TSV to continue)")
    curves, base = {}, kw["out"]
    for name, cls in zip(names, classes):
        out = base if base is None or len(names) == 1 else str(Path(base).with_suffix("")) + f"_{name}.tsv"
        cfg = _build(CertifyConfig, {**kw, "out": out}, method=name)
        if len(names) > 1 and base is None:
            default_out(cfg, "certify", name)
        rows, summary = run_certify(cfg)
        if _quiet_rank():
            return
        inp = summary["inputs"]
        scope = ("the full split" if inp["full_split"] else
                 f"{inp['certified']} of {inp['split_size']} (skip {inp['skip']}, max {inp['max']})")
        title = (f"{cls.label} smoothing on {inp['dataset']} {inp['split']} ({scope}): sigma={summary['sigma']:g} "
                 f"n0={cfg.n0} n={cfg.n} alpha={cfg.alpha:g}")
        click.echo(format_table(summary, title))
        _echo_outputs(cfg, summary)
        curves[f"{cls.label} sigma={summary['sigma']:g}"] = rows
    if plot:
        plot_curves(curves, plot, f"{inp['dataset']} {inp['split']}, n={cfg.n}, alpha={cfg.alpha:g}")
        click.echo(f"plot: {plot}")


@main.command()
@model_options
@denoiser_options
@data_options
@smoothing_options
@run_options
@_friendly
def predict(**kw):
    """Predict with the smoothed classifier (PREDICT, Cohen et al. 2019).

    Abstains (-1) unless a two-sided binomial test separates the top two classes at level alpha.
    """
    from certkit.runs.certify import CertifyConfig, run_predict

    cfg = _build(CertifyConfig, kw, n0=1)
    rows, summary = run_predict(cfg)
    if _quiet_rank():
        return
    click.echo(f"smoothed accuracy {summary['accuracy']:.3f}   abstain rate {summary['abstain_rate']:.3f}   "
               f"inputs {summary['n_inputs']}   sigma={summary['sigma']:g} n={cfg.n} alpha={cfg.alpha:g}")
    _echo_outputs(cfg, summary)


@main.command()
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="The merged TSV.")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
@click.option("--summary-json", type=click.Path(dir_okay=False), default=None,
              help="Summary JSON. Default: <out>.summary.json.")
@click.argument("shards", nargs=-1, required=True, type=click.Path(dir_okay=False))
@quiet_option
@_friendly
def merge(out, overwrite, summary_json, shards, quiet):
    """Merge the shard files of one `certify --shard K/N` (or `predict`) run: the rows of a single-process run.

    Refuses shards computed with other settings, missing, duplicated or unfinished shards.
    """
    from certkit.certify.report import format_table
    from certkit.runs import RunConfig
    from certkit.runs.certify import merge_shards

    rows, summary = merge_shards(out, list(shards), overwrite=overwrite)
    if "certified_accuracy" in summary:
        click.echo(format_table(summary, f"{summary['method']} on {summary['inputs']['dataset']} "
                                         f"{summary['inputs']['split']}, {summary['shards']} shards merged"))
    else:
        click.echo(f"smoothed accuracy {summary['accuracy']:.3f}   abstain rate {summary['abstain_rate']:.3f}   "
                   f"inputs {summary['n_inputs']}   ({summary['shards']} shards merged)")
    _echo_outputs(RunConfig(out=out, summary_json=summary_json), summary)


# ------------------------------------------------------------------------------------ train
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
              help_fn=_training_help)
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
                   "README's digits recipes).")
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
@_friendly
def train(hidden, width, depth, latent, bn, lr_milestones, resume, quiet, **kw):
    """Train a classifier and save a certkit checkpoint (with a CSV log and a PNG of the curves beside it).

    Under torchrun (e.g. `torchrun --nproc_per_node 2 -m certkit.cli train ...`) processes train data-parallel.
    """
    from certkit.train import TrainConfig, train as run_train
    from certkit.common import distributed

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
    cfg = _build(TrainConfig, kw, arch_config=arch_config, lr_milestones=_ints(lr_milestones, "--lr-milestones"))
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


# ------------------------------------------------------------------------------------ verify
@main.command()
@click.option("--check", "check_only", is_flag=True, cls=LazyHelpOption, help_fn=_ops_help)
@model_options
@click.option("--input-shape", default=None,
              help="Per-sample input shape for --check of a factory model, e.g. 1,28,28.")
@data_options
@click.option("--eps", type=float, default=None, help=EPS_HELP)
@click.option("--norm", type=click.Choice(["inf", "2"]), default="inf", show_default=True)
@click.option("--method", "methods", default="IBP,CROWN-IBP,CROWN", show_default=True,
              help="Comma-separated bound methods: IBP, CROWN-IBP, CROWN, alpha-CROWN.")
@click.option("--batch", type=int, default=32, show_default=True, help="Inputs bounded together.")
@click.option("--pgd-steps", type=int, default=50, show_default=True)
@click.option("--pgd-restarts", type=int, default=5, show_default=True)
@run_options
@click.option("--onnx", "onnx_path", type=click.Path(dir_okay=False), default=None, help="VNN-COMP network.")
@click.option("--vnnlib", "vnnlib_path", type=click.Path(dir_okay=False), default=None, help="VNN-LIB 1.0 property.")
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Seconds per VNN-COMP instance.")
@click.option("--result", "result_path", type=click.Path(dir_okay=False), default=None,
              help="VNN-COMP result file (sat + counterexample, unsat, unknown, timeout, error).")
@click.option("--instances", "instances_csv", type=click.Path(dir_okay=False), default=None,
              help="A benchmark's instances.csv (onnx,vnnlib,timeout rows, paths relative to it); results go to "
                   "--out (default results.tsv beside it), resumable.")
@click.option("--verifier", default="certkit", show_default=True, cls=LazyHelpOption, help_fn=_registry_verifier_help)
@_renamed("--results", "--out", "the results file of --instances (TSV, resumable)")
@click.option("--result-dir", type=click.Path(file_okay=False), default=None,
              help="With --instances: also write one VNN-COMP result file per instance here.")
@click.option("--no-bab", is_flag=True,
              help="VNN-COMP: bounds only, no branch and bound (by default: input splits for inputs of at most 16 "
                   "dimensions, else activation splits with beta-CROWN for ReLU and GenBaB for Sigmoid/Tanh).")
@click.option("--backend", type=click.Choice(["certkit", "auto_lirpa"]), default="certkit", show_default=True,
              help="Bound engine for --model: certkit's own, or auto_LiRPA when it can be imported.")
@click.option("--complete-timeout", type=float, default=0.0, show_default=True,
              help="--model, Linf: seconds per input for certkit's complete verifier (attacks, alpha-CROWN, beta-CROWN "
                   "/ GenBaB branch and bound, as for --onnx) on every input that PGD did not break and no --method "
                   "verified; adds the 'complete' verified accuracy and how many inputs timed out. 0 = off.")
@click.option("--tightness", is_flag=True,
              help="Also report the mean IBP propagation tightness (Mao et al. ICLR 2024): optimal box radius of the "
                   "locally linearized network / IBP box radius, in (0, 1].")
@_friendly
def verify(check_only, input_shape, methods, onnx_path, vnnlib_path, timeout, result_path, instances_csv, verifier,
           result_dir, no_bab, **kw):
    """Verify robustness with bound propagation (IBP, CROWN-IBP, CROWN, alpha-CROWN).

    \b
    Three uses:
      certkit verify --model M --dataset D --eps E      clean / PGD / verified accuracy per method
      certkit verify --onnx N --vnnlib P --result R     one VNN-COMP instance (sat/unsat/unknown/timeout/error)
      certkit verify --instances instances.csv          a VNN-COMP benchmark (results.tsv beside it)
    and `certkit verify --check --model M` (or --onnx N) for the pre-flight check alone.
    """
    if check_only:
        _verify_check(kw["model"], kw["weights"], kw["allow_pickle"], onnx_path, input_shape)
        return
    if instances_csv:
        from certkit.runs.vnncomp import InstancesConfig, run_instances

        cfg = _build(InstancesConfig, kw, instances=instances_csv, verifier=verifier, bab=not no_bab,
                     result_dir=result_dir)
        rows = run_instances(cfg)
        counts: dict = {}
        for r in rows:
            counts[r["result"]] = counts.get(r["result"], 0) + 1
        click.echo("results: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + f"  ({cfg.out})")
        return
    if onnx_path or vnnlib_path:
        _verify_instance(onnx_path, vnnlib_path, timeout, result_path, verifier, no_bab)
        return
    from certkit.runs.verify import VerifyConfig, run_verify

    cfg = _build(VerifyConfig, kw, methods=[m for m in methods.split(",") if m.strip()])
    rows, summary = run_verify(cfg)
    unit = "Linf" if cfg.norm == "inf" else "L2"
    click.echo(f"{summary['inputs']['dataset']} {summary['inputs']['split']}: {summary['n_inputs']} inputs, "
               f"{unit} eps={cfg.eps:g} (data range [0,1])")
    click.echo(f"{'clean accuracy':<30}{summary['clean_accuracy']:.3f}")
    click.echo(f"{'PGD accuracy':<30}{summary['pgd_accuracy']:.3f}   ({summary['seconds']['PGD']:.2f} s)")
    for m, v in summary["verified_accuracy"].items():
        click.echo(f"{'verified accuracy ' + m:<30}{v:.3f}   ({summary['seconds'][m]:.2f} s)")
    if "complete" in summary:
        c, n = summary["complete"], max(summary["n_inputs"], 1)
        click.echo(f"{'':<30}complete verifier on the {c['unsat'] + c['sat'] + c['timeout'] + c['unknown']} inputs "
                   f"left open: {c['unsat']} unsat, {c['sat']} sat, {c['timeout']} timeout, {c['unknown']} unknown "
                   f"({cfg.complete_timeout:g} s each)")
        lo = summary["verified_accuracy"]["complete"]
        click.echo(f"{'robust accuracy':<30}in [{lo:.3f}, {lo + (c['timeout'] + c['unknown']) / n:.3f}]")
    if cfg.tightness:
        click.echo(f"{'IBP tightness (mean)':<30}{summary['tightness']:.3f}")
    _echo_outputs(cfg, summary)


def _verify_instance(onnx_path, vnnlib_path, timeout, result_path, verifier, no_bab):
    from certkit.verifiers.registry import Instance, get_verifier
    from certkit.verifiers.vnncomp import format_result, write_result_file

    if not (onnx_path and vnnlib_path):
        raise CertkitError("a VNN-COMP instance needs both --onnx and --vnnlib")
    if not timeout > 0:
        raise CertkitError(f"--timeout must be > 0, got {timeout}")
    v = get_verifier(verifier)
    if no_bab and hasattr(v, "bab"):
        v.bab = False
    res = v.verify(Instance(Path(onnx_path), Path(vnnlib_path)), timeout)
    if result_path:
        write_result_file(result_path, res)
    click.echo(format_result(res).rstrip())
    if res.reason:
        click.echo(f"{res.status}: {res.reason}", err=True)
    click.echo(f"({res.seconds:.2f} s{', ' + res.method if res.method else ''}"
               f"{f', {res.domains} domains' if res.domains else ''})", err=True)
    if res.status == "error":
        sys.exit(1)


def _verify_check(model, weights, allow_pickle, onnx_path, input_shape):
    from certkit.models import load_model
    from certkit.verifiers import check_model

    loaded = load_model(onnx_path or model, weights, allow_pickle)
    shape = loaded.input_shape
    if input_shape:
        try:
            shape = tuple(int(s) for s in input_shape.split(","))
        except ValueError:
            raise CertkitError(f"--input-shape must be comma-separated integers, got {input_shape!r}") from None
    if shape is None:
        raise CertkitError("this model does not record its input shape: pass --input-shape C,H,W")
    problems = check_model(loaded.module, shape)
    if problems:
        click.echo(f"{loaded.source}: {len(problems)} problem(s) for bound propagation:")
        for p in problems:
            click.echo(f"  - {p}")
        sys.exit(1)
    click.echo(f"{loaded.source}: OK, every op is supported (input shape {shape})")


# ------------------------------------------------------------------------------------ conformal
@main.command()
@model_options
@denoiser_options
@data_options
@click.option("--sigma", type=float, default=None, help=SIGMA_HELP)
@click.option("--eps-l2", type=float, default=0.125, show_default=True,
              help="L2 radius (ABSOLUTE, data-range units, [0,1] pixels) the sets must withstand.")
@_renamed("--eps", "--eps-l2", "the ABSOLUTE L2 radius the sets must withstand")
@click.option("--alpha", type=float, default=0.1, show_default=True, help="Target miscoverage.")
@click.option("--beta", type=float, default=0.001, show_default=True,
              help="Monte-Carlo error budget of RSCP+ (both sides), 0 < beta < alpha/2.")
@click.option("--n-mc", type=int, default=256, show_default=True, help="Noise draws per smoothed score.")
@click.option("--score", type=click.Choice(["aps", "hps"]), default="aps", show_default=True)
@click.option("--ptt/--no-ptt", default=True, show_default=True,
              help="Post-training transformation of the scores, fit on --holdout points (Yan et al. 2024 recommend "
                   "it: RSCP+ alone pays its Monte-Carlo corrections with near-trivial sets, e.g. all 10 classes with "
                   "APS on the bundled model, 3.3 with PTT).")
@click.option("--holdout", type=int, default=100, show_default=True,
              help="Points reserved to fit PTT (not in the calibration/test pool).")
@click.option("--rule", type=click.Choice(["rscp+", "rscp"]), default="rscp+", show_default=True,
              help="rscp+ (guaranteed) or the original rscp (no finite-sample guarantee, for comparison).")
@click.option("--splits", type=int, default=50, show_default=True, help="Random calibration/test splits.")
@click.option("--attack-steps", type=int, default=20, show_default=True, help="L2 PGD steps of the coverage attack.")
@run_options
@click.option("--plot", type=click.Path(dir_okay=False), default=None, help="PNG of coverage and set size per split.")
@_friendly
def conformal(plot, **kw):
    """Robust conformal prediction sets (RSCP+, Yan et al. ICLR 2024) with coverage under attack.

    Reports marginal coverage on clean inputs and under a PGD-L2 attack (radius --eps-l2) on the smoothed score, and
    the mean set size, as (mean, std) over random calibration/test splits (one TSV row per split).
    """
    from certkit.runs.conformal import ConformalConfig, plot_conformal, run_conformal

    cfg = _build(ConformalConfig, kw)
    rows, summary = run_conformal(cfg)
    c, a, z = summary["coverage_clean"], summary["coverage_attacked"], summary["mean_set_size"]
    click.echo(f"{cfg.rule.upper()} {cfg.score.upper()}{' + PTT' if cfg.ptt else ''} on {cfg.dataset} "
               f"({summary['n_pool']} points, {cfg.splits} splits): alpha={cfg.alpha:g} beta={cfg.beta:g} "
               f"eps={cfg.eps_l2:g} (L2) sigma={summary['sigma']:g} n_mc={cfg.n_mc}")
    click.echo(f"coverage clean     {c[0]:.3f} +- {c[1]:.3f}   (target >= {1 - cfg.alpha:.3f})")
    click.echo(f"coverage attacked  {a[0]:.3f} +- {a[1]:.3f}")
    click.echo(f"mean set size      {z[0]:.2f} +- {z[1]:.2f}   of {summary['num_classes']} classes")
    _echo_outputs(cfg, summary)
    if plot:
        plot_conformal(rows, cfg.alpha, plot)
        click.echo(f"plot: {plot}")


# ------------------------------------------------------------------------------------ soundness
@main.group()
def soundness():
    """Soundness benchmark: instances with hidden counterexamples, and an audit of verifiers on them.

    \b
    certkit soundness generate --out bench/mlp_eps0.2 --arch mlp_4_hidden --eps-rel 0.2 --preset cpu
    certkit soundness run --bench bench --verifier certkit
    certkit soundness run --bench bench --command 'my_verifier {onnx} {vnnlib} {result} {timeout}' --name mine
    certkit soundness score --bench bench --summary-json audit.json
    """


_ARCH_HELP = ("Model family: mlp_4_hidden / mlp_5_hidden (10 inputs; use --input-size 20 or more with --strong, "
              "else the 2^10 box vertices are enumerated), cnn_1_conv / cnn_2_conv / cnn_3_conv, "
              "cnn_avgpool, cnn_tanh, cnn_sigmoid ((C,5,5) inputs).")


@soundness.command()
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder of this model's benchmark (model.onnx, vnnlib/, instances.csv, private/).")
@click.option("--arch", default="mlp_4_hidden", show_default=True, help=_ARCH_HELP)
@click.option("--eps-rel", type=float, default=0.2, show_default=True,
              help="Linf radius RELATIVE to the data range r = 0.1 (the paper's eps0.2 / eps0.5): the absolute radius "
                   "is eps-rel * r, e.g. 0.2 -> 0.02.")
@_renamed("--eps", "--eps-rel", "the Linf radius RELATIVE to the data range 0.1 (0.2 -> absolute 0.02)")
@seed_option
@click.option("--preset", type=click.Choice(["paper", "cpu"]), default="paper", show_default=True,
              help="paper: the paper's sizes, budgets and two-objective training (GPU hours per model); cpu: width "
                   "200, 1000 epochs, smaller attack budgets, certkit's pocket loss (5-26 minutes per model on a "
                   "CPU); Tanh / Sigmoid families train at --lr 0.01 for 4000 epochs, and above --eps-rel 0.3 with "
                   "160 training restarts (80 for Tanh / Sigmoid). Options below override the preset.")
@click.option("--channels", type=click.Choice(["1", "3"]), default="1", show_default=True, help="CNN input channels.")
@click.option("--input-size", type=int, default=None, help="MLP input length (default 10) or CNN image side (5).")
@click.option("--width", type=int, default=None, help="Units of the paper's 1000-unit layers.")
@click.option("--epochs", type=int, default=None,
              help="Training epochs at most (paper 10000; cpu preset 1000, Tanh / Sigmoid 4000).")
@click.option("--attack-iters", type=int, default=None, help="PGD iterations per training epoch (paper 75).")
@click.option("--attack-restarts", type=int, default=None,
              help="PGD restarts per training epoch (paper 75; cpu preset 20, above --eps-rel 0.3 160, or 80 for "
                   "Tanh / Sigmoid: fewer left the boxes non-robust and hid few pairs, bench/README.md).")
@click.option("--attack-step", "alpha", type=float, default=None,
              help="Training-PGD step size as a fraction of eps (paper 0.1, cpu preset 0.25).")
@click.option("--attack-vertex-starts", type=float, default=None,
              help="Fraction of the training-PGD restarts that start at a random box vertex, the rest at a uniform "
                   "random point (paper 0, all uniform; cpu preset 0.5).")
@click.option("--check-every", type=int, default=None, help="Epochs between model-selection checks (paper 200).")
@click.option("--check-strong/--no-check-strong", default=None,
              help="Model selection also runs the stronger attacks of --strong, at the training restarts and at most "
                   "1024 vertices (paper: no; cpu preset: yes).")
@click.option("--lr", type=float, default=None,
              help="Peak learning rate of the cyclic Adam schedule (paper 1e-3; cpu preset 1e-3, Tanh / Sigmoid 0.01).")
@click.option("--steps-per-epoch", type=int, default=None,
              help="Optimizer steps per training-PGD call (paper 1, cpu preset 5).")
@click.option("--input-scale", type=float, default=None,
              help="Train the network on input_scale * x, folded into the first layer before export (paper 1, cpu "
                   "preset 10 = 1 / data range).")
@click.option("--pocket-weight", type=float, default=None,
              help="Weight of certkit's pocket loss, which makes the margin rise toward each planted vertex outside a "
                   "small pocket (0 = the paper's two-objective training; cpu preset 1).")
@click.option("--pocket-radius", type=float, default=None,
              help="Linf radius of that pocket as a fraction of eps (default 0.05).")
@click.option("--sweep-restarts", type=int, default=None,
              help="Restarts of each of the 8 PGD settings of the final hiddenness sweep (paper 1000).")
@click.option("--sweep", "sweep", default=None,
              help="PGD settings of the hiddenness sweep as STEP:ITERS,... with STEP in units of eps (default: the "
                   "paper's 0.25:0,0.25:100,0.02:100,0.02:250,0.02:500,0.01:1000,0.01:3000,0.01:5000). A weaker "
                   "sweep gives weakly hidden counterexamples; say so when you publish them.")
@click.option("--strong/--no-strong", default=True, show_default=True,
              help="Also require the planted counterexamples to survive certkit's stronger attacks (vertex-start "
                   "PGD with a step schedule, vertex sampling).")
@click.option("--strong-restarts", type=int, default=None, help="Restarts of the vertex-start PGD.")
@click.option("--vertex-samples", type=int, default=None, help="Random box vertices tried per instance.")
@click.option("--n-planted", type=int, default=10, show_default=True, help="Planted counterexample pairs.")
@click.option("--n-regular", type=int, default=10, show_default=True, help="Regular points.")
@click.option("--timeout", type=float, default=100.0, show_default=True,
              help="Seconds per instance written to instances.csv.")
@click.option("--resume", is_flag=True, help="Continue an interrupted generation in --out.")
@quiet_option
@_friendly
def generate(preset, channels, sweep, resume, quiet, **kw):
    """Train a model with planted counterexamples and export it as a VNN-COMP benchmark.

    Planted counterexamples that survive the hiddenness check become instances whose true answer is sat; regular
    points give instances without ground truth. private/ holds the ground truth: never give it to a verifier.
    """
    from certkit.soundness_bench.generate import config_with_preset, generate as gen, parse_sweep

    cfg = config_with_preset(preset, channels=int(channels), sweep=parse_sweep(sweep) if sweep else None, **kw)
    s = gen(cfg, resume=resume, quiet=quiet)
    click.echo(f"{cfg.arch} eps-rel={cfg.eps_rel:g} (Linf {cfg.eps_abs:g}), seed {cfg.seed}: {s['valid_pairs']}/"
               f"{s['planted_pairs']} pairs planted, {s['survive_sweep']} survive the PGD sweep, {s['hidden']} "
               f"survive every attack")
    click.echo(f"instances: {s['planted_instances']} planted + {s['regular_instances']} regular -> {s['instances']}")
    if s["not_confirmed"]:
        click.echo(f"dropped {s['not_confirmed']} planted pair(s) that onnxruntime did not confirm", err=True)
    click.echo(f"time: {s['seconds_total']:.0f} s (training {s['seconds_train']:.0f} s, "
               f"hiddenness check {s['seconds_hiddenness']:.0f} s); ground truth: {Path(cfg.out) / 'private'}")


@soundness.command()
@click.option("--bench", required=True, type=click.Path(file_okay=False),
              help="A generated folder (with instances.csv) or a folder of them.")
@click.option("--verifier", default=None, cls=LazyHelpOption, help_fn=_verifier_help)
@click.option("--command", "command", default=None,
              help="External verifier as a command template with {onnx} {vnnlib} {result} and optionally "
                   "{timeout}; split like a shell would, run without a shell.")
@click.option("--vnncomp-tool", "tool", type=click.Path(file_okay=False), default=None,
              help="A verifier packaged for VNN-COMP: the folder with its prepare_instance.sh and run_instance.sh "
                   "(or their vnncomp_scripts/ folder); run as the competition does (v1 CATEGORY ONNX VNNLIB "
                   "[RESULT TIMEOUT]), CATEGORY being the benchmark folder's name.")
@click.option("--prepare-timeout", type=float, default=60.0, show_default=True,
              help="--vnncomp-tool: seconds allowed for prepare_instance.sh per instance.")
@click.option("--name", default=None,
              help="Label of a --command or --vnncomp-tool verifier (default: its program or folder name).")
@click.option("--timeout", type=float, default=None,
              help="Seconds per instance (default: the instances.csv value, 100 s for generated benchmarks).")
@click.option("--grace", type=float, default=5.0, show_default=True,
              help="Extra seconds before the verifier's whole process group is killed.")
@click.option("--out", "results", type=click.Path(file_okay=False), default=None,
              help="Output folder: results.tsv (row by row), logs/, files/ (default BENCH/results/NAME).")
@_renamed("--results", "--out", "the output folder of soundness run")
@click.option("--resume", is_flag=True, help="Skip instances already answered in --out.")
@click.option("--overwrite", is_flag=True, help="Replace existing results.")
@click.option("--process-per-instance", is_flag=True,
              help="--verifier: start a fresh process for every instance, as VNN-COMP does (default: one "
                   "persistent worker per audit, restarted only after an instance overruns its time).")
@quiet_option
@_friendly
def run(bench, verifier, command, tool, prepare_timeout, name, timeout, grace, results, resume, overwrite,
        process_per_instance, quiet):
    """Run a verifier on every instance and record its answers: external commands and --vnncomp-tool one subprocess
    each (VNN-COMP style), built-in verifiers through one persistent worker process."""
    from collections import Counter

    from certkit.soundness_bench.run import results_dir, run_verifier

    rows = run_verifier(bench, verifier, command, name, results, timeout, grace, resume, overwrite, quiet, tool,
                        prepare_timeout, worker=not process_per_instance)
    counts = Counter(r["result"] for r in rows)
    click.echo(f"{len(rows)} instances: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    click.echo(f"results: {results_dir(bench, verifier, command, name, results, tool)}")


@soundness.command()
@click.option("--bench", required=True, type=click.Path(file_okay=False))
@click.option("--results", multiple=True, type=click.Path(file_okay=False),
              help="Results folder(s) of `soundness run` (default: every BENCH/results/*).")
@click.option("--tol", type=float, default=1e-4, show_default=True,
              help="Tolerance (input units and logits) when checking returned counterexamples.")
@click.option("--summary-json", type=click.Path(dir_okay=False), default=None)
@click.option("--report", type=click.Path(dir_okay=False), default=None,
              help="A report for people: markdown FILE with a verdict per verifier, answer counts and the unsound "
                   "instances, and FILE.png (time per instance) beside it.")
@click.option("--fail-on-unsound", is_flag=True,
              help="Exit with status 3 when a verifier not unsound by design answered unsat on a planted instance.")
@quiet_option
@_friendly
def score(bench, results, tol, summary_json, report, fail_on_unsound, quiet):
    """Score verifiers against the ground truth: unsat on a planted instance is UNSOUND.

    Planted instances have a hidden counterexample (true answer sat); regular ones have no ground truth. Every
    sat answer's counterexample is re-checked in onnxruntime.
    """
    from certkit.soundness_bench.adapters import unsound_by_design
    from certkit.soundness_bench.score import format_table, score as do_score, write_summary

    summary = do_score(bench, list(results) or None, tol)
    click.echo(format_table(summary))
    if summary_json:
        write_summary(summary, summary_json)
        click.echo(f"summary: {summary_json}")
    if report:
        from certkit.soundness_bench.score import write_report

        md, png = write_report(summary, report, unsound_by_design())
        click.echo(f"report: {md} (plot {png})")
    if fail_on_unsound and any(s["has_unsound"] for n, s in summary.items() if n not in unsound_by_design()):
        sys.exit(3)


if __name__ == "__main__":
    main()
