"""IBP initialization (Shi, Wang, Zhang, Yi, Hsieh, NeurIPS 2021, "Fast certified robust training with short
warmup", Sec. 4.1): weights of every Linear / Conv2d except the last layer ~ N(0, sigma^2) with
sigma = sqrt(2 pi) / fan_in, which keeps the ratio of IBP box sizes of consecutive layers near 1 at init.
Biases keep torch's default initialization."""
from __future__ import annotations

import math

import torch
from torch import nn


def ibp_init(model: nn.Module, generator: torch.Generator | None = None) -> list[str]:
    """Re-initialize ``model`` in place; returns the names of the re-initialized layers (all but the last)."""
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    done = []
    with torch.no_grad():
        for name, m in layers[:-1]:
            fan_in = m.weight[0].numel()
            std = math.sqrt(2 * math.pi) / fan_in
            m.weight.copy_(torch.randn(m.weight.shape, generator=generator) * std)
            done.append(name)
    return done
