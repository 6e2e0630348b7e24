"""``certkit certify``: randomized-smoothing certification with any registered smoothing method."""
from __future__ import annotations

from pathlib import Path

import click

from certkit.cli.main import main
from certkit.cli.options import (
    LazyHelpOption,
    build_config,
    data_options,
    denoiser_options,
    echo_outputs,
    friendly,
    model_options,
    parse_floats,
    quiet_rank,
    run_options,
    smoothing_help,
    smoothing_options,
)
from certkit.common.errors import CertkitError


@main.command()
@model_options
@denoiser_options
@data_options
@smoothing_options
@run_options
@click.option("--n0", type=int, default=100, show_default=True,
              help="Selection samples (top class; for lvm also the simplex map and temperature).")
@click.option("--method", "methods", default="gaussian", show_default=True, cls=LazyHelpOption, help_fn=smoothing_help)
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="PNG of certified accuracy against L2 radius (one curve per method).")
@click.option("--radii", default=None, callback=lambda ctx, p, v: parse_floats(v, "--radii"),
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
@friendly
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
        cfg = build_config(CertifyConfig, {**kw, "out": out}, method=name)
        if len(names) > 1 and base is None:
            default_out(cfg, "certify", name)
        rows, summary = run_certify(cfg)
        if quiet_rank():
            return
        inp = summary["inputs"]
        scope = ("the full split" if inp["full_split"] else
                 f"{inp['certified']} of {inp['split_size']} (skip {inp['skip']}, max {inp['max']})")
        title = (f"{cls.label} smoothing on {inp['dataset']} {inp['split']} ({scope}): sigma={summary['sigma']:g} "
                 f"n0={cfg.n0} n={cfg.n} alpha={cfg.alpha:g}")
        click.echo(format_table(summary, title))
        echo_outputs(cfg, summary)
        curves[f"{cls.label} sigma={summary['sigma']:g}"] = rows
    if plot:
        plot_curves(curves, plot, f"{inp['dataset']} {inp['split']}, n={cfg.n}, alpha={cfg.alpha:g}")
        click.echo(f"plot: {plot}")
