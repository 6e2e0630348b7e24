"""The figures of docs/results.md from certkit's own result files: certified accuracy against L2 radius (``certkit
certify`` TSVs), verified accuracy against Linf eps (IBP and CROWN-IBP of checkpoints on a data set's test split,
computed here) and training curves (the ``.log.csv`` that ``certkit train`` writes beside a checkpoint).

    python bench/results_figures.py --out docs/img --prefix fmnist_ \\
        --certify "sigma 0.12=g012.tsv" --certify "sigma 0.25=g025.tsv" --certify "sigma 0.5=g05.tsv" \\
        --verify "CROWN-IBP=fmnist_crown.pt" --verify "IBP=fmnist_ibp.pt" --verify "SABR=fmnist_sabr.pt" \\
        --dataset fashion-mnist --eps 0,0.02,0.04,0.06,0.08,0.1,0.12,0.14,0.16,0.18,0.2 \\
        --log "CROWN-IBP=fmnist_crown.pt.log.csv" --log "IBP=fmnist_ibp.pt.log.csv"

Each ``--certify``/``--verify``/``--log`` is ``LABEL=FILE`` and may repeat; a figure is drawn when its inputs are
given: ``<prefix>certified_vs_radius.png``, ``<prefix>verified_vs_eps.png``, ``<prefix>training_curves.png``. Verified
accuracy: the fraction of test inputs whose every margin's lower bound is > 0 over the Linf ball of radius eps
clipped to [0, 1] (IBP, Gowal et al. 2018; CROWN-IBP, Zhang et al. 2020), batches of ``--batch``.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import torch


def pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for it in items:
        label, sep, path = it.partition("=")
        if not sep or not label or not path:
            raise SystemExit(f"{what}: give LABEL=FILE (got {it!r})")
        out[label] = path
    return out


def read_tsv(path: str) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def verified_curve(model_path: str, dataset: str, data_path: str | None, eps: list[float], batch: int,
                   limit: int) -> dict[str, list[float]]:
    """IBP and CROWN-IBP verified accuracy of the checkpoint at each eps on the test split (first ``limit``)."""
    from certkit.datasets import load_dataset
    from certkit.models.checkpoint import load_model
    from certkit.verifiers import BoundedModule, linf_ball, margin_spec

    model = load_model(model_path)
    data = load_dataset(dataset, data_path, "test")
    x, y = data.x[:limit], data.y[:limit]
    net = model.module.eval().requires_grad_(False)
    bm = BoundedModule(net, tuple(x.shape[1:]))
    out: dict[str, list[float]] = {"IBP": [], "CROWN-IBP": []}
    with torch.no_grad():
        for e in eps:
            hits = {m: 0 for m in out}
            for i in range(0, len(y), batch):
                xb, yb = x[i:i + batch], y[i:i + batch]
                C = margin_spec(yb, data.num_classes)
                for m in out:
                    lb, _ = bm.compute_bounds(linf_ball(xb, e), C=C, method=m, bound_upper=False)
                    hits[m] += int((lb > 0).all(1).sum())
            for m in out:
                out[m].append(hits[m] / len(y))
            print(f"{model_path}: eps {e:g} " + " ".join(f"{m} {out[m][-1]:.4f}" for m in out), flush=True)
    return out


def certify_settings(paths) -> str:
    """"CERTIFY, n = ..., alpha = ..." from the ``<tsv>.config.json`` that ``certkit certify`` writes beside each
    TSV (the values shared by all of them; "n = mixed" where they differ)."""
    import json

    seen: dict = {"n": set(), "alpha": set()}
    for p in paths:
        cfg = Path(str(p) + ".config.json")
        if cfg.exists():
            data = json.loads(cfg.read_text())
            for k in seen:
                seen[k].add(data.get(k))
    parts = ["CERTIFY"]
    for k, fmt in (("n", "{:,}"), ("alpha", "{:g}")):
        vals = seen[k] - {None}
        if len(vals) == 1:
            parts.append(f"{k} = " + fmt.format(next(iter(vals))))
        elif vals:
            parts.append(f"{k} = mixed")
    return ", ".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="docs/img", help="folder for the PNGs")
    ap.add_argument("--prefix", default="", help="file name prefix of the PNGs")
    ap.add_argument("--certify", action="append", default=[], help="LABEL=certify TSV (repeatable)")
    ap.add_argument("--verify", action="append", default=[], help="LABEL=checkpoint (repeatable)")
    ap.add_argument("--log", action="append", default=[], help="LABEL=training log CSV (repeatable)")
    ap.add_argument("--dataset", nargs="+", default=["fashion-mnist"], help="data set of --verify: NAME [DIR]")
    ap.add_argument("--eps", default="0,0.02,0.04,0.06,0.08,0.1,0.12,0.14,0.16,0.18,0.2",
                    help="Linf radii of --verify ([0, 1] pixel units), comma-separated")
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--max", type=int, default=10000, help="first N test inputs of --verify")
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.certify:
        from certkit.certify.report import plot_curves

        files = pairs(args.certify, "--certify")
        curves = {label: read_tsv(p) for label, p in files.items()}
        path = out / f"{args.prefix}certified_vs_radius.png"
        plot_curves(curves, path, f"certified accuracy of Gaussian smoothing ({certify_settings(files.values())})")
        print(f"wrote {path}")
    if args.verify:
        eps = [float(e) for e in args.eps.split(",") if e.strip()]
        fig, ax = plt.subplots(figsize=(5, 3.6))
        for k, (label, p) in enumerate(pairs(args.verify, "--verify").items()):
            curve = verified_curve(p, args.dataset[0], args.dataset[1] if len(args.dataset) > 1 else None, eps,
                                   args.batch, args.max)
            ax.plot(eps, curve["IBP"], color=f"C{k}", label=f"{label}: IBP")
            ax.plot(eps, curve["CROWN-IBP"], color=f"C{k}", ls="--", label=f"{label}: CROWN-IBP")
        ax.set_xlabel("Linf eps ([0, 1] pixel units)")
        ax.set_ylabel("verified accuracy")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / f"{args.prefix}verified_vs_eps.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        print(f"wrote {path}")
    if args.log:
        fig, ax = plt.subplots(figsize=(5, 3.6))
        for k, (label, p) in enumerate(pairs(args.log, "--log").items()):
            with open(p, newline="") as f:
                rows = list(csv.DictReader(f))
            ep = np.array([int(r["epoch"]) for r in rows])
            ax.plot(ep, [float(r["val_accuracy"]) for r in rows], color=f"C{k}", label=f"{label}: clean")
            ax.plot(ep, [float(r["val_ibp_verified"]) for r in rows], color=f"C{k}", ls="--",
                    label=f"{label}: IBP-verified")
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation accuracy")
        ax.set_title("clean, and IBP-verified at the target eps", fontsize=8)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        path = out / f"{args.prefix}training_curves.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
