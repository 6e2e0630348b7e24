"""``certkit verify --model``: clean, PGD and verified accuracy per bound method on a dataset split."""
from __future__ import annotations

import copy
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from certkit.common import threads
from certkit.common.errors import CertkitError
from certkit.models.onnx_export import export_onnx
from certkit.runs.config import DatasetRunConfig, open_results, prepare
from certkit.verifiers.attack import pgd_attack
from certkit.verifiers.bounds.ibp_crown import BoundedModule, canonical_method, margin_spec
from certkit.verifiers.bounds.perturbation import Box, L2Ball, linf_ball
from certkit.verifiers.complete.strategy import verify_property
from certkit.verifiers.complete.vnnlib import parse_vnnlib_text, vnnlib_text


@dataclass
class VerifyConfig(DatasetRunConfig):
    """Options of ``certkit verify --model``: eps is the radius of the perturbation ball in the data range ([0,1]
    pixels), of the Linf (norm 'inf', clipped to the data range) or L2 (norm '2') norm."""

    eps: float | None = None
    norm: str = "inf"
    methods: list = field(default_factory=lambda: ["IBP", "CROWN-IBP", "CROWN"])
    batch: int = 32
    pgd_steps: int = 50
    pgd_restarts: int = 5
    tightness: bool = False   # also report the mean IBP propagation tightness (Mao et al. 2024)
    backend: str = "certkit"  # or "auto_lirpa" (when importable)
    complete_timeout: float = 0.0  # seconds per input for the complete verifier on what bounds leave open (0: off)
    sound: bool = False       # outward-rounded bounds (verifiers/bounds/sound.py): exact arithmetic and float32 alike


def _col(method: str) -> str:
    return "verified_" + method.replace("-", "_")


def run_verify(cfg: VerifyConfig) -> tuple[list[dict], dict]:
    """Verify every selected input with each method; writes one TSV row per input as batches finish.

    Per input: clean correctness, PGD robustness (margin-loss PGD, restarts), and for each method whether every
    margin lower bound of the true class is > 0 over the eps-ball (clipped to [0,1] for Linf). With
    ``complete_timeout`` > 0 (Linf only), every input that PGD did not break and no method verified also goes to
    certkit's complete verifier (``verifiers.strategy.verify_property``: stronger attacks, alpha-CROWN, beta-CROWN /
    GenBaB branch and bound; the same as ``certkit verify --mode instance``) on the VNN-LIB robustness property of its
    box, for
    at most that many seconds; counterexamples are replayed in onnxruntime on the model exported to ONNX. Columns
    ``verified_complete`` (verified by a bound or by the complete verifier) and ``complete_status`` (bounds, unsat,
    sat, timeout, unknown, or pgd for inputs PGD broke / misclassified).
    Invariant checked on every input: verified => PGD-robust => clean-correct (a violation is a certkit bug and
    raises RuntimeError rather than being reported).

    Returns:
        (rows, summary) with summary {"eps", "norm", "n_inputs", "clean_accuracy", "pgd_accuracy",
        "verified_accuracy": {method: v} (and "complete"), "seconds": {method: s}, "complete": {status: count}
        (with the complete verifier), ...}.

    Raises:
        CertkitError: bad options; the complete verifier with --norm 2 or another backend; the ONNX export or the
            complete verifier fails on an input.
    """
    if cfg.eps is None or not cfg.eps >= 0:
        raise CertkitError(f"--eps must be given and >= 0 (perturbation radius in [0,1] pixel units), got {cfg.eps}")
    if cfg.norm not in ("inf", "2"):
        raise CertkitError(f"--norm must be inf or 2, got {cfg.norm!r}")
    if cfg.batch < 1:
        raise CertkitError("--batch must be >= 1")
    complete = cfg.complete_timeout > 0
    if not cfg.complete_timeout >= 0:
        raise CertkitError(f"--complete-timeout must be >= 0 seconds, got {cfg.complete_timeout}")
    if complete and (cfg.norm != "inf" or cfg.backend != "certkit"):
        raise CertkitError("--complete-timeout needs --norm inf (VNN-LIB boxes) and the certkit backend")
    if cfg.sound and (cfg.norm != "inf" or cfg.backend != "certkit"):
        raise CertkitError("--sound bounds Linf boxes with certkit's engine: use --norm inf and --backend certkit")
    methods = [canonical_method(m) for m in cfg.methods]
    if not methods:
        raise CertkitError("give at least one --method")
    p = prepare(cfg)
    model, data, module, device, indices = p.model, p.data, p.module, p.device, p.indices
    cfg.results_path("verify", cfg.dataset, f"eps{cfg.eps:g}", cfg.norm)
    if model.onnx is not None:  # random points of the eps-boxes of the first inputs
        gen = torch.Generator().manual_seed(0)
        x8 = data.x[:8]
        model.onnx.check_against_onnxruntime((x8 + cfg.eps * (2 * torch.rand(x8.shape, generator=gen) - 1)).clamp(0, 1))
    bm = BoundedModule(module, data.input_shape)  # certkit's engine: pre-flight check, sizes, tightness
    bounder: Any = bm
    if cfg.backend == "auto_lirpa":
        from certkit.verifiers.external import AutoLirpaBackend
        bounder = AutoLirpaBackend(module, data.input_shape)
    elif cfg.backend != "certkit":
        raise CertkitError(f"unknown --backend {cfg.backend!r}: use certkit or auto_lirpa")
    if cfg.sound:
        from certkit.verifiers.bounds.sound import SoundBounds
        bounder = SoundBounds(BoundedModule(copy.deepcopy(module).cpu().double().eval(), data.input_shape,
                                           fusing=False))
    K = torch.Size(bm.graph.output_shape).numel()
    columns = ["idx", "label", "clean_correct", "pgd_robust"] + [_col(m) for m in methods]
    settings = {**p.settings(cfg), "eps": cfg.eps, "norm": cfg.norm, "methods": methods,
                "pgd_steps": cfg.pgd_steps, "pgd_restarts": cfg.pgd_restarts, "sound": cfg.sound}
    if complete:
        columns += ["verified_complete", "complete_status"]
        settings["complete_timeout"] = cfg.complete_timeout
    writer = open_results(cfg, settings, columns)
    seconds = {m: 0.0 for m in methods + ["PGD"]}
    tmp = tempfile.TemporaryDirectory(prefix="certkit-complete-") if complete else None
    # bounds need no gradient w.r.t. the weights: with it, alpha-CROWN's autograd graphs through the weights grew the
    # process by ~0.8 GB per batch of 256 Fashion-MNIST inputs (restored afterwards: the module may be the caller's)
    frozen = [q for q in module.parameters() if q.requires_grad]
    for q in frozen:
        q.requires_grad_(False)
    try:
        if complete:
            assert tmp is not None
            onnx_model = model.onnx or export_onnx(copy.deepcopy(module).cpu(), data.input_shape,
                                                   Path(tmp.name) / "model.onnx")
            seconds["complete"] = 0.0
        todo = [i for i in indices if i not in writer.done]
        tau_sum, tau_n = 0.0, 0
        bar = tqdm(total=len(todo), desc="verify", unit="input", disable=cfg.quiet, dynamic_ncols=True)
        for b0 in range(0, len(todo), cfg.batch):
            threads.tick()
            idx = todo[b0:b0 + cfg.batch]
            x, y = data.x[idx].to(device), data.y[idx].to(device)
            with torch.no_grad():
                clean = module(x).argmax(1) == y
            t0 = time.perf_counter()
            _, robust = pgd_attack(module, x, y, cfg.eps, cfg.norm, cfg.pgd_steps, cfg.pgd_restarts,
                                   data_range=model.data_range, seed=cfg.seed)
            seconds["PGD"] += time.perf_counter() - t0
            robust &= clean
            pert: Box | L2Ball = linf_ball(x, cfg.eps, model.data_range) if cfg.norm == "inf" else L2Ball(x, cfg.eps)
            if cfg.sound:
                pert = box = sound_box(x, cfg.eps, model.data_range)
            C = margin_spec(y, K)
            verified = {}
            for m in methods:
                t0 = time.perf_counter()
                if cfg.sound:
                    lb = bounder.compute_bounds(box.x_L, box.x_U, C.cpu().double(), m)
                else:
                    with torch.no_grad() if m != "alpha-CROWN" else torch.enable_grad():
                        lb, _ = bounder.compute_bounds(pert, C, m, bound_upper=False)
                verified[m] = (lb.detach() > 0).all(1)
                seconds[m] += time.perf_counter() - t0
                bad = verified[m] & ~robust
                if bad.any():
                    raise RuntimeError(f"soundness violation: {m} verified input(s) "
                                       f"{[idx[i] for i in bad.nonzero().flatten().tolist()]} that PGD broke")
            if cfg.tightness:
                from certkit.verifiers.bounds.tightness import tightness
                tau_sum += float(tightness(bm, x, cfg.eps, C)) * len(idx)
                tau_n += len(idx)
            for k, i in enumerate(idx):
                row = {"idx": i, "label": int(y[k]), "clean_correct": int(clean[k]), "pgd_robust": int(robust[k]),
                       **{_col(m): int(verified[m][k]) for m in methods}}
                if complete:
                    t0 = time.perf_counter()
                    status = _complete(onnx_model, pert, k, int(y[k]), K, bool(robust[k]),
                                       any(bool(verified[m][k]) for m in methods), cfg.complete_timeout, cfg.seed,
                                       cfg.sound)
                    seconds["complete"] += time.perf_counter() - t0
                    row.update(verified_complete=int(status in ("bounds", "unsat")), complete_status=status)
                writer.write(row)
                bar.update(1)
        bar.close()
        wanted = set(indices)
        rows = [r for r in writer.rows if int(r["idx"]) in wanted]
    finally:
        writer.close()
        for q in frozen:
            q.requires_grad_(True)
        if tmp is not None:
            tmp.cleanup()
    n = max(len(rows), 1)
    summary: dict[str, Any] = {"eps": cfg.eps, "norm": cfg.norm, "n_inputs": len(rows),
               "clean_accuracy": sum(int(r["clean_correct"]) for r in rows) / n,
               "pgd_accuracy": sum(int(r["pgd_robust"]) for r in rows) / n,
               "verified_accuracy": {m: sum(int(r[_col(m)]) for r in rows) / n for m in methods},
               "seconds": dict(seconds),
               "eps_units": "data range ([0,1] pixels)", "model": model.source,
               "inputs": p.inputs_summary(cfg, len(rows)),
               "pgd": {"steps": cfg.pgd_steps, "restarts": cfg.pgd_restarts}, "tsv": str(cfg.out),
               "sound": cfg.sound}
    if cfg.tightness:
        summary["tightness"] = tau_sum / tau_n if tau_n else None  # over the inputs bounded in this run
    if complete:
        summary["verified_accuracy"]["complete"] = sum(int(r["verified_complete"]) for r in rows) / n
        summary["complete"] = {st: sum(r["complete_status"] == st for r in rows) for st in COMPLETE_STATUSES}
        summary["complete"]["timeout_per_input"] = cfg.complete_timeout
    return rows, summary


COMPLETE_STATUSES = ("bounds", "unsat", "sat", "timeout", "unknown", "pgd")


def sound_box(x: torch.Tensor, eps: float, data_range: tuple) -> Box:
    """The Linf ball of radius eps around x, clipped to the data range, as a float64 box on the CPU rounded outward
    (it contains the exact ball, whatever rounding x - eps suffered)."""
    from certkit.verifiers.bounds.sound import outward

    x = x.detach().cpu().double()
    lo, hi = outward((x - eps).clamp(*data_range), (x + eps).clamp(*data_range))
    return Box(lo, hi, check=False)


def _complete(onnx_model, pert, k: int, y: int, K: int, robust: bool, by_bounds: bool, timeout: float,
              seed: int, sound: bool = False) -> str:
    """The complete verifier on input k of the batch's Linf box (one of COMPLETE_STATUSES)."""
    if not robust:
        return "pgd"
    if by_bounds:
        return "bounds"
    x_L, x_U = pert.box()
    prop = parse_vnnlib_text(vnnlib_text(x_L[k].cpu().numpy(), x_U[k].cpu().numpy(), y, K), f"input {k}")
    res = verify_property(onnx_model, prop, timeout, seed=seed, sound=sound)
    if res.status == "error":
        raise CertkitError(f"complete verifier failed: {res.reason}")
    return res.status
