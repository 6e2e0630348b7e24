"""Same numbers before and after a refactoring: run a fixed set of short certkit commands into a folder, then compare
two such folders (result rows without their timing columns, trained weights bit for bit, printed output without
timings and paths).

    python bench/same_numbers.py run OUT_DIR              # with the certkit under test on the path
    python bench/same_numbers.py compare OLD_DIR NEW_DIR  # exit 1 when anything differs

To run an older commit: ``git worktree add /tmp/old-certkit COMMIT``, make a folder holding only a link named
``certkit`` to it, and run with ``PYTHONPATH=<that folder>`` (the commands start ``python -m certkit.cli``, which
then imports the older tree first). About 90 s per run on 2 CPU cores; run the two one after the other.
"""
from __future__ import annotations

import argparse
import csv
import re
import subprocess
import sys
from pathlib import Path

VNN = Path(__file__).resolve().parent.parent / "tests" / "data" / "vnncomp2021"

COMMANDS = {
    "c_gauss": "certify --max 20 --n 2000 --out c_gauss.tsv --quiet",
    "c_lvm": "certify --method lvm --max 10 --n 2000 --calibration-size 20 --calibration-noise 100 --out c_lvm.tsv "
             "--quiet",
    "c_seq": "certify --method sequential --radii 0.25 --max 10 --n 2000 --out c_seq.tsv --quiet",
    "c_adapt": "certify --method adaptive --standard-model bundled --mixing-weight 0.9 --max 10 --n 1000 "
               "--out c_adapt.tsv --quiet",
    "p": "predict --max 20 --n 500 --out p.tsv --quiet",
    "v": "verify --eps 0.02 --method IBP,CROWN --max 30 --out v.tsv --quiet",
    "conf": "conformal --splits 3 --n-mc 32 --attack-steps 2 --out conf.tsv --quiet",
    "t_cibp": "train --config digits_crown_ibp --epochs 3 --out t_cibp.pt --quiet",
    "t_sabr": "train --method sabr --eps 0.1 --epochs 2 --hidden 32 --attack-steps 2 --kappa-final 0 --out t_sabr.pt "
              "--quiet",
    "t_nat": "train --method natural --epochs 2 --hidden 32 --out t_nat.pt --quiet",
    "t_gauss": "train --method gaussian --epochs 2 --hidden 32 --out t_gauss.pt --quiet",
    "t_dual": "train --method dual --init-from t_gauss.pt --epochs 1 --consistency 15 --out t_dual.pt --quiet",
    "t_mse": "train --method denoiser --sigma 0.5 --epochs 1 --classifier t_nat.pt --out t_mse.pt --quiet",
    "t_stab": "train --method denoiser --objective stability --sigma 0.5 --epochs 1 --classifier t_nat.pt "
              "--init-from t_mse.pt --out t_stab.pt --quiet",
    "t_mix": "train --method mixing --standard-model t_nat.pt --classifier bundled --epochs 1 --eps-l2 0.5 "
             "--attack-steps 2 --out t_mix.pt --quiet",
    "t_rct": "train --method rct --init-from t_gauss.pt --epochs 1 --eps-l2 0.125 --out t_rct.pt --quiet",
    "vi": f"verify --onnx {VNN / 'test_sat.onnx'} --vnnlib {VNN / 'test_prop.vnnlib'} --result vi.txt --timeout 30",
}


def run(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, args in COMMANDS.items():
        r = subprocess.run([sys.executable, "-m", "certkit.cli", *args.split()], cwd=out, capture_output=True,
                           text=True)
        (out / f"{name}.out").write_text(r.stdout + f"rc={r.returncode}\n")
        print(f"{name}: exit {r.returncode}", flush=True)


def _rows(path: Path) -> list[dict]:
    rows = list(csv.DictReader(open(path), delimiter="\t"))
    for r in rows:
        r.pop("time", None)
        r.pop("seconds", None)
    return rows


def _text(path: Path, root: Path) -> str:
    text = path.read_text().replace(str(root), "<dir>")
    return re.sub(r"\(\d+\.\d+ s[^)]*\)", "(<time>)", text)


def compare(old: Path, new: Path) -> int:
    import torch

    diffs = []
    for p in sorted(old.glob("*.tsv")):
        if _rows(p) != _rows(new / p.name):
            diffs.append(f"rows differ: {p.name}")
    for p in sorted(old.glob("*.pt")):
        a = torch.load(p, weights_only=True)["state_dict"]
        b = torch.load(new / p.name, weights_only=True)["state_dict"]
        if a.keys() != b.keys() or not all(torch.equal(a[k], b[k]) for k in a):
            diffs.append(f"weights differ: {p.name}")
    for p in sorted(old.glob("*.out")) + sorted(old.glob("*.txt")):
        if _text(p, old) != _text(new / p.name, new):
            diffs.append(f"output differs: {p.name}")
    checked = len(list(old.glob("*.tsv"))) + len(list(old.glob("*.pt"))) + len(list(old.glob("*.out")))
    print("\n".join(diffs) or f"same numbers: {checked} result files, checkpoints and outputs compared")
    return 1 if diffs else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("out", type=Path)
    c = sub.add_parser("compare")
    c.add_argument("old", type=Path)
    c.add_argument("new", type=Path)
    a = ap.parse_args()
    if a.cmd == "run":
        run(a.out)
    else:
        sys.exit(compare(a.old, a.new))


if __name__ == "__main__":
    main()
