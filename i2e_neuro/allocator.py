"""The C allocator's settings for a command's process: freed memory kept for reuse.

A training step or a simulated time step allocates and frees many arrays of a few hundred
kilobytes to tens of megabytes (torch and numpy temporaries). glibc's malloc serves the larger
ones with fresh ``mmap`` pages and returns freed heap memory to the kernel, so each step faults
in and zeroes pages again. :func:`keep_freed_memory` sets the ``mallopt`` limits that keep such
memory mapped; every ``i2e-neuro`` command calls it (``cli._run``), and a library import
changes nothing. The benchmarks compare both sides with glibc's own settings unless asked
(``--kept-malloc``): the setting speeds up lava-dl and SpikingJelly too, by other amounts
(BENCHMARKS.md).
"""

from __future__ import annotations

import ctypes

# glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

#: Blocks up to this size come from the heap (glibc's largest allowed value on 64-bit).
MMAP_THRESHOLD = 32 << 20
#: Free memory at the heap's top is returned to the kernel only beyond this.
TRIM_THRESHOLD = 1 << 30


def keep_freed_memory() -> bool:
    """Serve blocks up to 32 MiB from the heap and keep up to 1 GiB of freed memory mapped
    (glibc's ``mallopt``); True where applied, False where the C library is not glibc."""
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
