"""``Smooth``: Cohen et al.'s smoothed-classifier interface (locuslab/smoothing core.py) on certkit's engine.

    import certkit
    smooth = certkit.Smooth(model, num_classes=10, sigma=0.25)
    prediction, radius = smooth.certify(x, n0=100, n=100_000, alpha=0.001, batch_size=1000)
    label = smooth.predict(x, n=100_000, alpha=0.001, batch_size=1000)     # an int; -1 = abstain

``x`` is one input (C x H x W, or D for vectors) or a batch (N x C x H x W); a batch returns one result per input.
Noise is seeded: by default from (``seed``, the input's values), so a call is exactly reproducible and an input gets
the same certificate alone or inside a batch; ``idx=`` seeds from (seed, input index) instead, the rows of
``certkit certify`` with the same seed; ``seed=None`` draws fresh noise on every call (Cohen et al.'s behaviour).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from tqdm import tqdm

from certkit.certify.sampling import NoiseSampler, content_generator, input_generator
from certkit.certify.smoothing.base import Certificate, Prediction
from certkit.certify.smoothing.gaussian import GaussianSmoothing
from certkit.common.errors import CertkitError, shape_text
from certkit.models.checks import input_layout


class Smooth:
    """A Gaussian-smoothed classifier g(x) = argmax_c P(f(x + e) = c), e ~ N(0, sigma^2 I) (Cohen, Rosenfeld, Kolter,
    ICML 2019), with the interface of their ``core.Smooth``.

    Args:
        base_classifier: f, anything :func:`certkit.load_model` takes (an nn.Module mapping (B, *input_shape) raw
            inputs to logits (B, K), a checkpoint or .onnx path, ``"bundled"``, a LoadedModel). Put in eval mode;
            runs on the device of its parameters unless ``device`` is given.
        num_classes: K, checked against the model's output width on the first call (None: taken from it).
        sigma: noise standard deviation in data-range units ([0,1] pixels); None: the sigma a certkit checkpoint
            records.
        seed: seeds the noise (module docstring); None: fresh noise every call.
        input_shape: shape of one input; None: from the checkpoint, else from the first call
            (:func:`certkit.models.checks.input_layout`). Give it for a model that takes several layouts (an MLP
            that flattens its input takes 1 x 8 x 8 as one image and as a batch of one 8 x 8 image alike: the first
            call then reads a batch of ONE input as one input).
        device: where the model runs and noise is drawn (None: the model's device).
        progress: show a progress bar over the inputs of a batch.
        sound: sound smoothing in floating point (certify/sound_noise.py, docs/methods/sound.md): certifies the
            classifier x -> g(round(x)) on a dyadic grid, whatever float32 rounding would have done.

    Raises:
        CertkitError: no sigma, sigma <= 0, a model that cannot be loaded.
    """

    def __init__(self, base_classifier, num_classes: int | None = None, sigma: float | None = None, *,
                 seed: int | None = 0, input_shape: Sequence[int] | None = None,
                 device: torch.device | str | None = None, progress: bool = False, sound: bool = False):
        from certkit.models.checkpoint import load_model

        loaded = load_model(base_classifier)
        sigma = loaded.train_sigma if sigma is None else sigma
        if sigma is None:
            raise CertkitError("sigma is required: the noise standard deviation in data-range units, e.g. sigma=0.25")
        if not float(sigma) > 0:
            raise CertkitError(f"sigma must be > 0, got {sigma}")
        self.sigma = float(sigma)
        self.base_classifier: nn.Module = loaded.module
        self.num_classes = num_classes if num_classes is not None else loaded.num_classes
        self.input_shape = tuple(input_shape) if input_shape is not None else loaded.input_shape
        self.seed = seed
        self.device = torch.device(device) if device is not None else next(
            (p.device for p in self.base_classifier.parameters()), torch.device("cpu"))
        self.progress = progress
        self.sound = bool(sound)
        self._smoothed: dict[int, GaussianSmoothing] = {}
        self._width_checked = False

    def certify(self, x: torch.Tensor, n0: int = 100, n: int = 100_000, alpha: float = 0.001,
                batch_size: int = 1000, idx: int | Sequence[int] | None = None) -> Certificate | list[Certificate]:
        """CERTIFY (Cohen et al. 2019, Algorithm "CERTIFY"): the smoothed prediction and a certified L2 radius.

        Args:
            x: one input (*input_shape) or a batch (N, *input_shape), raw values in the data range.
            n0, n: selection and certification noise samples; alpha: failure probability; batch_size: noisy copies
                per forward pass (noise is drawn in chunks of this size: reproducing a result exactly takes the same
                batch_size, as the same seed).
            idx: input index (one input) or indices (a batch) to seed from (seed, index) as ``certkit certify``
                does (seed None counts as 0 there).
        Returns:
            a :class:`~certkit.certify.smoothing.base.Certificate` (prediction or -1 = abstain, radius (L2,
            data-range units), pA_lower, nA, samples; unpacks into (prediction, radius)); a list for a batch.
        Guarantee: each returned class differs from g(x) with probability at most alpha, and g is constant on the
            L2 ball of the returned radius around x (Theorem 1 of the paper).
        Raises:
            CertkitError: bad n0 / n / alpha / batch_size, an input layout the model does not take, output width
                other than num_classes, NaN/inf logits.
        """
        return self._each(x, idx, batch_size, "certify", lambda g, xi, gen: g.certify(xi, n0, n, alpha, gen))

    def predict(self, x: torch.Tensor, n: int = 100_000, alpha: float = 0.001, batch_size: int = 1000,
                idx: int | Sequence[int] | None = None) -> Prediction | list[Prediction]:
        """PREDICT (Cohen et al. 2019): the smoothed prediction, or -1 (abstain) unless a two-sided binomial test
        of the top two counts rejects a tie at level alpha.

        Args and layout as :meth:`certify`. Returns a :class:`~certkit.certify.smoothing.base.Prediction` (an int
        that also carries nA, nB, p_value, samples), a list for a batch.
        Guarantee: returns a class other than g(x) with probability at most alpha.
        Raises:
            CertkitError: as :meth:`certify`.
        """
        return self._each(x, idx, batch_size, "predict", lambda g, xi, gen: g.predict(xi, n, alpha, gen))

    # ------------------------------------------------------------------------------------------------------
    def _smoothed_for(self, batch_size: int) -> GaussianSmoothing:
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise CertkitError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if batch_size not in self._smoothed:
            sampler = NoiseSampler(self.base_classifier, self.sigma, batch_size, self.device, check_input=False,
                                   sound=self.sound)
            self._smoothed[batch_size] = GaussianSmoothing(sampler)
        return self._smoothed[batch_size]

    def _inputs(self, x) -> tuple[torch.Tensor, bool]:
        """x as a float batch (N, *input_shape) on its own device, and whether it was one input."""
        if not isinstance(x, torch.Tensor):
            try:
                x = torch.as_tensor(x)
            except (TypeError, ValueError, RuntimeError):
                raise CertkitError(f"x must be a tensor (or array) of inputs, got {type(x).__name__}") from None
        if not (x.is_floating_point() or x.dtype in (torch.uint8, torch.int64, torch.int32)):
            raise CertkitError(f"x must hold real values, got dtype {x.dtype}")
        x = x.detach().float()
        shape, batched = input_layout(self.base_classifier, x.shape, self.input_shape)
        if self.input_shape is None:
            self.input_shape = shape
        batch = x if batched else x.unsqueeze(0)
        if not self._width_checked:      # once: the model and num_classes do not change between calls
            with torch.inference_mode():
                out = self.base_classifier(batch[:1].to(self.device))
            if self.num_classes is not None and out.shape[-1] != self.num_classes:
                raise CertkitError(f"the model returns {out.shape[-1]} logits per input, num_classes is "
                                   f"{self.num_classes}")
            self.num_classes, self._width_checked = int(out.shape[-1]), True
        return batch, not batched

    def _each(self, x, idx, batch_size: int, what: str, one):
        g = self._smoothed_for(batch_size)
        batch, single = self._inputs(x)
        if idx is not None:
            ids = [idx] if isinstance(idx, int) else list(idx)
            if len(ids) != len(batch) or not all(isinstance(i, int) and i >= 0 for i in ids):
                raise CertkitError(f"idx must give one index >= 0 per input ({len(batch)}), got {idx!r}")
        results = []
        for i, xi in enumerate(tqdm(batch, desc=what, unit="input", disable=single or not self.progress)):
            if idx is not None:
                gen = input_generator(self.seed or 0, ids[i], self.device)
            elif self.seed is None:
                gen = torch.Generator(device=self.device)
                gen.seed()
            else:
                gen = content_generator(self.seed, xi, self.device)
            results.append(one(g, xi, gen))
        return results[0] if single else results

    def __repr__(self) -> str:
        shape = "?" if self.input_shape is None else shape_text(self.input_shape)
        return (f"Smooth({type(self.base_classifier).__name__}, num_classes={self.num_classes}, sigma={self.sigma:g}, "
                f"input {shape}, seed={self.seed})")
