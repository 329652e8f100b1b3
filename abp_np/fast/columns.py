"""The CPU's NumPy forms of the transposed convolution: the column form's sums, moving less memory.

:func:`abp_np.functional.conv_transpose2d_forward` writes the transposed convolution in its
*column form*: one GEMM ``cols = W^T x`` into a buffer of shape (Cout kh kw, N H W), then
``col2im`` scatters it into y. On the CPU that buffer is the largest temporary of a training
step (kh kw / (sh sw) times the output), and NumPy's strided scatter is slow. The forms here
compute the same sums, in the same order per output pixel, arranged differently:

* :func:`conv_transpose2d_phases` (forward): GEMMs grouped by output phase, written straight
  into y; no column buffer. For layers with more than a few output channels.
* :func:`conv_transpose2d_columns` (forward): the column form a block of examples at a time,
  in a reused buffer. For layers with very few output channels (an RGB output layer), where
  the column buffer is the smaller one, and for small inputs with many channels.
* :func:`conv_transpose2d_backward` (backward): ``im2col`` and the GEMMs a block of rows (or
  examples) at a time, so that a block's columns are still in the cache when the GEMMs read
  them.
* :func:`conv_transpose2d_dx_taps` (backward, dx alone, as the Langevin dynamics asks): one
  GEMM of the filters with dy, then a strided sum per kernel tap; no columns. For layers with
  few input channels, whose columns would be many times the size of dy.
* :func:`col2im` and :func:`im2col_into`: the scatter and the gather phase by phase
  (:mod:`abp_np.fast.phases`): whole contiguous blocks instead of one strided copy per tap;
  with the C kernels on (:mod:`abp_np.fast.cpu`, ``kernels/columns_cpu.c``) the same loops run
  in C, one pass over memory, the same sums in the same order.

They run on NumPy arrays while the ``cpu_forms`` setting of :func:`abp_np.backend.using` is on
(see :mod:`abp_np.fast.routes`); the tests hold them to the reference. Measured effects:
``BENCHMARKS.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from . import cpu as _cpu
from . import threads
from .cpu import stacked_matmul
from .phases import phases, taps, valid_range
from .threads import parallel_for

__all__ = [
    "BLOCK_BYTES",
    "LEARNING_BLOCK_BYTES",
    "MIN_COLUMNS",
    "backward_blocks",
    "col2im",
    "conv_transpose2d_backward",
    "conv_transpose2d_columns",
    "conv_transpose2d_dx_taps",
    "conv_transpose2d_phases",
    "im2col_into",
    "phase_weights",
    "taps_worth_it",
]

Pair = tuple[int, int]

#: Size of the column blocks of :func:`conv_transpose2d_columns` and of the input gradient alone
#: (:func:`conv_transpose2d_backward` without weight gradients, the Langevin loop's passes):
#: small enough that a block's columns are still in the cache when the GEMMs read them, and that
#: the buffer adds little to the peak memory, which forms in those passes (every kept U alive).
#: faces64's RGB output layer had 16 MiB blocks until 2026-12-06, 4 MiB since (peak 221 -> 212
#: MiB: ``BENCHMARKS.md``, "Temporaries instead of kept scratch buffers").
BLOCK_BYTES = 4 * 2**20

#: Size of the column blocks of :func:`conv_transpose2d_backward` with weight gradients (the
#: learning step): dW sums a GEMM per block, each reading and writing all of dW, so fewer and
#: larger blocks. faces64's 512 -> 256 layer: 90.5 ms with blocks of 4 MiB, 70.8 with 16
#: (same reference). The learning step's passes hold less than the Langevin loop's (no kept U
#: of the large layers), so the peak does not move.
LEARNING_BLOCK_BYTES = 16 * 2**20

#: Fewest columns (positions) a block of :func:`conv_transpose2d_backward` gives its GEMMs where
#: the layer has that many: a block of fewer leaves OpenBLAS too narrow a GEMM. texture224's
#: 512 -> 256 layer (batch 1, 14 x 14 inputs, 358 KB of columns per row) was cut by
#: :data:`BLOCK_BYTES` into blocks of 11 and 3 rows (154 and 42 columns): 7.35 ms a pass
#: against 5.88 whole (``BENCHMARKS.md``, "The learning step inside the Langevin loop's block,
#: and texture224's narrow layer").
MIN_COLUMNS = 256


# --- temporaries ---------------------------------------------------------------------------------
#
# The temporaries here (column blocks, the phase form's shifted copies of x) are plain arrays,
# freed when the function returns. Freed memory stays with the process (``abp_np._malloc``), so
# the next array of the kind reuses its pages and pays no page faults. Buffers kept from call to
# call would save nothing more and would stay in memory through the rest of the step: the phase
# form's 11 MiB of the learning step's forward were still held through the Langevin loop's
# backward passes, where faces64's peak lies.


# --- scatter and gather, phase by phase -----------------------------------------------------------


def col2im(
    cols: np.ndarray,
    out_shape: tuple[int, ...],
    stride: Pair,
    padding: Pair,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """:func:`abp_np.functional.col2im`, phase by phase, optionally into ``out``.

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

    Computed phase by phase (see :mod:`abp_np.fast.phases`): the outputs of phase (r, r') are
    o = s q + r - p; each is the sum of its taps i = r + sh t, j = r' + sw t' at input pixel
    (q - t, q' - t'), so a phase is summed in a contiguous buffer from shifted windows of
    ``cols`` and written into y once. Taps are added in the order i ascending, then j, as
    the GPU kernel does.
    """
    C, kh, kw, N, H, W = cols.shape
    sh, sw = stride
    ph, pw = padding
    Hout, Wout = out_shape[2], out_shape[3]
    y = np.empty((N, C, Hout, Wout), dtype=cols.dtype) if out is None else out
    if _cpu.enabled() and cols.dtype in (np.float32, np.float64):
        # the same loops in C, one pass, the same sums in the same order (columns_cpu.c)
        _cpu.col2im(cols, y, stride, padding, phases(kh, sh, ph, Hout), phases(kw, sw, pw, Wout))
        return y
    y.fill(0)  # pixels that no tap reaches stay zero
    for r, q0, Q, T in phases(kh, sh, ph, Hout):
        for r2, q02, Q2, T2 in phases(kw, sw, pw, Wout):
            acc = np.zeros((C, N, Q, Q2), dtype=cols.dtype)  # the phase's outputs
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


def _split(
    N: int, C: int, work: int, fn: Callable[[slice, slice], Any], whole: tuple | None = None
) -> None:
    """``fn(examples, channels)`` on several threads: ranges of the N examples when there are
    several, else of the C channels. Each example and each channel of a column transform is
    computed alone, so any split gives the same result bit for bit.

    ``whole``: ``fn``'s C kernel on the whole block, ``(cols, y, stride, padding)`` for
    ``col2im`` or ``(dy, cols, stride, padding)`` for ``im2col``. Where the C kernels' pool
    takes it (:func:`abp_np.fast.cpu.pooled`), that one call splits the same ranges on the
    pool's threads, with no hand-off to a Python thread."""
    t = threads.split_count(N if N > 1 else C, work)
    if whole is not None and t > 1 and _cpu.pooled(whole[0].dtype):
        if whole[0].ndim == 6:  # cols first: the scatter
            cols, y, stride, padding = whole
            kh, kw = cols.shape[1:3]
            hph = phases(kh, stride[0], padding[0], y.shape[2])
            wph = phases(kw, stride[1], padding[1], y.shape[3])
            _cpu.col2im(cols, y, stride, padding, hph, wph, threads=t)
        else:
            _cpu.im2col(*whole, threads=t)
        return
    if N > 1:
        parallel_for(lambda a, b: fn(slice(a, b), slice(None)), N, work=work)
    else:
        parallel_for(lambda a, b: fn(slice(None), slice(a, b)), C, work=work)


def im2col_into(cols: np.ndarray, dy: np.ndarray, stride: Pair, padding: Pair) -> np.ndarray:
    """Fill ``cols`` (C, kh, kw, N, H, W) with :func:`abp_np.functional.im2col` of ``dy``.

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
    C, kh, kw, N, H, W = cols.shape
    Hout, Wout = dy.shape[2], dy.shape[3]
    sh, sw = stride
    ph, pw = padding
    if _cpu.enabled() and dy.dtype in (np.float32, np.float64) and cols.dtype == dy.dtype:
        _cpu.im2col(dy, cols, stride, padding)  # the same gather in C (columns_cpu.c)
        return cols
    rows_outside = cols.strides[4] > cols.strides[3]  # memory (..., H, N, W)
    dyt = dy.transpose(1, 0, 2, 3)  # (C, N, Hout, Wout), a view
    for r in range(min(sh, kh)):
        Th = taps(kh, sh, r)
        Qh = H + Th - 1  # rows q of the phase plane that the T taps read
        h0, h1 = valid_range(Qh, sh, r - ph, Hout)  # rows whose dy index lies in [0, Hout)
        for r2 in range(min(sw, kw)):
            Tw = taps(kw, sw, r2)
            if rows_outside:  # (C, Qh, N, W) in memory, seen as (C, N, Qh, W)
                E = np.empty((C, Qh, N, W), dy.dtype).transpose(0, 2, 1, 3)
            else:
                E = np.empty((C, N, Qh, W), dy.dtype)
            for t2 in range(Tw):
                # E[c, n, q, iw] = dy[n, c, sh q + r - ph, sw (iw + t2) + r2 - pw]
                w0, w1 = valid_range(W, sw, sw * t2 + r2 - pw, Wout)
                E.fill(0)
                if h1 > h0 and w1 > w0:
                    a = sh * h0 + r - ph  # first dy row and column read
                    b = sw * (w0 + t2) + r2 - pw
                    rows = slice(a, a + sh * (h1 - h0 - 1) + 1, sh)
                    E[:, :, h0:h1, w0:w1] = dyt[:, :, rows, b : b + sw * (w1 - w0 - 1) + 1 : sw]
                for t in range(Th):
                    cols[:, r + sh * t, r2 + sw * t2] = E[:, :, t : t + H]
    return cols


# --- the forms ----------------------------------------------------------------------------------


def conv_transpose2d_phases(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    stride: Pair,
    padding: Pair,
    out_hw: Pair,
    derived: dict | None = None,
) -> np.ndarray:
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
    25 taps exactly once, and no (Cout kh kw, N H W) column buffer (kh kw / (sh sw) times
    the output) is written, read back and scattered as in the column form (see
    :func:`abp_np.functional.conv_transpose2d_forward`).

    Layout: the column-shifted copies are one buffer ``xs`` (J, Cin, Hp, N, Qw), zero
    outside x. A shift along H is then a mere offset: rows [hs, hs + Qh) of every (j, c)
    plane form a strided 2-D matrix (J' Cin, Qh N Qw) that BLAS reads in place. Only the
    column shifts are copied (J = 3 copies of x for k 5, s 2).

    ``derived``: a dict in which the GEMMs' weight matrices A_t (:func:`phase_weights`) are
    kept while the weights stay fixed (the Langevin loop, see
    :meth:`abp_np.generator.Generator.fixed_weights`); without it they are made in every call.
    """
    N, Cin, H, W = x.shape
    _, Cout, kh, kw = weight.shape
    sh, sw = stride
    ph, pw = padding
    Hout, Wout = out_hw
    hph = phases(kh, sh, ph, Hout)
    wph = phases(kw, sw, pw, Wout)
    y = np.empty((N, Cout, Hout, Wout), dtype=x.dtype)
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
    xs = np.zeros((J, Cin, hi - lo, N, Qw), dtype=x.dtype)
    xt = x.transpose(1, 2, 0, 3)  # (Cin, H, N, W), a view
    for jj in range(J):
        j = jhi - jj
        a, e = max(0, -j), min(Qw, W - j)
        if e > a:
            xs[jj, :, -lo : H - lo, :, a:e] = xt[:, :, :, a + j : e + j]
    A = phase_weights(weight, stride, hph, wph, derived)
    P = Qh * N * Qw
    acc = np.empty((Cout, P), dtype=x.dtype)
    tmp = np.empty((Cout, P), dtype=x.dtype)
    for r, q0, Q, T in hph:
        for r2, q02, Q2, T2 in wph:
            js = slice(jhi - q02, jhi - q02 + T2)  # shifts j = q02, q02 - 1, ... (T2 of them)
            for t in range(T):
                # A_t (Cout, T2 Cin) @ B (T2 Cin, Qh N Qw), B a view of xs
                hs = q0 - t - lo
                B = xs[js, :, hs : hs + Qh].reshape(T2 * Cin, P)
                if t == 0:
                    np.matmul(A[r, r2, t], B, out=acc)
                else:
                    np.matmul(A[r, r2, t], B, out=tmp)
                    acc += tmp
            # (Cout, Qh, N, Qw) -> the phase's pixels of y, (N, Cout, Q, Q2)
            oh0, ow0 = sh * q0 + r - ph, sw * q02 + r2 - pw
            yv = y[:, :, oh0 : oh0 + sh * (Q - 1) + 1 : sh, ow0 : ow0 + sw * (Q2 - 1) + 1 : sw]
            yv[...] = acc.reshape(Cout, Qh, N, Qw)[:, :Q, :, :Q2].transpose(2, 0, 1, 3)
    if bias is not None:
        y += bias.reshape(1, Cout, 1, 1)
    return y


def phase_weights(
    weight: np.ndarray, stride: Pair, hph: list, wph: list, derived: dict | None = None
) -> dict[tuple[int, int, int], np.ndarray]:
    """The GEMM matrices of :func:`conv_transpose2d_phases`, one per phase and row shift:
    ``A[r, r2, t]`` (Cout, T2 Cin), row o, column (t2, c) = ``weight[c, o, r + sh t, r2 + sw t2]``.

    Kept in ``derived`` (when given) while ``weight`` is the same array object, as the Winograd
    route keeps its transformed weights.
    """
    key = ("phase weights", stride, tuple(hph), tuple(wph))
    if derived is not None and key in derived and derived[key][0] is weight:
        return derived[key][1]
    Cin, Cout = weight.shape[:2]
    sh, sw = stride
    wt = weight.transpose(1, 2, 3, 0)  # (Cout, kh, kw, Cin): a tap's weights as GEMM rows
    A = {
        (r, r2, t): np.ascontiguousarray(
            wt[:, r + sh * t, r2 : r2 + sw * (T2 - 1) + 1 : sw].reshape(Cout, T2 * Cin)
        )
        for r, _, _, T in hph
        for r2, _, _, T2 in wph
        for t in range(T)
    }
    if derived is not None:
        derived[key] = (weight, A)
    return A


def conv_transpose2d_columns(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    stride: Pair,
    padding: Pair,
    out_hw: Pair,
) -> np.ndarray:
    """The column form on the CPU, a block of examples at a time.

    The same two lines as in :func:`abp_np.functional.conv_transpose2d_forward`, per block of
    ``nb`` examples: ``cols = W^T x_n`` for each example n of the block (a GEMM
    (Cout kh kw, Cin) @ (Cin, H W) that reads x_n in place, where the whole-batch GEMM needs x
    transposed to (Cin, N H W), a copy), then ``col2im`` of the block into its rows of y. One
    buffer of :data:`BLOCK_BYTES` serves the blocks in turn: built whole, the columns would be
    kh kw / (sh sw) times the output and, with the copy of x, the largest temporary of a
    Langevin step.
    """
    N, Cin, H, W = x.shape
    _, Cout, kh, kw = weight.shape
    K = Cout * kh * kw
    wT = weight.reshape(Cin, K).T  # (Cout kh kw, Cin), a view
    nb = max(1, min(N, BLOCK_BYTES // (K * H * W * x.itemsize)))
    y = np.empty((N, Cout, *out_hw), dtype=x.dtype)
    buf = np.empty(nb * K * H * W, dtype=x.dtype)  # every block's columns, in turn
    for n0 in range(0, N, nb):
        n1 = min(N, n0 + nb)
        cols = buf[: (n1 - n0) * K * H * W].reshape(n1 - n0, K, H * W)
        # a GEMM per example, the examples split over threads (one BLAS thread each)
        stacked_matmul(wT, x[n0:n1].reshape(n1 - n0, Cin, H * W), out=cols)
        # (nb, Cout, kh, kw, H, W) seen as col2im's (Cout, kh, kw, nb, H, W)
        c6 = cols.reshape(n1 - n0, Cout, kh, kw, H, W).transpose(1, 2, 3, 0, 4, 5)

        def scatter(e: slice, c: slice, c6: np.ndarray = c6, yb: np.ndarray = y[n0:n1]) -> None:
            col2im(c6[c][:, :, :, e], yb[e, c].shape, stride, padding, yb[e, c])

        _split(n1 - n0, Cout, cols.size, scatter, whole=(c6, y[n0:n1], stride, padding))
    if bias is not None:
        y += bias.reshape(1, Cout, 1, 1)
    return y


def backward_blocks(
    N: int, H: int, W: int, K: int, itemsize: int, need_param_grads: bool
) -> tuple[int, int]:
    """(examples, rows) per block of :func:`conv_transpose2d_backward`'s columns.

    A block holds K = Cout kh kw columns of ``itemsize`` bytes for each of its positions: whole
    examples while they fit in :data:`BLOCK_BYTES` (:data:`LEARNING_BLOCK_BYTES` with weight
    gradients), else rows of one example; at least :data:`MIN_COLUMNS` positions where an
    example has them.
    """
    per_row = K * W * itemsize
    block = LEARNING_BLOCK_BYTES if need_param_grads else BLOCK_BYTES
    hb = max(1, min(H, max(block // per_row, -(-MIN_COLUMNS // W))))
    nb = max(1, min(N, block // (per_row * H))) if hb == H else 1
    return nb, hb


def conv_transpose2d_backward(
    dy: np.ndarray,
    x: np.ndarray,
    weight: np.ndarray,
    has_bias: bool,
    stride: Pair,
    padding: Pair,
    need_param_grads: bool = True,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """:func:`abp_np.functional.conv_transpose2d_backward` with its columns built in blocks.

    The reference gathers every column at once, ``dcols = im2col(dy)`` (Cout kh kw, N H W),
    then ``dx = W dcols`` and ``dW = x dcols^T``. Rows [h0, h1) of dx need only the columns of
    those rows, ``dcols[:, :, :, :, h0:h1]``, so here the same three lines run on a block of
    rows (or of examples) whose columns (:data:`BLOCK_BYTES`, or :data:`LEARNING_BLOCK_BYTES`
    with weight gradients) are still in the cache when the GEMMs read them, and dW sums the
    blocks' GEMMs. Built whole, ``dcols`` (kh kw / (sh sw) times the size of ``dy``) would be
    the largest temporary of a training step.

    Parameters
    ----------
    dy : array (N, Cout, Hout, Wout)
    x : array (N, Cin, H, W), the forward pass's input
    weight : array (Cin, Cout, kh, kw)
    has_bias : bool
    stride, padding : (int, int)
    need_param_grads : bool

    Returns
    -------
    dx : array (N, Cin, H, W)
    dW : array (Cin, Cout, kh, kw) or None
    db : array (Cout,) or None
    """
    N, Cin, H, W = x.shape
    _, Cout, kh, kw = weight.shape
    K = Cout * kh * kw
    w2d = weight.reshape(Cin, K)
    db = dy.sum(axis=(0, 2, 3)) if (need_param_grads and has_bias) else None
    # blocks of `nb` examples, or of `hb` rows of one example when one is too big.
    # Layers with many output channels (columns much larger than dx) order a block's
    # columns (rows, examples, W) in memory, so that im2col copies whole (hb, nb, W) runs
    # (see im2col_into); the others keep (examples, rows, W), which makes the copy of the
    # GEMM's result into dx the cheaper one.
    rows_first = K > 2 * Cin
    nb, hb = backward_blocks(N, H, W, K, dy.itemsize, need_param_grads)
    dx = np.empty((N, Cin, H, W), dtype=dy.dtype)
    dW2d = np.zeros((Cin, K), dtype=dy.dtype) if need_param_grads else None
    sh, ph = stride[0], padding[0]
    buf = np.empty(K * hb * nb * W, dtype=dy.dtype)  # every block's columns, in turn
    dx_buf = np.empty(Cin * hb * nb * W, dtype=dy.dtype) if rows_first else None
    for n0 in range(0, N, nb):
        n1 = min(N, n0 + nb)
        for h0 in range(0, H, hb):
            h1 = min(H, h0 + hb)
            P = (h1 - h0) * (n1 - n0) * W
            mem = (h1 - h0, n1 - n0) if rows_first else (n1 - n0, h1 - h0)
            dcols = buf[: K * P].reshape(Cout, kh, kw, *mem, W)
            # columns of examples n0 .. n1 - 1, rows h0 .. h1 - 1: im2col with the first row
            # moved down by h0, which is padding ph - sh h0 (negative padding skips rows of dy)
            cols = dcols.transpose(0, 1, 2, 4, 3, 5) if rows_first else dcols  # (.., nb, hb, W)
            pad = (ph - sh * h0, padding[1])

            def gather(e: slice, c: slice, cols=cols, dyb=dy[n0:n1], pad=pad) -> None:
                im2col_into(cols[c][:, :, :, e], dyb[e, c], stride, pad)

            _split(n1 - n0, Cout, cols.size, gather, whole=(dy[n0:n1], cols, stride, pad))
            # (Cout kh kw, P), P = hb nb W or nb hb W
            dcols2d = dcols.reshape(K, P)
            if rows_first:  # (Cin, hb, nb, W) -> its block of dx, (nb, Cin, hb, W)
                dx_block = dx_buf[: Cin * P].reshape(Cin, P)
                np.matmul(w2d, dcols2d, out=dx_block)
                dx_block = dx_block.reshape(Cin, *mem, W)
                dx[n0:n1, :, h0:h1] = dx_block.transpose(2, 0, 1, 3)
            else:  # one GEMM per example, (Cin, K) @ (K, hb W), written into dx in place
                dc = dcols.reshape(K, n1 - n0, (h1 - h0) * W).transpose(1, 0, 2)
                # a view of dx: a block of several examples holds all their rows (nb > 1 => hb = H)
                out = dx[n0:n1, :, h0:h1].reshape(n1 - n0, Cin, (h1 - h0) * W)
                stacked_matmul(w2d, dc, out=out)
            if need_param_grads:
                # (nb, Cin, hb, W) -> (Cin, P), columns in dcols' order
                order = (1, 2, 0, 3) if rows_first else (1, 0, 2, 3)
                x2d = x[n0:n1, :, h0:h1].transpose(order).reshape(Cin, P)
                dW2d += np.matmul(x2d, dcols2d.T)
    if not need_param_grads:
        return dx, None, None
    return dx, dW2d.reshape(Cin, Cout, kh, kw), db


def taps_worth_it(dy: np.ndarray, x: np.ndarray, weight: np.ndarray) -> bool:
    """Does :func:`conv_transpose2d_dx_taps` move less memory than the columns here?

    Its products ``T`` hold Cin kh kw Hout Wout values per example, the columns Cout kh kw H W:
    the taps win where T is at most a quarter of the columns (few input channels, e.g. the
    paper's texture network's 1 -> 512 first layer, whose columns are 25 times the size of dy
    and its T 1/20 of the columns), and keep their GEMM small (Cin kh kw at most 256 rows).
    """
    _, Cin, H, W = x.shape
    _, Cout, Ho, Wo = dy.shape
    kh, kw = weight.shape[2:]
    return Cin * kh * kw <= 256 and 4 * Cin * Ho * Wo <= Cout * H * W


def conv_transpose2d_dx_taps(
    dy: np.ndarray, weight: np.ndarray, in_hw: Pair, stride: Pair, padding: Pair
) -> np.ndarray:
    """dx of the transposed convolution, tap by tap: for layers with few input channels.

    The forward pass adds ``x[n, ci, i, j] W[ci, co, a, b]`` to output pixel
    ``(sh i + a - ph, sw j + b - pw)``, so its adjoint is

        dx[n, ci, i, j] = sum_{a, b} sum_co W[ci, co, a, b] dy[n, co, sh i + a - ph, sw j + b - pw]

    (terms outside dy left out). The sum over ``co`` of every tap at every output pixel is one
    GEMM, ``T[n] = Wt dy[n]`` with ``Wt`` (Cin kh kw, Cout) and ``dy[n]`` (Cout, Hout Wout); dx
    then adds, for each tap (a, b), the strided slice of ``T[n, :, a, b]`` that lands on the
    input grid. That reads dy once and never builds the columns ``im2col(dy)`` of
    :func:`conv_transpose2d_backward` (Cout kh kw H W values per example), which on the texture
    network's first layer are 25 times the size of dy. The same terms, summed in another order:
    the result is the reference's within float rounding (``tests/test_routes.py``).

    Parameters
    ----------
    dy : array (N, Cout, Hout, Wout)
    weight : array (Cin, Cout, kh, kw)
    in_hw : (int, int), the input's (H, W)
    stride, padding : (int, int)

    Returns
    -------
    dx : array (N, Cin, H, W)
    """
    N, Cout, Ho, Wo = dy.shape
    Cin, _, kh, kw = weight.shape
    (H, W), (sh, sw), (ph, pw) = in_hw, stride, padding
    wt = weight.transpose(0, 2, 3, 1).reshape(Cin * kh * kw, Cout)
    t = np.matmul(wt, dy.reshape(N, Cout, Ho * Wo)).reshape(N, Cin, kh, kw, Ho, Wo)
    dx = np.zeros((N, Cin, H, W), dtype=dy.dtype)
    for a in range(kh):
        i0, i1 = valid_range(H, sh, a - ph, Ho)  # the rows i with 0 <= sh i + a - ph < Hout
        for b in range(kw):
            j0, j1 = valid_range(W, sw, b - pw, Wo)
            if i0 < i1 and j0 < j1:
                rows = slice(sh * i0 + a - ph, sh * (i1 - 1) + a - ph + 1, sh)
                cols = slice(sw * j0 + b - pw, sw * (j1 - 1) + b - pw + 1, sw)
                dx[:, :, i0:i1, j0:j1] += t[:, :, a, b, rows, cols]
    return dx
