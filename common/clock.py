"""How long the running command has taken: time limits a user gives on the command line count from the moment they
started the command, interpreter start-up and imports included (a VNN-COMP harness kills a tool at its limit whatever
it was doing). A command run in a process of its own (the ``certkit`` script, ``python -m certkit.cli``) counts from
the process start; one invoked inside a longer-lived process (tests, notebooks) from its own start."""
from __future__ import annotations

import os
import time

_IMPORTED = time.monotonic()
_COMMAND: dict = {"owns_process": False, "started": time.monotonic()}


def process_age() -> float:
    """Seconds since this process started: from the kernel's record of its start where there is one (Linux /proc),
    else since this module was first imported (the earliest moment certkit can see)."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])                      # field 22 (starttime), counted after the command name
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        age = uptime - start_ticks / os.sysconf("SC_CLK_TCK")
        if 0.0 <= age < 1e7:
            return age
    except (OSError, ValueError, IndexError):
        pass
    return time.monotonic() - _IMPORTED


def start_command(owns_process: bool) -> None:
    """Record that a command starts now; ``owns_process``: the process was started to run it (the CLI's entry
    point called as a program), so its age counts."""
    _COMMAND.update(owns_process=owns_process, started=time.monotonic())


def command_age() -> float:
    """Seconds since the running command started (:func:`start_command`): the process age when the command owns its
    process, else the time since the command itself started."""
    return process_age() if _COMMAND["owns_process"] else time.monotonic() - _COMMAND["started"]
