"""Generate a small soundness benchmark on this machine and audit verifiers on it.

    python bench/soundness_bench.py --out sb-bench [--preset cpu] [--models mlp_4_hidden:0.2,cnn_1_conv:0.5,...]
        [--verifiers certkit,certkit-crown,bug-shrink-input,marabou] [--timeout 10] [--mlp-input-size 20]

Each model is ``certkit soundness generate`` (resumable: rerunning skips finished models), then every verifier runs
on every instance (``certkit soundness run``, resumable) and the answers are scored. Prints, per model, the
generation time and how many of the planted pairs became valid, survived the paper's PGD sweep, and survived every
attack (the planted instances); then the audit table. All numbers come from this one run. Built-in verifiers run
through one persistent worker; ``--compare-process-per-instance`` also runs them a process per instance (results in
``results/NAME.process-per-instance``, not scored) and prints the ratio of the two audit times.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from certkit.soundness_bench import config_with_preset, format_audit_table, generate, run_verifier, score
from certkit.soundness_bench.generate import parse_sweep

DEFAULT_MODELS = ("mlp_4_hidden:0.2,mlp_4_hidden:0.5,cnn_1_conv:0.2,cnn_1_conv:0.5,cnn_avgpool:0.2,"
                  "cnn_sigmoid:0.5")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("sb-bench"))
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated arch:eps (eps relative to r = 0.1)")
    ap.add_argument("--verifiers", default="certkit,certkit-ibp,certkit-crown,certkit-alpha-crown,bug-shrink-input,"
                                           "marabou")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds per instance in the audit")
    ap.add_argument("--compare-process-per-instance", action="store_true",
                    help="also audit with a fresh process per instance (the way before the persistent worker) and "
                         "print the time ratio")
    ap.add_argument("--n-regular", type=int, default=10)
    ap.add_argument("--mlp-input-size", type=int, default=20,
                    help="input length of the MLP families (10-dim boxes have only 1024 vertices, all of which the "
                         "strong check enumerates)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sweep", default=None, help="hiddenness sweep STEP:ITERS,... (default: the paper's 8 settings)")
    ap.add_argument("--no-strong", action="store_true", help="skip certkit's stronger attacks")
    ap.add_argument("--opt", action="append", default=[],
                    help="extra generation option KEY=VALUE (e.g. epochs=3000), repeatable")
    args = ap.parse_args()
    extra = {"strong": not args.no_strong}
    if args.sweep:
        extra["sweep"] = parse_sweep(args.sweep)
    for kv in args.opt:
        k, v = kv.split("=", 1)
        extra[k] = type(getattr(config_with_preset(args.preset, out="x"), k))(v)
    rows = []
    for spec in args.models.split(","):
        arch, eps = spec.split(":")
        out = args.out / f"{arch}_eps{eps}"
        gen_json = out / "private" / "generation.json"
        if gen_json.is_file():
            s = json.loads(gen_json.read_text())
        else:
            size = args.mlp_input_size if arch.startswith("mlp") else None
            cfg = config_with_preset(args.preset, out=str(out), arch=arch, eps_rel=float(eps), seed=args.seed,
                                     n_regular=args.n_regular, input_size=size, **extra)
            s = generate(cfg, resume=True)
        rows.append(s)
        print(f"{arch:<14} eps {float(eps):<4g} width {s['width']:<5} epochs {s['epochs_run']:<6} "
              f"{s['seconds_total']:>7.0f} s   valid {s['valid_pairs']:>2}/{s['planted_pairs']}   survive sweep "
              f"{s['survive_sweep']:>2}   hidden {s['hidden']:>2}   instances {s['planted_instances']} planted + "
              f"{s['regular_instances']} regular", flush=True)
    total_p = sum(s["planted_pairs"] for s in rows)
    print(f"generation: {sum(s['seconds_total'] for s in rows):.0f} s for {len(rows)} models; planted pairs valid "
          f"{sum(s['valid_pairs'] for s in rows)}/{total_p}, surviving the PGD sweep "
          f"{sum(s['survive_sweep'] for s in rows)}/{total_p}, surviving every attack {sum(s['hidden'] for s in rows)}"
          f"/{total_p}")
    verifiers = [v for v in args.verifiers.split(",") if v]
    total = {True: 0.0, False: 0.0}
    for v in verifiers:
        for worker in ((True, False) if args.compare_process_per_instance else (True,)):
            out = args.out / "results" / (v if worker else f"{v}.process-per-instance")
            t0 = time.perf_counter()
            rows = run_verifier(args.out, verifier=v, timeout=args.timeout, grace=5.0, resume=True, quiet=True,
                                results=out, worker=worker)
            secs = time.perf_counter() - t0
            total[worker] += secs
            print(f"ran {v} ({'persistent worker' if worker else 'a process per instance'}) on {len(rows)} "
                  f"instances in {secs:.0f} s", flush=True)
    if args.compare_process_per_instance and total[False] > 0:
        print(f"audit time, persistent worker / a process per instance: {total[True]:.0f} s / {total[False]:.0f} s "
              f"= {total[True] / total[False]:.2f}")
    if not verifiers:
        return
    summary = score(args.out, [args.out / "results" / v for v in verifiers])
    print(format_audit_table(summary))
    (args.out / "audit.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
