"""mkdocs hook: let mkdocstrings find the ``certkit`` package.

The repository root IS the package (pyproject maps ``certkit`` to ``.``), so no folder on disk is named ``certkit`` and
the API pages could not be collected from the sources. This hook links a temporary ``certkit`` folder to the root and
points the Python handler at it.
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

from mkdocs.plugins import event_priority

ROOT = Path(__file__).resolve().parents[2]


@event_priority(100)  # before mkdocstrings reads its handler options
def on_config(config, **kwargs):
    tmp = tempfile.mkdtemp(prefix="certkit-docs-")
    atexit.register(shutil.rmtree, tmp, True)
    os.symlink(ROOT, Path(tmp) / "certkit", target_is_directory=True)
    handlers = config["plugins"]["mkdocstrings"].config.setdefault("handlers", {})
    python = handlers.setdefault("python", {})
    python["paths"] = [tmp]
    return config
