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
    from certkit.certify.pipeline import CertifyConfig
    from certkit.common.results import default_results_path

    if out is None:
        if resume:
            raise CertkitError("--resume needs --out FILE (the TSV to continue)")
        out = default_results_path(prefix, dataset, f"sigma{'model' if sigma is None else f'{sigma:g}'}")
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
@click.option("--n0", type=int, default=100, show_default=True,
              help="Selection samples (top class; for lvm also the simplex map and temperature).")
@click.option("--method", "methods", default="gaussian", show_default=True,
              help="gaussian (Cohen et al.), dual (Dual RS, needs a `certkit train --method dual` checkpoint), "
                   "lvm (LVM-RS, any model), or a comma list to certify the same inputs with several.")
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="PNG of certified accuracy against L2 radius (one curve per method).")
@_friendly
def certify(model, weights, allow_pickle, dataset, split, data_path, sigma, n, alpha, batch, skip, max_inputs,
            seed, device, use_compile, amp, out, resume, overwrite, summary_json, quiet, n0, methods, plot):
    """Certify inputs with randomized smoothing: Gaussian (CERTIFY, Cohen et al. 2019), Dual RS or LVM-RS.

    For each input: the smoothed prediction and a certified L2 radius (data-range units) that holds with
    probability at least 1 - alpha; predict -1 means abstain. Bare `certkit certify` certifies the bundled
    digits model on the digits test split.
    """
    from certkit.certify.pipeline import CERTIFY_METHODS, run_certify
    from certkit.certify.report import format_table, plot_curves

    names = [m.strip().lower() for m in methods.split(",") if m.strip()]
    bad = [m for m in names if m not in CERTIFY_METHODS]
    if bad or not names:
        raise CertkitError(f"unknown --method {','.join(bad) or methods!r}: choose from {', '.join(CERTIFY_METHODS)}")
    if summary_json and len(names) > 1:
        raise CertkitError("--summary-json names one file: with several methods each summary goes beside its TSV")
    cfg = _config(model, weights, allow_pickle, dataset, split, data_path, sigma, n0, n, alpha, batch, skip,
                  max_inputs, seed, device, use_compile, amp, out, resume, overwrite, "certify")
    base, curves, label = cfg.out, {}, {"gaussian": "Gaussian", "dual": "Dual RS", "lvm": "LVM-RS"}
    for method in names:
        if len(names) > 1:
            cfg.out = str(Path(base).with_suffix("")) + f"_{method}.tsv"
        rows, summary = run_certify(cfg, quiet=quiet, method=method)
        inp = summary["inputs"]
        scope = ("the full split" if inp["full_split"] else
                 f"{inp['certified']} of {inp['split_size']} (skip {inp['skip']}, max {inp['max']})")
        title = (f"{label[method]} smoothing on {inp['dataset']} {inp['split']} ({scope}): sigma={summary['sigma']:g} "
                 f"n0={cfg.n0} n={cfg.n} alpha={cfg.alpha:g}")
        click.echo(format_table(summary, title))
        click.echo(f"results: {cfg.out}")
        click.echo(f"summary: {_write_summary(summary, summary_json, cfg.out)}")
        curves[f"{label[method]} sigma={summary['sigma']:g}"] = rows
    if plot:
        plot_curves(curves, plot, f"{inp['dataset']} {inp['split']}, n={cfg.n}, alpha={cfg.alpha:g}")
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
@click.option("--method", type=click.Choice(["natural", "gaussian", "ibp", "crown-ibp", "dual", "rct"]),
              default="gaussian",
              show_default=True,
              help="natural: clean cross-entropy; gaussian: noise augmentation x + N(0, sigma^2) (Cohen et al.); "
                   "ibp / crown-ibp: certified training against Linf perturbations of radius --eps; dual: Dual RS "
                   "branches fine-tuned from --init-from with noise --sigma; rct: robust conformal training of the "
                   "final layer of --init-from (RSCP+ sets at --alpha, radius --eps L2).")
@click.option("--alpha", type=float, default=0.1, show_default=True, help="rct: target miscoverage.")
@click.option("--init-from", type=click.Path(dir_okay=False), default=None,
              help="dual: the noise-trained full-image certkit checkpoint both branches start from.")
@click.option("--consistency", type=float, default=0.0, show_default=True,
              help="dual: consistency-loss weight over 4 noise copies (the DRS paper uses 15).")
@click.option("--dataset", default="digits", show_default=True, help="digits, mnist DIR, cifar10 DIR or npz FILE.")
@click.argument("data_path", required=False, type=click.Path())
@click.option("--arch", default="mlp", show_default=True,
              help="mlp, cnn, cnn_a, cnn_7layer_bn, dm_large, resnet_small, cifar_resnet20 or cifar_resnet110.")
@click.option("--hidden", default=None, help="mlp hidden widths, comma separated (default 256,256).")
@click.option("--width", type=int, default=None, help="Base width of cnn_7layer_bn / dm_large / resnet_small / cnn.")
@click.option("--bn", is_flag=True, help="mlp: BatchNorm after every hidden layer.")
@click.option("--eps", type=float, default=0.0, show_default=True,
              help="Target Linf radius in [0,1] pixel units: training radius of ibp/crown-ibp and the radius of the "
                   "per-epoch IBP / CROWN-IBP verified accuracy.")
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
@click.option("--init", "init_kind", type=click.Choice(["default", "ibp"]), default="default", show_default=True,
              help="ibp: IBP initialization (Shi et al. 2021).")
@click.option("--reg-lambda", type=float, default=0.0, show_default=True,
              help="Weight of the tightness + ReLU-balance warm-up regularizers (Shi et al. 2021 use 0.5).")
@click.option("--grad-clip", type=float, default=0.0, show_default=True, help="Max gradient norm (0: off).")
@click.option("--lr-milestones", default=None, help="Epochs at which lr is multiplied by --lr-gamma, e.g. 50,60.")
@click.option("--lr-gamma", type=float, default=0.1, show_default=True)
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
def train(method, init_from, consistency, alpha, dataset, data_path, arch, hidden, width, bn, eps, eps_train, schedule, schedule_start,
          schedule_length, kappa_final, beta_final, init_kind, reg_lambda, grad_clip, lr_milestones, lr_gamma, sigma,
          epochs, batch, optimizer, lr, weight_decay, lr_step, val_fraction, seed, device, out, resume, quiet):
    """Train a classifier and save a certkit checkpoint (with a CSV log and a PNG of the curves beside it).

    Under torchrun (e.g. `torchrun --nproc_per_node 2 -m certkit.cli train ...`) processes train data-parallel.
    """
    from certkit.train import TrainConfig, train as run_train

    if method == "rct":
        from certkit.train.rct import train_rct

        if not init_from:
            raise CertkitError("--method rct fine-tunes the final layer of --init-from CHECKPOINT")
        row = train_rct(init_from, out, sigma, eps, alpha, epochs, lr, batch, dataset=dataset, data_path=data_path,
                        seed=seed, device=device, quiet=quiet)
        click.echo(f"epoch {row['epoch']}: RCT loss {row['loss']:.4f}\ncheckpoint: {out}")
        return

    def ints(text, name):
        try:
            return [int(h) for h in text.split(",")]
        except ValueError:
            raise CertkitError(f"{name} must be comma-separated integers, got {text!r}") from None

    arch_config = {}
    if hidden:
        arch_config["hidden"] = ints(hidden, "--hidden")
    if width is not None:
        arch_config["width"] = width
    if bn:
        arch_config["bn"] = True
    cfg = TrainConfig(out=out, method=method, dataset=dataset, data_path=data_path, arch=arch,
                      arch_config=arch_config, sigma=sigma, epochs=epochs, batch_size=batch, optimizer=optimizer,
                      lr=lr, weight_decay=weight_decay, lr_step=lr_step, lr_gamma=lr_gamma,
                      lr_milestones=ints(lr_milestones, "--lr-milestones") if lr_milestones else [],
                      val_fraction=val_fraction, seed=seed, device=device, eps=eps, eps_train=eps_train,
                      schedule=schedule, schedule_start=schedule_start, schedule_length=schedule_length,
                      kappa_final=kappa_final, beta_final=beta_final, init=init_kind, reg_lambda=reg_lambda,
                      grad_clip=grad_clip, init_from=init_from, consistency=consistency)
    row = run_train(cfg, resume=resume, quiet=quiet)
    from certkit.train import distributed

    if distributed.world()[0] != 0:
        return
    fmt = lambda k: "" if row[k] != row[k] else f"  {k.replace('_', ' ')} {row[k]:.3f}"
    click.echo(f"epoch {row['epoch']}: loss {row['loss']:.4f}  train acc {row['train_accuracy']:.3f}  "
               f"val acc {row['val_accuracy']:.3f}" + fmt("val_noisy_accuracy").replace("val noisy accuracy",
                                                                                        "val acc under noise")
               + fmt("val_ibp_verified") + fmt("val_crown_ibp_verified") + fmt("val_tightness"))
    click.echo(f"checkpoint: {out}\nlog: {Path(out).with_suffix('.log.csv')}\ncurves: {Path(out).with_suffix('.curves.png')}")


@main.command()
@click.option("--check", "check_only", is_flag=True,
              help="Only run the pre-flight check of --model / --onnx: list every unsupported op, node and shape problem.")
@model_options
@click.option("--input-shape", default=None, help="Per-sample input shape for --check of a factory model, e.g. 1,28,28.")
@click.option("--dataset", default="digits", show_default=True, help="digits, mnist DIR, cifar10 DIR or npz FILE.")
@click.argument("data_path", required=False, type=click.Path())
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True)
@click.option("--eps", type=float, default=None,
              help="Perturbation radius in data-range units ([0,1] pixels); Linf balls are clipped to [0,1].")
@click.option("--norm", type=click.Choice(["inf", "2"]), default="inf", show_default=True)
@click.option("--method", "methods", default="IBP,CROWN-IBP,CROWN", show_default=True,
              help="Comma-separated bound methods: IBP, CROWN-IBP, CROWN, alpha-CROWN.")
@click.option("--batch", type=int, default=32, show_default=True, help="Inputs bounded together.")
@click.option("--skip", type=int, default=1, show_default=True)
@click.option("--max", "max_inputs", type=int, default=None)
@click.option("--pgd-steps", type=int, default=50, show_default=True)
@click.option("--pgd-restarts", type=int, default=5, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Per-input TSV. Default: ./certkit-results/.")
@click.option("--resume", is_flag=True)
@click.option("--overwrite", is_flag=True)
@click.option("--summary-json", type=click.Path(dir_okay=False), default=None)
@click.option("--onnx", "onnx_path", type=click.Path(dir_okay=False), default=None, help="VNN-COMP network.")
@click.option("--vnnlib", "vnnlib_path", type=click.Path(dir_okay=False), default=None, help="VNN-LIB 1.0 property.")
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Seconds per VNN-COMP instance.")
@click.option("--result", "result_path", type=click.Path(dir_okay=False), default=None,
              help="VNN-COMP result file (sat + counterexample, unsat, unknown, timeout, error).")
@click.option("--instances", "instances_csv", type=click.Path(dir_okay=False), default=None,
              help="A benchmark's instances.csv (onnx,vnnlib,timeout rows, paths relative to it).")
@click.option("--results", "results_csv", type=click.Path(dir_okay=False), default=None,
              help="Results CSV for --instances (onnx,vnnlib,result,seconds,reason).")
@click.option("--result-dir", type=click.Path(file_okay=False), default=None,
              help="With --instances: also write one VNN-COMP result file per instance here.")
@click.option("--no-bab", is_flag=True, help="VNN-COMP: bounds only, no input-split branch and bound.")
@click.option("--backend", type=click.Choice(["certkit", "auto_lirpa"]), default="certkit", show_default=True,
              help="Bound engine for --model: certkit's own, or auto_LiRPA when it can be imported.")
@click.option("--tightness", is_flag=True,
              help="Also report the mean IBP propagation tightness (Mao et al. ICLR 2024): optimal box radius of the "
                   "locally linearized network / IBP box radius, in (0, 1].")
@click.option("--quiet", is_flag=True)
@_friendly
def verify(check_only, model, weights, allow_pickle, input_shape, dataset, data_path, split, eps, norm, methods,
           batch, skip, max_inputs, pgd_steps, pgd_restarts, seed, device, out, resume, overwrite, summary_json,
           onnx_path, vnnlib_path, timeout, result_path, instances_csv, results_csv, result_dir, no_bab, backend,
           tightness, quiet):
    """Verify robustness with bound propagation (IBP, CROWN-IBP, CROWN, alpha-CROWN).

    \b
    Three uses:
      certkit verify --model M --dataset D --eps E      clean / PGD / verified accuracy per method
      certkit verify --onnx N --vnnlib P --result R     one VNN-COMP instance (sat/unsat/unknown/timeout/error)
      certkit verify --instances instances.csv --results results.csv
    and `certkit verify --check --model M` (or --onnx N) for the pre-flight check alone.
    """
    method_list = [m for m in methods.split(",") if m.strip()]
    if check_only:
        _verify_check(model, weights, allow_pickle, onnx_path, input_shape)
        return
    if instances_csv:
        from certkit.verifiers.vnncomp import run_instances

        results_csv = results_csv or str(Path(instances_csv).with_name("results.csv"))
        rows = run_instances(instances_csv, results_csv, result_dir=result_dir, quiet=quiet, bab=not no_bab)
        counts = {}
        for r in rows:
            counts[r["result"]] = counts.get(r["result"], 0) + 1
        click.echo("results: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + f"  ({results_csv})")
        return
    if onnx_path or vnnlib_path:
        if not (onnx_path and vnnlib_path):
            raise CertkitError("a VNN-COMP instance needs both --onnx and --vnnlib")
        if not timeout > 0:
            raise CertkitError(f"--timeout must be > 0, got {timeout}")
        from certkit.verifiers.vnncomp import format_result, verify_instance, write_result_file

        res = verify_instance(onnx_path, vnnlib_path, timeout, bab=not no_bab)
        if result_path:
            write_result_file(result_path, res)
        click.echo(format_result(res).rstrip())
        if res.reason:
            click.echo(f"{res.status}: {res.reason}", err=True)
        click.echo(f"({res.seconds:.2f} s{', ' + res.method if res.method else ''}"
                   f"{f', {res.domains} domains' if res.domains else ''})", err=True)
        if res.status == "error":
            sys.exit(1)
        return
    if eps is None:
        raise CertkitError("--eps is required with --model (perturbation radius in [0,1] pixel units)")
    from certkit.verifiers.verify import VerifyConfig, run_verify

    if out is None:
        if resume:
            raise CertkitError("--resume needs --out FILE (the TSV to continue)")
        from certkit.common.results import default_results_path
        out = default_results_path("verify", dataset, f"eps{eps:g}", norm)
    cfg = VerifyConfig(out=out, eps=eps, model=model, weights=weights, allow_pickle=allow_pickle, dataset=dataset,
                       data_path=data_path, split=split, norm=norm, methods=method_list, batch=batch, skip=skip,
                       max_inputs=max_inputs, pgd_steps=pgd_steps, pgd_restarts=pgd_restarts, seed=seed,
                       device=device, resume=resume, overwrite=overwrite, tightness=tightness, backend=backend)
    rows, summary = run_verify(cfg, quiet=quiet)
    unit = "Linf" if norm == "inf" else "L2"
    click.echo(f"{summary['inputs']['dataset']} {summary['inputs']['split']}: {summary['n_inputs']} inputs, "
               f"{unit} eps={eps:g} (data range [0,1])")
    click.echo(f"{'clean accuracy':<30}{summary['clean_accuracy']:.3f}")
    click.echo(f"{'PGD accuracy':<30}{summary['pgd_accuracy']:.3f}   ({summary['seconds']['PGD']:.2f} s)")
    for m, v in summary["verified_accuracy"].items():
        click.echo(f"{'verified accuracy ' + m:<30}{v:.3f}   ({summary['seconds'][m]:.2f} s)")
    if tightness:
        click.echo(f"{'IBP tightness (mean)':<30}{summary['tightness']:.3f}")
    click.echo(f"results: {out}")
    click.echo(f"summary: {_write_summary(summary, summary_json, out)}")


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


@main.command()
@model_options
@click.option("--dataset", default="digits", show_default=True, help="digits, mnist DIR, cifar10 DIR or npz FILE.")
@click.argument("data_path", required=False, type=click.Path())
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True)
@click.option("--sigma", type=float, default=None, help=SIGMA_HELP)
@click.option("--eps", type=float, default=0.125, show_default=True,
              help="L2 attack radius in data-range units the sets must withstand.")
@click.option("--alpha", type=float, default=0.1, show_default=True, help="Target miscoverage.")
@click.option("--beta", type=float, default=0.001, show_default=True,
              help="Monte-Carlo error budget of RSCP+ (both sides), 0 < beta < alpha/2.")
@click.option("--n-mc", type=int, default=256, show_default=True, help="Noise draws per smoothed score.")
@click.option("--score", type=click.Choice(["aps", "hps"]), default="aps", show_default=True)
@click.option("--ptt", is_flag=True, help="Post-training transformation of the scores (fit on --holdout points).")
@click.option("--holdout", type=int, default=100, show_default=True, help="Points reserved to fit PTT.")
@click.option("--rule", type=click.Choice(["rscp+", "rscp"]), default="rscp+", show_default=True,
              help="rscp+ (guaranteed) or the original rscp (no finite-sample guarantee, for comparison).")
@click.option("--splits", type=int, default=50, show_default=True, help="Random calibration/test splits.")
@click.option("--attack-steps", type=int, default=20, show_default=True)
@click.option("--max", "max_inputs", type=int, default=None)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Per-split TSV. Default: ./certkit-results/.")
@click.option("--summary-json", type=click.Path(dir_okay=False), default=None)
@click.option("--plot", type=click.Path(dir_okay=False), default=None, help="PNG of coverage and set size per split.")
@click.option("--quiet", is_flag=True)
@_friendly
def conformal(model, weights, allow_pickle, dataset, data_path, split, sigma, eps, alpha, beta, n_mc, score, ptt,
              holdout, rule, splits, attack_steps, max_inputs, seed, device, out, summary_json, plot, quiet):
    """Robust conformal prediction sets (RSCP+, Yan et al. ICLR 2024) with coverage under attack.

    Reports marginal coverage on clean inputs and under a PGD-L2 attack (radius --eps) on the smoothed score, and
    the mean set size, as (mean, std) over random calibration/test splits.
    """
    import csv as _csv

    from certkit.certify.conformal import run_conformal

    rows, summary = run_conformal(model, dataset, data_path, split, sigma, eps, alpha, beta, n_mc, score, ptt,
                                  holdout, splits, attack_steps, seed, device, rule, weights, allow_pickle,
                                  max_inputs, quiet)
    from certkit.common.results import default_results_path

    out = out or default_results_path("conformal", dataset, rule, score + ("_ptt" if ptt else ""))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        w = _csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t")
        w.writeheader()
        w.writerows(rows)
    c, a, z = summary["coverage_clean"], summary["coverage_attacked"], summary["mean_set_size"]
    click.echo(f"{rule.upper()} {score.upper()}{' + PTT' if ptt else ''} on {dataset} ({summary['n_pool']} points, "
               f"{splits} splits): alpha={alpha:g} beta={beta:g} eps={eps:g} (L2) sigma={summary['sigma']:g} n_mc={n_mc}")
    click.echo(f"coverage clean     {c[0]:.3f} +- {c[1]:.3f}   (target >= {1 - alpha:.3f})")
    click.echo(f"coverage attacked  {a[0]:.3f} +- {a[1]:.3f}")
    click.echo(f"mean set size      {z[0]:.2f} +- {z[1]:.2f}   of {summary['num_classes']} classes")
    click.echo(f"results: {out}")
    click.echo(f"summary: {_write_summary(summary, summary_json, out)}")
    if plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(1, 2, figsize=(8, 3.2))
        ax[0].hist([r["coverage_clean"] for r in rows], alpha=0.6, label="clean")
        ax[0].hist([r["coverage_attacked"] for r in rows], alpha=0.6, label="attacked")
        ax[0].axvline(1 - alpha, color="k", ls="--")
        ax[0].set_xlabel("coverage per split")
        ax[0].legend()
        ax[1].hist([r["mean_set_size"] for r in rows])
        ax[1].set_xlabel("mean set size per split")
        fig.tight_layout()
        fig.savefig(plot, dpi=110)
        plt.close(fig)
        click.echo(f"plot: {plot}")


@main.group()
def soundness():
    """Soundness benchmark: instances with hidden counterexamples, and an audit of verifiers on them.

    \b
    certkit soundness generate --out bench/mlp_eps0.2 --arch mlp_4_hidden --eps 0.2 --preset cpu
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
@click.option("--eps", type=float, default=0.2, show_default=True,
              help="Linf radius RELATIVE to the data range r = 0.1 (the paper's eps0.2 / eps0.5): absolute radius "
                   "eps * r, e.g. 0.2 -> 0.02.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the data, planting and training.")
@click.option("--preset", type=click.Choice(["paper", "cpu"]), default="paper", show_default=True,
              help="paper: the paper's sizes, budgets and two-objective training (GPU hours per model); cpu: width "
                   "200, 1000 epochs, smaller attack budgets, certkit's pocket loss (minutes per model on a CPU). "
                   "Options below override the preset.")
@click.option("--channels", type=click.Choice(["1", "3"]), default="1", show_default=True, help="CNN input channels.")
@click.option("--input-size", type=int, default=None, help="MLP input length (default 10) or CNN image side (5).")
@click.option("--width", type=int, default=None, help="Units of the paper's 1000-unit layers.")
@click.option("--epochs", type=int, default=None, help="Training epochs at most (paper 10000).")
@click.option("--attack-iters", type=int, default=None, help="PGD iterations per training epoch (paper 75).")
@click.option("--attack-restarts", type=int, default=None, help="PGD restarts per training epoch (paper 75).")
@click.option("--check-every", type=int, default=None, help="Epochs between model-selection checks (paper 200).")
@click.option("--lr", type=float, default=None, help="Peak learning rate of the cyclic Adam schedule (paper 1e-3).")
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
@click.option("--quiet", is_flag=True)
@_friendly
def generate(out, arch, eps, seed, preset, channels, input_size, width, epochs, attack_iters, attack_restarts,
             check_every, lr, steps_per_epoch, input_scale, pocket_weight, pocket_radius, sweep_restarts, sweep, strong, strong_restarts, vertex_samples, n_planted, n_regular, timeout,
             resume, quiet):
    """Train a model with planted counterexamples and export it as a VNN-COMP benchmark.

    Planted counterexamples that survive the hiddenness check become instances whose true answer is sat; regular
    points give instances without ground truth. private/ holds the ground truth: never give it to a verifier.
    """
    from certkit.soundness_bench.generate import config_with_preset, generate as gen, parse_sweep

    cfg = config_with_preset(preset, out=out, arch=arch, eps=eps, seed=seed, channels=int(channels),
                             input_size=input_size, width=width, epochs=epochs, attack_iters=attack_iters,
                             attack_restarts=attack_restarts, check_every=check_every, lr=lr,
                             steps_per_epoch=steps_per_epoch, input_scale=input_scale, pocket_weight=pocket_weight,
                             pocket_radius=pocket_radius,
                             sweep_restarts=sweep_restarts, sweep=parse_sweep(sweep) if sweep else None,
                             strong=strong, strong_restarts=strong_restarts,
                             vertex_samples=vertex_samples, n_planted=n_planted, n_regular=n_regular,
                             timeout=timeout)
    s = gen(cfg, resume=resume, quiet=quiet)
    click.echo(f"{arch} eps={eps:g} (Linf {cfg.eps_abs:g}), seed {seed}: {s['valid_pairs']}/{s['planted_pairs']} pairs "
               f"planted, {s['survive_sweep']} survive the PGD sweep, {s['hidden']} survive every attack")
    click.echo(f"instances: {s['planted_instances']} planted + {s['regular_instances']} regular -> {s['instances']}")
    if s["not_confirmed"]:
        click.echo(f"dropped {s['not_confirmed']} planted pair(s) that onnxruntime did not confirm", err=True)
    click.echo(f"time: {s['seconds_total']:.0f} s (training {s['seconds_train']:.0f} s, "
               f"hiddenness check {s['seconds_hiddenness']:.0f} s); ground truth: {Path(out) / 'private'}")


@soundness.command()
@click.option("--bench", required=True, type=click.Path(file_okay=False),
              help="A generated folder (with instances.csv) or a folder of them.")
@click.option("--verifier", default=None,
              help="Built-in verifier: certkit, certkit-ibp, certkit-crown, certkit-alpha-crown, marabou, or the "
                   "deliberately unsound bug-shrink-input.")
@click.option("--command", "command", default=None,
              help="External verifier as a command template with {onnx} {vnnlib} {result} and optionally "
                   "{timeout}; split like a shell would, run without a shell.")
@click.option("--name", default=None, help="Label of a --command verifier (default: its program name).")
@click.option("--timeout", type=float, default=None,
              help="Seconds per instance (default: the instances.csv value, 100 s for generated benchmarks).")
@click.option("--grace", type=float, default=5.0, show_default=True,
              help="Extra seconds before the verifier's whole process group is killed.")
@click.option("--results", type=click.Path(file_okay=False), default=None,
              help="Output folder (default BENCH/results/NAME).")
@click.option("--resume", is_flag=True, help="Skip instances already answered in --results.")
@click.option("--overwrite", is_flag=True, help="Replace existing results.")
@click.option("--quiet", is_flag=True)
@_friendly
def run(bench, verifier, command, name, timeout, grace, results, resume, overwrite, quiet):
    """Run a verifier on every instance (one subprocess each, VNN-COMP style) and record its answers."""
    from collections import Counter

    from certkit.soundness_bench.run import results_dir, run_verifier

    rows = run_verifier(bench, verifier, command, name, results, timeout, grace, resume, overwrite, quiet)
    counts = Counter(r["result"] for r in rows)
    click.echo(f"{len(rows)} instances: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    click.echo(f"results: {results_dir(bench, verifier, command, name, results)}")


@soundness.command()
@click.option("--bench", required=True, type=click.Path(file_okay=False))
@click.option("--results", multiple=True, type=click.Path(file_okay=False),
              help="Results folder(s) of `soundness run` (default: every BENCH/results/*).")
@click.option("--tol", type=float, default=1e-4, show_default=True,
              help="Tolerance (input units and logits) when checking returned counterexamples.")
@click.option("--summary-json", type=click.Path(dir_okay=False), default=None)
@click.option("--fail-on-unsound", is_flag=True,
              help="Exit with status 3 when a verifier not unsound by design answered unsat on a planted instance.")
@_friendly
def score(bench, results, tol, summary_json, fail_on_unsound):
    """Score verifiers against the ground truth: unsat on a planted instance is UNSOUND.

    Planted instances have a hidden counterexample (true answer sat); regular ones have no ground truth. Every
    sat answer's counterexample is re-checked in onnxruntime.
    """
    from certkit.soundness_bench.score import format_table, score as do_score, write_summary

    summary = do_score(bench, list(results) or None, tol)
    click.echo(format_table(summary))
    if summary_json:
        write_summary(summary, summary_json)
        click.echo(f"summary: {summary_json}")
    from certkit.soundness_bench.adapters import UNSOUND_BY_DESIGN

    if fail_on_unsound and any(s["has_unsound"] for n, s in summary.items() if n not in UNSOUND_BY_DESIGN):
        sys.exit(3)


if __name__ == "__main__":
    main()
