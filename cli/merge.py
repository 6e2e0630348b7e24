"""``certkit merge``: the shard files of one sharded run merged into the rows of a single process."""
from __future__ import annotations

import click

from certkit.cli.main import main
from certkit.cli.options import echo_outputs, friendly, quiet_option
from certkit.common.errors import CertkitError


@main.command(short_help="Merge the shard files of one sharded certify, predict or verify --mode benchmark run.")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="The merged TSV.")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
@click.option("--summary-json", type=click.Path(dir_okay=False), default=None,
              help="Summary JSON. Default: <out>.summary.json.")
@click.argument("shards", nargs=-1, required=True, type=click.Path(dir_okay=False))
@quiet_option
@friendly
def merge(out, overwrite, summary_json, shards, quiet):
    """Merge the shard files of one `certify --shard K/N` (or `predict`, or `verify --mode benchmark`) run: the rows
    of a single-process run.

    Refuses shards computed with other settings, missing, duplicated or unfinished shards.
    """
    from certkit.certify.report import format_table
    from certkit.runs import RunConfig
    from certkit.runs.certify import merge_shards
    from certkit.runs.vnncomp_benchmark import is_instance_shard, merge_instance_shards, result_counts

    if shards and is_instance_shard(shards[0]):
        if summary_json:
            raise CertkitError("--summary-json: a benchmark run has no summary file (its rows are the results)")
        merged = merge_instance_shards(out, list(shards), overwrite=overwrite)
        click.echo(f"results: {result_counts(merged)}  ({out}, {len(shards)} shards merged)")
        return

    rows, summary = merge_shards(out, list(shards), overwrite=overwrite)
    if "certified_accuracy" in summary:
        click.echo(format_table(summary, f"{summary['method']} on {summary['inputs']['dataset']} "
                                         f"{summary['inputs']['split']}, {summary['shards']} shards merged"))
    else:
        click.echo(f"smoothed accuracy {summary['accuracy']:.3f}   abstain rate {summary['abstain_rate']:.3f}   "
                   f"inputs {summary['n_inputs']}   ({summary['shards']} shards merged)")
    echo_outputs(RunConfig(out=out, summary_json=summary_json), summary)
