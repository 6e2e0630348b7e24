"""``certkit certify`` and ``certkit predict``: randomized smoothing over a dataset split, one TSV row per input."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
from tqdm import tqdm

from certkit.certify.report import COLUMNS, summarize
from certkit.certify.sampling import NoiseSampler, input_generator
from certkit.certify.smoothing import ABSTAIN, check_certify_args, smoothing_method
from certkit.certify.smoothing.gaussian import GaussianSmoothing
from certkit.common.errors import CertkitError
from certkit.runs.config import DatasetRunConfig, Prepared, open_results, prepare, resolve_sigma

PREDICT_COLUMNS = ("idx", "label", "predict", "correct", "time")


@dataclass
class CertifyConfig(DatasetRunConfig):
    """Options of a smoothing run (units: sigma and radii in the data range, [0,1] pixels).

    ``sigma=None`` uses the training sigma recorded in the checkpoint (an error when none is recorded); ``method`` is
    a registered smoothing method (certify.smoothing); ``batch`` noisy copies go through the model per forward pass.
    """

    method: str = "gaussian"
    sigma: float | None = None
    n0: int = 100
    n: int = 100_000
    alpha: float = 0.001
    batch: int = 1000
    compile: bool = False
    amp: bool = False


def default_out(cfg: CertifyConfig, command: str, *extra: str) -> str:
    """``cfg.out``, or a new file in ./certkit-results/ named after the command, data and sigma."""
    return cfg.results_path(command, cfg.dataset, f"sigma{'model' if cfg.sigma is None else f'{cfg.sigma:g}'}", *extra)


def _sampler(cfg: CertifyConfig, p: Prepared, sigma: float) -> NoiseSampler:
    module = p.module
    if cfg.compile:
        module = torch.compile(module, dynamic=False)
        try:
            with torch.inference_mode():
                module(p.data.x[:2].to(p.device))
        except Exception as e:  # compilation failures surface at the first call
            raise CertkitError(f"torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0][:160]}); "
                               f"run without --compile") from None
    return NoiseSampler(module, sigma, cfg.batch, p.device, cfg.amp)


def run_inputs(certify_one: Callable[[torch.Tensor, int], tuple[int, float]], p: Prepared, writer, quiet: bool,
               desc: str) -> list[dict]:
    """Call ``certify_one(x, idx) -> (prediction, radius)`` for each selected input not yet in ``writer``, writing
    one row per input as soon as it is computed; returns the rows of the file that belong to the selection."""
    todo = [i for i in p.indices if i not in writer.done]
    for i in tqdm(todo, desc=desc, unit="input", disable=quiet, dynamic_ncols=True):
        x, label = p.data.x[i], int(p.data.y[i])
        t0 = time.perf_counter()
        prediction, radius = certify_one(x, i)
        writer.write({"idx": i, "label": label, "predict": int(prediction), "radius": float(radius),
                      "correct": int(prediction == label), "time": time.perf_counter() - t0})
    wanted = set(p.indices)
    return [r for r in writer.rows if int(r["idx"]) in wanted]


def _summary_extra(cfg: CertifyConfig, p: Prepared, rows: list, method: str, sigma: float, wall: float) -> dict:
    return {"method": method, "sigma": sigma, "n0": cfg.n0, "n": cfg.n, "alpha": cfg.alpha,
            "norm": "L2", "radius_units": "data range ([0,1] pixels)",
            "model": {"source": p.model.source, "kind": p.model.kind, "arch": p.model.arch,
                      "train_sigma": p.model.train_sigma},
            "inputs": p.inputs_summary(cfg, len(rows)),
            "seed": cfg.seed, "device": str(p.device), "batch": cfg.batch, "compile": cfg.compile,
            "amp": cfg.amp, "tsv": str(cfg.out), "wall_seconds_this_run": wall}


def run_certify(cfg: CertifyConfig) -> tuple[list[dict], dict]:
    """Certify every selected input with ``cfg.method`` (a registered smoothing method), writing ``cfg.out`` row by
    row (resumable).

    Returns:
        (rows, summary) where summary has method, sigma, n0, n, alpha, n_inputs, certified_accuracy
        {"<radius>": fraction}, abstain_rate, average_certified_radius, seconds, procedure and the inputs covered.
    Raises:
        CertkitError: bad options or inputs, a model whose output does not fit the method.
    """
    t0 = time.perf_counter()
    method = smoothing_method(cfg.method)
    check_certify_args(cfg.n0, cfg.n, cfg.alpha)
    p = prepare(cfg)
    sigma = resolve_sigma(cfg.sigma, p.model)
    default_out(cfg, "certify")
    with torch.inference_mode():
        method.check_output(p.module(p.data.x[:1].to(p.device)))
    smoothed = method(_sampler(cfg, p, sigma))
    writer = open_results(cfg, {"method": cfg.method, **p.settings(cfg), "sigma": sigma, "n0": cfg.n0, "n": cfg.n,
                                "alpha": cfg.alpha}, COLUMNS)

    def certify_one(x: torch.Tensor, idx: int) -> tuple[int, float]:
        cert = smoothed.certify(x, cfg.n0, cfg.n, cfg.alpha, input_generator(cfg.seed, idx, p.device))
        return cert.prediction, cert.radius

    with writer:
        rows = run_inputs(certify_one, p, writer, cfg.quiet, f"certify {cfg.method}")
    summary = summarize(rows)
    summary.update(_summary_extra(cfg, p, rows, cfg.method, sigma, time.perf_counter() - t0))
    summary["procedure"] = method.procedure
    return rows, summary


def run_predict(cfg: CertifyConfig) -> tuple[list[dict], dict]:
    """PREDICT every selected input (n samples each, abstain by binomial test at level alpha; Cohen et al. 2019)."""
    t0 = time.perf_counter()
    check_certify_args(1, cfg.n, cfg.alpha)
    p = prepare(cfg)
    sigma = resolve_sigma(cfg.sigma, p.model)
    default_out(cfg, "predict")
    writer = open_results(cfg, {"method": "gaussian-predict", **p.settings(cfg), "sigma": sigma, "n0": cfg.n0,
                                "n": cfg.n, "alpha": cfg.alpha}, PREDICT_COLUMNS)
    smoothed = GaussianSmoothing(_sampler(cfg, p, sigma))

    def predict_one(x: torch.Tensor, idx: int) -> tuple[int, float]:
        return smoothed.predict(x, cfg.n, cfg.alpha, input_generator(cfg.seed, idx, p.device)), 0.0

    with writer:
        rows = run_inputs(predict_one, p, writer, cfg.quiet, "predict")
    n = max(len(rows), 1)
    summary = {"n_inputs": len(rows), "accuracy": sum(int(r["correct"]) for r in rows) / n,
               "abstain_rate": sum(int(r["predict"]) == ABSTAIN for r in rows) / n,
               "seconds": float(sum(float(r["time"]) for r in rows))}
    summary.update(_summary_extra(cfg, p, rows, "gaussian-predict", sigma, time.perf_counter() - t0))
    summary.pop("n0")
    return rows, summary
