"""``certkit verify``: four explicit modes (``--mode``): bound propagation on a data set, one VNN-COMP instance, a
VNN-COMP benchmark, or the pre-flight check of a model."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from certkit.cli.main import main
from certkit.cli.options import (
    EPS_HELP,
    LazyHelpOption,
    RegistryCommand,
    build_config,
    data_options,
    echo_outputs,
    friendly,
    given_registry_options,
    maps_to,
    model_options,
    ops_help,
    options_for,
    parse_shard,
    quiet_rank,
    renamed_option,
    run_options,
    verifier_help,
    verifier_option_specs,
)
from certkit.common.errors import CertkitError

MODES = ("dataset", "instance", "benchmark", "check")


@maps_to("certkit.runs.verify:VerifyConfig", "certkit.runs.vnncomp_benchmark:InstancesConfig",
         handled=("mode", "check_only", "input_shape", "methods", "onnx_path", "vnnlib_path", "timeout", "result_path",
                  "instances_csv", "verifier", "result_dir"))
@main.command(cls=RegistryCommand, option_specs=verifier_option_specs,
              short_help="Bound propagation and complete verification (data set, VNN-COMP).")
@click.option("--mode", type=click.Choice(MODES), default=None,
              help="dataset: clean / PGD / verified accuracy of --model on a data set (the default); instance: one "
                   "VNN-COMP instance (--onnx, --vnnlib, --result); benchmark: every row of --instances CSV; check: "
                   "the pre-flight check of --model or --onnx alone.")
@click.option("--check", "check_only", is_flag=True, cls=LazyHelpOption, help_fn=ops_help)
@model_options
@click.option("--input-shape", default=None,
              help="Per-sample input shape for --check of a factory model, e.g. 1,28,28.")
@data_options
@click.option("--eps", type=float, default=None, help=EPS_HELP)
@click.option("--norm", type=click.Choice(["inf", "2"]), default="inf", show_default=True,
              help="Linf balls (clipped to [0,1]) or L2 balls of radius --eps.")
@click.option("--method", "methods", default="IBP,CROWN-IBP,CROWN", show_default=True,
              help="Comma-separated bound methods: IBP, CROWN-IBP, CROWN, alpha-CROWN.")
@click.option("--batch", type=int, default=32, show_default=True, help="Inputs bounded together.")
@click.option("--pgd-steps", type=int, default=50, show_default=True,
              help="Steps of the PGD attack that gives the PGD accuracy (an upper bound of the robust accuracy).")
@click.option("--pgd-restarts", type=int, default=5, show_default=True, help="Random restarts of that attack.")
@run_options
@click.option("--onnx", "onnx_path", type=click.Path(dir_okay=False), default=None, help="VNN-COMP network.")
@click.option("--vnnlib", "vnnlib_path", type=click.Path(dir_okay=False), default=None, help="VNN-LIB 1.0 property.")
@click.option("--timeout", type=float, default=60.0, show_default=True,
              help="Seconds per VNN-COMP instance; in --mode instance counted from the start of the command (start-up "
                   "included), the result file written by then.")
@click.option("--result", "result_path", type=click.Path(dir_okay=False), default=None,
              help="VNN-COMP result file (sat + counterexample, unsat, unknown, timeout, error).")
@click.option("--instances", "instances_csv", type=click.Path(dir_okay=False), default=None,
              help="A benchmark's instances.csv (onnx,vnnlib,timeout rows, paths relative to it); results go to "
                   "--out (default results.tsv beside it), resumable.")
@click.option("--verifier", default="certkit", show_default=True, cls=LazyHelpOption, help_fn=verifier_help)
@renamed_option("--results", "--out", "the results file of --instances (TSV, resumable)")
@click.option("--result-dir", type=click.Path(file_okay=False), default=None,
              help="With --instances: also write one VNN-COMP result file per instance here.")
@click.option("--shard", default=None, callback=parse_shard,
              help="With --instances, K/N: answer only the instances K, K+N, K+2N, ... (0-based), for job arrays "
                   "(then `certkit merge`). Under torchrun ranks share the instances by themselves.")
@click.option("--backend", type=click.Choice(["certkit", "auto_lirpa"]), default="certkit", show_default=True,
              help="Bound engine for --model: certkit's own, or auto_LiRPA when it can be imported.")
@click.option("--complete-timeout", type=float, default=0.0, show_default=True,
              help="--model, Linf: seconds per input for certkit's complete verifier (attacks, alpha-CROWN, beta-CROWN "
                   "/ GenBaB branch and bound, as for --onnx) on every input that PGD did not break and no --method "
                   "verified; adds the 'complete' verified accuracy and how many inputs timed out. 0 = off.")
@click.option("--tightness", is_flag=True,
              help="Also report the mean IBP propagation tightness (Mao et al. ICLR 2024): optimal box radius of the "
                   "locally linearized network / IBP box radius, in (0, 1].")
@friendly
def verify(mode, check_only, input_shape, methods, onnx_path, vnnlib_path, timeout, result_path, instances_csv,
           verifier, result_dir, **kw):
    """Verify robustness with bound propagation (IBP, CROWN-IBP, CROWN, alpha-CROWN).

    \b
    Four modes:
      certkit verify --model M --dataset D --eps E                    clean / PGD / verified accuracy per method
      certkit verify --mode instance --onnx N --vnnlib P --result R   one VNN-COMP instance
      certkit verify --mode benchmark --instances instances.csv       a VNN-COMP benchmark (results.tsv beside it)
      certkit verify --mode check --model M (or --onnx N)             the pre-flight check alone
    """
    ctx = click.get_current_context()
    given = given_registry_options(ctx, kw)        # the verifier's own options (certkit's --no-bab)
    mode = _resolve_mode(mode, check_only, instances_csv, onnx_path, vnnlib_path)
    _refuse_other_modes(ctx, mode)
    options = options_for(given, verifier_option_specs(), verifier, [verifier], what="--verifier")
    if mode == "check":
        _verify_check(kw["model"], kw["weights"], kw["allow_pickle"], onnx_path, input_shape)
        return
    if mode == "benchmark":
        if not instances_csv:
            raise CertkitError("--mode benchmark needs --instances CSV (a benchmark's instances.csv)")
        from certkit.runs.vnncomp_benchmark import InstancesConfig, result_counts, run_instances

        cfg = build_config(InstancesConfig, _fields_of(InstancesConfig, kw), instances=instances_csv,
                           verifier=verifier, options=options, result_dir=result_dir)
        rows = run_instances(cfg)
        if not quiet_rank():  # under torchrun rank 0 reports the merged rows
            click.echo(f"results: {result_counts(rows)}  ({cfg.out})")
        return
    if mode == "instance":
        _verify_instance(onnx_path, vnnlib_path, timeout, result_path, verifier, options)
        return
    from certkit.runs.verify import VerifyConfig, run_verify

    cfg = build_config(VerifyConfig, _fields_of(VerifyConfig, kw), methods=[m for m in methods.split(",") if m.strip()],
                       sound=bool(given.get("sound", False)))
    rows, summary = run_verify(cfg)
    unit = "Linf" if cfg.norm == "inf" else "L2"
    click.echo(f"{summary['inputs']['dataset']} {summary['inputs']['split']}: {summary['n_inputs']} inputs, "
               f"{unit} eps={cfg.eps:g} (data range [0,1])"
               + ("; sound bounds (exact arithmetic and float32)" if cfg.sound else ""))
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
    echo_outputs(cfg, summary)


MODE_OPTIONS = {"check": "--check", "benchmark": "--instances", "instance": "--onnx/--vnnlib"}


def _resolve_mode(mode, check_only, instances_csv, onnx_path, vnnlib_path) -> str:
    """The mode asked for, or the one the older spellings imply (with a one-line notice)."""
    implied = ("check" if check_only else "benchmark" if instances_csv else
               "instance" if (onnx_path or vnnlib_path) else None)
    if mode is None and implied is not None:
        click.echo(f"Note: {MODE_OPTIONS[implied]} alone is deprecated: write --mode {implied} "
                   f"(certkit verify --help)", err=True)
        return implied
    return mode or "dataset"


def _mode_params(mode: str) -> set[str]:
    """The parameter names each mode reads."""
    import dataclasses

    if mode == "dataset":
        from certkit.runs.verify import VerifyConfig

        return {f.name for f in dataclasses.fields(VerifyConfig)} | {"methods", "sound"}
    if mode == "benchmark":
        from certkit.runs.vnncomp_benchmark import InstancesConfig

        return ({f.name for f in dataclasses.fields(InstancesConfig)} | {"instances_csv", "verifier", "result_dir"}
                | set(verifier_option_specs()))
    if mode == "instance":
        return {"onnx_path", "vnnlib_path", "timeout", "result_path", "verifier", "quiet",
                *verifier_option_specs()}
    return {"check_only", "model", "weights", "allow_pickle", "random_init", "onnx_path", "input_shape", "quiet"}


def _refuse_other_modes(ctx: click.Context, mode: str) -> None:
    """Options given for another mode are refused, never silently ignored.

    Raises:
        CertkitError: naming the option and the modes that take it.
    """
    allowed = _mode_params(mode) | {"mode"}
    for p in ctx.command.get_params(ctx):
        if p.name is None or p.name in allowed or ctx.get_parameter_source(p.name) in (
                None, click.core.ParameterSource.DEFAULT):
            continue
        flag = "/".join([p.opts[0], *getattr(p, "secondary_opts", [])]) if p.opts else p.name
        owners = [m for m in MODES if p.name in _mode_params(m)]
        hint = "; a data-set run takes the network as --model N.onnx" if p.name == "onnx_path" else ""
        raise CertkitError(f"{flag} belongs to --mode {' or --mode '.join(owners)}, not --mode {mode}{hint}")


def _fields_of(cls, kw: dict) -> dict:
    """The keyword arguments that ``cls`` has fields for (the others belong to other modes and were left at their
    defaults, which _refuse_other_modes checked)."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in kw.items() if k in names}


#: seconds of --timeout kept for writing the result file and leaving
WRITE_MARGIN = 0.3


def _verify_instance(onnx_path, vnnlib_path, timeout, result_path, verifier, options):
    from certkit.verifiers.complete.registry import Instance, get_verifier
    from certkit.verifiers.complete.vnncomp_format import format_result, write_result_file

    if not (onnx_path and vnnlib_path):
        raise CertkitError("a VNN-COMP instance needs both --onnx and --vnnlib")
    if not timeout > 0:
        raise CertkitError(f"--timeout must be > 0, got {timeout}")
    from certkit.common.clock import command_age
    from certkit.verifiers.complete.vnncomp_format import InstanceResult

    # the limit counts from the start of the command (start-up and imports included); what is left after a margin
    # for writing the result file goes to the verifier
    left = timeout - command_age() - WRITE_MARGIN
    v = get_verifier(verifier, options)
    guard = _TimeGuard(left + WRITE_MARGIN / 2, result_path, timeout)
    res = (v.verify(Instance(Path(onnx_path), Path(vnnlib_path)), left) if left > 0 else
           InstanceResult("timeout", 0.0, f"the {timeout:g} s were spent starting up"))
    if not guard.claim():
        return   # the guard is answering timeout and ending the process
    if result_path:
        write_result_file(result_path, res)
    click.echo(format_result(res).rstrip())
    if res.reason:
        click.echo(f"{res.status}: {res.reason}", err=True)
    if res.checks:
        from certkit.verifiers.complete.vnncomp_format import checks_text
        click.echo(checks_text(res.checks), err=True)
    click.echo(f"({res.seconds:.2f} s{', ' + res.method if res.method else ''}"
               f"{f', {res.domains} domains' if res.domains else ''})", err=True)
    if res.status == "error":
        sys.exit(1)


class _TimeGuard:
    """The time limit kept whatever the verifier is doing: ``seconds`` from now, unless :meth:`claim` was called
    first, a timer thread writes ``timeout`` to the result file, prints it and ends the process at once (os._exit:
    no interpreter teardown). One of the two answers, never both (a lock decides)."""

    def __init__(self, seconds: float, result_path, timeout: float):
        import threading

        self.lock, self.claimed = threading.Lock(), False
        self.result_path, self.timeout = result_path, timeout
        self.timer = threading.Timer(max(seconds, 0.0), self._fire)
        self.timer.daemon = True
        self.timer.start()

    def claim(self) -> bool:
        """The verifier answered: True if it did so before the guard (which is then stopped)."""
        with self.lock:
            if self.claimed:
                return False
            self.claimed = True
        self.timer.cancel()
        return True

    def _fire(self) -> None:
        import os

        from certkit.verifiers.complete.vnncomp_format import InstanceResult, format_result, write_result_file

        with self.lock:
            if self.claimed:
                return
            self.claimed = True
        res = InstanceResult("timeout", self.timeout, f"the {self.timeout:g} s limit was reached")
        try:
            if self.result_path:
                write_result_file(self.result_path, res)
            sys.stdout.write(format_result(res))
            sys.stderr.write(f"timeout: {res.reason}\n")
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(0)


def _verify_check(model, weights, allow_pickle, onnx_path, input_shape):
    from certkit.models import load_model
    from certkit.verifiers import check_model

    loaded = load_model(onnx_path or model, weights, allow_pickle, random_init=True)  # the check needs no weights
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
