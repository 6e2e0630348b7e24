"""Lipschitz-variance-margin randomized smoothing, LVM-RS (Delattre, Araujo, Barthelemy, Allauzen, ICLR 2024;
repo blaisedelattre/bridging_the_gap_rs).

Base output h = S(t * logits) with S = softmax or sparsemax and inverse temperature t; smoothed soft classifier
H(x) = E_e[h(x + e)], e ~ N(0, sigma^2 I), G(x) = argmax_c H_c(x).

ONE fixed classifier: (S, t) is chosen ONCE PER MODEL by :meth:`LVMSmoothing.calibrate` on held-out inputs that are
never certified (the largest mean predicted certified radius over the candidate grid, with their labels), and
recorded in the summary; every input is then certified for that one G_(S,t). (The reference, and certkit before
this, chose (S, t) per input from noise at that input: the deployed procedure is then input-dependent, and a point
inside one input's certified ball can be certified as another class -- Sukenik et al. ICML 2022.)

Per input: the class A is the argmax of the mean soft output on the n0 selection samples; on n fresh samples,
one-sided empirical Bernstein bounds (Maurer & Pontil 2009, Thm 4): a lower bound for H_A and upper bounds for the
K - 1 others, each at delta = alpha / K, so all hold jointly with probability >= 1 - alpha; pB_up = min(max upper
bound, 1 - pA_low). For K = 2 one bound at alpha suffices (H_B = 1 - H_A). Then
    R_Phi = sigma / 2 (PhiInv(pA_low) - PhiInv(pB_up))   (x -> PhiInv(H_c(x)) is 1/sigma-Lipschitz)
    R_Lip = sigma sqrt(pi / 2) (pA_low - pB_up)          (H_A - H_c is sqrt(2/pi)/sigma-Lipschitz)
and the certificate is max(R_Phi, R_Lip) (same bounds, no extra confidence cost); abstain if it is <= 0.
Soft outputs are computed in float64 (sparsemax at t = 1e7 breaks in float32).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import norm

from certkit.certify.smoothing.base import ABSTAIN, Certificate, SmoothingMethod, check_certify_args, register_smoothing
from certkit.certify.stats import empirical_bernstein_shift
from certkit.common.errors import CertkitError
from certkit.common.options import option

MAPS = ("softmax", "sparsemax")
#: the reference's temperature grid: {1} U linspace(0.1, 50, 100) U {1e7} (1e7 ~ a hard argmax vote)
DEFAULT_TEMPERATURES = tuple([1.0] + [float(v) for v in np.linspace(0.1, 50, 100)] + [1e7])


def sparsemax(z: torch.Tensor) -> torch.Tensor:
    """Sparsemax (Martins & Astudillo 2016) over the last dim: the Euclidean projection onto the simplex.
    Use float64 for large inputs (the support size must come out >= 1; it is clamped so it always does)."""
    zs, _ = torch.sort(z, dim=-1, descending=True)
    k = torch.arange(1, z.shape[-1] + 1, device=z.device, dtype=z.dtype)
    cums = zs.cumsum(-1)
    support = (1 + k * zs > cums).to(z.dtype)
    k_z = support.sum(-1, keepdim=True).clamp(min=1)
    tau = (torch.gather(cums, -1, k_z.long() - 1) - 1) / k_z
    return torch.clamp(z - tau, min=0)


def simplex_map(name: str, t: float, logits: torch.Tensor) -> torch.Tensor:
    """S(t * logits): probability vectors (..., K) in [0, 1], computed and returned in float64."""
    z = logits.double() * t
    if name == "softmax":
        return torch.softmax(z, dim=-1)
    if name == "sparsemax":
        return sparsemax(z)
    raise CertkitError(f"unknown simplex map {name!r}: use softmax or sparsemax")


def lvm_radius(pA_low: float, pB_up: float, sigma: float) -> tuple[float, float]:
    """(R_Phi, R_Lip) for bounds pA_low, pB_up of the smoothed soft output."""
    pA_low, pB_up = min(max(pA_low, 0.0), 1.0), min(max(pB_up, 0.0), 1.0)
    r_phi = sigma / 2 * (float(norm.ppf(pA_low)) - float(norm.ppf(pB_up)))
    r_lip = sigma * math.sqrt(math.pi / 2) * (pA_low - pB_up)
    return r_phi, r_lip


def lvm_bounds(mean: np.ndarray, var: np.ndarray, A: int, n: int, alpha: float) -> tuple[float, float]:
    """(pA_low, pB_up) from the means and sample variances (K,) of the n certification samples (module docstring)."""
    K = mean.shape[0]
    if K == 2:
        pA = float(mean[A] - empirical_bernstein_shift(var[A], n, alpha))
        return pA, 1.0 - pA
    shift = empirical_bernstein_shift(var, n, alpha / K)
    pA = float(mean[A] - shift[A])
    pB = float(np.delete(mean + shift, A).max())
    return pA, min(pB, 1.0 - pA)


def predicted_radius(mean: np.ndarray, var: np.ndarray, n: int, alpha: float, sigma: float) -> np.ndarray:
    """The radius the n-sample bounds would give if the n samples had these means / variances (..., K): used to
    choose (S, t) on calibration inputs. Returns (...) with the argmax class of each row as A."""
    K = mean.shape[-1]
    A = mean.argmax(-1)
    mA = np.take_along_axis(mean, A[..., None], -1)[..., 0]
    vA = np.take_along_axis(var, A[..., None], -1)[..., 0]
    if K == 2:
        pA = mA - empirical_bernstein_shift(vA, n, alpha)
        pB = 1 - pA
    else:
        shift = empirical_bernstein_shift(var, n, alpha / K)
        pA = mA - np.take_along_axis(shift, A[..., None], -1)[..., 0]
        upper = mean + shift
        np.put_along_axis(upper, A[..., None], -np.inf, -1)
        pB = np.minimum(upper.max(-1), 1 - pA)
    pA, pB = np.clip(pA, 0.0, 1.0), np.clip(pB, 0.0, 1.0)
    with np.errstate(invalid="ignore"):
        r_phi = np.nan_to_num(sigma / 2 * (norm.ppf(pA) - norm.ppf(pB)), nan=-np.inf)
    return np.maximum(r_phi, sigma * math.sqrt(math.pi / 2) * (pA - pB))


@register_smoothing
class LVMSmoothing(SmoothingMethod):
    """LVM-RS on a :class:`~certkit.certify.sampling.NoiseSampler` (any classifier, zero-shot), for ONE fixed
    (map, t): given here, or chosen once per model by :meth:`calibrate` on held-out inputs.

    Args:
        map_name, t: the simplex map and inverse temperature (None until calibrated).
    """

    name = "lvm"
    label = "LVM-RS"
    help = ("Lipschitz-variance-margin smoothing, Delattre et al. ICLR 2024 (any classifier; simplex map and "
            "temperature chosen once per model on held-out data, --calibration)")
    procedure = ("one fixed smoothed classifier: simplex map and temperature chosen once per model on held-out "
                 "calibration inputs; per input the class on the n0 selection samples, empirical Bernstein bounds "
                 "at alpha/K (alpha for K = 2) on the n certification samples")
    needs_calibration = True

    @dataclass
    class Options:
        """Where the simplex map and temperature are chosen, once per model (never on certified inputs)."""

        calibration_split: str = option("train", "split whose LAST --calibration-size inputs choose the simplex "
                                        "map and temperature once per model (they must not be certified in the "
                                        "same run)", choices=("train", "test"))
        calibration_size: int = option(100, "held-out inputs of the calibration")
        calibration_noise: int = option(1000, "noisy copies per held-out input")
        calibration_dataset: str | None = option(None, "another data set for the held-out inputs (digits, mnist, "
                                                 "cifar10, npz; default: --dataset)")
        calibration_path: str | None = option(None, "its directory or file")

    def __init__(self, sampler, map_name: str | None = None, t: float | None = None, sigma: float | None = None):
        super().__init__(sampler, sigma)
        if map_name is not None and map_name not in MAPS:
            raise CertkitError(f"unknown simplex map {map_name!r}: use softmax or sparsemax")
        self.map_name, self.t = map_name, (None if t is None else float(t))
        self.last_selection: dict = {}
        self.calibration: dict = {}

    def _soft(self, x, num, generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Sum and sum of squares (K,) in float64 of the soft outputs on ``num`` noisy copies of x."""
        assert self.map_name is not None and self.t is not None  # certify refuses an uncalibrated method
        s1: torch.Tensor | None = None
        s2: torch.Tensor | None = None
        total: torch.Tensor | None = None
        for z in self.sampler.logits_stream(x, num, generator):
            if z.dim() != 2:
                raise CertkitError("LVM-RS needs a model returning logits of shape (batch, classes)")
            h = simplex_map(self.map_name, self.t, z)
            a, b, c = h.sum(0), (h * h).sum(0), z.sum(dtype=torch.float64)
            if s1 is None or s2 is None or total is None:
                s1, s2, total = a, b, c
            else:
                s1, s2, total = s1 + a, s2 + b, total + c
        if s1 is None or s2 is None or total is None:
            raise CertkitError("the number of samples must be >= 1")
        if not bool(torch.isfinite(total)):  # NaN/inf in any logit makes the sum non-finite
            raise CertkitError("the model produced NaN or inf logits on noisy inputs; no certificate is issued")
        return s1.cpu(), s2.cpu()

    def calibrate(self, x: torch.Tensor, y: torch.Tensor, num: int, n: int, alpha: float,
                  generator: torch.Generator, maps=MAPS, temperatures=DEFAULT_TEMPERATURES) -> dict:
        """Choose (map, t) ONCE for this model: the candidate with the largest mean predicted certified radius
        (0 where the predicted class is wrong) over held-out inputs x (N, *shape) with labels y (N,), each seen
        through ``num`` noisy copies, for certification with n samples at level alpha. Returns the record kept in
        the summary.

        Raises:
            CertkitError: fewer than 2 noisy copies, no inputs, NaN/inf logits.
        """
        if num < 2 or len(x) == 0:
            raise CertkitError("LVM-RS calibration needs held-out inputs and at least 2 noisy copies of each")
        candidates = [(m, float(t)) for m in maps for t in temperatures]
        score = np.zeros(len(candidates))
        for i in range(len(x)):
            z = torch.cat([zz.double().cpu() for zz in self.sampler.logits_stream(x[i], num, generator)])
            if z.dim() != 2 or not torch.isfinite(z).all():
                raise CertkitError("LVM-RS needs finite logits of shape (batch, classes) on noisy inputs")
            for name in maps:
                ts = torch.tensor([t for m, t in candidates if m == name], dtype=torch.float64)
                h = simplex_map(name, 1.0, z.unsqueeze(0) * ts.view(-1, 1, 1)).numpy()    # (T, num, K)
                mean, var = h.mean(1), h.var(1, ddof=1)
                r = predicted_radius(mean, var, n, alpha, self.sigma)
                r = np.where(mean.argmax(-1) == int(y[i]), np.maximum(r, 0.0), 0.0)
                idx = [k for k, (m, _) in enumerate(candidates) if m == name]
                score[idx] += r
        best = int(np.argmax(score))
        self.map_name, self.t = candidates[best]
        self.calibration = {"map": self.map_name, "t": self.t, "inputs": int(len(x)), "noisy_copies": int(num),
                            "mean_predicted_radius": float(score[best] / len(x)), "candidates": len(candidates)}
        return self.calibration

    def certify(self, x: torch.Tensor, n0: int, n: int, alpha: float,
                generator: torch.Generator | None = None) -> Certificate:
        """Class on n0 samples, bounds on n fresh samples, for the fixed (map, t); see the module docstring.

        Raises:
            CertkitError: not calibrated, n0 < 1 or n < 2 (variances need two samples), bad alpha, NaN/inf logits.
        """
        check_certify_args(n0, n, alpha)
        generator = self.generator(x, generator)
        if self.map_name is None or self.t is None:
            raise CertkitError("LVM-RS certifies one fixed classifier: calibrate() it (or give map and t) first")
        if n < 2:
            raise CertkitError("LVM-RS needs n >= 2 (sample variances)")
        s1, _ = self._soft(x, n0, generator)
        A = int(s1.argmax())
        s1, s2 = self._soft(x, n, generator)                  # fresh certification samples
        mean = (s1 / n).numpy()
        var = np.clip(((s2 - n * (s1 / n) ** 2) / (n - 1)).numpy(), 0.0, None)
        pA, pB = lvm_bounds(mean, var, A, n, alpha)
        r_phi, r_lip = lvm_radius(pA, pB, self.sigma)
        radius = max(r_phi, r_lip)
        self.last_selection = {"map": self.map_name, "t": self.t, "class": A, "pA_lower": pA, "pB_upper": pB,
                               "R_Phi": r_phi, "R_Lip": r_lip}
        if not radius > 0:
            return Certificate(ABSTAIN, 0.0, pA, -1, n0 + n)
        return Certificate(A, radius, pA, -1, n0 + n)
