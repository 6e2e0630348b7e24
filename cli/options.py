"""What several ``certkit`` commands share: the one-line error wrapper, option groups that mean the same
everywhere (model, data, run, smoothing), and help texts read lazily from the registries."""
from __future__ import annotations

import dataclasses
import functools
import sys
from collections.abc import Callable

import click

from certkit.common.errors import CertkitError

SIGMA_HELP = "Gaussian noise std in data-range units ([0,1] pixels). Default: the sigma the model was trained with."
EPS_HELP = ("Perturbation radius in data-range units ([0,1] pixels), an ABSOLUTE radius: Linf (balls clipped to "
            "[0,1]) unless --norm 2 says L2.")


def friendly(fn):
    """Turn CertkitError (and Ctrl-C) into one-line messages with a non-zero exit. A command that takes
    ``--threads`` (:data:`threads_option`) computes under a thread governor (common/threads.py) for its duration."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        governed = "threads" in kwargs
        try:
            if governed:
                from certkit.common.threads import govern

                govern(kwargs.pop("threads"))
            return fn(*args, **kwargs)
        except CertkitError as e:
            raise click.ClickException(" ".join(str(e).split())) from None
        except OSError as e:  # the file system refused (full disk, read-only, missing directory): not a bug
            where = f"{e.filename}: " if getattr(e, "filename", None) else ""
            raise click.ClickException(f"cannot read or write {where}{e.strerror or e}") from None
        except KeyboardInterrupt:
            click.echo("\ninterrupted: rows computed so far are saved; rerun with --resume to continue", err=True)
            sys.exit(130)
        finally:
            if governed:
                from certkit.common.threads import release

                release()
    return wrapper


def warn_to_stderr(message, category, filename, lineno, file=None, line=None):
    click.echo(f"Warning: {message}", err=True)


class LazyHelpOption(click.Option):
    """An option whose help text is computed only when help is shown (it reads a registry, which imports torch)."""

    def __init__(self, *args, help_fn: Callable[[], str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.help_fn = help_fn

    def get_help_record(self, ctx):
        if self.help_fn is not None:
            self.help = self.help_fn()
        return super().get_help_record(ctx)


def renamed_option(old: str, new: str, meaning: str):
    """A hidden option that refuses an old name with a pointer to the new one (one meaning per option name)."""
    def fail(ctx, param, value):
        if value is not None:
            raise click.BadParameter(f"{old} was renamed {new}: {meaning}", ctx=ctx, param=param)
    dest = "renamed_" + old.strip("-").replace("-", "_")  # never the name of the option that replaced it
    return click.option(old, dest, type=str, default=None, hidden=True, expose_value=False, callback=fail)


def option_group(*decorators):
    def apply(fn):
        for d in reversed(decorators):
            fn = d(fn)
        return fn
    return apply


def build_config(cls, kw: dict, **extra):
    """A config dataclass from the command's keyword arguments plus ``extra``.

    Raises:
        TypeError: a keyword the config has no field for: every option must map to something (the command handles
            its own options before calling this, and removes them from ``kw``).
    """
    names = {f.name for f in dataclasses.fields(cls)}
    unmapped = sorted(set(kw) - names - set(extra))
    if unmapped:
        raise TypeError(f"options with no field in {cls.__name__}: {', '.join(unmapped)}")
    return cls(**{k: v for k, v in kw.items() if k not in extra}, **extra)


class RegistryCommand(click.Command):
    """A command whose options include those that registered classes declare (``Options`` dataclasses, see
    certkit.common.options). They are added when the command is first parsed or its help shown, so that listing the
    commands never imports the registries (and torch).

    Args:
        option_specs: a function returning {name: OptionSpec} (e.g. every smoothing method's options, merged).
    """

    def __init__(self, *args, option_specs: Callable[[], dict] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.option_specs = option_specs
        self._specs: dict | None = None
        self._registry_params: list[click.Option] = []

    def registry_options(self) -> dict:
        """{name: OptionSpec} of the registered classes' options, kept in the command's params (rebuilt when the
        registry changed, e.g. a plug-in registered a method after the first call)."""
        specs = self.option_specs() if self.option_specs is not None else {}
        if specs != self._specs:
            self.params = [p for p in self.params if p not in self._registry_params]
            clash = sorted(set(specs) & {p.name for p in self.params})
            if clash:
                raise TypeError(f"registered options clash with the command's own: {', '.join(clash)}")
            self._registry_params = [click_option(s) for s in specs.values()]
            self.params.extend(self._registry_params)
            self._specs = specs
        return specs

    def get_params(self, ctx):
        self.registry_options()
        return super().get_params(ctx)


def maps_to(*configs: str, handled: tuple[str, ...] = ()):
    """Record on a command which config dataclasses (``"module:Class"``) its options fill and which options it
    handles itself; tests check that every option of every command maps to one or the other, or to a registered
    class's ``Options``. Put it above ``@main.command``."""
    def deco(command: click.Command) -> click.Command:
        command.config_classes = configs            # type: ignore[attr-defined]
        command.handled = frozenset(handled)        # type: ignore[attr-defined]
        return command
    return deco


def click_option(spec) -> click.Option:
    """The click option of an OptionSpec: ``--name`` (``--name/--no-name`` for booleans without a False default),
    help prefixed with the classes that take it."""
    flag = spec.flag
    kind = click.Choice(spec.choices) if spec.choices else spec.type
    help_text = spec.help
    if spec.type is bool:
        if spec.default is False and not spec.optional:
            return click.Option([flag, spec.name], is_flag=True, default=False, help=help_text)
        return click.Option([f"{flag}/--no-{flag[2:]}", spec.name], default=spec.default, help=help_text,
                            show_default=spec.default is not None)
    return click.Option([flag, spec.name], type=kind, default=spec.default, help=help_text,
                        show_default=spec.default is not None)


def given_registry_options(ctx: click.Context, kw: dict) -> dict:
    """Remove the registered classes' options from ``kw`` and return those the user gave (on the command line, in a
    recipe or the environment; not the ones left at their defaults), name -> value."""
    command = ctx.command
    specs = command.registry_options() if isinstance(command, RegistryCommand) else {}
    given = {}
    for name in specs:
        value = kw.pop(name)
        source = ctx.get_parameter_source(name)
        if source is not None and source != click.core.ParameterSource.DEFAULT:
            given[name] = value
    return given


def options_for(given: dict, specs: dict, owner: str, selected: list[str], what: str = "--method") -> dict:
    """The given options that ``owner`` declares (``what`` names the kind of owner in messages).

    Raises:
        CertkitError: a given option that none of the ``selected`` owners declares.
    """
    for name in given:
        if not set(specs[name].owners) & set(selected):
            raise CertkitError(f"{specs[name].shown} is an option of {what} {', '.join(specs[name].owners)}; "
                               f"{what} {','.join(selected)} does not take it")
    return {k: v for k, v in given.items() if owner in specs[k].owners}


# ------------------------------------------------------------------------------------ shared options
model_options = option_group(
    click.option("--model", "model", default="bundled", show_default=True,
                 help="certkit checkpoint, reference checkpoint {'arch','state_dict'} (cifar_resnet20/110), .onnx "
                      "file, or package.module:factory. 'bundled' is the shipped digits model."),
    click.option("--weights", type=click.Path(dir_okay=False),
                 help="state_dict file for a --model package.module:factory model."),
    click.option("--random-init", is_flag=True,
                 help="With --model package.module:factory and no --weights: use the network exactly as the factory "
                      "returns it (untrained, or loading its own weights). Without this flag that is an error."),
    click.option("--allow-pickle", is_flag=True,
                 help="Load checkpoints with full pickle (EXECUTES code stored in the file). Only for files you trust; "
                      "default is torch.load(weights_only=True)."),
)
denoiser_options = option_group(
    click.option("--denoiser", default=None,
                 help="Denoised smoothing: a denoiser D put in front of --model F; the run certifies F(D(x + noise)) "
                      "as ONE fixed classifier. A certkit denoiser checkpoint (certkit train --method denoiser), an "
                      ".onnx file, or package.module:factory (your own diffusion / consistency model: see "
                      "docs/guide/certify.md)."),
    click.option("--denoiser-weights", type=click.Path(dir_okay=False), default=None,
                 help="state_dict file for a --denoiser package.module:factory."),
)
DATASET_HELP = ("digits (bundled 8x8 scikit-learn digits), mnist DIR (IDX files), fashion-mnist [DIR] (default "
                "/usr/share/datasets/fashion-mnist: apt-get install dataset-fashion-mnist), cifar10 DIR (python "
                "batches) or npz FILE (x in [0,1], integer y). The path follows as an argument: --dataset cifar10 DIR.")
data_options = option_group(
    click.option("--dataset", default="digits", show_default=True, help=DATASET_HELP),
    click.argument("data_path", required=False, type=click.Path()),
    click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True,
                 help="Which split of the data set the inputs come from."),
    click.option("--skip", type=int, default=1, show_default=True, help="Use every skip-th input of the split."),
    click.option("--max", "--max-inputs", "max_inputs", type=int, default=None,
                 help="At most this many inputs (--max-inputs under torchrun, whose own options swallow --max)."),
)
threads_option = click.option(
    "--threads", type=click.IntRange(min=1), default=None,
    help="Intra-op CPU threads. Default: the CPUs this process may use (affinity, cgroup quota) less those other "
         "processes keep busy, re-measured about once a second as the run goes; CERTKIT_THREADS or OMP_NUM_THREADS "
         "in the environment also fix it.")
seed_option = click.option("--seed", type=int, default=0, show_default=True,
                           help="Random seed (noise, attacks, data order); the same seed gives the same results.")
device_option = click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N].")
quiet_option = click.option("--quiet", is_flag=True, help="No progress bar.")
run_options = option_group(
    click.option("--out", type=click.Path(dir_okay=False), default=None,
                 help="Per-row results (TSV, written row by row). Default: a new file in ./certkit-results/."),
    click.option("--resume", is_flag=True, help="Continue --out, skipping rows already in it (refused when it was "
                                                "computed with other settings)."),
    click.option("--overwrite", is_flag=True, help="Replace --out if it exists."),
    click.option("--summary-json", type=click.Path(dir_okay=False), default=None,
                 help="Summary JSON. Default: <out>.summary.json."),
    seed_option, device_option, quiet_option, threads_option,
)
def parse_floats(text: str | None, name: str) -> list[float] | None:
    """A comma list of numbers (``--radii 0.25,0.5``) as floats; None stays None.

    Raises:
        click.BadParameter: text that is not comma-separated numbers (``name`` is the option, for the message).
    """
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{name} must be comma-separated numbers, got {text!r}") from None


def parse_shard(ctx, param, value) -> tuple[int, int] | None:
    """click callback of ``--shard K/N``: (K, N) as integers, or None.

    Raises:
        click.BadParameter: not of the form K/N.
    """
    if value is None:
        return None
    try:
        k, n = (int(v) for v in value.split("/"))
    except ValueError:
        raise click.BadParameter(f"expected K/N, e.g. 0/4, got {value!r}") from None
    return k, n


smoothing_options = option_group(
    click.option("--sigma", type=float, default=None, help=SIGMA_HELP),
    click.option("--n", "--num-samples", "n", type=int, default=100_000, show_default=True,
                 help="Monte-Carlo samples for the estimate (--num-samples under torchrun, whose own options "
                      "swallow --n)."),
    click.option("--alpha", type=float, default=0.001, show_default=True,
                 help="Failure probability: the answer is wrong with probability at most alpha."),
    click.option("--batch", type=int, default=1000, show_default=True,
                 help="Noisy copies drawn at a time (one noise chunk; on the CPU the forward pass runs a chunk in the "
                      "fastest of batch/1..16 rows: speed only, same counts)."),
    click.option("--compile", "compile", is_flag=True, help="torch.compile the model (first call ~20 s)."),
    click.option("--amp", is_flag=True, help="CUDA only: bfloat16 autocast forward passes (the certificate is then "
                                             "for the model as evaluated in bfloat16)."),
    click.option("--shard", default=None, callback=parse_shard,
                 help="K/N: certify only the K-th (0-based) of N interleaved shares of the inputs, for job arrays "
                      "(then `certkit merge`). Under torchrun ranks share the inputs by themselves."),
)


def default_first(registry: dict, default: str) -> list:
    """Registry items with the default first, then by name (deliberately unsound verifiers last)."""
    return sorted(registry.items(), key=lambda kv: (kv[0] != default, not getattr(kv[1], "sound", True), kv[0]))


def smoothing_help() -> str:
    from certkit.certify.smoothing import smoothing_methods

    return "; ".join(f"{n}: {c.help}" for n, c in default_first(smoothing_methods(), "gaussian")) + \
        ". A comma list certifies the same inputs with several (one TSV per method)."


def smoothing_option_specs() -> dict:
    """The options every smoothing method declares, merged by name (``certkit certify``)."""
    from certkit.certify.smoothing import smoothing_methods
    from certkit.common.options import merged_specs

    return merged_specs(smoothing_methods())


def verifier_option_specs() -> dict:
    """The options every registered verifier declares, merged by name (``certkit verify``)."""
    from certkit.common.options import merged_specs
    from certkit.verifiers.complete.registry import verifiers

    return merged_specs(verifiers())


def method_option_specs() -> dict:
    """The options every training method declares, merged by name."""
    from certkit.common.options import merged_specs
    from certkit.train import training_methods

    return merged_specs(training_methods())


def architecture_options() -> dict:
    """Architecture (classifier or denoiser) name -> the Options dataclass of its command-line options."""
    from certkit.models.denoisers import DENOISER_OPTIONS
    from certkit.models.zoo import ARCH_OPTIONS

    return {**ARCH_OPTIONS, **DENOISER_OPTIONS}


def architecture_option_specs() -> dict:
    """The options every architecture declares, merged by name."""
    from certkit.common.options import merged_specs

    return merged_specs(architecture_options())


def training_option_specs() -> dict:
    """The options of ``certkit train`` that registered things declare: every training method's and every
    architecture's, merged by name (a name may not be both).

    Raises:
        TypeError: a name declared by a training method and by an architecture.
    """
    methods, archs = method_option_specs(), architecture_option_specs()
    clash = sorted(set(methods) & set(archs))
    if clash:
        raise TypeError(f"options declared by a training method and an architecture: {', '.join(clash)}")
    return {**methods, **archs}


def training_help() -> str:
    from certkit.train import training_methods

    return "; ".join(f"{n}: {c.help}" for n, c in default_first(training_methods(), "gaussian")) + "."


def audit_verifier_help() -> str:
    from certkit.soundness_bench.adapters import audit_verifiers

    return "Built-in verifier: " + "; ".join(f"{n} ({c.help}{'' if c.sound else ', DELIBERATELY UNSOUND'})"
                                             for n, c in default_first(audit_verifiers(), "certkit")) + "."


def verifier_help() -> str:
    from certkit.verifiers.complete.registry import verifiers

    names = ", ".join(n for n, _ in default_first(verifiers(), "certkit"))
    return f"Verifier of --mode instance and --mode benchmark: {names}."


def ops_help() -> str:
    from certkit.verifiers.bounds.ops import registered_ops

    return ("The older spelling of --mode check: only run the pre-flight check of --model / --onnx, listing every "
            "unsupported op, node and shape problem. "
            "Bounded ops: " + ", ".join(e.name for e in registered_ops()) + ".")


def quiet_rank() -> bool:
    """True on torchrun ranks other than 0 (rank 0 prints the merged result)."""
    from certkit.common import distributed

    return distributed.world()[0] != 0


def echo_outputs(cfg, summary) -> None:
    from certkit.runs import write_summary

    click.echo(f"results: {cfg.out}")
    click.echo(f"summary: {write_summary(summary, cfg)}")
