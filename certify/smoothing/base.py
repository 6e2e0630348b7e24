"""The smoothing-method contract and registry.

A smoothing method turns a base classifier f (run by a :class:`~certkit.certify.sampling.NoiseSampler`) into a
smoothed classifier g and certifies one input at a time: ``certify(x, n0, n, alpha, generator) -> Certificate``.
Every method returns the same :class:`Certificate` (prediction or ABSTAIN, an L2 radius in data-range units,
the lower confidence bound it rests on), so runs, files, summaries and plots are shared. A method registers itself
with :func:`register_smoothing`; the package imports every module in ``certify/smoothing/``, so a new method is
ONE module there (the CLI's ``--method`` choices and help come from this registry).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from certkit.certify.sampling import NoiseSampler, as_sampler, content_generator
from certkit.common.errors import CertkitError
from certkit.common.registry import Registry

ABSTAIN = -1


@dataclass
class Certificate:
    """Outcome of certifying one input.

    Attributes:
        prediction: the certified class, or ``ABSTAIN`` (-1).
        radius: certified L2 radius in data-range units (0.0 on abstain).
        pA_lower: the lower confidence bound the radius rests on (method-specific; see each method).
        nA: count of the selected class among the n certification samples (-1 when the method's bound does not rest
            on a count: LVM-RS).
        samples: noise samples the certificate used, the n0 selection samples included (n0 + n; fewer for
            sequential certification, which stops early).

    As Cohen et al.'s ``Smooth.certify``, a certificate unpacks into (prediction, radius):
    ``prediction, radius = g.certify(x, ...)``.
    """

    prediction: int
    radius: float
    pA_lower: float
    nA: int
    samples: int = 0

    def __iter__(self):
        return iter((self.prediction, self.radius))


class Prediction(int):
    """The outcome of PREDICT: an ``int`` (the class, or ``ABSTAIN`` = -1, as Cohen et al.'s ``Smooth.predict``
    returns) that also carries what the decision rests on.

    Attributes:
        prediction: the class as a plain int; nA, nB: the two largest counts among the ``samples`` noisy copies;
        p_value: two-sided binomial test of nA out of nA + nB against 1/2 (abstain when above alpha).
    """

    nA: int
    nB: int
    p_value: float
    samples: int

    def __new__(cls, prediction: int, nA: int, nB: int, p_value: float, samples: int):
        obj = super().__new__(cls, int(prediction))
        obj.nA, obj.nB, obj.p_value, obj.samples = int(nA), int(nB), float(p_value), int(samples)
        return obj

    @property
    def prediction(self) -> int:
        return int(self)

    def __str__(self) -> str:
        return str(int(self))

    def __repr__(self) -> str:
        return (f"Prediction(prediction={int(self)}, nA={self.nA}, nB={self.nB}, p_value={self.p_value:.3g}, "
                f"samples={self.samples})")


def check_certify_args(n0: int, n: int, alpha: float) -> None:
    """Raise CertkitError unless n0 >= 1, n >= 1 and 0 < alpha < 1."""
    if n0 < 1 or n < 1:
        raise CertkitError(f"n0 and n must be >= 1, got n0={n0}, n={n}")
    if not (0.0 < alpha < 1.0):
        raise CertkitError(f"alpha must lie in (0, 1), got {alpha}")


class SmoothingMethod:
    """A smoothed classifier on a sampler.

    Class attributes (read by the registry, the CLI and the run summary):
        name: the ``--method`` value; label: the display name; help: one line for ``--help``;
        procedure: how the certificate is computed, recorded in the summary JSON;
        heads: logits the base model returns per input (1: (B, K); 2: (B, 2, K) for Dual RS);
        needs_calibration: the method tunes something ONCE PER MODEL on held-out inputs before certifying
        (``calibrate(x, y, num, n, alpha, generator) -> dict``, called by the run; never on certified inputs);
        columns: Certificate attributes written as extra TSV columns (e.g. ``samples``);
        needs_standard_model: the method mixes in a second, standard classifier (``attach_standard(model, w)``,
        called by the run; adaptive smoothing).
    Instance attribute ``radii``: the target radii of the run (``--radii``), for methods that decide at given radii.
    """

    name = ""
    label = ""
    help = ""
    procedure = ""
    heads = 1
    needs_calibration = False
    needs_standard_model = False
    columns: tuple = ()

    def __init__(self, sampler: NoiseSampler | torch.nn.Module, sigma: float | None = None):
        """``sampler``: a :class:`~certkit.certify.sampling.NoiseSampler`, or the base classifier itself (an
        nn.Module mapping (B, *input_shape) inputs to logits) with ``sigma`` (noise std, data-range units).

        Raises:
            CertkitError: a module without sigma, a sigma that contradicts the sampler's, anything else.
        """
        self.sampler = as_sampler(sampler, sigma)
        self.sigma = self.sampler.sigma
        self.radii: list | None = None

    def certify(self, x: torch.Tensor, n0: int, n: int, alpha: float,
                generator: torch.Generator | None = None) -> Certificate:
        """Certify one raw input x (*input_shape) with n0 selection and n certification samples at level alpha;
        ``generator`` None: noise seeded from x's values (the same input always gets the same certificate)."""
        raise NotImplementedError

    def apply_options(self, opts) -> None:
        """Take the values of the method's own options (its ``Options`` dataclass) that change how it samples or
        certifies (called once by the run; default: nothing to take)."""

    def generator(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Generator:
        """``generator``, or when None one seeded from (0, x's values) on the sampler's device."""
        return content_generator(0, x, getattr(self.sampler, "device", "cpu")) if generator is None else generator

    @classmethod
    def check_output(cls, logits: torch.Tensor) -> None:
        """Refuse a base model whose output (for a batch of clean inputs) has the wrong form for this method.

        Raises:
            CertkitError: with a one-line reason.
        """
        heads = 1 if logits.dim() == 2 else logits.shape[1] if logits.dim() == 3 else None
        if heads != cls.heads:
            raise CertkitError(f"--method {cls.name} needs a model returning "
                               f"{'(batch, classes)' if cls.heads == 1 else f'(batch, {cls.heads}, classes)'} "
                               f"logits, got {tuple(logits.shape)}"
                               + ("; this is a Dual RS checkpoint: certify it with --method dual"
                                  if heads == 2 else ""))


REGISTRY = Registry("certification method", "certkit.certify.smoothing")


def register_smoothing(cls: type[SmoothingMethod]) -> type[SmoothingMethod]:
    """Class decorator: make ``cls`` available as ``certkit certify --method cls.name``.

    Raises:
        ValueError: the name is empty or taken.
    """
    return REGISTRY.register(cls)


def smoothing_methods() -> dict[str, type[SmoothingMethod]]:
    """Every registered method by name (every module of certify/smoothing/ imported first)."""
    return REGISTRY.all()


def smoothing_method(name: str) -> type[SmoothingMethod]:
    """The registered method called ``name``.

    Raises:
        CertkitError: unknown name (the message lists the registered ones).
    """
    return REGISTRY.get(name)
