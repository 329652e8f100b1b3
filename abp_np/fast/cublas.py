"""cuBLAS's GEMM called directly: the matrix products of the CUDA routes.

Why not ``a @ b``
-----------------
CuPy refuses every cuBLAS call while a stream is being captured (its ``cublas.setStream``
raises ``NotImplementedError: calling cuBLAS API during stream capture is currently
unsupported``), so a Langevin loop whose GEMMs go through CuPy cannot be recorded as a CUDA
graph (:mod:`abp_np.fast.cuda_graph`). cuBLAS itself records its GEMMs in a graph, given a
workspace of the handle's own (cuBLAS documentation, "CUDA Graphs Support"). So the CUDA
routes (the transposed convolution's GEMMs in :mod:`abp_np.fast.cuda`, the fully connected
layer in :mod:`abp_np.fast.routes`) call ``cublasSgemm_v2`` / ``cublasDgemm_v2`` here, through
:mod:`ctypes`, on the cuBLAS library that CuPy has loaded: in the eager loop and in the
captured one alike, so both run the same GEMMs.

The handle is this module's own, one per device: a workspace of its own (``cublasSetWorkspace``,
set again after every ``cublasSetStream``, which resets it), the host pointer mode (alpha = 1,
beta = 0 are read when the call is made, or recorded) and cuBLAS's default math mode: float32
products in float32, no TF32, as CuPy's by default. Before a GEMM the handle is pointed at
CuPy's current stream when it is not there already.

Row-major arrays in a column-major library
------------------------------------------
A C-contiguous (r, c) array, read column-major, is its transpose, with leading dimension c;
an F-contiguous one (a transposed view of a C-contiguous array) is itself, with leading
dimension r. So C = A B (row-major, m x n) is computed as the column-major C^T = B^T A^T::

    gemm(op_B, op_A, n, m, k, 1, B, ldb, A, lda, 0, C, n)

with op = N for a C-contiguous operand and T for an F-contiguous one. Other layouts are made
C-contiguous first.

This module imports without CuPy; the library is found on the first GEMM.
"""

from __future__ import annotations

import ctypes
import re
import threading
from typing import Any

import numpy as np

from ..backend import load_cupy

__all__ = ["matmul", "library"]

_OP_N, _OP_T = 0, 1  # cublasOperation_t
_WORKSPACE_BYTES = 32 * 2**20  # what cuBLAS advises for Hopper; older GPUs need less
_INT_MAX = 2**31 - 1
_SONAMES = ("libcublas.so.13", "libcublas.so.12", "libcublas.so.11", "libcublas.so")

_lock = threading.RLock()  # re-entrant: _handle holds it while library() may take it too
_library: Any = None  # a _Library, or a stand-in with the same methods (the tests' fake CuPy)
_handles: dict[int, Any] = {}  # device id -> _Handle


class _Library:
    """The five cuBLAS entry points this module calls, with their C signatures."""

    def __init__(self, cdll: ctypes.CDLL) -> None:
        p, i = ctypes.c_void_p, ctypes.c_int
        fp, dp = ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_double)
        self._create = self._bind(cdll, "cublasCreate_v2", [ctypes.POINTER(p)])
        self._set_stream = self._bind(cdll, "cublasSetStream_v2", [p, p])
        self._set_workspace = self._bind(cdll, "cublasSetWorkspace_v2", [p, p, ctypes.c_size_t])
        gemm = [p, i, i, i, i, i]  # handle, transa, transb, m, n, k
        self._sgemm = self._bind(cdll, "cublasSgemm_v2", [*gemm, fp, p, i, p, i, fp, p, i])
        self._dgemm = self._bind(cdll, "cublasDgemm_v2", [*gemm, dp, p, i, p, i, dp, p, i])

    @staticmethod
    def _bind(cdll: ctypes.CDLL, name: str, argtypes: list) -> Any:
        fn = getattr(cdll, name)
        fn.argtypes, fn.restype = argtypes, ctypes.c_int  # cublasStatus_t
        return fn

    @staticmethod
    def _check(name: str, status: int) -> None:
        if status != 0:
            raise RuntimeError(f"cuBLAS: {name} failed with status {status}")

    def create(self) -> Any:
        handle = ctypes.c_void_p()
        self._check("cublasCreate", self._create(ctypes.byref(handle)))
        return handle

    def set_stream(self, handle: Any, stream: int) -> None:
        self._check("cublasSetStream", self._set_stream(handle, ctypes.c_void_p(stream)))

    def set_workspace(self, handle: Any, ptr: int, nbytes: int) -> None:
        status = self._set_workspace(handle, ctypes.c_void_p(ptr), nbytes)
        self._check("cublasSetWorkspace", status)

    def gemm(self, dtype: np.dtype, handle: Any, opa: int, opb: int, m: int, n: int, k: int,
             a: int, lda: int, b: int, ldb: int, c: int, ldc: int) -> None:  # fmt: skip
        """Column-major C (m x n) = op(A) op(B), alpha 1, beta 0; a, b, c device pointers."""
        if dtype == np.float32:
            fn, one, zero, name = self._sgemm, ctypes.c_float(1), ctypes.c_float(0), "Sgemm"
        else:
            fn, one, zero, name = self._dgemm, ctypes.c_double(1), ctypes.c_double(0), "Dgemm"
        status = fn(handle, opa, opb, m, n, k, ctypes.byref(one), a, lda, b, ldb,
                    ctypes.byref(zero), c, ldc)  # fmt: skip
        self._check(f"cublas{name}", status)


def _loaded_paths() -> list[str]:
    """Paths of the cuBLAS library already mapped into this process (Linux)."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        path = line.split(maxsplit=5)[-1] if line.count(" ") >= 5 else ""
        if re.search(r"/libcublas\.so[.\d]*$", path) and path not in found:
            found.append(path)
    return found


def library() -> Any:
    """The cuBLAS entry points, found on the first call: the library CuPy has loaded.

    Raises
    ------
    RuntimeError
        Where CuPy or its cuBLAS cannot be found.
    """
    global _library
    if _library is None:
        with _lock:
            if _library is None:
                cupy = load_cupy()
                if cupy is None:
                    raise RuntimeError("the CUDA GEMMs need CuPy, which cannot be imported here")
                try:  # one product through CuPy brings its cuBLAS into the process
                    cupy.ones((1, 1), dtype=np.float32) @ cupy.ones((1, 1), dtype=np.float32)
                except Exception:  # its own message comes from the CDLL attempts below
                    pass
                errors = []
                for name in [*_loaded_paths(), *_SONAMES]:
                    try:
                        _library = _Library(ctypes.CDLL(name))
                        break
                    except (OSError, AttributeError) as err:
                        errors.append(f"{name}: {err}")
                else:
                    raise RuntimeError(
                        "cannot load cuBLAS for the CUDA GEMMs (" + "; ".join(errors) + "); "
                        "reinstall CuPy with its CUDA libraries, e.g. 'cupy-cuda13x[ctk]'"
                    )
    return _library


class _Handle:
    """One device's cuBLAS handle, its workspace, and the stream it was last set to."""

    def __init__(self, lib: Any, cupy: Any) -> None:
        self.handle = lib.create()
        # straight from cudaMalloc, never from a memory pool (a graph's private pool included):
        # the workspace lives as long as the handle
        self.workspace = cupy.cuda.Memory(_WORKSPACE_BYTES)
        self.stream: int | None = None

    def on_stream(self, lib: Any, stream: int) -> None:
        """Point the handle at ``stream`` (a ``cudaStream_t``), if it is not there already.

        ``cublasSetStream`` also puts the handle back on cuBLAS's own workspace pool (cuBLAS
        documentation), which a capture must not draw on: the workspace is set again after it.
        """
        if stream != self.stream:
            lib.set_stream(self.handle, stream)
            lib.set_workspace(self.handle, self.workspace.ptr, _WORKSPACE_BYTES)
            self.stream = stream


def _handle(cupy: Any, lib: Any, device: int) -> _Handle:
    """This module's cuBLAS handle for ``device`` (the current one), made on first use.

    Made outside any capture in practice: a captured loop always runs eagerly first.
    """
    held = _handles.get(device)
    if held is None:
        with _lock:
            held = _handles.get(device)
            if held is None:
                held = _handles[device] = _Handle(lib, cupy)
    return held


def _operand(cupy: Any, x: Any) -> tuple[Any, int, int]:
    """``x`` as a column-major operand: (array, op, leading dimension); see the module notes."""
    if x.flags.c_contiguous:
        return x, _OP_N, max(1, x.shape[1])
    if x.flags.f_contiguous:
        return x, _OP_T, max(1, x.shape[0])
    return cupy.ascontiguousarray(x), _OP_N, max(1, x.shape[1])


def matmul(a: Any, b: Any) -> Any:
    """``a @ b`` for 2-D CuPy arrays of one float dtype, by cuBLAS's GEMM: recordable in a CUDA
    graph.

    Parameters
    ----------
    a : cupy.ndarray (m, k)
    b : cupy.ndarray (k, n)
        float32 or float64, the same dtype, on the current device; any strides (C- and
        F-contiguous operands are read in place, others copied first).

    Returns
    -------
    c : cupy.ndarray (m, n), C-contiguous, a new array

    Other dtypes, and sizes beyond cuBLAS's 32-bit ones, go to CuPy's ``a @ b``.
    """
    cupy = load_cupy()
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not make a 2-D product")
    m, k = a.shape
    n = b.shape[1]
    dtype = a.dtype
    if dtype not in (np.float32, np.float64) or b.dtype != dtype or max(m, n, k) > _INT_MAX:
        return a @ b
    device = cupy.cuda.Device().id
    for name, arr in (("a", a), ("b", b)):
        if arr.device.id != device:
            raise ValueError(
                f"matmul: {name} is on GPU {arr.device.id}, not on the current device; launch "
                f"inside `with cupy.cuda.Device({arr.device.id}):`"
            )
    c = cupy.empty((m, n), dtype=dtype)
    if m == 0 or n == 0:
        return c
    if k == 0:
        c.fill(0)
        return c
    a, opa, lda = _operand(cupy, a)
    b, opb, ldb = _operand(cupy, b)
    lib = library()
    held = _handle(cupy, lib, device)
    with _lock:  # one handle per device: its stream and the GEMM go together
        held.on_stream(lib, cupy.cuda.get_current_stream().ptr)
        # the column-major C^T (n x m) = B^T A^T: B is the first operand
        args = (n, m, k, b.data.ptr, ldb, a.data.ptr, lda, c.data.ptr, n)
        lib.gemm(dtype, held.handle, opb, opa, *args)
    return c
