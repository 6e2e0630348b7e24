"""``certkit conformal``: robust conformal prediction sets (RSCP+) with coverage under attack."""
from __future__ import annotations

import click

from certkit.cli.main import main
from certkit.cli.options import (
    SIGMA_HELP,
    build_config,
    data_options,
    denoiser_options,
    echo_outputs,
    friendly,
    maps_to,
    model_options,
    renamed_option,
    run_options,
)


@maps_to("certkit.runs.conformal:ConformalConfig", handled=("plot",))
@main.command(short_help="Robust conformal prediction sets (RSCP+) and their coverage under attack.")
@model_options
@denoiser_options
@data_options
@click.option("--sigma", type=float, default=None, help=SIGMA_HELP)
@click.option("--eps-l2", type=float, default=0.125, show_default=True,
              help="L2 radius (ABSOLUTE, data-range units, [0,1] pixels) the sets must withstand.")
@renamed_option("--eps", "--eps-l2", "the ABSOLUTE L2 radius the sets must withstand")
@click.option("--alpha", type=float, default=0.1, show_default=True, help="Target miscoverage.")
@click.option("--beta", type=float, default=0.001, show_default=True,
              help="Monte-Carlo error budget of RSCP+ (both sides), 0 < beta < alpha/2.")
@click.option("--n-mc", type=int, default=256, show_default=True, help="Noise draws per smoothed score.")
@click.option("--score", type=click.Choice(["aps", "hps"]), default="aps", show_default=True,
              help="Conformity score: aps (adaptive prediction sets, randomized) or hps (1 - softmax of the label).")
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
@friendly
def conformal(plot, **kw):
    """Robust conformal prediction sets (RSCP+, Yan et al. ICLR 2024) with coverage under attack.

    Reports marginal coverage on clean inputs and under a PGD-L2 attack (radius --eps-l2) on the smoothed score, and
    the mean set size, as (mean, std) over random calibration/test splits (one TSV row per split).
    """
    from certkit.runs.conformal import ConformalConfig, plot_conformal, run_conformal

    cfg = build_config(ConformalConfig, kw)
    rows, summary = run_conformal(cfg)
    c, a, z = summary["coverage_clean"], summary["coverage_attacked"], summary["mean_set_size"]
    click.echo(f"{cfg.rule.upper()} {cfg.score.upper()}{' + PTT' if cfg.ptt else ''} on {cfg.dataset} "
               f"({summary['n_pool']} points, {cfg.splits} splits): alpha={cfg.alpha:g} beta={cfg.beta:g} "
               f"eps={cfg.eps_l2:g} (L2) sigma={summary['sigma']:g} n_mc={cfg.n_mc}")
    click.echo(f"coverage clean     {c[0]:.3f} +- {c[1]:.3f}   (target >= {1 - cfg.alpha:.3f})")
    click.echo(f"coverage attacked  {a[0]:.3f} +- {a[1]:.3f}")
    click.echo(f"mean set size      {z[0]:.2f} +- {z[1]:.2f}   of {summary['num_classes']} classes")
    echo_outputs(cfg, summary)
    if plot:
        plot_conformal(rows, cfg.alpha, plot)
        click.echo(f"plot: {plot}")
