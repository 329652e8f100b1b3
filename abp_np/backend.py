"""The array backend: NumPy on the CPU, CuPy on an NVIDIA GPU.

Every operation in abp_np is written once, against an array module ``xp`` that is
either :mod:`numpy` or :mod:`cupy`::

    xp = get_array_module(x)
    y = xp.tanh(x)

This module holds the library's only ``import cupy``, done on first need (a device
asked for, or a CuPy array met), so ``import abp_np`` works with NumPy alone and stays
quick where CuPy is installed too; :func:`load_cupy` hands that module to the code that
launches CUDA kernels. It also holds the one switch of the speed routes of
:mod:`abp_np.fast` (:func:`using`), and the explicit random generators: abp_np has no
hidden global random state. It imports nothing from the rest of the package.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

#: An array of either backend: :class:`numpy.ndarray` or :class:`cupy.ndarray`. Spelled ``Any``
#: so that naming the CuPy type does not import CuPy.
Array = Any

_NOT_YET = object()
#: :mod:`cupy`, None where it cannot be imported, or ``_NOT_YET`` before the first need.
_cupy: Any = _NOT_YET


def load_cupy() -> Any:
    """:mod:`cupy`, imported on the first call, or None where it cannot be imported."""
    global _cupy
    if _cupy is _NOT_YET:
        try:  # the only place where CuPy is imported
            import cupy
        except Exception:  # ImportError, or a CuPy that cannot find its CUDA libraries
            cupy = None
        _cupy = cupy
    return _cupy


def _from_cupy(x: Any) -> bool:
    """Is ``x``'s type defined by CuPy? (Asked without importing CuPy.)"""
    return type(x).__module__.partition(".")[0] in ("cupy", "cupyx")


__all__ = [
    "Array",
    "Switches",
    "load_cupy",
    "cupy_available",
    "gpu_available",
    "get_array_module",
    "resolve_device",
    "device_of",
    "to_device",
    "to_numpy",
    "default_rng",
    "using",
    "switches",
    "using_kernels",
    "check_float_dtype",
    "check_count",
    "pair",
    "FLOAT_DTYPES",
    "DeviceOutOfMemoryError",
    "is_device_out_of_memory",
    "kernel_folder",
]

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

_GPU_HELP = (
    "Install CuPy with the CUDA libraries it needs, e.g. `pip install 'abp_np[gpu]'` "
    "(cupy-cuda12x[ctk]) or, for a CUDA 13 driver, `pip install 'cupy-cuda13x[ctk]'`; "
    "or run with device='cpu'."
)


def cupy_available() -> bool:
    """True when CuPy could be imported."""
    return load_cupy() is not None


def gpu_available() -> bool:
    """True when CuPy is importable and at least one CUDA GPU is visible."""
    cupy = load_cupy()
    if cupy is None:
        return False
    try:
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def resolve_device(device: str) -> Any:
    """Return the array module for ``device`` ('cpu' or 'gpu'), or raise a clear error.

    Parameters
    ----------
    device : {'cpu', 'gpu'}
        'cpu' gives :mod:`numpy`; 'gpu' (also 'cuda') gives :mod:`cupy`.

    Raises
    ------
    ValueError
        If ``device`` is not one of the names above.
    RuntimeError
        If the GPU is asked for but CuPy is missing or no GPU is visible; the message
        says which, and what to do.
    """
    name = str(device).lower()
    if name in ("cpu", "numpy"):
        return np
    if name not in ("gpu", "cuda", "cupy"):
        raise ValueError(f"unknown device {device!r}: expected 'cpu' or 'gpu'")
    cupy = load_cupy()
    if cupy is None:
        raise RuntimeError(f"device='gpu' needs CuPy, which is not installed. {_GPU_HELP}")
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as err:  # driver missing, CUDA libraries missing ...
        raise RuntimeError(
            f"device='gpu': CuPy is installed but no CUDA GPU is visible ({err}). "
            "Check the NVIDIA driver and CUDA_VISIBLE_DEVICES, or run with device='cpu'."
        ) from err
    if count == 0:
        raise RuntimeError(
            "device='gpu': CuPy is installed but no CUDA GPU is visible. "
            "Check the NVIDIA driver and CUDA_VISIBLE_DEVICES, or run with device='cpu'."
        )
    return cupy


def get_array_module(*arrays: Any) -> Any:
    """Return :mod:`cupy` if any argument is a CuPy array, else :mod:`numpy`."""
    for a in arrays:  # NumPy arrays only, the CPU's every call: answered without a look at CuPy
        if type(a) is not np.ndarray:
            break
    else:
        return np
    cupy = _cupy
    if cupy is _NOT_YET:  # no CuPy array has been seen: only one could bring CuPy in
        if not any(_from_cupy(a) for a in arrays):
            return np
        cupy = load_cupy()
    if cupy is not None:
        return cupy.get_array_module(*arrays)
    return np


def device_of(x: Any) -> str:
    """'gpu' for a CuPy array, 'cpu' otherwise."""
    return "gpu" if get_array_module(x) is not np else "cpu"


def to_device(x: Any, device: str) -> Any:
    """Copy an array to ``device`` ('cpu' or 'gpu'); arrays already there are returned as is."""
    xp = resolve_device(device)
    if xp is np:
        return to_numpy(x)
    return xp.asarray(x)


def to_numpy(x: Any) -> np.ndarray:
    """Return ``x`` as a NumPy array (copies from the GPU when needed)."""
    cupy = load_cupy() if _from_cupy(x) else _cupy
    if cupy is not None and cupy is not _NOT_YET and isinstance(x, cupy.ndarray):
        return cupy.asnumpy(x)
    return np.asarray(x)


def default_rng(seed: int | None = None, device: str = "cpu") -> Any:
    """An explicit random generator for ``device``.

    On the CPU this is :func:`numpy.random.default_rng`; on the GPU
    :func:`cupy.random.default_rng`. Both offer ``standard_normal(shape, dtype=...)``,
    the only method the algorithm uses. Pass it to every function that draws noise.
    """
    xp = resolve_device(device)
    return xp.random.default_rng(seed)


def check_count(v: Any, name: str, minimum: int = 0, owner: str = "ABP") -> int:
    """``v`` as an int, refused unless it is an integer (not a bool) of at least ``minimum``."""
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise ValueError(f"{owner}: {name} must be an integer >= {minimum}, got {v!r}")
    return int(v)


def check_float_dtype(dtype: Any, owner: str) -> np.dtype:
    """Return ``np.dtype(dtype)`` if it is float32 or float64, else raise ValueError."""
    dt = np.dtype(dtype)
    if dt not in FLOAT_DTYPES:
        raise ValueError(f"{owner}: dtype {dt} is not supported; use float32 or float64")
    return dt


def pair(value: Any, name: str, owner: str, minimum: int = 0) -> tuple[int, int]:
    """``value`` as two ints ``(a, b)``, each at least ``minimum``; an int stands for both.

    Used for every size pair (kernel size, stride, padding, output padding), by the layers and
    by the CUDA kernels' wrappers alike.

    Raises
    ------
    ValueError
        Naming ``owner`` and ``name``, when ``value`` is neither an int nor a pair of them, or
        an entry is below ``minimum``.
    """
    try:
        if isinstance(value, (tuple, list)):
            t = tuple(int(v) for v in value)
        else:
            t = (int(value), int(value))
    except (TypeError, ValueError):
        t = ()
    if len(t) != 2 or any(v < minimum for v in t):
        raise ValueError(
            f"{owner}: {name} must be an int >= {minimum} or a pair of them, got {value!r}"
        )
    return t  # type: ignore[return-value]


# --- the switch of the speed routes ---------------------------------------------------------------


class Switches(NamedTuple):
    """Which speed routes of :mod:`abp_np.fast` may replace the plain ``xp`` code (:func:`using`).

    Each route computes the same function as the reference in :mod:`abp_np.functional`; these
    settings choose only how.
    """

    cuda: bool  # the CUDA kernels of kernels/deconv.cu, for CuPy arrays
    c: bool  # the C kernels of kernels/*_cpu.c (batch norm, Winograd's data movement), for NumPy
    winograd: str  # "auto", "on" or "off": the CPU's Winograd transposed convolution
    cpu_forms: bool  # the CPU's NumPy forms of the transposed convolution: phases, blocks
    threads: int | None = None  # threads outside the GEMMs (abp_np.fast.threads); None: default


_WINOGRAD_MODES = ("auto", "on", "off")

#: The settings now in force. ``c`` starts off where the environment has ``ABP_CPU_KERNELS=0``.
_switches = Switches(
    cuda=True,
    c=os.environ.get("ABP_CPU_KERNELS", "1").strip() != "0",
    winograd="auto",
    cpu_forms=True,
    threads=None,
)


def switches() -> Switches:
    """The settings of the speed routes now in force (see :func:`using`)."""
    return _switches


@contextlib.contextmanager
def using(
    *,
    cuda: bool | None = None,
    c: bool | None = None,
    winograd: str | None = None,
    cpu_forms: bool | None = None,
    threads: int | None = None,
) -> Iterator[Switches]:
    """Choose the speed routes inside a ``with`` block; each keyword left out (None) stays as is.

    Parameters
    ----------
    cuda : bool
        The CUDA kernels (``kernels/deconv.cu``) for CuPy arrays: the transposed convolution's
        ``col2im`` / ``im2col`` and the fused Langevin update. Default on.
    c : bool
        The C kernels (``kernels/*_cpu.c``, compiled on first use where a C compiler exists) for
        NumPy arrays: batch norm in fewer passes, the data movement of the Winograd route.
        Default on, off where the environment has ``ABP_CPU_KERNELS=0``.
    winograd : {'auto', 'on', 'off'}
        The CPU's Winograd transposed convolutions (:mod:`abp_np.fast.winograd` for the layers
        whose geometry fits: kernel 5, stride 2, padding 2...; :mod:`abp_np.fast.winograd1d`
        for the 1-D layers with ``s < k <= 3 s``). ``'auto'`` (default): where it pays
        (:func:`abp_np.fast.winograd.worth_it`, with the C kernels;
        :func:`abp_np.fast.winograd1d.worth_it`); ``'on'``: every layer that fits, with NumPy
        data movement when the C kernels do not run; ``'off'``: never.
    cpu_forms : bool
        The CPU's NumPy forms of the transposed convolution: the phase form and the column form
        in blocks of examples (forward), the columns in blocks of rows (backward). Default on.
    threads : int >= 1
        How many threads run the loops outside the GEMMs (the C kernels, the activations,
        ``col2im``; :mod:`abp_np.fast.threads`). Default: ``ABP_NUM_THREADS`` from the
        environment, else the BLAS' own thread count. 1 runs each loop on the calling thread
        alone. Outside the GEMMs the results are the same bit for bit for every count; the
        GEMMs that several threads hand to OpenBLAS in other sizes (stacks of small GEMMs, the
        Winograd route's examples) may differ in the last bits, within the bounds that
        ``tests/test_threads.py`` states.

    With every route off, ``using(cuda=False, c=False, winograd="off", cpu_forms=False)``, each
    operation runs the plain ``xp`` reference of :mod:`abp_np.functional`, on either backend:
    what the tests hold every route to. The block yields the settings in force inside it and
    restores the previous ones on leaving, also on an exception. The settings are the
    process's, read by all its threads (the worker threads of a split loop included): enter
    the block once, around the work, not on several threads at a time, whose blocks would
    restore each other's settings out of order.
    """
    global _switches
    changes = {}
    for name, value in (("cuda", cuda), ("c", c), ("cpu_forms", cpu_forms)):
        if value is not None:
            if not isinstance(value, (bool, np.bool_)):
                raise ValueError(f"using: {name} must be True or False, got {value!r}")
            changes[name] = bool(value)
    if winograd is not None:
        if winograd not in _WINOGRAD_MODES:
            raise ValueError(f"using: winograd must be one of {_WINOGRAD_MODES}, got {winograd!r}")
        changes["winograd"] = winograd
    if threads is not None:
        if isinstance(threads, (bool, np.bool_)) or not isinstance(threads, (int, np.integer)):
            raise ValueError(f"using: threads must be a whole number >= 1, got {threads!r}")
        if threads < 1:
            raise ValueError(f"using: threads must be >= 1 (1 = one core), got {threads}")
        changes["threads"] = int(threads)
    previous = _switches
    _switches = previous._replace(**changes)
    try:
        yield _switches
    finally:
        _switches = previous


def using_kernels(enabled: bool) -> contextlib.AbstractContextManager[Switches]:
    """``using(cuda=enabled, c=enabled)``: the CUDA and C kernels together, on or off."""
    return using(cuda=bool(enabled), c=bool(enabled))


# --- GPU out of memory ----------------------------------------------------------------------------


class DeviceOutOfMemoryError(MemoryError):
    """The GPU ran out of memory. The message says what was running and what to try instead."""


# What CuPy raises when an allocation fails: its memory pool's OutOfMemoryError, a CUDA runtime
# error cudaErrorMemoryAllocation (e.g. inside a kernel launch) or cuBLAS failing to allocate its
# workspace. Recognised by name, so that this module needs no CuPy to tell.
_OOM_MARKERS = ("cudaErrorMemoryAllocation", "CUBLAS_STATUS_ALLOC_FAILED", "out of memory")


def is_device_out_of_memory(exc: BaseException) -> bool:
    """True when ``exc`` is CuPy's (or CUDA's) report of a failed GPU memory allocation."""
    if isinstance(exc, DeviceOutOfMemoryError):
        return True
    module = type(exc).__module__ or ""
    if not (module.startswith("cupy") or module.startswith("cupy_backends")):
        return False
    if type(exc).__name__ == "OutOfMemoryError":
        return True
    return any(marker in str(exc) for marker in _OOM_MARKERS)


def out_of_memory_error(
    exc: BaseException, owner: str, batch: int, hint: str
) -> DeviceOutOfMemoryError:
    """A :class:`DeviceOutOfMemoryError` for ``exc``, naming ``owner``, the batch and a way out.

    Parameters
    ----------
    exc : BaseException
        CuPy's error (see :func:`is_device_out_of_memory`).
    owner : str
        What was running, e.g. ``"ABP.fit"``.
    batch : int
        The number of examples processed at once when memory ran out.
    hint : str
        How to ask for fewer at once, e.g. ``"batch_size={n}"``: ``{n}`` is replaced by half of
        ``batch`` (at least 1).
    """
    detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    smaller = max(1, int(batch) // 2)
    if int(batch) > 1:
        advice = f"try {hint.format(n=smaller)} (half of it) or smaller"
    else:
        advice = "one example at a time does not fit: use a smaller network or image, or the CPU"
    return DeviceOutOfMemoryError(
        f"{owner}: the GPU ran out of memory with {int(batch)} examples at once ({detail}); {advice}"
    )


def kernel_folder(source: str) -> Path | None:
    """The folder of the kernel sources (``kernels/*.cu``, ``*.c``) that belong with this copy
    of abp_np: ``abp_np/kernels`` in an installed wheel, ``kernels/`` beside the package in a
    source tree; ``source`` is a file it must hold. None when neither has it.

    Found from where this file is. The package ``abp_np.kernels`` is asked only last (an
    unusual loader): an editable install maps that name to its own checkout even while
    another copy of abp_np is the one imported (an older commit unpacked for a side-by-side
    benchmark), whose Python code would then drive the checkout's kernels.
    """
    here = Path(__file__).resolve().parent
    for folder in (here / "kernels", here.parent / "kernels"):
        if (folder / source).is_file():
            return folder
    try:
        installed = importlib.resources.files("abp_np.kernels")
    except ModuleNotFoundError:
        return None
    if installed.joinpath(source).is_file():
        return Path(str(installed))
    return None
