"""A NumPy-backed stand-in for the few CuPy APIs that abp_np's GPU path touches (tests only).

There is no GPU in CI, yet the Python side of the GPU path (the CUDA routes of
``abp_np.fast.routes``, ``abp_np.fast.cuda``'s launch wrappers, ``ABP.langevin``'s fused update) should run there. This
module plays CuPy just well enough for that:

* :class:`ndarray` is a subclass of :class:`numpy.ndarray`, so ``get_array_module`` can tell a
  "device" array from a host one. Like CuPy, it refuses to mix with host arrays in arithmetic
  (a NumPy array of one or more dimensions in a ufunc raises ``TypeError``).
* ``asarray`` / ``array`` copy host data "to the device", ``asnumpy`` and ``ndarray.get`` copy
  it back; ``empty``, ``zeros``, ``random.default_rng`` ... give device arrays. Every other
  attribute falls back to the NumPy function of the same name, with its array results turned
  into device arrays and host-array arguments refused.
* :class:`RawModule` parses the ``__global__`` templates of the source it is given. A kernel from
  ``get_function("col2im<float>")`` is called like CuPy's, ``kernel(grid, block, args)``, and
  checks what a real launch cannot check and would get silently wrong: the number of
  arguments; each scalar's exact NumPy type against the C++ parameter (``int`` ->
  ``numpy.int32``, ``long long`` -> ``numpy.int64``, ``float`` / ``double`` ->
  ``numpy.float32`` / ``numpy.float64``); each pointer is a device array of the right dtype,
  C-contiguous, of exactly the size the kernel will index, not overlapping another
  ``__restrict__`` argument that is written; NULL (``numpy.uintp(0)``, never ``None``) only for
  a ``const`` pointer; the grid and block within CUDA's limits. It then runs the kernel's host
  build (``kernels/host_shim.h`` through ``tests/kernel_shim_driver.cpp``) with that very grid
  and block, through ctypes.

Set :data:`HOST_LIBRARY` to the loaded host build first. Every launch is appended to
:data:`launches` as ``(name_expression, grid, block)``, so a test can prove the kernel path ran.

What this cannot show: real CUDA semantics (threads running concurrently, memory spaces,
streams, nvrtc compiling the source: ``tests/test_kernels_nvcc.py`` does that where nvcc is
found), cuBLAS's GEMMs (NumPy's run instead), CuPy's own numerics (its ``tanh``, its reduction
order) and CuPy's refusal of implicit conversions such as ``numpy.asarray(device_array)``.
"""

from __future__ import annotations

import contextlib
import ctypes
import re
from types import SimpleNamespace
from typing import Any

import numpy as np

#: The host build of deconv.cu + kernel_shim_driver.cpp (a ctypes.CDLL); set by the tests.
HOST_LIBRARY: Any = None

#: One ``(name_expression, grid, block)`` per kernel launch.
launches: list[tuple[str, tuple, tuple]] = []


# --- device arrays --------------------------------------------------------------------------------


def _refuse_host_arrays(owner: str, values: Any) -> None:
    """CuPy refuses NumPy arrays where it expects device arrays: do the same."""
    for v in values:
        if isinstance(v, (list, tuple)):
            _refuse_host_arrays(owner, v)
        elif isinstance(v, np.ndarray) and not isinstance(v, ndarray) and v.ndim > 0:
            raise TypeError(f"fake cupy: {owner} got a host numpy.ndarray {v.shape}; move it first")


def _to_device(result: Any) -> Any:
    """NumPy results as device arrays (CuPy returns 0-d arrays where NumPy returns scalars)."""
    if isinstance(result, tuple):
        return tuple(_to_device(r) for r in result)
    if isinstance(result, ndarray):
        return result
    if isinstance(result, np.ndarray):
        return result.view(ndarray)
    if isinstance(result, np.generic):
        return np.asarray(result).view(ndarray)
    return result


def _host_view(v: Any) -> Any:
    if isinstance(v, ndarray):
        return v.view(np.ndarray)
    if isinstance(v, tuple):
        return tuple(_host_view(x) for x in v)
    return v


class ndarray(np.ndarray):  # noqa: N801 - named as cupy.ndarray
    """A "device" array: NumPy memory under another type."""

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if ufunc is np.matmul:  # CuPy's matmul is cuBLAS
            _no_cublas_while_capturing("matmul")
        out = kwargs.get("out", ())
        _refuse_host_arrays(f"{ufunc.__name__}.{method}", inputs + tuple(out))
        kwargs = {k: _host_view(v) for k, v in kwargs.items()}
        result = getattr(ufunc, method)(*_host_view(inputs), **kwargs)
        if out:  # the results live in the caller's device arrays
            return out[0] if len(out) == 1 else out
        return None if method == "at" else _to_device(result)

    @property
    def data(self) -> Any:
        """``cupy.ndarray.data`` is a MemoryPointer: here its ``ptr``, the first element's address."""
        return SimpleNamespace(ptr=self.ctypes.data)

    def dot(self, other: Any, out: Any = None) -> Any:
        _no_cublas_while_capturing("ndarray.dot")
        return _to_device(np.dot(self.view(np.ndarray), _host_view(other)))

    @property
    def device(self) -> Device:
        """The GPU the array is on (``cupy.ndarray.device``): always device 0 here."""
        return Device()

    def get(self) -> np.ndarray:
        """A host copy (``cupy.ndarray.get``)."""
        _no_host_copy_while_capturing("ndarray.get")
        return np.array(self.view(np.ndarray), copy=True)

    def __bool__(self) -> bool:
        _no_host_copy_while_capturing("bool(ndarray)")
        return super().__bool__()

    def __float__(self) -> float:
        _no_host_copy_while_capturing("float(ndarray)")
        return super().__float__()

    def __int__(self) -> int:
        _no_host_copy_while_capturing("int(ndarray)")
        return super().__int__()

    def item(self, *args: Any) -> Any:
        _no_host_copy_while_capturing("ndarray.item")
        return super().item(*args)

    def tolist(self) -> Any:
        _no_host_copy_while_capturing("ndarray.tolist")
        return super().tolist()


def asarray(a: Any, dtype: Any = None, order: Any = None) -> ndarray:
    """Device arrays pass through (converted if asked); host data are copied over."""
    if isinstance(a, ndarray):
        if (dtype is None or np.dtype(dtype) == a.dtype) and order in (None, "K", "A"):
            return a
        return np.asarray(a.view(np.ndarray), dtype=dtype, order=order).copy().view(ndarray)
    if np.ndim(a) > 0:  # CuPy stages host arrays through pinned memory: not replayable
        _no_host_copy_while_capturing("asarray of host data")
    return np.array(a, dtype=dtype, order=order or "K", copy=True).view(ndarray)


def array(obj: Any, dtype: Any = None, copy: bool = True, order: str = "K", ndmin: int = 0):
    if isinstance(obj, ndarray) and not copy:
        return asarray(obj, dtype=dtype)
    if not isinstance(obj, ndarray) and np.ndim(obj) > 0:
        _no_host_copy_while_capturing("array of host data")
    host = obj.view(np.ndarray) if isinstance(obj, ndarray) else obj
    return np.array(host, dtype=dtype, copy=True, order=order, ndmin=ndmin).view(ndarray)


def ascontiguousarray(a: Any, dtype: Any = None) -> ndarray:
    """Like CuPy's, only for device arrays; the same array when nothing has to change."""
    if not isinstance(a, ndarray):
        raise TypeError(f"fake cupy: ascontiguousarray needs a device array, got {type(a)}")
    if a.flags.c_contiguous and (dtype is None or np.dtype(dtype) == a.dtype):
        return a
    return np.ascontiguousarray(a.view(np.ndarray), dtype=dtype).view(ndarray)


def asnumpy(a: Any) -> np.ndarray:
    """A host copy of a device array (host arrays are returned as NumPy arrays)."""
    _no_host_copy_while_capturing("asnumpy")
    if isinstance(a, ndarray):
        return a.get()
    return np.asarray(a)


def empty(shape: Any, dtype: Any = float, order: str = "C") -> ndarray:
    return np.empty(shape, dtype=dtype, order=order).view(ndarray)


def zeros(shape: Any, dtype: Any = float, order: str = "C") -> ndarray:
    return np.zeros(shape, dtype=dtype, order=order).view(ndarray)


def ones(shape: Any, dtype: Any = float, order: str = "C") -> ndarray:
    return np.ones(shape, dtype=dtype, order=order).view(ndarray)


def get_array_module(*args: Any) -> Any:
    """This module if any argument is a device array, else NumPy (``cupy.get_array_module``)."""
    import sys

    if any(isinstance(a, ndarray) for a in args):
        return sys.modules[__name__]
    return np


def __getattr__(name: str) -> Any:
    """Everything else: NumPy's function of the same name, on device arrays only."""
    target = getattr(np, name)
    if isinstance(target, type) or not callable(target):  # dtypes, constants
        return target

    def on_device(*args: Any, **kwargs: Any) -> Any:
        if name in _CUBLAS_FUNCTIONS:
            _no_cublas_while_capturing(name)
        _refuse_host_arrays(name, args)
        return _to_device(target(*args, **kwargs))

    on_device.__name__ = name
    return on_device


class _Generator:
    """``cupy.random.default_rng(seed)``: NumPy's generator, with device results."""

    def __init__(self, seed: Any = None) -> None:
        self._rng = np.random.default_rng(seed)

    def standard_normal(self, size: Any = None, dtype: Any = np.float64) -> ndarray:
        return _to_device(np.asarray(self._rng.standard_normal(size, dtype=dtype)))

    def random(self, size: Any = None, dtype: Any = np.float64) -> ndarray:
        return _to_device(np.asarray(self._rng.random(size, dtype=dtype)))


random = SimpleNamespace(default_rng=_Generator)


# --- streams, memory pools and stream capture -----------------------------------------------------
#
# Enough of ``cupy.cuda`` for :mod:`abp_np.fast.cuda_graph`. What a real capture refuses is refused
# here too: capturing on the default stream, a host copy or synchronisation while a stream
# captures (CUDA invalidates the capture), ending a capture that was not begun. What it cannot
# do: record the launches. Operations run at once, also during a capture, and
# ``Graph.launch`` only counts; so tests through this fake may check what was captured when
# and what was refused, never the values a replay would give (``tests/test_kernels_gpu.py``
# does that on a GPU).

#: Streams now capturing.
capturing: list[Any] = []
#: One entry per ``end_capture``: the graph it returned.
graphs: list[Any] = []
#: The kernel launches made while a stream captured, as in :data:`launches`.
captured: list[tuple[str, tuple, tuple]] = []


def _no_host_copy_while_capturing(what: str) -> None:
    if capturing:
        raise RuntimeError(
            f"fake cupy: {what} copies to the host while a stream captures (CUDA would "
            "invalidate the capture: cudaErrorStreamCaptureInvalidated)"
        )


#: CuPy functions that call cuBLAS (``@`` too): CuPy refuses them while a stream captures.
_CUBLAS_FUNCTIONS = ("matmul", "dot", "vdot", "inner", "tensordot", "einsum")


def _no_cublas_while_capturing(what: str) -> None:
    if capturing:  # CuPy's own message (cupy_backends.cuda.libs.cublas.setStream)
        raise NotImplementedError(
            f"calling cuBLAS API during stream capture is currently unsupported (fake cupy: {what})"
        )


class Graph:
    """What ``Stream.end_capture`` returns; ``launch`` counts its calls."""

    def __init__(self) -> None:
        self.launches = 0

    def launch(self, stream: Any = None) -> None:
        self.launches += 1


class Stream:
    """``cupy.cuda.Stream``: a context manager that makes itself the current stream."""

    _current: list[Any] = []

    def __init__(self, null: bool = False, non_blocking: bool = False) -> None:
        self.null, self.non_blocking = null, non_blocking
        self.ptr = 0 if null else id(self)  # a cudaStream_t; 0 is the default stream

    def __enter__(self) -> Stream:
        Stream._current.append(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        Stream._current.pop()

    def synchronize(self) -> None:
        _no_host_copy_while_capturing("Stream.synchronize")

    def begin_capture(self, mode: Any = None) -> None:
        if self.null or not self.non_blocking:
            raise RuntimeError("fake cupy: cannot capture on the default (legacy) stream")
        if self in capturing:
            raise RuntimeError("fake cupy: the stream is capturing already")
        capturing.append(self)

    def end_capture(self) -> Graph:
        if self not in capturing:
            raise RuntimeError("fake cupy: end_capture on a stream that is not capturing")
        capturing.remove(self)
        graphs.append(Graph())
        return graphs[-1]

    def is_capturing(self) -> bool:
        return self in capturing


class MemoryPool:
    """``cupy.cuda.MemoryPool``: ``malloc`` exists; no bytes are held (NumPy allocates)."""

    def malloc(self, size: int) -> None:  # pragma: no cover - NumPy allocates instead
        raise NotImplementedError

    def total_bytes(self) -> int:
        return 0


class _DefaultPool:
    """``cupy.get_default_memory_pool()``: counts ``free_all_blocks`` calls."""

    freed = 0

    def free_all_blocks(self) -> None:
        _no_host_copy_while_capturing("free_all_blocks")  # it synchronises
        _DefaultPool.freed += 1


def get_default_memory_pool() -> _DefaultPool:
    return _DefaultPool()


class Device:
    """``cupy.cuda.Device()``: the current device, id 0."""

    id = 0

    def synchronize(self) -> None:
        _no_host_copy_while_capturing("Device.synchronize")


def get_current_stream() -> Stream:
    """``cupy.cuda.get_current_stream()``: the innermost ``with stream:``, else the default."""
    return Stream._current[-1] if Stream._current else Stream(null=True)


class Memory:
    """``cupy.cuda.Memory(size)``: an allocation outside every pool; ``ptr`` its address."""

    def __init__(self, size: int) -> None:
        self._bytes = np.zeros(max(1, int(size)), dtype=np.uint8)
        self.ptr = self._bytes.ctypes.data
        self.size = int(size)


@contextlib.contextmanager
def using_allocator(allocator: Any = None) -> Any:
    """``cupy.cuda.using_allocator``: records which allocator was active when."""
    allocators.append(allocator)
    try:
        yield
    finally:
        allocators.pop()


#: The allocators made current by ``using_allocator``, innermost last.
allocators: list[Any] = []

cuda = SimpleNamespace(
    runtime=SimpleNamespace(getDeviceCount=lambda: 1),
    Stream=Stream,
    MemoryPool=MemoryPool,
    Device=Device,
    Graph=Graph,
    using_allocator=using_allocator,
    get_current_stream=get_current_stream,
    Memory=Memory,
)


# --- cuBLAS, as abp_np.fast.cublas calls it ------------------------------------------------------


def _column_major(ptr: int, dtype: Any, rows: int, cols: int, ld: int) -> np.ndarray:
    """The (rows, cols) column-major matrix at ``ptr`` with leading dimension ``ld``."""
    dtype = np.dtype(dtype)
    nbytes = ((cols - 1) * ld + rows) * dtype.itemsize
    buffer = (ctypes.c_char * nbytes).from_address(ptr)
    strides = (dtype.itemsize, ld * dtype.itemsize)
    return np.ndarray((rows, cols), dtype=dtype, buffer=buffer, strides=strides)


class FakeCublas:
    """Stands in for :class:`abp_np.fast.cublas._Library`: the same five calls, on host memory.

    ``gemm`` reads its operands column-major at the given pointers with the given leading
    dimensions, as cuBLAS would, so a wrong op, size or leading dimension gives a wrong product
    (the tests compare with NumPy's ``a @ b``, bit for bit). Each call is recorded in
    :attr:`gemms` with whether a stream was capturing: cuBLAS itself may be recorded.
    """

    def __init__(self) -> None:
        self.gemms: list[tuple] = []
        self.handles = 0
        self.streams: list[int] = []
        self.workspaces: list[tuple[int, int]] = []
        self.calls: list[str] = []  # "stream", "workspace", "gemm", in order

    def create(self) -> int:
        self.handles += 1
        return self.handles

    def set_stream(self, handle: Any, stream: int) -> None:
        self.streams.append(int(stream))
        self.calls.append("stream")

    def set_workspace(self, handle: Any, ptr: int, nbytes: int) -> None:
        self.workspaces.append((int(ptr), int(nbytes)))
        self.calls.append("workspace")

    def gemm(self, dtype, handle, opa, opb, m, n, k, a, lda, b, ldb, c, ldc) -> None:
        if opa not in (0, 1) or opb not in (0, 1) or min(m, n, k) < 1:
            raise ValueError(f"fake cuBLAS: bad gemm arguments {opa, opb, m, n, k}")
        ra, ca = (m, k) if opa == 0 else (k, m)  # A as stored
        rb, cb = (k, n) if opb == 0 else (n, k)
        if lda < max(1, ra) or ldb < max(1, rb) or ldc < max(1, m):
            raise ValueError(f"fake cuBLAS: leading dimensions {lda, ldb, ldc} too small")
        A = _column_major(a, dtype, ra, ca, lda)
        B = _column_major(b, dtype, rb, cb, ldb)
        C = _column_major(c, dtype, m, n, ldc)
        # C = op(A) op(B), computed as (op(B)^T op(A)^T)^T: for abp_np.fast.cublas.matmul(a, b)
        # that is a @ b on views with a's and b's own strides, the very NumPy call the reference
        # makes, so the two agree bit for bit
        C[...] = ((B if opb == 0 else B.T).T @ (A if opa == 0 else A.T).T).T
        self.gemms.append((opa, opb, m, n, k, bool(capturing)))
        self.calls.append("gemm")


# --- kernels --------------------------------------------------------------------------------------

# C++ scalar type -> the exact NumPy type CuPy must be given for it
_SCALARS = {
    "int": np.int32,
    "long long": np.int64,
    "float": np.float32,
    "double": np.float64,
}
_CTYPES = {
    "int": ctypes.c_int,
    "long long": ctypes.c_longlong,
    "float": ctypes.c_float,
    "double": ctypes.c_double,
}
_SUFFIX = {"float": "f32", "double": "f64"}

# Element count each pointer argument is indexed over, from the scalar arguments (by name):
# the layout contract of kernels/deconv.cu. A wrapper that passes a wrong size would read or
# write out of bounds on a GPU; here it is an error before the launch.
_EXTENTS = {
    "col2im": lambda s: {
        "cols": s["C"] * s["kh"] * s["kw"] * s["N"] * s["H"] * s["W"],
        "bias": s["C"],
        "y": s["N"] * s["C"] * s["Hout"] * s["Wout"],
    },
    "im2col": lambda s: {
        "dy": s["N"] * s["C"] * s["Hout"] * s["Wout"],
        "dcols": s["C"] * s["kh"] * s["kw"] * s["N"] * s["H"] * s["W"],
    },
    "langevin_step": lambda s: {"z": s["n"], "dz_data": s["n"], "noise": s["n"]},
}
_EXTENTS["col2im_act"] = _EXTENTS["col2im"]
_EXTENTS["channel_partials"] = lambda s: {
    **dict.fromkeys(("a", "b"), s["N"] * s["C"] * s["L"]),
    **dict.fromkeys(("sa", "sb"), s["C"]),
    "partial": s["C"] * s["P"],
}
_EXTENTS["channel_finish"] = lambda s: {"partial": s["C"] * s["P"], "out": s["C"]}
_EXTENTS["bn_inv_std"] = lambda s: dict.fromkeys(("var", "gamma", "inv_std", "a"), s["total"])
_EXTENTS["bn_forward_apply"] = lambda s: {
    **dict.fromkeys(("x", "xc", "y"), s["total"]),
    **dict.fromkeys(("mu", "a", "beta"), s["C"]),
}
_EXTENTS["bn_backward_apply"] = lambda s: {
    **dict.fromkeys(("dy", "xc", "dx"), s["total"]),
    **dict.fromkeys(("sum_dy", "sum_dy_xc", "inv_std", "gamma"), s["C"]),
}
_EXTENTS["bn_running_update"] = lambda s: dict.fromkeys(
    ("mu", "var", "running_mean", "running_var"), s["total"]
)
# The element count each kernel's grid-stride loop runs to, and what it must equal.
_TOTALS = {
    "col2im": "y",
    "col2im_act": "y",
    "im2col": "dcols",
    "langevin_step": "z",
    "channel_partials": "partial",
    "channel_finish": "out",
    "bn_inv_std": "inv_std",
    "bn_forward_apply": "y",
    "bn_backward_apply": "dx",
    "bn_running_update": "running_mean",
}
_TOTAL_ARG = {name: "total" for name in _TOTALS} | {"langevin_step": "n"}

_KERNEL_RE = re.compile(
    r"template\s*<\s*typename\s+T\s*>\s*__global__\s+void\s+(\w+)\s*\(([^)]*)\)", re.S
)


def parse_kernels(code: str) -> dict[str, list[tuple[str, str, bool, bool]]]:
    """``{name: [(param, c_type, is_pointer, is_const), ...]}`` of every templated kernel."""
    kernels = {}
    for name, params in _KERNEL_RE.findall(code):
        parsed = []
        for p in params.split(","):
            words = p.replace("*", " * ").split()
            is_const = "const" in words
            is_pointer = "*" in words
            words = [w for w in words if w not in ("const", "__restrict__", "*")]
            parsed.append((words[-1], " ".join(words[:-1]), is_pointer, is_const))
        kernels[name] = parsed
    return kernels


class RawKernel:
    """One instance ``name<ctype>``; calling it checks the arguments and runs the host build."""

    def __init__(self, expression: str, name: str, ctype: str, params: list) -> None:
        self.expression, self.name, self.ctype = expression, name, ctype
        # T -> float / double
        self.params = [(p, ctype if t == "T" else t, ptr, const) for p, t, ptr, const in params]

    def _check_launch_shape(self, grid: Any, block: Any) -> tuple[tuple, tuple]:
        for what, dims in (("grid", grid), ("block", block)):
            if not isinstance(dims, tuple) or not 1 <= len(dims) <= 3:
                raise TypeError(f"{self.expression}: {what} must be a tuple of 1 to 3 ints")
            if not all(isinstance(d, (int, np.integer)) and d >= 1 for d in dims):
                raise ValueError(f"{self.expression}: bad {what} {dims}")
        grid, block = (grid + (1, 1))[:3], (block + (1, 1))[:3]
        if grid[0] > 2**31 - 1 or grid[1] > 65535 or grid[2] > 65535:
            raise ValueError(f"{self.expression}: grid {grid} exceeds CUDA's limits")
        if block[0] * block[1] * block[2] > 1024 or block[2] > 64:
            raise ValueError(f"{self.expression}: block {block} exceeds CUDA's limits")
        if grid[1:] != (1, 1) or block[1:] != (1, 1):
            raise NotImplementedError("the host build runs 1-D launches only")
        return grid, block

    def __call__(self, grid: Any, block: Any, args: Any, shared_mem: int = 0) -> None:
        grid, block = self._check_launch_shape(grid, block)
        if not isinstance(args, tuple):
            raise TypeError(f"{self.expression}: args must be a tuple, got {type(args)}")
        if len(args) != len(self.params):
            raise TypeError(
                f"{self.expression}: takes {len(self.params)} arguments, got {len(args)}"
            )
        scalars, arrays = {}, {}
        for (pname, ctype, is_pointer, is_const), arg in zip(self.params, args):
            where = f"{self.expression}: argument {pname!r} ({ctype}{'*' if is_pointer else ''})"
            if is_pointer:
                if arg is None:  # CuPy < 14 passes a bad pointer for None (cupy/cupy#9046)
                    raise TypeError(f"{where}: None is not NULL in every CuPy; pass numpy.uintp(0)")
                if type(arg) is np.uintp and arg == 0:  # NULL: a pointer-sized zero by value
                    if not is_const:
                        raise TypeError(f"{where} is written to and cannot be NULL")
                    arrays[pname] = None
                    continue
                if not isinstance(arg, ndarray):
                    raise TypeError(f"{where} must be a device array, got {type(arg).__name__}")
                if arg.dtype != _SCALARS[ctype]:
                    raise TypeError(f"{where} has dtype {arg.dtype}")
                if not arg.flags.c_contiguous:
                    raise ValueError(f"{where} is not C-contiguous")
                arrays[pname] = arg
            else:
                if type(arg) is not _SCALARS[ctype]:
                    raise TypeError(
                        f"{where} must be numpy.{_SCALARS[ctype].__name__}, got {type(arg)}"
                    )
                scalars[pname] = arg.item()
        self._check_extents(scalars, arrays)
        launches.append((self.expression, grid, block))
        if capturing:
            captured.append((self.expression, grid, block))
        self._run_on_host(grid, block, args)

    def _check_extents(self, scalars: dict, arrays: dict) -> None:
        extents = _EXTENTS[self.name](scalars)
        total = scalars[_TOTAL_ARG[self.name]]
        if total != extents[_TOTALS[self.name]]:
            raise ValueError(f"{self.expression}: element count {total} does not match the shapes")
        for pname, a in arrays.items():
            if a is not None and a.size != extents[pname]:
                raise ValueError(
                    f"{self.expression}: {pname} holds {a.size} elements, the kernel indexes "
                    f"{extents[pname]}"
                )
        written = [p for p, _, ptr, const in self.params if ptr and not const]
        for w in written:
            for p, a in arrays.items():
                if p != w and a is not None and np.shares_memory(arrays[w], a):
                    raise ValueError(f"{self.expression}: {w} overlaps {p} (both __restrict__)")

    def _run_on_host(self, grid: tuple, block: tuple, args: tuple) -> None:
        if HOST_LIBRARY is None:
            raise RuntimeError("fake cupy: set fake_cupy.HOST_LIBRARY to the host build first")
        fn = getattr(HOST_LIBRARY, f"host_{self.name}_{_SUFFIX[self.ctype]}")
        fn.argtypes = [
            ctypes.c_void_p if ptr else _CTYPES[ctype] for _, ctype, ptr, _ in self.params
        ] + [ctypes.c_int, ctypes.c_int]  # blocks, threads per block
        fn.restype = None
        values = [
            (None if type(a) is np.uintp else a.ctypes.data) if ptr else a.item()
            for (_, _, ptr, _), a in zip(self.params, args)
        ]
        fn(*values, int(grid[0]), int(block[0]))


class RawModule:
    """``cupy.RawModule(code=..., options=..., name_expressions=...)``, "compiled" at once."""

    def __init__(
        self, *, code: str, options: tuple = (), name_expressions: Any = None, **unused: Any
    ) -> None:
        if unused:
            raise TypeError(f"fake cupy: RawModule got unexpected arguments {sorted(unused)}")
        if not isinstance(code, str):
            raise TypeError("RawModule: code must be a str")
        if not isinstance(options, tuple) or not all(isinstance(o, str) for o in options):
            raise TypeError(f"RawModule: options must be a tuple of str, got {options!r}")
        if name_expressions is None or not all(isinstance(e, str) for e in name_expressions):
            raise TypeError("RawModule: templated kernels need name_expressions (str)")
        self.code, self.options = code, options
        kernels = parse_kernels(code)
        self._functions = {}
        for expression in name_expressions:
            match = re.fullmatch(r"(\w+)<(float|double)>", expression)
            if match is None or match.group(1) not in kernels:
                raise ValueError(f"RawModule: {expression!r} names no kernel of the source")
            name, ctype = match.groups()
            self._functions[expression] = RawKernel(expression, name, ctype, kernels[name])

    def get_function(self, name: str) -> RawKernel:
        if name not in self._functions:
            raise KeyError(f"RawModule: {name!r} is not among the name_expressions")
        return self._functions[name]
