"""The mixing network of adaptive smoothing: a per-input weight w(x) for h = (1 - w) p^g + w p^r.

Bai, Anderson, Kim, Sojoudi (SIMODS 2024, "Improving the Accuracy-Robustness Trade-Off of Classifiers via Adaptive
Smoothing") let a small network choose the mixing weight per input from the two classifiers' features and train it
with attacks on the mixed classifier. certkit's small version (trained by ``certkit train --method mixing``):

    w(x) = floor + (1 - floor) * sigmoid(MLP([softmax g(x), softmax f(x)]))      (B, 2K) -> (B,)

with g the standard classifier and f the robust BASE classifier (its clean softmax: one forward pass, a cheap
feature; the smoothed p^r itself enters only the mixture). ``floor`` is fixed when the network is created.

Certificate: for ANY weights w(x') >= floor > 1/2, h_y - h_j >= 2 w p^r_y - 1 >= 2 floor p^r_y - 1 (the fixed-weight
argument of certify/smoothing/adaptive.py, monotone in w), so the fixed-weight radius at w = floor holds for the
network's mixture. With floor <= 1/2 nothing is certified: the mixture is an empirical classifier only.

A mixing checkpoint is a certkit checkpoint (``torch.load(weights_only=True)``) with ``"task": "mixing"``.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from certkit.common.errors import CertkitError
from certkit.models.checkpoint import FORMAT, _load_state, load_checkpoint_file, save_checkpoint

TASK = "mixing"


class MixingNetwork(nn.Module):
    """w(x) from the two classifiers' probabilities (module docstring).

    Args:
        num_classes: K; hidden: width of the one hidden layer; floor: the least weight of the robust part, in [0, 1).
    forward(p_g (B, K), p_f (B, K)) -> w (B,) in [floor, 1].
    Raises:
        CertkitError: floor outside [0, 1), K < 2 or hidden < 1.
    """

    def __init__(self, num_classes: int, hidden: int = 32, floor: float = 0.0):
        super().__init__()
        if not 0.0 <= floor < 1.0 or num_classes < 2 or hidden < 1:
            raise CertkitError(f"mixing network needs 0 <= floor < 1, K >= 2, hidden >= 1 (got {floor}, "
                               f"{num_classes}, {hidden})")
        self.floor = float(floor)
        self.num_classes = int(num_classes)
        self.net = nn.Sequential(nn.Linear(2 * num_classes, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, p_g: torch.Tensor, p_f: torch.Tensor) -> torch.Tensor:
        return self.floor + (1 - self.floor) * torch.sigmoid(self.net(torch.cat([p_g, p_f], 1))).squeeze(1)

    @property
    def certifies(self) -> bool:
        """True when the floor exceeds 1/2 (a certificate exists at w = floor)."""
        return self.floor > 0.5


def save_mixing(path: str | Path, net: MixingNetwork, num_classes: int, hidden: int, metadata: dict,
                extra: dict | None = None) -> None:
    """Write a mixing-network checkpoint (atomic, like every certkit checkpoint)."""
    save_checkpoint(path, net, "mixing_mlp", {"hidden": hidden, "floor": net.floor}, [2 * num_classes], num_classes,
                    None, metadata=metadata, extra={"task": TASK, **(extra or {})})


def load_mixing(path: str | Path) -> tuple[MixingNetwork, dict]:
    """(network in eval mode, metadata) of a mixing checkpoint.

    Raises:
        CertkitError: missing, corrupt or other kind of file; weights that do not fit.
    """
    ckpt = load_checkpoint_file(Path(path))
    if not (isinstance(ckpt, dict) and ckpt.get("format") == FORMAT and ckpt.get("task") == TASK):
        raise CertkitError(f"{path} is not a certkit mixing network (train one with certkit train --method mixing)")
    try:
        config = dict(ckpt.get("arch_config") or {})
        net = MixingNetwork(int(ckpt["num_classes"]), int(config.get("hidden", 32)), float(config.get("floor", 0)))
    except (KeyError, TypeError, ValueError) as e:
        raise CertkitError(f"{path}: malformed mixing checkpoint ({e})") from None
    _load_state(net, ckpt["state_dict"], str(path))
    return net.eval(), dict(ckpt.get("metadata") or {})
