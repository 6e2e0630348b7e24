"""How many threads certkit computes with: the CPUs this process may use, less what other processes keep busy.

torch starts one intra-op thread per core it sees. On a shared machine that oversubscribes the cores as soon as
another CPU-bound process runs: OpenMP threads then wait at every barrier for a thread that is not scheduled, and a
run can take several times longer than the same run alone (three times, for ``certkit verify`` beside a second one on
2 cores; two ``certkit certify`` runs at once took 13 times as long on another machine). One thread per free core
avoids that without slowing a run that has the machine to itself.

:class:`ThreadGovernor` sets ``torch.set_num_threads`` to

    min(usable CPUs (the affinity mask, capped by a cgroup CPU quota),
        CPUs of the affinity mask - the CPUs that OTHER processes kept busy there)

measured from ``/proc/stat`` (the affinity mask's CPUs) minus ``/proc/self/stat`` (this process, all its threads),
at start over
a short window and again at most once per ``interval`` seconds when a long loop calls :func:`tick` (per input, per
batch, per training step), so a run gives cores back when a neighbour starts and takes them again when it ends.
``torch.set_num_threads`` applies to the thread that calls it, so :func:`tick` is called from the computing thread.

An explicit choice always wins: ``--threads N`` on the command line, or ``CERTKIT_THREADS`` / ``OMP_NUM_THREADS`` in
the environment (torchrun sets the latter to 1 per rank) fix the number and switch the measurement off. Importing
certkit changes nothing: only the ``certkit`` command (or a program that calls :func:`govern`) installs a governor.
Where ``/proc`` is missing (not Linux) the governor keeps the usable CPUs.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path


def _affinity() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup v2 (``cpu.max``) or v1
    (``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``) CPU quota rounded up; at least 1."""
    n = len(_affinity())
    quota = _cgroup_quota()
    if quota is not None:
        n = min(n, max(1, math.ceil(quota)))
    return max(1, n)


def _cgroup_quota() -> float | None:
    """The cgroup CPU quota in CPUs, or None when there is none (or it cannot be read)."""
    try:
        v2 = Path("/sys/fs/cgroup/cpu.max")
        if v2.is_file():
            quota, period = v2.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        q, p = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
        if q.is_file() and p.is_file():
            quota_us = int(q.read_text())
            return None if quota_us <= 0 else quota_us / int(p.read_text())
    except (OSError, ValueError):
        return None
    return None


def _busy_seconds(cpus: set[int]) -> tuple[float, float] | None:
    """(CPU seconds all processes have been busy on the CPUs ``cpus``, CPU seconds this process has used), from
    /proc; None off Linux."""
    try:
        busy_all = 0
        for line in Path("/proc/stat").read_text().splitlines():
            name, *fields = line.split()
            if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
                continue
            ticks = [int(v) for v in fields]
            idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)       # idle + iowait
            busy_all += sum(ticks[:8]) - idle                           # user .. steal (guest is counted in user)
        own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        busy_own = int(own[11]) + int(own[12])                          # utime + stime, all threads
    except (OSError, ValueError, IndexError):
        return None
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    return busy_all / hz, busy_own / hz


def explicit_threads() -> int | None:
    """The thread count the environment fixes (``CERTKIT_THREADS``, else ``OMP_NUM_THREADS``), or None."""
    for name in ("CERTKIT_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value:
            try:
                return max(1, int(value))
            except ValueError:
                continue
    return None


class ThreadGovernor:
    """Keeps ``torch.set_num_threads`` at the CPUs that are free for this process (module docstring).

    Args:
        threads: a fixed number (``--threads``); None: the environment's, else measured.
        interval: seconds between two measurements at most.
    """

    def __init__(self, threads: int | None = None, interval: float = 1.0):
        self.fixed = threads if threads is not None else explicit_threads()
        self.interval = interval
        self.affinity = _affinity()
        self.cpus = usable_cpus()
        self._last: tuple[float, tuple[float, float]] | None = None
        self.threads = self.fixed or self.cpus
        self.previous = 1  # torch's thread count before the governor (set by govern, restored by release)

    def start(self, window: float = 0.05) -> int:
        """Choose the first thread count (after watching the other processes for ``window`` seconds) and set it."""
        if self.fixed is None:
            self._sample()
            time.sleep(window)
            self._update()
        self._apply()
        return self.threads

    def tick(self) -> None:
        """Measure again if ``interval`` seconds passed since the last measurement, and adjust (cheap otherwise)."""
        if self.fixed is None and self._last is not None and time.perf_counter() - self._last[0] >= self.interval:
            if self._update():
                self._apply()

    def _sample(self) -> None:
        busy = _busy_seconds(self.affinity)
        self._last = None if busy is None else (time.perf_counter(), busy)

    def _update(self) -> bool:
        """Recompute ``threads`` from the CPU time the other processes used since the last sample; True if it
        changed."""
        if self._last is None:
            return False
        t0, (all0, own0) = self._last
        self._sample()
        if self._last is None:
            return False
        t1, (all1, own1) = self._last
        elapsed = t1 - t0
        if elapsed <= 0:
            return False
        others = max(0.0, ((all1 - all0) - (own1 - own0)) / elapsed)       # CPUs the other processes kept busy
        # a cgroup quota caps this process, not the others: free CPUs are counted on the affinity mask
        threads = max(1, min(self.cpus, round(len(self.affinity) - others)))
        changed, self.threads = threads != self.threads, threads
        return changed

    def _apply(self) -> None:
        import torch

        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)


_governor: ThreadGovernor | None = None


def govern(threads: int | None = None) -> ThreadGovernor:
    """Install the process's governor (the ``certkit`` command does, once) and set the first thread count."""
    import torch

    global _governor
    previous = _governor.previous if _governor is not None else torch.get_num_threads()
    _governor = ThreadGovernor(threads)
    _governor.previous = previous
    _governor.start()
    return _governor


def release() -> None:
    """Uninstall the process's governor and give torch back the thread count it had before :func:`govern`."""
    global _governor
    if _governor is not None:
        import torch

        torch.set_num_threads(_governor.previous)
    _governor = None


def tick() -> None:
    """Let the process's governor adjust the thread count (no-op when none is installed). Call it from the
    computing thread of a long loop: once per input, batch or training step."""
    if _governor is not None:
        _governor.tick()
