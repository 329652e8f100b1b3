"""The CPU data-movement kernels of ``kernels/winograd_cpu.c``, called through ctypes.

``winograd_cpu.c`` holds four rearrangements of the Winograd transposed convolution
(:mod:`abp_np.winograd`) that NumPy can only do as slow strided copies. It is compiled once,
on first use, with the system's C compiler (``$CC``, else ``cc``), into a cache folder
(``$ABP_CACHE_DIR``, else ``$XDG_CACHE_HOME/abp_np``, else ``~/.cache/abp_np``), under a name
that includes a hash of the source and of the compiler command, so an edited source or another
compiler builds anew. The library is then loaded with :mod:`ctypes`.

No compiler, a failed build, or ``ABP_CPU_KERNELS=0``: :func:`available` is False and
abp_np computes everything with NumPy (:func:`reason` says why). Nothing here is needed for
correctness; it only makes the CPU path faster.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.resources
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["available", "reason", "gather_tiles", "overlap_add", "shuffle", "unshuffle"]

_SOURCE_FILE = "winograd_cpu.c"
_FLAGS = ["-O3", "-std=c99", "-shared", "-fPIC"]  # no -march=native: the cache may be shared
_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}

_lock = threading.Lock()
_lib: Any = None
_reason: str | None = None  # why the library is not available, once tried


def _source_path() -> Path:
    try:
        path = Path(str(importlib.resources.files("abp_np.kernels") / _SOURCE_FILE))
        if path.is_file():
            return path
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parent.parent / "kernels" / _SOURCE_FILE


def _cache_dir() -> Path:
    if os.environ.get("ABP_CACHE_DIR"):
        return Path(os.environ["ABP_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "abp_np"


def _build() -> Any:
    """Compile (if not cached) and load the library; raise RuntimeError saying what failed."""
    src = _source_path()
    if not src.is_file():
        raise RuntimeError(f"{_SOURCE_FILE} not found (looked at {src})")
    cc = os.environ.get("CC") or "cc"
    if shutil.which(cc) is None:
        raise RuntimeError(f"no C compiler ({cc!r} not on PATH); set CC to use another")
    text = src.read_bytes()
    key = hashlib.sha256(text + " ".join([cc, *_FLAGS, sys.platform]).encode()).hexdigest()[:16]
    for folder in (_cache_dir(), Path(tempfile.gettempdir()) / f"abp_np-{os.getuid()}"):
        lib_path = folder / f"winograd_cpu-{key}.so"
        if not lib_path.is_file():
            try:
                folder.mkdir(parents=True, exist_ok=True)
                # build under a temporary name, then rename: a reader never sees half a file
                fd, tmp = tempfile.mkstemp(suffix=".so", dir=folder)
                os.close(fd)
            except OSError:
                continue  # folder not writable: try the next one
            try:
                done = subprocess.run(
                    [cc, *_FLAGS, "-o", tmp, str(src)], capture_output=True, text=True
                )
                if done.returncode != 0:
                    raise RuntimeError(f"{cc} failed to build {src.name}: {done.stderr.strip()}")
                os.replace(tmp, lib_path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        lib = ctypes.CDLL(str(lib_path))
        i = ctypes.c_int
        for suffix in _SUFFIX.values():
            for name in ("gather_tiles", "overlap_add"):
                getattr(lib, f"{name}_{suffix}").argtypes = [ctypes.c_void_p] * 2 + [i] * 9
            getattr(lib, f"shuffle_{suffix}").argtypes = [ctypes.c_void_p] * 3 + [i] * 6
        return lib
    raise RuntimeError("no writable cache folder for the compiled library (set ABP_CACHE_DIR)")


def _get() -> Any:
    global _lib, _reason
    if _lib is not None or _reason is not None:
        return _lib
    with _lock:
        if _lib is None and _reason is None:
            if os.environ.get("ABP_CPU_KERNELS", "1").strip() == "0":
                _reason = "turned off by ABP_CPU_KERNELS=0"
            else:
                try:
                    _lib = _build()
                except (RuntimeError, OSError) as exc:
                    _reason = str(exc)
    return _lib


def available() -> bool:
    """True when the compiled library is (or could now be) loaded."""
    return _get() is not None


def reason() -> str | None:
    """Why :func:`available` is False (None when it is True)."""
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
        raise MemoryError("abp_np: the CPU kernels could not allocate their scratch tables")


def gather_tiles(x, d, row0: int, col0: int, m: int, nt: tuple[int, int]) -> None:
    """d (a, a, C, n th tw) <- the (m + 2)^2 tiles of x (n, C, H, W) (see the C source)."""
    sfx = _check("gather_tiles", x, d)
    n, C, H, W = x.shape
    if d.shape != (m + 2, m + 2, C, n * nt[0] * nt[1]):
        raise ValueError(f"_cpu.gather_tiles: d has shape {d.shape}")
    fn = getattr(_get(), f"gather_tiles_{sfx}")
    _ok(fn(x.ctypes.data, d.ctypes.data, n, C, H, W, row0, col0, m, *nt))


def overlap_add(dd, dx, row0: int, col0: int, m: int, nt: tuple[int, int]) -> None:
    """dx (n, C, H, W) <- the adjoint of :func:`gather_tiles` applied to dd (a, a, C, P)."""
    sfx = _check("overlap_add", dd, dx)
    n, C, H, W = dx.shape
    if dd.shape != (m + 2, m + 2, C, n * nt[0] * nt[1]):
        raise ValueError(f"_cpu.overlap_add: dd has shape {dd.shape}")
    fn = getattr(_get(), f"overlap_add_{sfx}")
    _ok(fn(dd.ctypes.data, dx.ctypes.data, n, C, H, W, row0, col0, m, *nt))


def _shuffle(Y, y, bias, m: int, nt: tuple[int, int], forward: int) -> None:
    sfx = _check("shuffle", Y, y, *([] if bias is None else [bias]))
    n, Cout = y.shape[:2]
    if y.shape[2:] != (2 * m * nt[0], 2 * m * nt[1]) or Y.size != y.size:
        raise ValueError(f"_cpu.shuffle: shapes {Y.shape} and {y.shape} do not match")
    if bias is not None and bias.shape != (Cout,):
        raise ValueError(f"_cpu.shuffle: bias has shape {bias.shape}, expected ({Cout},)")
    fn = getattr(_get(), f"shuffle_{sfx}")
    b = None if bias is None else bias.ctypes.data
    _ok(fn(Y.ctypes.data, y.ctypes.data, b, n, Cout, m, *nt, forward))


def shuffle(Y, y, m: int, nt: tuple[int, int], bias=None) -> None:
    """y (n, Cout, 2 m th, 2 m tw) <- Y (m, m, 2, 2, Cout, P) (+ bias): the pixel shuffle."""
    _shuffle(Y, y, bias, m, nt, 1)


def unshuffle(y, Y, m: int, nt: tuple[int, int]) -> None:
    """Y (m, m, 2, 2, Cout, P) <- y: the inverse (and adjoint) of :func:`shuffle`."""
    _shuffle(Y, y, None, m, nt, 0)
