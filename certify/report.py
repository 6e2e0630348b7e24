"""Results of a certification run: the per-input TSV, the summary, the printed table and the plot.

Shared by every certification method. The TSV keeps the reference columns
``idx label predict radius correct time`` (abstain: predict -1, radius 0.0; time in seconds) and is written
row by row. A sidecar ``<tsv>.config.json`` records the run's parameters so ``--resume`` refuses to mix rows
computed with different settings.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

COLUMNS = ("idx", "label", "predict", "radius", "correct", "time")
RADIUS_STEP = 0.25


def radius_grid(max_radius: float, step: float = RADIUS_STEP, at_least: float = 1.0) -> list[float]:
    """Radii 0, step, 2 step, ... up to max(max_radius, at_least) (inclusive, rounded up to a step)."""
    top = max(max_radius, at_least)
    return [round(i * step, 6) for i in range(int(math.ceil(top / step - 1e-9)) + 1)]


def summarize(rows: Iterable[dict], radii: Sequence[float] | None = None) -> dict:
    """Certified accuracy at each radius, abstain rate and average certified radius (ACR).

    Certified accuracy at r = fraction of inputs with correct prediction and radius >= r (Cohen et al. 2019);
    ACR = mean over inputs of radius * correct (abstentions and errors count 0).
    """
    rows = list(rows)
    if not rows:
        return {"n_inputs": 0, "certified_accuracy": {}, "abstain_rate": None, "average_certified_radius": None}
    radius = np.array([float(r["radius"]) for r in rows])
    correct = np.array([int(r["correct"]) for r in rows], dtype=bool)
    abstain = np.array([int(r["predict"]) == -1 for r in rows])
    radii = radius_grid(float(radius.max())) if radii is None else list(radii)
    acc = {f"{r:g}": float(np.mean(correct & (radius >= r))) for r in radii}
    return {"n_inputs": len(rows), "certified_accuracy": acc, "abstain_rate": float(abstain.mean()),
            "average_certified_radius": float(np.mean(np.where(correct, radius, 0.0))),
            "seconds": float(sum(float(r.get("time", 0.0)) for r in rows))}


def format_table(summary: dict, title: str = "") -> str:
    """A plain-text table of a summary (as printed by ``certkit certify``)."""
    acc = summary["certified_accuracy"]
    if not acc:
        return "no inputs certified"
    head = "radius (L2)        " + " ".join(f"{float(r):>6.2f}" for r in acc)
    vals = "certified accuracy " + " ".join(f"{v:>6.3f}" for v in acc.values())
    tail = (f"abstain rate {summary['abstain_rate']:.3f}   average certified radius "
            f"{summary['average_certified_radius']:.3f}   inputs {summary['n_inputs']}")
    if "mixed_accuracy_empirical" in summary:
        tail += ("\nmixed classifier clean accuracy (empirical, no certificate) "
                 f"{summary['mixed_accuracy_empirical']:.3f}")
    return "\n".join(x for x in (title, head, vals, tail) if x)


def plot_curves(curves: dict[str, list[dict]], path: str | Path, title: str = "") -> None:
    """Draw certified accuracy against L2 radius, one line per method, to a PNG (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for label, rows in curves.items():
        radius = np.array([float(r["radius"]) for r in rows])
        correct = np.array([int(r["correct"]) for r in rows], dtype=bool)
        top = max(float(radius.max()) if len(radius) else 0.0, 0.1) * 1.1
        grid = np.linspace(0.0, top, 400)
        ax.plot(grid, [np.mean(correct & (radius >= r)) for r in grid], label=label)
    ax.set_xlabel("L2 radius (data-range units)")
    ax.set_ylabel("certified accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        import textwrap
        ax.set_title("\n".join(textwrap.wrap(title, 70)), fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
