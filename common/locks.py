"""Exclusive locks on outputs, so that two processes never write the same results file or checkpoint.

The lock of ``out`` is the file ``out.lock``, created atomically (O_EXCL) and holding the holder's pid, its start time
(Linux: /proc/<pid>/stat) and host. A second writer refuses with a one-line error naming the holder. A lock left by
a process that is gone (killed: SIGKILL runs no cleanup) is stale and taken over; a lock from another host cannot be
checked and is never taken over.
"""
from __future__ import annotations

import atexit
import json
import os
import socket
import time
from pathlib import Path

from certkit.common.errors import CertkitError


def start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), or None where /proc is missing."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def alive(holder: dict) -> bool:
    """Whether the process described by ``holder`` ({"pid", "start", "host"}) may still run (another host: yes)."""
    if holder.get("host") != socket.gethostname():
        return True  # cannot tell: never take over another machine's lock
    pid = int(holder.get("pid", -1))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    start = start_time(pid)
    return start is None or holder.get("start") in (None, start)  # a reused pid has another start time


class FileLock:
    """The lock on one output path (module docstring); ``with FileLock(path):`` or acquire() / release()."""

    def __init__(self, target: str | Path):
        self.target = Path(target)
        self.path = self.target.with_name(self.target.name + ".lock")
        self.held = False

    def acquire(self) -> FileLock:
        """Take the lock.

        Raises:
            CertkitError: another live process holds it, or the lock file cannot be created.
        """
        me = {"pid": os.getpid(), "start": start_time(os.getpid()), "host": socket.gethostname(),
              "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(2):
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    holder = json.loads(self.path.read_text() or "{}")
                except (OSError, ValueError):
                    holder = {}
                if holder and alive(holder):
                    raise CertkitError(f"{self.target} is being written by another certkit process (pid "
                                       f"{holder.get('pid')} on {holder.get('host')}, since {holder.get('since')}); "
                                       f"wait for it, or delete {self.path} if that process is gone") from None
                self.path.unlink(missing_ok=True)  # stale: its holder is gone
                continue
            except OSError as e:
                raise CertkitError(f"cannot write {self.target}: {e.strerror or e}") from None
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(me) + "\n")
            self.held = True
            atexit.register(self.release)
            return self
        raise CertkitError(f"cannot take the lock {self.path}")

    def release(self) -> None:
        """Drop the lock (idempotent)."""
        if self.held:
            self.held = False
            try:
                self.path.unlink()
            except OSError:
                pass

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
