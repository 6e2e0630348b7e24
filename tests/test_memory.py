"""common/memory.py: the allocator setting applies on glibc, is a no-op elsewhere, and is applied by the CLI."""
import platform
import subprocess
import sys

import pytest

from certkit.common import memory

_RSS_AFTER_FREE = """
import sys, torch
from certkit.common import memory
applied = memory.retain_freed_memory() if sys.argv[1] == "retain" else None
def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2 ** 20
x = torch.ones(256 * 2 ** 20 // 4)          # 256 MB, written so that its pages are resident
peak = rss_mb()
del x
print(applied, peak, rss_mb())
"""


@pytest.mark.skipif(not (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"),
                    reason="the setting applies to glibc's malloc only")
def test_retain_freed_memory_keeps_freed_pages_for_reuse_on_glibc():
    """Without the setting glibc returns a freed 256 MB block to the OS (resident memory falls back); with it the
    block stays in the heap (resident memory stays near its peak), which is the point of the setting."""
    def run(mode):
        out = subprocess.run([sys.executable, "-c", _RSS_AFTER_FREE, mode], capture_output=True, text=True,
                             check=True).stdout.split()
        return out[0], float(out[1]), float(out[2])

    applied, peak, after = run("retain")
    assert applied == "True"
    assert after > peak - 32, (peak, after)          # freed, but kept
    _, peak, after = run("default")
    assert after < peak - 200, (peak, after)         # the default gives the pages back
    assert memory.retain_freed_memory() is memory.retain_freed_memory()   # applied once, same answer after


def test_importing_certkit_leaves_the_allocator_alone():
    code = ("import certkit.verifiers.complete.strategy, certkit.certify, certkit.common.memory as m; "
            "print(m._applied)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "None"
