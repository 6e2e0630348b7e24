"""``certkit verify --mode benchmark``: run a registered verifier (certkit's by default) on every row of a VNN-COMP
``instances.csv``, in this process, one results row per instance (resumable), optionally one VNN-COMP result file
per instance."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from certkit.common import threads
from certkit.common.errors import CertkitError
from certkit.common.options import options_dict
from certkit.runs.config import RunConfig, open_results
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
    """

    instances: str = ""
    verifier: str = "certkit"
    options: dict = field(default_factory=dict)
    timeout_scale: float = 1.0
    result_dir: str | None = None


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
    """Answer every instance with ``cfg.verifier``; returns the rows (COLUMNS) of the results file ``cfg.out``.

    Raises:
        CertkitError: bad instances file, unknown verifier, an existing results file without resume/overwrite.
    """
    rows = read_instances(cfg.instances)
    verifier = get_verifier(cfg.verifier, cfg.options)
    if cfg.out is None:  # default: results.tsv beside the instances file
        cfg.out = str(Path(cfg.instances).with_name("results.tsv"))
    settings = {"instances": str(cfg.instances), "verifier": cfg.verifier, "version": verifier.version(),
                **options_dict(verifier.opts), "timeout_scale": cfg.timeout_scale, "rows": [list(r[:2]) for r in rows]}
    writer = open_results(cfg, settings, COLUMNS)
    try:
        root = Path(cfg.instances).parent
        todo = [k for k in range(len(rows)) if k not in writer.done]
        for k in tqdm(todo, desc=f"instances ({cfg.verifier})", disable=cfg.quiet, dynamic_ncols=True):
            threads.tick()
            onnx_rel, vnn_rel, tmo = rows[k]
            res = verifier.verify(Instance(root / onnx_rel, root / vnn_rel), tmo * cfg.timeout_scale)
            if cfg.result_dir is not None:
                write_result_file(Path(cfg.result_dir) / f"{k:04d}_{Path(vnn_rel).stem}.txt", res)
            writer.write({"idx": k, "onnx": onnx_rel, "vnnlib": vnn_rel, "result": res.status,
                          "seconds": round(res.seconds, 3),
                          "reason": res.reason.replace("\t", " ").replace("\n", " "),
                          "witness": _witness(res, Instance(root / onnx_rel, root / vnn_rel))})
        return sorted(writer.rows, key=lambda r: int(r["idx"]))
    finally:
        writer.close()
