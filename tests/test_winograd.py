"""The Winograd path of the CPU transposed convolutions (``abp_np/fast/winograd.py``) and its
compiled transform kernels (``abp_np/fast/cpu.py``, ``kernels/winograd_cpu.c``).

Where the expected values come from, never from abp_np itself:

* the transposed convolution's output: the naive scatter loops of ``tests/oracles.py``
  (``oracles.conv_transpose2d``); its input gradient: the adjoint, the naive direct
  convolution ``oracles.conv2d``; its weight gradient and bias gradient: loops written here
  from the definition (``dW[c, o, i, j] = sum x[n, c, ih, iw] dy[n, o, 2 ih + i - 2, ...]``);
* the Winograd transforms: the correlation ``y[i] = sum_a d[i + a] g[a]`` by loops;
* ``winograd.plan``: the rule its docstring states (stride 2, the phases of each axis start at
  the same q0 with ``2 q0 = padding``, ``Q = out / 2`` outputs each, at most 3 taps, Q even;
  m = 4 when both Q are multiples of 4, else 2), worked out by hand for each geometry;
* the four compiled kernels: loops over every index of the tile gather, overlap-add and pixel
  shuffle defined at the top of ``kernels/winograd_cpu.c``, combined with the Kronecker-form
  transforms (themselves checked against the correlation loops), on integer-valued data so
  that every sum is exact;
* the gradients, once more: central differences (:mod:`abp_np.gradcheck`).

The compiled kernels and the NumPy path (``using(c=False)``) compute the same sums in a
different order, so they must agree to rounding. Tests that need the compiled library skip,
saying why, where it cannot be built.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from abp_np.backend import switches, using
from abp_np.fast import cpu as _cpu
from abp_np.fast import winograd
from abp_np.generator import Generator
from abp_np.gradcheck import assert_gradients_close
from abp_np.layers import ConvTranspose2d

import oracles
from conftest import subprocess_env

F64 = np.float64
F32 = np.float32
ROOT = Path(__file__).resolve().parent.parent
HYPO = settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
SIZES = st.sampled_from([2, 4, 6, 8])

# The paper's layer: kernel 5, stride 2, padding 2, output_padding 1 (output = 2 x input).
PAPER = {"kernel_size": 5, "stride": 2, "padding": 2, "output_padding": 1}


# --- helpers --------------------------------------------------------------------------------------


def need_compiled():
    """Skip the calling test where the compiled data-movement library is not available."""
    if not _cpu.available():
        pytest.skip(f"compiled CPU kernels not available: {_cpu.reason()}")


def kernels(kind: str):
    """``using(c=True)`` with the compiled library (skipping without it), or NumPy only."""
    if kind == "compiled":
        need_compiled()
        return using(c=True)
    return using(c=False)


def make_layer(cin, cout, dtype=F64, seed=0, **geometry):
    """A ConvTranspose2d with O(1) random weights and bias (the paper's geometry by default)."""
    rng = np.random.default_rng(seed)
    layer = ConvTranspose2d(cin, cout, **(geometry or PAPER), dtype=dtype, rng=rng)
    for p in layer.params.values():
        p[...] = rng.standard_normal(p.shape).astype(dtype)
    return layer


def took_winograd(layer) -> bool:
    """True when the layer's last forward went through abp_np/fast/winograd.py."""
    return isinstance(layer._cache, winograd.WinogradCache) and layer._cache.route == "winograd"


def run_layer(layer, x, dy):
    """y, dx, dW, db of one forward and one full backward (copies)."""
    y = layer.forward(x).copy()
    dx = layer.backward(dy).copy()
    return y, dx, layer.grads["weight"].copy(), layer.grads["bias"].copy()


def weight_grad_loops(x, dy, kernel, stride, padding):
    """dW[c, o, i, j] = sum over n, ih, iw of x[n, c, ih, iw] dy[n, o, oh, ow] for the
    (oh, ow) = (s ih + i - p, s iw + j - p) inside dy (the same s and p on both axes)."""
    N, Cin, H, W = x.shape
    Cout, Hout, Wout = dy.shape[1:]
    kh, kw = kernel
    dW = np.zeros((Cin, Cout, kh, kw))
    for i in range(kh):
        for j in range(kw):
            for ih in range(H):
                oh = stride * ih + i - padding
                if not 0 <= oh < Hout:
                    continue
                for iw in range(W):
                    ow = stride * iw + j - padding
                    if 0 <= ow < Wout:
                        dW[:, :, i, j] += x[:, :, ih, iw].T @ dy[:, :, oh, ow]  # (Cin, Cout)
    return dW


def check_against_oracles(layer, x, rng):
    """Forward, dx, dW and db of ``layer`` (float64) against the oracles; returns them."""
    (s, _), (p, _) = layer.stride, layer.padding
    w, b = layer.params["weight"], layer.params["bias"]
    y_expected = oracles.conv_transpose2d(
        x, w, b, layer.stride, layer.padding, layer.output_padding
    )
    dy = rng.standard_normal(y_expected.shape)
    y, dx, dW, db = run_layer(layer, x, dy)
    assert took_winograd(layer)
    np.testing.assert_allclose(y, y_expected, rtol=1e-10, atol=1e-12)
    dx_expected = oracles.conv2d(dy, w, layer.stride, layer.padding, x.shape[2:])
    np.testing.assert_allclose(dx, dx_expected, rtol=1e-10, atol=1e-12)
    dW_expected = weight_grad_loops(x, dy, layer.kernel_size, s, p)
    np.testing.assert_allclose(dW, dW_expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(db, dy.sum(axis=(0, 2, 3)), rtol=1e-10, atol=1e-12)
    return y, dx, dW, db


# --- 1. the transforms ----------------------------------------------------------------------------


def correlate1d(d, g):
    """y[i] = sum_a d[i + a] g[a], the m = len(d) - 2 outputs."""
    return np.array([sum(d[i + a] * g[a] for a in range(3)) for i in range(len(d) - 2)])


def correlate2d(d, g):
    """Y[u, v] = sum_(a, b) d[u + a, v + b] g[a, b] for a square tile d and a 3 x 3 filter g."""
    m = d.shape[0] - 2
    Y = np.zeros((m, m))
    for u in range(m):
        for v in range(m):
            for a in range(3):
                for b in range(3):
                    Y[u, v] += d[u + a, v + b] * g[a, b]
    return Y


@pytest.mark.parametrize("m", [2, 4])
def test_transforms_compute_the_1d_correlation(m):
    """A^T [(G g) * (B^T d)] is the 3-tap correlation of a tile of m + 2 values."""
    rng = np.random.default_rng(m)
    BT, G, AT = (np.array(t[m], dtype=F64) for t in (winograd._BT, winograd._G, winograd._AT))
    assert BT.shape == (m + 2, m + 2) and G.shape == (m + 2, 3) and AT.shape == (m, m + 2)
    for _ in range(5):
        d, g = rng.standard_normal(m + 2), rng.standard_normal(3)
        np.testing.assert_allclose(
            AT @ ((G @ g) * (BT @ d)), correlate1d(d, g), rtol=1e-12, atol=1e-13
        )


@pytest.mark.parametrize("m", [2, 4])
def test_transforms_compute_the_2d_correlation(m):
    """The Kronecker forms: AA [(GG g) * (BB d)] is the 3 x 3 correlation of an a x a tile."""
    a = m + 2
    BB, GG, AA = winograd.transforms(m)
    assert BB.shape == (a * a, a * a) and GG.shape == (a * a, 9) and AA.shape == (m * m, a * a)
    assert all(t.dtype == F64 for t in (BB, GG, AA))
    assert all(t.dtype == F32 for t in winograd.transforms(m, F32))
    rng = np.random.default_rng(10 + m)
    for _ in range(5):
        d, g = rng.standard_normal((a, a)), rng.standard_normal((3, 3))
        got = (AA @ ((GG @ g.ravel()) * (BB @ d.ravel()))).reshape(m, m)
        np.testing.assert_allclose(got, correlate2d(d, g), rtol=1e-12, atol=1e-12)


# --- 2. which layers qualify ------------------------------------------------------------------------


@given(
    n=st.integers(1, 4),
    c=st.integers(1, 6),
    h=st.integers(1, 8).map(lambda k: 2 * k),
    w=st.integers(1, 8).map(lambda k: 2 * k),
)
@example(n=1, c=1, h=4, w=4)
@example(n=1, c=1, h=8, w=4)
@example(n=1, c=1, h=8, w=16)
@HYPO
def test_plan_for_the_papers_layers(n, c, h, w):
    """Kernel 5, stride 2, padding 2, output 2H x 2W: m = 4 when H and W are multiples of 4
    (a 4 x 4 input included: one F(4x4) tile per phase covers it), else m = 2."""
    p = winograd.plan((n, c, h, w), (c, 3, 5, 5), (2, 2), (2, 2), (2 * h, 2 * w))
    m = 4 if h % 4 == 0 and w % 4 == 0 else 2
    # both phases of an axis start at q0 = padding / 2 = 1 and hold Q = H outputs
    assert p == winograd.Plan(m, 2, (1, 1), (h, w))


@pytest.mark.parametrize(
    "why, x_shape, kernel, stride, padding, out_hw",
    [
        ("stride 1", (1, 2, 4, 4), 5, (1, 1), (2, 2), (4, 4)),
        ("stride (2, 1)", (1, 2, 4, 4), 5, (2, 1), (2, 2), (8, 4)),
        # kernel 3, padding 1, output_padding 1: phase 0 starts at q0 = 1, phase 1 at q0 = 0
        ("kernel 3 padding 1", (1, 2, 4, 4), 3, (2, 2), (1, 1), (8, 8)),
        # kernel 7, padding 3: q0 = 2 and 1
        ("kernel 7 padding 3", (1, 2, 4, 4), 7, (2, 2), (3, 3), (8, 8)),
        # kernel 5, padding 2, output_padding 0: output 2H - 1, phase 1 has H - 1 outputs
        ("output 2H - 1", (1, 2, 4, 4), 5, (2, 2), (2, 2), (7, 7)),
        ("odd H", (1, 2, 3, 4), 5, (2, 2), (2, 2), (6, 8)),
        ("odd W", (1, 2, 4, 5), 5, (2, 2), (2, 2), (8, 10)),
    ],
)
def test_plan_refuses_other_geometries(why, x_shape, kernel, stride, padding, out_hw):
    """None for every geometry that breaks one of the rule's conditions."""
    weight_shape = (x_shape[1], 3, kernel, kernel)
    assert winograd.plan(x_shape, weight_shape, stride, padding, out_hw) is None, why


# --- 3. the paper's layer against the oracles, both data movements ----------------------------------


@pytest.mark.parametrize("kind", ["compiled", "numpy"])
@given(
    n=st.integers(1, 3),
    cin=st.integers(1, 4),
    cout=st.integers(1, 4),
    h=SIZES,
    w=SIZES,
    seed=st.integers(0, 2**16),
)
@HYPO
def test_layer_matches_oracles(kind, n, cin, cout, h, w, seed):
    """Forward, dx, dW and db of the paper's layer under using(winograd="on") equal the oracles'."""
    rng = np.random.default_rng(seed)
    layer = make_layer(cin, cout, seed=seed)
    x = rng.standard_normal((n, cin, h, w))
    with kernels(kind), using(winograd="on"):
        check_against_oracles(layer, x, rng)


@given(
    n=st.integers(1, 4),
    cin=st.integers(1, 6),
    cout=st.integers(1, 6),
    h=SIZES,
    w=SIZES,
    dtype=st.sampled_from([F32, F64]),
    seed=st.integers(0, 2**16),
)
@HYPO
def test_compiled_and_numpy_paths_agree(n, cin, cout, h, w, dtype, seed):
    """The compiled kernels and the NumPy path agree to rounding: y, dx, dW, db."""
    need_compiled()
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, cin, h, w)).astype(dtype)
    dy = rng.standard_normal((n, cout, 2 * h, 2 * w)).astype(dtype)
    results = []
    for on in (True, False):
        layer = make_layer(cin, cout, dtype=dtype, seed=seed)
        with using(c=on, winograd="on"):
            results.append(run_layer(layer, x, dy))
        assert took_winograd(layer)
    # float32: both paths are within about 1e-5 of the exact values (F(4x4)'s constants reach 8)
    tol = 1e-12 if dtype == F64 else 5e-5
    for compiled, numpy in zip(*results):
        scale = max(1.0, float(np.abs(numpy).max()))
        np.testing.assert_allclose(compiled, numpy, rtol=0, atol=tol * scale)


@pytest.mark.parametrize("kind", ["compiled", "numpy"])
@pytest.mark.parametrize(
    "geometry, hw",
    [
        # kernel 6, padding 2, output_padding 0: output 2H, three taps per phase, q0 = 1
        ({"kernel_size": 6, "stride": 2, "padding": 2, "output_padding": 0}, (4, 6)),
        # kernel 4, padding 2, output_padding 0: output 2 (H - 1), two taps per phase
        ({"kernel_size": 4, "stride": 2, "padding": 2, "output_padding": 0}, (5, 3)),
        # kernel 3, padding 2, output_padding 1: output 2 (H - 1), two and one taps
        ({"kernel_size": 3, "stride": 2, "padding": 2, "output_padding": 1}, (9, 5)),
        # a non-square kernel: 5 rows (output 2H) and 6 columns (output 2W)
        ({"kernel_size": (5, 6), "stride": 2, "padding": 2, "output_padding": (1, 0)}, (4, 6)),
    ],
)
def test_other_geometries_the_rule_admits(kind, geometry, hw):
    """Layers other than the paper's that satisfy the rule are computed correctly too."""
    rng = np.random.default_rng(3)
    layer = make_layer(3, 2, **geometry)
    x = rng.standard_normal((2, 3, *hw))
    with kernels(kind), using(winograd="on"):
        check_against_oracles(layer, x, rng)


# --- 4. the inferential pass ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["compiled", "numpy"])
@pytest.mark.parametrize("hw", [(4, 8), (6, 2)])
def test_need_param_grads_false_gives_the_same_dx(kind, hw):
    """backward(dy, need_param_grads=False): the same dx, bit for bit, and no gradient stored."""
    rng = np.random.default_rng(4)
    layer = make_layer(3, 5)
    x = rng.standard_normal((3, 3, *hw))
    dy = rng.standard_normal((3, 5, 2 * hw[0], 2 * hw[1]))
    # one thread: several cut the inferential pass's batch (tests/test_threads.py)
    with kernels(kind), using(winograd="on", threads=1):
        layer.forward(x)
        assert took_winograd(layer)
        dx_full = layer.backward(dy).copy()
        layer.zero_grad()
        dx = layer.backward(dy, need_param_grads=False)
        # a non-contiguous dy (a layer above may hand one down) changes nothing either
        dx_fortran = layer.backward(np.asfortranarray(dy), need_param_grads=False)
    np.testing.assert_array_equal(dx, dx_full)
    np.testing.assert_array_equal(dx_fortran, dx_full)
    assert all(not g.any() for g in layer.grads.values())


@pytest.mark.parametrize("kind", ["compiled", "numpy"])
def test_non_contiguous_input_gives_the_same_results(kind):
    """A Fortran-ordered or strided x and dy give the same y, dx and dW, bit for bit."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 3, 8, 4))
    dy = rng.standard_normal((2, 5, 16, 8))
    wide = np.zeros((2, 3, 8, 8))
    wide[..., ::2] = x
    with kernels(kind), using(winograd="on"):
        expected = run_layer(make_layer(3, 5), x, dy)
        fortran = run_layer(make_layer(3, 5), np.asfortranarray(x), np.asfortranarray(dy))
        strided = run_layer(make_layer(3, 5), wide[..., ::2], dy)
    for got in (fortran, strided):
        for a, b in zip(got[:3], expected[:3]):
            np.testing.assert_array_equal(a, b)
        # db is NumPy's own sum of dy, whose rounding depends on dy's memory order
        np.testing.assert_allclose(got[3], expected[3], rtol=1e-12)


# --- 5. blocks of examples --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["compiled", "numpy"])
@pytest.mark.parametrize(
    "per_block, expected_blocks",
    [
        (1, [1, 1, 1, 1]),
        (2, [2, 2]),
        (3, [4]),  # the whole batch's M is 4 / 3 x the target: kept whole (at most 1.5 x)
    ],
)
def test_blocks_of_examples_give_the_same_results(kind, per_block, expected_blocks, monkeypatch):
    """Cutting the batch into blocks of 1 or 2 examples changes neither y, dx, dW nor db; a
    target of 3 examples keeps the batch of 4 whole."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 3, 4, 6))
    dy = rng.standard_normal((4, 4, 8, 12))
    # m = 2 (Q = 4 x 6): 2 x 3 tiles of 4 x 4 per example, so the product M of one example
    # holds 16 x (4 phases x 4 Cout) x 6 float64 numbers
    m_bytes_per_example = 16 * 4 * 4 * 6 * 8
    # one thread: several cut each block again, by examples (tests/test_threads.py)
    with kernels(kind), using(winograd="on", threads=1):
        whole = run_layer(make_layer(3, 4), x, dy)
        blocks = []
        transform = winograd._input_transform
        monkeypatch.setattr(
            winograd,
            "_input_transform",
            lambda xb, t, out=None: blocks.append(len(xb)) or transform(xb, t, out),
        )
        monkeypatch.setattr(winograd, "BLOCK_BYTES", per_block * m_bytes_per_example)
        layer = make_layer(3, 4)
        split = run_layer(layer, x, dy)
    assert took_winograd(layer)
    # the forward pass transforms the tiles of each block, and so does dW in the backward pass
    assert blocks == 2 * expected_blocks
    for a, b in zip(split, whole):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * np.abs(b).max())


@pytest.mark.parametrize(
    "x_shape, cout, block, by_positions",
    [
        # faces64's layers, float32 (batch 64). U = 36 x 4 Cout x Cin x 4 bytes, one example's
        # M = 36 x 4 Cout x tiles x 4 bytes.
        # 512 -> 256 at 4 x 4: U 75.5 MB, the batch's M 9.4 MB: whole, by positions
        ((64, 512, 4, 4), 256, 64, True),
        # 256 -> 128 at 8 x 8: U 18.9 MB = the batch's M (64 x 294,912 B): whole, by positions
        ((64, 256, 8, 8), 128, 64, True),
        # 128 -> 64 at 16 x 16: U 4.7 MB, below the 8 MiB target; M 589,824 B an example:
        # blocks of 14 (8,388,608 // 589,824), by examples
        ((64, 128, 16, 16), 64, 14, False),
        # texture224's 256 -> 128 at 28 x 28, batch 1: U 18.9 MB, M 3.6 MB: by positions
        ((1, 256, 28, 28), 128, 1, True),
    ],
)
def test_blocks_are_at_least_as_large_as_u_and_u_is_read_once_where_it_is_larger(
    x_shape, cout, block, by_positions
):
    """The block rule, on the paper's layers (figures of the rule: BENCHMARKS.md)."""
    hw = (2 * x_shape[2], 2 * x_shape[3])
    p = winograd.plan(x_shape, (x_shape[1], cout, 5, 5), (2, 2), (2, 2), hw)
    assert p.m == 4
    t = winograd._tiling(p, x_shape, cout, 4)
    assert (t.block, t.by_positions) == (block, by_positions)


# --- 6. float32 -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["compiled", "numpy"])
@pytest.mark.parametrize("hw", [(8, 8), (6, 4)])
def test_float32_is_close_to_the_float64_oracle(kind, hw):
    """A float32 layer's output lies within 2e-5 max|y| of the float64 oracle, same weights."""
    rng = np.random.default_rng(6)
    layer = make_layer(6, 5, dtype=F32)
    x = rng.standard_normal((2, 6, *hw)).astype(F32)
    with kernels(kind), using(winograd="on"):
        y = layer.forward(x)
    assert took_winograd(layer) and y.dtype == F32
    p = layer.params
    y64 = oracles.conv_transpose2d(x, p["weight"], p["bias"], (2, 2), (2, 2), (1, 1))
    assert np.abs(y - y64).max() <= 2e-5 * np.abs(y64).max()


# --- 7. finite differences --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["compiled", "numpy"])
@pytest.mark.parametrize("hw", [(4, 4), (2, 6)])
def test_gradients_match_finite_differences(kind, hw):
    """dx, dW and db agree with central differences of <forward(x), g> (float64)."""
    rng = np.random.default_rng(7)
    layer = make_layer(2, 3)
    x = rng.standard_normal((2, 2, *hw))
    with kernels(kind), using(winograd="on"):
        assert_gradients_close(layer, x, rng=rng)
        assert took_winograd(layer)


# --- 8. when the path is taken ----------------------------------------------------------------------


def test_auto_skips_small_layers():
    """auto: a 2 x 2 input (one example, 4 channels) keeps the ordinary path."""
    layer = make_layer(4, 8)
    with using(winograd="auto"):
        layer.forward(np.ones((1, 4, 2, 2)))
    assert not took_winograd(layer)


# The "auto" rule (winograd.worth_it): H W >= 64, N H W >= 18 Cout (the transformed weights,
# 144 Cout Cin values, at most 8 x the input's N Cin H W) and Cout >= 8, and the compiled
# kernels available and switched on.
AUTO_CASES = [
    ((3, 4, 8, 8), 8, True),  # N H W = 192 >= 18 Cout = 144
    ((3, 4, 16, 4), 8, True),  # H W = 64, not square
    ((9, 2, 8, 8), 32, True),  # N H W = 576 = 18 Cout
    ((9, 2, 8, 8), 33, False),  # N H W = 576 < 18 Cout = 594
    ((1, 4, 8, 8), 8, False),  # N H W = 64 < 144: U would dwarf the input
    ((3, 4, 8, 8), 7, False),  # too few output channels
    ((40, 4, 4, 4), 8, False),  # H W = 16 < 64, however large the batch
    ((4, 4, 8, 6), 8, False),  # H W = 48 < 64
]


@pytest.mark.parametrize("x_shape, cout, takes_it", AUTO_CASES)
def test_auto_rule(x_shape, cout, takes_it):
    """auto takes the path exactly for the layers the rule names, and never without kernels."""
    need_compiled()
    layer = make_layer(x_shape[1], cout)
    with using(winograd="auto"):
        layer.forward(np.ones(x_shape))
        assert took_winograd(layer) == takes_it
        with using(c=False):  # auto needs the compiled kernels
            layer.forward(np.ones(x_shape))
            assert not took_winograd(layer)


def test_off_and_on():
    """off: no layer takes the path; on: every layer whose geometry fits, small ones too."""
    big, small = np.ones((2, 4, 4, 4)), np.ones((1, 4, 2, 2))
    for x in (big, small):
        layer = make_layer(4, 8)
        with using(winograd="off"):
            layer.forward(x)
        assert not took_winograd(layer)
        with using(winograd="on"):
            layer.forward(x)
        assert took_winograd(layer)
    layer = make_layer(4, 8, kernel_size=3, stride=2, padding=1, output_padding=1)
    with using(winograd="on"):  # a geometry that does not fit
        layer.forward(small)
    assert not took_winograd(layer)


# With the weights fixed over many passes (Generator.fixed_weights(), the Langevin loop) the
# rule widens: H W >= 16 and N H W >= 4 Cout (and Cout >= 8), or the rule above.
REUSE_CASES = [
    ((64, 8, 4, 4), 16, True),  # faces64's 512 -> 256 layer in small: H W = 16, N H W = 1024
    ((2, 4, 4, 4), 8, True),  # N H W = 32 = 4 Cout
    ((1, 4, 4, 4), 8, False),  # N H W = 16 < 32
    ((1, 4, 8, 8), 8, True),  # N H W = 64 >= 32 (not without reuse: 64 < 18 Cout)
    ((1, 4, 8, 8), 17, False),  # N H W = 64 < 68
    ((40, 4, 4, 2), 8, False),  # H W = 8 < 16
    ((3, 4, 8, 8), 7, False),  # too few output channels
    ((3, 4, 8, 8), 8, True),  # taken without reuse as well
]


@pytest.mark.parametrize("x_shape, cout, takes_it", REUSE_CASES)
def test_auto_rule_with_fixed_weights(x_shape, cout, takes_it):
    """Inside fixed_weights() auto takes the wider rule; outside, the ordinary one."""
    need_compiled()
    layer = make_layer(x_shape[1], cout)
    g = Generator([layer], x_shape[1:])
    x = np.ones(x_shape)
    with using(winograd="auto"):
        with g.fixed_weights():
            g.forward(x)
            assert took_winograd(layer) == takes_it
        g.forward(x)
        assert took_winograd(layer) == winograd.worth_it(x_shape, (x_shape[1], cout, 5, 5))
    assert winograd.worth_it(x_shape, (x_shape[1], cout, 5, 5), reuse=True) == takes_it


def transformed_weights_by_loops(w, m):
    """U (a^2, 4 Cout, Cin) by its definition: for every phase (r, r2) of the stride-2 layer,
    output channel o and input channel c, the 3 x 3 filter of the taps (r + 2 (2 - p),
    r2 + 2 (2 - q)) (zero past the kernel), multiplied out as G k G^T in float64."""
    G = np.array(winograd._G[m], dtype=F64)
    Cin, Cout, kh, kw = w.shape
    a = m + 2
    U = np.zeros((a * a, 4 * Cout, Cin))
    for r in range(2):
        for r2 in range(2):
            for o in range(Cout):
                for c in range(Cin):
                    k = np.zeros((3, 3))
                    for p in range(3):
                        for q in range(3):
                            i, j = r + 2 * (2 - p), r2 + 2 * (2 - q)
                            if i < kh and j < kw:
                                k[p, q] = w[c, o, i, j]
                    U[:, (2 * r + r2) * Cout + o, c] = (G @ k @ G.T).ravel()
    return U


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize(
    ("cin", "cout", "k"), [(1, 1, 5), (3, 5, 5), (17, 6, 5), (9, 4, 4), (5, 3, 6), (4, 2, 3)]
)
def test_the_compiled_weights_transform_is_g_k_g_transposed(m, dtype, cin, cout, k):
    """The C kernel (and the NumPy reference GG @ K) against the definition, float64 loops:
    to rounding (a sum of 9 terms of at most 1 in G's entries, twice)."""
    need_compiled()
    w = np.random.default_rng(cin * cout + k).standard_normal((cin, cout, k, k)).astype(dtype)
    want = transformed_weights_by_loops(w.astype(F64), m)
    p = winograd.Plan(m=m, s=2, q0=(1, 1), Q=(4, 4))
    with using(c=True):
        got = winograd._weights_transform(w, p)
    with using(c=False):
        ref = winograd._weights_transform(w, p)
    tol = (1e-6 if dtype == F32 else 1e-14) * np.abs(want).max()
    for u in (got, ref):
        assert u.dtype == dtype and u.shape == want.shape
        assert np.abs(u - want).max() <= tol
    with pytest.raises(ValueError, match="do not fit"):
        _cpu.winograd_weights(w, np.empty((1, 1, 1), dtype), winograd.transforms_1d(m, dtype)[1])


def count_transforms(monkeypatch):
    """A list that grows by one each time the weights are transformed (U = G K G^T)."""
    calls = []
    real = winograd._weights_transform
    monkeypatch.setattr(winograd, "_weights_transform", lambda *a: calls.append(1) or real(*a))
    return calls


def test_fixed_weights_transform_once_and_change_nothing(monkeypatch):
    """Inside fixed_weights() U is computed once for many passes; outputs and gradients are
    the same bits as outside; leaving the block drops U, and a new block computes it anew."""
    layer = make_layer(3, 8)
    g = Generator([layer], (3, 8, 8))
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((2, 3, 8, 8)) for _ in range(3)]
    dy = rng.standard_normal((2, 8, 16, 16))
    with using(winograd="on"):
        outside = [(g.forward(x).copy(), g.backward(dy, False).copy()) for x in xs]
        calls = count_transforms(monkeypatch)
        with g.fixed_weights():
            inside = [(g.forward(x).copy(), g.backward(dy, False).copy()) for x in xs]
            assert len(calls) == 1
        assert layer._derived is None
        with g.fixed_weights():
            g.forward(xs[0])
        assert len(calls) == 2
    for (y0, dx0), (y1, dx1) in zip(outside, inside, strict=True):
        np.testing.assert_array_equal(y0, y1)
        np.testing.assert_array_equal(dx0, dx1)


def test_fixed_weights_follow_new_weights(monkeypatch):
    """New weights inside a block are used: through load_state_dict (in place) or a new array."""
    layer = make_layer(3, 8)
    g = Generator([layer], (3, 8, 8))
    other = Generator([make_layer(3, 8, seed=5)], (3, 8, 8))
    x = np.random.default_rng(2).standard_normal((2, 3, 8, 8))
    with using(winograd="on"):
        want = other.forward(x).copy()
        with g.fixed_weights():
            g.forward(x)
            g.load_state_dict(other.state_dict())  # copies into the same arrays
            np.testing.assert_array_equal(g.forward(x), want)
        fresh = make_layer(3, 8, seed=7)
        want = fresh.forward(x).copy()
        with g.fixed_weights():
            g.forward(x)
            layer.params["weight"] = fresh.params["weight"].copy()  # a new array object
            layer.params["bias"] = fresh.params["bias"].copy()
            np.testing.assert_array_equal(g.forward(x), want)


def test_fixed_weights_nest(monkeypatch):
    """An inner block leaves what the outer one keeps."""
    layer = make_layer(3, 8)
    g = Generator([layer], (3, 8, 8))
    x = np.ones((2, 3, 8, 8))
    with using(winograd="on"):
        calls = count_transforms(monkeypatch)
        with g.fixed_weights():
            g.forward(x)
            with g.fixed_weights():
                g.forward(x)
            assert layer._derived is not None
            g.forward(x)
        assert len(calls) == 1
        assert layer._derived is None


def test_langevin_reuses_the_transformed_weights(monkeypatch):
    """ABP.langevin runs its loop with the weights fixed: U once for all its steps, and the
    same chain as the same loop written out with U computed in every pass."""
    from abp_np.abp import ABP

    layer = make_layer(3, 8)
    g = Generator([layer], (3, 8, 8))
    abp = ABP(g, sigma=0.3, langevin_steps=4, step_size=0.1, noise=False)
    rng = np.random.default_rng(3)
    z = rng.standard_normal((2, 3, 8, 8))
    y = rng.standard_normal((2, 8, 16, 16))
    with using(winograd="on"):
        calls = count_transforms(monkeypatch)
        got = abp.langevin(z, y)
        assert len(calls) == 1
        want = z.copy()
        for _ in range(4):  # (5) without noise, each pass computing U anew
            dz = g.backward((y - g.forward(want)) / 0.3**2, need_param_grads=False)
            want += 0.5 * 0.1**2 * (dz - want)
        assert len(calls) == 5
    np.testing.assert_array_equal(got, want)


def test_learning_rule_bounds_the_transformed_weights():
    """In the learning step's block the wider rule takes a layer only while its U of F(4x4),
    144 Cout Cin values, fits in BLOCK_BYTES (8 MiB); the ordinary rule is never narrowed."""
    assert winograd.BLOCK_BYTES == 8 * 2**20
    small32 = ((64, 128, 4, 4), (128, 64, 5, 5))  # U: 144 * 64 * 128 * 4 B = 4.7 MB
    assert winograd.worth_it(*small32, reuse=True, learning=True, itemsize=4)
    assert not winograd.worth_it(*small32, reuse=True, learning=True, itemsize=8)  # 9.4 MB
    faces64 = ((64, 512, 4, 4), (512, 256, 5, 5))  # U: 75.5 MB
    assert winograd.worth_it(*faces64, reuse=True)
    assert not winograd.worth_it(*faces64, reuse=True, learning=True, itemsize=4)
    ordinary = ((64, 256, 8, 8), (256, 128, 5, 5))  # N H W = 4096 >= 18 Cout; U 75.5 MB
    assert winograd.worth_it(*ordinary, reuse=True, learning=True, itemsize=8)
    assert not winograd.worth_it(*small32, learning=True)  # no block: no wider rule


def one_layer_abp(monkeypatch, cin, cout, x_shape, steps, record):
    """An ABP on a one-layer generator whose backward passes append ``record(layer, full)``
    (when not None) to the returned list ``seen``: (layer, abp, seen)."""
    from abp_np.abp import ABP

    layer = make_layer(cin, cout)
    g = Generator([layer], x_shape[1:])
    abp = ABP(g, sigma=0.3, langevin_steps=steps, step_size=0.1, noise=False)
    seen = []
    real = g.backward

    def spy(dy, need_param_grads=True):
        entry = record(layer, need_param_grads)
        if entry is not None:
            seen.append(entry)
        return real(dy, need_param_grads)

    monkeypatch.setattr(g, "backward", spy)
    return layer, abp, seen


@pytest.mark.parametrize(
    "x_shape, cout, takes_it",
    [
        ((2, 4, 4, 4), 8, True),  # N H W = 4 Cout: the wider rule only; U 36 kB
        ((16, 128, 4, 4), 64, False),  # the wider rule, but U 9.4 MB > BLOCK_BYTES
    ],
)
def test_learning_step_runs_with_fixed_weights(monkeypatch, x_shape, cout, takes_it):
    """ABP.learn's forward and backward pass run in one fixed_weights(learning=True) block: a
    4 x 4 layer that the wider rule takes (and whose U is small) takes the Winograd path, U is
    computed once for both passes, the block is left before the update, and the weight
    gradients are those of the direct path (winograd off) to rounding."""
    need_compiled()
    N, cin = x_shape[:2]
    assert not winograd.worth_it(x_shape, (cin, cout, 5, 5))
    rng = np.random.default_rng(6)
    z = rng.standard_normal(x_shape)
    y = rng.standard_normal((N, cout, 8, 8))
    grads = {}

    def record(layer, full):
        return took_winograd(layer), layer._derived is not None, layer._derived.learning

    for mode in ("off", "auto"):
        layer, abp, seen = one_layer_abp(monkeypatch, cin, cout, x_shape, 1, record)
        calls = count_transforms(monkeypatch)
        w0 = layer.params["weight"].copy()
        with using(winograd=mode):
            abp.learn(z, y)
        took = mode == "auto" and takes_it
        assert seen == [(took, True, True)]
        assert len(calls) == int(took)
        assert layer._derived is None  # left before the optimiser's step
        assert not np.array_equal(layer.params["weight"], w0)  # and the step was taken
        grads[mode] = {k: v.copy() for k, v in layer.grads.items()}
    for k, want in grads["off"].items():
        np.testing.assert_allclose(grads["auto"][k], want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    "x_shape, cout, route",
    [
        # the learning rule takes it too (U 36 kB): the learning step's own Winograd passes
        ((2, 4, 4, 4), 8, "winograd"),
        # the Langevin loop's rule only (float64 U of 9.4 MB > BLOCK_BYTES): the forward pass
        # with the loop's U, the backward by the columns
        ((16, 128, 4, 4), 64, "winograd_kept"),
    ],
)
def test_alternate_reuses_the_langevin_loops_u_in_the_learning_step(
    monkeypatch, x_shape, cout, route
):
    """ABP.alternate runs the learning step's passes inside the Langevin loop's block: U is
    computed once for the whole iteration; a layer the learning rule leaves to the columns
    takes its forward pass on the kept U and drops it before the backward pass. Z is that of
    ABP.langevin, bit for bit; the gradients are those of the direct path to rounding."""
    need_compiled()
    N, cin = x_shape[:2]
    rng = np.random.default_rng(8)
    z0 = rng.standard_normal(x_shape)
    y = rng.standard_normal((N, cout, 8, 8))
    runs = {}

    def record(layer, full):  # the learning step's backward pass: its route, the U kept
        if full:
            return layer._cache.route, [
                k for k in layer._derived if str(k).startswith("winograd U")
            ]
        return None

    for kind in ("off", "separate", "alternate"):
        layer, abp, seen = one_layer_abp(monkeypatch, cin, cout, x_shape, 3, record)
        calls = count_transforms(monkeypatch)
        with using(winograd="off" if kind == "off" else "auto"):
            if kind == "alternate":
                z, _ = abp.alternate(z0, y)
            else:
                z = abp.langevin(z0, y)
                abp.learn(z, y)
        assert layer._derived is None
        if kind == "alternate":
            assert len(calls) == 1  # the loop's U, and no other
            kept = ["winograd U, m=4"] if route == "winograd" else []
            assert seen == [(route, kept)]
        elif kind == "separate":
            assert len(calls) == (2 if route == "winograd" else 1)
            assert seen[0][0] == ("winograd" if route == "winograd" else "phases")
        runs[kind] = (z, {k: v.copy() for k, v in layer.grads.items()}, layer.params["weight"])
    np.testing.assert_array_equal(runs["alternate"][0], runs["separate"][0])

    def close(got, want):  # float64 rounding, against the array's scale
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-9 * np.abs(want).max())

    for kind in ("separate", "alternate"):
        close(runs[kind][0], runs["off"][0])
        for k, want in runs["off"][1].items():
            close(runs[kind][1][k], want)
        close(runs[kind][2], runs["off"][2])


def test_langevin_with_a_generator_that_has_no_fixed_weights():
    """A generator-like object without fixed_weights() still runs (nothing is kept)."""
    from abp_np.abp import ABP

    class Plain:  # forward / backward / latent_shape, as ABP asks, and nothing more
        def __init__(self, g):
            self.g, self.latent_shape, self.dtype = g, g.latent_shape, g.dtype

        def __getattr__(self, name):
            if name == "fixed_weights":
                raise AttributeError(name)
            return getattr(self.g, name)

    g = Generator([make_layer(3, 8)], (3, 8, 8))
    rng = np.random.default_rng(4)
    z, y = rng.standard_normal((2, 3, 8, 8)), rng.standard_normal((2, 8, 16, 16))
    with using(winograd="on"):
        want = ABP(g, sigma=0.3, langevin_steps=2, step_size=0.1, noise=False).langevin(z, y)
        got = ABP(Plain(g), sigma=0.3, langevin_steps=2, step_size=0.1, noise=False).langevin(z, y)
    np.testing.assert_array_equal(got, want)


def test_using_rejects_unknown_modes():
    """using(winograd="bogus") raises ValueError and leaves the mode as it was."""
    before = switches().winograd
    with pytest.raises(ValueError, match="bogus"), using(winograd="bogus"):
        pass
    assert switches().winograd == before
    with using(winograd="off"):
        assert switches().winograd == "off"
    assert switches().winograd == before


# --- 9. the four compiled kernels, element by element ----------------------------------------------


def gather_loops(x, row0, col0, m, nt):
    """d[i, j, c, p] = x[b, c, row0 + m ti + i, col0 + m tj + j] (0 outside x)."""
    n, C, H, W = x.shape
    th, tw = nt
    d = np.zeros((m + 2, m + 2, C, n * th * tw), dtype=x.dtype)
    for b in range(n):
        for ti in range(th):
            for tj in range(tw):
                p = (b * th + ti) * tw + tj
                for i in range(m + 2):
                    for j in range(m + 2):
                        h, w = row0 + m * ti + i, col0 + m * tj + j
                        if 0 <= h < H and 0 <= w < W:
                            d[i, j, :, p] = x[b, :, h, w]
    return d


def overlap_add_loops(dd, x_shape, row0, col0, m, nt):
    """dx[b, c, h, w] = sum of dd[i, j, c, p] over the (i, j, p) that gather reads from (h, w):
    the transpose of :func:`gather_loops`, found by gathering the positions 1, 2, ... of x."""
    # d.flat[k] came from x.flat[source.flat[k] - 1], or from outside x where source is 0
    source = gather_loops(
        np.arange(1, np.prod(x_shape) + 1, dtype=F64).reshape(x_shape), row0, col0, m, nt
    )
    inside = source.ravel() > 0
    dx = np.zeros(int(np.prod(x_shape)), dtype=dd.dtype)
    np.add.at(dx, source.ravel()[inside].astype(np.int64) - 1, dd.ravel()[inside])
    return dx.reshape(x_shape)


def shuffle_loops(Y, n, m, nt, bias=None):
    """y[b, o, 2 (m ti + i) + r, 2 (m tj + j) + r2] = Y[i, j, r, r2, o, p] (+ bias[o])."""
    th, tw = nt
    Cout = Y.shape[4]
    y = np.zeros((n, Cout, 2 * m * th, 2 * m * tw), dtype=Y.dtype)
    for b in range(n):
        for ti in range(th):
            for tj in range(tw):
                p = (b * th + ti) * tw + tj
                for i in range(m):
                    for j in range(m):
                        for r in range(2):
                            for r2 in range(2):
                                oh, ow = 2 * (m * ti + i) + r, 2 * (m * tj + j) + r2
                                y[b, :, oh, ow] = Y[i, j, r, r2, :, p]
                                if bias is not None:
                                    y[b, :, oh, ow] += bias
    return y


# (x shape, row0, col0, m, tiles): the paper's tiling (row0 = col0 = -1, H = m th), and tilings
# that start inside x, start two columns left of it, stop short of its end or run past it.
TILINGS = [
    ((2, 3, 4, 8), -1, -1, 4, (1, 2)),
    ((2, 2, 6, 4), -1, -1, 2, (3, 2)),
    ((1, 2, 5, 7), 0, -2, 2, (2, 3)),
    ((3, 1, 9, 3), 1, -1, 4, (1, 1)),
]


def unshuffle_loops(y, m, nt):
    """The inverse of :func:`shuffle_loops` (no bias): the permutation it applies, undone."""
    n, Cout = y.shape[:2]
    shape = (m, m, 2, 2, Cout, n * nt[0] * nt[1])
    # shuffle the positions 0, 1, 2, ... of Y: y.flat[k] came from Y.flat[source.flat[k]]
    source = shuffle_loops(np.arange(y.size, dtype=F64).reshape(shape), n, m, nt)
    Y = np.empty(y.size, dtype=y.dtype)
    Y[source.ravel().astype(np.int64)] = y.ravel()
    return Y.reshape(shape)


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("x_shape, row0, col0, m, nt", TILINGS)
def test_compiled_kernels_match_their_definitions(dtype, x_shape, row0, col0, m, nt):
    """_cpu's winograd_input, its adjoint, winograd_output and its adjoint, element for element.

    Expected: the loops above for the rearrangements, and the Kronecker-form transforms
    BB = B^T (x) B^T, AA = A^T (x) A^T (checked against the correlation loops in section 1),
    whose entries are integers, as are the data: every sum is exact in both dtypes. Outputs
    start filled with NaN, so an element the C code forgets to write shows up.
    """
    need_compiled()
    rng = np.random.default_rng(9)
    n, C = x_shape[:2]
    a, P, Cout = m + 2, n * nt[0] * nt[1], 3
    y_shape = (n, Cout, 2 * m * nt[0], 2 * m * nt[1])
    BB, _, AA = winograd.transforms(m, F64)
    assert np.array_equal(BB, np.round(BB)) and np.array_equal(AA, np.round(AA))

    def ints(*shape):  # small integers: every sum below is exact in float32 and float64
        return rng.integers(-8, 9, size=shape).astype(dtype)

    x = ints(*x_shape)
    V = np.full((a * a, C, P), np.nan, dtype)
    _cpu.winograd_input(x, V, row0, col0, m, nt)
    d = gather_loops(x, row0, col0, m, nt).reshape(a * a, -1)
    np.testing.assert_array_equal(V, (BB @ d).reshape(a * a, C, P))

    dV = ints(a * a, C, P)
    dx = np.full(x_shape, np.nan, dtype)
    _cpu.winograd_input_adjoint(dV, dx, row0, col0, m, nt)
    dd = (BB.T @ dV.reshape(a * a, -1)).reshape(a, a, C, P)
    np.testing.assert_array_equal(dx, overlap_add_loops(dd, x_shape, row0, col0, m, nt))

    M, bias = ints(a * a, 4 * Cout, P), ints(Cout)
    Y = (AA @ M.reshape(a * a, -1)).reshape(m, m, 2, 2, Cout, P)
    for b in (None, bias):
        y = np.full(y_shape, np.nan, dtype)
        _cpu.winograd_output(M, y, m, nt, bias=b)
        np.testing.assert_array_equal(y, shuffle_loops(Y, n, m, nt, b))

    dy = ints(*y_shape)
    dM = np.full((a * a, 4 * Cout, P), np.nan, dtype)
    _cpu.winograd_output_adjoint(dy, dM, m, nt)
    dY = unshuffle_loops(dy, m, nt).reshape(m * m, -1)
    np.testing.assert_array_equal(dM, (AA.T @ dY).reshape(a * a, 4 * Cout, P))


def test_compiled_wrappers_reject_bad_arrays():
    """Mixed dtypes, non-contiguous arrays, wrong shapes and integer arrays: ValueError."""
    need_compiled()
    x = np.zeros((1, 2, 4, 4), dtype=F32)
    V = np.zeros((36, 2, 1), dtype=F64)
    with pytest.raises(ValueError, match="dtype"):
        _cpu.winograd_input(x, V, -1, -1, 4, (1, 1))
    x64 = np.zeros((1, 2, 4, 8), dtype=F64)[..., ::2]  # a strided view
    assert not x64.flags.c_contiguous
    with pytest.raises(ValueError, match="contiguous"):
        _cpu.winograd_input(x64, V, -1, -1, 4, (1, 1))
    with pytest.raises(ValueError, match="shape"):
        _cpu.winograd_input(np.zeros((1, 2, 4, 4)), np.zeros((36, 2, 2)), -1, -1, 4, (1, 1))
    with pytest.raises(ValueError, match="float32 or float64"):
        _cpu.winograd_input_adjoint(
            np.zeros((36, 2, 1), np.int64), np.zeros((1, 2, 4, 4), np.int64), -1, -1, 4, (1, 1)
        )
    M, y = np.zeros((36, 12, 1)), np.zeros((1, 3, 8, 8))
    with pytest.raises(ValueError, match="do not match"):
        _cpu.winograd_output(M, y[..., :6].copy(), 4, (1, 1))
    with pytest.raises(ValueError, match="do not match"):
        _cpu.winograd_output_adjoint(y, np.zeros((36, 8, 1)), 4, (1, 1))
    with pytest.raises(ValueError, match="bias"):
        _cpu.winograd_output(M, y, 4, (1, 1), bias=np.zeros(4))


# --- 10. without the compiled library ---------------------------------------------------------------


def run_python(code: str, **env_changes: str) -> list[str]:
    """Run ``code`` in a fresh interpreter (abp_np as this test run imports it, tests/
    importable), from a folder outside the checkout; its stdout lines."""
    with tempfile.TemporaryDirectory() as outside:
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            env=subprocess_env(ROOT / "tests", **env_changes),
            cwd=outside,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_turned_off_by_the_environment(tmp_path):
    """ABP_CPU_KERNELS=0: the ``c`` setting starts off, reason() names the variable, nothing is
    compiled, and ``using(c=True)`` still turns the kernels on."""
    lines = run_python(
        """
        import numpy as np
        from abp_np import backend
        from abp_np.fast import cpu as _cpu
        from abp_np.layers import BatchNorm2d

        print(backend.switches().c)
        print(_cpu.enabled())
        print(_cpu.reason())
        BatchNorm2d(3).forward(np.ones((2, 3, 4, 4), np.float32))
        import os
        print(len(os.listdir(os.environ["ABP_CACHE_DIR"])))
        with backend.using(c=True):
            print(backend.switches().c)
        """,
        ABP_CPU_KERNELS="0",
        ABP_CACHE_DIR=str(tmp_path),
    )
    setting, enabled, reason, built, inside = lines
    assert setting == "False"
    assert enabled == "False"
    assert "ABP_CPU_KERNELS" in reason
    assert built == "0"  # not even a cache folder's worth of work
    assert inside == "True"


def test_failed_build_falls_back_to_numpy(tmp_path):
    """A compiler that fails: not available, reason() says so, and the layer is still right."""
    lines = run_python(
        """
        import numpy as np
        import oracles
        from abp_np.backend import using
        from abp_np.fast import cpu as _cpu
        from abp_np.fast import winograd
        from abp_np.layers import ConvTranspose2d

        print(_cpu.available())
        print(_cpu.reason())
        rng = np.random.default_rng(0)
        layer = ConvTranspose2d(3, 4, 5, stride=2, padding=2, output_padding=1,
                                dtype=np.float64, rng=rng)
        layer.params["bias"][...] = rng.standard_normal(4)
        x = rng.standard_normal((2, 3, 4, 6))
        with using(winograd="on"):
            y = layer.forward(x)
        print(layer._cache.route)
        w, b = layer.params["weight"], layer.params["bias"]
        expected = oracles.conv_transpose2d(x, w, b, (2, 2), (2, 2), (1, 1))
        print(np.allclose(y, expected, rtol=1e-10, atol=1e-12))
        big = ConvTranspose2d(3, 8, 5, stride=2, padding=2, output_padding=1,
                              dtype=np.float64, rng=rng)
        x_big = np.ones((3, 3, 8, 8))
        print(winograd.worth_it(x_big.shape, big.params["weight"].shape))
        with using(winograd="auto"):
            big.forward(x_big)
        print(isinstance(big._cache, winograd.WinogradCache))
        """,
        CC=shutil.which("false") or "/bin/false",  # a "compiler" that always fails
        ABP_CACHE_DIR=str(tmp_path),
        ABP_CPU_KERNELS="1",
    )
    available, reason, path, matches, worth_it, auto_took_it = lines
    assert available == "False"
    assert "failed to build" in reason
    assert path == "winograd"  # "on" takes the path with the NumPy data movement
    assert matches == "True"
    assert worth_it == "True"  # a layer "auto" would pick with the compiled kernels,
    assert auto_took_it == "False"  # but it needs them
    assert list(tmp_path.iterdir()) == []  # no half-built library left behind
