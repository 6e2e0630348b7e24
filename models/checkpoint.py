"""The certkit checkpoint format and :func:`load_model`, the one loader for every model source.

A certkit checkpoint is a ``torch.save`` dict made only of tensors, numbers, strings, lists and dicts, so it
loads with ``torch.load(weights_only=True)``::

    {"format": "certkit-checkpoint", "version": 1,
     "arch": "mlp", "arch_config": {...}, "state_dict": {...},        # the network without normalization
     "input_shape": [C, H, W], "num_classes": K,
     "normalization": {"mean": [...], "std": [...]} | None,          # applied as the model's first layer
     "data_range": [0.0, 1.0],                                          # sigma / eps are in these units
     "metadata": {"dataset": ..., "sigma": ..., "method": ..., ...}}
"""
from __future__ import annotations

import importlib
import os
import pickle
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from certkit.common.errors import CertkitError
from certkit.models.zoo import CIFAR10_MEAN, CIFAR10_STD, NormalizeLayer, build_model

FORMAT = "certkit-checkpoint"
VERSION = 1
#: Reference-format architectures (locuslab/smoothing) and the normalization their Sequential starts with.
REFERENCE_ARCHS = {"cifar_resnet20": (CIFAR10_MEAN, CIFAR10_STD),
                   "cifar_resnet110": (CIFAR10_MEAN, CIFAR10_STD)}
BUNDLED_NAME = "bundled"
_BUNDLED_FILE = Path(__file__).resolve().parent / "pretrained" / "digits_mlp_sigma025.pt"


@dataclass
class LoadedModel:
    """A classifier ready for certification.

    Attributes:
        module: maps raw inputs (B, *input_shape) in ``data_range`` to logits (B, K); any normalization is
            its first layer, so noise and perturbations are added before it. In eval mode.
        input_shape: shape of one input without batch dim, or None when the source does not record it.
        num_classes: K, or None when unknown until the first forward pass.
        data_range: (low, high) of raw inputs; sigma and eps are expressed in these units.
        train_sigma: the Gaussian noise level the model was trained with, if recorded.
        kind: ``certkit``, ``reference``, ``onnx``, ``factory``, ``pickled-module`` or ``module`` (in memory).
        source: file or factory the model came from.
        metadata: everything else the checkpoint records (dataset, training method, ...).
    """

    module: nn.Module
    input_shape: tuple[int, ...] | None
    num_classes: int | None
    data_range: tuple[float, float] = (0.0, 1.0)
    train_sigma: float | None = None
    kind: str = "certkit"
    source: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    arch: str | None = None
    onnx: Any = None  # the OnnxModel (input name, onnxruntime session) when loaded from an .onnx file


def bundled_checkpoint_path() -> Path:
    """Path of the small pretrained digits model shipped inside the package."""
    return _BUNDLED_FILE


def save_checkpoint(path: str | Path, net: nn.Module, arch: str, arch_config: dict, input_shape,
                    num_classes: int, normalization: dict | None = None,
                    data_range: tuple[float, float] = (0.0, 1.0), metadata: dict | None = None,
                    extra: dict | None = None) -> None:
    """Write ``net`` (the network WITHOUT its normalization layer) as a certkit checkpoint.

    The file is written to a temporary name and renamed, so an interrupted save never leaves a truncated
    checkpoint. ``extra`` holds additional weights_only-safe entries (e.g. optimizer state for resuming).
    """
    path = Path(path)
    ckpt = {"format": FORMAT, "version": VERSION, "arch": arch, "arch_config": dict(arch_config),
            "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
            "input_shape": [int(s) for s in input_shape], "num_classes": int(num_classes),
            "normalization": normalization, "data_range": [float(data_range[0]), float(data_range[1])],
            "metadata": dict(metadata or {})}
    if extra:
        ckpt.update(extra)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)


def load_checkpoint_file(path: Path, allow_pickle: bool = False) -> Any:
    """``torch.load`` a file on the CPU with ``weights_only=not allow_pickle``, turning every failure into a
    one-line :class:`CertkitError` (missing file, corrupt file, pickled code refused)."""
    path = Path(path)
    if not path.is_file():
        raise CertkitError(f"model file not found: {path}")
    if allow_pickle:
        _cwd_importable()  # a pickled module names its class's module: found as the factory route finds it
    try:
        with warnings.catch_warnings():  # torch warns about odd pickle protocols of damaged files: the error says it
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except pickle.UnpicklingError as e:
        text = str(e)
        refused = "GLOBAL" in text or "Unsupported global" in text or "unrecognized function" in text
        if not allow_pickle and refused:
            why = next((ln.strip() for ln in text.splitlines() if "GLOBAL" in ln or "global" in ln), "")
            raise CertkitError(f"{path} holds Python objects that weights_only loading refuses ({why[:140]}); if you "
                               f"trust the file, pass --allow-pickle (this executes code stored in it)") from None
        detail = text.split("error:", 1)[1].strip().split("\n")[0] if "error:" in text else text.split("\n")[0]
        raise CertkitError(f"cannot load {path}: not a valid torch checkpoint ({detail[:160]})") from None
    except (ModuleNotFoundError, AttributeError) as e:  # only with allow_pickle: the class a pickle names is gone
        in_main = "__main__" in str(e)
        where = "the script that saved it (__main__)" if in_main else f"module {getattr(e, 'name', '')!r}"
        raise CertkitError(f"{path} pickles a class of {where}, which cannot be imported here ({str(e)[:120]}); "
                           + ("" if in_main else "run from the folder that holds the module, or ")
                           + "save the state_dict (torch.save(model.state_dict(), FILE)) and pass --model "
                             "package.module:factory --weights FILE") from None
    except MemoryError:
        raise CertkitError(f"cannot load {path}: it asks for more memory than there is") from None
    except Exception as e:  # torch.load on a damaged file raises many types (IndexError, RuntimeError, ...)
        msg = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise CertkitError(f"cannot load {path}: not a valid torch checkpoint ({type(e).__name__}: {msg})") from None


#: key prefixes of state_dicts saved from wrappers: DataParallel (``module.``) and the reference checkpoints'
#: Sequential(normalize, net) with or without DataParallel (``1.module.``, ``1.``)
WRAPPER_PREFIXES = ("module.", "1.module.", "1.")


def _load_state(net: nn.Module, state: Any, where: str, strict: bool = True) -> None:
    """Load ``state`` into ``net``; keys saved from a wrapper (:data:`WRAPPER_PREFIXES`) are matched without the
    wrapper's prefix when they do not fit as they are.

    Raises:
        CertkitError: not a dict of tensors, or weights that do not fit (the message counts and names the first
            missing, unexpected and mis-shaped keys).
    """
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CertkitError(f"{where}: state_dict must be a dict of tensors")
    own = net.state_dict()
    if not set(state) & set(own):
        for prefix in WRAPPER_PREFIXES:
            if state and all(k.startswith(prefix) for k in state):
                stripped = {k[len(prefix):]: v for k, v in state.items()}
                if set(stripped) & set(own):
                    state = stripped
                    break
    try:
        net.load_state_dict(state, strict=strict)
    except RuntimeError:
        raise CertkitError(f"{where}: weights do not match the architecture ({_state_mismatch(own, state, strict)})"
                           ) from None


def _state_mismatch(own: dict, state: dict, strict: bool) -> str:
    """A short account of why ``state`` does not load into a module whose state_dict is ``own``."""
    def some(keys: list) -> str:
        return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")

    missing = sorted(set(own) - set(state)) if strict else []
    unexpected = sorted(set(state) - set(own)) if strict else []
    shapes = [f"{k} {tuple(state[k].shape)} for {tuple(own[k].shape)}" for k in sorted(set(own) & set(state))
              if tuple(own[k].shape) != tuple(state[k].shape)]
    parts = ([f"{len(missing)} missing keys ({some(missing)})"] if missing else []) + \
        ([f"{len(unexpected)} unexpected keys ({some(unexpected)})"] if unexpected else []) + \
        ([f"{len(shapes)} keys of another shape ({some(shapes)})"] if shapes else [])
    return "; ".join(parts) or "the module refused them"


def reference_to_certkit(ckpt: dict, where: str) -> dict:
    """A reference-format checkpoint (locuslab/smoothing: ``{'arch', 'state_dict'}`` of Sequential(normalize, net),
    keys ``1.*``, or ``1.module.*`` when saved from DataParallel) as a certkit-format checkpoint dict.

    The one converter of reference checkpoints: certify, verify, conformal and ``train --init-from`` all use it.
    Raises:
        CertkitError: unknown architecture, or a state_dict that is not a dict.
    """
    arch = ckpt["arch"]
    if arch not in REFERENCE_ARCHS:
        raise CertkitError(f"{where}: architecture {arch!r} is not one certkit builds ({', '.join(REFERENCE_ARCHS)}); "
                           f"for your own architecture pass --model package.module:factory --weights {where}")
    state = ckpt["state_dict"]
    if not isinstance(state, dict):
        raise CertkitError(f"{where}: state_dict must be a dict of tensors")
    net_state = {}
    for k, v in state.items():
        for prefix in ("1.module.", "1."):
            if k.startswith(prefix):
                net_state[k[len(prefix):]] = v
                break
    mean, std = REFERENCE_ARCHS[arch]
    return {"format": FORMAT, "version": VERSION, "arch": arch, "arch_config": {}, "state_dict": net_state,
            "input_shape": [3, 32, 32], "num_classes": 10,
            "normalization": {"mean": list(mean), "std": list(std)}, "data_range": [0.0, 1.0],
            "metadata": {"dataset": "cifar10", "epoch": ckpt.get("epoch"), "converted_from": "reference"}}


def read_checkpoint(path: str | Path, allow_pickle: bool = False) -> dict:
    """A certkit checkpoint or a reference-format one (converted), as a certkit-format dict.

    Raises:
        CertkitError: missing or corrupt file, or neither format.
    """
    path = Path(path)
    ckpt = load_checkpoint_file(path, allow_pickle)
    if isinstance(ckpt, dict) and ckpt.get("format") == FORMAT:
        return ckpt
    if isinstance(ckpt, dict) and "arch" in ckpt and "state_dict" in ckpt:
        return reference_to_certkit(ckpt, str(path))
    raise CertkitError(f"{path}: not a certkit checkpoint nor a reference-format {{'arch', 'state_dict'}} "
                       f"checkpoint (a bare state_dict needs --model package.module:factory --weights FILE)")


def _from_certkit(ckpt: dict, path: Path) -> LoadedModel:
    for key in ("arch", "state_dict", "input_shape", "num_classes"):
        if key not in ckpt:
            raise CertkitError(f"{path}: certkit checkpoint is missing {key!r}")
    try:
        if int(ckpt.get("version", 0)) > VERSION:
            raise CertkitError(f"{path}: checkpoint version {ckpt['version']} is newer than this certkit reads")
        input_shape = tuple(int(d) for d in ckpt["input_shape"])
        num_classes = int(ckpt["num_classes"])
        if not input_shape or min(input_shape) < 1 or num_classes < 1:
            raise CertkitError(f"{path}: input_shape {input_shape} / num_classes {num_classes} are not valid")
        net = build_model(ckpt["arch"], input_shape, num_classes, **dict(ckpt.get("arch_config") or {}))
        _load_state(net, ckpt["state_dict"], str(path))
        norm = ckpt.get("normalization")
        module = nn.Sequential(NormalizeLayer(norm["mean"], norm["std"]), net) if norm else net
        meta = dict(ckpt.get("metadata") or {})
        sigma = meta.get("sigma")
        lo, hi = (float(v) for v in ckpt.get("data_range", (0.0, 1.0)))
        data_range = (lo, hi)
        train_sigma = float(sigma) if sigma is not None else None
    except CertkitError:
        raise
    except Exception as e:  # a damaged or hand-made file: wrong types anywhere in the dict
        raise CertkitError(f"{path}: malformed certkit checkpoint ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:160] if str(e) else ''})") from None
    kind = "reference" if meta.get("converted_from") == "reference" else "certkit"
    return LoadedModel(module.eval(), input_shape, num_classes, data_range, train_sigma, kind, str(path), meta,
                       ckpt["arch"])


def _cwd_importable() -> None:
    """Let the current folder's modules be imported (factories and pickled modules name them), as ``python -m``
    would; the ``certkit`` script's own folder is what Python puts on sys.path otherwise."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


def weights_option(what: str) -> str:
    """The option that gives the weights of the factory model named by option ``what`` (``--model``: ``--weights``;
    ``--classifier``: ``--classifier-weights``; ...)."""
    return "--weights" if what == "--model" else f"{what}-weights"


def is_factory_spec(spec: str) -> bool:
    """Whether a model source names a ``package.module:function`` factory (and not a file)."""
    return not Path(spec).exists() and ":" in spec and not spec.endswith((".pt", ".pth", ".onnx", ".onnx.gz"))


def _from_factory(spec: str, weights: str | None, random_init: bool = False, what: str = "--model") -> LoadedModel:
    mod_name, _, fn_name = spec.partition(":")
    if not mod_name or not fn_name:
        raise CertkitError(f"{what} {spec!r}: a factory is written package.module:function")
    _cwd_importable()
    try:
        factory = getattr(importlib.import_module(mod_name), fn_name)
    except (ImportError, AttributeError) as e:
        raise CertkitError(f"cannot import factory {spec}: {e}") from None
    if weights is None and not random_init:
        if what != "--model":
            raise CertkitError(f"{what} {spec} builds a network whose weights are not given: pass its trained weights "
                               f"with {weights_option(what)} FILE")
        raise CertkitError(f"--model {spec} builds a network whose weights are not given: pass its trained weights "
                           f"with --weights FILE (or --random-init to use the network exactly as the factory returns "
                           f"it: untrained, or loading its own weights)")
    net = factory()
    if not isinstance(net, nn.Module):
        raise CertkitError(f"factory {spec} returned {type(net).__name__}, not a torch.nn.Module")
    if weights is not None:
        state = load_checkpoint_file(Path(weights), allow_pickle=False)
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        _load_state(net, state, weights)
    return LoadedModel(net.eval(), None, None, (0.0, 1.0), None, "factory", spec, {})


def module_source(module: nn.Module) -> str:
    """How results name an in-memory model: its class and a digest of its parameters and buffers, so that a resumed
    run refuses rows computed with other weights."""
    import hashlib

    digest = hashlib.sha256()
    for name, t in module.state_dict().items():
        digest.update(name.encode())
        digest.update(t.detach().to("cpu").contiguous().view(-1).view(torch.uint8).numpy().tobytes()
                      if t.numel() else b"")
    return f"<in-memory {type(module).__name__} {digest.hexdigest()[:12]}>"


def load_model(spec: str | Path | nn.Module | LoadedModel | None = None, weights: str | Path | None = None,
               allow_pickle: bool = False, random_init: bool = False, what: str = "--model") -> LoadedModel:
    """Load a classifier from any source certkit accepts.

    Args:
        spec: ``None`` or ``"bundled"`` (the shipped digits model); a certkit checkpoint; a reference-format
            checkpoint ``{'arch': 'cifar_resnet20'|'cifar_resnet110', 'state_dict': ...}``; an ``.onnx`` file;
            or ``package.module:factory`` (a function returning an nn.Module) used with ``weights``; or an
            in-memory nn.Module (used as it is, in eval mode, ``weights`` loaded into it when given) or
            LoadedModel (returned as it is).
        weights: a state_dict file (or a ``{'state_dict': ...}`` checkpoint, wrapper prefixes such as ``module.``
            stripped) for a factory model.
        allow_pickle: allow ``torch.load(weights_only=False)``, which executes code stored in the file. Needed
            only for checkpoints that pickle whole modules; never on by default.
        random_init: accept a factory model without ``weights`` (the network as the factory returns it); without
            it that is an error, so that an untrained network is never certified by accident.
        what: the option the source came from, for messages (``--standard-model``, ``--classifier``, ...).

    Raises:
        CertkitError: missing or corrupt file, unknown format or architecture, weights that do not fit,
            unsupported ONNX operator, a factory without weights (unless ``random_init``).
    """
    if isinstance(spec, LoadedModel):
        return spec
    if isinstance(spec, nn.Module):
        if weights is not None:
            _load_state(spec, load_checkpoint_file(Path(weights)), str(weights))
        return LoadedModel(spec.eval(), None, None, (0.0, 1.0), None, "module", module_source(spec), {})
    if spec is None or str(spec) == BUNDLED_NAME:
        spec = bundled_checkpoint_path()
    spec_s = str(spec)
    path = Path(spec_s)
    if is_factory_spec(spec_s):
        return _from_factory(spec_s, None if weights is None else str(weights), random_init, what)
    if weights is not None:
        raise CertkitError(f"{weights_option(what)} is only for a package.module:factory {what}; {spec_s} is a file "
                           f"that holds its weights")
    if path.name.lower().endswith((".onnx", ".onnx.gz")):
        if not path.is_file():
            raise CertkitError(f"model file not found: {path}")
        from certkit.models.onnx_import import load_onnx
        onnx_model = load_onnx(path)
        return LoadedModel(onnx_model.module.eval(), onnx_model.sample_shape, onnx_model.num_outputs,
                           (0.0, 1.0), None, "onnx", str(path), {}, None, onnx_model)
    ckpt = load_checkpoint_file(path, allow_pickle)
    if isinstance(ckpt, nn.Module):  # only reachable with allow_pickle
        return LoadedModel(ckpt.eval(), None, None, (0.0, 1.0), None, "pickled-module", str(path), {})
    if isinstance(ckpt, dict) and ckpt.get("format") == FORMAT and ckpt.get("task") == "denoiser":
        raise CertkitError(f"{path} is a denoiser checkpoint: pass it as --denoiser (with a classifier as --model)")
    if isinstance(ckpt, dict) and ckpt.get("format") == FORMAT:
        return _from_certkit(ckpt, path)
    if isinstance(ckpt, dict) and "arch" in ckpt and "state_dict" in ckpt:
        return _from_certkit(reference_to_certkit(ckpt, str(path)), path)
    raise CertkitError(f"{path}: not a certkit checkpoint nor a reference-format {{'arch', 'state_dict'}} "
                       f"checkpoint (a bare state_dict needs --model package.module:factory --weights FILE)")
