"""Run certkit on VNN-COMP benchmark folders and compare with another tool's published answers.

    python bench/vnncomp_compare.py BENCH_DIR [BENCH_DIR ...] --reference a-b-CROWN.csv [--timeout 30] [--max 10]

BENCH_DIR is a VNN-COMP 2021 benchmark folder (with *_instances.csv); the reference CSV has the VNN-COMP 2021
results layout (category,onnx,vnnlib,prepare_seconds,result,seconds) with result SAT/UNSAT/violated/holds/....
Prints, per benchmark, certkit's answer counts, how many answers agree with the reference, and every
CONTRADICTION (certkit unsat where the reference found a counterexample, or certkit sat where the reference
proved unsat). certkit's sat answers are validated by onnxruntime, so a contradiction on a sat answer points
at the reference tool.
"""
from __future__ import annotations

import argparse
import csv
import time
from collections import Counter
from pathlib import Path

from certkit.verifiers.strategy import verify_instance

_NORMAL = {"sat": "sat", "violated": "sat", "unsat": "unsat", "holds": "unsat"}


def load_reference(path):
    ref = {}
    for row in csv.reader(open(path)):
        if len(row) >= 5:
            key = (Path(row[1]).name, Path(row[2]).name)
            ref[key] = _NORMAL.get(row[4].strip().lower(), "other")
    return ref


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bench", nargs="+", type=Path)
    ap.add_argument("--reference", type=Path, default=None)
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds per instance (certkit)")
    ap.add_argument("--max", type=int, default=None, help="first N instances of each benchmark")
    args = ap.parse_args()
    ref = load_reference(args.reference) if args.reference else {}
    for bench in args.bench:
        csv_path = next(bench.glob("*instances.csv"))
        rows = [r for r in csv.reader(open(csv_path)) if r][: args.max]
        counts, agree, compared, contra = Counter(), 0, 0, []
        t0 = time.perf_counter()
        for onnx, vnn, *_ in rows:
            res = verify_instance(bench / onnx.strip(), bench / vnn.strip(), timeout=args.timeout)
            counts[res.status] += 1
            r = ref.get((Path(onnx).name, Path(vnn).name))
            if r in ("sat", "unsat") and res.status in ("sat", "unsat"):
                compared += 1
                agree += r == res.status
                if r != res.status:
                    contra.append(f"{onnx} {vnn}: certkit {res.status}, reference {r}")
            print(f"  {Path(onnx).name} {Path(vnn).name}: {res.status} ({res.seconds:.1f} s) reference {r}",
                  flush=True)
        print(f"{bench.name}: {len(rows)} instances in {time.perf_counter() - t0:.0f} s, "
              + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
              + (f"; agrees with reference on {agree}/{compared} decided" if ref else ""), flush=True)
        for c in contra:
            print("  CONTRADICTION", c)


if __name__ == "__main__":
    main()
