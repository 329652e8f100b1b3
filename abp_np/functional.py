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

On the CPU the transposed convolution picks, by shape, one of three routes to the same
sums: the column form (GEMM + ``col2im``, the one to read first), the phase form (GEMMs
written straight into each output phase) and, for the paper's kernel-5 stride-2 layers, the
Winograd form of :mod:`abp_np.fast.winograd`; batch norm's statistics and sums run as compiled C
(``kernels/batchnorm_cpu.c``) where a C compiler exists. :func:`conv_transpose2d_forward`
says which route a layer takes; every route is tested against naive loops.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np

from .backend import get_array_module, kernels_enabled
from .fast import cpu as _cpu
from .fast import winograd

Pair = tuple[int, int]


# --- scratch memory ------------------------------------------------------------------------------

_scratch = threading.local()


def _workspace(xp: Any, slot: str, shape: tuple[int, ...], dtype: Any) -> Any:
    """A scratch array for a temporary that never leaves the function that asks for it.

    A fresh large NumPy array pays a page fault per 4 KiB on first touch, which costs about
    as much as writing it once more; the column buffers of the transposed convolutions are
    the largest temporaries of a training step. So, on the CPU, each thread keeps one buffer
    per ``slot`` and hands out views of it, growing it when a bigger one is asked for.
    On the GPU CuPy's memory pool already reuses blocks, so this is ``xp.empty``. The
    contents are undefined: callers overwrite what they read.
    """
    if xp is not np:
        return xp.empty(shape, dtype=dtype)
    size = math.prod(shape)
    bufs = _scratch.__dict__.setdefault("bufs", {})
    key = (slot, np.dtype(dtype))
    buf = bufs.get(key)
    if buf is None or buf.size < size:
        bufs[key] = None  # release the old one before allocating the new one
        buf = bufs[key] = np.empty(size, dtype)
    return buf[:size].reshape(shape)


#: Size of the column blocks of :func:`conv_transpose2d_backward` on the CPU: small enough to
#: stay in the cache between the im2col that writes a block and the GEMMs that read it.
_BLOCK_BYTES = 16 * 2**20


def xp_contiguous(x: Any) -> Any:
    """``x`` as a C-contiguous array (no copy when it already is); the CUDA kernels need it."""
    return get_array_module(x).ascontiguousarray(x)


def _kernel_path(x: Any) -> bool:
    """True when ``x`` lives on the GPU, is not empty and the custom kernels should run.

    An empty array (e.g. a batch of 0 examples) takes the ``xp`` path: there is nothing to
    launch, and the kernels' wrappers refuse zero sizes.
    """
    if get_array_module(x) is np or not kernels_enabled() or x.size == 0:
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


def col2im(cols, out_shape, stride: Pair, padding: Pair, out=None):
    """Scatter-add columns into an image: the adjoint of :func:`im2col`.

    Parameters
    ----------
    cols : array (C, kh, kw, N, H, W)
        ``cols[c, i, j, n, ih, iw]`` is the contribution of input pixel (ih, iw) through
        kernel tap (i, j) to output pixel (ih * sh + i - ph, iw * sw + j - pw).
    out_shape : (N, C, Hout, Wout)
    out : array (N, C, Hout, Wout), optional
        Where to write y (every element is written); a fresh array when not given.

    Returns
    -------
    y : array (N, C, Hout, Wout)
        ``y[n, c, oh, ow] = sum of cols[c, i, j, n, ih, iw] over ih sh + i - ph = oh,
        iw sw + j - pw = ow``. Taps that land in the padding are dropped.

    Computed phase by phase (see :func:`_phases`): the outputs of phase (r, r') are
    o = s q + r - p; each is the sum of its taps i = r + sh t, j = r' + sw t' at input pixel
    (q - t, q' - t'), so a phase is summed in a contiguous buffer from shifted windows of
    ``cols`` and written into y once. Taps are added in the order i ascending, then j, as
    the GPU kernel does.
    """
    xp = get_array_module(cols)
    C, kh, kw, N, H, W = cols.shape
    sh, sw = stride
    ph, pw = padding
    Hout, Wout = out_shape[2], out_shape[3]
    y = xp.empty((N, C, Hout, Wout), dtype=cols.dtype) if out is None else out
    y.fill(0)  # pixels that no tap reaches stay zero
    for r, q0, Q, T in _phases(kh, sh, ph, Hout):
        for r2, q02, Q2, T2 in _phases(kw, sw, pw, Wout):
            acc = xp.zeros((C, N, Q, Q2), dtype=cols.dtype)  # the phase's outputs
            for t in range(T):
                # rows q in [q0, q0 + Q) whose input row q - t lies in [0, H)
                qa, qb = max(q0, t), min(q0 + Q, H + t)
                for t2 in range(T2):
                    qa2, qb2 = max(q02, t2), min(q02 + Q2, W + t2)
                    if qb > qa and qb2 > qa2:
                        acc[:, :, qa - q0 : qb - q0, qa2 - q02 : qb2 - q02] += cols[
                            :, r + sh * t, r2 + sw * t2, :, qa - t : qb - t, qa2 - t2 : qb2 - t2
                        ]
            oh0, ow0 = sh * q0 + r - ph, sw * q02 + r2 - pw
            # (C, N, Q, Q2) -> the phase's pixels of y, (N, C, Q, Q2)
            y[:, :, oh0 : oh0 + sh * (Q - 1) + 1 : sh, ow0 : ow0 + sw * (Q2 - 1) + 1 : sw] = (
                acc.transpose(1, 0, 2, 3)
            )
    return y


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
    N, C = dy.shape[:2]
    out = xp.empty((C, *kernel, N, *in_hw), dtype=dy.dtype)
    return _im2col_into(out, dy, stride, padding)


def _im2col_into(cols, dy, stride: Pair, padding: Pair):
    """Fill ``cols`` (C, kh, kw, N, H, W) with :func:`im2col` of ``dy``; return it.

    Done phase by phase rather than tap by tap. Write the tap index as i = r + sh t (phase
    r = i mod sh). Then ih sh + i - ph = (ih + t) sh + r - ph: every tap of phase r reads the
    same sub-sampled plane of ``dy``, rows ``sh q + r - ph``, only shifted by t rows. So for
    each phase pair (r, r') and each column shift t' we gather that plane once, already
    shifted by t' columns, into ``E`` (C, N, H + T - 1, W); the T taps i = r + sh t are then
    windows E[:, :, t : t + H] whose (H, W) blocks are contiguous: cheap block copies
    instead of 25 strided gathers. For the paper's layers (k 5, s 2): 10 gathers, 25 copies.

    ``cols`` may also be a view of memory ordered (C, kh, kw, H, N, W) (the backward pass
    uses that for wide layers): ``E`` is then ordered (C, H + T - 1, N, W) too, and each
    tap's block (H, N, W) is one contiguous run, however small H and W are.
    """
    xp = get_array_module(dy)
    C, kh, kw, N, H, W = cols.shape
    Hout, Wout = dy.shape[2], dy.shape[3]
    sh, sw = stride
    ph, pw = padding
    rows_outside = cols.strides[4] > cols.strides[3]  # memory (..., H, N, W)
    dyt = dy.transpose(1, 0, 2, 3)  # (C, N, Hout, Wout), a view
    for r in range(min(sh, kh)):
        Th = _taps(kh, sh, r)
        Qh = H + Th - 1  # rows q of the phase plane that the T taps read
        h0, h1 = _valid(Qh, sh, r - ph, Hout)  # rows whose dy index lies in [0, Hout)
        for r2 in range(min(sw, kw)):
            Tw = _taps(kw, sw, r2)
            if rows_outside:  # (C, Qh, N, W) in memory, seen as (C, N, Qh, W)
                E = _workspace(xp, "im2col.E", (C, Qh, N, W), dy.dtype).transpose(0, 2, 1, 3)
            else:
                E = _workspace(xp, "im2col.E", (C, N, Qh, W), dy.dtype)
            for t2 in range(Tw):
                # E[c, n, q, iw] = dy[n, c, sh q + r - ph, sw (iw + t2) + r2 - pw]
                w0, w1 = _valid(W, sw, sw * t2 + r2 - pw, Wout)
                E.fill(0)
                if h1 > h0 and w1 > w0:
                    a = sh * h0 + r - ph  # first dy row and column read
                    b = sw * (w0 + t2) + r2 - pw
                    rows = slice(a, a + sh * (h1 - h0 - 1) + 1, sh)
                    E[:, :, h0:h1, w0:w1] = dyt[:, :, rows, b : b + sw * (w1 - w0 - 1) + 1 : sw]
                for t in range(Th):
                    cols[:, r + sh * t, r2 + sw * t2] = E[:, :, t : t + H]
    return cols


def _taps(k: int, s: int, r: int) -> int:
    """Number of kernel taps i = r + s t (t >= 0) with i < k: those of phase r."""
    return max(0, -(-(k - r) // s))


def _valid(count: int, s: int, offset: int, size: int) -> tuple[int, int]:
    """The range [a, b) of q in [0, count) with 0 <= s q + offset < size."""
    a = max(0, -(offset // s))
    b = min(count, (size - 1 - offset) // s + 1)
    return a, max(a, b)


def _phases(k: int, s: int, p: int, size_out: int) -> list[tuple[int, int, int, int]]:
    """The sub-pixel phases of one axis of a transposed convolution.

    Output index o lies at u = o + p on the un-cropped grid; write u = s q + r with phase
    r = u mod s. Returns ``(r, q0, Q, T)`` for every phase that has outputs: its outputs are
    o = s q + r - p for q = q0 .. q0 + Q - 1, and its T taps are i = r + s t, t < T, reading
    input index q - t.
    """
    out = []
    for r in range(s):
        q0 = -((r - p) // s)  # smallest q with s q + r - p >= 0
        Q = (size_out - 1 + p - r) // s - q0 + 1
        if Q > 0:
            out.append((r, q0, Q, _taps(k, s, r)))
    return out


def _conv_transpose2d_phases(x, weight, bias, stride: Pair, padding: Pair, out_hw: Pair):
    """Transposed convolution by sub-pixel phases: GEMMs that write the output directly.

    The maths, along one axis (the other is the same). Output pixel oh lies at
    u = oh + ph on the un-cropped grid; write u = sh q + r, phase r = u mod sh. Input pixel
    ih reaches u through tap i = u - sh ih, so only the taps i = r + sh t (t < T_r) serve
    phase r, from input pixels ih = q - t::

        y[n, o, sh q + r - ph] = b[o] + sum_t sum_c x[n, c, q - t] W[c, o, r + sh t]

    Each phase is an ordinary stride-1 correlation of x with a sub-kernel of the taps. With
    X_j = x shifted by j columns, phase (r, r') of the output is a sum of GEMMs with Cout
    rows, one per row shift t::

        y_(r,r')[o, (q, n, q')] = sum_t  A_t[o, (j, c)] @ X_j[(j, c), (q - t, n, q')]

    For the paper's layers (k 5, s 2) the four phases hold 3x3, 3x2, 2x3 and 2x2 taps: the
    25 taps exactly once, and no (Cout kh kw, N H W) column buffer (12.5 x the output) is
    written, read back and scattered as in the column form (see
    :func:`conv_transpose2d_forward`).

    Layout: the column-shifted copies are one buffer ``xs`` (J, Cin, Hp, N, Qw), zero
    outside x. A shift along H is then a mere offset: rows [hs, hs + Qh) of every (j, c)
    plane form a strided 2-D matrix (J' Cin, Qh N Qw) that BLAS reads in place. Only the
    column shifts are copied (J = 3 copies of x for k 5, s 2).
    """
    xp = get_array_module(x)
    N, Cin, H, W = x.shape
    _, Cout, kh, kw = weight.shape
    sh, sw = stride
    ph, pw = padding
    Hout, Wout = out_hw
    hph = _phases(kh, sh, ph, Hout)
    wph = _phases(kw, sw, pw, Wout)
    y = xp.empty((N, Cout, Hout, Wout), dtype=x.dtype)
    if any(T == 0 for *_, T in hph) or any(T == 0 for *_, T in wph):  # stride > kernel:
        y.fill(0)  # some outputs have no tap at all
    hph = [a for a in hph if a[3] > 0]
    wph = [a for a in wph if a[3] > 0]
    if not hph or not wph:
        return y if bias is None else y + bias.reshape(1, Cout, 1, 1)
    # Every phase is computed on Qh x Qw positions (a phase with fewer drops the rest).
    Qh = max(Q for _, _, Q, _ in hph)
    Qw = max(Q for _, _, Q, _ in wph)
    # Rows of x read: q - t for q0 <= q < q0 + Qh, t < T; pad x with zero rows to cover them.
    lo = min(0, min(q0 - T + 1 for _, q0, _, T in hph))
    hi = max(H, max(q0 + Qh for _, q0, _, _ in hph))
    # Column shifts j read: q0' - T' < j <= q0'. They are stored in DEScending order of j,
    # so that a phase's taps r' + sw (q0' - j) come in ascending order.
    jhi = max(q0 for _, q0, _, _ in wph)
    J = jhi - min(q0 - T + 1 for _, q0, _, T in wph) + 1
    # xs[jhi - j, c, h - lo, n, q'] = x[n, c, h, q' + j], zero outside x
    xs = _workspace(xp, "phases.xs", (J, Cin, hi - lo, N, Qw), x.dtype)
    xs.fill(0)
    xt = x.transpose(1, 2, 0, 3)  # (Cin, H, N, W), a view
    for jj in range(J):
        j = jhi - jj
        a, e = max(0, -j), min(Qw, W - j)
        if e > a:
            xs[jj, :, -lo : H - lo, :, a:e] = xt[:, :, :, a + j : e + j]
    # (Cin, Cout, kh, kw) -> (Cout, kh, kw, Cin): a tap's weights as GEMM rows
    wt = weight.transpose(1, 2, 3, 0).copy()
    P = Qh * N * Qw
    acc = _workspace(xp, "phases.acc", (Cout, P), x.dtype)
    tmp = _workspace(xp, "phases.tmp", (Cout, P), x.dtype)
    for r, q0, Q, T in hph:
        for r2, q02, Q2, T2 in wph:
            js = slice(jhi - q02, jhi - q02 + T2)  # shifts j = q02, q02 - 1, ... (T2 of them)
            taps = slice(r2, r2 + sw * (T2 - 1) + 1, sw)  # their taps r2, r2 + sw, ...
            for t in range(T):
                # A_t (Cout, T2 Cin) @ B (T2 Cin, Qh N Qw), B a view of xs
                A = wt[:, r + sh * t, taps].reshape(Cout, T2 * Cin)
                hs = q0 - t - lo
                B = xs[js, :, hs : hs + Qh].reshape(T2 * Cin, P)
                if t == 0:
                    xp.matmul(A, B, out=acc)
                else:
                    xp.matmul(A, B, out=tmp)
                    acc += tmp
            # (Cout, Qh, N, Qw) -> the phase's pixels of y, (N, Cout, Q, Q2)
            oh0, ow0 = sh * q0 + r - ph, sw * q02 + r2 - pw
            yv = y[:, :, oh0 : oh0 + sh * (Q - 1) + 1 : sh, ow0 : ow0 + sw * (Q2 - 1) + 1 : sw]
            yv[...] = acc.reshape(Cout, Qh, N, Qw)[:, :Q, :, :Q2].transpose(2, 0, 1, 3)
    if bias is not None:
        y += bias.reshape(1, Cout, 1, 1)
    return y


def conv_transpose2d_forward(
    x, weight, bias, stride: Pair, padding: Pair, output_padding: Pair, derived=None
):
    """Transposed 2-D convolution ("deconvolution"), PyTorch's ``conv_transpose2d``.

    A transposed convolution is the data-gradient of a convolution: every input pixel
    spreads a copy of the kernel, scaled by its value, onto the output at stride
    spacing. As a GEMM followed by a scatter (the *column form*)::

        cols = W^T x          (Cout kh kw, N H W) = (Cout kh kw, Cin) @ (Cin, N H W)
        y    = col2im(cols) + b

    On the CPU, layers with more than a few output channels take the *phase form*
    instead (:func:`_conv_transpose2d_phases`): the same sums, grouped by output phase so
    that the GEMMs write the output directly. The column form stays for layers with very
    few output channels (an RGB or mono output layer: there its buffer is the smaller one),
    for small inputs with many channels (N H W <= Cin, e.g. the first layers of a
    texture network with batch 1: the buffer is smaller than the weights), and on the GPU,
    where ``col2im`` is a CUDA kernel (and, with kernels turned off, the ``xp`` reference
    that kernel is tested against).

    The larger layers of the paper's networks (kernel 5, stride 2, padding 2) take a third
    route on the CPU, :mod:`abp_np.fast.winograd`: the same function with 2.8 x fewer
    multiplications (see :func:`abp_np.fast.winograd.choose` for when). Its cache is marked
    ``"winograd"`` and :func:`conv_transpose2d_backward` hands it back to that module.

    Parameters
    ----------
    x : array (N, Cin, H, W)
    weight : array (Cin, Cout, kh, kw)
    bias : array (Cout,) or None
    stride, padding, output_padding : (int, int)
    derived : dict, optional
        Given while the weights stay fixed over many calls (the Langevin loop; see
        :meth:`abp_np.generator.Generator.fixed_weights`): the Winograd path keeps its
        transformed weights there and reuses them, and takes layers it would otherwise leave
        (:func:`abp_np.fast.winograd.worth_it`). The result is the same either way.

    Returns
    -------
    y : array (N, Cout, Hout, Wout), Hout = (H - 1) sh - 2 ph + kh + output_padding
    cache : tuple
    """
    xp = get_array_module(x)
    N, Cin, H, W = x.shape
    _, Cout, kh, kw = weight.shape
    Hout = conv_transpose_output_size(H, kh, stride[0], padding[0], output_padding[0])
    Wout = conv_transpose_output_size(W, kw, stride[1], padding[1], output_padding[1])
    reuse = derived is not None
    wplan = winograd.choose(x, weight, stride, padding, (Hout, Wout), reuse) if xp is np else None
    if wplan is not None:  # the CPU speed path for the paper's layers: abp_np/fast/winograd.py
        y, ctx = winograd.forward(x, weight, wplan, bias, derived)
        return y, ("winograd", ctx, bias is not None)
    cache = (x, weight, bias is not None, stride, padding)
    # Phase form where it moves less data: the column buffer (Cout kh kw, N H W) is larger
    # than x (Cout kh kw > 2 Cin) and than the weights (N H W > Cin), which the phase
    # form copies into its GEMM layout while the column form's GEMM reads them in place.
    if xp is np and Cout * kh * kw > 2 * Cin and N * H * W > Cin:
        return _conv_transpose2d_phases(x, weight, bias, stride, padding, (Hout, Wout)), cache
    if xp is np:
        y = _conv_transpose2d_columns(x, weight, bias, stride, padding, (Hout, Wout))
        return y, cache
    # (N, Cin, H, W) -> (Cin, N H W)
    x2d = x.transpose(1, 0, 2, 3).reshape(Cin, N * H * W)
    # (Cout kh kw, N H W), one GEMM for the whole batch
    cols = (weight.reshape(Cin, Cout * kh * kw).T @ x2d).reshape(Cout, kh, kw, N, H, W)
    if _kernel_path(x):
        from .fast import cuda as _cuda

        y = _cuda.col2im(cols, N, Cout, Hout, Wout, kh, kw, H, W, stride, padding, bias=bias)
    else:
        y = col2im(cols, (N, Cout, Hout, Wout), stride, padding)  # a fresh array
        if bias is not None:
            y += bias.reshape(1, Cout, 1, 1)
    return y, cache


def _conv_transpose2d_columns(x, weight, bias, stride: Pair, padding: Pair, out_hw: Pair):
    """The column form on the CPU, a block of examples at a time.

    The same two lines as in :func:`conv_transpose2d_forward`, per block of ``nb`` examples:
    ``cols = W^T x_n`` for each example n of the block (a GEMM (Cout kh kw, Cin) @ (Cin, H W)
    that reads x_n in place, where the whole-batch GEMM needs x transposed to (Cin, N H W),
    a copy), then ``col2im`` of the block into its rows of y. The column buffer of a block
    (:data:`_BLOCK_BYTES`) is reused: built whole, it would be 12.5 x the output of an RGB
    layer and, with the copy of x, the largest temporary of a Langevin step.
    """
    N, Cin, H, W = x.shape
    _, Cout, kh, kw = weight.shape
    K = Cout * kh * kw
    wT = weight.reshape(Cin, K).T  # (Cout kh kw, Cin), a view
    nb = max(1, min(N, _BLOCK_BYTES // (K * H * W * x.itemsize)))
    y = np.empty((N, Cout, *out_hw), dtype=x.dtype)
    for n0 in range(0, N, nb):
        n1 = min(N, n0 + nb)
        cols = _workspace(np, "cols", (n1 - n0, K, H * W), x.dtype)
        np.matmul(wT, x[n0:n1].reshape(n1 - n0, Cin, H * W), out=cols)
        # (nb, Cout, kh, kw, H, W) seen as col2im's (Cout, kh, kw, nb, H, W)
        c6 = cols.reshape(n1 - n0, Cout, kh, kw, H, W).transpose(1, 2, 3, 0, 4, 5)
        col2im(c6, (n1 - n0, Cout, *out_hw), stride, padding, out=y[n0:n1])
    if bias is not None:
        y += bias.reshape(1, Cout, 1, 1)
    return y


def conv_transpose2d_backward(dy, cache, need_param_grads=True):
    """Gradients of :func:`conv_transpose2d_forward`.

    The input gradient of a transposed convolution is an ordinary convolution of ``dy``
    with the same kernel: gather the patches of ``dy`` (im2col), then one GEMM::

        dcols = im2col(dy)                       (Cout kh kw, N H W)
        dx    = W dcols                          (Cin, N H W)
        dW    = x dcols^T                        (Cin, Cout kh kw)   [learning only]
        db    = sum over N, Hout, Wout of dy     (Cout,)             [learning only]

    ``dcols`` is shared by dx and dW: the weight gradient costs one extra GEMM.

    On the CPU the columns are built a few rows of dx at a time (*blocking*): rows
    [h0, h1) of dx need only the columns of those rows, ``dcols[:, :, :, :, h0:h1]``, so
    the same three lines run on a block of rows whose columns (a few MiB) are still in the
    cache when the GEMMs read them, and dW sums the blocks' GEMMs. ``dcols`` is 6 x the
    size of ``dy`` for the paper's layers; built whole, it would be the largest temporary
    of a training step. On the GPU it is built whole, by a CUDA kernel.

    Returns
    -------
    dx : array (N, Cin, H, W)
    dW : array (Cin, Cout, kh, kw) or None
    db : array (Cout,) or None
    """
    if isinstance(cache[0], str):  # ("winograd", ctx, has_bias)
        _, ctx, has_bias = cache
        dx, dW = winograd.backward(dy, ctx, need_param_grads)
        db = dy.sum(axis=(0, 2, 3)) if (need_param_grads and has_bias) else None
        return dx, dW, db
    x, weight, has_bias, stride, padding = cache
    xp = get_array_module(dy)
    N, Cin, H, W = x.shape
    _, Cout, kh, kw = weight.shape
    K = Cout * kh * kw
    w2d = weight.reshape(Cin, K)
    db = dy.sum(axis=(0, 2, 3)) if (need_param_grads and has_bias) else None
    if _kernel_path(dy) or xp is not np:
        if _kernel_path(dy):
            from .fast import cuda as _cuda

            dcols = _cuda.im2col(xp_contiguous(dy), kh, kw, H, W, stride, padding)
        else:
            dcols = im2col(dy, (kh, kw), (H, W), stride, padding)
        # (Cout kh kw, N H W)
        dcols2d = dcols.reshape(K, N * H * W)
        # (Cin, N H W) -> (N, Cin, H, W)
        dx = (w2d @ dcols2d).reshape(Cin, N, H, W).transpose(1, 0, 2, 3)
        if not need_param_grads:
            return dx, None, None
        # (N, Cin, H, W) -> (Cin, N H W)
        x2d = x.transpose(1, 0, 2, 3).reshape(Cin, N * H * W)
        return dx, (x2d @ dcols2d.T).reshape(Cin, Cout, kh, kw), db
    # CPU: blocks of `nb` examples, or of `hb` rows of one example when one is too big.
    # Layers with many output channels (columns much larger than dx) order a block's
    # columns (rows, examples, W) in memory, so that im2col copies whole (hb, nb, W) runs
    # (see _im2col_into); the others keep (examples, rows, W), which makes the copy of the
    # GEMM's result into dx the cheaper one.
    rows_first = K > 2 * Cin
    per_row = K * W * dy.itemsize
    hb = max(1, min(H, _BLOCK_BYTES // per_row))
    nb = max(1, min(N, _BLOCK_BYTES // (per_row * H))) if hb == H else 1
    dx = xp.empty((N, Cin, H, W), dtype=dy.dtype)
    dW2d = xp.zeros((Cin, K), dtype=dy.dtype) if need_param_grads else None
    sh, ph = stride[0], padding[0]
    for n0 in range(0, N, nb):
        n1 = min(N, n0 + nb)
        for h0 in range(0, H, hb):
            h1 = min(H, h0 + hb)
            P = (h1 - h0) * (n1 - n0) * W
            mem = (h1 - h0, n1 - n0) if rows_first else (n1 - n0, h1 - h0)
            dcols = _workspace(xp, "cols", (Cout, kh, kw, *mem, W), dy.dtype)
            # columns of examples n0 .. n1 - 1, rows h0 .. h1 - 1: im2col with the first row
            # moved down by h0, which is padding ph - sh h0 (negative padding skips rows of dy)
            cols = dcols.transpose(0, 1, 2, 4, 3, 5) if rows_first else dcols  # (.., nb, hb, W)
            _im2col_into(cols, dy[n0:n1], stride, (ph - sh * h0, padding[1]))
            # (Cout kh kw, P), P = hb nb W or nb hb W
            dcols2d = dcols.reshape(K, P)
            if rows_first:  # (Cin, hb, nb, W) -> its block of dx, (nb, Cin, hb, W)
                dx_block = _workspace(xp, "backward.dx", (Cin, P), dy.dtype)
                xp.matmul(w2d, dcols2d, out=dx_block)
                dx_block = dx_block.reshape(Cin, *mem, W)
                dx[n0:n1, :, h0:h1] = dx_block.transpose(2, 0, 1, 3)
            else:  # one GEMM per example, (Cin, K) @ (K, hb W), written into dx in place
                dc = dcols.reshape(K, n1 - n0, (h1 - h0) * W).transpose(1, 0, 2)
                # a view of dx: a block of several examples holds all their rows (nb > 1 => hb = H)
                out = dx[n0:n1, :, h0:h1].reshape(n1 - n0, Cin, (h1 - h0) * W)
                xp.matmul(w2d, dc, out=out)
            if need_param_grads:
                # (nb, Cin, hb, W) -> (Cin, P), columns in dcols' order
                order = (1, 2, 0, 3) if rows_first else (1, 0, 2, 3)
                x2d = x[n0:n1, :, h0:h1].transpose(order).reshape(Cin, P)
                dW2d += x2d @ dcols2d.T
    if not need_param_grads:
        return dx, None, None
    return dx, dW2d.reshape(Cin, Cout, kh, kw), db


# --- batch normalisation --------------------------------------------------------------------------


def _channel_sums(a, b=None):
    """Per-channel sums over every axis but 1: sum of ``a``, or of ``a * b`` when ``b`` is given.

    Both read their arrays once and write nothing activation-sized: with ``a`` seen as
    (N, C, L), the plain sum is a matrix-vector product with a vector of ones (BLAS), and
    the sum of products an ``einsum`` (no ``a * b`` temporary). Accumulated in the arrays'
    dtype (float32 or float64).

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
    if b is None:
        return (a3 @ xp.ones(a3.shape[2], dtype=a.dtype)).sum(axis=0)
    return xp.einsum("ncl,ncl->c", a3, b.reshape(N, C, -1))


def batchnorm_forward(x, gamma, beta, eps, axes, mean=None, var=None):
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
    if mean is None and _cpu_kernels(x):  # the same sums, in 3 passes over x instead of 7
        return _batchnorm_forward_cpu(x, gamma, beta, eps, axes, shape)
    acc = np.promote_types(x.dtype, np.float32)
    if mean is None:
        M = x.size // x.shape[1]
        mu = _channel_sums(x.astype(acc, copy=False)) / M
        xc = x - mu.reshape(shape).astype(x.dtype, copy=False)
        v = _channel_sums(xc.astype(acc, copy=False), xc.astype(acc, copy=False)) / M
        batch_stats = (mu, v)
        batch = True
    else:
        mu, v = mean, var
        xc = x - mu.reshape(shape).astype(x.dtype, copy=False)
        batch_stats = (None, None)
        batch = False
    inv_std = (1.0 / xp.sqrt(v + eps)).astype(x.dtype, copy=False).reshape(shape)
    y = xc * (gamma.reshape(shape) * inv_std)  # gamma xhat, xhat = xc / sqrt(var + eps)
    y += beta.reshape(shape)
    cache = (xc, inv_std, gamma, axes, shape, batch)
    return y, cache, batch_stats[0], batch_stats[1]


def _cpu_kernels(x) -> bool:
    """True when ``x`` is a non-empty float NumPy array and the compiled CPU kernels are on."""
    return (
        get_array_module(x) is np
        and x.size > 0
        and x.dtype in (np.float32, np.float64)
        and _cpu.enabled()
    )


def _batchnorm_forward_cpu(x, gamma, beta, eps, axes, shape):
    """:func:`batchnorm_forward` with batch statistics, by ``kernels/batchnorm_cpu.c``.

    The same quantities; the sums are accumulated in double (rounding may differ from the
    ``xp`` code in the last bits).
    """
    x = np.ascontiguousarray(x)
    C = x.shape[1]
    xc, y = np.empty_like(x), np.empty_like(x)
    mu, v = np.empty(C, x.dtype), np.empty(C, x.dtype)
    _cpu.bn_stats(x, xc, mu, v)
    inv_std = (1.0 / np.sqrt(v + eps)).astype(x.dtype, copy=False).reshape(shape)
    scale = np.ascontiguousarray((gamma.reshape(shape) * inv_std).reshape(-1))
    _cpu.bn_scale_shift(xc, y, scale, np.ascontiguousarray(beta))
    return y, (xc, inv_std, gamma, axes, shape, True), mu, v


def batchnorm_backward(dy, cache, need_param_grads=True):
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
    """
    xc, inv_std, gamma, axes, shape, batch = cache
    a = gamma.reshape(shape) * inv_std  # (1, C, 1, ...)
    if batch and _cpu_kernels(dy) and dy.dtype == xc.dtype:
        # the same formula in 2 passes over memory, by kernels/batchnorm_cpu.c
        C = xc.shape[1]
        xc = np.ascontiguousarray(xc)
        dx = np.empty_like(xc)
        sum_dy, sum_dy_xc = np.empty(C, dy.dtype), np.empty(C, dy.dtype)
        vec = [np.ascontiguousarray(v.reshape(-1)) for v in (a, inv_std)]
        _cpu.bn_backward(np.ascontiguousarray(dy), xc, dx, *vec, sum_dy, sum_dy_xc)
        if not need_param_grads:
            return dx, None, None
        return dx, sum_dy_xc * inv_std.reshape(-1), sum_dy
    if batch:
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
# Each keeps its OUTPUT, which is all its backward pass needs.


def relu_forward(x):
    """y = max(x, 0); cache the output."""
    xp = get_array_module(x)
    y = xp.maximum(x, 0)
    return y, y


def relu_backward(dy, y, out=None):
    """dx = dy where y > 0, else 0 (into ``out`` when given; it may be dy itself)."""
    xp = get_array_module(dy)
    return xp.multiply(dy, y > 0, out=out)


def leaky_relu_forward(x, slope):
    """y = x if x > 0 else slope x (slope > 0 keeps the sign, so y tells where x > 0)."""
    xp = get_array_module(x)
    y = xp.where(x > 0, x, x * x.dtype.type(slope))
    return y, (y, slope)


def leaky_relu_backward(dy, cache, out=None):
    """dx = dy if y > 0 else slope dy (into ``out`` when given; it may be dy itself)."""
    xp = get_array_module(dy)
    y, slope = cache
    one, s = dy.dtype.type(1), dy.dtype.type(slope)
    return xp.multiply(dy, xp.where(y > 0, one, s), out=out)


def tanh_forward(x):
    """y = tanh(x); cache the output."""
    xp = get_array_module(x)
    y = xp.tanh(x)
    return y, y


def tanh_backward(dy, y, out=None):
    """dx = dy (1 - y^2) (into ``out`` when given; it may be dy itself)."""
    xp = get_array_module(dy)
    d = y * y
    xp.subtract(1, d, out=d)  # 1 - y^2
    return xp.multiply(dy, d, out=out)
