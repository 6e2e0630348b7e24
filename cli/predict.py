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


@maps_to("certkit.runs.certify:CertifyConfig", handled=("sound",))
@main.command(short_help="Predict with the smoothed classifier, or abstain.")
@model_options
@denoiser_options
@data_options
@smoothing_options
@run_options
@click.option("--sound", is_flag=True,
              help="Sound smoothing in floating point: inputs rounded to a dyadic grid, noise drawn exactly on it and "
                   "added exactly (docs/methods/sound.md); predicts with the classifier x -> g(round(x)).")
@friendly
def predict(sound, **kw):
    """Predict with the smoothed classifier (PREDICT, Cohen et al. 2019).

    Abstains (-1) unless a two-sided binomial test separates the top two classes at level alpha.
    """
    from certkit.runs.certify import CertifyConfig, run_predict

    cfg = build_config(CertifyConfig, kw, n0=1, options={"sound": True} if sound else {})
    rows, summary = run_predict(cfg)
    if quiet_rank():
        return
    click.echo(f"smoothed accuracy {summary['accuracy']:.3f}   abstain rate {summary['abstain_rate']:.3f}   "
               f"inputs {summary['n_inputs']}   sigma={summary['sigma']:g} n={cfg.n} alpha={cfg.alpha:g}")
    echo_outputs(cfg, summary)
