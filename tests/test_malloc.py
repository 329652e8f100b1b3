"""``import abp_np`` sets glibc's malloc thresholds (:mod:`abp_np._malloc`).

The expected behaviour comes from glibc's documented rules (``man 3 mallopt``), not from the
module: with its defaults, free memory at the top of the heap beyond the trim threshold
(dynamic: twice the largest large block freed) goes back to the system, and the next
allocation takes fresh pages, each a page fault. With the thresholds at 32 and 256 MiB, a
cycle of blocks of a few MiB is served from the heap that the first cycle grew: no new faults.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def _glibc() -> bool:
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (AttributeError, ValueError, OSError):  # no confstr (Windows), or no such name
        return False


needs_glibc = pytest.mark.skipif(not _glibc(), reason="the thresholds are set on glibc only")

# Three blocks of 3 MiB, written, then all freed (9 MiB at the top of the heap: beyond glibc's
# dynamic trim threshold of 6 MiB, so its defaults hand them back); 20 cycles after one to
# warm up. Prints SET and the page faults per cycle.
_CYCLES = """
import resource, sys, numpy as np
import abp_np._malloc as m
blocks, mib = (int(a) for a in sys.argv[1:3])
def cycle():
    a = [np.ones(mib << 18, dtype=np.float32) for _ in range(blocks)]
    del a
cycle()
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    cycle()
f1 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
print(m.SET, (f1 - f0) / 20, m.reason_to_leave())
"""


def _run(env: dict, blocks: int = 3, mib: int = 3) -> tuple[str, float, str]:
    """SET, the page faults per cycle of ``blocks`` blocks of ``mib`` MiB, and the reason."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "ABP_MALLOC"))}
    base.pop("GLIBC_TUNABLES", None)
    out = subprocess.run(
        [sys.executable, "-c", _CYCLES, str(blocks), str(mib)],
        env={**base, **env},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    flag, faults, reason = out.stdout.split(maxsplit=2)
    return flag, float(faults), reason.strip()


@needs_glibc
def test_import_keeps_freed_memory_for_the_next_iteration():
    flag, faults, reason = _run({})
    assert (flag, reason) == ("True", "None")
    # 9 MiB of blocks = 2,304 pages of 4 KiB per cycle if they came back from the system
    assert faults < 100


@needs_glibc
def test_import_keeps_a_faces64_iteration_s_worth_of_freed_memory():
    """Four blocks of 20 MiB (each below the mmap threshold of 32 MiB), 80 MiB freed at the
    top of the heap at once, as the end of a faces64 iteration frees its activations: kept
    below the trim threshold of 256 MiB, handed back and faulted in again above one of 64."""
    flag, faults, _ = _run({}, blocks=4, mib=20)
    assert flag == "True"
    assert faults < 100  # 20,480 pages of 4 KiB per cycle if they came back from the system
    old = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(64 << 20)}
    _, faults_64, _ = _run(old, blocks=4, mib=20)
    assert faults_64 > 1000  # the premise: at 64 MiB glibc hands the 80 MiB back every cycle


@needs_glibc
def test_glibc_s_own_thresholds_fault_every_cycle_and_abp_malloc_default_keeps_them():
    flag, faults, reason = _run({"ABP_MALLOC": "default"})
    assert (flag, reason) == ("False", "ABP_MALLOC=default")
    assert faults > 1000  # the test's premise: glibc's defaults hand the blocks back


@needs_glibc
@pytest.mark.parametrize(
    "env, reason",
    [
        ({"MALLOC_TRIM_THRESHOLD_": "1000000"}, "MALLOC_TRIM_THRESHOLD_ is set"),
        ({"MALLOC_MMAP_THRESHOLD_": "1000000"}, "MALLOC_MMAP_THRESHOLD_ is set"),
        ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1000000"}, "GLIBC_TUNABLES sets malloc"),
    ],
)
def test_your_own_malloc_settings_are_kept(env, reason):
    flag, _, why = _run(env)
    assert (flag, why) == ("False", reason)
