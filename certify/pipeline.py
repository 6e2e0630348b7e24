"""End-to-end certification of a dataset split: what ``certkit certify`` / ``certkit predict`` run.

Python users call :func:`run_certify` / :func:`run_predict` with a :class:`CertifyConfig`; the CLI is a thin
layer over them.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import torch

from certkit.certify.gaussian import ABSTAIN, GaussianSmoothing, check_certify_args
from certkit.certify.report import COLUMNS, summarize
from certkit.certify.runner import run_inputs
from certkit.certify.sampling import NoiseSampler, input_generator
from certkit.common.device import resolve_device
from certkit.common.results import ResultWriter
from certkit.common.errors import CertkitError
from certkit.datasets import Dataset, load_dataset, select_indices
from certkit.models import LoadedModel, load_model
from certkit.models.checks import fit_data_to_model

PREDICT_COLUMNS = ("idx", "label", "predict", "correct", "time")


@dataclass
class CertifyConfig:
    """Options of a certification run (units: sigma and radii in the data range, [0,1] pixels).

    ``sigma=None`` uses the training sigma recorded in the checkpoint (an error when none is recorded).
    """

    out: str
    model: str | None = None
    weights: str | None = None
    allow_pickle: bool = False
    dataset: str = "digits"
    data_path: str | None = None
    split: str = "test"
    sigma: float | None = None
    n0: int = 100
    n: int = 100_000
    alpha: float = 0.001
    batch: int = 1000
    skip: int = 1
    max_inputs: int | None = None
    seed: int = 0
    device: str = "auto"
    compile: bool = False
    amp: bool = False
    resume: bool = False
    overwrite: bool = False
    notes: list = field(default_factory=list)  # warnings raised while preparing, for the CLI to show


@dataclass
class Prepared:
    """Model, data and the sampler of a run, after every pre-flight check passed."""

    model: LoadedModel
    data: Dataset
    sampler: NoiseSampler
    indices: list
    sigma: float
    device: torch.device


def prepare(cfg: CertifyConfig) -> Prepared:
    """Load model and data, check that they fit, resolve sigma and device, build the sampler.

    Raises:
        CertkitError: any bad input (files, options, model/data mismatch).
    """
    check_certify_args(cfg.n0, cfg.n, cfg.alpha)
    device = resolve_device(cfg.device)
    if cfg.amp and device.type != "cuda":
        raise CertkitError("--amp needs a CUDA device (it runs the model in bfloat16 under autocast)")
    model = load_model(cfg.model, cfg.weights, cfg.allow_pickle)
    data = load_dataset(cfg.dataset, cfg.data_path, cfg.split)
    data = fit_data_to_model(model, data)
    sigma = cfg.sigma if cfg.sigma is not None else model.train_sigma
    if sigma is None:
        raise CertkitError("--sigma is required: the model does not record the noise level it was trained with")
    if not sigma > 0:
        raise CertkitError(f"sigma must be > 0, got {sigma}")
    if model.train_sigma is not None and abs(model.train_sigma - sigma) > 1e-12:
        msg = (f"certifying at sigma={sigma:g} but the model was trained with sigma={model.train_sigma:g}; "
               f"certificates stay valid, but accuracy is usually lower away from the training sigma")
        cfg.notes.append(msg)
        warnings.warn(msg, stacklevel=2)
    module = model.module.to(device).eval()
    if cfg.compile:
        module = torch.compile(module, dynamic=False)
        try:
            with torch.inference_mode():
                module(data.x[:2].to(device))
        except Exception as e:  # compilation failures surface at the first call
            raise CertkitError(f"torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0][:160]}); "
                               f"run without --compile") from None
    sampler = NoiseSampler(module, sigma, cfg.batch, device, cfg.amp)
    indices = select_indices(len(data), cfg.skip, cfg.max_inputs)
    return Prepared(model, data, sampler, indices, float(sigma), device)


def _run_config(cfg: CertifyConfig, p: Prepared, method: str) -> dict:
    """The parameters that must match for ``--resume`` to continue a file (not skip/max/device/batch size)."""
    return {"method": method, "model": str(p.model.source), "dataset": p.data.name, "split": p.data.split,
            "data_source": p.data.source, "sigma": p.sigma, "n0": cfg.n0, "n": cfg.n, "alpha": cfg.alpha,
            "seed": cfg.seed}


def _summary_extra(cfg: CertifyConfig, p: Prepared, rows: list, method: str, wall: float) -> dict:
    return {"method": method, "sigma": p.sigma, "n0": cfg.n0, "n": cfg.n, "alpha": cfg.alpha,
            "norm": "L2", "radius_units": "data range ([0,1] pixels)",
            "model": {"source": p.model.source, "kind": p.model.kind, "arch": p.model.arch,
                      "train_sigma": p.model.train_sigma},
            "inputs": {**p.data.describe(), "skip": cfg.skip, "max": cfg.max_inputs,
                       "selected": len(p.indices), "certified": len(rows),
                       "full_split": cfg.skip == 1 and len(rows) == len(p.data)},
            "seed": cfg.seed, "device": str(p.device), "batch": cfg.batch, "compile": cfg.compile,
            "amp": cfg.amp, "tsv": str(cfg.out), "wall_seconds_this_run": wall}


CERTIFY_METHODS = ("gaussian", "dual", "lvm")
SELECTION_NOTE = {"lvm": "simplex map, temperature and class chosen on the n0 selection samples only; "
                         "empirical Bernstein bounds at alpha/K on the n certification samples",
                  "dual": "Clopper-Pearson at alpha/2 per branch; R = sigma/sqrt(2) (PhiInv(pA_l) + PhiInv(pA_r))",
                  "gaussian": "one-sided Clopper-Pearson; R = sigma PhiInv(pA_lower)"}


def smoothing_for(method: str, sampler: NoiseSampler):
    """The smoothed classifier of ``method`` (gaussian, dual, lvm) on a sampler."""
    from certkit.certify.dual import DualSmoothing
    from certkit.certify.lvm import LVMSmoothing

    kinds = {"gaussian": GaussianSmoothing, "dual": DualSmoothing, "lvm": LVMSmoothing}
    if method not in kinds:
        raise CertkitError(f"unknown certification method {method!r}: choose from {', '.join(CERTIFY_METHODS)}")
    return kinds[method](sampler)


def _check_heads(p: Prepared, method: str) -> None:
    with torch.inference_mode():
        out = p.sampler.model(p.data.x[:1].to(p.device))
    if method == "dual" and (out.dim() != 3 or out.shape[1] != 2):
        raise CertkitError("--method dual needs a Dual RS checkpoint with two branches "
                           "(certkit train --method dual --init-from MODEL)")
    if method != "dual" and out.dim() != 2:
        raise CertkitError(f"this is a Dual RS checkpoint: certify it with --method dual (not {method})")


def run_certify(cfg: CertifyConfig, quiet: bool = False, method: str = "gaussian") -> tuple[list[dict], dict]:
    """Certify every selected input with ``method`` (gaussian: CERTIFY of Cohen et al. 2019; dual: Dual RS; lvm:
    LVM-RS), writing ``cfg.out`` row by row (resumable).

    Returns:
        (rows, summary) where summary has method, sigma, n0, n, alpha, n_inputs, certified_accuracy
        {"<radius>": fraction}, abstain_rate, average_certified_radius, seconds and a description of the inputs.
    """
    t0 = time.perf_counter()
    p = prepare(cfg)
    _check_heads(p, method)
    writer = ResultWriter(cfg.out, _run_config(cfg, p, method), COLUMNS, cfg.resume, cfg.overwrite)
    smoothed = smoothing_for(method, p.sampler)

    def certify_one(x: torch.Tensor, idx: int) -> tuple[int, float]:
        cert = smoothed.certify(x, cfg.n0, cfg.n, cfg.alpha, input_generator(cfg.seed, idx, p.device))
        return cert.prediction, cert.radius

    rows = run_inputs(certify_one, p.data, p.indices, writer, quiet, desc=f"certify {method}")
    summary = summarize(rows)
    summary.update(_summary_extra(cfg, p, rows, method, time.perf_counter() - t0))
    summary["procedure"] = SELECTION_NOTE[method]
    return rows, summary


def run_predict(cfg: CertifyConfig, quiet: bool = False) -> tuple[list[dict], dict]:
    """PREDICT every selected input (n samples each, abstain by binomial test at level alpha)."""
    t0 = time.perf_counter()
    p = prepare(cfg)
    writer = ResultWriter(cfg.out, _run_config(cfg, p, "gaussian-predict"), PREDICT_COLUMNS, cfg.resume,
                          cfg.overwrite)
    smoothed = GaussianSmoothing(p.sampler)

    def predict_one(x: torch.Tensor, idx: int) -> tuple[int, float]:
        return smoothed.predict(x, cfg.n, cfg.alpha, input_generator(cfg.seed, idx, p.device)), 0.0

    rows = run_inputs(predict_one, p.data, p.indices, writer, quiet, desc="predict")
    n = max(len(rows), 1)
    summary = {"n_inputs": len(rows), "accuracy": sum(int(r["correct"]) for r in rows) / n,
               "abstain_rate": sum(int(r["predict"]) == ABSTAIN for r in rows) / n,
               "seconds": float(sum(float(r["time"]) for r in rows))}
    summary.update(_summary_extra(cfg, p, rows, "gaussian-predict", time.perf_counter() - t0))
    summary.pop("n0")
    return rows, summary


__all__ = ["CERTIFY_METHODS", "CertifyConfig", "PREDICT_COLUMNS", "Prepared", "prepare",
           "run_certify", "run_predict", "smoothing_for"]
