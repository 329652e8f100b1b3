"""glibc's malloc keeps the memory an ABP iteration frees, instead of handing it back each time.

An ABP iteration makes and frees the same temporaries over and over: a Langevin step's
activations, the Winograd route's transformed tiles (2-10 MB each in the paper's networks).
glibc's malloc serves blocks above its *mmap threshold* (128 KiB at start) with fresh pages
from the system, and returns the free memory at the top of its heap to the system once more
than its *trim threshold* (256 KiB at start) lies there. Both thresholds rise on their own
after the first large blocks are freed, but only as far as the largest block seen, so the
heap is still cut back and grown again within an iteration. Every page that comes back from
the system is a page fault and a page of zeros written by the kernel: on a 2-core machine
(2026-12-05) a small32 training loop took 220,000-430,000 page faults and 1.2 s of system time
for 23 iterations, and each iteration took 0.17-0.21 s instead of 0.14-0.15 s.

So ``import abp_np`` sets, on Linux with glibc, through ``mallopt`` (``man 3 mallopt``):

* ``M_MMAP_THRESHOLD`` = 32 MiB (the most glibc accepts): blocks below it come from the heap;
* ``M_TRIM_THRESHOLD`` = 256 MiB: the heap is cut back once more than 256 MiB at its top is
  free. The end of a faces64 iteration (batch 64) frees more than 64 MiB at once, the value
  this was before 2026-12-06: glibc then handed it back, and the next iteration faulted 23,000
  pages in again (``BENCHMARKS.md``, "Temporaries instead of kept scratch buffers").

The process then keeps up to 256 MiB of freed memory for its next allocations, as much as one
iteration of the paper's networks uses. The peak memory of an iteration does not grow with it
(``BENCHMARKS.md``, "glibc's malloc"). Nothing changes when:

* ``ABP_MALLOC=default`` is set in the environment (glibc's own behaviour, thresholds and all);
* ``GLIBC_TUNABLES`` names a malloc setting, or one of glibc's ``MALLOC_MMAP_THRESHOLD_``,
  ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_TOP_PAD_`` or ``MALLOC_MMAP_MAX_`` is set (yours is
  kept);
* the C library is not glibc (macOS, Windows, musl): :data:`SET` stays False.

:data:`SET` records whether the thresholds were set; ``python -m abp_np.bench`` prints it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

MMAP_THRESHOLD = 32 << 20  # bytes; glibc refuses more than 32 MiB on 64-bit machines
TRIM_THRESHOLD = 256 << 20

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h>
_YOURS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")


def reason_to_leave() -> str | None:
    """Why the thresholds are left as they are, or None when they are set."""
    if os.environ.get("ABP_MALLOC", "").strip().lower() == "default":
        return "ABP_MALLOC=default"
    if "malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return "GLIBC_TUNABLES sets malloc"
    for name in _YOURS:
        if os.environ.get(name, "").strip():
            return f"{name} is set"
    try:
        glibc = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (AttributeError, ValueError, OSError):  # no confstr (Windows) or no such name
        glibc = ""
    if not glibc.startswith("glibc"):
        return "not glibc"
    return None


def _set() -> bool:
    if reason_to_leave() is not None:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # the mmap threshold first: glibc fixes both thresholds once either is set
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )


#: True when ``import abp_np`` set glibc's mmap and trim thresholds.
SET = _set()
