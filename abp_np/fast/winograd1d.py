"""Winograd's minimal filtering for the 1-D transposed convolutions (sound): fewer multiplications.

This is a speed path, the 1-D sibling of :mod:`abp_np.fast.winograd`. :mod:`abp_np.functional`
explains the transposed convolution; this module computes the same function with fewer
multiplications for the 1-D layers whose kernel spans at most three strides (``s < k <= 3 s``),
among them the paper's sound layers (kernel 25, stride 10, padding 8, output padding 1). A
1-D layer runs as a 2-D one of height 1: x (N, Cin, 1, L), weight (Cin, Cout, 1, k).

The idea in three steps
-----------------------
1. **One stride-1 correlation.** Output sample o lies at u = o + p on the un-cropped grid;
   write u = s q + r, phase r = u mod s. Phase r is served by the taps i = r + s t, from input
   sample q - t (see :mod:`abp_np.fast.phases`); with ``k <= 3 s`` every phase reads at most
   x[q - 2], x[q - 1], x[q]. Stacking the s phases as ``R = s Cout`` output channels gives ONE
   3-tap correlation::

       y_s[(o, r), q] = sum_c sum_(a < 3) K[a, (o, r), c] x[c, q - 2 + a]

   with ``K[a, (o, r), c] = W[c, o, r + s (2 - a)]`` (zero where that tap lies beyond the
   kernel). The rows are ordered (o, r), so for each output channel o the flattened (q, r)
   index IS u = s q + r, and ``y[o, :] = y_s[o].ravel()[p : p + Lout]``: the crop is a slice.

2. **Winograd F(m, 3)** (Lavin & Gray, 2016) computes m outputs q of such a correlation from a
   tile d of m + 2 inputs as ``A^T [(G g) * (B^T d)]``. Summed over the input channel, the
   elementwise product becomes one GEMM per tile position xi::

       M[xi] = U[xi] @ V[xi]        (R, Cin) @ (Cin, tiles),   U = G K,  V = B^T d

   F(4, 3) does 6 multiply-adds per 4 outputs q where the direct sum does 12, and the layer's
   own count (k taps per s outputs: 2.5 per q for the sound layers) is 10: 1.7 x fewer.

3. **The backward pass is the adjoint of each step, in reverse order**: un-crop dy,
   ``dM = A dY``, ``dV = U^T dM`` (the input gradient's GEMMs) and ``dU = dM V^T`` (the weight
   gradient's, learning only), ``dd = B dV``, then add each tile's gradient back where the tile
   was read (tiles overlap by two samples). The inferential and learning passes share every
   step up to dM.

Accuracy: F(2, 3)'s constants are 0, +-1 and 1/2, F(4, 3)'s reach 4 and 1/24; in one dimension
(the 2-D route squares them) both stay close to the direct sums in float32 (the tests bound
it, float64 to rounding).

Data movement: the tile gather, the overlap-add, the phase shuffle and the crop, each with
the transform next to it, run as one pass of compiled C where a compiler is at hand
(``kernels/winograd1d_cpu.c`` through :mod:`abp_np.fast.cpu`, channels split over the
threads); otherwise, and as the reference the tests hold the C code to, NumPy strided copies
and small GEMMs by B^T and A^T. The GEMMs by U are BLAS's. The batch runs in blocks of
examples so that M stays near :data:`BLOCK_BYTES`.

When: under the ``winograd`` setting of :func:`abp_np.backend.using`, as the 2-D route:
``"auto"`` where it measured faster (:func:`worth_it`), ``"on"`` wherever the geometry fits,
``"off"`` never.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import numpy as np

from ..backend import Array, switches
from . import cpu as _cpu
from .winograd import transforms_1d

__all__ = ["Plan1d", "Winograd1dCache", "backward", "choose", "forward", "plan", "worth_it"]

#: Target size of the largest per-block temporary (M); the batch is cut into blocks of examples.
BLOCK_BYTES = 8 * 2**20


@functools.lru_cache(maxsize=8)
def transforms(m: int, dtype: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """B^T (m + 2, m + 2), G (m + 2, 3) and A^T (m, m + 2) of F(m, 3), read-only
    (:func:`abp_np.fast.winograd.transforms_1d`)."""
    return transforms_1d(m, dtype)


class Plan1d(NamedTuple):
    """How one 1-D layer maps onto a 3-tap stride-1 correlation with s Cout outputs."""

    m: int  # outputs per tile of F(m, 3)
    s: int  # stride
    p: int  # padding: y[o] sits at u = o + p of the un-cropped grid u = s q + r
    nt: int  # tiles per example: q = 0 .. m nt - 1 covers every output
    Lout: int


def plan(x_shape, weight_shape, stride, padding, out_hw) -> Plan1d | None:
    """A :class:`Plan1d` when this is a 1-D layer (height 1) with ``s < k <= 3 s``, else None."""
    return _plan(tuple(x_shape), tuple(weight_shape), tuple(stride), tuple(padding), tuple(out_hw))


@functools.lru_cache(maxsize=256)
def _plan(x_shape, weight_shape, stride, padding, out_hw) -> Plan1d | None:
    if x_shape[2] != 1 or weight_shape[2] != 1 or out_hw[0] != 1 or padding[0] != 0:
        return None
    k, s, p, Lout = weight_shape[3], stride[1], padding[1], out_hw[1]
    if not s < k <= 3 * s or p < 0:
        return None
    Q = (Lout - 1 + p) // s + 1  # q = 0 .. Q - 1 hold every output
    m = 4  # F(4, 3): measured faster than F(2, 3) on the sound layer (BENCHMARKS.md)
    return Plan1d(m, s, p, -(-Q // m), Lout)


def worth_it(x_shape, weight_shape) -> bool:
    """The "auto" rule: a layer with many channels on both sides (``Cin >= 16``,
    ``Cout >= 8``) and at least 64 input samples per example; below that the transforms and
    copies cost about what the GEMMs save."""
    _, Cin, _, L = x_shape
    return Cin >= 16 and weight_shape[1] >= 8 and L >= 64


def choose(x, weight, stride, padding, out_hw) -> Plan1d | None:
    """The plan for this call, or None for the other routes."""
    mode = switches().winograd
    if mode == "off" or x.dtype not in (np.float32, np.float64) or x.size == 0:
        return None
    if mode == "auto" and not worth_it(x.shape, weight.shape):
        return None
    return plan(x.shape, weight.shape, stride, padding, out_hw)


class Winograd1dCache(NamedTuple):
    """What :func:`backward` needs from :func:`forward`; its type marks this route."""

    x: Array  # (N, Cin, 1, L)
    U: Array  # (m + 2, s Cout, Cin), G K
    plan: Plan1d
    weight_shape: tuple[int, int, int, int]
    has_bias: bool

    @property
    def route(self) -> str:
        """The route that made this cache: ``"winograd1d"``."""
        return "winograd1d"


def _combined_kernel(weight, s: int) -> np.ndarray:
    """K (3, s Cout, Cin): ``K[a, (o, r), c] = W[c, o, 0, r + s (2 - a)]``, zero past the kernel."""
    Cin, Cout, _, k = weight.shape
    K = np.zeros((3, Cout, s, Cin), dtype=weight.dtype)
    wt = weight[:, :, 0, :].transpose(1, 2, 0)  # (Cout, k, Cin)
    for a in range(3):
        i0 = s * (2 - a)  # taps i0 .. i0 + s - 1 are phases r = 0 .. s - 1
        n = min(s, k - i0)
        if n > 0:
            K[a, :, :n] = wt[:, i0 : i0 + n]
    return K.reshape(3, Cout * s, Cin)


def _weight_grad(dK, s: int, weight_shape) -> np.ndarray:
    """The adjoint of :func:`_combined_kernel`: dW (Cin, Cout, 1, k) from dK (3, s Cout, Cin)."""
    Cin, Cout, _, k = weight_shape
    dK = dK.reshape(3, Cout, s, Cin)
    dW = np.zeros((Cin, Cout, 1, k), dtype=dK.dtype)
    for a in range(3):
        i0 = s * (2 - a)
        n = min(s, k - i0)
        if n > 0:
            dW[:, :, 0, i0 : i0 + n] = dK[a, :, :n].transpose(2, 0, 1)
    return dW


def transformed_weights(weight, p: Plan1d, derived=None):
    """U = G K (m + 2, s Cout, Cin); kept in ``derived`` while ``weight`` is the same array
    (the Langevin loop, :meth:`abp_np.generator.Generator.fixed_weights`)."""
    key = f"winograd1d U, m={p.m}, s={p.s}"
    if derived is not None and key in derived and derived[key][0] is weight:
        return derived[key][1]
    G = transforms(p.m, weight.dtype)[1]
    K = _combined_kernel(weight, p.s)
    U = (G @ K.reshape(3, -1)).reshape(p.m + 2, *K.shape[1:])
    if derived is not None:
        derived[key] = (weight, U)
    return U


# --- the data movement ------------------------------------------------------------------------


def _input_transform(x, p: Plan1d):
    """V (m + 2, Cin, n nt) = B^T d for every tile d of x (n, Cin, 1, L):
    ``d[a, c, (b, t)] = x[b, c, 0, m t + a - 2]``, zero outside x."""
    n, Cin, _, L = x.shape
    m, nt = p.m, p.nt
    BT = transforms(m, x.dtype)[0]
    if _cpu.enabled():
        V = np.empty((m + 2, Cin, n * nt), x.dtype)
        _cpu.winograd1d_input(np.ascontiguousarray(x), V, BT, m, nt)
        return V
    width = m * nt + 2
    xp = np.empty((n, Cin, width), x.dtype)
    w = min(L, width - 2)
    xp[:, :, :2] = 0
    xp[:, :, 2 : 2 + w] = x[:, :, 0, :w]
    xp[:, :, 2 + w :] = 0
    sn, sc, sl = xp.strides
    d = np.lib.stride_tricks.as_strided(xp, (m + 2, Cin, n, nt), (sl, sc, sn, m * sl))
    tiles = np.empty((m + 2, Cin, n, nt), x.dtype)
    tiles[...] = d
    return np.matmul(BT, tiles.reshape(m + 2, -1)).reshape(m + 2, Cin, n * nt)


def _input_transform_adjoint(dV, dx, p: Plan1d) -> None:
    """dx (n, Cin, 1, L) <- the adjoint of :func:`_input_transform`: each tile's B dV added
    where the tile was read."""
    n, Cin, _, L = dx.shape
    m, nt = p.m, p.nt
    BT = transforms(m, dV.dtype)[0]
    if _cpu.enabled() and dx.flags.c_contiguous:
        _cpu.winograd1d_input_adjoint(dV, dx, BT, m, nt)
        return
    dd = np.empty((m + 2, Cin, n, nt), dV.dtype)
    np.matmul(BT.T, dV.reshape(m + 2, -1), out=dd.reshape(m + 2, -1))
    # dxp[b, c, m t + a] += dd[a, c, b, t]: positions a < m of every tile, then the last two
    # positions of each tile onto the first two of the next one
    dxp = np.empty((n, Cin, nt + 1, m), dV.dtype)
    dxp[:, :, :nt] = dd[:m].transpose(2, 1, 3, 0)
    dxp[:, :, nt] = 0
    dxp[:, :, 1:, :2] += dd[m:].transpose(2, 1, 3, 0)
    w = min(L, m * nt)  # dx[.., j] = dxp[.., j + 2]; samples past the tiles reach no output
    dx[:, :, 0, :w] = dxp.reshape(n, Cin, -1)[:, :, 2 : 2 + w]
    dx[:, :, 0, w:] = 0


def _output_transform(M, y, p: Plan1d, bias=None) -> None:
    """y (n, Cout, 1, Lout) <- A^T M of every tile, phases shuffled into place and cropped;
    M is (m + 2, n nt, s Cout): tiles as rows, so that a tile's s phases of a channel are
    s contiguous values in every step."""
    n, Cout = y.shape[:2]
    m, s, nt = p.m, p.s, p.nt
    AT = transforms(m, M.dtype)[2]
    if _cpu.enabled() and y.flags.c_contiguous:
        b = None if bias is None else np.ascontiguousarray(bias)
        _cpu.winograd1d_output(M, y, AT, s, nt, p.p, bias=b)
        return
    Y = np.empty((m, n, nt, Cout, s), M.dtype)
    np.matmul(AT, M.reshape(m + 2, -1), out=Y.reshape(m, -1))
    full = np.empty((n, Cout, nt, m, s), M.dtype)
    full[...] = Y.transpose(1, 3, 2, 0, 4)  # (b, o, t, i, r): the flat (t, i, r) index is u
    y[:, :, 0, :] = full.reshape(n, Cout, -1)[:, :, p.p : p.p + p.Lout]
    if bias is not None:
        y += bias.reshape(1, Cout, 1, 1)


def _output_transform_adjoint(dy, p: Plan1d):
    """dM (m + 2, n nt, s Cout) = A dY, the adjoint of :func:`_output_transform` (bias aside)."""
    n, Cout = dy.shape[:2]
    m, s, nt = p.m, p.s, p.nt
    AT = transforms(m, dy.dtype)[2]
    if _cpu.enabled():
        dM = np.empty((m + 2, n * nt, Cout * s), dy.dtype)
        _cpu.winograd1d_output_adjoint(np.ascontiguousarray(dy), dM, AT, s, nt, p.p)
        return dM
    full = np.empty((n, Cout, nt * m * s), dy.dtype)
    full[:, :, : p.p] = 0
    full[:, :, p.p : p.p + p.Lout] = dy[:, :, 0, :]
    full[:, :, p.p + p.Lout :] = 0
    dY = np.empty((m, n, nt, Cout, s), dy.dtype)
    dY[...] = full.reshape(n, Cout, nt, m, s).transpose(3, 0, 2, 1, 4)
    return np.matmul(AT.T, dY.reshape(m, -1)).reshape(m + 2, n * nt, Cout * s)


# --- forward and backward ---------------------------------------------------------------------


def _mm(a, b, out=None):
    """The a GEMMs of a step, ``a[k] @ b[k]``, by NumPy's matmul: each on all of OpenBLAS'
    threads. Unlike the 2-D route's small GEMMs these are large (the sound layer's: (1280 x 256)
    @ (256 x 151)); cut into whole GEMMs on one BLAS thread each
    (:func:`abp_np.fast.threads.stacked_matmul`) they measured 1.4 x slower."""
    return np.matmul(a, b, out=out)


def _blocks(N: int, p: Plan1d, R: int, itemsize: int):
    per_example = (p.m + 2) * R * p.nt * itemsize
    block = max(1, min(N, BLOCK_BYTES // per_example))
    return [(n0, min(N, n0 + block)) for n0 in range(0, N, block)]


def forward(
    x: Array, weight: Array, p: Plan1d, bias: Array | None = None, derived: dict | None = None
) -> tuple[Array, Winograd1dCache]:
    """y (N, Cout, 1, Lout), the transposed convolution of x (N, Cin, 1, L), and the cache."""
    N, Cout = x.shape[0], weight.shape[1]
    U = transformed_weights(weight, p, derived)  # (m + 2, s Cout, Cin)
    y = np.empty((N, Cout, 1, p.Lout), dtype=x.dtype)
    for n0, n1 in _blocks(N, p, U.shape[1], x.dtype.itemsize):
        V = _input_transform(x[n0:n1], p)  # B^T d: (m + 2, Cin, P)
        M = np.empty((p.m + 2, V.shape[2], U.shape[1]), x.dtype)
        _mm(V.transpose(0, 2, 1), U.transpose(0, 2, 1), out=M)  # (U[xi] @ V[xi])^T
        _output_transform(M, y[n0:n1], p, bias)  # A^T M, shuffled and cropped
    return y, Winograd1dCache(x, U, p, tuple(weight.shape), bias is not None)


def backward(
    dy: Array, cache: Winograd1dCache, need_param_grads: bool = True
) -> tuple[Array, Array | None, Array | None]:
    """dx and (when asked) dW and db of :func:`forward`: the adjoint of each step, in reverse."""
    x, U, p, weight_shape, has_bias = cache
    UT = U.transpose(0, 2, 1)  # (m + 2, Cin, s Cout), a view
    dx = np.empty(x.shape, dtype=dy.dtype)
    dU = np.zeros_like(U) if need_param_grads else None
    for n0, n1 in _blocks(x.shape[0], p, U.shape[1], dy.dtype.itemsize):
        dMt = _output_transform_adjoint(dy[n0:n1], p)  # (A dY)^T: (m + 2, P, s Cout)
        dV = np.empty((*UT.shape[:2], dMt.shape[1]), dy.dtype)
        _mm(UT, dMt.transpose(0, 2, 1), out=dV)  # (m + 2, Cin, P): the input gradient's GEMMs
        if dU is not None:  # the weight gradient's GEMMs: dU += dM V^T
            V = _input_transform(x[n0:n1], p)
            dU += _mm(dMt.transpose(0, 2, 1), V.transpose(0, 2, 1))
        _input_transform_adjoint(dV, dx[n0:n1], p)  # B dV, added back where read
    if dU is None:
        return dx, None, None
    G = transforms(p.m, dy.dtype)[1]
    dK = G.T @ dU.reshape(p.m + 2, -1)  # G^T dU: (3, s Cout Cin)
    db = dy.sum(axis=(0, 2, 3)) if has_bias else None
    return dx, _weight_grad(dK, p.s, weight_shape), db
