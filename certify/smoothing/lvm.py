"""Lipschitz-variance-margin randomized smoothing, LVM-RS (Delattre, Araujo, Barthelemy, Allauzen, ICLR 2024;
repo blaisedelattre/bridging_the_gap_rs).

Base output h = S(t * logits) with S = softmax or sparsemax and inverse temperature t; smoothed soft classifier
H(x) = E_e[h(x + e)], e ~ N(0, sigma^2 I). On n fresh samples, one-sided empirical Bernstein bounds
(Maurer & Pontil 2009, Thm 4) at delta = alpha / K: a lower bound for the selected class A and upper bounds for the
K - 1 others, so all K statements hold jointly with probability >= 1 - alpha. With pA_low and pB_up = max upper:
    R_Phi = sigma / 2 (PhiInv(pA_low) - PhiInv(pB_up))   (x -> PhiInv(H_c(x)) is 1/sigma-Lipschitz)
    R_Lip = sigma sqrt(pi / 2) (pA_low - pB_up)          (H_A - H_c is sqrt(2/pi)/sigma-Lipschitz)
and the certificate is max(R_Phi, R_Lip) (same bounds, no extra confidence cost); abstain if it is <= 0.

Selection (sound, unlike the reference, which takes the best radius over ~409 candidates on the certification
samples themselves): the map, t and class A are chosen on the n0 SELECTION samples only, as the candidate whose
predicted radius (the formulas above with the selection samples' means and variances and the n-sample
deviation) is largest. The certification samples are drawn afterwards and never influence the choice.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy.stats import norm

from certkit.certify.smoothing.base import (ABSTAIN, Certificate, SmoothingMethod, check_certify_args,
                                            register_smoothing)
from certkit.certify.stats import empirical_bernstein_shift
from certkit.common.errors import CertkitError

MAPS = ("softmax", "sparsemax")
#: the reference's temperature grid: {1} U linspace(0.1, 50, 100) U {1e7} (1e7 ~ a hard argmax vote)
DEFAULT_TEMPERATURES = tuple([1.0] + [float(v) for v in np.linspace(0.1, 50, 100)] + [1e7])


def sparsemax(z: torch.Tensor) -> torch.Tensor:
    """Sparsemax (Martins & Astudillo 2016) over the last dim: the Euclidean projection onto the simplex."""
    zs, _ = torch.sort(z, dim=-1, descending=True)
    k = torch.arange(1, z.shape[-1] + 1, device=z.device, dtype=z.dtype)
    cums = zs.cumsum(-1)
    support = (1 + k * zs > cums).to(z.dtype)
    k_z = support.sum(-1, keepdim=True)
    tau = (torch.gather(cums, -1, k_z.long() - 1) - 1) / k_z
    return torch.clamp(z - tau, min=0)


def simplex_map(name: str, t: float, logits: torch.Tensor) -> torch.Tensor:
    """S(t * logits): probability vectors (..., K) in [0, 1], in the dtype of ``logits``."""
    z = logits * t
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


def _bounds(mean: np.ndarray, var: np.ndarray, A: int, n: int, alpha: float) -> tuple[float, float]:
    K = mean.shape[0]
    shift = empirical_bernstein_shift(var, n, alpha / K)
    others = np.delete(mean + shift, A)
    return float(mean[A] - shift[A]), float(others.max()) if others.size else 0.0


@register_smoothing
class LVMSmoothing(SmoothingMethod):
    """LVM-RS on a :class:`~certkit.certify.sampling.NoiseSampler` (any classifier, zero-shot).

    Args:
        maps, temperatures: the candidate set searched on the selection samples.
    """

    name = "lvm"
    label = "LVM-RS"
    help = "Lipschitz-variance-margin smoothing, Delattre et al. ICLR 2024 (any classifier)"
    procedure = ("simplex map, temperature and class chosen on the n0 selection samples only; "
                 "empirical Bernstein bounds at alpha/K on the n certification samples")

    def __init__(self, sampler, maps=MAPS, temperatures=DEFAULT_TEMPERATURES):
        super().__init__(sampler)
        self.candidates = [(m, float(t)) for m in maps for t in temperatures]
        self.last_selection: dict = {}

    def _logits(self, x, num, generator) -> torch.Tensor:
        out = torch.cat([z.double().cpu() for z in self.sampler.logits_stream(x, num, generator)])  # small: n0 rows
        if out.dim() != 2:
            raise CertkitError("LVM-RS needs a model returning logits of shape (batch, classes)")
        if not torch.isfinite(out).all():
            raise CertkitError("the model produced NaN or inf logits on noisy inputs; no certificate is issued")
        return out

    def select(self, logits0: torch.Tensor, n: int, alpha: float) -> tuple[str, float, int, float]:
        """Choose (map, t, class A) from the n0 selection logits only: the largest predicted radius.

        All temperatures of a map are evaluated in one batched call (T, n0, K)."""
        best = None
        K = logits0.shape[1]
        for name in dict.fromkeys(m for m, _ in self.candidates):
            ts = torch.tensor([t for m, t in self.candidates if m == name], dtype=torch.float64)
            h = simplex_map(name, 1.0, logits0.double().unsqueeze(0) * ts.view(-1, 1, 1)).numpy()  # (T, n0, K)
            mean, var = h.mean(1), h.var(1, ddof=1)
            A = mean.argmax(1)
            shift = empirical_bernstein_shift(var, n, alpha / K)
            rows = np.arange(len(ts))
            pA = np.clip(mean[rows, A] - shift[rows, A], 0.0, 1.0)
            upper = mean + shift
            upper[rows, A] = -np.inf
            pB = np.clip(upper.max(1), 0.0, 1.0)
            r_phi = self.sigma / 2 * (norm.ppf(pA) - norm.ppf(pB))
            r_lip = self.sigma * math.sqrt(math.pi / 2) * (pA - pB)
            r = np.maximum(np.nan_to_num(r_phi, nan=-np.inf), r_lip)
            k = int(r.argmax())
            if best is None or r[k] > best[3]:
                best = (name, float(ts[k]), int(A[k]), float(r[k]))
        return best

    def certify(self, x: torch.Tensor, n0: int, n: int, alpha: float, generator: torch.Generator) -> Certificate:
        """Select (map, t, A) on n0 samples, then bound on n fresh samples; see the module docstring.

        Raises:
            CertkitError: n0 < 2 or n < 2 (variances need two samples), bad alpha, NaN/inf logits.
        """
        check_certify_args(n0, n, alpha)
        if n0 < 2 or n < 2:
            raise CertkitError("LVM-RS needs n0 >= 2 and n >= 2 (sample variances)")
        name, t, A, predicted = self.select(self._logits(x, n0, generator), n, alpha)
        s1 = s2 = total = None
        for z in self.sampler.logits_stream(x, n, generator):  # fresh certification samples
            h = simplex_map(name, t, z)                       # float32 values in [0, 1]
            a, b, c = h.sum(0, dtype=torch.float64), (h * h).sum(0, dtype=torch.float64), z.sum(dtype=torch.float64)
            s1, s2, total = (a, b, c) if s1 is None else (s1 + a, s2 + b, total + c)
        if not bool(torch.isfinite(total)):  # NaN/inf in any logit makes the sum non-finite
            raise CertkitError("the model produced NaN or inf logits on noisy inputs; no certificate is issued")
        s1, s2 = s1.cpu(), s2.cpu()
        mean = (s1 / n).numpy()
        var = np.clip(((s2 - n * (s1 / n) ** 2) / (n - 1)).numpy(), 0.0, None)
        pA, pB = _bounds(mean, var, A, n, alpha)
        r_phi, r_lip = lvm_radius(pA, pB, self.sigma)
        radius = max(r_phi, r_lip)
        self.last_selection = {"map": name, "t": t, "class": A, "predicted_radius": predicted, "pA_lower": pA,
                               "pB_upper": pB, "R_Phi": r_phi, "R_Lip": r_lip}
        if not radius > 0:
            return Certificate(ABSTAIN, 0.0, pA, -1)
        return Certificate(A, radius, pA, -1)
