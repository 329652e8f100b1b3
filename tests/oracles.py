"""Independent reference implementations for the tests, written without any library code.

Plain NumPy and naive Python loops over every index: slow, obviously right, and sharing
nothing with :mod:`abp_np.functional` (no im2col, no GEMM, no col2im). Inputs are NumPy
arrays; results are float64 NumPy arrays.
"""

from __future__ import annotations

import math

import numpy as np


def conv_transpose2d(x, weight, bias, stride, padding, output_padding):
    """Transposed 2-D convolution by scattering, PyTorch's ``conv_transpose2d`` semantics.

    Every input pixel (n, ci, ih, iw) adds ``x * weight[ci, co, i, j]`` to the un-cropped
    output pixel (ih sh + i, iw sw + j) of every output channel co. The un-cropped canvas
    has (H - 1) sh + kh + oph rows (the last oph rows receive no tap); cropping ph rows at
    each end leaves Hout = (H - 1) sh - 2 ph + kh + oph.

    x (N, Cin, H, W), weight (Cin, Cout, kh, kw), bias (Cout,) or None.
    """
    x = np.asarray(x, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    N, Cin, H, W = x.shape
    _, Cout, kh, kw = weight.shape
    (sh, sw), (ph, pw), (oph, opw) = stride, padding, output_padding
    full = np.zeros((N, Cout, (H - 1) * sh + kh + oph, (W - 1) * sw + kw + opw))
    for n in range(N):
        for ci in range(Cin):
            for co in range(Cout):
                for ih in range(H):
                    for iw in range(W):
                        for i in range(kh):
                            for j in range(kw):
                                full[n, co, ih * sh + i, iw * sw + j] += (
                                    x[n, ci, ih, iw] * weight[ci, co, i, j]
                                )
    y = full[:, :, ph : full.shape[2] - ph, pw : full.shape[3] - pw].copy()
    if bias is not None:
        for co in range(Cout):
            y[:, co] += float(bias[co])
    return y


def conv_transpose1d(x, weight, bias, stride, padding, output_padding):
    """Transposed 1-D convolution by scattering: x (N, Cin, L), weight (Cin, Cout, k).

    Lout = (L - 1) stride - 2 padding + k + output_padding.
    """
    x = np.asarray(x, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    N, Cin, L = x.shape
    _, Cout, k = weight.shape
    full = np.zeros((N, Cout, (L - 1) * stride + k + output_padding))
    for n in range(N):
        for ci in range(Cin):
            for co in range(Cout):
                for il in range(L):
                    for i in range(k):
                        full[n, co, il * stride + i] += x[n, ci, il] * weight[ci, co, i]
    y = full[:, :, padding : full.shape[2] - padding].copy()
    if bias is not None:
        for co in range(Cout):
            y[:, co] += float(bias[co])
    return y


def conv2d(y, weight, stride, padding, in_hw):
    """Direct (textbook) 2-D convolution, the adjoint of :func:`conv_transpose2d` without bias.

    Zero-pads ``y`` by ph rows on top (and as many as needed at the bottom), then slides
    the kernel with stride (sh, sw)::

        out[n, ci, oh, ow] = sum_{co, i, j} ypad[n, co, oh sh + i, ow sw + j] weight[ci, co, i, j]

    y (N, Cout, Hy, Wy), weight (Cin, Cout, kh, kw) used as a (out = Cin, in = Cout) kernel;
    returns (N, Cin, H, W) with (H, W) = ``in_hw``.
    """
    y = np.asarray(y, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    N, Cout, Hy, Wy = y.shape
    Cin, _, kh, kw = weight.shape
    (sh, sw), (ph, pw) = stride, padding
    H, W = in_hw
    rows = max(ph + Hy, (H - 1) * sh + kh)
    cols = max(pw + Wy, (W - 1) * sw + kw)
    ypad = np.zeros((N, Cout, rows, cols))
    ypad[:, :, ph : ph + Hy, pw : pw + Wy] = y
    out = np.zeros((N, Cin, H, W))
    for n in range(N):
        for ci in range(Cin):
            for oh in range(H):
                for ow in range(W):
                    total = 0.0
                    for co in range(Cout):
                        for i in range(kh):
                            for j in range(kw):
                                total += (
                                    ypad[n, co, oh * sh + i, ow * sw + j] * weight[ci, co, i, j]
                                )
                    out[n, ci, oh, ow] = total
    return out


def overlap_count(size, k, s, p, op):
    """How many (input position, kernel tap) pairs land on each output position, 1-D.

    Output position o receives input position t through tap i when t s + i - p = o with
    0 <= t < size and 0 <= i < k, i.e. for the t with o + p - k < t s <= o + p:

        t from max(0, ceil((o + p - k + 1) / s)) to min(size - 1, floor((o + p) / s)).

    Returns an int array of length (size - 1) s - 2 p + k + op.
    """
    n_out = (size - 1) * s - 2 * p + k + op
    counts = np.zeros(n_out, dtype=np.int64)
    for o in range(n_out):
        lo = max(0, math.ceil((o + p - k + 1) / s))
        hi = min(size - 1, (o + p) // s)
        counts[o] = max(0, hi - lo + 1)
    return counts


def linear(x, weight, bias):
    """y[n, o] = sum_i x[n, i] weight[o, i] + bias[o], by loops."""
    x = np.asarray(x, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    N, D = x.shape
    O = weight.shape[0]
    y = np.zeros((N, O))
    for n in range(N):
        for o in range(O):
            y[n, o] = sum(x[n, i] * weight[o, i] for i in range(D))
            if bias is not None:
                y[n, o] += bias[o]
    return y


def batchnorm(x, gamma, beta, eps, mean=None, var=None):
    """Batch normalisation, channel by channel (axis 1), in float64.

    With ``mean``/``var`` None, uses the batch mean and the BIASED batch variance of
    the channel's values over every other axis; otherwise the given statistics.

    Returns y like x, and the per-channel batch mean and UNBIASED variance (what
    PyTorch blends into its running statistics), or None for both when statistics were given.
    """
    x = np.asarray(x, dtype=np.float64)
    C = x.shape[1]
    y = np.empty_like(x)
    batch_mean = np.zeros(C)
    unbiased_var = np.zeros(C)
    for c in range(C):
        values = x[:, c].ravel()
        m = values.size
        if mean is None:
            mu = sum(values) / m
            v = sum((values - mu) ** 2) / m
            batch_mean[c] = mu
            unbiased_var[c] = v * m / (m - 1)
        else:
            mu, v = float(mean[c]), float(var[c])
        y[:, c] = (x[:, c] - mu) / math.sqrt(v + eps) * float(gamma[c]) + float(beta[c])
    if mean is None:
        return y, batch_mean, unbiased_var
    return y, None, None


def batchnorm_problem(seed, shape, dtype):
    """A batch-norm test case: x (N, C, ...) off zero mean and unit scale, gamma, beta (C,) and
    an upstream gradient dy like x."""
    rng = np.random.default_rng(seed)
    C = shape[1]
    x = (rng.standard_normal(shape) * 2 + 0.5).astype(dtype)
    gamma, beta = (rng.standard_normal(C).astype(dtype) for _ in range(2))
    return x, gamma, beta, rng.standard_normal(shape).astype(dtype)


def batchnorm_grads(x, gamma, beta, eps, dy, h=1e-6):
    """Gradients of ``sum(dy * y)``, y = :func:`batchnorm` with batch statistics, by central
    differences in float64: (dx like x, dgamma (C,), dbeta (C,))."""
    x, gamma, beta, dy = (np.array(a, dtype=np.float64) for a in (x, gamma, beta, dy))

    def loss():
        return float(np.sum(dy * batchnorm(x, gamma, beta, eps)[0]))

    grads = []
    for a in (x, gamma, beta):
        g = np.zeros_like(a)
        for i in np.ndindex(a.shape):
            keep = a[i]
            a[i] = keep + h
            up = loss()
            a[i] = keep - h
            down = loss()
            a[i] = keep
            g[i] = (up - down) / (2 * h)
        grads.append(g)
    return tuple(grads)


def relu(x):
    return np.where(x > 0, x, 0.0)


def leaky_relu(x, slope):
    return np.where(x > 0, x, slope * x)


def tanh(x):
    return np.vectorize(math.tanh)(np.asarray(x, dtype=np.float64))


def layer_forward(layer, x):
    """The output of one abp_np layer, computed by the oracles above from its parameters.

    Reads only the layer's type name, hyper-parameters, ``params``, ``buffers`` and mode;
    runs none of its code. ``x`` and the result are float64 NumPy arrays.
    """
    p = {k: _numpy(v) for k, v in layer.params.items()}
    x = _numpy(x)
    kind = type(layer).__name__
    if kind == "Linear":
        return linear(x, p["weight"], p.get("bias"))
    if kind == "ConvTranspose1d":
        s, pad, op = layer.stride[1], layer.padding[1], layer.output_padding[1]
        return conv_transpose1d(x, p["weight"], p.get("bias"), s, pad, op)
    if kind == "ConvTranspose2d":
        s, pad, op = layer.stride, layer.padding, layer.output_padding
        return conv_transpose2d(x, p["weight"], p.get("bias"), s, pad, op)
    if kind in ("BatchNorm1d", "BatchNorm2d"):
        gamma = p.get("weight", np.ones(layer.num_features))
        beta = p.get("bias", np.zeros(layer.num_features))
        if layer.training:
            return batchnorm(x, gamma, beta, layer.eps)[0]
        rm, rv = (_numpy(layer.buffers[k]) for k in ("running_mean", "running_var"))
        return batchnorm(x, gamma, beta, layer.eps, rm, rv)[0]
    if kind == "LeakyReLU":
        return leaky_relu(x, layer.negative_slope)
    if kind == "ReLU":
        return relu(x)
    if kind == "Tanh":
        return tanh(x)
    if kind == "Reshape":
        return x.reshape(x.shape[0], *layer.shape)
    raise AssertionError(f"no oracle for {layer!r}")


def _numpy(a):
    """float64 NumPy copy of a NumPy or CuPy array."""
    if hasattr(a, "get"):  # a CuPy array
        a = a.get()
    return np.asarray(a, dtype=np.float64)


# --- the CUDA kernels' layout contract (kernels/deconv.cu), as loops -----------------------


def col2im_oracle(cols, Hout, Wout, stride, padding, bias=None):
    """y[n, c, ih sh + i - ph, iw sw + j - pw] += cols[c, i, j, n, ih, iw], then + bias.

    The loops over taps are outermost and ascend, so each output element receives its terms
    in the order i ascending, then j ascending, in the array's own dtype.
    """
    C, kh, kw, N, H, W = cols.shape
    sh, sw = stride
    ph, pw = padding
    y = np.zeros((N, C, Hout, Wout), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            for ih in range(H):
                oh = ih * sh + i - ph
                if not 0 <= oh < Hout:
                    continue
                for iw in range(W):
                    ow = iw * sw + j - pw
                    if 0 <= ow < Wout:
                        y[:, :, oh, ow] += cols[:, i, j, :, ih, iw].T  # (N, C)
    if bias is not None:
        y += bias.reshape(1, C, 1, 1)
    return y


def im2col_oracle(dy, kh, kw, H, W, stride, padding):
    """dcols[c, i, j, n, ih, iw] = dy[n, c, ih sh + i - ph, iw sw + j - pw], 0 outside."""
    N, C, Hout, Wout = dy.shape
    sh, sw = stride
    ph, pw = padding
    dcols = np.zeros((C, kh, kw, N, H, W), dtype=dy.dtype)
    for i in range(kh):
        for j in range(kw):
            for ih in range(H):
                for iw in range(W):
                    oh, ow = ih * sh + i - ph, iw * sw + j - pw
                    if 0 <= oh < Hout and 0 <= ow < Wout:
                        dcols[:, i, j, :, ih, iw] = dy[:, :, oh, ow].T  # (C, N)
    return dcols


def activation_oracle(v, activation, slope):
    if activation == "tanh":
        return np.tanh(v)
    if activation == "relu":
        return np.where(v > 0, v, v.dtype.type(0))
    if activation == "leaky_relu":
        return np.where(v > 0, v, v.dtype.type(slope) * v)
    return v


def out_size(n_in, k, s, p, op):
    return (n_in - 1) * s - 2 * p + k + op
