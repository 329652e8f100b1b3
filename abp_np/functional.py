"""Pure forward / backward pairs: the mathematics of every layer, written once against ``xp``.

Each pair follows one contract::

    y, cache = op_forward(x, params...)
    dx, dparams... = op_backward(dy, cache, need_param_grads=True)

``need_param_grads=False`` skips the parameter-gradient work and returns ``None`` in
its place: this is what inferential back-propagation (Langevin dynamics on Z) asks
for, while learning back-propagation asks for everything. It is the same function
either way. Each cache is a named tuple (:class:`LinearCache`, :class:`DeconvCache`,
:class:`BatchNormCache`, ...) saying what the backward pass reads.

Shapes use ``N`` (batch), ``C`` (channels), ``H, W`` (height, width), ``kh, kw``
(kernel), ``sh, sw`` (stride), ``ph, pw`` (padding). Arrays are NCHW, as in PyTorch.

The code below is the *reference*: plain ``xp`` code that runs on NumPy and CuPy alike, the
form to read, and the oracle the tests hold every faster route to. Faster routes to the same
sums (CUDA kernels on the GPU; on the CPU the transposed convolution's phase and blocked
forms, the Winograd form, and batch norm in compiled C) live in :mod:`abp_np.fast`. Each
operation asks one table, :func:`abp_np.fast.routes.choose`, whether one of them takes its
arguments, and runs the code below when none does; the route taken is recorded in the cache.
``abp_np.backend.using(cuda=False, c=False, winograd="off", cpu_forms=False)`` turns every
route off.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .backend import Array, get_array_module
from .fast import routes
from .fast.winograd import WinogradCache

__all__ = [
    "BatchNormCache",
    "DeconvCache",
    "LeakyReLUCache",
    "LinearCache",
    "Pair",
    "batchnorm_backward",
    "batchnorm_forward",
    "col2im",
    "conv_transpose2d_backward",
    "conv_transpose2d_forward",
    "conv_transpose_output_size",
    "im2col",
    "leaky_relu_backward",
    "leaky_relu_forward",
    "linear_backward",
    "linear_forward",
    "matmul",
    "relu_backward",
    "relu_forward",
    "tanh_backward",
    "tanh_forward",
]

Pair = tuple[int, int]


# --- fully connected ------------------------------------------------------------------------------


def matmul(a: Array, b: Array) -> Array:
    """``a @ b`` for 2-D arrays, or a speed route to it: on the GPU, cuBLAS called directly
    (:func:`abp_np.fast.cublas.matmul`), which a CUDA graph can record and CuPy's ``@`` cannot.
    The fully connected layer and the projections of :mod:`abp_np.observation` use it."""
    route = routes.choose("matmul", a, b)
    return a @ b if route.run is None else route.run(a, b)


class LinearCache(NamedTuple):
    """What :func:`linear_backward` needs from :func:`linear_forward`."""

    x: Array  # (N, in_features)
    weight: Array  # (out_features, in_features)
    has_bias: bool


def linear_forward(x: Array, weight: Array, bias: Array | None) -> tuple[Array, LinearCache]:
    """y = x W^T + b.

    Parameters
    ----------
    x : array (N, in_features)
    weight : array (out_features, in_features)
    bias : array (out_features,) or None

    Returns
    -------
    y : array (N, out_features)
    cache : LinearCache
    """
    y = matmul(x, weight.T)
    if bias is not None:
        y += bias
    return y, LinearCache(x, weight, bias is not None)


def linear_backward(
    dy: Array, cache: LinearCache, need_param_grads: bool = True
) -> tuple[Array, Array | None, Array | None]:
    """Gradients of y = x W^T + b.

    dx = dy W  (N, in);  dW = dy^T x  (out, in);  db = sum_n dy  (out,).
    """
    x, weight, has_bias = cache
    dx = matmul(dy, weight)
    if not need_param_grads:
        return dx, None, None
    dW = matmul(dy.T, x)
    db = dy.sum(axis=0) if has_bias else None
    return dx, dW, db


# --- transposed convolution -----------------------------------------------------------------------


def conv_transpose_output_size(size: int, k: int, s: int, p: int, op: int) -> int:
    """PyTorch's rule: out = (in - 1) * s - 2 p + k + output_padding."""
    return (size - 1) * s - 2 * p + k + op


def _uncropped(in_hw: Pair, kernel: Pair, stride: Pair, padding: Pair, out_hw: Pair) -> Pair:
    """Size of the un-cropped output grid: every tap's pixel, and the output shifted by the
    padding (output padding can reach past the last tap)."""
    return tuple(  # type: ignore[return-value]
        max((n - 1) * s + k, p + o)
        for n, k, s, p, o in zip(in_hw, kernel, stride, padding, out_hw, strict=True)
    )


def col2im(cols: Array, out_shape: tuple[int, ...], stride: Pair, padding: Pair) -> Array:
    """Scatter-add columns into an image: the adjoint of :func:`im2col`.

    Parameters
    ----------
    cols : array (C, kh, kw, N, H, W)
        ``cols[c, i, j, n, ih, iw]`` is the contribution of input pixel (ih, iw) through
        kernel tap (i, j) to output pixel (ih * sh + i - ph, iw * sw + j - pw).
    out_shape : (N, C, Hout, Wout)

    Returns
    -------
    y : array (N, C, Hout, Wout)
        ``y[n, c, oh, ow] = sum of cols[c, i, j, n, ih, iw] over ih sh + i - ph = oh,
        iw sw + j - pw = ow``. Taps that land in the padding are dropped.

    Tap by tap: tap (i, j) of every input pixel lands on a strided grid of the un-cropped
    output, rows i, i + sh, ..., columns j, j + sw, ...; the padding is cropped at the end.
    Each output pixel adds its taps in the order i ascending, then j, as the GPU kernel does.
    """
    xp = get_array_module(cols)
    C, kh, kw, N, H, W = cols.shape
    sh, sw = stride
    ph, pw = padding
    Hout, Wout = out_shape[2], out_shape[3]
    Hu, Wu = _uncropped((H, W), (kh, kw), stride, padding, (Hout, Wout))
    full = xp.zeros((N, C, Hu, Wu), dtype=cols.dtype)  # pixel (u, v) is output (u - ph, v - pw)
    for i in range(kh):
        for j in range(kw):
            # (C, N, H, W) -> rows i + sh ih, columns j + sw iw of (N, C, Hu, Wu)
            tap = cols[:, i, j].transpose(1, 0, 2, 3)
            full[:, :, i : i + sh * (H - 1) + 1 : sh, j : j + sw * (W - 1) + 1 : sw] += tap
    return xp.ascontiguousarray(full[:, :, ph : ph + Hout, pw : pw + Wout])


def im2col(dy: Array, kernel: Pair, in_hw: Pair, stride: Pair, padding: Pair) -> Array:
    """Gather image patches into columns: the adjoint of :func:`col2im`.

    Parameters
    ----------
    dy : array (N, C, Hout, Wout)
    kernel : (kh, kw)
    in_hw : (H, W), the spatial size of the transposed convolution's input

    Returns
    -------
    cols : array (C, kh, kw, N, H, W)
        ``cols[c, i, j, n, ih, iw] = dy[n, c, ih sh + i - ph, iw sw + j - pw]``, zero where
        that index falls outside ``dy``.

    Tap by tap, from ``dy`` placed in the un-cropped grid with zeros around it: the reverse of
    each step of :func:`col2im`.
    """
    xp = get_array_module(dy)
    N, C, Hout, Wout = dy.shape
    kh, kw = kernel
    H, W = in_hw
    sh, sw = stride
    ph, pw = padding
    Hu, Wu = _uncropped((H, W), (kh, kw), stride, padding, (Hout, Wout))
    full = xp.zeros((N, C, Hu, Wu), dtype=dy.dtype)
    full[:, :, ph : ph + Hout, pw : pw + Wout] = dy
    cols = xp.empty((C, kh, kw, N, H, W), dtype=dy.dtype)
    for i in range(kh):
        for j in range(kw):
            # rows i + sh ih, columns j + sw iw of (N, C, Hu, Wu) -> (C, N, H, W)
            tap = full[:, :, i : i + sh * (H - 1) + 1 : sh, j : j + sw * (W - 1) + 1 : sw]
            cols[:, i, j] = tap.transpose(1, 0, 2, 3)
    return cols


class DeconvCache(NamedTuple):
    """What :func:`conv_transpose2d_backward` needs from :func:`conv_transpose2d_forward`.

    The Winograd route keeps other quantities, in a
    :class:`~abp_np.fast.winograd.WinogradCache`.
    """

    x: Array  # (N, Cin, H, W)
    weight: Array  # (Cin, Cout, kh, kw)
    has_bias: bool
    stride: Pair
    padding: Pair
    route: str = "xp"  # the forward route that made it (abp_np.fast.routes)


def conv_transpose2d_forward(
    x: Array,
    weight: Array,
    bias: Array | None,
    stride: Pair,
    padding: Pair,
    output_padding: Pair,
    derived: dict[str, Any] | None = None,
) -> tuple[Array, DeconvCache | WinogradCache]:
    """Transposed 2-D convolution ("deconvolution"), PyTorch's ``conv_transpose2d``.

    A transposed convolution is the data-gradient of a convolution: every input pixel
    spreads a copy of the kernel, scaled by its value, onto the output at stride
    spacing. As a GEMM followed by a scatter (the *column form*)::

        cols = W^T x          (Cout kh kw, N H W) = (Cout kh kw, Cin) @ (Cin, N H W)
        y    = col2im(cols) + b

    That is the code below. The speed routes (:mod:`abp_np.fast.routes`) compute the same
    sums: on the GPU with ``col2im`` as a CUDA kernel; on the CPU grouped by output phase, in
    blocks of examples, or by Winograd's minimal filtering for the paper's kernel-5 stride-2
    layers. The cache records the route taken.

    Parameters
    ----------
    x : array (N, Cin, H, W)
    weight : array (Cin, Cout, kh, kw)
    bias : array (Cout,) or None
    stride, padding, output_padding : (int, int)
    derived : dict, optional
        Given while the weights stay fixed over many calls (the Langevin loop; see
        :meth:`abp_np.generator.Generator.fixed_weights`): the Winograd route keeps its
        transformed weights there and reuses them, and takes layers it would otherwise leave
        (:func:`abp_np.fast.winograd.worth_it`). The result is the same either way.

    Returns
    -------
    y : array (N, Cout, Hout, Wout), Hout = (H - 1) sh - 2 ph + kh + output_padding
    cache : DeconvCache, or WinogradCache (the Winograd route)
    """
    N, Cin, H, W = x.shape
    _, Cout, kh, kw = weight.shape
    Hout = conv_transpose_output_size(H, kh, stride[0], padding[0], output_padding[0])
    Wout = conv_transpose_output_size(W, kw, stride[1], padding[1], output_padding[1])
    args = (x, weight, bias, stride, padding, (Hout, Wout), derived)
    route = routes.choose("conv_transpose2d_forward", *args)
    if route.run is not None:  # a speed route to the same y (abp_np/fast/routes.py)
        y, own = route.run(*args)
        if own is not None:  # the route keeps its own cache (Winograd)
            return y, own
        return y, DeconvCache(x, weight, bias is not None, stride, padding, route.name)
    # (N, Cin, H, W) -> (Cin, N H W)
    x2d = x.transpose(1, 0, 2, 3).reshape(Cin, N * H * W)
    # (Cout kh kw, N H W), one GEMM for the whole batch
    cols = (weight.reshape(Cin, Cout * kh * kw).T @ x2d).reshape(Cout, kh, kw, N, H, W)
    y = col2im(cols, (N, Cout, Hout, Wout), stride, padding)
    if bias is not None:
        y += bias.reshape(1, Cout, 1, 1)
    return y, DeconvCache(x, weight, bias is not None, stride, padding)


def conv_transpose2d_backward(
    dy: Array, cache: DeconvCache | WinogradCache, need_param_grads: bool = True
) -> tuple[Array, Array | None, Array | None]:
    """Gradients of :func:`conv_transpose2d_forward`.

    The input gradient of a transposed convolution is an ordinary convolution of ``dy``
    with the same kernel: gather the patches of ``dy`` (im2col), then one GEMM::

        dcols = im2col(dy)                       (Cout kh kw, N H W)
        dx    = W dcols                          (Cin, N H W)
        dW    = x dcols^T                        (Cin, Cout kh kw)   [learning only]
        db    = sum over N, Hout, Wout of dy     (Cout,)             [learning only]

    ``dcols`` is shared by dx and dW: the weight gradient costs one extra GEMM. The speed
    routes compute the same gradients: ``im2col`` as a CUDA kernel on the GPU, the columns in
    blocks on the CPU, and, for a cache of the Winograd route, the adjoint of its steps.

    Returns
    -------
    dx : array (N, Cin, H, W)
    dW : array (Cin, Cout, kh, kw) or None
    db : array (Cout,) or None
    """
    route = routes.choose("conv_transpose2d_backward", dy, cache, need_param_grads)
    if route.run is not None:  # a speed route to the same gradients (abp_np/fast/routes.py)
        return route.run(dy, cache, need_param_grads)
    x, weight, has_bias, stride, padding, _ = cache
    N, Cin, H, W = x.shape
    _, Cout, kh, kw = weight.shape
    K = Cout * kh * kw
    # (Cout kh kw, N H W)
    dcols2d = im2col(dy, (kh, kw), (H, W), stride, padding).reshape(K, N * H * W)
    # (Cin, N H W) -> (N, Cin, H, W)
    dx = (weight.reshape(Cin, K) @ dcols2d).reshape(Cin, N, H, W).transpose(1, 0, 2, 3)
    if not need_param_grads:
        return dx, None, None
    db = dy.sum(axis=(0, 2, 3)) if has_bias else None
    # (N, Cin, H, W) -> (Cin, N H W)
    x2d = x.transpose(1, 0, 2, 3).reshape(Cin, N * H * W)
    return dx, (x2d @ dcols2d.T).reshape(Cin, Cout, kh, kw), db


# --- batch normalisation --------------------------------------------------------------------------


def _channel_sums(a: Array, b: Array | None = None) -> Array:
    """Per-channel sums over every axis but 1: sum of ``a``, or of ``a * b`` when ``b`` is given.

    With ``a`` seen as (N, C, L). On the CPU both read their arrays once and write nothing
    activation-sized: the plain sum is a matrix-vector product with a vector of ones (BLAS),
    the sum of products an ``einsum`` (no ``a * b`` temporary). On the GPU they are CuPy's
    reductions over axes (0, 2), one kernel each: there the BLAS forms are batched cuBLAS
    products of a slow shape. (The GPU's own route is :func:`abp_np.fast.cuda.batchnorm_forward`.)
    Accumulated in the arrays' dtype (float32 or float64).

    Parameters
    ----------
    a, b : array (N, C, ...)

    Returns
    -------
    sums : array (C,)
    """
    xp = get_array_module(a)
    N, C = a.shape[:2]
    a3 = a.reshape(N, C, -1)  # (N, C, L)
    if xp is not np:  # CuPy: reductions
        return a3.sum(axis=(0, 2)) if b is None else (a3 * b.reshape(N, C, -1)).sum(axis=(0, 2))
    if b is None:
        return (a3 @ xp.ones(a3.shape[2], dtype=a.dtype)).sum(axis=0)
    return xp.einsum("ncl,ncl->c", a3, b.reshape(N, C, -1))


class BatchNormCache(NamedTuple):
    """What :func:`batchnorm_backward` needs from :func:`batchnorm_forward`, and the batch
    statistics the layer's running averages take up."""

    xc: Array  # (N, C, ...), x - mean
    inv_std: Array  # (1, C, 1, ...), 1 / sqrt(var + eps), dtype of x
    gamma: Array  # (C,)
    shape: tuple[int, ...]  # (1, C, 1, ...): a per-channel vector, broadcast against x
    mean: Array | None  # (C,), the batch mean; None in evaluation mode
    var: Array | None  # (C,), the batch's biased variance; None in evaluation mode
    route: str = "xp"  # the forward route that made it (abp_np.fast.routes)


def batchnorm_forward(
    x: Array,
    gamma: Array,
    beta: Array,
    eps: float,
    axes: tuple[int, ...],
    mean: Array | None = None,
    var: Array | None = None,
) -> tuple[Array, BatchNormCache]:
    """Batch normalisation over ``axes`` (all axes but the channel axis 1).

    y = gamma (x - mu) / sqrt(var + eps) + beta, with mu and var the batch statistics
    (biased variance) when ``mean``/``var`` are None, or the given running statistics
    otherwise (evaluation mode). Statistics are accumulated in at least float32.

    Computed as ``xc = x - mu`` (kept for the backward pass), ``var = sum(xc^2) / M``
    (two passes: no cancellation, unlike E[x^2] - mu^2), then
    ``y = xc (gamma / sqrt(var + eps)) + beta``: five passes over the activation, one
    temporary besides y. M = N H W values per channel.

    Parameters
    ----------
    x : array (N, C) or (N, C, L) or (N, C, H, W)
    gamma, beta : array (C,)
    eps : float
    axes : tuple of int, the axes reduced (e.g. (0, 2, 3))
    mean, var : array (C,), optional
        Running statistics (evaluation mode); None for the batch statistics.

    Returns
    -------
    y : array like x
    cache : BatchNormCache
        ``cache.mean`` and ``cache.var`` are the batch statistics (None in evaluation mode).
    """
    xp = get_array_module(x)
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    route = routes.choose("batchnorm_forward", x, gamma, beta, eps, mean, var)
    if route.run is not None:  # C or CUDA kernels: the same sums in fewer passes (fast/routes.py)
        y, xc, inv_std, mu, v = route.run(x, gamma, beta, eps, mean, var)
        return y, BatchNormCache(xc, inv_std, gamma, shape, mu, v, route.name)
    acc = np.promote_types(x.dtype, np.float32)
    if mean is None:
        M = x.size // x.shape[1]
        mu = _channel_sums(x.astype(acc, copy=False)) / M
        xc = x - mu.reshape(shape).astype(x.dtype, copy=False)
        v = _channel_sums(xc.astype(acc, copy=False), xc.astype(acc, copy=False)) / M
        batch_mean, batch_var = mu, v
    else:
        mu, v = mean, var
        xc = x - mu.reshape(shape).astype(x.dtype, copy=False)
        batch_mean = batch_var = None
    inv_std = (1.0 / xp.sqrt(v + eps)).astype(x.dtype, copy=False).reshape(shape)
    y = xc * (gamma.reshape(shape) * inv_std)  # gamma xhat, xhat = xc / sqrt(var + eps)
    y += beta.reshape(shape)
    return y, BatchNormCache(xc, inv_std, gamma, shape, batch_mean, batch_var)


def batchnorm_update_running(
    running_mean: Array, running_var: Array, mean: Array, var: Array, momentum: float, m: int
) -> None:
    """Blend a batch's statistics into the running ones, in place (PyTorch's momentum rule)::

        running_mean = (1 - momentum) running_mean + momentum mean
        running_var  = (1 - momentum) running_var + momentum var m / (m - 1)

    ``var`` is the biased batch variance over ``m`` values per channel; the running variance
    takes the unbiased one, as PyTorch's does. All (C,).
    """
    route = routes.choose("batchnorm_update_running", running_mean, running_var, mean, var)
    if route.run is not None:  # one CUDA launch for the seven operations below
        route.run(running_mean, running_var, mean, var, momentum, m)
        return
    running_mean *= 1 - momentum
    running_mean += momentum * mean
    running_var *= 1 - momentum
    running_var += momentum * var * (m / (m - 1))  # unbiased, as PyTorch


def batchnorm_backward(
    dy: Array, cache: BatchNormCache, need_param_grads: bool = True
) -> tuple[Array, Array | None, Array | None]:
    """Gradients of :func:`batchnorm_forward`.

    With batch statistics over M = N H W values per channel, every output depends on
    every input of its channel through mu and var::

        dxhat = dy gamma
        dx    = (inv_std / M) (M dxhat - sum(dxhat) - xhat sum(dxhat xhat))
        dgamma = sum(dy xhat),   dbeta = sum(dy)

    In evaluation mode (fixed statistics) dx = dy gamma inv_std.
    The two channel sums are needed for dx anyway, so dgamma and dbeta come free.

    The cache holds xc = x - mu rather than xhat = xc inv_std, so the code reads
    sum(dy xhat) = inv_std sum(dy xc) and, per channel, ``a = gamma inv_std``::

        dx = a (dy - sum(dy) / M - xc inv_std sum(dy xhat) / M)

    Returns
    -------
    dx : array like dy
    dgamma, dbeta : array (C,) or None
    """
    route = routes.choose("batchnorm_backward", dy, cache, need_param_grads)
    if route.run is not None:  # C or CUDA kernels: the same formula in fewer passes
        return route.run(dy, cache, need_param_grads)
    xc, inv_std, gamma, shape = cache.xc, cache.inv_std, cache.gamma, cache.shape
    a = gamma.reshape(shape) * inv_std  # (1, C, 1, ...)
    if cache.mean is not None:  # batch statistics
        M = xc.size // xc.shape[1]
        sum_dy = _channel_sums(dy).reshape(shape)
        sum_dy_xhat = _channel_sums(dy, xc).reshape(shape) * inv_std
        # dx = a (dy - sum_dy / M - xc (inv_std sum_dy_xhat / M)): four passes, no temporary
        dx = xc * (-(inv_std * sum_dy_xhat) / M)
        dx += dy
        dx -= sum_dy / M
        dx *= a
        if not need_param_grads:
            return dx, None, None
        return dx, sum_dy_xhat.reshape(-1), sum_dy.reshape(-1)
    dx = dy * a
    if not need_param_grads:
        return dx, None, None
    return dx, _channel_sums(dy, xc) * inv_std.reshape(-1), _channel_sums(dy)


# --- activations ----------------------------------------------------------------------------------
# Each keeps its OUTPUT, which is all its backward pass needs. On the CPU with several threads
# the route "threads" (abp_np.fast.elementwise) computes the same expression on ranges of elements.


def relu_forward(x: Array) -> tuple[Array, Array]:
    """y = max(x, 0); the cache is the output y."""
    route = routes.choose("relu_forward", x)
    if route.run is not None:  # the same values, on every core
        y = route.run(x)
    else:
        y = get_array_module(x).maximum(x, 0)
    return y, y


def relu_backward(dy: Array, y: Array, out: Array | None = None) -> Array:
    """dx = dy where y > 0, else 0 (into ``out`` when given; it may be dy itself)."""
    route = routes.choose("relu_backward", dy, y, out)
    if route.run is not None:
        return route.run(dy, y, out)
    xp = get_array_module(dy)
    return xp.multiply(dy, y > 0, out=out)


class LeakyReLUCache(NamedTuple):
    """What :func:`leaky_relu_backward` needs: the output and the slope."""

    y: Array
    slope: float


def leaky_relu_forward(x: Array, slope: float) -> tuple[Array, LeakyReLUCache]:
    """y = x if x > 0 else slope x (slope > 0 keeps the sign, so y tells where x > 0)."""
    route = routes.choose("leaky_relu_forward", x)
    if route.run is not None:
        y = route.run(x, slope)
    else:
        xp = get_array_module(x)
        y = xp.where(x > 0, x, x * x.dtype.type(slope))
    return y, LeakyReLUCache(y, slope)


def leaky_relu_backward(dy: Array, cache: LeakyReLUCache, out: Array | None = None) -> Array:
    """dx = dy if y > 0 else slope dy (into ``out`` when given; it may be dy itself)."""
    y, slope = cache
    route = routes.choose("leaky_relu_backward", dy, y, out)
    if route.run is not None:
        return route.run(dy, y, slope, out)
    xp = get_array_module(dy)
    one, s = dy.dtype.type(1), dy.dtype.type(slope)
    return xp.multiply(dy, xp.where(y > 0, one, s), out=out)


def tanh_forward(x: Array) -> tuple[Array, Array]:
    """y = tanh(x); the cache is the output y."""
    route = routes.choose("tanh_forward", x)
    if route.run is not None:
        y = route.run(x)
    else:
        y = get_array_module(x).tanh(x)
    return y, y


def tanh_backward(dy: Array, y: Array, out: Array | None = None) -> Array:
    """dx = dy (1 - y^2) (into ``out`` when given; it may be dy itself)."""
    route = routes.choose("tanh_backward", dy, y, out)
    if route.run is not None:
        return route.run(dy, y, out)
    xp = get_array_module(dy)
    d = y * y
    xp.subtract(1, d, out=d)  # 1 - y^2
    return xp.multiply(dy, d, out=out)
