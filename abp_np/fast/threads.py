"""Every core for the steps that are not GEMMs: a loop split into ranges that run at once.

NumPy's BLAS runs every GEMM on all the machine's cores, but everything else of an iteration
(the Winograd transforms, batch norm, the activations, ``col2im``) is a loop that NumPy and a
plain C function run on ONE core while the others wait. Those loops have an outer index whose
iterations are independent: the channel of a transform or of batch norm, the element of an
activation, the example of ``col2im``. :func:`parallel_for` cuts that index into contiguous
ranges, one per thread, runs the first range on the calling thread and the others on worker
threads, and returns when all are done::

    threads.parallel_for(lambda c0, c1: kernel(..., c0, c1), C)   # channels [0, C) in ranges

Each index is computed by one thread exactly as the single loop computes it, so the results are
the same bit for bit, whatever the number of threads (``tests/test_threads.py``). The C kernels
(:mod:`abp_np.fast.cpu`) take the range as two arguments and run without the GIL (ctypes
releases it for the call); NumPy releases it inside its loops. The workers are Python threads
that sleep on their queues: they use no core while there is nothing to do, and they leave the
cores to the BLAS threads during the GEMMs. The BLAS threads must leave the cores to them in
turn: by default OpenBLAS keeps its idle threads spinning for a tenth of a second after each
GEMM, so ``import abp_np`` sets ``OPENBLAS_THREAD_TIMEOUT`` before NumPy loads OpenBLAS
(:mod:`abp_np._blas_spin` says when it can and cannot).

How many threads (:func:`count`), first that applies:

1. ``abp_np.backend.using(threads=N)``;
2. ``ABP_NUM_THREADS`` in the environment;
3. the number of threads of NumPy's BLAS (OpenBLAS' own setting, which ``OPENBLAS_NUM_THREADS``,
   ``OMP_NUM_THREADS`` or threadpoolctl change), else the cores this process may use.

One thread runs the single loop itself, with no worker and no split: the path as it was.

Stacks of GEMMs get the same treatment (:func:`stacked_matmul`): the Winograd route's a^2
GEMMs and the column form's GEMM per example are each too small for OpenBLAS to split well
over its own threads, so the stack is cut into ranges of whole GEMMs, one range per thread,
with OpenBLAS on one thread for the time (:func:`single_threaded_blas`). Larger units of work
go the same way (:func:`parallel_gemms`): the Winograd route runs ranges of examples through
all its steps, each range on one thread, one hand-off per layer instead of one per step. Those
GEMMs reach OpenBLAS in other sizes than on one thread, and OpenBLAS picks its kernels by size:
their results may differ in the last bits, within the bounds ``tests/test_threads.py`` states.

Where the C kernels are built, both run on their pool's C threads instead of Python's
(:func:`abp_np.fast.cpu.stacked_matmul`, :func:`abp_np.fast.cpu.winograd_examples`): the same
ranges, each GEMM the same call to NumPy's OpenBLAS (its address from :func:`blas_gemm`), the
same bits, with no hand-off to a Python thread and no wait for the GIL between the steps.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ..backend import switches

__all__ = [
    "blas_gemm",
    "blas_threads",
    "count",
    "parallel_for",
    "parallel_gemms",
    "ranges",
    "set_blas_threads",
    "single_threaded_blas",
    "spin_us",
    "split_count",
    "stacked_matmul",
]

#: Below this many elements of work a loop runs on one thread. Handing a range to a worker and
#: hearing back costs some 40 microseconds (two thread wake-ups); measured on a 2-core machine,
#: a ReLU pass and the batch-norm statistics over 2^17 float32 elements took as long on two
#: threads as on one (81 and 84 us; 97 and 95 us), over 2^15 two threads took twice as long
#: (23 and 55 us) and over 2^18 0.74 x as long.
MIN_WORK = 1 << 17


class _Local(threading.local):
    worker = False  # True on the pool's threads (no nested splitting)


_local = _Local()
_lock = threading.Lock()
_pool: list[_Worker] = []  # the worker threads, made as needed
_pool_pid = 0  # the process they belong to (threads do not survive a fork)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


# --- the BLAS' own thread count -------------------------------------------------------------------

_BLAS_NAMES = (
    "scipy_openblas{}_num_threads64_",
    "scipy_openblas{}_num_threads",
    "openblas{}_num_threads64_",
    "openblas{}_num_threads",
)
_blas_get: Any = None  # the loaded OpenBLAS' get function, once found
_blas_libs: list[Any] | None = None


def _openblas_libs() -> list[Any]:
    """The OpenBLAS libraries this process has loaded (Linux: ``/proc/self/maps``)."""
    global _blas_libs
    if _blas_libs is None:
        try:
            with open("/proc/self/maps") as f:
                paths = sorted(set(re.findall(r"(/\S*openblas\S*\.so\S*)", f.read())))
            _blas_libs = [ctypes.CDLL(p) for p in paths]
        except OSError:
            _blas_libs = []
    return _blas_libs


def _blas_lib(verb: str) -> tuple[Any, Any]:
    """The first loaded OpenBLAS with the thread-count function ``verb`` ("get" or "set"), and
    that function; (None, None) where there is none."""
    for lib in _openblas_libs():
        for name in _BLAS_NAMES:
            fn = getattr(lib, name.format("_" + verb), None)
            if fn is not None:
                return lib, fn
    return None, None


def _blas_function(verb: str) -> Any:
    return _blas_lib(verb)[1]


_GEMM_NAMES = (  # (name, 64-bit integers?); {} is s or d
    ("scipy_cblas_{}gemm64_", True),
    ("cblas_{}gemm64_", True),
    ("scipy_cblas_{}gemm", None),
    ("cblas_{}gemm", None),
)
_CONFIG_NAMES = (
    "scipy_openblas_get_config64_",
    "openblas_get_config64_",
    "scipy_openblas_get_config",
    "openblas_get_config",
)
_gemms: dict[str, tuple[int, bool] | None] = {}


def blas_gemm(dtype: Any) -> tuple[int, bool] | None:
    """The address of ``cblas_sgemm`` (float32) or ``cblas_dgemm`` (float64) in the OpenBLAS
    whose thread count :func:`single_threaded_blas` sets (NumPy's), and whether its integers
    are 64 bits wide; None where there is no such library or the width cannot be told.

    The C kernels call it on their pool's threads (``kernels/winograd_cpu.c``), as NumPy's
    matmul would, without the GIL between the steps of a Winograd layer.
    """
    kind = {np.dtype(np.float32): "s", np.dtype(np.float64): "d"}.get(np.dtype(dtype))
    if kind is None:
        return None
    if kind not in _gemms:
        _gemms[kind] = _find_gemm(kind)
    return _gemms[kind]


def _find_gemm(kind: str) -> tuple[int, bool] | None:
    lib = _blas_lib("set")[0]  # the library whose threads single_threaded_blas sets
    if lib is None:
        return None
    for name, wide in _GEMM_NAMES:
        fn = getattr(lib, name.format(kind), None)
        if fn is None:
            continue
        if wide is None:  # no suffix: OpenBLAS' build configuration says
            config = next((getattr(lib, c) for c in _CONFIG_NAMES if hasattr(lib, c)), None)
            if config is None:
                return None
            config.restype = ctypes.c_char_p
            wide = b"USE64BITINT" in (config() or b"")
        return ctypes.cast(fn, ctypes.c_void_p).value, wide
    return None


def blas_threads() -> int | None:
    """NumPy's OpenBLAS thread count now, or None where it cannot be read (another BLAS)."""
    global _blas_get
    if _blas_get is None:
        _blas_get = _blas_function("get") or False
    return int(_blas_get()) if _blas_get else None


def set_blas_threads(n: int) -> bool:
    """Set the number of threads of NumPy's OpenBLAS at run time; False if not possible.

    Tries threadpoolctl when installed (not a dependency), else the ``*openblas_set_num_threads*``
    function of the OpenBLAS library the process has loaded (Linux).
    """
    try:
        import threadpoolctl

        threadpoolctl.threadpool_limits(n, user_api="blas")
        return True
    except ImportError:
        pass
    fn = _blas_function("set")
    if fn is None:
        return False
    fn(ctypes.c_int(n))
    return True


# --- how many threads -------------------------------------------------------------------------


def _whole_number(name: str, least: int, meaning: str, unset: str) -> int | None:
    """The environment variable ``name`` as a whole number >= ``least``, or None when unset;
    a bad value raises ValueError saying what it is for (``meaning``) and what unset means."""
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        n = int(value)
    except ValueError:
        raise ValueError(
            f"{name}={value!r} is not a whole number: set it to {meaning}, or unset it {unset}"
        ) from None
    if n < least:
        raise ValueError(f"{name}={value!r} must be at least {least} ({meaning})")
    return n


#: ABP_NUM_THREADS as last read and its value: :func:`count` runs hundreds of times an iteration
_env_seen: tuple[str | None, int | None] = (None, None)


def _from_environment() -> int | None:
    global _env_seen
    raw = os.environ.get("ABP_NUM_THREADS")
    if raw is None:
        return None
    if raw == _env_seen[0]:  # parsed before (a bad value is never kept: it raises every time)
        return _env_seen[1]
    n = _whole_number(
        "ABP_NUM_THREADS",
        1,
        "the number of threads for the steps outside the GEMMs (1 = one core)",
        "to follow the BLAS",
    )
    _env_seen = (raw, n)
    return n


def count() -> int:
    """The number of threads a loop is split into (see the module's docstring); 1 on a worker."""
    if _local.worker:
        return 1
    n = switches().threads
    if n is None:
        n = _from_environment()
    if n is None:
        n = blas_threads() or _cores()
    return max(1, n)


def ranges(n: int, parts: int) -> list[tuple[int, int]]:
    """[0, n) cut into ``min(parts, n)`` contiguous ranges whose sizes differ by at most one."""
    parts = max(1, min(parts, n))
    q, r = divmod(n, parts)
    out, lo = [], 0
    for k in range(parts):
        hi = lo + q + (k < r)
        out.append((lo, hi))
        lo = hi
    return out


class _Worker:
    """One worker thread with its own queue of ranges: range k always goes to worker k - 1."""

    def __init__(self, k: int) -> None:
        self.tasks: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._run, name=f"abp_np-{k}", daemon=True).start()

    def _run(self) -> None:
        _local.worker = True
        while True:
            fn, lo, hi, done, errors = self.tasks.get()  # sleeps while there is nothing to do
            try:
                fn(lo, hi)
            except BaseException as e:  # handed to the caller, raised there
                errors.append(e)
            finally:
                # drop the task before waiting for the next: its function holds the caller's
                # arrays, which would otherwise stay alive (and in memory) until then
                fn = errors = None
                done.put(None)


def _workers(n: int) -> list[_Worker]:
    """At least ``n`` worker threads (made anew after a fork: threads do not follow)."""
    global _pool, _pool_pid
    with _lock:
        if _pool_pid != os.getpid():
            _pool, _pool_pid = [], os.getpid()
        while len(_pool) < n:
            _pool.append(_Worker(len(_pool) + 1))
        return _pool


def split_count(n: int, work: int | None = None, threads: int | None = None) -> int:
    """Into how many ranges :func:`parallel_for` cuts a loop of ``n`` iterations here and now:
    :func:`count` (or ``threads``; 1 on a worker), 1 when ``work`` is below :data:`MIN_WORK`,
    at most ``n``."""
    if threads is not None and _local.worker:
        threads = 1
    t = (count() if threads is None else threads) if n > 1 else 1
    if work is not None and work < MIN_WORK:
        t = 1
    return max(1, min(t, n))


#: How long a thread of the C kernels' pool (``kernels/pool_cpu.c``) waits for its next range,
#: spinning, after one ends, before it sleeps: microseconds (``ABP_SPIN_US``; 0: sleep at once).
SPIN_US = 50


def spin_us() -> int:
    """:data:`SPIN_US`, or ``ABP_SPIN_US`` from the environment."""
    us = _whole_number(
        "ABP_SPIN_US",
        0,
        "the microseconds a pool thread spins for its next range before it sleeps (0: at once)",
        f"for {SPIN_US}",
    )
    return SPIN_US if us is None else us


def parallel_for(
    fn: Callable[[int, int], Any], n: int, work: int | None = None, *, threads: int | None = None
) -> None:
    """Call ``fn(lo, hi)`` on ranges that cover [0, n), on :func:`count` threads at once.

    Parameters
    ----------
    fn : callable (lo, hi) -> anything
        Does iterations lo .. hi - 1 of the loop. Ranges never overlap, so ``fn`` may write
        what its iterations own without locks; it must not depend on the other ranges.
    n : int
        The number of iterations.
    work : int, optional
        The elements the whole loop touches; below :data:`MIN_WORK` it runs on one thread.
    threads : int, optional
        The number of threads (default :func:`count`); 1 on a worker whatever is asked.

    With one thread (or ``n`` < 2) this is ``fn(0, n)``. An exception of any range is raised
    here, after every range has finished.
    """
    t = split_count(n, work, threads)
    if t <= 1:
        fn(0, n)
        return
    parts = ranges(n, t)
    pool = _workers(len(parts) - 1)
    done: queue.SimpleQueue = queue.SimpleQueue()  # one item per finished range
    errors: list[BaseException] = []
    for worker, (lo, hi) in zip(pool, parts[1:]):
        worker.tasks.put((fn, lo, hi, done, errors))
    try:
        fn(*parts[0])
    finally:
        for _ in parts[1:]:
            done.get()  # wait for every range before anything is raised or returned
    if errors:
        raise errors[0]


# --- stacks of GEMMs ------------------------------------------------------------------------------

_blas_set: Any = None  # the loaded OpenBLAS' set function, once found
_single_lock = threading.Lock()
_single_depth = 0  # callers inside single_threaded_blas() now
_single_saved = 0  # the BLAS thread count to restore when the last one leaves


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[bool]:
    """Inside the block, NumPy's OpenBLAS runs each call on the calling thread alone.

    Yields False (and changes nothing) where the BLAS' thread count cannot be set at run time
    (another BLAS than OpenBLAS, or not found). OpenBLAS' setting is the process's: the count
    it had is put back when the last caller inside such a block leaves it.
    """
    global _blas_set, _single_depth, _single_saved
    if _blas_set is None:
        _blas_set = _blas_function("set") or False
    if not _blas_set or blas_threads() is None:
        yield False
        return
    with _single_lock:
        if _single_depth == 0:
            _single_saved = blas_threads() or 1
            _blas_set(ctypes.c_int(1))
        _single_depth += 1
    try:
        yield True
    finally:
        with _single_lock:
            _single_depth -= 1
            if _single_depth == 0:
                _blas_set(ctypes.c_int(_single_saved))


def stacked_matmul(
    a: Any, b: Any, out: Any = None, whole: Callable[[int], Any] | None = None
) -> Any:
    """``numpy.matmul(a, b)`` for a stack of GEMMs, the stack split over threads.

    ``a`` (K, M, L) or (M, L), ``b`` (K, L, P): K independent GEMMs ``a[k] @ b[k]``. BLAS runs
    a GEMM on all cores by itself, but for the small GEMMs of a stack (the Winograd route's
    a^2 GEMMs of a few tiles each, the column form's GEMM per example) splitting each one over
    threads costs more hand-offs than it saves. Here the stack is cut into ranges of whole
    GEMMs, one range per thread (:func:`parallel_for`), and OpenBLAS computes each GEMM on the
    thread that asks for it (:func:`single_threaded_blas`).

    Rounding: where OpenBLAS would have run a GEMM on one thread anyway (M N K up to 2^18)
    the result is NumPy's bit for bit. Larger GEMMs (already those of the Winograd route on a
    batch of 64) OpenBLAS computes with other blockings on one thread than on several, and in
    float32 the two may differ in the last bits; both are within the GEMM's error bound
    gamma_K sum_k |a_ik| |b_kj|, gamma_K = K u / (1 - K u) (``tests/test_threads.py`` checks
    both cases). So the multi-threaded path is bit for bit the one-thread path outside the
    GEMMs, and within that bound in them.

    With one thread, or where OpenBLAS' thread count cannot be set, this is
    ``numpy.matmul(a, b, out=out)`` itself. ``whole``: as in :func:`parallel_gemms`, the same
    GEMMs (into ``out``) in one call on the C kernels' pool
    (:func:`abp_np.fast.cpu.stacked_matmul` passes it).
    """
    K = b.shape[0]
    if out is None:
        shape = (K, a.shape[-2], b.shape[-1])
        out = np.empty(shape, dtype=np.result_type(a.dtype, b.dtype))
    stacked = a.ndim == 3

    def gemms(k0: int, k1: int) -> None:
        np.matmul(a[k0:k1] if stacked else a, b[k0:k1], out=out[k0:k1])

    parallel_gemms(gemms, K, whole=whole)
    return out


def parallel_gemms(
    fn: Callable[[int, int], Any], n: int, whole: Callable[[int], Any] | None = None
) -> None:
    """``fn(lo, hi)`` on ranges of n independent pieces of GEMM work, a range per thread, each
    thread's GEMMs on OpenBLAS' one thread (:func:`single_threaded_blas`). Inside a range
    nothing is split further (:func:`count` is 1 there, on the calling thread too): a range is
    one thread's whole share, e.g. some examples through all the steps of a Winograd layer.

    With one thread, a single piece, or where OpenBLAS' thread count cannot be set, this is
    ``fn(0, n)`` with the BLAS as it is (its own threads). :func:`stacked_matmul` is this for a
    stack of GEMMs.

    ``whole(t)``, where given, does the same work in one call instead: all n pieces, in the
    ranges ``ranges(n, t)``, on the C kernels' pool (``kernels/pool_cpu.c``), with no hand-off
    to a Python thread; it is called with the BLAS on one thread, as ``fn`` would be.
    """
    t = count() if n > 1 else 1
    if t <= 1:
        fn(0, n)
        return

    def alone(lo: int, hi: int) -> None:  # no further split inside a range, on any thread
        was = _local.worker
        _local.worker = True
        try:
            fn(lo, hi)
        finally:
            _local.worker = was

    with single_threaded_blas() as single:
        if single:
            if whole is not None:
                whole(t)
            else:
                parallel_for(alone, n, threads=t)
            return
    fn(0, n)
