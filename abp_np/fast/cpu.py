"""The CPU kernels of ``kernels/*_cpu.c``, called through ctypes.

Small C files speed up memory-bound steps of the CPU path: ``winograd_cpu.c`` holds the
transforms of the Winograd transposed convolution (:mod:`abp_np.fast.winograd`) fused with the
rearrangements around them, and ``winograd1d_cpu.c`` those of the 1-D one
(:mod:`abp_np.fast.winograd1d`), which NumPy can only do as slow strided copies and small GEMMs,
``batchnorm_cpu.c`` batch normalisation in two or three passes over memory where NumPy needs
five or more, and ``columns_cpu.c`` the column form's scatter (``col2im``) and gather
(``im2col``) of :mod:`abp_np.fast.columns` in one pass each, where NumPy makes one small
strided copy per kernel tap (the same sums in the same order: the same bits).
``activations_cpu.c`` holds ReLU and SGD's update (:func:`sgd_update`), ``pool_cpu.c`` the thread pool that runs the kernels' loops
in ranges, and ``gemm_cpu.c`` stacks of GEMMs on that pool, each GEMM the call NumPy's matmul
makes to its OpenBLAS (:func:`stacked_matmul`; :func:`winograd_examples` runs ranges of
examples through all three Winograd steps in one call the same way). They are compiled once,
on first use, with the system's
C compiler (``$CC``, else ``cc``) into one library in a cache folder (``$ABP_CACHE_DIR``, else
``$XDG_CACHE_HOME/abp_np``, else ``~/.cache/abp_np``), under a name that includes a hash of the
sources and of the compiler command, so an edited source or another compiler builds anew; a
folder that others may write to is not used (it could hand over someone else's library). The
library is then loaded with :mod:`ctypes`. On an x86-64 CPU with AVX2 or AVX-512 it is built
for that level (``-march=x86-64-v3`` or ``-v4``, :func:`level`; ``ABP_CPU_LEVEL`` in the
environment picks a lower one), so that the compiler's vector loops use the wide registers;
the level is part of the hash, so a cache shared by several machines hands each its own build.
Every level computes the same bits.

No compiler or a failed build: :func:`available` is False and abp_np computes everything with
NumPy (:func:`reason` says why). Nothing here is needed for correctness; it only makes the CPU
path faster. Every kernel takes a range of channels, and each wrapper here splits its channels
over the threads of :func:`abp_np.fast.threads.parallel_for` (the same result bit for bit); the
column kernels are called on one range by :mod:`abp_np.fast.columns`, which splits it. The
kernels run only while the ``c`` setting of :func:`abp_np.backend.using` is on (see
:func:`enabled`); ``ABP_CPU_KERNELS=0`` in the environment starts it off, and then nothing is
compiled.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..backend import kernel_folder, switches
from . import threads
from .threads import parallel_for

__all__ = [
    "available",
    "best_level",
    "enabled",
    "level",
    "level_note",
    "reason",
    "winograd_input",
    "winograd_input_adjoint",
    "winograd_output",
    "winograd_output_adjoint",
    "winograd_weights",
    "winograd_examples",
    "gemm_stack_call",
    "stacked_matmul",
    "winograd1d_input",
    "winograd1d_input_adjoint",
    "winograd1d_output",
    "winograd1d_output_adjoint",
    "bn_stats",
    "bn_scale_shift",
    "bn_backward",
    "batchnorm_forward",
    "batchnorm_backward",
    "col2im",
    "im2col",
    "relu_forward",
    "relu_backward",
    "sgd_update",
]

_SOURCE_FILES = (
    "winograd_cpu.c",
    "winograd1d_cpu.c",
    "batchnorm_cpu.c",
    "columns_cpu.c",
    "activations_cpu.c",
    "gemm_cpu.c",
    "pool_cpu.c",
)
_HEADER_FILES = ("pool_cpu.h", "gemm_cpu.h")  # included by the sources: hashed with them
_FLAGS = [
    "-O3",
    "-std=c99",
    "-shared",
    "-fPIC",
    "-pthread",
    "-ffp-contract=off",  # a * b + c rounded twice, as NumPy does (sgd_update)
]  # no -march=native: the cache may be shared; see _LEVELS instead

#: x86-64 instruction-set levels the kernels may be built for, best first: the ``-march``
#: name and the CPU flags (as Linux lists them in /proc/cpuinfo) that it needs. The kernels'
#: loops over tiles, channels and elements are written for the compiler to vectorise; with
#: AVX2 or AVX-512 vectors a batch norm or a ReLU pass takes about half the time of the SSE2
#: build (BENCHMARKS.md, "The kernels built for the CPU's vector level"). The sums are the same
#: in every build, bit for bit: -ffp-contract=off keeps a * b + c two roundings, and without
#: -ffast-math the compiler may not reorder a sum (tests/test_cpu_levels.py).
_LEVELS = (
    (
        "x86-64-v4",
        ("avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"),
    ),
    (
        "x86-64-v3",
        ("avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"),
    ),
)
BASELINE = "baseline"  # the compiler's default target (x86-64: SSE2)
_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}

#: The kernels with an entry point on the pool's threads (``<name>_par_f32``): their pointer
#: and int arguments, the range (c0, c1) included.
_PARALLEL = {
    "winograd_input": (2, 11),
    "winograd_input_adjoint": (2, 11),
    "winograd_output": (3, 7),
    "winograd_output_adjoint": (2, 7),
    "winograd_weights": (3, 7),
    "winograd1d_input": (3, 7),
    "winograd1d_input_adjoint": (3, 7),
    "winograd1d_output": (4, 9),
    "winograd1d_output_adjoint": (3, 9),
    "bn_stats": (4, 5),
    "bn_scale_shift": (4, 5),
    "bn_backward": (7, 5),
}

#: Split loops run on the pool's C threads (False: ``ABP_C_POOL=0``, on the Python threads).
_C_POOL = os.environ.get("ABP_C_POOL", "").strip() != "0"

_lock = threading.Lock()
_lib: Any = None
_reason: str | None = None  # why the library is not available, once tried
_level: str | None = None  # the instruction-set level the loaded library was built for
_level_note: str | None = None  # why it is not the best level the CPU has, when it is not


def _source_paths() -> list[Path]:
    folder = kernel_folder(_SOURCE_FILES[0])
    if folder is None:  # _build says which file is missing
        folder = Path(__file__).resolve().parents[2] / "kernels"
    return [folder / f for f in _SOURCE_FILES + _HEADER_FILES]


def _cache_dir() -> Path:
    if os.environ.get("ABP_CACHE_DIR"):
        return Path(os.environ["ABP_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "abp_np"


def _cpu_flags() -> frozenset[str]:
    """The x86-64 CPU's feature flags as Linux lists them (empty elsewhere, or unreadable)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return frozenset()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def best_level(flags: frozenset[str] | None = None) -> str:
    """The best level of :data:`_LEVELS` that the CPU (its ``flags``) has, else ``"baseline"``.

    Each level needs its own flags and those of every level below it.
    """
    flags = _cpu_flags() if flags is None else flags
    need: set[str] = set()
    best = BASELINE
    for name, wants in reversed(_LEVELS):  # the lowest first
        need |= set(wants)
        if not need <= flags:
            break
        best = name
    return best


def _wanted_level() -> str:
    """The level to build for: ``ABP_CPU_LEVEL`` (``auto``, the default, is :func:`best_level`).

    A value that is no level, or a level this CPU lacks, raises ValueError saying so, every
    time the kernels are asked for (as a bad ``ABP_NUM_THREADS`` does): it is not taken as
    "no kernels", which would only make every pass slower without a word.
    """
    names = [BASELINE] + [name for name, _ in reversed(_LEVELS)]  # the lowest first
    asked = os.environ.get("ABP_CPU_LEVEL", "").strip() or "auto"
    best = best_level()
    if asked == "auto":
        return best
    if asked not in names:
        raise ValueError(
            f"ABP_CPU_LEVEL={asked!r} is not a level; use one of auto, {', '.join(names)}"
        )
    if names.index(asked) > names.index(best):
        raise ValueError(
            f"ABP_CPU_LEVEL={asked!r}: this CPU lacks its instructions (it has {best}); "
            "use auto or a lower level"
        )
    return asked


def _build(level: str) -> Any:
    """Compile (if not cached) and load the library for instruction-set ``level``; raise
    RuntimeError saying what failed."""
    flags = _FLAGS if level == BASELINE else [*_FLAGS, f"-march={level}"]
    srcs = _source_paths()
    for src in srcs:
        if not src.is_file():
            raise RuntimeError(f"{src.name} not found (looked at {src})")
    cc = os.environ.get("CC") or "cc"
    if shutil.which(cc) is None:
        raise RuntimeError(f"no C compiler ({cc!r} not on PATH); set CC to use another")
    digest = hashlib.sha256(" ".join([cc, *flags, sys.platform]).encode())
    for src in srcs:
        digest.update(src.read_bytes())
    srcs = [src for src in srcs if src.suffix == ".c"]  # the headers are included, not compiled
    key = digest.hexdigest()[:16]
    for folder in (
        _cache_dir(),
        Path(tempfile.gettempdir()) / f"abp_np-{getattr(os, 'getuid', lambda: 0)()}",
    ):
        lib_path = folder / f"abp_np_cpu-{key}.so"
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError:
            continue
        if not _private(folder):
            continue  # a folder others can write to could hand us their library: skip it
        if not lib_path.is_file():
            try:
                # build under a temporary name, then rename: a reader never sees half a file
                fd, tmp = tempfile.mkstemp(suffix=".so", dir=folder)
                os.close(fd)
            except OSError:
                continue  # folder not writable: try the next one
            try:
                cmd = [cc, *flags, "-o", tmp, *map(str, srcs)]
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode != 0:
                    err = done.stderr.strip()
                    raise RuntimeError(
                        f"{cc} failed to build the CPU kernels (exit status "
                        f"{done.returncode}){': ' + err if err else ''}"
                    )
                os.replace(tmp, lib_path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        lib = ctypes.CDLL(str(lib_path))
        i, p = ctypes.c_int, ctypes.c_void_p
        for suffix in _SUFFIX.values():
            # each function ends with the range of channels it does, c0 and c1
            for name in ("winograd_input", "winograd_input_adjoint"):
                getattr(lib, f"{name}_{suffix}").argtypes = [p] * 2 + [i] * 11
            getattr(lib, f"winograd_output_{suffix}").argtypes = [p] * 3 + [i] * 7
            getattr(lib, f"winograd_output_adjoint_{suffix}").argtypes = [p] * 2 + [i] * 7
            getattr(lib, f"winograd_weights_{suffix}").argtypes = [p] * 3 + [i] * 7
            for name in ("winograd1d_input", "winograd1d_input_adjoint"):
                getattr(lib, f"{name}_{suffix}").argtypes = [p] * 3 + [i] * 7
            getattr(lib, f"winograd1d_output_{suffix}").argtypes = [p] * 4 + [i] * 9
            getattr(lib, f"winograd1d_output_adjoint_{suffix}").argtypes = [p] * 3 + [i] * 9
            getattr(lib, f"bn_stats_{suffix}").argtypes = [p] * 4 + [i] * 5
            getattr(lib, f"bn_scale_shift_{suffix}").argtypes = [p] * 4 + [i] * 5
            getattr(lib, f"bn_backward_{suffix}").argtypes = [p] * 7 + [i] * 5
            for name in ("bn_stats", "bn_scale_shift", "bn_backward"):
                getattr(lib, f"{name}_{suffix}").restype = None
            # (arrays with their strides, dims, [phases,] stride, padding, n0, n1, c0, c1)
            getattr(lib, f"col2im_{suffix}").argtypes = [p] * 6 + [i, p, i] + [i] * 8
            getattr(lib, f"im2col_{suffix}").argtypes = [p] * 5 + [i] * 8
            getattr(lib, f"im2col_{suffix}").restype = None
            # the same loops whole, on the pool's threads (kernels/pool_cpu.c): the range
            # (c0, c1) replaced by the number of threads
            for name, (ptrs, ints) in _PARALLEL.items():
                getattr(lib, f"{name}_par_{suffix}").argtypes = [p] * ptrs + [i] * (ints - 1)
            getattr(lib, f"col2im_par_{suffix}").argtypes = [p] * 6 + [i, p, i] + [i] * 5
            getattr(lib, f"im2col_par_{suffix}").argtypes = [p] * 5 + [i] * 5
            # (x, U, [bias,] y, first, second, n, C, H, W, Cout, row0, col0, m, th, tw, gemm,
            # 64-bit BLAS integers, threads)
            getattr(lib, f"winograd_forward_examples_par_{suffix}").argtypes = (
                [p] * 6 + [i] * 10 + [p, i, i]
            )
            getattr(lib, f"winograd_backward_examples_par_{suffix}").argtypes = (
                [p] * 5 + [i] * 10 + [p, i, i]
            )
            z = ctypes.c_ssize_t  # element counts
            # (A, B, C, their stack strides, K, m, n, k, ta, tb, lda, ldb, ldc, gemm, 64-bit
            # BLAS integers, threads)
            getattr(lib, f"gemm_stack_par_{suffix}").argtypes = (
                [p] * 3 + [z] * 3 + [i] * 9 + [p, i, i]
            )
            getattr(lib, f"relu_forward_par_{suffix}").argtypes = [p, p, z, i]
            getattr(lib, f"relu_backward_par_{suffix}").argtypes = [p, p, p, z, i]
            # (p, g, v, size, scale, clip, decay, momentum, lr, threads)
            t = ctypes.c_float if suffix == "f32" else ctypes.c_double
            getattr(lib, f"sgd_update_par_{suffix}").argtypes = [p, p, p, z, t, i, t, t, t, i]
        lib.abp_pool_set_spin.argtypes = [ctypes.c_long]
        lib.abp_pool_set_spin.restype = None
        lib.abp_pool_set_spin(threads.spin_us() * 1000)
        return lib
    raise RuntimeError(
        "no private, writable cache folder for the compiled library (set ABP_CACHE_DIR to one)"
    )


def _private(folder: Path) -> bool:
    """True when ``folder`` belongs to this user and nobody else may write to it."""
    try:
        st = folder.stat()
    except OSError:
        return False
    if not hasattr(os, "getuid"):  # no POSIX owners (Windows): the user's own folder is used
        return True
    return st.st_uid == os.getuid() and not st.st_mode & 0o022


def _build_best(level: str) -> Any:
    """The library for ``level``; the baseline build where that one fails."""
    global _level, _level_note
    if level != BASELINE:
        try:
            lib = _build(level)
            _level = level
            return lib
        except (RuntimeError, OSError) as exc:  # e.g. a compiler that does not know the level
            first = str(exc).splitlines()[0]
            _level_note = f"the {level} build failed ({first}); built for the baseline"
    lib = _build(BASELINE)
    _level = BASELINE
    return lib


def _get() -> Any:
    global _lib, _reason
    if _lib is not None or _reason is not None:
        return _lib
    level = _wanted_level()  # a bad ABP_CPU_LEVEL raises here, every time
    with _lock:
        if _lib is None and _reason is None:
            try:
                _lib = _build_best(level)
            except Exception as exc:  # optional speed-up: any failure means "use NumPy"
                _reason = (
                    f"{type(exc).__name__}: {exc}"
                    if not isinstance(exc, RuntimeError)
                    else str(exc)
                )
    return _lib


def available() -> bool:
    """True when the compiled library is (or could now be) loaded."""
    return _get() is not None


def level() -> str | None:
    """The instruction-set level the loaded library was built for (``"x86-64-v4"``,
    ``"x86-64-v3"`` or ``"baseline"``), None when it is not available.

    The best that the CPU has (:func:`best_level`), unless ``ABP_CPU_LEVEL`` in the
    environment names a lower one or the compiler could not build it (:func:`level_note`).
    """
    return _level if _get() is not None else None


def level_note() -> str | None:
    """Why :func:`level` is below what ``ABP_CPU_LEVEL`` asked for, when it is."""
    _get()
    return _level_note


def enabled() -> bool:
    """True when the C kernels run: switched on (``abp_np.backend.using(c=True)``), compiled
    and loaded. Nothing is compiled while they are switched off."""
    return switches().c and available()


def reason() -> str | None:
    """Why :func:`enabled` is False (None when it is True): switched off, or the build failed."""
    if not switches().c:
        return (
            "switched off: abp_np.backend.using(c=False), or ABP_CPU_KERNELS=0 in the environment"
        )
    _get()
    return _reason


def _check(name: str, *arrays: Any) -> str:
    dtype = arrays[0].dtype
    for a in arrays:
        if not isinstance(a, np.ndarray) or not a.flags.c_contiguous or a.dtype != dtype:
            raise ValueError(f"_cpu.{name}: needs C-contiguous NumPy arrays of one dtype")
    if dtype not in _SUFFIX:
        raise ValueError(f"_cpu.{name}: dtype {dtype} is not float32 or float64")
    return _SUFFIX[dtype]


def _ok(status: int) -> None:
    if status != 0:
        raise MemoryError("abp_np: the CPU kernels could not allocate their scratch memory")


def pooled(dtype: Any) -> bool:
    """True when loops of C kernels on arrays of ``dtype`` go to the pool's threads: the
    kernels enabled, ``dtype`` float32 or float64, and not ``ABP_C_POOL=0``."""
    return _C_POOL and np.dtype(dtype) in _SUFFIX and enabled()


def _whole_loop(name: str, sfx: str, args: tuple, n: int, work: int) -> None:
    """Kernel ``name`` over its whole loop [0, n), split over :func:`threads.split_count`
    threads.

    On the pool's C threads (``<name>_par``, ``kernels/pool_cpu.c``) the split is one call: the
    ranges are handed over and waited for without Python, in microseconds, where a hand-off to
    a Python thread (:func:`threads.parallel_for`) costs a wake-up and a turn at the GIL.
    ``ABP_C_POOL=0`` in the environment takes the Python threads instead. The ranges are the
    same either way (:func:`threads.ranges`), so are the results, bit for bit.
    """
    lib = _get()
    t = threads.split_count(n, work)
    if t > 1 and _C_POOL:
        _ok(getattr(lib, f"{name}_par_{sfx}")(*args, t))
        return
    fn = getattr(lib, f"{name}_{sfx}")
    parallel_for(lambda lo, hi: _ok(fn(*args, lo, hi) or 0), n, work=work)


def _input_call(name: str, src, dst, image, V, row0: int, col0: int, m: int, nt) -> None:
    """Check an image (n, C, H, W) against its transformed tiles V (a a, C, n th tw); call."""
    sfx = _check(name, src, dst)
    n, C, H, W = image.shape
    if V.shape != ((m + 2) ** 2, C, n * nt[0] * nt[1]):
        raise ValueError(f"_cpu.{name}: tiles of shape {V.shape} do not fit x {image.shape}")
    args = (src.ctypes.data, dst.ctypes.data, n, C, H, W, row0, col0, m, *nt)
    _whole_loop(name, sfx, args, C, V.size)


def winograd_input(x, V, row0: int, col0: int, m: int, nt: tuple[int, int]) -> None:
    """V (a a, C, n th tw) <- B^T d B for every a x a tile d of x (n, C, H, W), a = m + 2.

    Tile (b, ti, tj) reads rows ``row0 + m ti + i`` and columns ``col0 + m tj + j`` of x (zeros
    outside it); see ``kernels/winograd_cpu.c``.
    """
    _input_call("winograd_input", x, V, x, V, row0, col0, m, nt)


def winograd_input_adjoint(dV, dx, row0: int, col0: int, m: int, nt: tuple[int, int]) -> None:
    """dx (n, C, H, W) <- the adjoint of :func:`winograd_input` applied to dV (a a, C, P)."""
    _input_call("winograd_input_adjoint", dV, dx, dx, dV, row0, col0, m, nt)


def _output_check(name: str, M, y, bias, m: int, nt: tuple[int, int]) -> str:
    sfx = _check(name, M, y, *([] if bias is None else [bias]))
    n, Cout = y.shape[:2]
    if y.shape[2:] != (2 * m * nt[0], 2 * m * nt[1]) or M.shape != (
        (m + 2) ** 2,
        4 * Cout,
        n * nt[0] * nt[1],
    ):
        raise ValueError(f"_cpu.{name}: shapes {M.shape} and {y.shape} do not match")
    if bias is not None and bias.shape != (Cout,):
        raise ValueError(f"_cpu.{name}: bias has shape {bias.shape}, expected ({Cout},)")
    return sfx


def winograd_output(M, y, m: int, nt: tuple[int, int], bias=None) -> None:
    """y (n, Cout, 2 m th, 2 m tw) <- A^T M A of every tile and phase, shuffled, plus bias.

    M is (a a, 4 Cout, n th tw), its rows ordered (phase r, phase r2, output channel); see
    ``kernels/winograd_cpu.c``.
    """
    sfx = _output_check("winograd_output", M, y, bias, m, nt)
    n, Cout = y.shape[:2]
    b = None if bias is None else bias.ctypes.data
    args = (M.ctypes.data, y.ctypes.data, b, n, Cout, m, *nt)
    _whole_loop("winograd_output", sfx, args, Cout, M.size)


def winograd_output_adjoint(dy, dM, m: int, nt: tuple[int, int]) -> None:
    """dM (a a, 4 Cout, P) <- the adjoint of :func:`winograd_output` (no bias) applied to dy."""
    sfx = _output_check("winograd_output_adjoint", dM, dy, None, m, nt)
    n, Cout = dy.shape[:2]
    args = (dy.ctypes.data, dM.ctypes.data, n, Cout, m, *nt)
    _whole_loop("winograd_output_adjoint", sfx, args, Cout, dM.size)


def winograd_weights(weight, U, g) -> None:
    """U (a a, 4 Cout, Cin) <- G K G^T, the Winograd route's transformed weights, from weight
    (Cin, Cout, kh, kw) of a stride-2 layer; g = G (a, 3), a = m + 2.

    K is :func:`abp_np.fast.winograd._combined_kernel`'s combined 3 x 3 filter of every phase;
    the reference is ``GG @ K`` (:func:`abp_np.fast.winograd.transformed_weights`), which this
    computes as G k then (G k) G^T per filter, in one pass that reads each weight where it is
    and writes U once (``kernels/winograd_cpu.c``), output channels split over the threads.
    """
    sfx = _check("winograd_weights", weight, U, g)
    Cin, Cout, kh, kw = weight.shape
    a = g.shape[0]
    if g.shape != (a, 3) or U.shape != (a * a, 4 * Cout, Cin) or kh > 6 or kw > 6:
        raise ValueError(
            f"_cpu.winograd_weights: U {U.shape} and G {g.shape} do not fit weight {weight.shape}"
        )
    args = (weight.ctypes.data, U.ctypes.data, g.ctypes.data, Cin, Cout, kh, kw, a)
    _whole_loop("winograd_weights", sfx, args, Cout, U.size)


def winograd_examples(
    x,
    U,
    y,
    first,
    second,
    row0: int,
    col0: int,
    m: int,
    nt,
    count: int,
    bias=None,
    backward: bool = False,
) -> None:
    """All three steps of the Winograd route for a block of examples, ranges of examples on
    ``count`` of the pool's threads, each range's GEMMs by the BLAS on its own thread.

    Forward (``backward`` False): x (n, C, H, W) -> y (n, Cout, 2 m th, 2 m tw) plus bias, with
    U (a a, 4 Cout, C) and the temporaries ``first`` V (a a, C, n th tw) and ``second``
    M (a a, 4 Cout, n th tw). Backward (input gradient only): ``x`` is dy, ``y`` is dx (n, C,
    H, W), ``first`` dM and ``second`` dV. Each range does what
    :func:`winograd_input`, ``numpy.matmul`` and :func:`winograd_output` (or their adjoints)
    do on its examples, in the same calls: the same bits as those three on the same ranges.
    Call it with the BLAS on one thread (:func:`threads.single_threaded_blas`); needs
    :func:`gemms_pooled`.
    """
    image, out = (y, x) if backward else (x, y)
    sfx = _check("winograd_examples", x, U, y, first, second, *([] if bias is None else [bias]))
    n, C, H, W = image.shape
    Cout = out.shape[1]
    a2, P = (m + 2) ** 2, n * nt[0] * nt[1]
    V, M = (second, first) if backward else (first, second)
    if (
        U.shape != (a2, 4 * Cout, C)
        or V.shape != (a2, C, P)
        or M.shape != (a2, 4 * Cout, P)
        or out.shape != (n, Cout, 2 * m * nt[0], 2 * m * nt[1])
        or (bias is not None and (backward or bias.shape != (Cout,)))
    ):
        raise ValueError(
            f"_cpu.winograd_examples: the shapes do not fit together: image {image.shape}, "
            f"U {U.shape}, V {V.shape}, M {M.shape}, output {out.shape}, m {m}, tiles {nt}"
        )
    gemm, ilp64 = threads.blas_gemm(x.dtype)
    ptrs = [a.ctypes.data for a in (x, U, y, first, second)]
    if not backward:  # the forward kernel takes the bias after U
        ptrs.insert(2, None if bias is None else bias.ctypes.data)
    fn = getattr(_get(), f"winograd_{'backward' if backward else 'forward'}_examples_par_{sfx}")
    _ok(fn(*ptrs, n, C, H, W, Cout, row0, col0, m, *nt, gemm, int(ilp64), count))


def _blas_layout(x: np.ndarray) -> tuple[int, int] | None:
    """(transposed, leading dimension) of the matrices of x (..., rows, cols) as BLAS takes
    them, NumPy's order of preference (rows contiguous first); None when BLAS cannot."""
    size = x.itemsize
    (s0, s1), (r, c) = x.strides[-2:], x.shape[-2:]
    if s1 == size and s0 % size == 0 and s0 // size >= max(1, c):
        return 0, s0 // size
    if s0 == size and s1 % size == 0 and s1 // size >= max(1, r):
        return 1, s1 // size
    return None


def gemm_stack_call(a, b, out) -> Any:
    """``count -> None``: ``numpy.matmul(a, b, out=out)`` for a (K, M, L) or (M, L) and
    b (K, L, P) as one call of ``gemm_stack_par`` (``kernels/gemm_cpu.c``): ranges of the K
    GEMMs on ``count`` of the pool's threads, each GEMM the cblas call NumPy would make for it
    (the same bits; call it with the BLAS on one thread). None where that call cannot stand
    for NumPy's: the pool or the BLAS' GEMM not at hand, dtypes that differ, or shapes for which
    NumPy calls another routine (M or P of 1: gemv; ``a`` and ``b`` the same memory: syrk).
    """
    dtype = out.dtype
    if not (
        isinstance(a, np.ndarray)
        and isinstance(b, np.ndarray)
        and a.dtype == b.dtype == dtype
        and gemms_pooled(dtype)
    ):
        return None
    K, L, P = b.shape
    M = a.shape[-2]
    la, lb, lo = _blas_layout(a), _blas_layout(b), _blas_layout(out)
    if (
        M < 2
        or P < 2
        or L < 1
        or la is None
        or lb is None
        or lo is None
        or lo[0]
        or a.ctypes.data == b.ctypes.data
        or out.shape != (K, M, P)
    ):
        return None
    size = dtype.itemsize
    sa = a.strides[0] // size if a.ndim == 3 else 0
    gemm, ilp64 = threads.blas_gemm(dtype)
    fn = getattr(_get(), f"gemm_stack_par_{_SUFFIX[dtype]}")
    args = (a.ctypes.data, b.ctypes.data, out.ctypes.data, sa, b.strides[0] // size)
    args += (out.strides[0] // size, K, M, P, L, la[0], lb[0], la[1], lb[1], lo[1])

    def call(count: int) -> None:
        _ok(fn(*args, gemm, int(ilp64), count))

    return call


def stacked_matmul(a, b, out=None) -> np.ndarray:
    """:func:`threads.stacked_matmul` (``numpy.matmul(a, b, out=out)`` for a stack of GEMMs,
    ranges of the stack on several threads), its ranges on the pool's C threads where
    :func:`gemm_stack_call` can take them, else on Python threads: the same bits either way."""
    if out is None:
        shape = (b.shape[0], a.shape[-2], b.shape[-1])
        out = np.empty(shape, dtype=np.result_type(a.dtype, b.dtype))
    return threads.stacked_matmul(a, b, out, whole=gemm_stack_call(a, b, out))


def gemms_pooled(dtype: Any) -> bool:
    """True when GEMMs on arrays of ``dtype`` can run on the pool's threads
    (:func:`gemm_stack_call`, :func:`winograd_examples`): the pool on (:func:`pooled`) and the
    BLAS' GEMM found (:func:`threads.blas_gemm`)."""
    return pooled(dtype) and threads.blas_gemm(dtype) is not None


def _transform(name: str, mat, dtype) -> Any:
    if mat.dtype != dtype or not mat.flags.c_contiguous:
        raise ValueError(f"_cpu.{name}: the transform matrix must be C-contiguous {dtype}")
    return mat.ctypes.data


def _input1d_call(name: str, src, dst, image, V, bt, m: int, nt: int) -> None:
    """Check an example block (n, C, 1, L) against its tiles V (a, C, n nt); call."""
    sfx = _check(name, src, dst)
    n, C, _, L = image.shape
    if image.shape[2] != 1 or V.shape != (m + 2, C, n * nt) or bt.shape != (m + 2, m + 2):
        raise ValueError(f"_cpu.{name}: tiles of shape {V.shape} do not fit x {image.shape}")
    args = (src.ctypes.data, dst.ctypes.data, _transform(name, bt, src.dtype), n, C, L, m, nt)
    _whole_loop(name, sfx, args, C, V.size)


def winograd1d_input(x, V, bt, m: int, nt: int) -> None:
    """V (a, C, n nt) <- B^T d for every tile d of x (n, C, 1, L), a = m + 2, ``bt`` = B^T.

    Tile (b, t) reads samples ``m t + k - 2``, k < a, of x (zeros outside it); see
    ``kernels/winograd1d_cpu.c``.
    """
    _input1d_call("winograd1d_input", x, V, x, V, bt, m, nt)


def winograd1d_input_adjoint(dV, dx, bt, m: int, nt: int) -> None:
    """dx (n, C, 1, L) <- the adjoint of :func:`winograd1d_input` applied to dV (a, C, P)."""
    _input1d_call("winograd1d_input_adjoint", dV, dx, dx, dV, bt, m, nt)


def _output1d_call(name: str, src, dst, M, y, bias, at, s: int, nt: int, pad: int) -> None:
    sfx = _check(name, src, dst, *([] if bias is None else [bias]))
    n, Cout, h, Lout = y.shape
    m = at.shape[0]
    if h != 1 or M.shape != (m + 2, n * nt, Cout * s) or at.shape != (m, m + 2):
        raise ValueError(f"_cpu.{name}: shapes {M.shape} and {y.shape} do not match")
    if pad < 0 or (m * nt * s) < pad + Lout:
        raise ValueError(f"_cpu.{name}: {nt} tiles do not cover {Lout} outputs from {pad}")
    if bias is not None and bias.shape != (Cout,):
        raise ValueError(f"_cpu.{name}: bias has shape {bias.shape}, expected ({Cout},)")
    ptrs = [src.ctypes.data, dst.ctypes.data]
    if not name.endswith("adjoint"):  # the forward adds the bias (NULL: none)
        ptrs.append(None if bias is None else bias.ctypes.data)
    args = (*ptrs, _transform(name, at, src.dtype), n, Cout, s, m, nt, pad, Lout)
    _whole_loop(name, sfx, args, Cout, M.size)


def winograd1d_output(M, y, at, s: int, nt: int, pad: int, bias=None) -> None:
    """y (n, Cout, 1, Lout) <- A^T M of every tile, phases shuffled into place and cropped by
    ``pad``, plus bias; M is (a, n nt, Cout s), ``at`` = A^T (m, a). See
    ``kernels/winograd1d_cpu.c``."""
    _output1d_call("winograd1d_output", M, y, M, y, bias, at, s, nt, pad)


def winograd1d_output_adjoint(dy, dM, at, s: int, nt: int, pad: int) -> None:
    """dM (a, n nt, Cout s) <- the adjoint of :func:`winograd1d_output` (no bias) applied to dy."""
    _output1d_call("winograd1d_output_adjoint", dy, dM, dM, dy, None, at, s, nt, pad)


# --- batch normalisation ----------------------------------------------------------------------


def _ncl(name: str, *arrays: Any) -> tuple[str, tuple[int, int, int]]:
    """Check arrays of one (N, C, ...) shape; return the dtype suffix and (N, C, L)."""
    sfx = _check(name, *arrays)
    shape = arrays[0].shape
    if any(a.shape != shape for a in arrays) or len(shape) < 2:
        raise ValueError(f"_cpu.{name}: arrays of shapes {[a.shape for a in arrays]} differ")
    N, C = shape[:2]
    return sfx, (N, C, arrays[0].size // max(1, N * C))


def _vectors(name: str, C: int, dtype: Any, *vectors: Any) -> None:
    for v in vectors:
        if not isinstance(v, np.ndarray) or v.shape != (C,) or v.dtype != dtype:
            raise ValueError(f"_cpu.{name}: per-channel arrays must be ({C},) {dtype}")
        if not v.flags.c_contiguous:
            raise ValueError(f"_cpu.{name}: per-channel arrays must be contiguous")


def bn_stats(x, xc, mean, var) -> None:
    """xc = x - mean, with mean and (biased) var the per-channel batch statistics of x (N, C, L)."""
    sfx, (N, C, L) = _ncl("bn_stats", x, xc)
    _vectors("bn_stats", C, x.dtype, mean, var)
    args = (x.ctypes.data, xc.ctypes.data, mean.ctypes.data, var.ctypes.data, N, C, L)
    _whole_loop("bn_stats", sfx, args, C, x.size)


def bn_scale_shift(xc, y, scale, shift) -> None:
    """y = xc scale[c] + shift[c] for (N, C, ...) arrays."""
    sfx, (N, C, L) = _ncl("bn_scale_shift", xc, y)
    _vectors("bn_scale_shift", C, xc.dtype, scale, shift)
    args = (xc.ctypes.data, y.ctypes.data, scale.ctypes.data, shift.ctypes.data, N, C, L)
    _whole_loop("bn_scale_shift", sfx, args, C, xc.size)


def bn_backward(dy, xc, dx, a, inv_std, sum_dy, sum_dy_xc) -> None:
    """Batch norm's input gradient (see ``kernels/batchnorm_cpu.c``) and its two channel sums."""
    sfx, (N, C, L) = _ncl("bn_backward", dy, xc, dx)
    _vectors("bn_backward", C, dy.dtype, a, inv_std, sum_dy, sum_dy_xc)
    args = (*(q.ctypes.data for q in (dy, xc, dx, a, inv_std, sum_dy, sum_dy_xc)), N, C, L)
    _whole_loop("bn_backward", sfx, args, C, dy.size)


# --- batch normalisation with the kernels ---------------------------------------------------------


def batchnorm_forward(
    x: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    eps: float,
    mean: np.ndarray | None = None,
    var: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`abp_np.functional.batchnorm_forward` with batch statistics, by the kernels.

    The same quantities in 3 passes over x instead of 7; the sums are accumulated in double
    (rounding may differ from the ``xp`` code in the last bits). ``mean`` and ``var`` must be
    None (batch statistics: the route is not taken otherwise).

    Returns
    -------
    y : array like x
    xc : array like x, x - mean
    inv_std : array (1, C, 1, ...), 1 / sqrt(var + eps)
    mean, var : array (C,), the batch statistics (biased variance)
    """
    x = np.ascontiguousarray(x)
    C = x.shape[1]
    shape = (1, C) + (1,) * (x.ndim - 2)
    xc, y = np.empty_like(x), np.empty_like(x)
    mu, v = np.empty(C, x.dtype), np.empty(C, x.dtype)
    bn_stats(x, xc, mu, v)
    inv_std = (1.0 / np.sqrt(v + eps)).astype(x.dtype, copy=False).reshape(shape)
    scale = np.ascontiguousarray((gamma.reshape(shape) * inv_std).reshape(-1))
    bn_scale_shift(xc, y, scale, np.ascontiguousarray(beta))
    return y, xc, inv_std, mu, v


def batchnorm_backward(
    dy: np.ndarray, cache: Any, need_param_grads: bool = True
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """:func:`abp_np.functional.batchnorm_backward` with batch statistics, by the kernels.

    The same formula in 2 passes over memory. ``cache`` is the forward pass's
    :class:`~abp_np.functional.BatchNormCache` (read: ``xc``, ``inv_std``, ``gamma``, ``shape``).

    Returns
    -------
    dx : array like dy
    dgamma, dbeta : array (C,) or None
    """
    inv_std = cache.inv_std
    a = cache.gamma.reshape(cache.shape) * inv_std  # (1, C, 1, ...)
    xc = np.ascontiguousarray(cache.xc)
    C = xc.shape[1]
    dx = np.empty_like(xc)
    sum_dy, sum_dy_xc = np.empty(C, dy.dtype), np.empty(C, dy.dtype)
    vec = [np.ascontiguousarray(v.reshape(-1)) for v in (a, inv_std)]
    bn_backward(np.ascontiguousarray(dy), xc, dx, *vec, sum_dy, sum_dy_xc)
    if not need_param_grads:
        return dx, None, None
    return dx, sum_dy_xc * inv_std.reshape(-1), sum_dy


# --- the column form's scatter and gather ---------------------------------------------------------


def _strided(name: str, *arrays: Any) -> tuple[str, list[np.ndarray]]:
    """Check NumPy arrays of one dtype (any strides); return the dtype suffix and each
    array's strides in elements, as int64 arrays for the kernels."""
    dtype = arrays[0].dtype
    if dtype not in _SUFFIX:
        raise ValueError(f"_cpu.{name}: dtype {dtype} is not float32 or float64")
    out = []
    for a in arrays:
        if not isinstance(a, np.ndarray) or a.dtype != dtype:
            raise ValueError(f"_cpu.{name}: needs NumPy arrays of one dtype")
        if any(s % a.itemsize for s in a.strides):
            raise ValueError(f"_cpu.{name}: strides must be whole elements")
        out.append(np.array([s // a.itemsize for s in a.strides], dtype=np.int64))
    return _SUFFIX[dtype], out


def _dims(cols: np.ndarray, image: np.ndarray, name: str) -> np.ndarray:
    C, kh, kw, N, H, W = cols.shape
    if image.shape[:2] != (N, C):
        raise ValueError(f"_cpu.{name}: columns {cols.shape} do not fit image {image.shape}")
    return np.array([C, kh, kw, N, H, W, *image.shape[2:]], dtype=np.intc)


def col2im(cols, y, stride, padding, hph, wph, threads: int = 1) -> None:
    """y (N, C, Hout, Wout) <- the column form's scatter of cols (C, kh, kw, N, H, W).

    ``hph``, ``wph``: the phases of each axis (:func:`abp_np.fast.phases.phases`). Any strides;
    the same sums in the same order as :func:`abp_np.fast.columns.col2im`'s NumPy code, so
    the same result bit for bit; see ``kernels/columns_cpu.c``. ``threads`` > 1: on the pool's
    threads, ranges of the examples (of the channels where N is 1).
    """
    sfx, (cs, ys) = _strided("col2im", cols, y)
    dims = _dims(cols, y, "col2im")
    h = np.array(hph, dtype=np.intc).reshape(-1)
    w = np.array(wph, dtype=np.intc).reshape(-1)
    args = (
        cols.ctypes.data,
        cs.ctypes.data,
        y.ctypes.data,
        ys.ctypes.data,
        dims.ctypes.data,
        h.ctypes.data,
        len(hph),
        w.ctypes.data,
        len(wph),
        *stride,
        *padding,
    )
    if threads > 1:
        _ok(getattr(_get(), f"col2im_par_{sfx}")(*args, threads))
    else:
        _ok(getattr(_get(), f"col2im_{sfx}")(*args, 0, int(dims[3]), 0, int(dims[0])))


def im2col(dy, cols, stride, padding, threads: int = 1) -> None:
    """cols (C, kh, kw, N, H, W) <- the column form's gather of dy (N, C, Hout, Wout), zeros
    where a tap falls outside dy. Any strides; see ``kernels/columns_cpu.c``. ``threads`` > 1:
    on the pool's threads, as :func:`col2im`."""
    sfx, (ds, cs) = _strided("im2col", dy, cols)
    dims = _dims(cols, dy, "im2col")
    args = (dy.ctypes.data, ds.ctypes.data, cols.ctypes.data, cs.ctypes.data, dims.ctypes.data)
    if threads > 1:
        _ok(getattr(_get(), f"im2col_par_{sfx}")(*args, *stride, *padding, threads))
    else:
        getattr(_get(), f"im2col_{sfx}")(*args, *stride, *padding, 0, int(dims[3]), 0, int(dims[0]))


# --- ReLU -----------------------------------------------------------------------------------------


def _elementwise(name: str, *arrays: Any) -> str:
    sfx = _check(name, *arrays)
    if any(a.shape != arrays[0].shape for a in arrays):
        raise ValueError(f"_cpu.{name}: arrays of shapes {[a.shape for a in arrays]} differ")
    return sfx


def relu_forward(x: np.ndarray) -> np.ndarray:
    """y = max(x, 0) (NumPy's ``maximum``: NaN stays NaN), on the pool's threads."""
    y = np.empty_like(x)
    sfx = _elementwise("relu_forward", x, y)
    fn = getattr(_get(), f"relu_forward_par_{sfx}")
    _ok(fn(x.ctypes.data, y.ctypes.data, x.size, threads.split_count(x.size, x.size)))
    return y


def relu_backward(dy: np.ndarray, y: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """dx = dy (y > 0), the product NumPy forms (dy 0 = -0 for negative dy), on the pool's
    threads; into ``out`` when given."""
    dx = np.empty_like(dy) if out is None else out
    sfx = _elementwise("relu_backward", dy, y, dx)
    fn = getattr(_get(), f"relu_backward_par_{sfx}")
    t = threads.split_count(dy.size, dy.size)
    _ok(fn(dy.ctypes.data, y.ctypes.data, dx.ctypes.data, dy.size, t))
    return dx


# --- the optimiser's step -------------------------------------------------------------------------


def sgd_update(optimizer: Any, p, g, state, lr: float, scale, decay: float) -> None:
    """:meth:`abp_np.optim.SGD._apply` on one tensor, in place, on the pool's threads, in one
    pass over p, g and the momentum v, with no temporaries (``kernels/activations_cpu.c``): each
    operation rounded as NumPy rounds it, so the same bits as the NumPy expressions
    (``tests/test_threads.py``)."""
    (v,) = state
    sfx = _elementwise("sgd_update", p, g, v)
    fn = getattr(_get(), f"sgd_update_par_{sfx}")
    clip = scale is not None
    args = (float(scale) if clip else 1.0, int(clip), decay, optimizer.momentum, lr)
    t = threads.split_count(p.size, p.size)
    _ok(fn(p.ctypes.data, g.ctypes.data, v.ctypes.data, p.size, *args, t))
