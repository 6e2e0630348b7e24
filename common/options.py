"""Options that live with their owner.

A registered class (a smoothing method, a training method, ...) declares the options only it uses as a nested
dataclass ``Options``, each field made with :func:`option` (default, help with units, optional choices). The shared
run configurations keep only what every method shares; the CLI builds its ``--flags`` from these declarations
(``cli/options.py``), recipes accept the same names, and the runs record the resolved values in their resume settings
and summaries. A new method with a new option is therefore ONE module::

    @register_smoothing
    class MySmoothing(GaussianSmoothing):
        name = "mine"

        @dataclass
        class Options:
            temperature: float = option(1.0, "softmax temperature of the base model's logits")

Subclass ``Options`` of a parent's ``Options`` to extend it. Two classes may declare the same option name (e.g.
``init_from`` for several training methods) only with the same type and default: the CLI shows one flag for both.
"""
from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from certkit.common.errors import CertkitError


def option(default: Any, help: str, choices: Iterable[str] | None = None,
           parse: Callable[[str], Any] | None = None) -> Any:
    """A field of an ``Options`` dataclass: its default (a scalar or None), its help text (say the units), for text
    options the allowed values, and ``parse``: how the text given on the command line or in a recipe becomes the
    value the owner receives (e.g. a comma list of integers), raising ValueError on bad text."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": tuple(choices) if choices else None,
                                                        "parse": parse})


@dataclass(frozen=True)
class OptionSpec:
    """One option as the CLI shows it, merged over every registered class that declares it.

    Attributes:
        name: the field name (``calibration_size``; the flag is ``--calibration-size``).
        type: ``int``, ``float``, ``str`` or ``bool``; optional: None is a valid value (and the default).
        default, choices: as declared; owners: the names of the classes that declare it;
        helps: (owner, help) for each of them, as declared.
    """

    name: str
    type: type
    optional: bool
    default: Any
    choices: tuple | None
    owners: tuple[str, ...]
    helps: tuple[tuple[str, str], ...]

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def shown(self) -> str:
        """The flag as the user may have typed it: ``--bab/--no-bab`` for a boolean that is not off by default."""
        if self.type is bool and (self.default is not False or self.optional):
            return f"{self.flag}/--no-{self.flag[2:]}"
        return self.flag

    @property
    def help(self) -> str:
        """The help texts, each after the owners that share it: ``dual, rct: ...; denoiser: ...``."""
        groups: dict[str, list[str]] = {}
        for owner, text in self.helps:
            groups.setdefault(text, []).append(owner)
        return "; ".join(f"{', '.join(owners)}: {text}" for text, owners in groups.items())


def options_class(cls: type) -> type | None:
    """The ``Options`` dataclass ``cls`` declares (or inherits), ``cls`` itself when it is such a dataclass, or None."""
    opts = cls if dataclasses.is_dataclass(cls) else getattr(cls, "Options", None)
    return opts if isinstance(opts, type) and dataclasses.is_dataclass(opts) else None


def _scalar(tp: Any) -> tuple[type, bool]:
    """(int | float | str | bool, optional) of a field's annotation."""
    args = typing.get_args(tp)
    optional = type(None) in args
    if args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1:
            raise TypeError(f"an option must have one scalar type, got {tp}")
        tp = rest[0]
    if tp not in (int, float, str, bool):
        raise TypeError(f"an option must be int, float, str or bool (optionally | None), got {tp}")
    return tp, optional


def declared_specs(cls: type, owner: str) -> list[OptionSpec]:
    """The options ``cls`` declares, each as an :class:`OptionSpec` owned by ``owner``.

    Raises:
        TypeError: a field without :func:`option` help or with a type the CLI cannot parse.
    """
    opts = options_class(cls)
    if opts is None:
        return []
    hints = typing.get_type_hints(opts)
    specs = []
    for f in dataclasses.fields(opts):
        if "help" not in f.metadata:
            raise TypeError(f"{cls.__name__}.Options.{f.name}: declare it with certkit.common.options.option()")
        tp, optional = _scalar(hints[f.name])
        specs.append(OptionSpec(f.name, tp, optional, f.default, f.metadata.get("choices"), (owner,),
                                ((owner, f.metadata["help"]),)))
    return specs


def merged_specs(classes: Mapping[str, type]) -> dict[str, OptionSpec]:
    """Every option declared by ``classes`` (name -> class), one :class:`OptionSpec` per option name.

    Raises:
        TypeError: two classes declare one name with another type, default or choices.
    """
    out: dict[str, OptionSpec] = {}
    for owner, cls in classes.items():
        for s in declared_specs(cls, owner):
            old = out.get(s.name)
            if old is None:
                out[s.name] = s
                continue
            if (old.type, old.optional, old.default, old.choices) != (s.type, s.optional, s.default, s.choices):
                raise TypeError(f"option {s.name!r} is declared differently by {', '.join(old.owners)} and {owner}")
            out[s.name] = dataclasses.replace(old, owners=old.owners + (owner,), helps=old.helps + s.helps)
    return out


def build_options(cls: type, values: Mapping[str, Any], what: str) -> Any:
    """``cls.Options`` filled from ``values`` (option name -> value; names it does not declare are refused).

    Args:
        what: how the class is named to the user in messages, e.g. ``--method gaussian``.
    Returns:
        the Options instance, or None when ``cls`` declares no options (and ``values`` is empty).
    Raises:
        CertkitError: an option ``cls`` does not declare, or a value outside the declared choices.
    """
    opts = options_class(cls)
    names = {f.name for f in dataclasses.fields(opts)} if opts is not None else set()
    unknown = sorted(set(values) - names)
    if unknown:
        flags = ", ".join("--" + u.replace("_", "-") for u in unknown)
        raise CertkitError(f"{what} does not take {flags}" + (f" (its options: "
                           f"{', '.join('--' + n.replace('_', '-') for n in sorted(names))})" if names else ""))
    if opts is None:
        return None
    for f in dataclasses.fields(opts):
        choices = f.metadata.get("choices")
        if choices and f.name in values and values[f.name] is not None and values[f.name] not in choices:
            raise CertkitError(f"--{f.name.replace('_', '-')} must be one of {', '.join(choices)}, "
                               f"got {values[f.name]!r}")
    return opts(**values)


def parsed_values(cls: type, values: Mapping[str, Any]) -> dict:
    """``values`` with each declared ``parse`` applied to text values (names ``cls`` does not declare pass as they
    are; :func:`build_options` refuses them).

    Raises:
        CertkitError: text that the option's parse refuses.
    """
    opts = options_class(cls)
    parsers = {f.name: f.metadata.get("parse") for f in dataclasses.fields(opts)} if opts is not None else {}
    out = dict(values)
    for name, value in values.items():
        parse = parsers.get(name)
        if parse is not None and isinstance(value, str):
            try:
                out[name] = parse(value)
            except ValueError as e:
                raise CertkitError(f"--{name.replace('_', '-')}: {e}") from None
    return out


def options_dict(options: Any) -> dict:
    """The resolved values of an Options instance (``{}`` for None), for resume settings and summaries."""
    return {} if options is None else dataclasses.asdict(options)
