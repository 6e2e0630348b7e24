"""Model families of the soundness benchmark (Zhou et al. 2024, "Testing Neural Network Verifiers: A Soundness
Benchmark with Hidden Counterexamples", Sec. 4 / their models/synthetic_*.py), as plain ``nn.Sequential`` so the
ONNX export is a straight chain of Conv/Gemm/activation nodes every verifier reads.

Inputs are synthetic: MLPs take a vector (default 10 values), CNNs a (C, 5, 5) image with C = 1 or 3; the output is
2 logits. ``width`` replaces the paper's 1000-unit layers (1000 by default; smaller widths make generation feasible
on a CPU). Every convolution is followed by its activation (the reference omits it after the third convolution of
the 3-conv CNN; certkit does not copy that).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

_ACTS: dict[str, Callable[[], nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


def _head(n_in: int, width: int, act: Callable[[], nn.Module]) -> list[nn.Module]:
    """FC width -> FC100 -> FC20 -> FC2 (the classifier tail shared by the CNN families)."""
    return [nn.Flatten(), nn.Linear(n_in, width), act(), nn.Linear(width, 100), act(), nn.Linear(100, 20), act(),
            nn.Linear(20, 2)]


def mlp(input_shape: tuple, hidden: int = 4, width: int = 1000, act: str = "relu") -> nn.Sequential:
    """FC100 -> (hidden - 1) x FC<width> -> FC20 -> FC2 on a flat input: mlp_4_hidden is FC100, 3 x FC1000, FC20, FC2
    and mlp_5_hidden has 4 x FC1000 (the paper's Table / their models/synthetic_mlp.py)."""
    a = _ACTS[act]
    n_in = 1
    for s in input_shape:
        n_in *= s
    layers: list[nn.Module] = [nn.Flatten(), nn.Linear(n_in, 100), a(), nn.Linear(100, width), a()]
    for _ in range(hidden - 2):
        layers += [nn.Linear(width, width), a()]
    return nn.Sequential(*layers, nn.Linear(width, 20), a(), nn.Linear(20, 2))


def cnn(input_shape: tuple, convs: int = 1, width: int = 1000, act: str = "relu", avgpool: bool = False,
        stride2: bool = False) -> nn.Sequential:
    """convs conv layers (Conv10 3x3 pad 1; Conv5 -> Conv10; Conv5 -> Conv10 -> Conv20), optional AvgPool 3x3 stride
    1 pad 1, then the FC head. ``stride2``: one Conv10 5x5 stride 2 pad 2 (the paper's 1-channel Tanh / Sigmoid CNNs;
    their 3-channel ones use the 1-conv layout, see :func:`build`)."""
    a = _ACTS[act]
    c, h, w = input_shape
    if stride2:
        layers: list[nn.Module] = [nn.Conv2d(c, 10, 5, stride=2, padding=2), a()]
        h, w, c = (h - 1) // 2 + 1, (w - 1) // 2 + 1, 10
    else:
        chans = {1: [10], 2: [5, 10], 3: [5, 10, 20]}[convs]
        layers = []
        for out in chans:
            layers += [nn.Conv2d(c, out, 3, stride=1, padding=1), a()]
            c = out
    if avgpool:
        layers.append(nn.AvgPool2d(3, stride=1, padding=1))
    return nn.Sequential(*layers, *_head(c * h * w, width, a))


# family -> (builder, default input shape given channels, builder kwargs)
FAMILIES: dict[str, dict] = {
    "mlp_4_hidden": dict(kind="mlp", hidden=4),
    "mlp_5_hidden": dict(kind="mlp", hidden=5),
    "cnn_1_conv": dict(kind="cnn", convs=1),
    "cnn_2_conv": dict(kind="cnn", convs=2),
    "cnn_3_conv": dict(kind="cnn", convs=3),
    "cnn_avgpool": dict(kind="cnn", convs=1, avgpool=True),
    "cnn_tanh": dict(kind="cnn", stride2=True, act="tanh"),
    "cnn_sigmoid": dict(kind="cnn", stride2=True, act="sigmoid"),
}


def input_shape_for(arch: str, channels: int = 1, input_size: int | None = None) -> tuple:
    """Sample shape of ``arch``: (input_size,) for MLPs (default 10), (channels, s, s) for CNNs (default s = 5)."""
    if FAMILIES[arch]["kind"] == "mlp":
        return (input_size or 10,)
    s = input_size or 5
    return (channels, s, s)


def build(arch: str, input_shape: tuple, width: int = 1000) -> nn.Sequential:
    """The network of family ``arch`` (a key of FAMILIES) for samples of ``input_shape``, 2 output logits."""
    spec = dict(FAMILIES[arch])
    kind = spec.pop("kind")
    if spec.get("stride2") and input_shape[0] == 3:
        spec["stride2"] = False  # the paper's 3-channel Tanh / Sigmoid CNNs are CNN 1 Conv with that activation
    return mlp(input_shape, width=width, **spec) if kind == "mlp" else cnn(input_shape, width=width, **spec)


class InputScale(nn.Module):
    """x -> scale * x. Used only while training (generate.py ``input_scale``): it makes Adam's steps on the first
    layer act in units of the data range instead of raw input units; :func:`fold_input_scale` removes it."""

    def __init__(self, scale: float):
        super().__init__()
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


def fold_input_scale(model: nn.Sequential) -> nn.Sequential:
    """``Sequential(InputScale(s), net)`` -> ``net`` with s multiplied into its first Linear / Conv2d weight (exact:
    the layers before it are Flatten only, and zero padding is unchanged by scaling). Other models are returned as
    they are. Modifies ``net`` in place. Shapes and units are those of ``net`` (raw inputs, no normalization).

    Raises:
        ValueError: the wrapped network starts with something other than Flatten before its first Linear/Conv2d.
    """
    if not (len(model) == 2 and isinstance(model[0], InputScale)):
        return model
    s, net = model[0].scale, model[1]
    assert isinstance(net, nn.Sequential)
    for m in net:
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            with torch.no_grad():
                m.weight.mul_(s)
            return net
        if not isinstance(m, nn.Flatten):
            break
    raise ValueError("fold_input_scale: the network does not start with Linear or Conv2d")
