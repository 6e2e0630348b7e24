"""Score verifiers' answers on a generated benchmark against its hidden ground truth.

Per verifier and per instance kind (planted = a hidden counterexample exists, so the true answer is sat; regular =
no ground truth): counts of unsat (verified), sat (falsified), unknown, timeout, error (and ``missing`` for
instances it was not run on). A soundness bug is ``unsat`` on a planted instance (Zhou et al. 2024, Sec. 5);
``sat`` on a regular instance is not a bug (regular instances may well be falsifiable). Every ``sat`` answer's
witness is checked in onnxruntime against the property (input in the box and output in the unsafe region, both
within ``tol``; VNN-COMP style); a sat without a valid witness is listed under invalid_counterexamples.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from certkit.common.errors import CertkitError
from certkit.common.results import json_text
from certkit.soundness_bench.export import load_ground_truth
from certkit.soundness_bench.runner import find_instances, result_file_of

STATUSES = ("unsat", "sat", "unknown", "timeout", "error", "missing")


def _read_results(path: Path) -> tuple[dict[tuple[str, str], str], dict[tuple[str, str], float]]:
    """({(benchmark, vnnlib): result}, {(benchmark, vnnlib): seconds}) of a results.tsv."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if rows and not {"benchmark", "vnnlib", "result"} <= set(rows[0]):
        raise CertkitError(f"{path} is not a results table of `certkit soundness run`")
    seconds = {}
    for r in rows:
        try:
            seconds[(r["benchmark"], r["vnnlib"])] = float(r.get("seconds") or "nan")
        except ValueError:
            seconds[(r["benchmark"], r["vnnlib"])] = float("nan")
    return {(r["benchmark"], r["vnnlib"]): r["result"] for r in rows}, seconds


def score(bench: str | Path, results: list[str | Path] | None = None, tol: float = 1e-4) -> dict[str, dict]:
    """Score every results folder (default: all of ``<bench>/results/*``) on ``bench``.

    Returns {verifier: {"planted": {status: count}, "regular": {...}, "unsound_instances": [...],
    "invalid_counterexamples": [...], "has_unsound": bool, "seconds": [per answered instance]}}; instance entries
    are "benchmark/vnnlib" strings (invalid ones as {"instance", "reason"}).

    Raises:
        CertkitError: no results, a folder without ground truth, or an unreadable results table.
    """
    from certkit.models.onnx_import import load_onnx
    from certkit.verifiers.complete.vnncomp_format import check_witness, parse_result_text
    from certkit.verifiers.complete.vnnlib import parse_vnnlib

    bench = Path(bench)
    instances = find_instances(bench)
    truth = {}
    for inst in instances:
        if inst.benchmark not in truth:
            truth[inst.benchmark] = load_ground_truth(inst.folder)
    dirs = ([Path(r) for r in results] if results else
            sorted(p.parent for p in (bench / "results").glob("*/results.tsv")))
    if not dirs:
        raise CertkitError(f"no results to score under {bench / 'results'}: run `certkit soundness run` first")
    onnx_cache: dict = {}
    out: dict[str, dict] = {}
    for d in dirs:
        table = d / "results.tsv"
        if not table.is_file():
            raise CertkitError(f"{d} has no results.tsv")
        answers, seconds = _read_results(table)
        s: dict[str, Any] = {"planted": dict.fromkeys(STATUSES, 0), "regular": dict.fromkeys(STATUSES, 0),
             "unsound_instances": [], "invalid_counterexamples": [],
             "seconds": [seconds[i.key] for i in instances if i.key in seconds]}
        for inst in instances:
            entry = truth[inst.benchmark].get(inst.vnnlib)
            if entry is None:
                raise CertkitError(f"{inst.folder / inst.vnnlib} is not in that folder's ground truth")
            kind = entry["kind"]
            status = answers.get(inst.key, "missing")
            status = status if status in STATUSES else "error"
            s[kind][status] += 1
            name = inst.vnnlib if inst.benchmark == "." else f"{inst.benchmark}/{inst.vnnlib}"
            if kind == "planted" and status == "unsat":
                s["unsound_instances"].append(name)
            if status == "sat":
                rf = result_file_of(d, inst)
                why: str | None
                _, x, why = parse_result_text(rf.read_text(errors="replace")) if rf.is_file() else ("", None,
                                                                                                       "no result file")
                if x is not None:
                    onnx_path = inst.folder / inst.onnx
                    if onnx_path not in onnx_cache:
                        onnx_cache[onnx_path] = load_onnx(onnx_path)
                    why = check_witness(onnx_cache[onnx_path], parse_vnnlib(inst.folder / inst.vnnlib), x, tol)
                if why is not None:
                    s["invalid_counterexamples"].append({"instance": name, "reason": why})
        s["has_unsound"] = bool(s["unsound_instances"])
        out[d.name] = s
    return out


def format_audit_table(summary: dict[str, dict]) -> str:
    """Text table: one row per verifier; planted and regular counts; unsound and invalid-witness counts."""
    cols = ("unsat", "sat", "unknown", "timeout", "error")
    head = (f"{'verifier':<20} | {'planted (true answer: sat)':^34} | {'regular (no ground truth)':^34} | "
            f"{'UNSOUND':>7} {'bad cex':>7}")
    sub = f"{'':<20} | " + " ".join(f"{c:>6}" for c in cols) + " | " + " ".join(f"{c:>6}" for c in cols) + " |"
    lines = [head, sub, "-" * len(head)]
    for name, s in summary.items():
        lines.append(f"{name:<20} | " + " ".join(f"{s['planted'][c]:>6}" for c in cols) + " | "
                     + " ".join(f"{s['regular'][c]:>6}" for c in cols) + " | "
                     + f"{len(s['unsound_instances']):>7} {len(s['invalid_counterexamples']):>7}")
    missing = {n: s["planted"]["missing"] + s["regular"]["missing"] for n, s in summary.items()}
    for n, m in missing.items():
        if m:
            lines.append(f"note: {n} has no answer for {m} instance(s)")
    for n, s in summary.items():
        for inst in s["unsound_instances"]:
            lines.append(f"UNSOUND: {n} answered unsat on planted instance {inst}")
        for e in s["invalid_counterexamples"]:
            lines.append(f"invalid counterexample: {n} on {e['instance']}: {e['reason']}")
    return "\n".join(lines)


def write_audit_summary(summary: dict, path: str | Path) -> None:
    """Write the scorer's summary as JSON."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json_text(summary))


def write_report(summary: dict[str, dict], path: str | Path, positive_controls: tuple = ()) -> list[Path]:
    """A report for people: ``path`` (markdown) with one verdict per verifier, the answer counts and the unsound
    instances, and ``<path>.png`` (time per instance, one box per verifier) beside it. ``positive_controls``: the
    verifiers unsound by design, for which being flagged is the expected outcome. Returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    png = path.with_suffix(".png")
    cols = ("unsat", "sat", "unknown", "timeout", "error")
    lines = ["# Soundness audit", "",
             "A planted instance hides a counterexample (the true answer is sat), so `unsat` on it is a soundness "
             "bug; regular instances have no ground truth. Every `sat` answer's counterexample was re-checked in "
             "onnxruntime.", "", "## Verdicts", ""]
    for name, s in summary.items():
        n_planted = sum(s["planted"][c] for c in cols)
        k = len(s["unsound_instances"])
        if name in positive_controls:
            verdict = (f"deliberately unsound (positive control): **flagged** on {k} planted instance(s), as it must be"
                       if k else "deliberately unsound (positive control): **NOT flagged** by this benchmark")
        elif k:
            verdict = f"**UNSOUND on this benchmark**: unsat on {k} planted instance(s) (listed below)"
        else:
            verdict = f"sound on this benchmark: no unsat on any of its {n_planted} answered planted instances"
        bad = len(s["invalid_counterexamples"])
        lines.append(f"- **{name}**: {verdict}" + (f"; {bad} sat answer(s) with an invalid counterexample" if bad
                                                    else ""))
    lines += ["", "## Answers", "", "| verifier | planted: " + " / ".join(cols) + " | regular: " + " / ".join(cols)
              + " | UNSOUND | bad cex | median s |", "| --- | --- | --- | --- | --- | --- |"]
    for name, s in summary.items():
        secs = sorted(v for v in s.get("seconds", []) if v == v)
        med = f"{secs[len(secs) // 2]:.1f}" if secs else "-"
        lines.append(f"| {name} | " + " / ".join(str(s["planted"][c]) for c in cols) + " | "
                     + " / ".join(str(s["regular"][c]) for c in cols)
                     + f" | {len(s['unsound_instances'])} | {len(s['invalid_counterexamples'])} | {med} |")
    details = [(n, s) for n, s in summary.items() if s["unsound_instances"] or s["invalid_counterexamples"]]
    if details:
        lines += ["", "## Unsound answers and invalid counterexamples", ""]
        for name, s in details:
            for inst in s["unsound_instances"]:
                lines.append(f"- {name}: unsat on planted instance `{inst}` (its hidden counterexample was confirmed "
                             f"in onnxruntime when the benchmark was generated)")
            for e in s["invalid_counterexamples"]:
                lines.append(f"- {name}: invalid counterexample on `{e['instance']}`: {e['reason']}")
    lines += ["", "## Time per instance", "", f"![time per instance]({png.name})", ""]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(summary)), 3.2))
    data = [[v for v in s.get("seconds", []) if v == v] or [0.0] for s in summary.values()]
    ax.boxplot(data)
    ax.set_xticks(range(1, len(summary) + 1), list(summary), rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("seconds per instance")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    path.write_text("\n".join(lines) + "\n")
    return [path, png]
