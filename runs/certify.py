"""``certkit certify`` and ``certkit predict``: randomized smoothing over a dataset split, one TSV row per input.

Sharding, for users who outgrow one process or machine: ``--shard K/N`` certifies the K-th of N interleaved shares
of the selected inputs (a job array: one shard per job, then ``certkit merge``); under torchrun every rank takes its
share, writes ``<out>.shard-K-of-N.tsv`` as it goes, and rank 0 merges them into ``<out>`` when all are done. Each
input's noise stream depends only on (seed, input index), so the merged file has the rows of a single-process run,
in the same order; a killed job resumes shard by shard with ``--resume``.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from certkit.certify.report import COLUMNS, summarize
from certkit.certify.sampling import NoiseSampler, input_generator
from certkit.certify.smoothing import ABSTAIN, SmoothingMethod, check_certify_args, smoothing_method
from certkit.certify.smoothing.gaussian import GaussianSmoothing
from certkit.common import threads
from certkit.common.errors import CertkitError
from certkit.common.options import build_options, options_dict
from certkit.common.results import check_writable
from certkit.runs.config import (
    DatasetRunConfig,
    Prepared,
    check_shard_configs,
    open_results,
    prepare,
    resolve_sigma,
    shard_of,
    shard_path,
    write_summary,
)

PREDICT_COLUMNS = ("idx", "label", "predict", "correct", "time")


@dataclass
class CertifyConfig(DatasetRunConfig):
    """Options of a smoothing run (units: sigma and radii in the data range, [0,1] pixels).

    ``sigma=None`` uses the training sigma recorded in the checkpoint (an error when none is recorded); ``method`` is
    a registered smoothing method (certify.smoothing); ``batch`` noisy copies go through the model per forward pass.
    ``options`` holds the values of the options the method itself declares (its ``Options`` dataclass, e.g. LVM-RS's
    calibration inputs or adaptive smoothing's standard model), by name; the others keep the method's defaults.
    """

    method: str = "gaussian"
    options: dict = field(default_factory=dict)
    sigma: float | None = None
    n0: int = 100
    n: int = 100_000
    alpha: float = 0.001
    batch: int = 1000
    compile: bool = False
    amp: bool = False
    shard: tuple | None = None                # (K, N): certify the K-th of N interleaved shares (0 <= K < N)
    radii: list | None = None                 # target radii (sequential) and the summary's radius grid


def default_out(cfg: CertifyConfig, command: str, *extra: str) -> str:
    """``cfg.out``, or a new file in ./certkit-results/ named after the command, data and sigma."""
    return cfg.results_path(command, cfg.dataset, f"sigma{'model' if cfg.sigma is None else f'{cfg.sigma:g}'}", *extra)


def _sampler(cfg: CertifyConfig, p: Prepared, sigma: float) -> NoiseSampler:
    module: Any = p.module
    if cfg.compile:
        module = torch.compile(module, dynamic=False)
    # a compiled module is specialized to its batch shape: one forward call per noise chunk, every call padded to the
    # chunk size (one compilation, at the warm-up below)
    sampler = NoiseSampler(module, sigma, cfg.batch, p.device, cfg.amp, forward_batch=None if cfg.compile else "auto",
                           check_input=False, one_shape=cfg.compile)  # prepare() checked the data against the model
    if cfg.compile:
        try:
            sampler.warm_up(p.data.x[0])
        except Exception as e:  # compilation failures surface at the first call
            raise CertkitError(f"torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0][:160]}); "
                               f"run without --compile") from None
    return sampler


def calibration_data(cfg: CertifyConfig, opts, p: Prepared):
    """The held-out inputs a method that ``needs_calibration`` tunes itself on: the ``calibration_size`` last inputs
    of ``calibration_split`` of ``calibration_dataset`` (the method's options ``opts``), which must never be certified
    in the same run. Loaded and checked before anything is certified.

    Returns:
        (x, y, where) with x (calibration_size, *input_shape) and ``where`` the JSON-ready record of their origin.
    Raises:
        CertkitError: unreadable calibration data, bad sizes, or calibration inputs that this run also certifies.
    """
    from certkit.datasets import load_dataset
    from certkit.models.checks import fit_data_to_model

    if opts.calibration_size < 1 or opts.calibration_noise < 2:
        raise CertkitError("--calibration-size must be >= 1 and --calibration-noise >= 2")
    name = opts.calibration_dataset or cfg.dataset
    path = opts.calibration_path if opts.calibration_dataset else (opts.calibration_path or cfg.data_path)
    data = fit_data_to_model(p.model, load_dataset(name, path, opts.calibration_split))
    first = max(0, len(data) - opts.calibration_size)
    if data.source == p.data.source and data.split == p.data.split and set(range(first, len(data))) & set(p.indices):
        fix = ("hold out inputs in another file (--calibration-dataset npz --calibration-path HELD_OUT.npz) or certify "
               "fewer inputs (--max)" if data.split == "all" else
               "calibrate on another split (--calibration-split) or data set (--calibration-dataset)")
        raise CertkitError(f"the calibration inputs ({name} {data.split}, last {opts.calibration_size}) would also be "
                           f"certified: {fix}")
    where = {"dataset": data.name, "split": data.split, "source": data.source, "indices": [first, len(data)]}
    return data.x[first:], data.y[first:], where


def run_inputs(certify_one: Callable[[torch.Tensor, int], tuple], p: Prepared, writer, quiet: bool,
               desc: str) -> list[dict]:
    """Call ``certify_one(x, idx) -> (prediction, radius[, extra columns dict])`` for each selected input not yet in
    ``writer``, writing one row per input as soon as it is computed; returns the rows of the file that belong to the
    selection."""
    todo = [i for i in p.indices if i not in writer.done]
    for i in tqdm(todo, desc=desc, unit="input", disable=quiet, dynamic_ncols=True):
        threads.tick()
        x, label = p.data.x[i], int(p.data.y[i])
        t0 = time.perf_counter()
        prediction, radius, *extra = certify_one(x, i)
        writer.write({"idx": i, "label": label, "predict": int(prediction), "radius": float(radius),
                      "correct": int(prediction == label), "time": time.perf_counter() - t0,
                      **(extra[0] if extra else {})})
    wanted = set(p.indices)
    return [r for r in writer.rows if int(r["idx"]) in wanted]


def _summary_extra(cfg: CertifyConfig, p: Prepared, rows: list, method: str, sigma: float, wall: float) -> dict:
    return {"method": method, "sigma": sigma, "n0": cfg.n0, "n": cfg.n, "alpha": cfg.alpha,
            "norm": "L2", "radius_units": "data range ([0,1] pixels)",
            "model": {"source": p.model.source, "kind": p.model.kind, "arch": p.model.arch,
                      "train_sigma": p.model.train_sigma,
                      **({"denoiser": p.model.metadata["denoiser"]} if "denoiser" in p.model.metadata else {})},
            "inputs": p.inputs_summary(cfg, len(rows)),
            "seed": cfg.seed, "device": str(p.device), "batch": cfg.batch, "compile": cfg.compile,
            "amp": cfg.amp, "tsv": str(cfg.out), "wall_seconds_this_run": wall,
            **({"radii": sorted(cfg.radii)} if cfg.radii else {})}


@dataclass
class CertifyPlan:
    """A smoothing run after every check passed and before any input is certified (:func:`plan_certify`).

    Attributes:
        cfg: the run's configuration; method: the smoothing method's class; opts: its options; p: model, data and
        inputs; sigma: the noise level; smoothed: the smoothed classifier (standard model attached, not calibrated);
        settings: what a resumed file must share; extra: what the summary records besides the results;
        calibration: (x, y, where) of :func:`calibration_data`, or None.
    """

    cfg: CertifyConfig
    method: type[SmoothingMethod]
    opts: Any
    p: Prepared
    sigma: float
    smoothed: Any
    settings: dict
    extra: dict
    calibration: tuple | None = None
    t0: float = 0.0


def plan_certify(cfg: CertifyConfig) -> CertifyPlan:
    """Check and load everything a run needs: the method and its options, the model, the data, the standard model
    and the calibration inputs of the methods that use them, and the results file (present only with --resume or
    --overwrite, in a writable folder). Certifies nothing, so that several runs can all be checked before the first
    one starts.

    Raises:
        CertkitError: bad options or inputs, a model whose output does not fit the method, unreadable calibration
            data, an existing or unwritable results file.
    """
    t0 = time.perf_counter()
    method = smoothing_method(cfg.method)
    opts = build_options(method, cfg.options, f"--method {cfg.method}")
    check_certify_args(cfg.n0, cfg.n, cfg.alpha)
    if cfg.radii is not None and (not cfg.radii or min(cfg.radii) < 0):
        raise CertkitError(f"--radii must be radii >= 0 (L2, data-range units), got {cfg.radii}")
    p = prepare(cfg)
    sigma = resolve_sigma(cfg.sigma, p.model)
    check_writable(default_out(cfg, "certify"), cfg.resume, cfg.overwrite)
    if cfg.summary_json is not None:
        check_writable(cfg.summary_json, overwrite=True)
    with torch.inference_mode():
        method.check_output(p.module(p.data.x[:1].to(p.device)))
    smoothed = method(_sampler(cfg, p, sigma))
    smoothed.apply_options(opts)
    smoothed.radii = cfg.radii
    settings = {"method": cfg.method, **p.settings(cfg), "sigma": sigma, "n0": cfg.n0, "n": cfg.n,
                "alpha": cfg.alpha, "batch": cfg.batch, "device": p.device.type}
    if cfg.radii is not None:
        settings["radii"] = sorted(cfg.radii)
    settings.update(options_dict(opts))               # the method's own options, as declared and resolved
    extra: dict[str, Any] = {"procedure": method.procedure}
    if opts is not None:
        extra["options"] = options_dict(opts)
    if method.needs_standard_model:
        extra["standard_model"] = _attach_standard(cfg, opts, p, smoothed)
    calibration = calibration_data(cfg, opts, p) if method.needs_calibration else None
    return CertifyPlan(cfg, method, opts, p, sigma, smoothed, settings, extra, calibration, t0)


def execute_certify(plan: CertifyPlan) -> tuple[list[dict], dict]:
    """Calibrate (once, on the held-out inputs, for methods that need it) and certify every selected input of a
    :func:`plan_certify` plan, writing its results file row by row. Returns (rows, summary) as :func:`run_certify`."""
    cfg, method, p, smoothed, opts = plan.cfg, plan.method, plan.p, plan.smoothed, plan.opts
    settings, extra = dict(plan.settings), dict(plan.extra)
    if plan.calibration is not None:
        x, y, where = plan.calibration
        chosen = smoothed.calibrate(x, y, opts.calibration_noise, cfg.n, cfg.alpha,
                                    input_generator(cfg.seed, -1, p.device))
        extra["calibration"] = {**chosen, **where}
        settings["calibration"] = {k: extra["calibration"][k] for k in ("map", "t", "dataset", "split", "source",
                                                                        "indices", "noisy_copies")}

    def certify_one(x: torch.Tensor, idx: int) -> tuple:
        cert = smoothed.certify(x, cfg.n0, cfg.n, cfg.alpha, input_generator(cfg.seed, idx, p.device))
        return cert.prediction, cert.radius, {c: getattr(cert, c) for c in method.columns}

    return _run_shards(cfg, p, settings, COLUMNS + tuple(method.columns), certify_one, f"certify {cfg.method}",
                       plan.sigma, plan.t0, extra)


def run_certify(cfg: CertifyConfig) -> tuple[list[dict], dict]:
    """Certify every selected input with ``cfg.method`` (a registered smoothing method), writing ``cfg.out`` row by
    row (resumable; sharded as the module docstring says): :func:`plan_certify`, then :func:`execute_certify`.

    Returns:
        (rows, summary) where summary has method, sigma, n0, n, alpha, n_inputs, certified_accuracy
        {"<radius>": fraction}, abstain_rate, average_certified_radius, seconds, procedure and the inputs covered.
    Raises:
        CertkitError: bad options or inputs, a model whose output does not fit the method.
    """
    return execute_certify(plan_certify(cfg))


def _attach_standard(cfg: CertifyConfig, opts, p: Prepared, smoothed) -> dict:
    """Load ``opts.standard_model`` (any --model source; ``opts``: the method's options) and attach it with
    ``opts.mixing_weight`` to ``smoothed``.

    Raises:
        CertkitError: no standard model; a weight outside (1/2, 1]; a model that does not take the data's inputs or
            returns another number of classes than the smoothed model.
    """
    from certkit.certify.smoothing.adaptive import check_mixing_weight
    from certkit.models.checkpoint import load_model

    if not opts.standard_model:
        raise CertkitError(f"--method {cfg.method} needs the standard classifier: --standard-model MODEL")
    if (opts.mixing_weight is None) == (opts.mixing_network is None):
        raise CertkitError(f"--method {cfg.method} needs one of --mixing-weight W (fixed, certified) or "
                           f"--mixing-network FILE (certkit train --method mixing)")
    mixing, info = None, {}
    if opts.mixing_network is not None:
        from certkit.models.mixing import load_mixing

        if cfg.denoiser is not None:
            raise CertkitError("a mixing network is trained on the robust model's own outputs: no --denoiser with it")
        mixing, meta = load_mixing(opts.mixing_network)
        w = None
        info = {"mixing_network": opts.mixing_network, "floor": mixing.floor, "certified_at_floor": mixing.certifies,
                "trained_for": {k: meta.get(k) for k in ("standard_model", "classifier", "sigma", "eps_l2")}}
    else:
        w = check_mixing_weight(opts.mixing_weight)
    g = load_model(opts.standard_model, opts.standard_model_weights, cfg.allow_pickle, what="--standard-model")
    module = g.module.to(p.device).eval()
    x = p.data.x[:1].to(p.device)
    try:
        with torch.inference_mode():
            out_g, out_f = module(x), p.module(x)
    except (RuntimeError, ValueError, TypeError, IndexError) as e:
        raise CertkitError(f"--standard-model does not take the data's inputs of shape {tuple(x.shape[1:])}: "
                           f"{str(e).splitlines()[0][:160]}") from None
    if out_g.dim() != 2 or out_g.shape != out_f.shape:
        raise CertkitError(f"--standard-model returns logits of shape {tuple(out_g.shape)}, the smoothed model "
                           f"{tuple(out_f.shape)}: both must be (batch, classes) with the same classes")
    mixing_classes = None if mixing is None else mixing.num_classes
    if mixing_classes is not None and out_g.shape[1] != mixing_classes:
        raise CertkitError(f"the mixing network was trained for {mixing_classes} classes, the models "
                           f"have {out_g.shape[1]}")
    smoothed.attach_standard(module, w, mixing)
    return {"source": g.source, "kind": g.kind, "arch": g.arch, "mixing_weight": w, **info}


def run_predict(cfg: CertifyConfig) -> tuple[list[dict], dict]:
    """PREDICT every selected input (n samples each, abstain by binomial test at level alpha; Cohen et al. 2019)."""
    t0 = time.perf_counter()
    check_certify_args(1, cfg.n, cfg.alpha)
    p = prepare(cfg)
    sigma = resolve_sigma(cfg.sigma, p.model)
    check_writable(default_out(cfg, "predict"), cfg.resume, cfg.overwrite)
    opts = build_options(GaussianSmoothing, cfg.options, "certkit predict")
    settings = {"method": "gaussian-predict", **p.settings(cfg), "sigma": sigma, "n0": cfg.n0, "n": cfg.n,
                "alpha": cfg.alpha, "batch": cfg.batch, "device": p.device.type, **options_dict(opts)}
    smoothed = GaussianSmoothing(_sampler(cfg, p, sigma))
    smoothed.apply_options(opts)

    def predict_one(x: torch.Tensor, idx: int) -> tuple[int, float]:
        return int(smoothed.predict(x, cfg.n, cfg.alpha, input_generator(cfg.seed, idx, p.device))), 0.0

    return _run_shards(cfg, p, settings, PREDICT_COLUMNS, predict_one, "predict", sigma, t0, {})


def _summary(rows: list, method: str, base: dict) -> dict:
    """The summary of ``rows`` with the run description of ``base`` (a run's or a shard's summary)."""
    if method == "gaussian-predict":
        n = max(len(rows), 1)
        out = {"n_inputs": len(rows), "accuracy": sum(int(r["correct"]) for r in rows) / n,
               "abstain_rate": sum(int(r["predict"]) == ABSTAIN for r in rows) / n,
               "seconds": float(sum(float(r["time"]) for r in rows))}
    else:
        out = summarize(rows, base.get("radii"))
        if rows and "samples" in rows[0]:
            out["mean_samples"] = sum(int(r["samples"]) for r in rows) / len(rows)
        if rows and "mixed_predict" in rows[0]:  # adaptive smoothing: h's empirical clean accuracy (no certificate)
            out["mixed_accuracy_empirical"] = sum(int(r["mixed_predict"]) == int(r["label"]) for r in rows) / len(rows)
    out.update({k: v for k, v in base.items() if k not in out})
    if method == "gaussian-predict":
        out.pop("n0", None)  # PREDICT has no selection samples
    return out


def _run_shards(cfg, p, settings, columns, one, desc, sigma, t0, extra) -> tuple[list[dict], dict]:
    from certkit.common import distributed

    k, n, torchrun = shard_of(cfg.shard)
    final = cfg.out
    if n > 1:
        p.indices = p.indices[k::n]
        settings = {**settings, "shard": [k, n]}
        if torchrun:
            cfg.out = shard_path(final, k, n)
    writer = open_results(cfg, settings, columns)
    with writer:
        rows = run_inputs(one, p, writer, cfg.quiet or k != 0, desc + (f" (shard {k}/{n})" if n > 1 else ""))
    base = {**_summary_extra(cfg, p, rows, settings["method"], sigma, time.perf_counter() - t0), **extra}
    summary = _summary(rows, settings["method"], base)
    if n > 1:
        summary["shard"] = [k, n]
    if not torchrun:
        return rows, summary
    write_summary(summary, cfg)  # the shard's summary, beside it, for the merge
    distributed.barrier()
    cfg.out = final
    if k != 0:
        return rows, summary
    return merge_shards(final, [shard_path(final, i, n) for i in range(n)], resume=cfg.resume,
                        overwrite=cfg.overwrite)


def merge_shards(out: str, shards: list, resume: bool = False, overwrite: bool = False) -> tuple[list[dict], dict]:
    """Merge the result files of the N shards of one run into ``out``: the rows of a single-process run in the same
    order (by input index), with its summary. Returns (rows, summary).

    Raises:
        CertkitError: a shard is missing or incomplete, appears twice, or was computed with other settings; ``out``
            exists without resume/overwrite.
    """
    from certkit.common.results import ResultWriter

    if not shards:
        raise CertkitError("give the shard files to merge")
    configs, summaries, tables = [], [], []
    for path in map(Path, shards):
        cfg_path = path.with_name(path.name + ".config.json")
        summ_path = Path(str(path.with_suffix("")) + ".summary.json")
        if not path.is_file() or not cfg_path.is_file() or not summ_path.is_file():
            raise CertkitError(f"{path} is not a finished shard (its .tsv, .config.json and .summary.json are needed)")
        configs.append(json.loads(cfg_path.read_text()))
        summaries.append(json.loads(summ_path.read_text()))
        tables.append(path)
    n, common = check_shard_configs(tables, configs)
    columns = tuple(Path(tables[0]).read_text().split("\n", 1)[0].split("\t"))
    rows = []
    for path, summ in zip(tables, summaries):
        with ResultWriter(path, configs[tables.index(path)], columns, resume=True) as part:
            if len(part.rows) != summ["inputs"]["selected"]:
                raise CertkitError(f"{path} is incomplete ({len(part.rows)} of {summ['inputs']['selected']} rows): "
                                   f"finish it with --resume first")
            rows += part.rows
    rows.sort(key=lambda r: int(r["idx"]))
    if len({int(r["idx"]) for r in rows}) != len(rows):
        raise CertkitError("the shards overlap: an input appears twice")
    with ResultWriter(out, common, columns, resume=False, overwrite=overwrite or resume) as writer:
        for r in rows:
            writer.write(r)
    base = dict(summaries[0])
    base["inputs"] = {**base["inputs"], "selected": sum(s["inputs"]["selected"] for s in summaries),
                      "certified": len(rows)}
    base["inputs"]["full_split"] = base["inputs"]["skip"] == 1 and len(rows) == base["inputs"]["split_size"]
    base.pop("shard", None)
    base.update({"tsv": str(out), "shards": n, "wall_seconds_this_run": max(s["wall_seconds_this_run"]
                                                                           for s in summaries)})
    return rows, _summary(rows, common["method"], base)
