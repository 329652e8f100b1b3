"""The activations on every core: the reference's own NumPy expressions, on ranges of elements.

ReLU, leaky ReLU and tanh are elementwise, so a C-contiguous array may be cut into contiguous
ranges of its flat elements, each computed by the same NumPy expression as in
:mod:`abp_np.functional` on its own thread (:func:`abp_np.fast.threads.parallel_for`; NumPy
releases the GIL inside its loops). Every element is computed as in the whole-array call, so
the results are the same bit for bit (``tests/test_threads.py``).

Each function takes the arguments of its reference in :mod:`abp_np.functional` (the leaky ReLU's
backward pass: the output y and the slope, not the cache) and returns its output array only; the
reference builds the cache.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from .threads import parallel_for

__all__ = [
    "PIECE",
    "leaky_relu_backward",
    "leaky_relu_forward",
    "max_abs",
    "optimizer_update",
    "relu_backward",
    "relu_forward",
    "tanh_backward",
    "tanh_forward",
]


def _flat(*arrays: np.ndarray) -> list[np.ndarray]:
    return [a.reshape(-1) for a in arrays]  # views: the arrays are C-contiguous


def _out(dy: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    return np.empty_like(dy) if out is None else out


# Every temporary is allocated here, on the calling thread, and the threads write into slices
# of it: an array that a worker thread allocates and frees stays in its own malloc arena, where
# the calling thread cannot reuse it, and the process' peak memory grows (by 23 MiB on faces64).


def relu_forward(x: np.ndarray) -> np.ndarray:
    """y = max(x, 0)."""
    y = np.empty_like(x)
    xf, yf = _flat(x, y)
    parallel_for(lambda lo, hi: np.maximum(xf[lo:hi], 0, out=yf[lo:hi]), x.size)
    return y


def relu_backward(dy: np.ndarray, y: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """dx = dy where y > 0, else 0."""
    dx = _out(dy, out)
    d, yf, o = _flat(dy, y, dx)
    m = np.empty(dy.size, dtype=bool)  # y > 0

    def part(lo: int, hi: int) -> None:
        np.greater(yf[lo:hi], 0, out=m[lo:hi])
        np.multiply(d[lo:hi], m[lo:hi], out=o[lo:hi])

    parallel_for(part, dy.size)
    return dx


def leaky_relu_forward(x: np.ndarray, slope: float) -> np.ndarray:
    """y = x if x > 0 else slope x."""
    y = np.empty_like(x)
    xf, yf = _flat(x, y)
    s = x.dtype.type(slope)
    m = np.empty(x.size, dtype=bool)  # x > 0

    def part(lo: int, hi: int) -> None:
        np.greater(xf[lo:hi], 0, out=m[lo:hi])
        np.multiply(xf[lo:hi], s, out=yf[lo:hi])  # slope x everywhere, then x where x > 0
        np.copyto(yf[lo:hi], xf[lo:hi], where=m[lo:hi])

    parallel_for(part, x.size)
    return y


def leaky_relu_backward(
    dy: np.ndarray, y: np.ndarray, slope: float, out: np.ndarray | None = None
) -> np.ndarray:
    """dx = dy if y > 0 else slope dy (dy 1 is dy exactly, so only the others are multiplied)."""
    s = dy.dtype.type(slope)
    dx = _out(dy, out)
    d, yf, o = _flat(dy, y, dx)
    m = np.empty(dy.size, dtype=bool)  # not (y > 0)

    def part(lo: int, hi: int) -> None:
        np.greater(yf[lo:hi], 0, out=m[lo:hi])
        np.logical_not(m[lo:hi], out=m[lo:hi])
        if o is not d:
            np.copyto(o[lo:hi], d[lo:hi])
        np.multiply(d[lo:hi], s, out=o[lo:hi], where=m[lo:hi])

    parallel_for(part, dy.size)
    return dx


def tanh_forward(x: np.ndarray) -> np.ndarray:
    """y = tanh(x)."""
    y = np.empty_like(x)
    xf, yf = _flat(x, y)
    parallel_for(lambda lo, hi: np.tanh(xf[lo:hi], out=yf[lo:hi]), x.size)
    return y


def tanh_backward(dy: np.ndarray, y: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """dx = dy (1 - y^2)."""
    dx = _out(dy, out)
    d, yf, o = _flat(dy, y, dx)
    v = np.empty(dy.size, dtype=dy.dtype)  # 1 - y^2

    def part(lo: int, hi: int) -> None:
        np.multiply(yf[lo:hi], yf[lo:hi], out=v[lo:hi])
        np.subtract(1, v[lo:hi], out=v[lo:hi])
        np.multiply(d[lo:hi], v[lo:hi], out=o[lo:hi])

    parallel_for(part, dy.size)
    return dx


# --- the optimiser's step -------------------------------------------------------------------------

#: Elements per piece of :func:`optimizer_update` and :func:`max_abs`: each thread walks its range
#: in pieces this long, so that the temporaries a worker thread makes stay small (512 KiB in
#: float32: they stay in the worker's malloc arena, see above) while the Python between NumPy's
#: calls, which holds the GIL, stays rare. On a 2-core machine (2026-12-05, ``BENCHMARKS.md``,
#: "The optimiser's step on both cores") pieces of 2^16, 2^17 and 2^18 elements left texture224's
#: peak memory 1.3, 1.9 and 3.4 MiB above one thread's; pieces of 2^13-2^15 took 1-2 x one
#: thread's time. (SGD's update has a compiled form without temporaries:
#: :func:`abp_np.fast.cpu.sgd_update`.)
PIECE = 1 << 17


def _pieces(lo: int, hi: int) -> Iterator[slice]:
    for a in range(lo, hi, PIECE):
        yield slice(a, min(a + PIECE, hi))


def max_abs(x: np.ndarray) -> np.floating:
    """max |x| over all elements (NaN if any is NaN): the largest of the ranges' maxima.

    Each piece gives ``maximum(max(x), -min(x))``, which is its max |x| (NaN propagates through
    NumPy's max, min and maximum) with no temporary array; the maximum does not depend on the
    order it is taken in. So this is the reference's ``np.max(np.abs(x))`` but for the sign of
    a zero result.
    """
    (xf,) = _flat(x)
    peaks: list[np.floating] = []  # list.append is atomic: one entry per piece

    def part(lo: int, hi: int) -> None:
        for s in _pieces(lo, hi):
            peaks.append(np.maximum(xf[s].max(), -xf[s].min()))

    parallel_for(part, x.size)
    return np.max(np.array(peaks, dtype=x.dtype))


def optimizer_update(
    optimizer: Any, p: np.ndarray, g: np.ndarray, state: tuple[np.ndarray, ...], *args: Any
) -> None:
    """``optimizer._apply(p, g, state, *args)`` on pieces of the flattened tensors, on every core.

    ``_apply`` is an optimiser's elementwise update (:meth:`abp_np.optim.Optimizer._apply`):
    each element of p and of the state arrays depends on the same element of p, g and state
    alone, so every piece is computed as in the whole-tensor call, bit for bit.
    """
    flat = _flat(p, g, *state)

    def part(lo: int, hi: int) -> None:
        for s in _pieces(lo, hi):
            pf, gf, *sf = (a[s] for a in flat)
            optimizer._apply(pf, gf, tuple(sf), *args)

    parallel_for(part, p.size)
