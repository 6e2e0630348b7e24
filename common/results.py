"""Append-only result tables shared by every long-running command (certify, predict, verify).

Rows are written one at a time and flushed, so an interrupted run loses nothing. A sidecar
``<file>.config.json`` records the run's parameters so ``resume`` refuses to mix rows computed with different
settings, and an existing file is never replaced unless ``overwrite`` is given.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from certkit.common.errors import CertkitError


def default_results_path(*parts: str) -> str:
    """A fresh results file: certkit-results/<parts joined by _>_<YYYYmmdd-HHMMSS>.tsv."""
    import time

    return str(Path("certkit-results") / ("_".join(str(p) for p in parts) + "_" + time.strftime("%Y%m%d-%H%M%S") + ".tsv"))


class ResultWriter:
    """Append-only TSV of per-input results with resume support.

    Args:
        path: the TSV file.
        columns: column names, in order (rows are dicts with at least these keys).
        config: JSON-ready run parameters; stored beside the TSV and compared on resume.
        resume: continue an existing file (rows already present are kept and their idx skipped).
        overwrite: replace an existing file. Without resume or overwrite an existing file is an error, so
            results are never lost by accident.
        key: the integer column that identifies a row (``done`` holds its values).

    Raises:
        CertkitError: the file exists and neither flag is given; the existing file or its config does not
            match (different columns or parameters).
    """

    def __init__(self, path: str | Path, config: dict, columns: Sequence[str], resume: bool = False,
                 overwrite: bool = False, key: str = "idx"):
        self.path = Path(path)
        self.key = key
        self.columns = tuple(columns)
        self.config_path = self.path.with_name(self.path.name + ".config.json")
        self.rows: list[dict] = []
        config = json.loads(json.dumps(config))  # normalise tuples etc. for comparison
        if self.path.exists() and not (resume or overwrite):
            raise CertkitError(f"{self.path} exists: pass --resume to continue it or --overwrite to replace it")
        if resume and self.path.exists():
            self._load_existing(config)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "w") as f:
                f.write("\t".join(self.columns) + "\n")
        self.config_path.write_text(json.dumps(config, indent=2) + "\n")
        self.done = {int(r[key]) for r in self.rows}

    def _load_existing(self, config: dict) -> None:
        if self.config_path.exists():
            old = json.loads(self.config_path.read_text())
            diff = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
            if diff:
                raise CertkitError(f"cannot resume {self.path}: it was computed with different settings "
                                   f"({', '.join(f'{k}: {old.get(k)} -> {config.get(k)}' for k in diff[:4])})")
        text = self.path.read_text()
        lines = text.split("\n")
        if not lines or lines[0].split("\t") != list(self.columns):
            raise CertkitError(f"cannot resume {self.path}: its header is not {' '.join(self.columns)}")
        good = [lines[0]]
        for line in lines[1:]:
            fields = line.split("\t")
            if len(fields) != len(self.columns):
                break  # a partial last line from an interrupted run: drop it and what follows
            self.rows.append({k: _parse(v) for k, v in zip(self.columns, fields)})
            good.append(line)
        repaired = "\n".join(good) + "\n"
        if repaired != text:
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(repaired)
            os.replace(tmp, self.path)

    def write(self, row: dict) -> None:
        """Append one row (a dict with every column) and flush it to disk."""
        with open(self.path, "a") as f:
            f.write("\t".join(_fmt(row[c]) for c in self.columns) + "\n")
        self.rows.append(dict(row))
        self.done.add(int(row[self.key]))


def _parse(v: str):
    """A cell as int, else float, else the text itself."""
    for kind in (int, float):
        try:
            return kind(v)
        except ValueError:
            pass
    return v


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}" if abs(v) < 1e-3 and v != 0 else f"{v:.4f}"
    return str(v)
