"""glibc allocator settings for CPU inference: reuse freed activations instead of mapping fresh pages per call.

A CPU forward allocates temporaries of tens to hundreds of MiB. glibc serves blocks above its mmap threshold
(128 KiB, rising with use to 32 MiB at most) with a fresh mmap, unmaps them on free, and trims the heap top above
twice that threshold, so every call page-faults and zero-fills all of its temporaries again in the kernel: on the
HyenaDNA tiny-16k shape over 1 Mbp in 16K windows, 7-8 million page faults and 11-20 s of system CPU time,
more than the arithmetic. With both thresholds raised, freed blocks are reused by the next call.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys

_M_TRIM_THRESHOLD = -1  # mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
_applied = False


@functools.cache
def _libc():
    """The C library, loaded once (find_library runs ldconfig: ~1 ms, and a run's end asks for it)."""
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def keep_freed_memory(mmap_threshold: int = 1 << 30, trim_threshold: int = (1 << 31) - 1) -> bool:
    """Serve blocks below ``mmap_threshold`` from the heap and keep freed ones for reuse (glibc; once per process).

    Skipped where the user sets either threshold already (``MALLOC_MMAP_THRESHOLD_``/``MALLOC_TRIM_THRESHOLD_``
    or ``GLIBC_TUNABLES``), with ``GENOCONV_MALLOC_TUNE=0``, and off glibc. Returns whether the settings are in force.
    """
    global _applied
    if _applied:
        return True
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if (os.environ.get("GENOCONV_MALLOC_TUNE", "1") == "0" or not sys.platform.startswith("linux")
            or any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"))
            or "mmap_threshold" in tunables or "trim_threshold" in tunables):
        return False
    try:
        libc = _libc()
        if not hasattr(libc, "gnu_get_libc_version"):
            return False  # musl and others: mallopt is absent or does nothing
        _applied = (libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(mmap_threshold)) == 1
                    and libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(trim_threshold)) == 1)
    except (OSError, AttributeError):
        return False
    return _applied


# Free heap bytes a run may leave for the next one. A notebook that embeds windows one call at a time reuses them:
# trimming after every call made each 16K window of the tiny-16k shape page-fault its ~150 MB of temporaries again
# (36K faults, 126 ms a call instead of 92 on a 2-core CPU; BENCHMARKS.md); a streamed genome's GBs still go back.
KEEP_FREE_BYTES = 1 << 30


class _MallInfo2(ctypes.Structure):  # glibc >= 2.33 (malloc.h); sums over all arenas
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _free_heap_bytes(libc) -> int | None:
    """Bytes glibc holds free in its arenas, or None where mallinfo2 is missing (older glibc)."""
    info = getattr(libc, "mallinfo2", None)
    if info is None:
        return None
    info.restype = _MallInfo2
    return int(info().fordblks)


def release_freed_memory(keep: int | None = None) -> None:
    """Return the heap's free pages to the OS after a run (for long-lived processes such as notebooks) when more than
    ``keep`` bytes (default KEEP_FREE_BYTES) lie free; less stays for the next run to reuse."""
    if _applied:
        try:
            libc = _libc()
            free = _free_heap_bytes(libc)
            if free is None or free > (KEEP_FREE_BYTES if keep is None else keep):
                libc.malloc_trim(0)
        except (OSError, AttributeError):
            pass
