"""The ``certkit`` command: a thin click layer over the library (no maths here).

Every user mistake surfaces as ``Error: <one line>`` with exit status 1; partial results stay on disk.
"""
from __future__ import annotations

import functools
import json
import sys
import warnings
from pathlib import Path

import click

from certkit.common.errors import CertkitError

SIGMA_HELP = "Gaussian noise std in data-range units ([0,1] pixels). Default: the sigma the model was trained with."


def _friendly(fn):
    """Turn CertkitError (and Ctrl-C) into one-line messages with a non-zero exit."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CertkitError as e:
            raise click.ClickException(str(e)) from None
        except KeyboardInterrupt:
            click.echo("\ninterrupted: rows computed so far are saved; rerun with --resume to continue", err=True)
            sys.exit(130)
    return wrapper


def _warn_to_stderr(message, category, filename, lineno, file=None, line=None):
    click.echo(f"Warning: {message}", err=True)


def model_options(fn):
    fn = click.option("--allow-pickle", is_flag=True,
                      help="Load checkpoints with full pickle (EXECUTES code stored in the file). "
                           "Only for files you trust; default is torch.load(weights_only=True).")(fn)
    fn = click.option("--weights", type=click.Path(dir_okay=False),
                      help="state_dict file for a --model package.module:factory model.")(fn)
    fn = click.option("--model", "model", default="bundled", show_default=True,
                      help="certkit checkpoint, reference checkpoint {'arch','state_dict'} (cifar_resnet20/110), "
                           ".onnx file, or package.module:factory. 'bundled' is the shipped digits model.")(fn)
    return fn


def data_options(fn):
    fn = click.argument("data_path", required=False, type=click.Path())(fn)
    fn = click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True)(fn)
    fn = click.option("--dataset", default="digits", show_default=True,
                      help="digits (bundled 8x8 scikit-learn digits), mnist DIR (IDX files), cifar10 DIR "
                           "(python batches) or npz FILE (x in [0,1], integer y). The path follows as an "
                           "argument: --dataset cifar10 DIR.")(fn)
    return fn


def mc_options(fn):
    for opt in reversed([
        click.option("--sigma", type=float, default=None, help=SIGMA_HELP),
        click.option("--n", "n", type=int, default=100_000, show_default=True,
                     help="Monte-Carlo samples for the estimate."),
        click.option("--alpha", type=float, default=0.001, show_default=True,
                     help="Failure probability: the answer is wrong with probability at most alpha."),
        click.option("--batch", type=int, default=1000, show_default=True, help="Noisy copies per forward pass."),
        click.option("--skip", type=int, default=1, show_default=True, help="Use every skip-th input of the split."),
        click.option("--max", "max_inputs", type=int, default=None, help="At most this many inputs."),
        click.option("--seed", type=int, default=0, show_default=True,
                     help="Noise seed; each input gets its own stream, so results do not depend on skip/max/resume."),
        click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N]."),
        click.option("--compile", "use_compile", is_flag=True, help="torch.compile the model (first call ~20 s)."),
        click.option("--amp", is_flag=True, help="CUDA only: bfloat16 autocast forward passes (the certificate "
                                                 "is then for the model as evaluated in bfloat16)."),
        click.option("--out", type=click.Path(dir_okay=False), default=None,
                     help="Per-input TSV (written row by row). Default: a new file in ./certkit-results/."),
        click.option("--resume", is_flag=True, help="Continue --out, skipping inputs already in it."),
        click.option("--overwrite", is_flag=True, help="Replace --out if it exists."),
        click.option("--summary-json", type=click.Path(dir_okay=False), default=None,
                     help="Summary JSON. Default: <out>.summary.json."),
        click.option("--quiet", is_flag=True, help="No progress bar."),
    ]):
        fn = opt(fn)
    return fn


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="certkit")
def main():
    """certkit: certified robustness for PyTorch models.

    Radii and noise levels are in the model's data range ([0,1] pixels), before normalization.
    """
    warnings.showwarning = _warn_to_stderr


def _config(model, weights, allow_pickle, dataset, split, data_path, sigma, n0, n, alpha, batch, skip,
            max_inputs, seed, device, use_compile, amp, out, resume, overwrite, prefix):
    from certkit.certify.pipeline import CertifyConfig, default_out

    if out is None:
        if resume:
            raise CertkitError("--resume needs --out FILE (the TSV to continue)")
        out = default_out(prefix, dataset, sigma)
    return CertifyConfig(out=out, model=model, weights=weights, allow_pickle=allow_pickle, dataset=dataset,
                         data_path=data_path, split=split, sigma=sigma, n0=n0, n=n, alpha=alpha, batch=batch,
                         skip=skip, max_inputs=max_inputs, seed=seed, device=device, compile=use_compile,
                         amp=amp, resume=resume, overwrite=overwrite)


def _write_summary(summary: dict, path: str | None, out: str) -> str:
    path = path or str(Path(out).with_suffix("")) + ".summary.json"
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(summary, indent=2) + "\n")
    return path


@main.command()
@model_options
@data_options
@mc_options
@click.option("--n0", type=int, default=100, show_default=True, help="Samples used to select the top class.")
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="PNG of certified accuracy against L2 radius.")
@_friendly
def certify(model, weights, allow_pickle, dataset, split, data_path, sigma, n, alpha, batch, skip, max_inputs,
            seed, device, use_compile, amp, out, resume, overwrite, summary_json, quiet, n0, plot):
    """Certify inputs with Gaussian randomized smoothing (CERTIFY, Cohen et al. 2019).

    For each input: the smoothed prediction and a certified L2 radius (data-range units) that holds with
    probability at least 1 - alpha; predict -1 means abstain. Bare `certkit certify` certifies the bundled
    digits model on the digits test split.
    """
    from certkit.certify.pipeline import run_certify
    from certkit.certify.report import format_table, plot_curves

    cfg = _config(model, weights, allow_pickle, dataset, split, data_path, sigma, n0, n, alpha, batch, skip,
                  max_inputs, seed, device, use_compile, amp, out, resume, overwrite, "certify")
    rows, summary = run_certify(cfg, quiet=quiet)
    inp = summary["inputs"]
    scope = ("the full split" if inp["full_split"] else
             f"{inp['certified']} of {inp['split_size']} (skip {inp['skip']}, max {inp['max']})")
    title = (f"Gaussian smoothing on {inp['dataset']} {inp['split']} ({scope}): sigma={summary['sigma']:g} "
             f"n0={cfg.n0} n={cfg.n} alpha={cfg.alpha:g}")
    click.echo(format_table(summary, title))
    click.echo(f"results: {cfg.out}")
    click.echo(f"summary: {_write_summary(summary, summary_json, cfg.out)}")
    if plot:
        plot_curves({f"Gaussian sigma={summary['sigma']:g}": rows}, plot, title)
        click.echo(f"plot: {plot}")


@main.command()
@model_options
@data_options
@mc_options
@_friendly
def predict(model, weights, allow_pickle, dataset, split, data_path, sigma, n, alpha, batch, skip, max_inputs,
            seed, device, use_compile, amp, out, resume, overwrite, summary_json, quiet):
    """Predict with the smoothed classifier (PREDICT, Cohen et al. 2019).

    Abstains (-1) unless a two-sided binomial test separates the top two classes at level alpha.
    """
    from certkit.certify.pipeline import run_predict

    cfg = _config(model, weights, allow_pickle, dataset, split, data_path, sigma, 1, n, alpha, batch, skip,
                  max_inputs, seed, device, use_compile, amp, out, resume, overwrite, "predict")
    rows, summary = run_predict(cfg, quiet=quiet)
    click.echo(f"smoothed accuracy {summary['accuracy']:.3f}   abstain rate {summary['abstain_rate']:.3f}   "
               f"inputs {summary['n_inputs']}   sigma={summary['sigma']:g} n={cfg.n} alpha={cfg.alpha:g}")
    click.echo(f"results: {cfg.out}")
    click.echo(f"summary: {_write_summary(summary, summary_json, cfg.out)}")


@main.command()
@click.option("--method", type=click.Choice(["natural", "gaussian"]), default="gaussian", show_default=True,
              help="natural: clean cross-entropy; gaussian: noise augmentation x + N(0, sigma^2) (Cohen et al.).")
@click.option("--dataset", default="digits", show_default=True, help="digits, mnist DIR, cifar10 DIR or npz FILE.")
@click.argument("data_path", required=False, type=click.Path())
@click.option("--arch", default="mlp", show_default=True, help="mlp, cnn, cifar_resnet20 or cifar_resnet110.")
@click.option("--hidden", default=None, help="mlp hidden widths, comma separated (default 256,256).")
@click.option("--sigma", type=float, default=0.25, show_default=True,
              help="Training noise std in [0,1] pixel units (gaussian method).")
@click.option("--epochs", type=int, default=30, show_default=True)
@click.option("--batch", type=int, default=64, show_default=True)
@click.option("--optimizer", type=click.Choice(["adam", "sgd"]), default="adam", show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--weight-decay", type=float, default=0.0, show_default=True)
@click.option("--lr-step", type=int, default=0, show_default=True, help="StepLR period in epochs (0: constant).")
@click.option("--val-fraction", type=float, default=0.1, show_default=True,
              help="Last fraction of the train split held out for validation.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Checkpoint to write (certkit format).")
@click.option("--resume", is_flag=True, help="Continue training --out from its last epoch.")
@click.option("--quiet", is_flag=True)
@_friendly
def train(method, dataset, data_path, arch, hidden, sigma, epochs, batch, optimizer, lr, weight_decay, lr_step,
          val_fraction, seed, device, out, resume, quiet):
    """Train a classifier and save a certkit checkpoint (with a CSV log beside it)."""
    from certkit.train import TrainConfig, train as run_train

    arch_config = {}
    if hidden:
        try:
            arch_config["hidden"] = [int(h) for h in hidden.split(",")]
        except ValueError:
            raise CertkitError(f"--hidden must be comma-separated integers, got {hidden!r}") from None
    cfg = TrainConfig(out=out, method=method, dataset=dataset, data_path=data_path, arch=arch,
                      arch_config=arch_config, sigma=sigma, epochs=epochs, batch_size=batch, optimizer=optimizer,
                      lr=lr, weight_decay=weight_decay, lr_step=lr_step, val_fraction=val_fraction, seed=seed,
                      device=device)
    row = run_train(cfg, resume=resume, quiet=quiet)
    noisy = row["val_noisy_accuracy"]
    click.echo(f"epoch {row['epoch']}: loss {row['loss']:.4f}  train acc {row['train_accuracy']:.3f}  "
               f"val acc {row['val_accuracy']:.3f}" + ("" if noisy != noisy else f"  val acc under noise {noisy:.3f}"))
    click.echo(f"checkpoint: {out}\nlog: {Path(out).with_suffix('.log.csv')}")


if __name__ == "__main__":
    main()
