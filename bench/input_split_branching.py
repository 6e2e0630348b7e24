"""Input-split branching rules side by side, in one run: the split along the largest first-order gain of the two
halves' margins (verifiers/complete/input_split.py ``split_gains``, one gains pass deciding ``gain_levels``
generations) against the width x CROWN-sensitivity score (``split_scores``, ``gradient_split=False``).

    python bench/input_split_branching.py BENCH_DIR INSTANCE [INSTANCE ...] [--timeout 30] [--levels 1 12]

BENCH_DIR is a VNN-COMP benchmark folder (onnx/ and vnnlib/, files unzipped); each INSTANCE is
``network.onnx:property.vnnlib`` relative to it (for example lsnc quadrotor2d_state.onnx:quadrotor2d_state_3.vnnlib
or acasxu_2023 ACASXU_run2a_1_1_batch_2000.onnx:prop_5.vnnlib). Prints, per instance and rule, the answer, the
seconds and the sub-boxes bounded, then the ratios of boxes and seconds (sensitivity / gains: above 1, the gains
rule needed fewer). Run it alone on the machine: it times whole searches.
"""
from __future__ import annotations

import argparse
import functools
from pathlib import Path

from certkit.common.memory import retain_freed_memory
from certkit.verifiers.complete import input_split, strategy


def run(onnx: Path, vnnlib: Path, timeout: float, **options) -> tuple[str, float, int]:
    """(status, seconds, sub-boxes) of ``verify_instance`` with input_split_bab's ``options``."""
    original = strategy.input_split_bab
    strategy.input_split_bab = functools.partial(input_split.input_split_bab, **options)
    try:
        r = strategy.verify_instance(str(onnx), str(vnnlib), timeout=timeout)
    finally:
        strategy.input_split_bab = original
    return r.status, r.seconds, int(r.domains or 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bench_dir", type=Path)
    ap.add_argument("instances", nargs="+", help="network.onnx:property.vnnlib, relative to bench_dir")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds per instance and rule")
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 12], help="gain_levels values to run")
    args = ap.parse_args()
    retain_freed_memory()
    rules = [("sensitivity", {"gradient_split": False})] + [
        (f"gains/{k}", {"gradient_split": True, "gain_levels": k}) for k in args.levels]
    for item in args.instances:
        net, prop = item.split(":")
        rows = {}
        for name, options in rules:
            rows[name] = run(args.bench_dir / "onnx" / net, args.bench_dir / "vnnlib" / prop, args.timeout, **options)
            status, seconds, boxes = rows[name]
            print(f"{net} {prop} {name:12s} {status:8s} {seconds:6.2f} s {boxes:9d} boxes", flush=True)
        _, s0, b0 = rows["sensitivity"]
        for name, (_, s, b) in rows.items():
            if name != "sensitivity":
                print(f"  sensitivity / {name}: boxes {b0 / max(b, 1):.2f}, seconds {s0 / s:.2f}")


if __name__ == "__main__":
    main()
