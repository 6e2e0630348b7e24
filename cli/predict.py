"""``certkit predict``: the smoothed classifier's prediction (PREDICT) with abstention."""
from __future__ import annotations

import click

from certkit.cli.main import main
from certkit.cli.options import (
    build_config,
    data_options,
    denoiser_options,
    echo_outputs,
    friendly,
    maps_to,
    model_options,
    quiet_rank,
    run_options,
    smoothing_options,
)


@maps_to("certkit.runs.certify:CertifyConfig")
@main.command(short_help="Predict with the smoothed classifier, or abstain.")
@model_options
@denoiser_options
@data_options
@smoothing_options
@run_options
@friendly
def predict(**kw):
    """Predict with the smoothed classifier (PREDICT, Cohen et al. 2019).

    Abstains (-1) unless a two-sided binomial test separates the top two classes at level alpha.
    """
    from certkit.runs.certify import CertifyConfig, run_predict

    cfg = build_config(CertifyConfig, kw, n0=1)
    rows, summary = run_predict(cfg)
    if quiet_rank():
        return
    click.echo(f"smoothed accuracy {summary['accuracy']:.3f}   abstain rate {summary['abstain_rate']:.3f}   "
               f"inputs {summary['n_inputs']}   sigma={summary['sigma']:g} n={cfg.n} alpha={cfg.alpha:g}")
    echo_outputs(cfg, summary)
