"""``certkit certify``: randomized-smoothing certification with any registered smoothing method."""
from __future__ import annotations

from pathlib import Path

import click

from certkit.cli.main import main
from certkit.cli.options import (
    LazyHelpOption,
    RegistryCommand,
    build_config,
    data_options,
    denoiser_options,
    echo_outputs,
    friendly,
    given_registry_options,
    maps_to,
    model_options,
    options_for,
    parse_floats,
    quiet_rank,
    run_options,
    smoothing_help,
    smoothing_option_specs,
    smoothing_options,
)
from certkit.common.errors import CertkitError


@maps_to("certkit.runs.certify:CertifyConfig", handled=("methods", "plot"))
@main.command(cls=RegistryCommand, option_specs=smoothing_option_specs,
              short_help="Certify with randomized smoothing (certified L2 radius per input).")
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
@friendly
@click.pass_context
def certify(ctx, methods, plot, **kw):
    """Certify inputs with randomized smoothing: Gaussian (CERTIFY, Cohen et al. 2019), Dual RS, LVM-RS, sequential
    or adaptive smoothing; with --denoiser D the base classifier is F(D(x)) (denoised smoothing).

    For each input: the smoothed prediction and a certified L2 radius (data-range units) that holds with
    probability at least 1 - alpha; predict -1 means abstain. Bare `certkit certify` certifies the bundled
    digits model on the digits test split.
    """
    from certkit.certify.report import format_table, plot_curves
    from certkit.certify.smoothing import smoothing_method
    from certkit.common.results import check_writable
    from certkit.runs.certify import CertifyConfig, default_out, execute_certify, plan_certify

    given = given_registry_options(ctx, kw)
    names = [m.strip().lower() for m in methods.split(",") if m.strip()]
    if not names:
        raise CertkitError("--method is empty")
    classes = [smoothing_method(m) for m in names]
    specs = smoothing_option_specs()
    options = {n: options_for(given, specs, n, names) for n in names}   # every method's options checked first
    if kw["summary_json"] and len(names) > 1:
        raise CertkitError("--summary-json names one file: with several methods each summary goes beside its TSV")
    if kw["resume"] and kw["out"] is None:
        raise CertkitError("--resume needs --out FILE (the TSV to continue)")
    if plot:
        check_writable(plot, overwrite=True)
    plans, base = [], kw["out"]
    for name in names:   # every method, its data, its calibration inputs and its results file, before any runs
        out = base if base is None or len(names) == 1 else str(Path(base).with_suffix("")) + f"_{name}.tsv"
        cfg = build_config(CertifyConfig, {**kw, "out": out}, method=name, options=options[name])
        if len(names) > 1 and base is None:
            default_out(cfg, "certify", name)
        plans.append(plan_certify(cfg))
    curves = {}
    for cls, plan in zip(classes, plans):
        cfg = plan.cfg
        rows, summary = execute_certify(plan)
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
