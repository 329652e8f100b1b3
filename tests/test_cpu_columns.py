"""The column form's scatter and gather through the compiled CPU kernels (``kernels/columns_cpu.c``).

Expected values come from ``tests/oracles.py`` (``col2im_oracle`` and ``im2col_oracle``: plain
loops over taps and pixels, terms added in the order i ascending, then j, as the kernel adds
them), so the kernel must match them bit for bit on real-valued data, not only on integers;
the NumPy code of :mod:`abp_np.fast.columns` (kernels off) is compared too. Skipped where no C
compiler could build the kernels.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from abp_np.backend import using
from abp_np.fast import columns
from abp_np.fast import cpu as _cpu

import oracles

pytestmark = pytest.mark.skipif(
    not _cpu.available(), reason=f"CPU kernels not built: {_cpu.reason()}"
)


@st.composite
def geometries(draw):
    """(N, C, (H, W), kernel, stride, padding, (Hout, Wout)), padding possibly negative for
    the gather (the backward pass's blocks of rows shift the first row that way)."""
    size, k, s, p, out = [], [], [], [], []
    for _ in range(2):
        size.append(draw(st.integers(1, 6)))
        k.append(draw(st.integers(1, 5)))
        s.append(draw(st.integers(1, 4)))  # stride > kernel: outputs no tap reaches
        op = draw(st.integers(0, s[-1] - 1))
        uncropped = (size[-1] - 1) * s[-1] + k[-1] + op
        p.append(draw(st.integers(0, min(3, (uncropped - 1) // 2))))
        out.append(uncropped - 2 * p[-1])
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    return n, c, tuple(size), tuple(k), tuple(s), tuple(p), tuple(out)


def _columns(rng, c, k, n, h, w, dtype, rows_outside):
    """Real-valued columns (C, kh, kw, N, H, W), as a view of memory ordered like the GEMM's
    result of the forward pass (N, C, kh, kw, H, W), or (C, kh, kw, H, N, W)."""
    if rows_outside:
        return rng.standard_normal((c, *k, h, n, w)).astype(dtype).transpose(0, 1, 2, 4, 3, 5)
    return rng.standard_normal((n, c, *k, h, w)).astype(dtype).transpose(1, 2, 3, 0, 4, 5)


@settings(max_examples=60, deadline=None)
@given(
    geom=geometries(),
    dtype=st.sampled_from([np.float32, np.float64]),
    rows_outside=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_col2im_kernel_is_the_oracle_bit_for_bit(geom, dtype, rows_outside, seed):
    n, c, (h, w), k, s, p, (hout, wout) = geom
    rng = np.random.default_rng(seed)
    cols = _columns(rng, c, k, n, h, w, dtype, rows_outside)
    with using(c=True):
        y = columns.col2im(cols, (n, c, hout, wout), s, p)
    with using(c=False):
        y_numpy = columns.col2im(cols, (n, c, hout, wout), s, p)
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, oracles.col2im_oracle(cols, hout, wout, s, p))
    np.testing.assert_array_equal(y, y_numpy)


@settings(max_examples=60, deadline=None)
@given(
    geom=geometries(),
    shift=st.integers(-2, 2),
    dtype=st.sampled_from([np.float32, np.float64]),
    rows_outside=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_im2col_kernel_is_the_oracle(geom, shift, dtype, rows_outside, seed):
    """Every column written (the buffer starts as NaN), zeros where a tap falls outside dy."""
    n, c, (h, w), k, s, (ph, pw), (hout, wout) = geom
    pad = (ph + shift * s[0], pw)  # a block of rows starting elsewhere: padding moved by rows
    rng = np.random.default_rng(seed)
    dy = rng.standard_normal((n, c, hout, wout)).astype(dtype)
    expected = oracles.im2col_oracle(dy, *k, h, w, s, pad)
    for c_on in (True, False):
        cols = _columns(rng, c, k, n, h, w, dtype, rows_outside)
        cols.fill(np.nan)
        with using(c=c_on):
            out = columns.im2col_into(cols, dy, s, pad)
        assert out is cols
        np.testing.assert_array_equal(cols, expected)


def test_a_strided_output_view_is_written_in_place_and_only_there():
    """The forward pass scatters a block of examples into its rows of y (a view)."""
    rng = np.random.default_rng(0)
    cols = rng.standard_normal((2, 5, 5, 3, 4, 4)).astype(np.float32)
    y = np.full((5, 4, 8, 8), 7.0, np.float32)
    view = y[1:4, 1:3]  # examples 1..3, channels 1..2
    with using(c=True):
        out = columns.col2im(cols, view.shape, (2, 2), (2, 2), out=view)
    assert out is view
    np.testing.assert_array_equal(view, oracles.col2im_oracle(cols, 8, 8, (2, 2), (2, 2)))
    y[1:4, 1:3] = 7.0
    assert np.all(y == 7.0)  # nothing outside the view was touched


def test_the_wrappers_refuse_what_the_kernels_cannot_read():
    cols = np.zeros((1, 2, 2, 1, 2, 2), np.float32)
    with pytest.raises(ValueError, match="not float32 or float64"):
        _cpu.col2im(
            cols.astype(np.float16),
            np.zeros((1, 1, 4, 4), np.float16),
            (2, 2),
            (0, 0),
            [(0, 0, 2, 1)],
            [(0, 0, 2, 1)],
        )
    with pytest.raises(ValueError, match="one dtype"):
        _cpu.im2col(np.zeros((1, 1, 4, 4), np.float64), cols, (2, 2), (0, 0))
    with pytest.raises(ValueError, match="do not fit"):
        _cpu.im2col(np.zeros((2, 1, 4, 4), np.float32), cols, (2, 2), (0, 0))
