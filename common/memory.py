"""Process-wide allocator setting for CPU runs: keep freed memory for reuse instead of returning it to the OS.

PyTorch's CPU tensors come from the C library's malloc. glibc serves large blocks (above a threshold that adapts up to
32 MB) with fresh ``mmap`` pages and gives freed heap memory back to the OS, so a loop that creates and frees
tensors of a few MB each pays page faults and zeroing of new pages on every operation. In certkit's batched
bound computations this was most of the time: CROWN on ACAS Xu sub-boxes ran at 550-1,150 boxes/s by default and
1,700-1,900 boxes/s with the setting below (2 CPU cores, glibc 2.36; bench/README.md). The price is that the
process keeps its peak memory until it exits, which suits a command-line run; a library import never changes it.
"""
from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3   # glibc <malloc.h>
_applied: bool | None = None


def retain_freed_memory() -> bool:
    """Tell glibc's malloc to serve blocks up to 2 GiB from the heap and never trim it (``mallopt``:
    M_MMAP_THRESHOLD and M_TRIM_THRESHOLD 2^31 - 1, the largest an int holds; M_TOP_PAD 1 GiB of address space,
    touched only when used). Called once by the ``certkit`` command and its worker processes, not by importing
    certkit.

    Returns True when the settings were applied, False where the C library is not glibc (macOS, musl, Windows:
    nothing is changed there). Never raises.
    """
    global _applied
    if _applied is None:
        _applied = False
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            mallopt = libc.mallopt
            mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            big = 2 ** 31 - 1                                   # mallopt takes an int
            _applied = all(mallopt(k, v) == 1 for k, v in ((_M_MMAP_THRESHOLD, big), (_M_TRIM_THRESHOLD, big),
                                                         (_M_TOP_PAD, 2 ** 30)))
        except (OSError, AttributeError):
            _applied = False
    return _applied
