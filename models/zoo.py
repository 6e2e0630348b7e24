"""Architecture zoo. Every architecture takes inputs already normalized and returns logits (B, K).

Names:
    ``mlp``            Flatten -> [Linear -> ReLU] x len(hidden) -> Linear. Sized from the input shape.
    ``cnn``            Conv(C,16,3,p1) ReLU Conv(16,32,4,s2,p1) ReLU Flatten Linear(.,100) ReLU Linear(100,K);
                       a small CNN sized from (C, H, W).
    ``cnn_a``          Wong & Kolter 2018: Conv(C,16,4,s2,p1) ReLU Conv(16,32,4,s2,p1) ReLU Flatten FC100 ReLU FC(K).
    ``cnn_7layer_bn``  Shi et al. 2021: 5 convs (w, w, 2w stride 2, 2w, 2w; 3x3) each with BN+ReLU, FC(8w) BN ReLU,
                       FC(K); w = 64 in the paper (``width``).
    ``dm_large``       Gowal et al. 2018: conv w-3-s1, w-3-s1, 2w-3-s2, 2w-3-s1, 2w-3-s1, FC(8w), FC(K); w = 64.
    ``resnet_small``   Conv(C,w) BN ReLU, two residual blocks [conv BN ReLU conv BN + identity, ReLU], FC(K).
    ``cifar_resnet20``, ``cifar_resnet110``
                       the CIFAR ResNets (He et al. 2016, 6n+2 layers of BasicBlocks, 16/32/64 channels) with
                       the module names of the Gaussian-smoothing reference checkpoints (Cohen et al. 2019,
                       locuslab/smoothing), so their published state_dicts load unchanged.

:class:`NormalizeLayer` keeps mean/std as non-persistent buffers: they are recorded in certkit checkpoints
separately and are not part of the reference checkpoints' state_dict (whose keys start with ``1.``).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from certkit.common.errors import CertkitError
from certkit.common.options import option

#: Per-channel normalization of the published CIFAR-10 Gaussian-smoothing models.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)


class NormalizeLayer(nn.Module):
    """(x - mean[c]) / std[c] for inputs (B, C, H, W) or (B, D) with one mean/std per channel or scalar.

    It is the model's first layer: noise and perturbations are applied to raw [0,1] inputs before it.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std_t = torch.as_tensor(std, dtype=torch.float32).flatten()
        if mean_t.shape != std_t.shape:
            raise CertkitError("normalization mean and std must have the same length")
        if torch.any(std_t <= 0):
            raise CertkitError("normalization std must be > 0")
        self.register_buffer("mean", mean_t, persistent=False)
        self.register_buffer("std", std_t, persistent=False)
        self.per_channel = mean_t.numel() > 1

    def scale_shift(self, sample_shape: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        """(1/std, -mean/std) shaped to broadcast over one input of ``sample_shape`` (channel first)."""
        shape = (-1,) + (1,) * (len(sample_shape) - 1) if self.per_channel else (1,) * max(len(sample_shape), 1)
        return (1.0 / self.std).view(shape), (-self.mean / self.std).view(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale, shift = self.scale_shift(tuple(x.shape[1:]))
        return x * scale + shift


def _flat_dim(input_shape: Sequence[int]) -> int:
    d = 1
    for s in input_shape:
        d *= int(s)
    return d


def mlp(input_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (256, 256),
        bn: bool = False) -> nn.Module:
    """Fully connected ReLU network: Flatten, Linear (+BatchNorm1d) + ReLU per entry of ``hidden``, final Linear."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = _flat_dim(input_shape)
    for h in hidden:
        layers += [nn.Linear(width, int(h))] + ([nn.BatchNorm1d(int(h))] if bn else []) + [nn.ReLU()]
        width = int(h)
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def cnn(input_shape: Sequence[int], num_classes: int, width: int = 16, fc: int = 100) -> nn.Module:
    """Small CNN: Conv(C,w,3,p1) ReLU Conv(w,2w,4,s2,p1) ReLU Flatten Linear(.,fc) ReLU Linear(fc,K)."""
    if len(input_shape) != 3:
        raise CertkitError(f"arch cnn needs image inputs C x H x W, got input shape {tuple(input_shape)}")
    c, h, w = (int(s) for s in input_shape)
    ho, wo = (h + 2 - 4) // 2 + 1, (w + 2 - 4) // 2 + 1
    return nn.Sequential(
        nn.Conv2d(c, width, 3, padding=1), nn.ReLU(),
        nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(2 * width * ho * wo, fc), nn.ReLU(), nn.Linear(fc, num_classes))


def _image_shape(arch: str, input_shape) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise CertkitError(f"arch {arch} needs image inputs C x H x W, got input shape {tuple(input_shape)}")
    c, h, w = (int(v) for v in input_shape)
    return c, h, w


def _conv_out(h: int, k: int, s: int, p: int) -> int:
    return (h + 2 * p - k) // s + 1


def cnn_a(input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """Wong & Kolter (2018) small CNN, 'cnn_a' in the certified-training literature (MNIST: 1568 -> 100)."""
    c, h, w = _image_shape("cnn_a", input_shape)
    h2, w2 = _conv_out(_conv_out(h, 4, 2, 1), 4, 2, 1), _conv_out(_conv_out(w, 4, 2, 1), 4, 2, 1)
    return nn.Sequential(nn.Conv2d(c, 16, 4, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 4, 2, 1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(32 * h2 * w2, 100), nn.ReLU(), nn.Linear(100, num_classes))


def _conv_stack(arch, input_shape, num_classes, width, bn):
    c, h, w = _image_shape(arch, input_shape)
    chans = [width, width, 2 * width, 2 * width, 2 * width]
    strides = [1, 1, 2, 1, 1]
    layers: list[nn.Module] = []
    for out, st in zip(chans, strides):
        layers += [nn.Conv2d(c, out, 3, st, 1)] + ([nn.BatchNorm2d(out)] if bn else []) + [nn.ReLU()]
        c, h, w = out, _conv_out(h, 3, st, 1), _conv_out(w, 3, st, 1)
    layers += [nn.Flatten(), nn.Linear(c * h * w, 8 * width)] + ([nn.BatchNorm1d(8 * width)] if bn else []) + \
              [nn.ReLU(), nn.Linear(8 * width, num_classes)]
    return nn.Sequential(*layers)


def cnn_7layer_bn(input_shape: Sequence[int], num_classes: int, width: int = 64) -> nn.Module:
    """Shi et al. (2021) CNN-7 with BatchNorm after every conv and the hidden FC."""
    return _conv_stack("cnn_7layer_bn", input_shape, num_classes, width, bn=True)


def dm_large(input_shape: Sequence[int], num_classes: int, width: int = 64) -> nn.Module:
    """Gowal et al. (2018) DM-large (no BatchNorm)."""
    return _conv_stack("dm_large", input_shape, num_classes, width, bn=False)


class _ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(ch, ch, 3, 1, 1), nn.BatchNorm2d(ch)
        self.conv2, self.bn2 = nn.Conv2d(ch, ch, 3, 1, 1), nn.BatchNorm2d(ch)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(x + self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))))


def resnet_small(input_shape: Sequence[int], num_classes: int, width: int = 16) -> nn.Module:
    """A small residual network for certified training: stem conv, two residual blocks, FC."""
    c, h, w = _image_shape("resnet_small", input_shape)
    return nn.Sequential(nn.Conv2d(c, width, 3, 1, 1), nn.BatchNorm2d(width), nn.ReLU(), _ResBlock(width),
                         _ResBlock(width), nn.Flatten(), nn.Linear(width * h * w, num_classes))


class BasicBlock(nn.Module):
    """Two 3x3 conv+BN layers with an identity (or 1x1 conv+BN ``downsample``) shortcut."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class CifarResNet(nn.Module):
    """CIFAR ResNet of depth 6n+2 (BasicBlocks, 16/32/64 channels, 8x8 average pool, FC)."""

    def __init__(self, depth: int, num_classes: int = 10):
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise CertkitError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.in_planes = 16
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        self.layer1 = self._make_layer(16, n, 1)
        self.layer2 = self._make_layer(32, n, 2)
        self.layer3 = self._make_layer(64, n, 2)
        self.avgpool = nn.AvgPool2d(8)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, (2.0 / fan_out) ** 0.5)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.in_planes != planes:
            downsample = nn.Sequential(nn.Conv2d(self.in_planes, planes, 1, stride=stride, bias=False),
                                       nn.BatchNorm2d(planes))
        layers = [BasicBlock(self.in_planes, planes, stride, downsample)]
        self.in_planes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _cifar_resnet(depth: int) -> Callable[..., nn.Module]:
    def build(input_shape: Sequence[int], num_classes: int) -> nn.Module:
        if tuple(int(s) for s in input_shape) != (3, 32, 32):
            raise CertkitError(f"cifar_resnet{depth} needs 3 x 32 x 32 inputs, got {tuple(input_shape)}")
        return CifarResNet(depth, num_classes)
    build.__doc__ = f"CIFAR ResNet-{depth} (reference-checkpoint compatible)."
    return build


def checkerboard_mask(sample_shape: Sequence[int]) -> torch.Tensor:
    """The Dual RS split (Xia et al. ICLR 2024): within every 2x2 pixel block, the diagonal pixels (i + j even)
    form the left sub-image and the anti-diagonal ones the right; the same mask for every channel. Vectors
    alternate entries. Returns a float mask of ``sample_shape`` with 1 on the left sub-image."""
    shape = tuple(int(v) for v in sample_shape)
    if len(shape) >= 2:
        h, w = shape[-2], shape[-1]
        m = ((torch.arange(h)[:, None] + torch.arange(w)[None, :]) % 2 == 0).float()
        return m.expand(shape).clone()
    return (torch.arange(shape[0]) % 2 == 0).float()


class DualModel(nn.Module):
    """Two base classifiers, each seeing one checkerboard half of the input (the other half set to 0).

    Input (B, *shape); output logits (B, 2, K): [:, 0] from ``left`` on the left half, [:, 1] from ``right``.
    Noise added to the whole input reaches each branch only on its own half, so one draw gives the two branches
    independent noise of the same sigma, as Dual RS requires.
    """

    mask: torch.Tensor

    def __init__(self, left: nn.Module, right: nn.Module, sample_shape: Sequence[int]):
        super().__init__()
        self.left, self.right = left, right
        self.register_buffer("mask", checkerboard_mask(sample_shape), persistent=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.left(z * self.mask), self.right(z * (1 - self.mask))], dim=1)


def dual(input_shape: Sequence[int], num_classes: int, base_arch: str = "mlp",
         base_config: dict | None = None) -> nn.Module:
    """Dual RS model: two copies of ``base_arch`` (built with ``base_config``) on the checkerboard halves."""
    if base_arch == "dual":
        raise CertkitError("a dual model's branches cannot themselves be dual")
    mk = lambda: build_model(base_arch, input_shape, num_classes, **(base_config or {}))
    return DualModel(mk(), mk(), input_shape)


#: name -> builder(input_shape, num_classes, **config) -> nn.Module (without normalization).
def int_list(text: str) -> list[int]:
    """``"256,256"`` -> [256, 256] (the text of a comma list of positive integers).

    Raises:
        ValueError: not such a list.
    """
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"must be comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise ValueError(f"must be comma-separated integers >= 1, got {text!r}")
    return values


@dataclass
class MLPOptions:
    """Options of ``mlp`` (``certkit train --arch mlp``)."""

    hidden: str | None = option(None, "hidden widths, comma separated (default 256,256)", parse=int_list)
    bn: bool = option(False, "BatchNorm after every hidden layer")


@dataclass
class WidthOptions:
    """Options of the convolutional architectures with a base width."""

    width: int | None = option(None, "base width: channels of the first convolution (defaults: cnn and "
                               "resnet_small 16, cnn_7layer_bn and dm_large 64)")


#: name -> the options its builder takes beyond (input_shape, num_classes) (``certkit train --hidden`` etc.); an
#: architecture missing here takes none on the command line.
ARCH_OPTIONS: dict[str, type] = {"mlp": MLPOptions, "cnn": WidthOptions, "cnn_7layer_bn": WidthOptions,
                                 "dm_large": WidthOptions, "resnet_small": WidthOptions}

ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "mlp": mlp,
    "cnn": cnn,
    "cnn_a": cnn_a,
    "cnn_7layer_bn": cnn_7layer_bn,
    "dm_large": dm_large,
    "resnet_small": resnet_small,
    "cifar_resnet20": _cifar_resnet(20),
    "cifar_resnet110": _cifar_resnet(110),
    "dual": dual,
}


def build_model(arch: str, input_shape: Sequence[int], num_classes: int, **config) -> nn.Module:
    """Instantiate architecture ``arch`` for inputs of ``input_shape`` (no batch dim) and K classes.

    Raises:
        CertkitError: unknown architecture, bad config keys, or an input shape the architecture cannot take.
    """
    if arch not in ARCHITECTURES:
        raise CertkitError(f"unknown architecture {arch!r}: known are {', '.join(sorted(ARCHITECTURES))}")
    try:
        return ARCHITECTURES[arch](tuple(input_shape), int(num_classes), **config)
    except TypeError as e:
        raise CertkitError(f"bad configuration for architecture {arch}: {e}") from None
