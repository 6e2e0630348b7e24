"""``certkit conformal``: RSCP+ (or RSCP) prediction sets over random calibration/test splits of a dataset split,
with coverage measured on clean inputs and under an L2 PGD attack; one TSV row per split (resumable)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from certkit.certify.conformal import (
    PTT,
    SmoothedScorer,
    base_scores,
    conformal_quantile,
    pgd_l2_smoothed,
    rscp_plus_sets,
    rscp_sets,
)
from certkit.common import threads
from certkit.common.errors import CertkitError
from certkit.runs.config import DatasetRunConfig, open_results, prepare, resolve_sigma

COLUMNS = ("split", "n_cal", "n_test", "tau", "coverage_clean", "coverage_attacked", "mean_set_size",
           "mean_set_size_attacked")
RULES = ("rscp+", "rscp")


@dataclass
class ConformalConfig(DatasetRunConfig):
    """Options of ``certkit conformal``.

    Attributes:
        sigma: smoothing noise std in data-range units (None: the model's training sigma).
        eps_l2: L2 radius (data-range units, [0,1] pixels) the sets must withstand.
        alpha: target miscoverage; beta: Monte-Carlo error budget of RSCP+ (0 < beta < alpha/2).
        n_mc: noise draws per smoothed score; score: ``hps`` or ``aps``; ptt: post-training transformation fitted on
        the first ``holdout`` points (on by default, as the paper recommends: without it RSCP+'s Monte-Carlo
        corrections make near-trivial sets); rule: ``rscp+`` (guaranteed) or ``rscp`` (no finite-sample guarantee);
        splits: random half/half calibration/test splits; attack_steps: PGD steps of the coverage attack.
    """

    sigma: float | None = None
    eps_l2: float = 0.125
    alpha: float = 0.1
    beta: float = 0.001
    n_mc: int = 256
    score: str = "aps"
    ptt: bool = True
    holdout: int = 100
    rule: str = "rscp+"
    splits: int = 50
    attack_steps: int = 20


def run_conformal(cfg: ConformalConfig) -> tuple[list[dict], dict]:
    """Marginal coverage (clean and under PGD-L2 within eps_l2) and set size of RSCP+ (or RSCP) over random
    calibration/test splits of the selected inputs (Yan, Romano, Weng ICLR 2024). Returns (per-split rows, summary).

    The first ``holdout`` points fit PTT when ``ptt`` (otherwise they join the pool, as in the paper's fairness
    rule); the pool is split in halves at random ``splits`` times.
    Raises:
        CertkitError: bad options or inputs.
    """
    if not 0 < cfg.alpha < 1 or not 0 < cfg.beta < cfg.alpha / 2:
        raise CertkitError(f"need 0 < alpha < 1 and 0 < beta < alpha/2, got alpha={cfg.alpha}, beta={cfg.beta}")
    if not cfg.eps_l2 >= 0 or cfg.splits < 1 or cfg.rule not in RULES:
        raise CertkitError("need --eps-l2 >= 0, --splits >= 1 and --rule rscp+ or rscp")
    p = prepare(cfg)
    sigma = resolve_sigma(cfg.sigma, p.model)
    cfg.results_path("conformal", cfg.dataset, cfg.rule, cfg.score + ("_ptt" if cfg.ptt else ""))
    settings = {**p.settings(cfg), "sigma": sigma, "eps_l2": cfg.eps_l2, "alpha": cfg.alpha, "beta": cfg.beta,
                "n_mc": cfg.n_mc, "score": cfg.score, "ptt": cfg.ptt, "holdout": cfg.holdout, "rule": cfg.rule,
                "attack_steps": cfg.attack_steps, "inputs": len(p.indices)}
    writer = open_results(cfg, settings, COLUMNS, key="split")
    try:
        dev, model = p.device, p.module
        x_all, y_all = p.data.x[p.indices], p.data.y[p.indices]
        gen = torch.Generator(device=dev).manual_seed(cfg.seed)
        cpu_gen = torch.Generator().manual_seed(cfg.seed)
        u_all = torch.rand(len(y_all), generator=cpu_gen)
        transform = None
        start = 0
        if cfg.ptt:
            if cfg.holdout < 2 or cfg.holdout >= len(y_all) - 4:
                raise CertkitError(f"--holdout {cfg.holdout} leaves too few points")
            xh, yh, uh = x_all[:cfg.holdout].to(dev), y_all[:cfg.holdout].to(dev), u_all[:cfg.holdout].to(dev)
            with torch.no_grad():
                probs = torch.softmax(model(xh + sigma * torch.randn(xh.shape, generator=gen, device=dev)), -1)
                true = base_scores(probs, cfg.score, uh).gather(1, yh[:, None])
            transform = PTT(true.cpu())
            start = cfg.holdout
        scorer = SmoothedScorer(model, sigma, cfg.n_mc, cfg.score, ptt=transform)
        x, y, u = x_all[start:].to(dev), y_all[start:].to(dev), u_all[start:].to(dev)
        clean_m, clean_v, adv_m, adv_v = [], [], [], []
        step = max(1, 4096 // cfg.n_mc)
        for i in tqdm(range(0, len(y), step), desc="conformal scores", disable=cfg.quiet):
            threads.tick()
            sl = slice(i, i + step)
            m, v = scorer(x[sl], u[sl], gen)
            clean_m.append(m)
            clean_v.append(v)
            xa = pgd_l2_smoothed(scorer, x[sl], y[sl], u[sl], cfg.eps_l2, cfg.attack_steps, gen) if cfg.eps_l2 > 0 \
                else x[sl]
            m, v = scorer(xa, u[sl], gen)
            adv_m.append(m)
            adv_v.append(v)
        clean_mean, clean_var, adv_mean, adv_var = (torch.cat(t).cpu() for t in (clean_m, clean_v, adv_m, adv_v))
        y = y.cpu()
        true_clean = clean_mean.gather(1, y[:, None]).squeeze(1).numpy()
        n = len(y)
        for k in range(cfg.splits):
            perm = torch.randperm(n, generator=cpu_gen)  # drawn for every split, so resumed runs see the same splits
            if k in writer.done:
                continue
            cal, test = perm[: n // 2], perm[n // 2:]
            if cfg.rule == "rscp+":
                tau = conformal_quantile(true_clean[cal.numpy()], 1 - cfg.alpha + 2 * cfg.beta)
                sets_c = rscp_plus_sets(clean_mean[test], clean_var[test], tau, cfg.n_mc, cfg.beta, cfg.eps_l2, sigma)
                sets_a = rscp_plus_sets(adv_mean[test], adv_var[test], tau, cfg.n_mc, cfg.beta, cfg.eps_l2, sigma)
            else:
                tau = conformal_quantile(true_clean[cal.numpy()], (1 - cfg.alpha))
                sets_c = rscp_sets(clean_mean[test], tau, cfg.eps_l2, sigma)
                sets_a = rscp_sets(adv_mean[test], tau, cfg.eps_l2, sigma)
            yt = y[test]
            writer.write({"split": k, "n_cal": len(cal), "n_test": len(test), "tau": tau,
                          "coverage_clean": float(sets_c[torch.arange(len(yt)), yt].float().mean()),
                          "coverage_attacked": float(sets_a[torch.arange(len(yt)), yt].float().mean()),
                          "mean_set_size": float(sets_c.float().sum(1).mean()),
                          "mean_set_size_attacked": float(sets_a.float().sum(1).mean())})
        rows = [r for r in writer.rows if int(r["split"]) < cfg.splits]
    finally:
        writer.close()
    stat = lambda key: (float(np.mean([r[key] for r in rows])), float(np.std([r[key] for r in rows])))
    summary = {"method": cfg.rule, "alpha": cfg.alpha, "beta": cfg.beta, "eps_l2": cfg.eps_l2, "sigma": sigma,
               "n_mc": cfg.n_mc, "score": cfg.score, "ptt": cfg.ptt, "splits": cfg.splits, "rule": cfg.rule,
               "guarantee": ("P(y in C+(x~)) >= 1 - alpha for ||x~ - x||_2 <= eps_l2" if cfg.rule == "rscp+"
                             else "none (RSCP does not bound the Monte-Carlo error)"),
               "coverage_clean": stat("coverage_clean"), "coverage_attacked": stat("coverage_attacked"),
               "mean_set_size": stat("mean_set_size"), "mean_set_size_attacked": stat("mean_set_size_attacked"),
               "n_pool": n, "holdout": start, "num_classes": int(clean_mean.shape[1]),
               "inputs": p.inputs_summary(cfg, len(y_all)), "attack": {"steps": cfg.attack_steps, "norm": "L2"},
               "tsv": str(cfg.out), "seed": cfg.seed,
               "note": "(mean, std) over random half/half calibration/test splits of the pool"}
    return rows, summary


def plot_conformal(rows: list[dict], alpha: float, path: str) -> None:
    """Histograms of coverage (clean and attacked) and of mean set size over the splits, to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(8, 3.2))
    ax[0].hist([r["coverage_clean"] for r in rows], alpha=0.6, label="clean")
    ax[0].hist([r["coverage_attacked"] for r in rows], alpha=0.6, label="attacked")
    ax[0].axvline(1 - alpha, color="k", ls="--")
    ax[0].set_xlabel("coverage per split")
    ax[0].legend()
    ax[1].hist([r["mean_set_size"] for r in rows])
    ax[1].set_xlabel("mean set size per split")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
