"""common/memory.py: the allocator setting applies on glibc, is a no-op elsewhere, and is applied by the CLI."""
import platform
import subprocess
import sys

import torch

from certkit.common import memory


def test_retain_freed_memory_applies_on_glibc_and_is_idempotent():
    first = memory.retain_freed_memory()
    assert isinstance(first, bool)
    assert memory.retain_freed_memory() is first
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        assert first is True
    x = torch.randn(2048, 1024)           # large allocations still work (served from the heap now)
    assert torch.equal((x + 0).sub_(x), torch.zeros_like(x))


def test_importing_certkit_leaves_the_allocator_alone():
    code = ("import certkit.verifiers.strategy, certkit.certify, certkit.common.memory as m; "
            "print(m._applied)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "None"
