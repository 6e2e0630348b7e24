"""certkit on a shared machine: one run alone, two identical runs at once, and one run beside a busy neighbour, for
certify, verify and train; with certkit's thread governor (the default) and with the threads fixed at every core
(torch's default, certkit's behaviour before the governor).

    python bench/concurrency.py [--commands certify,verify,train] [--repeats 1]

Prints the wall time of each case and its ratio to the same command alone under the governor. Goals: each of two
concurrent runs <= 2.2x one run alone; one run alone no slower than with the threads fixed at every core. The busy
neighbour is a torch process multiplying matrices with torch's default threads (every core).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

COMMANDS = {
    "certify": "certify --max 100 --n 20000 --quiet --overwrite --out {out}.tsv",
    "verify": "verify --eps 0.02 --method IBP,CROWN,alpha-CROWN --max 300 --quiet --overwrite --out {out}.tsv",
    "train": "train --config digits_crown_ibp --epochs 6 --quiet --out {out}.pt",
}
NEIGHBOUR = ("import torch\nx = torch.rand(512, 512)\nwhile True:\n    x = (x @ x).clamp_(-1, 1)\n")


def start(cmd: str, out: str, env: dict) -> subprocess.Popen:
    args = [sys.executable, "-m", "certkit.cli", *cmd.format(out=out).split()]
    return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def timed(procs: list[subprocess.Popen]) -> list[float]:
    t0, ends = time.perf_counter(), {}
    while len(ends) < len(procs):
        for i, p in enumerate(procs):
            if i not in ends and p.poll() is not None:
                if p.returncode != 0:
                    raise SystemExit(f"a certkit run failed (exit {p.returncode})")
                ends[i] = time.perf_counter() - t0
        time.sleep(0.01)
    return [ends[i] for i in range(len(procs))]


def case(cmd: str, env: dict, n: int, neighbour: bool, tmp: str) -> float:
    """Mean wall seconds of ``n`` identical runs started together (beside a busy neighbour if asked)."""
    nb = subprocess.Popen([sys.executable, "-c", NEIGHBOUR], env={k: v for k, v in os.environ.items()
                                                                 if k not in ("OMP_NUM_THREADS", "CERTKIT_THREADS")}
                          ) if neighbour else None
    try:
        if nb is not None:
            time.sleep(1.0)  # the neighbour is running before certkit starts
        run_dir = tempfile.mkdtemp(dir=tmp)  # fresh outputs for every case (train refuses an existing checkpoint)
        walls = timed([start(cmd, os.path.join(run_dir, f"r{i}"), env) for i in range(n)])
    finally:
        if nb is not None:
            nb.kill()
            nb.wait()
    return sum(walls) / len(walls)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--commands", default="certify,verify,train")
    ap.add_argument("--repeats", type=int, default=1, help="runs of each case (the fastest is kept)")
    args = ap.parse_args()
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "CERTKIT_THREADS")}
    fixed = {**base, "CERTKIT_THREADS": str(len(os.sched_getaffinity(0)))}
    print(f"{os.cpu_count()} CPUs, {len(os.sched_getaffinity(0))} usable; times are wall seconds per run")
    print(f"{'command':<9}{'threads':<11}{'alone':>8}{'two at once':>13}{'x alone':>9}{'busy neighbour':>16}"
          f"{'x alone':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.commands.split(","):
            cmd = COMMANDS[name]
            rows = {}
            for label, env in (("governor", base), ("all cores", fixed)):
                best = lambda n, nb, env=env, cmd=cmd: min(case(cmd, env, n, nb, tmp) for _ in range(args.repeats))
                rows[label] = (best(1, False), best(2, False), best(1, True))
            ref = rows["governor"][0]
            for label, (alone, two, busy) in rows.items():
                print(f"{name:<9}{label:<11}{alone:>8.2f}{two:>13.2f}{two / ref:>9.2f}{busy:>16.2f}{busy / ref:>9.2f}",
                      flush=True)


if __name__ == "__main__":
    main()
