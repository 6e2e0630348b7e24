"""``certkit verify --mode benchmark``: run a registered verifier (certkit's by default) on every row of a VNN-COMP
``instances.csv``, one results row per instance (resumable), optionally one VNN-COMP result file per instance.

Sharding, as ``certkit certify``: ``--shard K/N`` answers the instances K, K + N, K + 2N, ... (a job array: one
shard per job, then ``certkit merge``); under torchrun every rank takes its share, writes
``<out>.shard-K-of-N.tsv`` as it goes, and rank 0 merges them into ``<out>`` when all are done. The merged file has
the rows and the settings of a single-process run (it can be resumed as one).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from certkit.common import threads
from certkit.common.errors import CertkitError
from certkit.common.options import options_dict
from certkit.runs.config import RunConfig, check_shard_configs, open_results, shard_of, shard_path
from certkit.verifiers.complete.registry import Instance, get_verifier
from certkit.verifiers.complete.vnncomp_format import read_instances, witness_checks, write_result_file

COLUMNS = ("idx", "onnx", "vnnlib", "result", "seconds", "reason", "witness")


@dataclass
class InstancesConfig(RunConfig):
    """Options of a VNN-COMP benchmark run.

    Attributes:
        instances: the benchmark's instances.csv (rows onnx,vnnlib,timeout; paths relative to its folder).
        verifier: a registered verifier name (verifiers/complete/registry.py).
        options: values of the options the verifier declares (e.g. certkit's ``bab``), by name.
        timeout_scale: multiplies every instance's timeout (seconds).
        result_dir: also write one VNN-COMP result file per instance there.
        shard: (K, N): answer only the instances whose row index is K modulo N (0 <= K < N).
    """

    instances: str = ""
    verifier: str = "certkit"
    options: dict = field(default_factory=dict)
    timeout_scale: float = 1.0
    result_dir: str | None = None
    shard: tuple | None = None


def _witness(res, instance) -> str:
    """The ``witness`` column: for sat, which re-checks of the written counterexample held (``exact``: zero
    tolerance; ``vnncomp``: the competition's atol 1e-4 / rtol 1e-3), ``+``-joined, or ``none``; empty otherwise."""
    if res.status != "sat":
        return ""
    checks = res.checks
    if checks is None:   # another verifier's answer: check it here
        try:
            checks = witness_checks(instance.network(), instance.property(), res)
        except CertkitError:
            checks = {}
    held = [k for k in ("exact", "vnncomp") if checks.get(k)]
    return "+".join(held) or "none"


def run_instances(cfg: InstancesConfig) -> list[dict]:
    """Answer every instance (of this shard) with ``cfg.verifier``; returns the rows (COLUMNS) of the results file
    ``cfg.out`` (under torchrun, rank 0 returns the merged rows of all ranks).

    Raises:
        CertkitError: bad instances file, unknown verifier, bad shard, an existing results file without
            resume/overwrite.
    """
    from certkit.common import distributed

    rows = read_instances(cfg.instances)
    verifier = get_verifier(cfg.verifier, cfg.options)
    k, n, torchrun = shard_of(cfg.shard)
    if cfg.out is None:  # default: results.tsv beside the instances file
        cfg.out = str(Path(cfg.instances).with_name("results.tsv"))
    settings = {"instances": str(cfg.instances), "verifier": cfg.verifier, "version": verifier.version(),
                **options_dict(verifier.opts), "timeout_scale": cfg.timeout_scale, "rows": [list(r[:2]) for r in rows]}
    final = cfg.out
    if n > 1:
        settings["shard"] = [k, n]
        if torchrun:
            cfg.out = shard_path(final, k, n)
    writer = open_results(cfg, settings, COLUMNS)
    try:
        root = Path(cfg.instances).parent
        todo = [i for i in range(k, len(rows), n) if i not in writer.done]
        desc = f"instances ({cfg.verifier})" + (f" shard {k}/{n}" if n > 1 else "")
        for i in tqdm(todo, desc=desc, disable=cfg.quiet or (torchrun and k != 0), dynamic_ncols=True):
            threads.tick()
            onnx_rel, vnn_rel, tmo = rows[i]
            res = verifier.verify(Instance(root / onnx_rel, root / vnn_rel), tmo * cfg.timeout_scale)
            if cfg.result_dir is not None:
                write_result_file(Path(cfg.result_dir) / f"{i:04d}_{Path(vnn_rel).stem}.txt", res)
            writer.write({"idx": i, "onnx": onnx_rel, "vnnlib": vnn_rel, "result": res.status,
                          "seconds": round(res.seconds, 3),
                          "reason": res.reason.replace("\t", " ").replace("\n", " "),
                          "witness": _witness(res, Instance(root / onnx_rel, root / vnn_rel))})
        mine = sorted(writer.rows, key=lambda r: int(r["idx"]))
    finally:
        writer.close()
    if not torchrun:
        return mine
    distributed.barrier()
    cfg.out = final
    if k != 0:
        return mine
    return merge_instance_shards(final, [shard_path(final, i, n) for i in range(n)],
                                 overwrite=cfg.overwrite or cfg.resume)


def result_counts(rows: list[dict]) -> str:
    """``sat 3, timeout 1, unsat 5``: how many rows have each result."""
    counts: dict = {}
    for r in rows:
        counts[r["result"]] = counts.get(r["result"], 0) + 1
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))


def is_instance_shard(path: str | Path) -> bool:
    """Whether ``path`` is a results file of ``verify --mode benchmark`` (its settings name an instances file)."""
    cfg_path = Path(path).with_name(Path(path).name + ".config.json")
    try:
        return "instances" in json.loads(cfg_path.read_text())
    except (OSError, ValueError, TypeError):
        return False


def merge_instance_shards(out: str | Path, shards: list, overwrite: bool = False) -> list[dict]:
    """Merge the results files of the N shards of one benchmark run into ``out``: the rows (by instance index) and
    the settings of a single-process run. Returns the rows.

    Raises:
        CertkitError: a shard is missing, unfinished or given twice, was computed with other settings, or ``out``
            exists without overwrite.
    """
    from certkit.common.results import ResultWriter

    configs = []
    for path in map(Path, shards):
        cfg_path = path.with_name(path.name + ".config.json")
        if not path.is_file() or not cfg_path.is_file():
            raise CertkitError(f"{path} is not a shard of a benchmark run (its .tsv and .config.json are needed)")
        configs.append(json.loads(cfg_path.read_text()))
    n, common = check_shard_configs(list(shards), configs)
    merged = []
    for path, c in zip(shards, configs):
        k = c["shard"][0]
        with ResultWriter(path, c, COLUMNS, resume=True) as part:
            want = set(range(k, len(common["rows"]), n))
            if {int(r["idx"]) for r in part.rows} != want:
                raise CertkitError(f"{path} is unfinished ({len(part.rows)} of {len(want)} instances): finish it "
                                   f"with --resume first")
            merged += part.rows
    merged.sort(key=lambda r: int(r["idx"]))
    with ResultWriter(out, common, COLUMNS, resume=False, overwrite=overwrite) as writer:
        for r in merged:
            writer.write(r)
    return merged
