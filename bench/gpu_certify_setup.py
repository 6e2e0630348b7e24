"""Inputs of bench/gpu_check.sh: a CIFAR ResNet-110 certkit checkpoint with random weights (throughput does not
depend on them) and 10 random CIFAR-shaped images as an npz data set.

    python bench/gpu_certify_setup.py DIR
"""
import sys
from pathlib import Path

import numpy as np
import torch

from certkit.models import build_model, save_checkpoint
from certkit.models.zoo import CIFAR10_MEAN, CIFAR10_STD


def main():
    out = Path(sys.argv[1])
    torch.manual_seed(0)
    net = build_model("cifar_resnet110", (3, 32, 32), 10)
    save_checkpoint(out / "resnet110.pt", net, "cifar_resnet110", {}, (3, 32, 32), 10,
                    {"mean": list(CIFAR10_MEAN), "std": list(CIFAR10_STD)}, metadata={"sigma": 0.25})
    rng = np.random.default_rng(0)
    np.savez(out / "cifar.npz", x=rng.random((10, 3, 32, 32), dtype=np.float32), y=np.arange(10))


if __name__ == "__main__":
    main()
