"""Fault injection, for the tests of what certkit promises when things go wrong. Never set it in real runs.

``CERTKIT_FAULT=ACTION:POINT:N`` makes the N-th passage through POINT (counted per process) misbehave:

    points   row        while a results row is written (ResultWriter.write): half the row reaches the file first
             epoch-log  after a training epoch's log row is appended, before its checkpoint is written
             epoch      after a training epoch's checkpoint is written
             verify     when the complete verifier starts on an instance (after loading it)
    actions  kill       SIGKILL this process (no cleanup, no atexit: as the OOM killer or a power cut)
             enospc     raise OSError(ENOSPC), a full disk
             erofs      raise OSError(EROFS), a file system that turned read-only
             stall      sleep 60 s (a slow holder of an output, for the concurrent-writer tests)
"""
from __future__ import annotations

import errno
import os
import signal
import time

_passes: dict[str, int] = {}


def reached(point: str) -> str | None:
    """The action to take at this passage through ``point``, or None (always None without CERTKIT_FAULT)."""
    spec = os.environ.get("CERTKIT_FAULT")
    if not spec:
        return None
    action, where, n = spec.split(":")
    if where != point:
        return None
    _passes[point] = _passes.get(point, 0) + 1
    return action if _passes[point] == int(n) else None


def trigger(action: str | None) -> None:
    """Carry out ``action`` (see the module docstring); nothing for None."""
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(10)  # the signal is delivered asynchronously
    elif action in ("enospc", "erofs"):
        code = errno.ENOSPC if action == "enospc" else errno.EROFS
        raise OSError(code, os.strerror(code))
    elif action == "stall":
        time.sleep(60)


def reset() -> None:
    """Forget the passages counted so far (for in-process tests that set CERTKIT_FAULT more than once)."""
    _passes.clear()


def fault_point(point: str) -> None:
    """``trigger(reached(point))``: a place where a test may inject a fault."""
    trigger(reached(point))
