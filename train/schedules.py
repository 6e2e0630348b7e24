"""Perturbation-radius and loss-mixing schedules of certified training.

Sources: the smoothed eps scheduler of auto_LiRPA (eps_scheduler.py, SmoothedScheduler) / DeepMind's
``smooth_schedule`` (Gowal et al. 2018); the kappa and beta schedules of CROWN-IBP (Zhang et al. ICLR 2020).
Steps are 0-based global batch indices (s = global batch index - 1 in the papers' notation); epochs are 1-based.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from certkit.common.errors import CertkitError


@dataclass
class EpsSchedule:
    """eps(step) for a ramp that starts at epoch ``start`` and lasts ``length`` epochs.

    kind ``smoothed``: 0 until T0 = (start-1) E; a (s - T0)^p until Tm = T0 + floor((T1 - T0) mid); then linear up to
    eps_max at T1 = (start+length-1) E with the slope matching the polynomial at Tm (p = 4, mid = 0.25).
    kind ``linear``: 0 until T0, linear to eps_max at T1. E = batches per epoch. eps is constant eps_max after T1.
    """

    eps_max: float
    start: int
    length: int
    batches_per_epoch: int
    kind: str = "smoothed"
    mid: float = 0.25
    p: float = 4.0

    def __post_init__(self):
        if self.kind not in ("smoothed", "linear"):
            raise CertkitError(f"unknown eps schedule {self.kind!r}: use smoothed or linear")
        if self.start < 1 or self.length < 0 or self.batches_per_epoch < 1 or not self.eps_max >= 0:
            raise CertkitError("eps schedule needs start >= 1, length >= 0, eps >= 0")
        E = self.batches_per_epoch
        self.T0 = (self.start - 1) * E
        self.T1 = (self.start + self.length - 1) * E
        self.Tm = self.T0 + math.floor((self.T1 - self.T0) * self.mid)
        t = (self.Tm - self.T0) ** (self.p - 1)
        denom = self.p * t * (self.T1 - self.Tm) + (self.Tm - self.T0) * t
        self.a = self.eps_max / denom if denom > 0 else 0.0
        self.eps_m = self.a * (self.Tm - self.T0) ** self.p

    def __call__(self, step: int) -> float:
        s = step
        if s <= self.T0 or self.eps_max == 0:
            return 0.0 if s <= self.T0 or self.T1 > self.T0 else self.eps_max
        if s >= self.T1:
            return self.eps_max
        if self.kind == "linear":
            return self.eps_max * (s - self.T0) / (self.T1 - self.T0)
        if s < self.Tm:
            return self.a * (s - self.T0) ** self.p
        return min(self.eps_m + (self.eps_max - self.eps_m) * (s - self.Tm) / (self.T1 - self.Tm), self.eps_max)


def kappa_at(eps_t: float, eps_max: float, kappa_final: float) -> float:
    """Weight of the natural loss: 1 - (1 - kappa_final) eps_t / eps_max (CROWN-IBP; 1 -> kappa_final)."""
    return 1.0 if eps_max <= 0 else 1.0 - (1.0 - kappa_final) * eps_t / eps_max


def beta_at(eps_t: float, eps_max: float, beta_final: float) -> float:
    """Weight of the CROWN-IBP bound: 1 - (1 - beta_final) eps_t / eps_max (CROWN-IBP; 1 -> beta_final)."""
    return 1.0 if eps_max <= 0 else 1.0 - (1.0 - beta_final) * eps_t / eps_max
