"""The CUDA kernels of ``kernels/deconv.cu``, called from CuPy.

The transposed convolution's scatter (``col2im``) and gather (``im2col``) steps and the
fused Langevin update run as custom kernels when the arrays live on the GPU, and so does batch
norm with batch statistics (``batchnorm.cu``). The GEMMs around them are cuBLAS's, called by
:func:`abp_np.fast.cublas.matmul`, which a CUDA graph can record (CuPy's ``@`` cannot).
:func:`conv_transpose2d_forward` and :func:`conv_transpose2d_backward` are the reference's
lines with the kernels in place of its ``col2im`` and ``im2col``. ``abp_np/functional.py`` holds the NumPy / CuPy reference that
these kernels must match.

How it works:

* ``deconv.cu`` is C++ templated over the dtype. It is read once (from the installed
  package ``abp_np.kernels``, or from ``<repo>/kernels/`` in a source tree) and compiled
  lazily, on the first launch, by one :class:`cupy.RawModule`; functions are looked up by
  ``(name, dtype)``, e.g. ``get_function("col2im", numpy.float32)`` is ``col2im<float>``.
* CuPy passes kernel arguments as they come and checks nothing, so every wrapper
  validates dtypes, C-contiguity and shapes first and raises :class:`ValueError` with a
  clear message; scalars go in as ``numpy.int32`` / ``numpy.int64`` / ``numpy.float32`` /
  ``numpy.float64`` to match the C++ signature exactly.
* The kernels use grid-stride loops, so a capped grid of 256-thread blocks serves any size.

This module imports without CuPy: it asks :func:`abp_np.backend.load_cupy`, the one place
that imports CuPy, when a kernel is compiled or launched.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..backend import gpu_available, kernel_folder, load_cupy, pair
from .cublas import matmul

__all__ = [
    "ACTIVATIONS",
    "KERNEL_NAMES",
    "SOURCE_FILES",
    "available",
    "batchnorm_backward",
    "batchnorm_forward",
    "batchnorm_update_running",
    "col2im",
    "conv_transpose2d_backward",
    "conv_transpose2d_forward",
    "get_function",
    "im2col",
    "kernel_dir",
    "kernel_source",
    "langevin_step_",
    "name_expressions",
]

#: Kernels in ``deconv.cu`` and ``batchnorm.cu``; each is instantiated for float and double.
KERNEL_NAMES = (
    "col2im",
    "col2im_act",
    "im2col",
    "langevin_step",
    "channel_partials",
    "channel_finish",
    "bn_inv_std",
    "bn_forward_apply",
    "bn_backward_apply",
    "bn_running_update",
)

#: Activation codes of ``col2im_act`` (the ``ABP_ACT_*`` macros in ``deconv.cu``).
ACTIVATIONS = {"identity": 0, "tanh": 1, "relu": 2, "leaky_relu": 3}

_CTYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
#: The sources compiled together into the one module, in this order.
SOURCE_FILES = ("deconv.cu", "batchnorm.cu")
#: At most this many partial sums per channel in batch norm's two-stage sums.
_PARTIALS = 256
_THREADS = 256  # threads per block
_MAX_BLOCKS = 65535  # grid cap; grid-stride loops cover the rest
_INT32_MAX = 2**31 - 1
#: A NULL pointer argument (no bias, no noise): a pointer-sized zero passed by value. CuPy before
#: 14 turns ``None`` into a bad pointer rather than NULL (cupy/cupy#9046); a zero works in all.
_NULL = np.uintp(0)

_lock = threading.Lock()
_source: str | None = None
_module: Any = None
_functions: dict[str, Any] = {}  # expression -> cupy.RawKernel of _module


# --- finding and compiling the source -------------------------------------------------------------


def kernel_dir() -> Path:
    """The folder holding ``deconv.cu`` and ``host_shim.h``: ``abp_np/kernels`` in an installed
    wheel (package data), ``<repo>/kernels`` in a source tree (see
    :func:`abp_np.backend.kernel_folder`).
    """
    folder = kernel_folder(SOURCE_FILES[0])
    if folder is None:
        source_tree = Path(__file__).resolve().parents[2] / "kernels"
        raise FileNotFoundError(
            f"cannot find {SOURCE_FILES[0]}: neither the package abp_np.kernels nor {source_tree} "
            "holds it; reinstall abp_np"
        )
    return folder


def kernel_source() -> str:
    """The text of :data:`SOURCE_FILES` (``deconv.cu``, then ``batchnorm.cu``), read once."""
    global _source
    if _source is None:
        folder = kernel_dir()
        _source = "\n".join((folder / f).read_text(encoding="utf-8") for f in SOURCE_FILES)
    return _source


def name_expressions() -> list[str]:
    """Every template instance the module compiles, e.g. ``'col2im<float>'``."""
    return [f"{name}<{ctype}>" for name in KERNEL_NAMES for ctype in _CTYPES.values()]


def available() -> bool:
    """True when CuPy can be imported and at least one CUDA GPU is visible."""
    return gpu_available()


def _cupy() -> Any:
    """:mod:`cupy`, from :func:`abp_np.backend.load_cupy`; RuntimeError where it is missing."""
    cupy = load_cupy()
    if cupy is None:
        raise RuntimeError("the CUDA kernels need CuPy, which cannot be imported here")
    return cupy


def _get_module() -> Any:
    """The one :class:`cupy.RawModule`, built on first use."""
    global _module
    if _module is None:
        with _lock:
            if _module is None:
                cupy = _cupy()
                _functions.clear()  # they belong to the module they came from
                _module = cupy.RawModule(
                    code=kernel_source(),
                    options=("-std=c++17",),
                    name_expressions=name_expressions(),
                )
    return _module


def get_function(name: str, dtype: Any) -> Any:
    """The compiled kernel ``name<T>`` for ``dtype`` (float32 -> float, float64 -> double).

    Parameters
    ----------
    name : str
        One of :data:`KERNEL_NAMES`.
    dtype : numpy dtype-like
        float32 or float64.

    Returns
    -------
    cupy.RawKernel
    """
    if name not in KERNEL_NAMES:
        raise ValueError(f"unknown kernel {name!r}; expected one of {KERNEL_NAMES}")
    expression = f"{name}<{_ctype(dtype, name)}>"  # checked before CuPy is touched
    module = _get_module()
    kernel = _functions.get(expression)
    if kernel is None:  # CuPy builds a new RawKernel object at every get_function
        kernel = _functions[expression] = module.get_function(expression)
    return kernel


# --- validation helpers ---------------------------------------------------------------------------


def _ctype(dtype: Any, owner: str) -> str:
    dt = np.dtype(dtype)
    if dt not in _CTYPES:
        raise ValueError(f"{owner}: dtype {dt} is not supported; use float32 or float64")
    return _CTYPES[dt]


def _check_array(a: Any, name: str, owner: str, dtype: np.dtype | None = None) -> np.dtype:
    """Check that ``a`` is a C-contiguous CuPy float32/float64 array (of ``dtype`` if given)."""
    cupy = _cupy()
    if not isinstance(a, cupy.ndarray):
        raise ValueError(f"{owner}: {name} must be a cupy.ndarray, got {type(a).__name__}")
    _ctype(a.dtype, f"{owner}: {name}")
    if dtype is not None and a.dtype != dtype:
        raise ValueError(f"{owner}: {name} has dtype {a.dtype}, expected {dtype} like the others")
    if not a.flags.c_contiguous:
        raise ValueError(
            f"{owner}: {name} must be C-contiguous (pass cupy.ascontiguousarray({name}))"
        )
    current = cupy.cuda.Device().id
    if a.device.id != current:
        raise ValueError(
            f"{owner}: {name} is on GPU {a.device.id}, but the current device is GPU {current}; "
            f"launch inside `with cupy.cuda.Device({a.device.id}):`"
        )
    return a.dtype


def _check_sizes(owner: str, **sizes: int) -> None:
    """Every size must be a positive int32 (the kernels index shapes with ``int``)."""
    for name, v in sizes.items():
        if not isinstance(v, (int, np.integer)) or not 1 <= v <= _INT32_MAX:
            raise ValueError(f"{owner}: {name} must be an int in [1, 2**31 - 1], got {v!r}")


def _check_geometry(
    owner: str, H: int, W: int, Hout: int, Wout: int, kh: int, kw: int, stride: Any, padding: Any
) -> tuple[int, int, int, int]:
    """Check stride, padding and the output size against PyTorch's rule; return sh, sw, ph, pw.

    Hout = (H - 1) sh - 2 ph + kh + oph with 0 <= oph < sh (likewise for W).
    """
    sh, sw = pair(stride, "stride", owner, minimum=1)
    ph, pw = pair(padding, "padding", owner, minimum=0)
    _check_sizes(owner, sh=sh, sw=sw)
    if ph > _INT32_MAX // 2 or pw > _INT32_MAX // 2:
        raise ValueError(f"{owner}: padding must be below 2**30, got {padding!r}")
    for axis, n_in, n_out, k, s, p in (("H", H, Hout, kh, sh, ph), ("W", W, Wout, kw, sw, pw)):
        base = (n_in - 1) * s - 2 * p + k
        if not 0 <= n_out - base < s:
            raise ValueError(
                f"{owner}: output size {axis}out={n_out} does not match {axis}={n_in}, "
                f"kernel={k}, stride={s}, padding={p}: expected {base} + output_padding "
                f"with 0 <= output_padding < stride"
            )
        if max(n_in * s + k, n_out + p) > _INT32_MAX:
            raise ValueError(f"{owner}: sizes along {axis} overflow 32-bit indices")
    return sh, sw, ph, pw


def _launch(kernel: Any, total: int, args: tuple) -> None:
    """Launch a grid-stride kernel over ``total`` elements (nothing to do when 0)."""
    if total == 0:
        return
    blocks = min((total + _THREADS - 1) // _THREADS, _MAX_BLOCKS)
    kernel((blocks,), (_THREADS,), args)


# --- wrappers -------------------------------------------------------------------------------------


def col2im(
    cols: Any,
    N: int,
    Cout: int,
    Hout: int,
    Wout: int,
    kh: int,
    kw: int,
    H: int,
    W: int,
    stride: tuple[int, int],
    padding: tuple[int, int],
    bias: Any = None,
    activation: str = "identity",
    slope: float = 0.2,
) -> Any:
    """Gather columns into the transposed convolution's output, plus bias, plus activation.

    Implements, for every output element, in a fixed order (i ascending, then j)::

        y[n, c, oh, ow] = act(bias[c] + sum cols[c, i, j, n, ih, iw]
                                        over ih sh + i - ph = oh, iw sw + j - pw = ow)

    with ``0 <= ih < H``, ``0 <= iw < W``. One GPU thread per element of ``y``, no atomics:
    the result is the same bits on every run.

    Parameters
    ----------
    cols : cupy.ndarray (Cout, kh, kw, N, H, W), or the same data as (Cout kh kw, N H W)
        float32 or float64, C-contiguous; ``weight2d.T @ x2d`` of the forward pass.
    N, Cout, Hout, Wout : int
        Shape of the output ``y``.
    kh, kw : int
        Kernel size.
    H, W : int
        Spatial size of the transposed convolution's input.
    stride, padding : (int, int)
        ``(sh, sw)`` and ``(ph, pw)``; ``Hout = (H - 1) sh - 2 ph + kh + oph`` with
        ``0 <= oph < sh`` (PyTorch's output_padding), likewise for ``Wout``.
    bias : cupy.ndarray (Cout,) or None
        Same dtype as ``cols``.
    activation : {'identity', 'tanh', 'relu', 'leaky_relu'}
        Applied after the bias (the generator's last layer is deconv + bias + tanh).
    slope : float
        Negative slope of 'leaky_relu'.

    Returns
    -------
    y : cupy.ndarray (N, Cout, Hout, Wout)
        A new array, dtype of ``cols``.
    """
    cupy = _cupy()
    owner = "col2im"
    _check_sizes(owner, N=N, Cout=Cout, Hout=Hout, Wout=Wout, kh=kh, kw=kw, H=H, W=W)
    sh, sw, ph, pw = _check_geometry(owner, H, W, Hout, Wout, kh, kw, stride, padding)
    dtype = _check_array(cols, "cols", owner)
    if cols.shape not in ((Cout, kh, kw, N, H, W), (Cout * kh * kw, N * H * W)):
        raise ValueError(
            f"{owner}: cols has shape {cols.shape}, expected (Cout, kh, kw, N, H, W) = "
            f"{(Cout, kh, kw, N, H, W)} or (Cout*kh*kw, N*H*W) = {(Cout * kh * kw, N * H * W)}"
        )
    if bias is not None:
        _check_array(bias, "bias", owner, dtype)
        if bias.shape != (Cout,):
            raise ValueError(f"{owner}: bias has shape {bias.shape}, expected ({Cout},)")
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"{owner}: unknown activation {activation!r}; expected one of {tuple(ACTIVATIONS)}"
        )
    y = cupy.empty((N, Cout, Hout, Wout), dtype=dtype)
    total = y.size
    geometry = tuple(np.int32(v) for v in (N, Cout, Hout, Wout, kh, kw, H, W, sh, sw, ph, pw))
    if activation == "identity":
        args = (cols, _NULL if bias is None else bias, y, *geometry, np.int64(total))
        _launch(get_function("col2im", dtype), total, args)
    else:
        act = np.int32(ACTIVATIONS[activation])
        args = (cols, _NULL if bias is None else bias, y, *geometry, act, dtype.type(slope))
        args += (np.int64(total),)
        _launch(get_function("col2im_act", dtype), total, args)
    return y


def im2col(
    dy: Any,
    kh: int,
    kw: int,
    H: int,
    W: int,
    stride: tuple[int, int],
    padding: tuple[int, int],
) -> Any:
    """Gather the patches of ``dy`` into columns: the adjoint of :func:`col2im`.

    Implements::

        dcols[c, i, j, n, ih, iw] = dy[n, c, ih sh + i - ph, iw sw + j - pw]

    and 0 where that index falls outside ``dy``. One GPU thread per element of ``dcols``.
    The caller then forms ``dx2d = weight2d @ dcols2d`` and ``dW = x2d @ dcols2d.T``.

    Parameters
    ----------
    dy : cupy.ndarray (N, Cout, Hout, Wout)
        float32 or float64, C-contiguous: the gradient of the transposed convolution's output.
    kh, kw : int
        Kernel size.
    H, W : int
        Spatial size of the transposed convolution's input.
    stride, padding : (int, int)
        As in :func:`col2im`; ``Hout, Wout`` must follow PyTorch's rule for them.

    Returns
    -------
    dcols : cupy.ndarray (Cout, kh, kw, N, H, W)
        A new array, dtype of ``dy``.
    """
    cupy = _cupy()
    owner = "im2col"
    dtype = _check_array(dy, "dy", owner)
    if dy.ndim != 4:
        raise ValueError(f"{owner}: dy must be 4-D (N, Cout, Hout, Wout), got shape {dy.shape}")
    N, Cout, Hout, Wout = dy.shape
    _check_sizes(owner, N=N, Cout=Cout, Hout=Hout, Wout=Wout, kh=kh, kw=kw, H=H, W=W)
    sh, sw, ph, pw = _check_geometry(owner, H, W, Hout, Wout, kh, kw, stride, padding)
    dcols = cupy.empty((Cout, kh, kw, N, H, W), dtype=dtype)
    total = dcols.size
    geometry = tuple(np.int32(v) for v in (N, Cout, Hout, Wout, kh, kw, H, W, sh, sw, ph, pw))
    args = (dy, dcols, *geometry, np.int64(total))
    _launch(get_function("im2col", dtype), total, args)
    return dcols


def langevin_step_(z: Any, dz_data: Any, noise: Any, delta: float) -> Any:
    """One Langevin step on the latent factors, in place.

    Implements (inferential back-propagation, equation (5) of :mod:`abp_np.abp`)::

        z <- z + (delta^2 / 2) * (dz_data - z) + delta * noise

    where ``dz_data = (Y - f(z)) / sigma^2 * df/dz`` is the gradient of the data term
    only and ``- z`` that of the N(0, I) prior. ``noise=None`` gives gradient ascent.

    Parameters
    ----------
    z : cupy.ndarray, any shape
        float32 or float64, C-contiguous; updated in place.
    dz_data : cupy.ndarray, shape and dtype of ``z``
    noise : cupy.ndarray, shape and dtype of ``z``, or None
        Standard normal draws, supplied by the caller.
    delta : float
        Step size, >= 0.

    Returns
    -------
    z : cupy.ndarray
        The same array, updated.
    """
    owner = "langevin_step_"
    dtype = _check_array(z, "z", owner)
    _check_array(dz_data, "dz_data", owner, dtype)
    if dz_data.shape != z.shape:
        raise ValueError(f"{owner}: dz_data has shape {dz_data.shape}, expected {z.shape} like z")
    if noise is not None:
        _check_array(noise, "noise", owner, dtype)
        if noise.shape != z.shape:
            raise ValueError(f"{owner}: noise has shape {noise.shape}, expected {z.shape} like z")
    delta = float(delta)
    if not delta >= 0.0:  # also rejects NaN
        raise ValueError(f"{owner}: delta must be >= 0, got {delta!r}")
    noise_ptr = _NULL if noise is None else noise
    args = (z, dz_data, noise_ptr, dtype.type(0.5 * delta * delta), dtype.type(delta))
    _launch(get_function("langevin_step", dtype), z.size, (*args, np.int64(z.size)))
    return z


# --- the transposed convolution with the kernels --------------------------------------------------


def conv_transpose2d_forward(
    x: Any, weight: Any, bias: Any, stride: tuple[int, int], padding: tuple[int, int], out_hw
) -> Any:
    """:func:`abp_np.functional.conv_transpose2d_forward`'s column form, ``col2im`` a kernel.

    ``cols = W^T x`` is one cuBLAS GEMM for the whole batch, as in the reference; then
    :func:`col2im` gathers it into y and adds the bias, one thread per output element.

    Returns
    -------
    y : cupy.ndarray (N, Cout, Hout, Wout), ``(Hout, Wout) = out_hw``
    """
    N, Cin, H, W = x.shape
    _, Cout, kh, kw = weight.shape
    # (N, Cin, H, W) -> (Cin, N H W)
    x2d = x.transpose(1, 0, 2, 3).reshape(Cin, N * H * W)
    # (Cout kh kw, N H W), one GEMM for the whole batch
    cols = matmul(weight.reshape(Cin, Cout * kh * kw).T, x2d).reshape(Cout, kh, kw, N, H, W)
    return col2im(cols, N, Cout, *out_hw, kh, kw, H, W, stride, padding, bias=bias)


def conv_transpose2d_backward(
    dy: Any,
    x: Any,
    weight: Any,
    has_bias: bool,
    stride: tuple[int, int],
    padding: tuple[int, int],
    need_param_grads: bool = True,
) -> tuple[Any, Any, Any]:
    """:func:`abp_np.functional.conv_transpose2d_backward`, ``im2col`` a kernel.

    ``dcols = im2col(dy)`` by :func:`im2col`, one thread per column element; then the
    reference's GEMMs ``dx = W dcols`` and, for learning, ``dW = x dcols^T`` (cuBLAS).

    Returns
    -------
    dx : cupy.ndarray (N, Cin, H, W)
    dW : cupy.ndarray (Cin, Cout, kh, kw) or None
    db : cupy.ndarray (Cout,) or None
    """
    N, Cin, H, W = x.shape
    _, Cout, kh, kw = weight.shape
    K = Cout * kh * kw
    dcols = im2col(_cupy().ascontiguousarray(dy), kh, kw, H, W, stride, padding)
    # (Cout kh kw, N H W)
    dcols2d = dcols.reshape(K, N * H * W)
    # (Cin, N H W) -> (N, Cin, H, W)
    dx = matmul(weight.reshape(Cin, K), dcols2d).reshape(Cin, N, H, W).transpose(1, 0, 2, 3)
    if not need_param_grads:
        return dx, None, None
    db = dy.sum(axis=(0, 2, 3)) if has_bias else None
    # (N, Cin, H, W) -> (Cin, N H W)
    x2d = x.transpose(1, 0, 2, 3).reshape(Cin, N * H * W)
    return dx, matmul(x2d, dcols2d.T).reshape(Cin, Cout, kh, kw), db


# --- batch normalisation with batch statistics (kernels/batchnorm.cu) ------------------------------


def _channel_sums(a: Any, b: Any = None, sa: Any = None, sb: Any = None, scale: float = 1.0) -> Any:
    """``scale * sum over n, l of (a - sa) (b - sb)`` per channel, in two launches.

    ``a``, ``b`` (N, C, ...) C-contiguous of one dtype; ``sa``, ``sb`` (C,) shifts; None: 0
    for a shift, the factor 1 for ``b``. Each channel's M values are split into
    min(sqrt(M), :data:`_PARTIALS`) partial sums, each added in a fixed order, then added in
    order: the same bits on every run.

    Returns
    -------
    sums : cupy.ndarray (C,)
    """
    cupy = _cupy()
    dtype = a.dtype
    N, C = a.shape[:2]
    L = a.size // (N * C)
    # about sqrt(M) partials of about sqrt(M) values each: the longest chain of additions a
    # thread makes, in either stage, is short
    P = max(1, min(_PARTIALS, math.isqrt(N * L)))
    partial = cupy.empty((C, P), dtype=dtype)
    args = tuple(_NULL if v is None else v for v in (a, b, sa, sb))
    sizes = (np.int32(N), np.int32(C), np.int32(L), np.int32(P), np.int64(C * P))
    _launch(get_function("channel_partials", dtype), C * P, (*args, partial, *sizes))
    out = cupy.empty(C, dtype=dtype)
    finish = (partial, out, np.int32(C), np.int32(P), dtype.type(scale), np.int64(C))
    _launch(get_function("channel_finish", dtype), C, finish)
    return out


def batchnorm_forward(
    x: Any, gamma: Any, beta: Any, eps: float, mean: Any = None, var: Any = None
) -> tuple[Any, Any, Any, Any, Any]:
    """:func:`abp_np.functional.batchnorm_forward` with batch statistics, by the kernels of
    ``batchnorm.cu``: six launches (two two-stage channel sums, ``1 / sqrt(var + eps)``, one
    pass that writes ``xc`` and ``y``) where the ``xp`` code makes a dozen CuPy calls.

    The sums are accumulated in the dtype, in another order than the reference's (rounding may
    differ in the last bits). ``mean`` and ``var`` must be None (the route is not taken
    otherwise); ``gamma`` and ``beta`` (C,) of x's dtype.

    Returns
    -------
    y : cupy.ndarray like x
    xc : cupy.ndarray like x, x - mean
    inv_std : cupy.ndarray (1, C, 1, ...), 1 / sqrt(var + eps)
    mean, var : cupy.ndarray (C,), the batch statistics (biased variance)
    """
    cupy = _cupy()
    x = cupy.ascontiguousarray(x)
    dtype = x.dtype
    C = x.shape[1]
    shape = (1, C) + (1,) * (x.ndim - 2)
    L = x.size // (x.shape[0] * C)
    inv_m = 1.0 / (x.size // C)
    mu = _channel_sums(x, scale=inv_m)
    v = _channel_sums(x, x, mu, mu, scale=inv_m)  # sum (x - mu)^2 / M
    inv_std, a = cupy.empty(C, dtype=dtype), cupy.empty(C, dtype=dtype)
    gamma, beta = cupy.ascontiguousarray(gamma), cupy.ascontiguousarray(beta)
    _launch(
        get_function("bn_inv_std", dtype), C, (v, gamma, inv_std, a, dtype.type(eps), np.int64(C))
    )
    xc, y = cupy.empty_like(x), cupy.empty_like(x)
    args = (x, mu, a, beta, xc, y, np.int32(C), np.int32(L), np.int64(x.size))
    _launch(get_function("bn_forward_apply", dtype), x.size, args)
    return y, xc, inv_std.reshape(shape), mu, v


def batchnorm_backward(
    dy: Any, cache: Any, need_param_grads: bool = True
) -> tuple[Any, Any | None, Any | None]:
    """:func:`abp_np.functional.batchnorm_backward` with batch statistics, by the kernels of
    ``batchnorm.cu``: two two-stage channel sums and one pass for dx (five launches).

    ``cache`` is the forward pass's :class:`~abp_np.functional.BatchNormCache` (read: ``xc``,
    ``inv_std``, ``gamma``), from this route or the reference.

    Returns
    -------
    dx : cupy.ndarray like dy
    dgamma, dbeta : cupy.ndarray (C,) or None
    """
    cupy = _cupy()
    dy = cupy.ascontiguousarray(dy)
    xc = cupy.ascontiguousarray(cache.xc)
    dtype = dy.dtype
    C = dy.shape[1]
    L = dy.size // (dy.shape[0] * C)
    inv_std = cupy.ascontiguousarray(cache.inv_std.reshape(-1))
    gamma = cupy.ascontiguousarray(cache.gamma.reshape(-1))
    sum_dy = _channel_sums(dy)
    sum_dy_xc = _channel_sums(dy, xc)
    dx = cupy.empty_like(dy)
    inv_m = dtype.type(1.0 / (dy.size // C))
    args = (dy, xc, sum_dy, sum_dy_xc, inv_std, gamma, dx, np.int32(C), np.int32(L), inv_m)
    _launch(get_function("bn_backward_apply", dtype), dy.size, (*args, np.int64(dy.size)))
    if not need_param_grads:
        return dx, None, None
    return dx, sum_dy_xc * inv_std, sum_dy


def batchnorm_update_running(
    running_mean: Any, running_var: Any, mean: Any, var: Any, momentum: float, m: int
) -> None:
    """:func:`abp_np.functional.batchnorm_update_running` in one launch (the ``xp`` code makes
    seven CuPy calls): both running statistics updated in place, all (C,) C-contiguous arrays of
    one dtype."""
    dtype = running_mean.dtype
    C = running_mean.size
    factors = (dtype.type(1.0 - momentum), dtype.type(momentum), dtype.type(m / (m - 1)))
    args = (mean, var, running_mean, running_var, *factors, np.int64(C))
    _launch(get_function("bn_running_update", dtype), C, args)
