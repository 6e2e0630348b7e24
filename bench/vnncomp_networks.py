"""Which VNN-COMP networks certkit imports and bounds: one row per network, one summary line per benchmark.

    python bench/vnncomp_networks.py ROOT [ROOT ...] [--max-mb 5] [--timeout 300] [--out networks.csv]
                                     [--markdown]

ROOT is a checkout of a VNN-COMP benchmarks repository (ChristopherBrix/vnncomp2022_benchmarks, ..._2024_...: a
folder holding benchmarks/NAME/instances.csv) or one benchmark folder; the ``.onnx.gz`` and ``.vnnlib.gz`` files are
read as they are shipped (the networks are unpacked to a temporary folder, so that the bench also measures versions
of certkit that read plain ``.onnx`` only: put such a version's package folder first on PYTHONPATH). For every
distinct network of every benchmark whose ONNX file is at most --max-mb megabytes (uncompressed), a forked child
process (killed after --timeout seconds) does what a user's first ``certkit verify`` does:

  1. import: the ONNX file into certkit's graph, compared with onnxruntime on random points of the input box of
     the network's first property (its first row in instances.csv); on failure, the ONNX op types certkit lacks
     (or the first line of the error);
  2. check: the pre-flight check that every node of the imported graph has a bound rule;
  3. bounds: IBP and CROWN of every output over that box, in float64 as the complete verifier computes them (float32
     bounds of networks with wide intermediate ranges lose more than their outputs' size to rounding: that is what
     ``--sound`` is for); 64 random points of the box and its centre run in onnxruntime must lie inside both (a
     violation beyond 1e-4 * (1 + |y|) + 1e-5 * the row's largest |y|, onnxruntime's own float32 rounding, is
     reported as UNSOUND; none is expected).

``--out`` holds one CSV row per (benchmark, network) and is appended as rows are measured: a stopped run resumes
(networks already in the file are skipped; the same file bytes in another benchmark reuse the row). The summary
prints, per benchmark: networks, those under the size limit, imported, bounded (IBP and CROWN finite and sound) and
the missing op types with how many networks lack each; ``--markdown`` prints it as a table, ``--before CSV`` adds the
counts of an earlier version's run (the summary alone: ``ROOT`` may be omitted to reprint a finished run).
"""
from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import multiprocessing as mp
import re
import time
from collections import Counter
from pathlib import Path

FIELDS = ["benchmark", "network", "mb", "sha", "status", "missing", "detail", "import_s", "ibp_s", "crown_s",
          "ibp_width", "crown_width"]


def _existing(folder: Path, rel: str) -> Path | None:
    for cand in (folder / rel, folder / (rel + ".gz")):
        if cand.is_file():
            return cand
    return None


def _raw_bytes(path: Path) -> bytes:
    # not certkit.models.onnx_proto.read_bytes: the bench also runs older certkit versions that lack it
    return gzip.open(path, "rb").read() if path.suffix == ".gz" else path.read_bytes()


def benchmark_folders(root: Path) -> list[Path]:
    """Benchmark folders (those holding an instances.csv) under root, sorted by name."""
    if (root / "instances.csv").is_file():
        return [root]
    return sorted(p.parent for p in root.glob("benchmarks/*/instances.csv")) or \
        sorted(p.parent for p in root.glob("*/instances.csv"))


def networks(bench: Path) -> list[tuple[str, Path | None, Path | None]]:
    """(network name, ONNX path or None if absent, first property's VNN-LIB path or None) per distinct network."""
    out, seen = [], set()
    for row in csv.reader(open(bench / "instances.csv")):
        if not row or row[0].startswith("#") or len(row) < 2:
            continue
        name = row[0].strip()
        if name in seen:
            continue
        seen.add(name)
        out.append((Path(name).name.removesuffix(".gz"), _existing(bench, name), _existing(bench, row[1].strip())))
    return out


def measure_one(onnx_path: str, vnnlib_path: str, report=lambda row: None, methods=("IBP", "CROWN")) -> dict:
    """The child's work (see the module docstring); returns the row's measured fields, and hands ``report`` the row
    so far before each bound method (what a killed child had measured)."""
    import torch

    from certkit.common.errors import CertkitError
    from certkit.models.onnx_import import load_onnx
    from certkit.verifiers import BoundedModule, check_model
    from certkit.verifiers.complete.vnnlib import parse_vnnlib

    row: dict = {}
    t = time.perf_counter()
    try:
        om = load_onnx(onnx_path)
    except CertkitError as e:
        msg = str(e)
        row["status"] = "not importable"
        if "unsupported ONNX op(s): " in msg:
            listed = msg.split("unsupported ONNX op(s): ", 1)[1].split("; certkit supports")[0]
            row["missing"] = " ".join(sorted({part.split(" (node")[0].strip() for part in listed.split("), ")}))
        else:
            row["detail"] = msg.replace(onnx_path, "").strip(": ").splitlines()[0][:200]
        return row
    prop = parse_vnnlib(vnnlib_path)
    term = prop.terms[0]
    lo = torch.from_numpy(term.x_L).float().reshape(om.sample_shape)
    hi = torch.from_numpy(term.x_U).float().reshape(om.sample_shape)
    gen = torch.Generator().manual_seed(0)
    pts = lo + (hi - lo) * torch.rand((64,) + tuple(om.sample_shape), generator=gen)
    pts = torch.cat([((lo + hi) / 2).unsqueeze(0), pts])
    try:
        om.check_against_onnxruntime(pts[:16])
    except CertkitError as e:
        row.update(status="not importable", detail=str(e).splitlines()[0][:200])
        return row
    row["import_s"] = round(time.perf_counter() - t, 2)
    problems = check_model(om.module, om.sample_shape)
    if problems:
        row.update(status="not bounded", detail="; ".join(problems)[:300])
        return row
    y = torch.from_numpy(om.run_onnxruntime(pts)).reshape(len(pts), -1).double()
    bm = BoundedModule(om.module.double(), om.sample_shape)
    lo, hi = lo.double(), hi.double()
    row["status"] = "bounded"
    for method in methods:
        report(dict(row, status=f"{method} over the time limit"))
        t = time.perf_counter()
        try:
            with torch.no_grad():
                lb, ub = bm.compute_bounds((lo.unsqueeze(0), hi.unsqueeze(0)), method=method)
        except (CertkitError, RuntimeError, MemoryError) as e:
            row.update(status=f"{method} failed", detail=str(e).splitlines()[0][:200])
            return row
        key = "ibp" if method == "IBP" else "crown"
        row[f"{key}_s"] = round(time.perf_counter() - t, 2)
        lb, ub = lb.detach().reshape(1, -1), ub.detach().reshape(1, -1)
        # onnxruntime computes in float32: its outputs carry the rounding of the row's largest terms
        tol = 1e-4 * (1 + y.abs()) + 1e-5 * y.abs().amax(1, keepdim=True)
        if not (torch.isfinite(lb).all() and torch.isfinite(ub).all()):
            row.update(status=f"{method} not finite")
            return row
        if ((y < lb - tol) | (y > ub + tol)).any():
            row.update(status=f"UNSOUND {method}")
            return row
        row[f"{key}_width"] = f"{(ub - lb).mean().item():.4g}"
    return row


def _child(conn, onnx_path: str, vnnlib_path: str, methods: tuple) -> None:
    import tempfile

    try:
        with tempfile.TemporaryDirectory() as tmp:
            if onnx_path.endswith(".gz"):  # unpacked, so that versions of certkit without .onnx.gz support run too
                plain = Path(tmp) / Path(onnx_path).name.removesuffix(".gz")
                plain.write_bytes(_raw_bytes(Path(onnx_path)))
                onnx_path = str(plain)
            conn.send(measure_one(onnx_path, vnnlib_path, conn.send, methods))
    except BaseException as e:  # noqa: BLE001 - reported in the row, the run goes on
        first = str(e).splitlines()[0][:160] if str(e) else ""
        conn.send({"status": "crashed", "detail": f"{type(e).__name__}: {first}"})


def run_child(onnx_path: Path, vnnlib_path: Path, timeout: float, methods: tuple = ("IBP", "CROWN")) -> dict:
    """measure_one in a forked child (torch and onnx already imported by the parent), killed after timeout s."""
    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_child, args=(send, str(onnx_path), str(vnnlib_path), tuple(methods)))
    p.start()
    send.close()
    end = time.monotonic() + timeout
    row: dict = {"status": "import over the time limit"}
    finished = False
    while not finished and recv.poll(max(0.0, end - time.monotonic())):
        try:
            row = recv.recv()
        except EOFError:  # the child died without a last word
            p.join()
            row = {"status": "crashed", "detail": f"exit code {p.exitcode} after: {row['status']}"}
            break
        finished = not row["status"].endswith("over the time limit")
    if not finished and p.is_alive():
        p.kill()
        row["detail"] = f"{timeout:.0f} s per network"
    p.join()
    return row


def _counts(rs: list[dict]) -> tuple:
    """(networks under the limit, imported, bounded, Counter of missing ops, Counter of other problems)."""
    small = [r for r in rs if r["status"] not in ("too large", "absent")]  # absent: not in the checkout
    imported = [r for r in small if r["status"] not in ("not importable", "crashed", "import over the time limit")]
    bounded = [r for r in small if r["status"] == "bounded"]
    missing: Counter = Counter(op for r in small for op in (r.get("missing") or "").split())
    other = Counter(r["status"] + (": " + re.sub(r"<built-in method (\w+) .*?>", r"\1", r["detail"])[:90]
                                   if r.get("detail") else "") for r in small
                    if r["status"] != "bounded" and not r.get("missing"))
    return small, imported, bounded, missing, other


def _ops(missing: Counter) -> str:
    return ", ".join(f"{op} ({n})" for op, n in missing.most_common()) or "-"


def summary(rows: list[dict], markdown: bool, before: list[dict] | None = None) -> str:
    """One line per benchmark; with ``before`` (rows of an earlier version), its imported / bounded counts and
    missing ops beside them."""
    by_bench: dict = {}
    for r in rows:
        by_bench.setdefault(r["benchmark"], []).append(r)
    earlier: dict = {}
    for r in before or []:
        earlier.setdefault(r["benchmark"], []).append(r)
    head = ["benchmark", "networks", "<= limit", "import", "bounded (IBP / CROWN run)", "missing ops (networks)",
            "other problems"]
    if before is not None:
        head[3:3] = ["before: import / bounded", "before: missing ops"]
    lines = []
    if markdown:
        lines += ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for bench, rs in by_bench.items():
        small, imported, bounded, missing, other = _counts(rs)
        with_crown = sum(1 for r in bounded if r.get("crown_s") not in (None, ""))
        cells = [bench, str(len(rs)), str(len(small)), str(len(imported)), f"{len(bounded)} / {with_crown}",
                 _ops(missing), "; ".join(f"{k} ({n})" for k, n in other.most_common()) or "-"]
        if before is not None:
            _, imp0, bnd0, miss0, _ = _counts(earlier.get(bench, []))
            cells[3:3] = [f"{len(imp0)} / {len(bnd0)}" if bench in earlier else "not run", _ops(miss0)]
        lines.append("| " + " | ".join(cells) + " |" if markdown else "  ".join(cells))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("roots", nargs="*", type=Path)
    ap.add_argument("--max-mb", type=float, default=5.0, help="largest ONNX file measured, megabytes uncompressed")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per network (import + IBP + CROWN)")
    ap.add_argument("--out", type=Path, default=Path("vnncomp_networks.csv"))
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--before", type=Path, help="rows of the same bench run with an earlier version (its --out): "
                    "the summary shows its imported / bounded counts and missing ops beside")
    ap.add_argument("--methods", nargs="+", default=["IBP", "CROWN"], choices=["IBP", "CROWN"],
                    help="bound methods run on each imported network (IBP alone: a quick census)")
    ap.add_argument("--crown-per-benchmark", type=int, default=None, metavar="K",
                    help="CROWN on the first K measured networks of each benchmark only, IBP on the rest (benchmarks "
                    "of dozens of networks of one architecture)")
    args = ap.parse_args()
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401
    import torch  # noqa: F401 - imported once here, inherited by every forked child

    import certkit.models.onnx_import  # noqa: F401
    import certkit.verifiers  # noqa: F401
    rows = list(csv.DictReader(open(args.out))) if args.out.is_file() else []
    done = {(r["benchmark"], r["network"]) for r in rows}
    by_sha = {r["sha"]: r for r in rows if r.get("sha")}
    new_file = not args.out.is_file()
    with open(args.out, "a", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        if new_file:
            w.writeheader()
        for root in args.roots:
            for bench in benchmark_folders(root):
                measured = 0
                for name, onnx_path, vnnlib_path in networks(bench):
                    if (bench.name, name) in done:
                        continue
                    row = {"benchmark": bench.name, "network": name}
                    if onnx_path is None or vnnlib_path is None:
                        row["status"] = "absent"
                    else:
                        raw = _raw_bytes(onnx_path)
                        row["mb"] = f"{len(raw) / 1e6:.2f}"
                        row["sha"] = hashlib.sha256(raw).hexdigest()[:16]
                        if raw.startswith(b"version https://git-lfs"):  # a Git LFS pointer, not the network
                            row.update(status="absent", detail="a Git LFS pointer")
                        elif len(raw) > args.max_mb * 1e6:
                            row["status"] = "too large"
                        elif row["sha"] in by_sha:
                            row.update({k: v for k, v in by_sha[row["sha"]].items() if k not in row})
                        else:
                            t = time.perf_counter()
                            methods = args.methods
                            if args.crown_per_benchmark is not None and measured >= args.crown_per_benchmark:
                                methods = [m for m in methods if m != "CROWN"]
                            measured += 1
                            row.update(run_child(onnx_path, vnnlib_path, args.timeout, methods))
                            print(f"{bench.name}/{name}: {row['status']} {row.get('missing') or ''} "
                                  f"{row.get('detail') or ''} ({time.perf_counter() - t:.1f} s)", flush=True)
                            by_sha[row["sha"]] = row
                    w.writerow(row)
                    f.flush()
                    rows.append(row)
                    done.add((bench.name, name))
    before = list(csv.DictReader(open(args.before))) if args.before else None
    print(summary(rows, args.markdown, before))


if __name__ == "__main__":
    main()
