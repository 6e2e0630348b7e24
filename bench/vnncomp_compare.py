"""Run certkit on VNN-COMP benchmark folders, side by side with another tool's published answers.

    python bench/vnncomp_compare.py BENCH_DIR [BENCH_DIR ...] [--reference RESULTS.csv ...] [--results DIR ...]
                            [--timeout 30] [--every 3] [--max 10] [--onnx-filter SUBSTRING] [--out results.csv]

BENCH_DIR is a VNN-COMP benchmark folder with an *instances.csv (onnx,vnnlib,timeout rows; public files of
stanleybak/vnncomp2021 -- never commit them), or a folder with an expected.csv (onnx,vnnlib,expected: known answers,
checked like the reference's). The reference CSV has the VNN-COMP results layout
(category,onnx,vnnlib,prepare_seconds,result,seconds; result SAT/UNSAT/violated/holds/timeout/...), e.g.
results_csv/a-b-CROWN.csv of stanleybak/vnncomp2021_results, or TOOL/2023_vit/results.csv of
ChristopherBrix/vnncomp2023_results; give --reference once per tool (labelled by the TOOL folder, else the file name):
each tool's solved count, solved within the same limit and median time per solved instance are printed beside
certkit's. ``--results DIR`` instead takes a checkout of a year's results repository whole and finds, for each
benchmark folder, every tool that has its answers: TOOL/BENCH/results.csv or TOOL/YEAR_BENCH/results.csv
(ChristopherBrix/vnncomp2022_results to 2024: alpha-beta-CROWN, nnenum, Marabou, PyRAT, NeuralSAT, ... where
present), or the rows of results_csv/TOOL.csv whose category is the benchmark (stanleybak/vnncomp2021_results).

All instances run in this one process (no Python start-up per instance). Per benchmark it prints certkit's
solved / unsat / sat / timeout / unknown / error counts, WRONG answers (certkit unsat where the reference answered
sat: with a counterexample from 2022 on, a bare claim in VNN-COMP 2021's results; each such line names the tools that
answered unsat, and the count says how many of them another tool agrees with), reference answers contradicted
(the reference proved unsat where certkit's counterexample replays in onnxruntime: a wrong answer of the reference,
such as Marabou's on VNN-COMP 2022's sri_resnet_b), what the reference solved on the same instances (in all, and
within the same number of seconds by its own reported time, start-up included) with certkit's ratio to each, and
the time.
``--out`` appends one row per instance as it is answered (a run can be stopped and resumed: answered rows are
skipped). ``--shard K/N`` answers only the instances K, K+N, K+2N, ... (0-based) of each benchmark's selection, for
job arrays; under torchrun the ranks share the instances by themselves, each writing ``OUT.shard-K-of-N.csv``. The
whole run's summary: concatenate the shards' files and run again with ``--out`` on the concatenation (every row is
answered, so nothing is run again). Instances that branched also report the domains (sub-boxes or activation
subdomains) bounded, and each benchmark the domains per second over those instances' whole time (attacks and root
bounds included).
"""
from __future__ import annotations

import argparse
import csv
import re
import time
from collections import Counter
from pathlib import Path
from statistics import median

from certkit.common.errors import CertkitError
from certkit.common.memory import retain_freed_memory
from certkit.runs.config import shard_of
from certkit.verifiers.complete.strategy import verify_instance
from certkit.verifiers.complete.vnncomp_format import read_instances

_NORMAL = {"sat": "sat", "violated": "sat", "unsat": "unsat", "holds": "unsat"}


def load_reference(path, category: str | None = None):
    """(onnx name, vnnlib name) -> (sat | unsat | other, seconds) from a VNN-COMP results CSV; with ``category``
    only its rows of that benchmark (the first column)."""
    ref = {}
    for row in csv.reader(open(path, newline="")):
        if len(row) >= 6 and (category is None or row[0].strip() == category):
            key = (Path(row[1]).name, Path(row[2]).name)
            try:
                secs = float(row[5].strip())
            except ValueError:
                secs = float("inf")
            ref[key] = (_NORMAL.get(row[4].strip().lower(), "other"), secs)
    return ref


def instance_rows(bench: Path) -> tuple[list, dict]:
    """The (onnx, vnnlib, ...) rows of a benchmark folder and its known answers {(onnx, vnnlib): sat | unsat}: a
    VNN-COMP *instances.csv (onnx,vnnlib,timeout; no answers), or an expected.csv with an onnx,vnnlib,expected header
    (for example a sample of VNN-COMP 2021 benchmarks with the competition's answers)."""
    csv_path = next(bench.glob("*instances.csv"), None)
    if csv_path is not None:
        try:
            return [list(r) for r in read_instances(csv_path)], {}
        except CertkitError as e:
            raise SystemExit(str(e)) from None
    if (bench / "expected.csv").exists():
        rows = list(csv.DictReader(open(bench / "expected.csv")))
        if not rows or not {"onnx", "vnnlib", "expected"} <= set(rows[0]):
            raise SystemExit(f"{bench / 'expected.csv'}: needs an onnx,vnnlib,expected header")
        return ([[r["onnx"], r["vnnlib"]] for r in rows],
                {(r["onnx"], r["vnnlib"]): _NORMAL.get(r["expected"].strip().lower(), "other") for r in rows})
    raise SystemExit(f"{bench}: no *instances.csv (onnx,vnnlib,timeout rows) nor expected.csv in this folder")


def reference_categories(path, keys: set) -> set[str]:
    """The benchmark names (first column) of the rows of a VNN-COMP results CSV whose (onnx name, vnnlib name) is in
    ``keys``: answers are matched by file names, which another year's properties of a benchmark can share (VNN-COMP
    2021 mnistfc and 2022 mnist_fc), so a name other than the folder's is worth a warning."""
    return {row[0].strip() for row in csv.reader(open(path, newline=""))
            if len(row) >= 6 and (Path(row[1]).name, Path(row[2]).name) in keys}


def discover_references(results: Path, bench: str) -> dict[str, dict]:
    """tool -> its answers on benchmark ``bench`` (as :func:`load_reference`) in a checkout ``results`` of a VNN-COMP
    results repository: TOOL/BENCH/results.csv or TOOL/YEAR_BENCH/results.csv (2022-2024), or the rows of category
    ``bench`` in results_csv/TOOL.csv (2021). Tools without answers on ``bench`` are left out."""
    found = {}
    for csv_path in sorted(results.glob("*/*/results.csv")):
        if re.sub(r"^\d{4}_", "", csv_path.parent.name) == bench:
            found[csv_path.parent.parent.name] = load_reference(csv_path)
    for csv_path in sorted(results.glob("results_csv/*.csv")):
        ref = load_reference(csv_path, category=bench)
        if ref:
            found[csv_path.stem] = ref
    return {tool: ref for tool, ref in found.items() if ref}


def _label(path: Path) -> str:
    """A results CSV's tool name: TOOL of TOOL/YEAR_BENCH/results.csv, else the file name without suffix."""
    return path.parent.parent.name if path.name == "results.csv" else path.stem


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bench", nargs="+", type=Path)
    ap.add_argument("--reference", type=Path, action="append", default=[],
                    help="a VNN-COMP results CSV (repeat for several tools)")
    ap.add_argument("--results", type=Path, action="append", default=[],
                    help="a checkout of a VNN-COMP results repository: every tool's answers on each benchmark")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds per instance (certkit)")
    ap.add_argument("--every", type=int, default=1, help="every K-th instance of each benchmark")
    ap.add_argument("--max", type=int, default=None, help="at most N instances of each benchmark")
    ap.add_argument("--onnx-filter", default="", help="only networks whose file name contains this")
    ap.add_argument("--out", type=Path, default=None, help="CSV of per-instance answers (appended, resumable)")
    ap.add_argument("--shard", default=None, help="K/N: only the instances K, K+N, ... (0-based), for job arrays")
    args = ap.parse_args()
    try:
        shard = None if args.shard is None else tuple(int(v) for v in args.shard.split("/"))
        if shard is not None and len(shard) != 2:
            raise ValueError
        k, n, ranks = shard_of(shard)
    except ValueError:
        raise SystemExit(f"--shard: expected K/N, e.g. 0/4, got {args.shard!r}") from None
    except CertkitError as e:
        raise SystemExit(str(e)) from None
    if ranks and args.out is not None:
        args.out = args.out.with_name(f"{args.out.stem}.shard-{k}-of-{n}.csv")
    retain_freed_memory()   # as the certkit command does
    for path in args.reference + args.results:
        if not path.exists():
            raise SystemExit(f"{path}: no such file or folder")
    given = {_label(p): load_reference(p) for p in args.reference}
    done = {}
    if args.out and args.out.exists():
        done = {(r[0], r[1], r[2]): r for r in csv.reader(open(args.out)) if len(r) >= 5}
    out = open(args.out, "a", newline="") if args.out else None
    t_all = time.perf_counter()
    for bench in args.bench:
        rows, known = instance_rows(bench)
        refs = dict(given)
        for results in args.results:
            refs.update(discover_references(results, bench.name))
        if args.results:
            print(f"{bench.name}: answers of {', '.join(refs) if refs else 'no tool'} in "
                  + ", ".join(str(r) for r in args.results), flush=True)
        rows = [r for r in rows if args.onnx_filter in Path(r[0]).name]
        rows = rows[:: args.every][: args.max][k::n]
        keys = {(Path(onnx).name, Path(vnn).name) for onnx, vnn, *_ in rows}
        for path in args.reference:
            other = reference_categories(path, keys) - {bench.name}
            if other:
                print(f"{bench.name}: note: the rows of {path} that match these instances are of benchmark "
                      f"{', '.join(sorted(other))}; answers are matched by file names, which another year's "
                      "properties can share", flush=True)
        counts, wrong, contradicted, seconds, solved_secs = Counter(), [], [], 0.0, []
        disputed = 0                      # WRONG answers that another tool's unsat answer agrees with
        ref_secs: dict = {name: [] for name in refs}          # tool -> seconds of each instance it solved
        bab_domains, bab_seconds = 0, 0.0
        for onnx, vnn, *_ in rows:
            key = (bench.name, Path(onnx).name, Path(vnn).name)
            if key in done:
                status, secs, method = done[key][3], float(done[key][4]), done[key][5] if len(done[key]) > 5 else ""
                domains = int(done[key][6]) if len(done[key]) > 6 else 0
            else:
                res = verify_instance(bench / onnx.strip(), bench / vnn.strip(), timeout=args.timeout)
                status, secs, method, domains = res.status, res.seconds, res.method, res.domains
                if out:
                    csv.writer(out).writerow([*key, status, f"{secs:.2f}", method, domains])
                    out.flush()
            if domains:
                bab_domains, bab_seconds = bab_domains + domains, bab_seconds + secs
            counts[status] += 1
            seconds += secs
            if status in ("sat", "unsat"):
                solved_secs.append(secs)
            said = []
            agree = [name for name, ref in refs.items() if ref.get(key[1:], (None,))[0] == "unsat"]
            for name, ref in refs.items():
                r, r_secs = ref.get(key[1:], (None, float("inf")))
                if r in ("sat", "unsat"):
                    ref_secs[name].append(r_secs)
                    if status == "unsat" and r == "sat":    # a claim: 2021's results hold no counterexamples
                        wrong.append(f"{onnx} {vnn}: certkit {status}, {name} {r}"
                                     + (f" (unsat per {', '.join(agree)})" if agree else ""))
                        disputed += bool(agree)
                    elif status == "sat" and r == "unsat":    # certkit's point replays in onnxruntime
                        contradicted.append(f"{onnx} {vnn}: {name} unsat, certkit's counterexample replays in "
                                            "onnxruntime")
                said.append(f"{name} {r}" + (f" ({r_secs:.1f} s)" if r in ("sat", "unsat") else ""))
            if known.get((onnx, vnn)) in ("sat", "unsat") and status in ("sat", "unsat") \
                    and status != known[(onnx, vnn)]:
                wrong.append(f"{onnx} {vnn}: certkit {status}, expected.csv {known[(onnx, vnn)]}")
            bab = f", {domains} domains" if domains else ""
            print(f"  {key[1]} {key[2]}: {status} ({secs:.1f} s{', ' + method if method else ''}{bab})"
                  + (f"; {', '.join(said)}" if said else ""), flush=True)
        solved = counts["sat"] + counts["unsat"]
        line = (f"{bench.name}: {len(rows)} instances, solved {solved} (unsat {counts['unsat']}, sat {counts['sat']}), "
                f"timeout {counts['timeout']}, unknown {counts['unknown']}, error {counts['error']}, "
                f"WRONG {len(wrong)}" + (f" ({disputed} of them unsat per another tool)" if disputed else "")
                + (f", reference unsat contradicted by a counterexample {len(contradicted)}" if contradicted else "")
                + f"; {seconds:.0f} s"
                + (f", median {median(solved_secs):.1f} s per solved" if solved_secs else ""))
        for name, secs_list in ref_secs.items():
            within = sum(t <= args.timeout for t in secs_list)
            line += (f"; {name} solved {len(secs_list)}" + (f" (ratio {solved / len(secs_list):.2f})" if secs_list
                                                            else "")
                     + f", {within} within {args.timeout:g} s" + (f" (ratio {solved / within:.2f})" if within else "")
                     + (f", median {median(secs_list):.1f} s" if secs_list else ""))
        if bab_domains:
            line += (f"; branch and bound: {bab_domains} domains in the {bab_seconds:.0f} s of the instances that "
                     f"branched = {bab_domains / bab_seconds:.0f} domains/s (whole-instance time)")
        print(line, flush=True)
        for w in wrong:
            print("  WRONG", w)
        for w in contradicted:
            print("  REFERENCE CONTRADICTED", w)
    print(f"total {time.perf_counter() - t_all:.0f} s")


if __name__ == "__main__":
    main()
