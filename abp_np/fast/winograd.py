"""Winograd's minimal filtering for the CPU transposed convolutions: fewer multiplications.

This is a speed path. :mod:`abp_np.functional` explains the transposed convolution; this module
computes the same function with fewer multiplications, for the layers of the paper's networks
(kernel 5, stride 2, padding 2, output = 2 x input) on the CPU.

The idea in three steps
-----------------------
1. **One stride-1 convolution.** Group the outputs of a stride-2 transposed convolution by
   phase, (oh mod 2, ow mod 2). Each phase is an ordinary stride-1 correlation of x with some of
   the taps (see :mod:`abp_np.fast.phases`); for kernel 5 they
   read a 3 x 3 window of x, ending at the output's position. Stacking the four phases as
   channels gives ONE 3 x 3 correlation with ``R = 4 Cout`` outputs::

       y4[(r, r', o), u, v] = sum_c sum_(a,b < 3) x_pad[c, u + a, v + b] K[a, b, (r, r', o), c]

   with ``K[a, b, r, r', o, c] = W[c, o, r + 2 (2 - a), r' + 2 (2 - b)]`` (zero where that tap
   lies outside the 5 x 5 kernel), ``x_pad`` = x with one row / column of zeros on each side,
   and ``y[n, o, 2 u + r, 2 v + r'] = y4[(r, r', o), u, v]`` (a pixel shuffle).

2. **Winograd F(m x m, 3 x 3)** (Lavin & Gray, 2016) computes an m x m block of such a
   correlation from an (m + 2) x (m + 2) tile ``d`` of the input as::

       Y = A^T [ (G K G^T)  (.)  (B^T d B) ] A

   ``(.)`` multiplies elementwise over the tile's ``(m + 2)^2`` positions, and sums over the
   input channel. Summed over channels that product is, for each position (xi, nu), a GEMM::

       M[xi, nu] = U[xi, nu] @ V[xi, nu]        (R, Cin) @ (Cin, tiles)

   with ``U = G K G^T`` (the weights, transformed: see :func:`transformed_weights`) and
   ``V = B^T d B`` (the input tiles). F(4 x 4, 3 x 3) does 36 multiply-adds per 16 outputs
   where the direct sum does 144 (and the phase form's own count, 25 of the 36 taps being
   non-zero, is 100): 2.8 x fewer.
   The transforms B, G and A hold only small constants: additions, done here as small GEMMs.

3. **The backward pass is the adjoint of each step, in reverse order.** The forward is a chain
   of linear maps of x (gather tiles, transform, multiply by U, transform back, shuffle), so its
   transpose is the chain of the transposes: un-shuffle dy, ``dM = A dY A^T``,
   ``dV = U^T dM`` (the input gradient's GEMMs) and ``dU = dM V^T`` (the weight gradient's,
   learning only), ``dd = B dV B^T``, then add each tile's gradient back where the tile was
   read (tiles overlap by two rows and columns). So dx and dW are the exact gradients of the
   function the forward computed, and the inferential and learning passes share every step up
   to dM; ``need_param_grads`` only adds the dU GEMMs.

Accuracy: F(4 x 4, 3 x 3) rounds differently from the direct sum (its constants reach 8 and
1/24): in float32 its outputs lie further from a float64 reference than the direct sums' do
(figures: ``BENCHMARKS.md``, "Figures behind the routes' rules"; the tests bound it); in
float64 the difference is at rounding level (tested). F(2 x 2, 3 x 3), whose constants are 0,
+-1 and 1/2, is about as accurate as the direct sum; it is used when the size is not a multiple
of 4.

Data movement: gathering the overlapping tiles, adding them back (overlap-add), the pixel
shuffle and its inverse are strided rearrangements that NumPy does slowly (tiny inner loops),
and the transforms B, A are small GEMMs that read and write every tile once more. Where a C
compiler is at hand, each rearrangement and the transform next to it run as one pass of compiled
C (``kernels/winograd_cpu.c`` through :mod:`abp_np.fast.cpu`), with the transforms' explicit
formulas; otherwise, the NumPy code below. The two compute the same sums in a different order
(tested to agree to rounding). The products by U are BLAS GEMMs in either case.

When: by default (the ``winograd="auto"`` setting of :func:`abp_np.backend.using`), only where
it was measured to pay: the compiled kernels run and the layer has many pixels per input
channel (:func:`worth_it`). With the NumPy data movement the rearrangements cost about as much
as the multiplications saved.

Transformed weights: U depends on W alone. A forward pass computes it, and its backward reuses
it. The inferential back-propagation runs many passes with W fixed (the Langevin loop of
equation (5)); there, inside :meth:`Generator.fixed_weights
<abp_np.generator.Generator.fixed_weights>`, U is computed once for all of them, and layers
whose U costs too much to compute every pass (a 4 x 4 input with many channels) take this path
as well. The learning step's pair of passes runs in such a block too, where such a layer takes
this path only if its U is small (:func:`worth_it`).

Memory: the batch is processed in blocks of examples so that the largest temporary (M) stays
near :data:`BLOCK_BYTES` or the size of U, whichever is larger, and a block's tiles are still in
the cache when its GEMMs run. Every block reads all of U, so no block is smaller than U. A batch
whose M is at most 1.5 x the target is kept whole.

Threads: each block's examples are cut into ranges, one per thread, each range through all
three steps (one hand-off a pass). Where U is at least the block's M, that would read U once
per thread; there each step is split by itself instead, the GEMMs by position
(:func:`abp_np.fast.threads.stacked_matmul`) and the transforms by channel.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, NamedTuple

import numpy as np

from ..backend import Array, switches
from ..backend import using as backend_using
from . import cpu as _cpu
from .phases import phases
from .threads import parallel_gemms

__all__ = [
    "Plan",
    "WinogradCache",
    "backward",
    "choose",
    "forget",
    "forward",
    "kept",
    "mode",
    "plan",
    "transformed_weights",
    "transforms",
    "transforms_1d",
    "using",
    "worth_it",
]

#: Target size of the largest per-block temporary; the batch is cut into blocks of examples.
BLOCK_BYTES = 8 * 2**20

# F(2, 3) and F(4, 3) of Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks",
# CVPR 2016: rows of B^T, G, A^T. For a length-(m + 2) input d and a 3-tap filter g, the m outputs
# of the correlation  y[i] = sum_a d[i + a] g[a]  are  A^T [(G g) * (B^T d)].
_BT = {
    2: [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
    4: [
        [4, 0, -5, 0, 1, 0],
        [0, -4, -4, 1, 1, 0],
        [0, 4, -4, -1, 1, 0],
        [0, -2, -1, 2, 1, 0],
        [0, 2, -1, -2, 1, 0],
        [0, 4, 0, -5, 0, 1],
    ],
}
_G = {
    2: [[1, 0, 0], [1 / 2, 1 / 2, 1 / 2], [1 / 2, -1 / 2, 1 / 2], [0, 0, 1]],
    4: [
        [1 / 4, 0, 0],
        [-1 / 6, -1 / 6, -1 / 6],
        [-1 / 6, 1 / 6, -1 / 6],
        [1 / 24, 1 / 12, 1 / 6],
        [1 / 24, -1 / 12, 1 / 6],
        [0, 0, 1],
    ],
}
_AT = {
    2: [[1, 1, 1, 0], [0, 1, -1, -1]],
    4: [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
}


def transforms(m: int, dtype: Any = np.float64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The 2-D transforms of F(m x m, 3 x 3), as matrices acting on flattened tiles.

    With ``a = m + 2``: ``BB = B^T (x) B^T`` (a^2, a^2) maps a tile d (a, a), flattened, to
    ``B^T d B``; ``GG = G (x) G`` (a^2, 9) maps a 3 x 3 filter to ``G g G^T``; ``AA = A^T (x) A^T``
    (m^2, a^2) maps the product back to the m x m outputs (``(x)``: Kronecker product).
    Built once per (m, dtype) and returned read-only.
    """
    return _transforms(int(m), np.dtype(dtype))


@functools.lru_cache(maxsize=8)
def _transforms(m: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    out = tuple(np.kron(t, t).astype(dtype) for t in _transforms_1d(m, np.dtype(np.float64)))
    for a in out:
        a.flags.writeable = False
    return out  # type: ignore[return-value]


def transforms_1d(m: int, dtype: Any = np.float64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The 1-D transforms of F(m, 3): B^T (m + 2, m + 2), G (m + 2, 3) and A^T (m, m + 2).

    The rows of Lavin & Gray's tables above, the factors of :func:`transforms`' Kronecker
    products; the 1-D route (:mod:`abp_np.fast.winograd1d`) and the weights' C kernel use them
    as they are. Built once per (m, dtype) and returned read-only.
    """
    return _transforms_1d(int(m), np.dtype(dtype))


@functools.lru_cache(maxsize=8)
def _transforms_1d(m: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    out = tuple(np.array(t[m], dtype=np.float64).astype(dtype) for t in (_BT, _G, _AT))
    for a in out:
        a.flags.writeable = False
    return out  # type: ignore[return-value]


class Plan(NamedTuple):
    """How one layer's transposed convolution maps onto a 3 x 3 stride-1 correlation."""

    m: int  # output block size of F(m x m, 3 x 3)
    s: int  # stride (2)
    q0: tuple[int, int]  # first output position q of every phase, rows and columns
    Q: tuple[int, int]  # outputs per phase, rows and columns (= Hout / s, Wout / s)


def plan(x_shape, weight_shape, stride, padding, out_hw) -> Plan | None:
    """A :class:`Plan` when this geometry is the paper's kind of layer, else None.

    Needed: stride 2 on both axes; on each axis, every one of the s output phases
    starts at the same position q0 with ``s q0 = padding``, holds ``Q = out / s`` outputs and
    at most 3 taps (so the phases together read a 3-wide window); Q a multiple of 2.
    Kernel 5, stride 2, padding 2, output padding 1 (Hout = 2 H) qualifies.
    """
    return _plan(tuple(x_shape), tuple(weight_shape), tuple(stride), tuple(padding), tuple(out_hw))


@functools.lru_cache(maxsize=256)
def _plan(x_shape, weight_shape, stride, padding, out_hw) -> Plan | None:
    sh, sw = stride
    if sh != 2 or sw != 2:  # the pixel shuffle is written for stride 2
        return None
    q0s, Qs = [], []
    for k, p, size in zip(weight_shape[2:], padding, out_hw, strict=True):
        ph = phases(k, sh, p, size)
        if len(ph) != sh or len({(q0, Q) for _, q0, Q, _ in ph}) != 1:
            return None
        _, q0, Q, _ = ph[0]
        if sh * q0 != p or sh * Q != size or max(T for *_, T in ph) > 3 or Q % 2:
            return None
        q0s.append(q0)
        Qs.append(Q)
    # F(4x4) wherever it fits: 2.25 multiplications per output where F(2x2) needs 4. On a 4 x 4
    # input (faces64's 512 -> 256 layer) one tile covers it, and its U holds 36 / 16 as many
    # values as F(2x2)'s, and still its GEMMs were faster (BENCHMARKS.md, "Figures behind the
    # routes' rules").
    m = 4 if Qs[0] % 4 == 0 and Qs[1] % 4 == 0 else 2
    return Plan(m, sh, (q0s[0], q0s[1]), (Qs[0], Qs[1]))


class WinogradCache(NamedTuple):
    """What :func:`backward` needs from :func:`forward`; its type marks the Winograd route.

    :func:`abp_np.functional.conv_transpose2d_backward` hands a cache of this type back here.
    """

    x: Array  # (N, Cin, H, W), the input
    U: Array  # (a^2, 4 Cout, Cin), the transformed weights G K G^T
    plan: Plan
    weight_shape: tuple[int, int, int, int]  # (Cin, Cout, kh, kw)
    has_bias: bool

    @property
    def route(self) -> str:
        """The route that made this cache: ``"winograd"``."""
        return "winograd"


def _combined_kernel(weight, s: int) -> np.ndarray:
    """K (9, s s Cout Cin): ``K[(a, b), (r, r', o, c)] = W[c, o, r + s (2 - a), r' + s (2 - b)]``."""
    Cin, Cout, kh, kw = weight.shape
    wt = np.ascontiguousarray(weight.transpose(2, 3, 1, 0))  # (kh, kw, Cout, Cin)
    K = np.zeros((3, 3, s, s, Cout, Cin), dtype=weight.dtype)
    for a in range(3):
        for r in range(s):
            i = r + s * (2 - a)
            if i >= kh:
                continue
            for b in range(3):
                for r2 in range(s):
                    j = r2 + s * (2 - b)
                    if j < kw:
                        K[a, b, r, r2] = wt[i, j]
    return K.reshape(9, -1)


def _weight_grad(dK, s: int, weight_shape) -> np.ndarray:
    """The adjoint of :func:`_combined_kernel`: dW from dK (9, s s Cout Cin); each tap once."""
    Cin, Cout, kh, kw = weight_shape
    dK = dK.reshape(3, 3, s, s, Cout, Cin)
    dWt = np.zeros((kh, kw, Cout, Cin), dtype=dK.dtype)
    for a in range(3):
        for r in range(s):
            i = r + s * (2 - a)
            for b in range(3):
                for r2 in range(s):
                    j = r2 + s * (2 - b)
                    if i < kh and j < kw:
                        dWt[i, j] = dK[a, b, r, r2]
    return dWt.transpose(3, 2, 0, 1).copy()  # (Cin, Cout, kh, kw)


# --- when to use it ------------------------------------------------------------------------------


def mode() -> str:
    """``"auto"``, ``"on"`` or ``"off"``: the ``winograd`` setting of :func:`abp_np.backend.using`."""
    return switches().winograd


def using(new_mode: str) -> contextlib.AbstractContextManager[Any]:
    """``abp_np.backend.using(winograd=new_mode)``: when the CPU transposed convolutions take
    this path, inside a ``with`` block.

    ``"auto"`` (the default): for the layers where it pays (see :func:`worth_it`), when the
    compiled data-movement kernels run (the ``c`` setting). ``"on"``: for every layer whose
    geometry fits, with the NumPy data movement when the kernels do not run (slower; the tests
    use it). ``"off"``: never.
    """
    return backend_using(winograd=new_mode)


def worth_it(
    x_shape, weight_shape, reuse: bool = False, learning: bool = False, itemsize: int = 4
) -> bool:
    """The "auto" rule: inputs of at least 8 x 8 pixels, and transformed weights U at most 8 x
    the size of the input (``36 * 4 Cout * Cin <= 8 N Cin H W``, i.e. ``N H W >= 18 Cout``).

    The transforms cost time in proportion to the activations and the transformed weights, the
    saving is in proportion to the GEMMs. Measured per layer (``BENCHMARKS.md``, "Figures behind
    the routes' rules"): inputs of 4 x 4 gained nothing when U was computed for each pass; layers
    whose U dwarfs their input (the first layers of the texture network at batch 1) lost time or
    raised the peak memory above that of the direct path; the layers of 8 x 8 and more with a
    batch of images gained.

    With ``reuse`` (the weights stay fixed over many passes, which share one U: the Langevin
    loop, :meth:`abp_np.generator.Generator.fixed_weights`) U's cost is paid once, and the rule
    widens to inputs of at least 4 x 4 with ``N H W >= 4 Cout`` (a kept U of F(4x4), 144 Cout
    Cin values, at most 36 x the input). That adds faces64's 512 -> 256 layer at 4 x 4 and
    texture224's 256 -> 128 at 28 x 28; taking every layer that fits as well (texture224's
    512 -> 256 at 14 x 14, U 84 x its input) raised texture224's peak memory and gained no
    time.

    With ``learning`` as well (the learning step's block: one forward pass and the backward
    pass with weight gradients, :meth:`abp_np.abp.ABP.learn`) one U serves the forward pass,
    the input gradient and the weight gradient, whose pass also forms dU, as large as U. There
    the wider rule takes only the layers whose U (144 Cout Cin values of ``itemsize`` bytes)
    is at most :data:`BLOCK_BYTES`, the size this module gives its temporaries. Measured
    (``BENCHMARKS.md``, "The learning step inside fixed_weights"): small32's 128 -> 64 layer at
    4 x 4 (U 4.7 MB) cut the learning step from 23 to 18 ms; faces64's 512 -> 256 (U 75 MB)
    gained nothing and raised faces64's peak memory from 239 to 396 MiB.
    """
    N, Cin, H, W = x_shape
    Cout = weight_shape[1]
    if Cout < 8:
        return False
    if reuse and H * W >= 16 and N * H * W >= 4 * Cout:
        if not learning or 144 * Cout * Cin * itemsize <= BLOCK_BYTES:
            return True
    return H * W >= 64 and N * H * W >= 18 * Cout


def choose(
    x, weight, stride, padding, out_hw, reuse: bool = False, learning: bool = False
) -> Plan | None:
    """The plan to use for this call, or None for the ordinary path.

    ``reuse``: the weights stay fixed over many calls, which reuse the transformed weights;
    ``learning``: those calls are one learning step's pair of passes (:func:`worth_it`).
    """
    mode = switches().winograd
    if mode == "off" or x.dtype not in (np.float32, np.float64) or x.size == 0:
        return None
    if mode == "auto" and not (
        _cpu.enabled() and worth_it(x.shape, weight.shape, reuse, learning, x.dtype.itemsize)
    ):
        return None
    return plan(x.shape, weight.shape, stride, padding, out_hw)


# --- the transforms and rearrangements: compiled kernels, or NumPy ------------------------------
#
# Four steps move data between the images and the transformed tiles: V = B^T d B of the input
# tiles, its adjoint, Y = A^T M A with the pixel shuffle into y, and its adjoint. Each is one pass
# of kernels/winograd_cpu.c when the compiled library is at hand; otherwise (and as the reference
# the tests hold the C code to) a NumPy rearrangement and a small GEMM by the Kronecker-product
# transforms of :func:`transforms`.


class _Tiling(NamedTuple):
    m: int
    nt: tuple[int, int]  # tiles per example, rows and columns
    row0: int  # x row read by the first tile's first row (q0 - 2)
    col0: int
    block: int  # examples per block
    by_positions: bool  # threads split each step (the GEMMs by position), not the examples


def _tiling(p: Plan, x_shape, Cout: int, itemsize: int) -> _Tiling:
    N, Cin = x_shape[:2]
    nt = (p.Q[0] // p.m, p.Q[1] // p.m)
    a2 = (p.m + 2) ** 2
    # M (a^2, 4 Cout, P) is the largest temporary; cut the batch so that it stays near a target
    per_example = a2 * p.s * p.s * Cout * nt[0] * nt[1] * itemsize
    u_bytes = a2 * p.s * p.s * Cout * Cin * itemsize
    # Each block's GEMMs read all of U (and OpenBLAS packs it anew) once per thread. So a block
    # is at least as large as U: below that, U's reads cost more than the block's own data
    # (faces64's 256 -> 128 layer: U 18.9 MB; blocks of 8 MB took 24 ms a pass, the whole
    # batch 18 ms; BENCHMARKS.md, "Larger Winograd blocks").
    target = max(BLOCK_BYTES, u_bytes)
    block = max(1, min(N, target // per_example))
    # A batch whose M is at most 1.5 x the target is kept whole (faces64's 512 -> 256 layer:
    # U is 8 x the whole batch's M; BENCHMARKS.md, "Figures behind the routes' rules").
    if N * per_example <= 1.5 * target:
        block = N
    # Where U is at least as large as the block's M, ranges of examples on several threads would
    # each read all of U; splitting the GEMMs by position reads it once (faces64's 512 -> 256
    # layer: 21.3 -> 18.5 ms a pass). At equality, faces64's 256 -> 128 layer (U and the whole
    # batch's M both 18.9 MB): whole iterations 0.95 x the time (median of 8 pairs alternating
    # in one process), U being out of the cache by the time each pass reaches it again
    # (BENCHMARKS.md, "Temporaries instead of kept scratch buffers").
    by_positions = u_bytes >= block * per_example
    return _Tiling(p.m, nt, p.q0[0] - 2, p.q0[1] - 2, block, by_positions)


def _input_transform(x, t: _Tiling, out=None):
    """V (a^2, C, P) = B^T d B for every tile d of x (n, C, H, W), P = n th tw tiles; into
    ``out`` (contiguous) when given."""
    n, C = x.shape[:2]
    BB = transforms(t.m, x.dtype)[0]
    shape = (BB.shape[0], C, n * t.nt[0] * t.nt[1])
    V = np.empty(shape, dtype=x.dtype) if out is None else out
    if _cpu.enabled():
        _cpu.winograd_input(np.ascontiguousarray(x), V, t.row0, t.col0, t.m, t.nt)
    else:
        np.matmul(BB, _gather_tiles(x, t).reshape(BB.shape[0], -1), out=V.reshape(BB.shape[0], -1))
    return V


def _input_transform_adjoint(dV, out, t: _Tiling) -> None:
    """out (n, C, H, W) <- the adjoint of :func:`_input_transform`: each tile's B dV B^T added
    where the tile was read (the tiles overlap by two rows and columns)."""
    if _cpu.enabled() and out.flags.c_contiguous:
        _cpu.winograd_input_adjoint(dV, out, t.row0, t.col0, t.m, t.nt)
        return
    BB = transforms(t.m, dV.dtype)[0]
    dd = BB.T @ dV.reshape(BB.shape[0], -1)  # B dV B^T: (a^2, C P)
    _overlap_add(dd.reshape(t.m + 2, t.m + 2, *dV.shape[1:]), out, t)


def _output_transform(M, y, t: _Tiling, bias=None) -> None:
    """y (n, Cout, 2 m th, 2 m tw) <- A^T M A of every tile and phase, shuffled into place, plus
    the bias when given; M is (a^2, 4 Cout, P)."""
    if _cpu.enabled() and y.flags.c_contiguous:
        b = None if bias is None else np.ascontiguousarray(bias)
        _cpu.winograd_output(M, y, t.m, t.nt, bias=b)
        return
    AA = transforms(t.m, M.dtype)[2]
    _shuffle(AA @ M.reshape(AA.shape[1], -1), y, t, bias)  # A^T M A: (m^2, 4 Cout P)


def _output_transform_adjoint(dy, t: _Tiling, out=None):
    """dM (a^2, 4 Cout, P) = A dY A^T, the adjoint of :func:`_output_transform` (bias aside);
    into ``out`` (contiguous) when given."""
    n, Cout = dy.shape[:2]
    AA = transforms(t.m, dy.dtype)[2]
    P = n * t.nt[0] * t.nt[1]
    dM = np.empty((AA.shape[1], 4 * Cout, P), dtype=dy.dtype) if out is None else out
    if _cpu.enabled():
        _cpu.winograd_output_adjoint(np.ascontiguousarray(dy), dM, t.m, t.nt)
        return dM
    dY = _unshuffle(dy, t)  # (m, m, 2, 2, Cout, P)
    np.matmul(AA.T, dY.reshape(AA.shape[0], -1), out=dM.reshape(AA.shape[1], -1))
    return dM


def _padded(x_shape, dtype, t: _Tiling):
    """Zeros x_pad (n, C, m th + 2, m tw + 2), and where x sits in it.

    ``x_pad[.., v, w]`` stands for ``x[.., row0 + v, col0 + w]``; returns x_pad and the index
    pairs ``inner`` (into x_pad) and ``outer`` (into x) of the part that lies inside x.
    """
    n, C, H, W = x_shape
    hp, wp = t.m * t.nt[0] + 2, t.m * t.nt[1] + 2
    xpad = np.zeros((n, C, hp, wp), dtype=dtype)
    h0, h1 = max(0, t.row0), min(H, t.row0 + hp)  # rows of x inside x_pad
    w0, w1 = max(0, t.col0), min(W, t.col0 + wp)
    inner = (slice(h0 - t.row0, h1 - t.row0), slice(w0 - t.col0, w1 - t.col0))
    outer = (slice(h0, h1), slice(w0, w1))
    return xpad, inner, outer


def _gather_tiles(x, t: _Tiling):
    """d (a, a, C, P): ``d[i, j, c, (b, ti, tj)] = x[b, c, row0 + m ti + i, col0 + m tj + j]``."""
    n, C = x.shape[:2]
    a = t.m + 2
    xpad, inner, outer = _padded(x.shape, x.dtype, t)
    xpad[(..., *inner)] = x[(..., *outer)]
    sn, sc, sh, sw = xpad.strides
    tiles = np.lib.stride_tricks.as_strided(  # (a, a, C, n, th, tw), a view
        xpad, (a, a, C, n, *t.nt), (sh, sw, sc, sn, sh * t.m, sw * t.m), writeable=False
    )
    return np.ascontiguousarray(tiles).reshape(a, a, C, -1)


def _overlap_add(dd, out, t: _Tiling) -> None:
    """out (n, C, H, W) <- the adjoint of :func:`_gather_tiles` applied to dd (a, a, C, P): each
    tile's values added where the tile was read."""
    n, C, H, W = out.shape
    a = t.m + 2
    xpad, inner, outer = _padded(out.shape, dd.dtype, t)
    dd6 = dd.reshape(a, a, C, n, *t.nt).transpose(0, 1, 3, 2, 4, 5)  # (a, a, n, C, th, tw)
    th, tw = t.nt
    for i in range(a):
        for j in range(a):
            xpad[:, :, i : i + t.m * th : t.m, j : j + t.m * tw : t.m] += dd6[i, j]
    out[...] = 0
    out[(..., *outer)] = xpad[(..., *inner)]


def _shuffle(Y, y, t: _Tiling, bias=None) -> None:
    """y (n, Cout, 2 m th, 2 m tw) <- Y (m, m, 2, 2, Cout, P), plus the bias when given:
    ``y[b, o, 2 (m ti + i) + r, 2 (m tj + j) + r'] = Y[i, j, r, r', o, (b, ti, tj)] + bias[o]``,
    each phase's pixels into place."""
    n, Cout = y.shape[:2]
    m, (th, tw) = t.m, t.nt
    yv = y.reshape(n, Cout, th, m, 2, tw, m, 2)
    yv[...] = Y.reshape(m, m, 2, 2, Cout, n, th, tw).transpose(5, 4, 6, 0, 2, 7, 1, 3)
    if bias is not None:
        y += bias.reshape(1, Cout, 1, 1)


def _unshuffle(dy, t: _Tiling):
    """The inverse (and adjoint) of :func:`_shuffle`: dY (m, m, 2, 2, Cout, P) from dy."""
    n, Cout = dy.shape[:2]
    m, (th, tw) = t.m, t.nt
    dY = np.empty((m, m, 2, 2, Cout, n * th * tw), dtype=dy.dtype)
    dY.reshape(m, m, 2, 2, Cout, n, th, tw)[...] = dy.reshape(
        n, Cout, th, m, 2, tw, m, 2
    ).transpose(3, 6, 4, 7, 1, 0, 2, 5)
    return dY


# --- forward and backward -------------------------------------------------------------------------


def _gemms(a, b, out=None):
    """The a^2 GEMMs of a step, one per position xi nu: ``a[k] @ b[k]`` by NumPy (BLAS), the
    positions split over threads, each GEMM on one (:func:`abp_np.fast.cpu.stacked_matmul`).

    A function of its own, like each transform step, so that
    ``python -m abp_np.bench --winograd-steps`` can time each call inside real iterations.
    """
    return _cpu.stacked_matmul(a, b, out=out)


def _by_examples(N: int, t: _Tiling, rows: tuple[int, int], dtype, step, in_c=None) -> None:
    """``step(e0, e1, first, second)`` for every example range [e0, e1) of the batch, block by
    block (``t.block`` examples), each block's ranges on several threads at once
    (:func:`abp_np.fast.threads.parallel_gemms`); ``first`` and ``second`` are the range's
    (a^2, rows[i], P) temporaries, P its tiles, contiguous pieces of two arrays per block.
    With ``t.by_positions`` the range is the whole block, on the calling thread, and each step
    splits itself over the threads.

    ``in_c(e0, e1, first, second, threads)``, where given and the C kernels' pool can take it
    (:func:`abp_np.fast.cpu.gemms_pooled`), does a block's ranges in one call instead, the
    same three steps of each range in C (``kernels/winograd_cpu.c``), the same bits.

    Those arrays are made here, on the calling thread, not by the threads that use the pieces:
    an array allocated on a worker comes from that thread's own malloc arena, whose freed memory
    the other threads do not reuse (it raised faces64's peak by 18 MiB). Only one block's are
    alive at a time.
    """
    a2, tiles = (t.m + 2) ** 2, t.nt[0] * t.nt[1]
    if in_c is not None and not _cpu.gemms_pooled(dtype):
        in_c = None
    for n0 in range(0, N, t.block):
        nb = min(N, n0 + t.block) - n0
        bufs = [np.empty(a2 * r * tiles * nb, dtype=dtype) for r in rows]
        ranges = functools.partial(_example_range, step, n0, bufs, rows, a2, tiles)
        if t.by_positions:  # the whole block through each step, each step split by itself
            ranges(0, nb)
        elif in_c is not None:
            whole = [buf.reshape(a2, r, tiles * nb) for buf, r in zip(bufs, rows)]
            parallel_gemms(ranges, nb, whole=functools.partial(in_c, n0, n0 + nb, *whole))
            del whole
        else:
            parallel_gemms(ranges, nb)
        del bufs, ranges  # before the next block's are made


def _example_range(step, n0: int, bufs, rows, a2: int, tiles: int, a: int, b: int) -> None:
    """One range of :func:`_by_examples`: examples n0 + a .. n0 + b - 1 and their pieces."""
    pieces = [
        buf[a2 * r * tiles * a : a2 * r * tiles * b].reshape(a2, r, tiles * (b - a))
        for buf, r in zip(bufs, rows)
    ]
    step(n0 + a, n0 + b, *pieces)


def transformed_weights(weight, p: Plan, derived=None):
    """U = G K G^T (a^2, 4 Cout, Cin): the weights in the Winograd domain.

    ``derived``: a dict in which U is kept while the weights stay fixed (see
    :meth:`abp_np.generator.Generator.fixed_weights`); it is reused as long as the layer's
    weight is the same array object and the tile size is the same.
    """
    key = _u_key(p)
    if derived is not None and key in derived and derived[key][0] is weight:
        return derived[key][1]
    U = _weights_transform(weight, p)
    if derived is not None:
        derived[key] = (weight, U)
    return U


def _u_key(p: Plan) -> str:
    return f"winograd U, m={p.m}"


def kept(x, weight, stride, padding, out_hw, derived) -> Plan | None:
    """The plan of a U that ``derived`` keeps for this very ``weight``, else None.

    Passes before this one with the same weights (the Langevin loop, inside the same
    :meth:`~abp_np.generator.Generator.fixed_weights` block) formed it; the learning step's
    forward pass may reuse it where its own rule (:func:`worth_it`) would not form one.
    """
    if derived is None or switches().winograd == "off" or x.dtype not in (np.float32, np.float64):
        return None
    p = plan(x.shape, weight.shape, stride, padding, out_hw)
    if p is None:
        return None
    entry = derived.get(_u_key(p))
    return p if entry is not None and entry[0] is weight else None


def forget(derived, p: Plan) -> None:
    """Drop the U that ``derived`` keeps for plan ``p`` (no pass of the block needs it again)."""
    derived.pop(_u_key(p), None)


def _weights_transform(weight, p: Plan):
    """U = G K G^T (a^2, 4 Cout, Cin), computed anew: ``GG @ K`` (the reference), or in C.

    The C kernel (:func:`abp_np.fast.cpu.winograd_weights`) reads the weights in place and
    writes U once, where NumPy first builds K (:func:`_combined_kernel`) and then multiplies it
    by GG in a GEMM of inner size 9: for faces64's 512 -> 256 layer (U 75 MB) 24 ms against
    59 (``BENCHMARKS.md``, "The weights' transform in C"). The two round differently: G k G^T
    is summed in two steps of three terms rather than in one of nine.
    """
    if _cpu.enabled():  # the kernel's four phases: stride 2, as every Plan has
        Cin, Cout = weight.shape[:2]
        a = p.m + 2
        U = np.empty((a * a, 4 * Cout, Cin), dtype=weight.dtype)
        G = transforms_1d(p.m, weight.dtype)[1]
        _cpu.winograd_weights(np.ascontiguousarray(weight), U, G)
        return U
    GG = transforms(p.m, weight.dtype)[1]
    return (GG @ _combined_kernel(weight, p.s)).reshape(GG.shape[0], -1, weight.shape[0])


def forward(
    x: Array, weight: Array, p: Plan, bias: Array | None = None, derived: dict | None = None
) -> tuple[Array, WinogradCache]:
    """y (N, Cout, 2 Q, 2 Q') = the transposed convolution of x by weight, plus the bias.

    ``derived``: where the transformed weights are kept between calls (see
    :func:`transformed_weights`). Returns ``(y, cache)``; the :class:`WinogradCache` holds what
    :func:`backward` needs (x and the transformed weights).

    On several threads (:mod:`abp_np.fast.threads`) each block's examples are cut into ranges
    that run at once, each range through all three steps on its thread with OpenBLAS on one
    thread (:func:`abp_np.fast.threads.parallel_gemms`), or, where U is at least a block's M,
    each step is split by itself (the GEMMs by position). The GEMMs then see other columns or
    threads, and OpenBLAS may round them differently in the last bits (float32 within 1e-5 of
    the largest output, ``tests/test_threads.py``); one thread is the single loop.
    """
    N = x.shape[0]
    Cout = weight.shape[1]
    U = transformed_weights(weight, p, derived)  # G K G^T: (a^2, 4 Cout, Cin)
    t = _tiling(p, x.shape, Cout, x.dtype.itemsize)
    y = np.empty((N, Cout, p.s * p.Q[0], p.s * p.Q[1]), dtype=x.dtype)

    def step(e0: int, e1: int, V, M) -> None:  # examples e0 .. e1 - 1, all three steps
        _input_transform(x[e0:e1], t, out=V)  # B^T d B: (a^2, Cin, P)
        _gemms(U, V, out=M)  # (a^2, 4 Cout, P): U[xi, nu] @ V[xi, nu]
        _output_transform(M, y[e0:e1], t, bias)  # A^T M A, shuffled

    def in_c(e0: int, e1: int, V, M, threads: int) -> None:  # step's ranges, in one C call
        xb, b = np.ascontiguousarray(x[e0:e1]), None if bias is None else np.ascontiguousarray(bias)
        _cpu.winograd_examples(xb, U, y[e0:e1], V, M, t.row0, t.col0, t.m, t.nt, threads, b)

    # ranges of examples on several threads at once, each its own transforms and GEMMs (one
    # BLAS thread each): one hand-off per block instead of one per step; one block's
    # temporaries alive at a time
    _by_examples(N, t, (x.shape[1], U.shape[1]), x.dtype, step, in_c)
    return y, WinogradCache(x, U, p, tuple(weight.shape), bias is not None)


def backward(
    dy: Array, cache: WinogradCache, need_param_grads: bool = True
) -> tuple[Array, Array | None, Array | None]:
    """dx and (when asked) dW and db of :func:`forward`: the adjoint of each of its steps, in
    reverse.

    Returns ``(dx, dW, db)``; dW and db are None when ``need_param_grads`` is False (db also
    when the layer has no bias). Without weight gradients (the Langevin loop) the examples run on
    several threads as in :func:`forward`; with them, dU sums the blocks in one order.
    """
    x, U, p, weight_shape, has_bias = cache
    Cout = weight_shape[1]
    GG = transforms(p.m, dy.dtype)[1]
    t = _tiling(p, x.shape, Cout, dy.dtype.itemsize)
    UT = U.transpose(0, 2, 1)  # (a^2, Cin, 4 Cout), a view
    dx = np.empty(x.shape, dtype=dy.dtype)
    if not need_param_grads:  # inferential: ranges of examples on several threads, as forward

        def step(e0: int, e1: int, dM, dV) -> None:
            _output_transform_adjoint(dy[e0:e1], t, out=dM)  # A dY A^T: (a^2, 4 Cout, P)
            _gemms(UT, dM, out=dV)  # (a^2, Cin, P): the input gradient's GEMMs
            _input_transform_adjoint(dV, dx[e0:e1], t)  # B dV B^T, added back where read

        def in_c(e0: int, e1: int, dM, dV, threads: int) -> None:  # step's ranges, in C
            dyb = np.ascontiguousarray(dy[e0:e1])
            _cpu.winograd_examples(
                dyb, U, dx[e0:e1], dM, dV, t.row0, t.col0, t.m, t.nt, threads, backward=True
            )

        _by_examples(x.shape[0], t, (UT.shape[2], UT.shape[1]), dy.dtype, step, in_c)
        return dx, None, None
    # learning: the blocks in order, dU summed over them in one order
    dU = np.zeros_like(U)
    for n0 in range(0, x.shape[0], t.block):
        n1 = min(x.shape[0], n0 + t.block)
        dM = _output_transform_adjoint(dy[n0:n1], t)  # A dY A^T: (a^2, 4 Cout, P)
        dV = _gemms(UT, dM)  # (a^2, Cin, P): the input gradient's GEMMs
        V = _input_transform(x[n0:n1], t)  # the weight gradient's GEMMs: dU = dM V^T
        dU += _gemms(dM, V.transpose(0, 2, 1))
        del V, dM
        _input_transform_adjoint(dV, dx[n0:n1], t)  # B dV B^T, added back where read
        del dV
    dK = GG.T @ dU.reshape(GG.shape[0], -1)  # G^T dU G: (9, 4 Cout Cin)
    db = dy.sum(axis=(0, 2, 3)) if has_bias else None
    return dx, _weight_grad(dK, p.s, weight_shape), db
