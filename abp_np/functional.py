"""Pure forward / backward pairs: the mathematics of every layer, written once against ``xp``.

Each pair follows one contract::

    y, cache = op_forward(x, params...)
    dx, dparams... = op_backward(dy, cache, need_param_grads=True)

``need_param_grads=False`` skips the parameter-gradient work and returns ``None`` in
its place: this is what inferential back-propagation (Langevin dynamics on Z) asks
for, while learning back-propagation asks for everything. It is the same function
either way.

Shapes use ``N`` (batch), ``C`` (channels), ``H, W`` (height, width), ``kh, kw``
(kernel), ``sh, sw`` (stride), ``ph, pw`` (padding). Arrays are NCHW, as in PyTorch.
On a CuPy array the transposed convolution's scatter / gather steps run as custom
CUDA kernels (``kernels/deconv.cu``) unless :func:`abp_np.backend.using_kernels` turned
them off; the ``xp`` code below is then the fallback and the tests' reference.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .backend import get_array_module, kernels_enabled

Pair = tuple[int, int]


def xp_contiguous(x: Any) -> Any:
    """``x`` as a C-contiguous array (no copy when it already is); the CUDA kernels need it."""
    return get_array_module(x).ascontiguousarray(x)


def _kernel_path(x: Any) -> bool:
    """True when ``x`` lives on the GPU and the custom kernels should run."""
    if get_array_module(x) is np or not kernels_enabled():
        return False
    return x.dtype in (np.float32, np.float64)


# --- fully connected ------------------------------------------------------------------------------


def linear_forward(x, weight, bias):
    """y = x W^T + b.

    Parameters
    ----------
    x : array (N, in_features)
    weight : array (out_features, in_features)
    bias : array (out_features,) or None

    Returns
    -------
    y : array (N, out_features)
    cache : tuple
    """
    y = x @ weight.T
    if bias is not None:
        y += bias
    return y, (x, weight, bias is not None)


def linear_backward(dy, cache, need_param_grads=True):
    """Gradients of y = x W^T + b.

    dx = dy W  (N, in);  dW = dy^T x  (out, in);  db = sum_n dy  (out,).
    """
    x, weight, has_bias = cache
    dx = dy @ weight
    if not need_param_grads:
        return dx, None, None
    dW = dy.T @ x
    db = dy.sum(axis=0) if has_bias else None
    return dx, dW, db


# --- transposed convolution -----------------------------------------------------------------------


def conv_transpose_output_size(size: int, k: int, s: int, p: int, op: int) -> int:
    """PyTorch's rule: out = (in - 1) * s - 2 p + k + output_padding."""
    return (size - 1) * s - 2 * p + k + op


def col2im(cols, out_shape, stride: Pair, padding: Pair):
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
    """
    xp = get_array_module(cols)
    C, kh, kw, N, H, W = cols.shape
    sh, sw = stride
    ph, pw = padding
    Hout, Wout = out_shape[2], out_shape[3]
    # Accumulate on the un-cropped grid (C, N, Hfull, Wfull), Hfull covers every tap and the
    # output_padding rows, then crop the padding away.
    Hfull = max((H - 1) * sh + kh, ph + Hout)
    Wfull = max((W - 1) * sw + kw, pw + Wout)
    full = xp.zeros((C, N, Hfull, Wfull), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            full[:, :, i : i + sh * H : sh, j : j + sw * W : sw] += cols[:, i, j]
    # (C, N, Hout, Wout) -> (N, C, Hout, Wout)
    return full[:, :, ph : ph + Hout, pw : pw + Wout].transpose(1, 0, 2, 3)


def im2col(dy, kernel: Pair, in_hw: Pair, stride: Pair, padding: Pair):
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
    """
    xp = get_array_module(dy)
    N, C, Hout, Wout = dy.shape
    kh, kw = kernel
    H, W = in_hw
    sh, sw = stride
    ph, pw = padding
    Hfull = max((H - 1) * sh + kh, ph + Hout)
    Wfull = max((W - 1) * sw + kw, pw + Wout)
    # (N, C, Hout, Wout) -> zero-padded (C, N, Hfull, Wfull)
    full = xp.zeros((C, N, Hfull, Wfull), dtype=dy.dtype)
    full[:, :, ph : ph + Hout, pw : pw + Wout] = dy.transpose(1, 0, 2, 3)
    cols = xp.empty((C, kh, kw, N, H, W), dtype=dy.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, i, j] = full[:, :, i : i + sh * H : sh, j : j + sw * W : sw]
    return cols


def conv_transpose2d_forward(x, weight, bias, stride: Pair, padding: Pair, output_padding: Pair):
    """Transposed 2-D convolution ("deconvolution"), PyTorch's ``conv_transpose2d``.

    A transposed convolution is the data-gradient of a convolution: every input pixel
    spreads a copy of the kernel, scaled by its value, onto the output at stride
    spacing. As a GEMM followed by a scatter::

        cols = W^T x          (Cout kh kw, N H W) = (Cout kh kw, Cin) @ (Cin, N H W)
        y    = col2im(cols) + b

    Parameters
    ----------
    x : array (N, Cin, H, W)
    weight : array (Cin, Cout, kh, kw)
    bias : array (Cout,) or None
    stride, padding, output_padding : (int, int)

    Returns
    -------
    y : array (N, Cout, Hout, Wout), Hout = (H - 1) sh - 2 ph + kh + output_padding
    cache : tuple
    """
    N, Cin, H, W = x.shape
    _, Cout, kh, kw = weight.shape
    Hout = conv_transpose_output_size(H, kh, stride[0], padding[0], output_padding[0])
    Wout = conv_transpose_output_size(W, kw, stride[1], padding[1], output_padding[1])
    # (N, Cin, H, W) -> (Cin, N H W)
    x2d = x.transpose(1, 0, 2, 3).reshape(Cin, N * H * W)
    # (Cout kh kw, N H W), one GEMM for the whole batch
    cols = (weight.reshape(Cin, Cout * kh * kw).T @ x2d).reshape(Cout, kh, kw, N, H, W)
    if _kernel_path(x):
        from . import _cuda

        y = _cuda.col2im(cols, N, Cout, Hout, Wout, kh, kw, H, W, stride, padding, bias=bias)
    else:
        y = col2im(cols, (N, Cout, Hout, Wout), stride, padding)
        if bias is not None:
            y = y + bias.reshape(1, Cout, 1, 1)
        else:
            y = y.copy()
    cache = (x2d, weight, bias is not None, (N, H, W), stride, padding)
    return y, cache


def conv_transpose2d_backward(dy, cache, need_param_grads=True):
    """Gradients of :func:`conv_transpose2d_forward`.

    The input gradient of a transposed convolution is an ordinary convolution of ``dy``
    with the same kernel: gather the patches of ``dy`` (im2col), then one GEMM::

        dcols = im2col(dy)                       (Cout kh kw, N H W)
        dx    = W dcols                          (Cin, N H W)
        dW    = x dcols^T                        (Cin, Cout kh kw)   [learning only]
        db    = sum over N, Hout, Wout of dy     (Cout,)             [learning only]

    ``dcols`` is shared by dx and dW: the weight gradient costs one extra GEMM.

    Returns
    -------
    dx : array (N, Cin, H, W)
    dW : array (Cin, Cout, kh, kw) or None
    db : array (Cout,) or None
    """
    x2d, weight, has_bias, (N, H, W), stride, padding = cache
    Cin, Cout, kh, kw = weight.shape
    if _kernel_path(dy):
        from . import _cuda

        dcols = _cuda.im2col(xp_contiguous(dy), kh, kw, H, W, stride, padding)
    else:
        dcols = im2col(dy, (kh, kw), (H, W), stride, padding)
    # (Cout kh kw, N H W)
    dcols2d = dcols.reshape(Cout * kh * kw, N * H * W)
    dx2d = weight.reshape(Cin, Cout * kh * kw) @ dcols2d
    # (Cin, N H W) -> (N, Cin, H, W)
    dx = dx2d.reshape(Cin, N, H, W).transpose(1, 0, 2, 3)
    if not need_param_grads:
        return dx, None, None
    dW = (x2d @ dcols2d.T).reshape(Cin, Cout, kh, kw)
    db = dy.sum(axis=(0, 2, 3)) if has_bias else None
    return dx, dW, db


# --- batch normalisation --------------------------------------------------------------------------


def batchnorm_forward(x, gamma, beta, eps, axes, mean=None, var=None):
    """Batch normalisation over ``axes`` (all axes but the channel axis 1).

    y = gamma (x - mu) / sqrt(var + eps) + beta, with mu and var the batch statistics
    (biased variance) when ``mean``/``var`` are None, or the given running statistics
    otherwise (evaluation mode). Statistics are accumulated in at least float32.

    Parameters
    ----------
    x : array (N, C) or (N, C, L) or (N, C, H, W)
    gamma, beta : array (C,)
    axes : tuple of int, the axes reduced (e.g. (0, 2, 3))

    Returns
    -------
    y : array like x
    cache : tuple
    batch_mean, batch_var : array (C,) or None (None in evaluation mode)
    """
    xp = get_array_module(x)
    shape = [1] * x.ndim
    shape[1] = x.shape[1]
    if mean is None:
        acc = np.promote_types(x.dtype, np.float32)
        mu = x.mean(axis=axes, dtype=acc)
        xc = x - mu.reshape(shape).astype(x.dtype, copy=False)
        v = (xc * xc).mean(axis=axes, dtype=acc)
        batch_stats = (mu, v)
        batch = True
    else:
        mu, v = mean, var
        xc = x - mu.reshape(shape).astype(x.dtype, copy=False)
        batch_stats = (None, None)
        batch = False
    inv_std = (1.0 / xp.sqrt(v + eps)).astype(x.dtype, copy=False).reshape(shape)
    xhat = xc * inv_std
    y = xhat * gamma.reshape(shape) + beta.reshape(shape)
    cache = (xhat, inv_std, gamma, axes, shape, batch)
    return y, cache, batch_stats[0], batch_stats[1]


def batchnorm_backward(dy, cache, need_param_grads=True):
    """Gradients of :func:`batchnorm_forward`.

    With batch statistics over M = N H W values per channel, every output depends on
    every input of its channel through mu and var::

        dxhat = dy gamma
        dx    = (inv_std / M) (M dxhat - sum(dxhat) - xhat sum(dxhat xhat))
        dgamma = sum(dy xhat),   dbeta = sum(dy)

    In evaluation mode (fixed statistics) dx = dy gamma inv_std.
    The two channel sums are needed for dx anyway, so dgamma and dbeta come free.
    """
    xhat, inv_std, gamma, axes, shape, batch = cache
    g = gamma.reshape(shape)
    if batch:
        M = xhat.size // xhat.shape[1]
        sum_dy = dy.sum(axis=axes).reshape(shape)
        sum_dy_xhat = (dy * xhat).sum(axis=axes).reshape(shape)
        dx = (g * inv_std / M) * (M * dy - sum_dy - xhat * sum_dy_xhat)
        if not need_param_grads:
            return dx, None, None
        return dx, sum_dy_xhat.reshape(-1), sum_dy.reshape(-1)
    dx = dy * (g * inv_std)
    if not need_param_grads:
        return dx, None, None
    return dx, (dy * xhat).sum(axis=axes), dy.sum(axis=axes)


# --- activations ----------------------------------------------------------------------------------
# Each keeps its OUTPUT, which is all its backward pass needs.


def relu_forward(x):
    """y = max(x, 0); cache the output."""
    xp = get_array_module(x)
    y = xp.maximum(x, 0)
    return y, y


def relu_backward(dy, y):
    """dx = dy where y > 0, else 0."""
    return dy * (y > 0)


def leaky_relu_forward(x, slope):
    """y = x if x > 0 else slope x (slope > 0 keeps the sign, so y tells where x > 0)."""
    xp = get_array_module(x)
    y = xp.where(x > 0, x, x * x.dtype.type(slope))
    return y, (y, slope)


def leaky_relu_backward(dy, cache):
    """dx = dy if y > 0 else slope dy."""
    xp = get_array_module(dy)
    y, slope = cache
    return xp.where(y > 0, dy, dy * dy.dtype.type(slope))


def tanh_forward(x):
    """y = tanh(x); cache the output."""
    xp = get_array_module(x)
    y = xp.tanh(x)
    return y, y


def tanh_backward(dy, y):
    """dx = dy (1 - y^2)."""
    return dy * (1 - y * y)
