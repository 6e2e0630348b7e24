"""Append-only result tables shared by every long-running command (certify, predict, verify, conformal, VNN-COMP
and soundness runs).

Rows are written one at a time, each with one write of a whole line, so an interrupted run loses nothing: a row is
complete exactly when its newline is on disk, and ``resume`` drops a torn last line. A sidecar
``<file>.config.json`` records the run's parameters so ``resume`` refuses to mix rows computed with different
settings, an existing file is never replaced unless ``overwrite`` is given, and ``<file>.lock`` keeps a second
process from writing the same file (common/locks.py). A failed write (full disk, read-only or missing directory) is
a one-line CertkitError that leaves every row already written intact.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from certkit.common import faults
from certkit.common.errors import CertkitError
from certkit.common.locks import FileLock


def json_text(obj) -> str:
    """``obj`` as valid JSON text (indented, trailing newline): a NaN or infinite float, which JSON cannot hold
    (Python's json writes a bare ``NaN`` that other readers refuse), becomes null."""
    import math

    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(obj), indent=2, allow_nan=False) + "\n"


def check_writable(path: str | Path, resume: bool = False, overwrite: bool = False) -> Path:
    """Check, before a run computes anything, that its output file ``path`` may be written: not a directory, not an
    existing file unless ``resume`` or ``overwrite`` says so, in a folder that exists or can be made, writable.
    Returns ``path`` as a Path.

    Raises:
        CertkitError: one line naming the path and what to do.
    """
    path = Path(path)
    if path.is_dir():
        raise CertkitError(f"{path} is a directory: give a file name")
    if path.exists() and not (resume or overwrite):
        raise CertkitError(f"{path} exists: pass --resume to continue it or --overwrite to replace it")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise CertkitError(f"cannot write {path}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise CertkitError(f"cannot write {path}: permission denied")
    return path


def default_results_path(*parts: str) -> str:
    """A fresh results file: certkit-results/<parts joined by _>_<YYYYmmdd-HHMMSS>.tsv."""
    import time

    stem = "_".join(str(p) for p in parts) + "_" + time.strftime("%Y%m%d-%H%M%S")
    return str(Path("certkit-results") / (stem + ".tsv"))


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
            match (different columns or parameters); another process writes it; it cannot be written.
    """

    def __init__(self, path: str | Path, config: dict, columns: Sequence[str], resume: bool = False,
                 overwrite: bool = False, key: str = "idx"):
        self.path = Path(path)
        self.key = key
        self.columns = tuple(columns)
        self.config_path = self.path.with_name(self.path.name + ".config.json")
        self.rows: list[dict] = []
        config = json.loads(json.dumps(config))  # normalise tuples etc. for comparison
        check_writable(self.path, resume, overwrite)
        self.lock = FileLock(self.path).acquire()
        try:
            if resume and self.path.exists():
                self._load_existing(config)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "w") as f:
                    f.write("\t".join(self.columns) + "\n")
            self.config_path.write_text(json.dumps(config, indent=2) + "\n")
        except OSError as e:
            self.lock.release()
            raise CertkitError(f"cannot write {self.path}: {e.strerror or e}") from None
        except CertkitError:
            self.lock.release()
            raise
        self.done = {int(r[key]) for r in self.rows}

    def close(self) -> None:
        """Release the file's lock (also done at exit)."""
        self.lock.release()

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

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
        # a row is complete only when followed by its newline: the last element of the split is what came after
        # the last newline ('' for a whole file), so it is never a row
        for line in lines[1:-1]:
            fields = line.split("\t")
            if len(fields) != len(self.columns):
                break  # a damaged line: drop it and what follows
            self.rows.append({k: _parse(v) for k, v in zip(self.columns, fields)})
            good.append(line)
        repaired = "\n".join(good) + "\n"
        if repaired != text:
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(repaired)
            os.replace(tmp, self.path)

    def write(self, row: dict) -> None:
        """Append one row (a dict with every column) with a single write of the whole line.

        Raises:
            CertkitError: the write failed (full disk, read-only file system, ...); every earlier row is intact and
                a torn remainder of this one is dropped by ``resume``.
        """
        line = ("\t".join(_fmt(row[c]) for c in self.columns) + "\n").encode()
        action = faults.reached("row")
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
            try:
                if action:  # fault injection (tests only): half the row reaches the disk first
                    os.write(fd, line[: len(line) // 2])
                    faults.trigger(action)
                view = memoryview(line)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
        except OSError as e:
            raise CertkitError(f"cannot write {self.path}: {e.strerror or e} ({len(self.rows)} rows written before "
                               f"are intact; rerun with --resume once the problem is fixed)") from None
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
    """A cell: floats at full precision (repr round-trips exactly, so a radius read back on resume is the radius
    computed, never rounded up), everything else as str."""
    if isinstance(v, float):
        return repr(v)
    return str(v)
