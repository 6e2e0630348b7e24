"""How long this process has run: time limits a user gives on the command line count from the moment they started
the command, interpreter start-up and imports included (a VNN-COMP harness kills a tool at its limit whatever it was
doing)."""
from __future__ import annotations

import os
import time

_IMPORTED = time.monotonic()


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
