"""Denoisers for denoised smoothing, their checkpoints, and the composition F(D(x)) that certkit certifies.

Denoised smoothing (Salman, Sun, Yang, Kapoor, Kolter, NeurIPS 2020, "Denoised Smoothing: A Provable Defense for
Pretrained Classifiers") puts a denoiser D in front of an off-the-shelf classifier F and smooths the composition:
g(x) = argmax_c P(F(D(x + e)) = c), e ~ N(0, sigma^2 I). D is part of the ONE fixed base classifier F o D, so every
smoothing certificate (Gaussian, LVM, sequential; Dual RS per branch, :class:`DenoisedDual`) holds for it unchanged.

Architectures (raw [0,1] pixels in, the same shape out; no normalization layer, images (C, H, W) only):
    ``dncnn``     DnCNN (Zhang, Zuo, Chen, Meng, Zhang, IEEE TIP 2017), the denoiser of Salman et al.:
                  Conv(C,w,3) ReLU, (depth - 2) x [Conv(w,w,3) BN ReLU], Conv(w,C,3); output x - residual.
                  Salman et al. use depth 17, width 64 on CIFAR-10; the defaults (depth 5, width 32) suit 8x8 digits.
    ``ae_dncnn``  DnCNN followed by an autoencoder (encoder: Conv(C,w,3) ReLU Flatten Linear(., latent); decoder:
                  Linear(latent, w H W) ReLU Conv(w,C,3)), the denoiser of ZO-AE-DS (Zhang, Chen, Liu, Wang, Fan,
                  ICLR 2022): ``encode`` = encoder(dncnn(x)) is what zeroth-order training updates, ``decode`` is
                  merged with the black-box classifier, so gradients are estimated in the ``latent``-dimensional
                  code instead of the input space. Every layer exports to ONNX and imports back (certkit's importer).

Bring your own denoiser (``--denoiser package.module:factory``): the factory returns an nn.Module mapping [0,1]
images to [0,1] images of the same shape. For a DDPM-style diffusion model, wrap its noise predictor in
:class:`OneShotDiffusion` (one-shot denoising at the noise level matched to sigma, Carlini, Tramer, Dvijotham, Rice,
Sun, Kolter, ICLR 2023, "(Certified!!) Adversarial Robustness for Free!", Algorithm 1).

A certkit denoiser checkpoint is a certkit checkpoint (models/checkpoint.py, ``torch.load(weights_only=True)``) with
``"task": "denoiser"`` and no ``num_classes``; ``metadata.sigma`` is the noise level it was trained for.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from certkit.common.errors import CertkitError
from certkit.common.options import option
from certkit.models.checkpoint import FORMAT, VERSION, LoadedModel, _load_state, load_checkpoint_file, save_checkpoint
from certkit.models.zoo import checkerboard_mask

TASK = "denoiser"


class DnCNN(nn.Module):
    """DnCNN residual denoiser (module docstring): (B, C, H, W) -> (B, C, H, W), D(x) = x - net(x)."""

    def __init__(self, channels: int, depth: int = 5, width: int = 32, bn: bool = True):
        super().__init__()
        if depth < 2 or width < 1:
            raise CertkitError(f"dncnn needs depth >= 2 and width >= 1, got depth {depth}, width {width}")
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1, bias=not bn)]
            layers += [nn.BatchNorm2d(width), nn.ReLU()] if bn else [nn.ReLU()]
        layers.append(nn.Conv2d(width, channels, 3, padding=1))
        self.residual = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.residual(x)


class AEDenoiser(nn.Module):
    """DnCNN + autoencoder of ZO-AE-DS (module docstring): forward(x) = decode(encode(x)), (B, C, H, W) both ways;
    ``encode`` maps to (B, latent) codes, ``decode`` back to images."""

    def __init__(self, input_shape: Sequence[int], depth: int = 5, width: int = 32, latent: int = 32,
                 ae_width: int = 16, bn: bool = True):
        super().__init__()
        c, h, w = input_shape
        if latent < 1 or ae_width < 1:
            raise CertkitError(f"ae_dncnn needs latent >= 1 and ae_width >= 1, got {latent}, {ae_width}")
        self.shape = (c, h, w)
        self.dncnn = DnCNN(c, depth, width, bn)
        self.encoder = nn.Sequential(nn.Conv2d(c, ae_width, 3, padding=1), nn.ReLU(), nn.Flatten(),
                                     nn.Linear(ae_width * h * w, latent))
        self.decoder_fc = nn.Sequential(nn.Linear(latent, ae_width * h * w), nn.ReLU())
        self.decoder_conv = nn.Conv2d(ae_width, c, 3, padding=1)
        self.ae_width = ae_width

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.dncnn(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        _, h, w = self.shape
        return self.decoder_conv(self.decoder_fc(z).reshape(z.shape[0], self.ae_width, h, w))

    def decoder_parameters(self):
        return list(self.decoder_fc.parameters()) + list(self.decoder_conv.parameters())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


class OneShotDiffusion(nn.Module):
    """One-shot denoising with a DDPM noise predictor (Carlini et al. ICLR 2023, Algorithm 1).

    Problem: a diffusion model trained on images in [-1, 1] sees x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps.
    The smoothing input x + delta, delta ~ N(0, sigma^2 I) in [0,1] units, is 2x - 1 + 2 delta in [-1, 1] units, so
    with abar_t* = 1 / (1 + 4 sigma^2), i.e. the timestep t* whose noise-to-signal ratio (1 - abar)/abar = (2 sigma)^2,
    x_t* = sqrt(abar_t*) (2 (x + delta) - 1) has exactly the diffusion's noise level at t*. This module picks t* as
    the timestep whose abar_t is nearest 1 / (1 + 4 sigma^2), predicts eps once and returns
    x0_hat = (x_t* - sqrt(1 - abar_t*) eps_model(x_t*, t*)) / sqrt(abar_t*) mapped back to [0, 1] and clipped.
    (Carlini et al. find one step as good as the full reverse chain for certification, and far cheaper.)

    Args:
        eps_model: callable (x_t (B, C, H, W) in [-1,1] units, t (B,) int64) -> predicted noise, same shape;
        alphas_cumprod: (T,) the model's abar_t (e.g. ``torch.cumprod(1 - betas, 0)``); sigma: the smoothing noise
        std in [0,1] pixel units (the --sigma of the certify run: a denoiser is matched to ONE sigma).
    Attributes:
        t: the chosen timestep t*; abar: abar_t*.
    Raises:
        CertkitError: sigma <= 0 or alphas_cumprod not a 1-D sequence in (0, 1].
    """

    def __init__(self, eps_model, alphas_cumprod, sigma: float):
        super().__init__()
        abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
        if not sigma > 0:
            raise CertkitError(f"one-shot diffusion denoising needs sigma > 0, got {sigma}")
        if abar.dim() != 1 or len(abar) == 0 or not bool(((abar > 0) & (abar <= 1)).all()):
            raise CertkitError("alphas_cumprod must be a 1-D sequence of values in (0, 1]")
        self.eps_model = eps_model
        self.t = int((abar - 1.0 / (1.0 + 4.0 * sigma ** 2)).abs().argmin())
        self.abar = float(abar[self.t])
        self.sigma = float(sigma)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.abar
        x_t = a ** 0.5 * (2 * x - 1)
        t = torch.full((x.shape[0],), self.t, dtype=torch.long, device=x.device)
        x0 = (x_t - (1 - a) ** 0.5 * self.eps_model(x_t, t)) / a ** 0.5
        return ((x0 + 1) / 2).clamp(0, 1)


def _image_shape(arch: str, input_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3:
        raise CertkitError(f"denoiser {arch} needs image inputs (C, H, W), got shape {shape}")
    return shape


def dncnn(input_shape: Sequence[int], depth: int = 5, width: int = 32, bn: bool = True) -> nn.Module:
    """DnCNN for images of ``input_shape`` (C, H, W). Raises CertkitError for non-image shapes or bad sizes."""
    return DnCNN(_image_shape("dncnn", input_shape)[0], depth, width, bn)


def ae_dncnn(input_shape: Sequence[int], depth: int = 5, width: int = 32, latent: int = 32, ae_width: int = 16,
             bn: bool = True) -> nn.Module:
    """DnCNN + autoencoder of ZO-AE-DS for images of ``input_shape`` (C, H, W); ``latent`` = code size. Raises
    CertkitError for non-image shapes or bad sizes."""
    return AEDenoiser(_image_shape("ae_dncnn", input_shape), depth, width, latent, ae_width, bn)


#: name -> builder(input_shape, **config) -> a denoiser nn.Module.
DENOISERS: dict[str, Callable[..., nn.Module]] = {"dncnn": dncnn, "ae_dncnn": ae_dncnn}


@dataclass
class DnCNNOptions:
    """Options of ``dncnn`` (``certkit train --method denoiser --arch dncnn``)."""

    depth: int | None = option(None, "convolution layers of the DnCNN (default 5)")
    width: int | None = option(None, "channels of the DnCNN (default 32)")


@dataclass
class AEDnCNNOptions(DnCNNOptions):
    """Options of ``ae_dncnn``."""

    latent: int | None = option(None, "size of the autoencoder's code (default 32)")


#: denoiser name -> the options its builder takes on the command line.
DENOISER_OPTIONS: dict[str, type] = {"dncnn": DnCNNOptions, "ae_dncnn": AEDnCNNOptions}


def build_denoiser(arch: str, input_shape: Sequence[int], **config) -> nn.Module:
    """Instantiate denoiser ``arch`` for inputs of ``input_shape`` (no batch dim).

    Raises:
        CertkitError: unknown architecture, bad config keys, or inputs that are not images.
    """
    if arch not in DENOISERS:
        raise CertkitError(f"unknown denoiser architecture {arch!r}: known are {', '.join(sorted(DENOISERS))}")
    try:
        return DENOISERS[arch](tuple(input_shape), **config)
    except TypeError as e:
        raise CertkitError(f"bad configuration for denoiser {arch}: {e}") from None


@dataclass
class LoadedDenoiser:
    """A denoiser ready to compose with a classifier.

    Attributes:
        module: maps raw inputs (B, *input_shape) in [0, 1] units to denoised inputs of the same shape; eval mode.
        input_shape: shape of one input, or None when the source does not record it (factories).
        train_sigma: the noise level it was trained for (metadata.sigma), if recorded.
        kind: ``certkit``, ``onnx`` or ``factory``; source: the file or factory; metadata: what the file records.
    """

    module: nn.Module
    input_shape: tuple[int, ...] | None
    train_sigma: float | None
    kind: str
    source: str
    metadata: dict[str, Any] = field(default_factory=dict)
    arch: str | None = None


def save_denoiser(path: str | Path, net: nn.Module, arch: str, arch_config: dict, input_shape,
                  metadata: dict | None = None, extra: dict | None = None) -> None:
    """Write a denoiser checkpoint (certkit format with ``task: denoiser``; atomic like save_checkpoint)."""
    save_checkpoint(path, net, arch, arch_config, input_shape, 0, None, metadata=metadata,
                    extra={"task": TASK, **(extra or {})})


def is_denoiser_checkpoint(ckpt: Any) -> bool:
    """True for a loaded certkit checkpoint dict whose ``task`` is ``denoiser``."""
    return isinstance(ckpt, dict) and ckpt.get("format") == FORMAT and ckpt.get("task") == TASK


def read_denoiser(ckpt: dict, where: str) -> tuple[nn.Module, tuple[int, ...]]:
    """(network, input_shape) of a denoiser checkpoint dict.

    Raises:
        CertkitError: a newer version, missing or malformed entries, weights that do not fit the architecture.
    """
    for key in ("arch", "state_dict", "input_shape"):
        if key not in ckpt:
            raise CertkitError(f"{where}: denoiser checkpoint is missing {key!r}")
    try:
        if int(ckpt.get("version", 0)) > VERSION:
            raise CertkitError(f"{where}: checkpoint version {ckpt['version']} is newer than this certkit reads")
        shape = tuple(int(d) for d in ckpt["input_shape"])
        net = build_denoiser(str(ckpt["arch"]), shape, **dict(ckpt.get("arch_config") or {}))
    except CertkitError:
        raise
    except Exception as e:
        raise CertkitError(f"{where}: malformed denoiser checkpoint ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:160] if str(e) else ''})") from None
    _load_state(net, ckpt["state_dict"], where)
    return net.eval(), shape


def load_denoiser(spec: str | Path, weights: str | Path | None = None) -> LoadedDenoiser:
    """Load a denoiser: a certkit denoiser checkpoint, an ``.onnx`` file, or ``package.module:factory`` (a function
    returning an nn.Module, e.g. a wrapper around a user's diffusion or consistency model, see docs/guide/certify.md)
    with an optional state_dict ``weights``. Checkpoints load with ``torch.load(weights_only=True)``; never pickled
    code.

    Raises:
        CertkitError: missing or corrupt file, a classifier checkpoint passed as a denoiser, unsupported ONNX op.
    """
    from certkit.models.checkpoint import is_factory_spec, load_model

    spec_s = str(spec)
    path = Path(spec_s)
    if is_factory_spec(spec_s):
        # a denoiser factory usually builds a pretrained diffusion model and loads its weights itself (the
        # documented OneShotDiffusion route), so it may come without --denoiser-weights
        m = load_model(spec_s, weights, random_init=True)
        return LoadedDenoiser(m.module, None, None, "factory", spec_s)
    if weights is not None:
        raise CertkitError("--denoiser-weights is only for a --denoiser package.module:factory")
    if path.suffix.lower() == ".onnx":
        m = load_model(path)
        return LoadedDenoiser(m.module, m.input_shape, None, "onnx", str(path))
    ckpt = load_checkpoint_file(path)
    if not is_denoiser_checkpoint(ckpt):
        raise CertkitError(f"{path} is not a certkit denoiser checkpoint (train one with certkit train --method "
                           f"denoiser; a classifier goes to --model)")
    net, shape = read_denoiser(ckpt, str(path))
    meta = dict(ckpt.get("metadata") or {})
    sigma = meta.get("sigma")
    return LoadedDenoiser(net, shape, float(sigma) if sigma is not None else None, "certkit", str(path), meta,
                          str(ckpt["arch"]))


class DenoisedClassifier(nn.Module):
    """F(D(x)): (B, *input_shape) raw inputs -> F's logits (B, K). Both parts frozen (eval mode, as certified)."""

    def __init__(self, denoiser: nn.Module, classifier: nn.Module):
        super().__init__()
        self.denoiser, self.classifier = denoiser, classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.denoiser(x))


class DenoisedDual(nn.Module):
    """A Dual RS model F (logits (B, 2, K), branch k seeing only checkerboard half k) behind a denoiser D.

    Branch k's logits are F(D(x * m_k))[:, k] with m_0 the left mask and m_1 = 1 - m_0, so each branch still depends
    ONLY on its own half of the (noisy) input and the two branches keep independent noise, which Dual RS needs
    (Xia et al. ICLR 2024). D(x) applied to the whole input would mix the halves and void that independence.
    Costs two passes of D and F per batch.
    """

    mask: torch.Tensor

    def __init__(self, denoiser: nn.Module, classifier: nn.Module, sample_shape: Sequence[int]):
        super().__init__()
        self.denoiser, self.classifier = denoiser, classifier
        self.register_buffer("mask", checkerboard_mask(sample_shape), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = self.classifier(self.denoiser(x * self.mask))[:, 0]
        right = self.classifier(self.denoiser(x * (1 - self.mask)))[:, 1]
        return torch.stack([left, right], dim=1)


def compose(denoiser: LoadedDenoiser, model: LoadedModel, sample_shape: Sequence[int]) -> LoadedModel:
    """The classifier F o D as a :class:`LoadedModel` (what every smoothing run certifies).

    Args:
        denoiser: D; model: F; sample_shape: the shape of one input F takes (its recorded shape or the data's).
    Returns:
        a LoadedModel whose module is :class:`DenoisedClassifier` (or :class:`DenoisedDual` for a Dual RS model),
        whose train_sigma is D's training sigma (else F's), and whose source names both.
    Raises:
        CertkitError: D fails on inputs of ``sample_shape`` or returns another shape (both shapes named).
    """
    shape = tuple(int(s) for s in sample_shape)
    device = next((p.device for p in model.module.parameters()), torch.device("cpu"))
    d = denoiser.module.to(device).eval()
    try:
        with torch.inference_mode():
            out = d(torch.full((2,) + shape, 0.5, device=device))
    except (RuntimeError, ValueError, TypeError, IndexError) as e:
        raise CertkitError(f"the denoiser does not accept the classifier's inputs of shape {shape}: "
                           f"{str(e).splitlines()[0][:200]}") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape[1:]) != shape:
        got = tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else type(out).__name__
        raise CertkitError(f"the denoiser's output shape {got} differs from the classifier's input shape {shape}")
    with torch.inference_mode():
        heads = model.module(out).dim()
    module = (DenoisedDual(d, model.module, shape) if heads == 3 else DenoisedClassifier(d, model.module)).eval()
    sigma = denoiser.train_sigma if denoiser.train_sigma is not None else model.train_sigma
    return LoadedModel(module, model.input_shape, model.num_classes, model.data_range, sigma, model.kind,
                       f"{denoiser.source} -> {model.source}",
                       {**model.metadata, "denoiser": {"source": denoiser.source, "kind": denoiser.kind,
                                                       "arch": denoiser.arch, "train_sigma": denoiser.train_sigma,
                                                       "metadata": denoiser.metadata}},
                       model.arch, None)
