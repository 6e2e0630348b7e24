"""The ``certkit`` command: a thin click layer over the library (no maths here), one module per command.

Every user mistake surfaces as ``Error: <one line>`` with exit status 1; partial results stay on disk. Options that
several commands share are declared once in :mod:`certkit.cli.options` and mean the same everywhere; the choices and
help of ``--method`` / ``--verifier`` come from the registries. Nothing in certkit imports this package.
"""
import gc

# Start-up: importing torch creates about a million objects, and the cyclic garbage collector would traverse them
# again and again while they are created (0.3 s of a 1.5 s `certkit verify` answer on 2 cores, measured). Collection
# is paused during the imports, and what they created is moved out of the collector's generations (gc.freeze): it
# lives as long as the process anyway. Nothing in certkit imports this package, so this touches commands only.
gc.disable()
try:
    from certkit.cli import certify, conformal, merge, predict, soundness, train, verify  # noqa: F401,E402
    from certkit.cli.main import main  # noqa: E402
finally:
    gc.enable()
    gc.freeze()

__all__ = ["main"]
