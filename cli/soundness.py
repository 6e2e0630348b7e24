"""``certkit soundness generate | run | score``: hidden-counterexample benchmarks and audits of verifiers."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from certkit.cli.main import main
from certkit.cli.options import (
    LazyHelpOption,
    audit_verifier_help,
    friendly,
    maps_to,
    quiet_option,
    renamed_option,
    seed_option,
    threads_option,
)


@main.group(short_help="Audit verifiers on instances with hidden counterexamples.")
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


@maps_to("certkit.soundness_bench.generate:GenerateConfig", handled=("preset", "channels", "sweep", "resume", "quiet"))
@soundness.command(short_help="Train a model with planted counterexamples; export a VNN-COMP benchmark.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder of this model's benchmark (model.onnx, vnnlib/, instances.csv, private/).")
@click.option("--arch", default="mlp_4_hidden", show_default=True, help=_ARCH_HELP)
@click.option("--eps-rel", type=float, default=0.2, show_default=True,
              help="Linf radius RELATIVE to the data range r = 0.1 (the paper's eps0.2 / eps0.5): the absolute radius "
                   "is eps-rel * r, e.g. 0.2 -> 0.02.")
@renamed_option("--eps", "--eps-rel", "the Linf radius RELATIVE to the data range 0.1 (0.2 -> absolute 0.02)")
@seed_option
@threads_option
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
@friendly
def generate(preset, channels, sweep, resume, quiet, **kw):
    """Train a model with planted counterexamples and export it as a VNN-COMP benchmark.

    Planted counterexamples that survive the hiddenness check become instances whose true answer is sat; regular
    points give instances without ground truth. private/ holds the ground truth: never give it to a verifier.
    """
    from certkit.soundness_bench.generate import config_with_preset, parse_sweep
    from certkit.soundness_bench.generate import generate as gen

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
    if s["planted_instances"] == 0:
        why = ("no pair could be planted (the network never fitted them): train longer or with a larger --lr, "
               "--epochs, --width" if s["valid_pairs"] == 0 else
               "every planted pair was found by an attack: train with more --attack-restarts (the preset's values "
               "for this family and radius are in the docs' soundness guide) or a smaller --eps-rel")
        click.echo(f"Warning: this benchmark has NO planted instance, so it cannot show a verifier unsound: {why}",
                   err=True)


@soundness.command("run", short_help="Run a verifier on every instance of a benchmark.")
@click.option("--bench", required=True, type=click.Path(file_okay=False),
              help="A generated folder (with instances.csv) or a folder of them.")
@click.option("--verifier", default=None, cls=LazyHelpOption, help_fn=audit_verifier_help)
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
@renamed_option("--results", "--out", "the output folder of soundness run")
@click.option("--resume", is_flag=True, help="Skip instances already answered in --out.")
@click.option("--overwrite", is_flag=True, help="Replace existing results.")
@click.option("--process-per-instance", is_flag=True,
              help="--verifier: start a fresh process for every instance, as VNN-COMP does (default: one "
                   "persistent worker per audit, restarted only after an instance overruns its time).")
@quiet_option
@friendly
def run_audit(bench, verifier, command, tool, prepare_timeout, name, timeout, grace, results, resume, overwrite,
              process_per_instance, quiet):
    """Run a verifier on every instance and record its answers: external commands and --vnncomp-tool one subprocess
    each (VNN-COMP style), built-in verifiers through one persistent worker process."""
    from collections import Counter

    from certkit.soundness_bench.runner import results_dir, run_verifier

    rows = run_verifier(bench, verifier, command, name, results, timeout, grace, resume, overwrite, quiet, tool,
                        prepare_timeout, worker=not process_per_instance)
    counts = Counter(r["result"] for r in rows)
    click.echo(f"{len(rows)} instances: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    click.echo(f"results: {results_dir(bench, verifier, command, name, results, tool)}")


@soundness.command(short_help="Score verifiers against the hidden ground truth.")
@click.option("--bench", required=True, type=click.Path(file_okay=False),
              help="The benchmark folder (a generated folder, or a folder of them) whose answers are scored.")
@click.option("--results", multiple=True, type=click.Path(file_okay=False),
              help="Results folder(s) of `soundness run` (default: every BENCH/results/*).")
@click.option("--tol", type=float, default=1e-4, show_default=True,
              help="Tolerance (input units and logits) when checking returned counterexamples.")
@click.option("--summary-json", type=click.Path(dir_okay=False), default=None,
              help="Write the scores as JSON: {verifier: {planted: counts, regular: counts, unsound_instances, "
                   "invalid_counterexamples}}.")
@click.option("--report", type=click.Path(dir_okay=False), default=None,
              help="A report for people: markdown FILE with a verdict per verifier, answer counts and the unsound "
                   "instances, and FILE.png (time per instance) beside it.")
@click.option("--fail-on-unsound", is_flag=True,
              help="Exit with status 3 when a verifier not unsound by design answered unsat on a planted instance.")
@quiet_option
@friendly
def score(bench, results, tol, summary_json, report, fail_on_unsound, quiet):
    """Score verifiers against the ground truth: unsat on a planted instance is UNSOUND.

    Planted instances have a hidden counterexample (true answer sat); regular ones have no ground truth. Every
    sat answer's counterexample is re-checked in onnxruntime.
    """
    from certkit.soundness_bench.adapters import unsound_by_design
    from certkit.soundness_bench.score import format_audit_table, write_audit_summary
    from certkit.soundness_bench.score import score as do_score

    summary = do_score(bench, list(results) or None, tol)
    click.echo(format_audit_table(summary))
    if summary_json:
        write_audit_summary(summary, summary_json)
        click.echo(f"summary: {summary_json}")
    if report:
        from certkit.soundness_bench.score import write_report

        md, png = write_report(summary, report, unsound_by_design())
        click.echo(f"report: {md} (plot {png})")
    if fail_on_unsound and any(s["has_unsound"] for n, s in summary.items() if n not in unsound_by_design()):
        sys.exit(3)

