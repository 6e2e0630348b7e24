"""The ``certkit`` command: a thin click layer over the library (no maths here), one module per command.

Every user mistake surfaces as ``Error: <one line>`` with exit status 1; partial results stay on disk. Options that
several commands share are declared once in :mod:`certkit.cli.options` and mean the same everywhere; the choices and
help of ``--method`` / ``--verifier`` come from the registries. Nothing in certkit imports this package.
"""
from certkit.cli import certify, conformal, merge, predict, soundness, train, verify  # noqa: F401  (register)
from certkit.cli.main import main

__all__ = ["main"]
