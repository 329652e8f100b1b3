"""Every layer against an independent oracle, and its backward pass against finite differences.

Expected values come from ``tests/oracles.py`` (naive loops), from closed forms written
here (Caffe's all-ones overlap count, the adjoint identity), or from PyTorch when it is
installed; never from abp_np itself. Gradients are checked in float64 with a random
upstream gradient (:mod:`abp_np.gradcheck`).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from abp_np.backend import to_numpy
from abp_np.gradcheck import assert_gradients_close
from abp_np.layers import (
    BatchNorm1d,
    BatchNorm2d,
    ConvTranspose1d,
    ConvTranspose2d,
    LeakyReLU,
    Linear,
    ReLU,
    Reshape,
    Tanh,
)

import oracles
from conftest import TOL

F64 = np.float64
HYPO = settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


# --- helpers --------------------------------------------------------------------------------------


def device_name(xp) -> str:
    return "cpu" if xp is np else "gpu"


def randomize(layer, rng):
    """Give every parameter O(1) random values (the library's init would make gradients tiny).

    Batch-norm gains are drawn around 1 so that no channel is switched off.
    """
    for name, p in layer.params.items():
        values = rng.standard_normal(p.shape)
        if isinstance(layer, (BatchNorm1d, BatchNorm2d)) and name == "weight":
            values = 1.0 + 0.5 * values
        p[...] = values.astype(p.dtype)
    return layer


def on(layer, xp):
    """Move a layer to the device of ``xp``."""
    return layer.to(device_name(xp))


def expected_output(layer, x):
    """The oracle's output for ``layer`` (float64, NumPy), from the layer's parameters."""
    return oracles.layer_forward(layer, x)


# One small instance of every layer: name -> (factory(dtype, rng), input shape)
CASES = {
    "Linear": (lambda dt, r: Linear(4, 3, dtype=dt, rng=r), (3, 4)),
    "Linear-nobias": (lambda dt, r: Linear(4, 3, bias=False, dtype=dt, rng=r), (3, 4)),
    "ConvTranspose2d": (
        lambda dt, r: ConvTranspose2d(
            2, 3, (3, 2), stride=(2, 1), padding=(1, 0), output_padding=(1, 0), dtype=dt, rng=r
        ),
        (2, 2, 3, 4),
    ),
    "ConvTranspose1d": (
        lambda dt, r: ConvTranspose1d(
            2, 3, 4, stride=3, padding=1, output_padding=2, dtype=dt, rng=r
        ),
        (2, 2, 5),
    ),
    "BatchNorm1d-2d": (lambda dt, r: BatchNorm1d(3, dtype=dt), (5, 3)),
    "BatchNorm1d-3d": (lambda dt, r: BatchNorm1d(3, dtype=dt), (2, 3, 4)),
    "BatchNorm2d": (lambda dt, r: BatchNorm2d(3, dtype=dt), (2, 3, 2, 3)),
    "ReLU": (lambda dt, r: ReLU(dtype=dt), (2, 3, 4)),
    "LeakyReLU": (lambda dt, r: LeakyReLU(0.2, dtype=dt), (2, 3, 4)),
    "Tanh": (lambda dt, r: Tanh(dtype=dt), (2, 3, 4)),
    "Reshape": (lambda dt, r: Reshape((3, 2, 2), dtype=dt), (2, 12)),
}


def make_case(name, xp, dtype=F64, seed=0):
    factory, shape = CASES[name]
    rng = np.random.default_rng(seed)
    layer = on(randomize(factory(dtype, rng), rng), xp)
    x = xp.asarray(rng.standard_normal(shape).astype(dtype))
    return layer, x, rng


# --- every layer: forward, gradients, contract ----------------------------------------------------


@pytest.mark.parametrize("name", CASES)
def test_forward_matches_oracle_float64(name, xp):
    layer, x, _ = make_case(name, xp)
    y = layer.forward(x)
    assert y.dtype == F64
    np.testing.assert_allclose(to_numpy(y), expected_output(layer, x), **TOL[np.dtype(F64)])


@pytest.mark.parametrize("name", CASES)
def test_gradients_float64(name, xp):
    layer, x, rng = make_case(name, xp)
    assert_gradients_close(layer, x, rng=rng)


@pytest.mark.parametrize("name", CASES)
def test_float32_is_default_and_close_to_float64(name, xp):
    factory, shape = CASES[name]
    layer32 = factory(np.float32, np.random.default_rng(0))
    assert layer32.dtype == np.float32
    assert all(p.dtype == np.float32 for p in layer32.params.values())
    layer32 = on(randomize(layer32, np.random.default_rng(1)), xp)
    layer64, x64, rng = make_case(name, xp)
    for k in layer64.params:  # the same values in both precisions
        layer64.params[k][...] = layer32.params[k].astype(F64)
    x32 = x64.astype(np.float32)
    y32 = layer32.forward(x32)
    assert y32.dtype == np.float32
    y64 = layer64.forward(x32.astype(F64))
    tol = TOL[np.dtype(np.float32)]
    scale = max(1.0, float(np.abs(to_numpy(y64)).max()))
    np.testing.assert_allclose(
        to_numpy(y32), to_numpy(y64), rtol=tol["rtol"], atol=tol["atol"] * scale
    )
    g = rng.standard_normal(y64.shape)
    dx32 = layer32.backward(xp.asarray(g.astype(np.float32)))
    dx64 = layer64.backward(xp.asarray(g))
    assert dx32.dtype == np.float32
    scale = max(1.0, float(np.abs(to_numpy(dx64)).max()))
    np.testing.assert_allclose(
        to_numpy(dx32), to_numpy(dx64), rtol=tol["rtol"], atol=tol["atol"] * scale
    )
    for k in layer64.grads:
        scale = max(1.0, float(np.abs(to_numpy(layer64.grads[k])).max()))
        assert layer32.grads[k].dtype == np.float32
        np.testing.assert_allclose(
            to_numpy(layer32.grads[k]),
            to_numpy(layer64.grads[k]),
            rtol=tol["rtol"],
            atol=tol["atol"] * scale,
        )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", CASES)
def test_need_param_grads_false_gives_identical_dx_and_leaves_grads(name, dtype, xp):
    layer, x, rng = make_case(name, xp, dtype)
    g = xp.asarray(rng.standard_normal(layer.forward(x).shape).astype(dtype))
    dx_full = layer.backward(g, need_param_grads=True)
    dx_full = dx_full.copy()
    sentinels = {}
    for k, grad in layer.grads.items():
        grad[...] = xp.asarray(rng.standard_normal(grad.shape).astype(dtype))
        sentinels[k] = grad.copy()
    layer.forward(x)
    dx_only = layer.backward(g, need_param_grads=False)
    assert dx_only.dtype == dx_full.dtype
    np.testing.assert_array_equal(to_numpy(dx_only), to_numpy(dx_full))
    for k, grad in layer.grads.items():
        np.testing.assert_array_equal(to_numpy(grad), to_numpy(sentinels[k]))


@pytest.mark.parametrize("name", CASES)
def test_backward_before_forward_raises(name):
    layer, x, _ = make_case(name, np)
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(x)


@pytest.mark.parametrize("name", CASES)
def test_backward_with_a_wrong_dy_shape_is_rejected_before_any_work(name):
    layer, x, rng = make_case(name, np)
    y = layer.forward(x)
    for grad in layer.grads.values():  # sentinels: a rejected call must not touch them
        grad[...] = rng.standard_normal(grad.shape)
    before = {k: g.copy() for k, g in layer.grads.items()}
    for bad in ((y.shape[0] + 1, *y.shape[1:]), (*y.shape, 1), y.shape[:-1]):
        dy = rng.standard_normal(bad)
        expected = re.escape(f"dy has shape {tuple(bad)}, expected {tuple(y.shape)}")
        with pytest.raises(ValueError, match=_pattern(name.split("-")[0]) + ".*" + expected):
            layer.backward(dy)
    with pytest.raises(ValueError, match=_pattern(name.split("-")[0], "dy must be", "array")):
        layer.backward(rng.standard_normal(y.shape).tolist())
    for k, g in layer.grads.items():
        np.testing.assert_array_equal(g, before[k])
    # the right shape still works after the rejected calls
    assert layer.backward(rng.standard_normal(y.shape)).shape == x.shape


def test_backward_after_a_failed_forward_or_a_move_raises():
    layer = BatchNorm2d(3)
    layer.forward(np.ones((2, 3, 2, 2), np.float32))
    with pytest.raises(ValueError, match="more than one value"):
        layer.forward(np.ones((1, 3, 1, 1), np.float32))
    with pytest.raises(RuntimeError, match=r"BatchNorm2d.*before forward.*forward\(x\) first"):
        layer.backward(np.ones((1, 3, 1, 1), np.float32))
    layer.forward(np.ones((2, 3, 2, 2), np.float32))
    layer.to("cpu")  # a move drops the cache
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.ones((2, 3, 2, 2), np.float32))


def test_forward_lets_go_of_the_last_pass_before_computing():
    """The values saved by the previous forward are released before the next forward
    computes its own (the peak memory holds one set, not two), for every layer."""
    import gc
    import weakref

    class Saved:  # a weak-referenceable stand-in for a layer's saved values
        pass

    x = np.random.default_rng(0).standard_normal((2, 4, 4, 4)).astype(np.float32)
    for layer in (ConvTranspose2d(4, 3, 5, 2, 2, 1), BatchNorm2d(4), ReLU(), Tanh()):
        layer.forward(x)
        layer._cache = old = Saved()
        seen: list[bool] = []
        inner, ref = layer._forward, weakref.ref(old)

        def spy(x, inner=inner, ref=ref, seen=seen):
            gc.collect()
            seen.append(ref() is None)
            return inner(x)

        layer._forward = spy
        del old
        layer.forward(x)
        assert seen == [True], layer


# --- bad input ------------------------------------------------------------------------------------


def _pattern(layer_name, *words):
    return re.escape(layer_name) + ".*" + ".*".join(re.escape(w) for w in words)


@pytest.mark.parametrize("name", CASES)
def test_non_array_input_is_rejected(name):
    layer, x, _ = make_case(name, np, np.float32)
    with pytest.raises(ValueError, match=_pattern(name.split("-")[0], "NumPy or CuPy array")):
        layer.forward(x.tolist())


@pytest.mark.parametrize("bad_dtype", [np.float64, np.int64, np.float16])
@pytest.mark.parametrize("name", CASES)
def test_wrong_dtype_is_rejected(name, bad_dtype):
    layer, x, _ = make_case(name, np, np.float32)
    with pytest.raises(ValueError, match=_pattern(name.split("-")[0], "dtype", "float32")):
        layer.forward(x.astype(bad_dtype))


# name -> list of (bad input shape, words the message must contain after the layer name)
BAD_SHAPES = {
    "Linear": [
        ((3, 4, 1), ["2-d", "(N, in_features)"]),
        ((3, 5), ["4 input features"]),
        ((4,), ["2-d"]),
    ],
    "ConvTranspose2d": [
        ((2, 2, 3), ["4-d", "(N, C, H, W)"]),
        ((2, 3, 3, 4), ["2 channels"]),
        ((2, 2, 3, 4, 1), ["4-d"]),
    ],
    "ConvTranspose1d": [((2, 2, 5, 1), ["3-d", "(N, C, L)"]), ((2, 1, 5), ["2 channels"])],
    "BatchNorm1d-2d": [
        ((5, 3, 2, 2), ["(N, C) or (N, C, L)"]),
        ((5, 4), ["3 channels"]),
        ((5,), ["(N, C) or (N, C, L)"]),
    ],
    "BatchNorm2d": [((2, 3, 4), ["(N, C, H, W)"]), ((2, 2, 2, 3), ["3 channels"])],
    "Reshape": [((2, 11), ["11 values per example", "expected 12"]), ((), ["batch axis"])],
}


@pytest.mark.parametrize(
    "name, shape, words",
    [(n, s, w) for n, cases in BAD_SHAPES.items() for s, w in cases],
)
def test_wrong_shape_is_rejected(name, shape, words):
    layer, _, rng = make_case(name, np, np.float32)
    x = rng.standard_normal(shape).astype(np.float32)
    with pytest.raises(ValueError, match=_pattern(name.split("-")[0], *words)):
        layer.forward(x)


def test_reshape_rejects_an_input_without_a_batch_axis():
    with pytest.raises(ValueError, match=r"Reshape.*batch axis"):
        Reshape((1,)).forward(np.array(1.0, np.float32))


def test_batchnorm_needs_more_than_one_value_per_channel():
    with pytest.raises(ValueError, match=r"BatchNorm1d.*more than one value per channel"):
        BatchNorm1d(3).forward(np.ones((1, 3), np.float32))
    with pytest.raises(ValueError, match=r"BatchNorm2d.*more than one value per channel"):
        BatchNorm2d(3).forward(np.ones((1, 3, 1, 1), np.float32))
    # evaluation mode uses running statistics, so a single example is fine
    assert BatchNorm2d(3).eval().forward(np.ones((1, 3, 1, 1), np.float32)).shape == (1, 3, 1, 1)


@pytest.mark.parametrize(
    "layer, shape",
    [
        (ConvTranspose2d(1, 1, 1, padding=1), (1, 1, 1, 3)),
        (ConvTranspose2d(1, 1, (2, 1), padding=(0, 1)), (1, 1, 2, 1)),
        (ConvTranspose1d(1, 1, 2, padding=1), (1, 1, 1)),
    ],
)
def test_empty_output_is_rejected(layer, shape):
    with pytest.raises(ValueError, match=r"ConvTranspose[12]d.*empty output"):
        layer.forward(np.ones(shape, np.float32))


@pytest.mark.parametrize(
    "build, pattern",
    [
        (lambda: Linear(0, 3), r"Linear.*>= 1"),
        (lambda: Linear(3, 0), r"Linear.*>= 1"),
        (lambda: ConvTranspose2d(0, 3, 3), r"ConvTranspose2d.*channels"),
        (lambda: ConvTranspose2d(2, 3, 0), r"ConvTranspose2d.*kernel_size"),
        (lambda: ConvTranspose2d(2, 3, (3, 3, 3)), r"ConvTranspose2d.*kernel_size"),
        (lambda: ConvTranspose2d(2, 3, 3, stride=0), r"ConvTranspose2d.*stride"),
        (lambda: ConvTranspose2d(2, 3, 3, padding=-1), r"ConvTranspose2d.*padding"),
        (
            lambda: ConvTranspose2d(2, 3, 3, stride=2, output_padding=2),
            r"ConvTranspose2d.*output_padding must be smaller than stride",
        ),
        (
            lambda: ConvTranspose2d(2, 3, 3, stride=(2, 1), output_padding=(1, 1)),
            r"ConvTranspose2d.*output_padding must be smaller than stride",
        ),
        (lambda: ConvTranspose1d(2, 3, (1, 3)), r"ConvTranspose1d.*kernel_size must be an int"),
        (lambda: ConvTranspose1d(2, 3, 3, stride=(2, 2)), r"ConvTranspose1d.*stride"),
        (
            lambda: ConvTranspose1d(2, 3, 3, stride=3, output_padding=3),
            r"ConvTranspose1d.*output_padding must be smaller than stride",
        ),
        (lambda: BatchNorm1d(3, eps=0.0), r"BatchNorm1d.*eps must be .*> 0.*got 0\.0"),
        (lambda: BatchNorm2d(3, eps=-1e-5), r"BatchNorm2d.*eps must be .*> 0.*got -1e-05"),
        (lambda: BatchNorm2d(3, eps=float("nan")), r"BatchNorm2d.*eps.*got nan"),
        (lambda: BatchNorm2d(3, eps=float("inf")), r"BatchNorm2d.*eps.*got inf"),
        (lambda: BatchNorm2d(3, eps="1e-5"), r"BatchNorm2d.*eps.*got '1e-5'"),
        (lambda: BatchNorm1d(3, momentum=-0.1), r"BatchNorm1d.*momentum.*\[0, 1\].*got -0\.1"),
        (lambda: BatchNorm2d(3, momentum=1.5), r"BatchNorm2d.*momentum.*\[0, 1\].*got 1\.5"),
        (lambda: BatchNorm2d(3, momentum=float("nan")), r"BatchNorm2d.*momentum.*got nan"),
        (lambda: BatchNorm1d(0), r"BatchNorm1d.*num_features"),
        (lambda: BatchNorm2d(0), r"BatchNorm2d.*num_features"),
        (lambda: LeakyReLU(0.0), r"LeakyReLU.*negative_slope"),
        (lambda: LeakyReLU(-0.2), r"LeakyReLU.*negative_slope"),
        (lambda: Reshape((3, 0)), r"Reshape.*shape must be positive"),
        (lambda: Tanh(dtype=np.int32), r"Tanh.*dtype int32"),
        (lambda: ReLU(dtype=np.float16), r"ReLU.*float16"),
        (lambda: Linear(2, 3, dtype=np.complex128), r"Linear.*complex128"),
        (lambda: BatchNorm2d(3, dtype=np.int64), r"BatchNorm2d.*int64"),
        (lambda: ConvTranspose1d(1, 1, 3, dtype="float16"), r"ConvTranspose1d.*float16"),
    ],
)
def test_bad_constructor_arguments(build, pattern):
    with pytest.raises(ValueError, match=pattern):
        build()


def test_batchnorm_accepts_the_ends_of_the_momentum_range():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 3, 2, 2))
    frozen = BatchNorm2d(3, momentum=0.0, dtype=F64)
    frozen.forward(x)
    np.testing.assert_array_equal(frozen.buffers["running_mean"], np.zeros(3))
    np.testing.assert_array_equal(frozen.buffers["running_var"], np.ones(3))
    latest = BatchNorm2d(3, momentum=1.0, dtype=F64)
    latest.forward(x)
    values = x.transpose(1, 0, 2, 3).reshape(3, -1)  # (C, N H W)
    np.testing.assert_allclose(latest.buffers["running_mean"], values.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(
        latest.buffers["running_var"], values.var(axis=1, ddof=1), rtol=1e-12
    )


@pytest.mark.parametrize("one_d", [False, True], ids=["2d", "1d"])
def test_empty_batch_on_the_gpu_path_takes_the_xp_code(fake_gpu, one_d):  # noqa: F811
    """A batch of 0 examples on the (fake) GPU: nothing to launch, so the xp path runs.

    The kernels' wrappers refuse zero sizes; an empty batch must still give empty outputs
    and zero weight gradients, as on the CPU.
    """
    cp = fake_gpu
    if one_d:
        layer, x_shape, y_shape = ConvTranspose1d(3, 2, 5, 2, 2, 1), (0, 3, 4), (0, 2, 8)
    else:
        layer, x_shape, y_shape = ConvTranspose2d(3, 2, 5, 2, 2, 1), (0, 3, 4, 4), (0, 2, 8, 8)
    rng = np.random.default_rng(0)
    for g in layer.grads.values():
        g[...] = rng.standard_normal(g.shape)  # must come back as exact zeros
    layer.to("gpu")
    cp.launches.clear()
    y = layer.forward(cp.zeros(x_shape, dtype=np.float32))
    dx = layer.backward(cp.zeros(y_shape, dtype=np.float32))
    assert cp.launches == []
    assert y.shape == y_shape and dx.shape == x_shape
    for g in layer.grads.values():
        np.testing.assert_array_equal(g.get(), np.zeros(g.shape, np.float32))


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["Linear", "ConvTranspose2d", "ConvTranspose1d", "BatchNorm2d"])
def test_device_mismatch_is_rejected(name):
    import cupy

    layer, x, _ = make_case(name, np, np.float32)
    with pytest.raises(ValueError, match=_pattern(name, "input is on gpu", ".to(device)")):
        layer.forward(cupy.asarray(x))
    layer.to("gpu")
    with pytest.raises(ValueError, match=_pattern(name, "input is on cpu", ".to(device)")):
        layer.forward(x)


# --- transposed convolution: property-based tests -------------------------------------------------


@st.composite
def deconv_geometry(draw, dims=2):
    """Random (N, Cin, Cout, in sizes, kernel, stride, padding, output_padding) with a non-empty
    output: the padding is drawn no larger than (uncropped size - 1) / 2."""
    size, k, s, p, op = [], [], [], [], []
    for _ in range(dims):
        size.append(draw(st.integers(1, 4)))
        k.append(draw(st.integers(1, 4)))
        s.append(draw(st.integers(1, 3)))
        op.append(draw(st.integers(0, s[-1] - 1)))
        uncropped = (size[-1] - 1) * s[-1] + k[-1] + op[-1]
        p.append(draw(st.integers(0, min(3, (uncropped - 1) // 2))))
    n = draw(st.integers(1, 2))
    cin = draw(st.integers(1, 3))
    cout = draw(st.integers(1, 3))
    return n, cin, cout, tuple(size), tuple(k), tuple(s), tuple(p), tuple(op)


def make_deconv(geom, dtype=F64, seed=0, bias=True):
    n, cin, cout, size, k, s, p, op = geom
    rng = np.random.default_rng(seed)
    if len(size) == 1:
        layer = ConvTranspose1d(cin, cout, k[0], s[0], p[0], op[0], bias=bias, dtype=dtype)
    else:
        layer = ConvTranspose2d(cin, cout, k, s, p, op, bias=bias, dtype=dtype)
    randomize(layer, rng)
    x = rng.standard_normal((n, cin, *size)).astype(dtype)
    return layer, x, rng


@HYPO
@given(geom=deconv_geometry(2), dtype=st.sampled_from([np.float32, F64]), bias=st.booleans())
def test_conv_transpose2d_forward_matches_naive_loops(xp, geom, dtype, bias):
    layer, x, _ = make_deconv(geom, dtype, bias=bias)
    on(layer, xp)
    y = layer.forward(xp.asarray(x))
    expected = expected_output(layer, x)
    assert y.shape == expected.shape == layer.output_shape(x.shape)
    assert y.dtype == dtype
    tol = TOL[np.dtype(dtype)]
    np.testing.assert_allclose(to_numpy(y), expected, rtol=tol["rtol"], atol=tol["atol"] * 10)


@pytest.mark.parametrize("n", [1, 2], ids=["small-input", "large-input"])
def test_wide_doubling_layer_matches_naive_loops_on_both_sides_of_the_form_switch(xp, n):
    """9 input channels, 3 x 3 input: N H W = 9 <= Cin takes the column form on the CPU,
    18 > Cin the phase form; both must give the oracle's output and pass the gradient check."""
    rng = np.random.default_rng(n)
    layer = on(randomize(ConvTranspose2d(9, 3, 5, 2, 2, 1, dtype=F64), rng), xp)
    x = rng.standard_normal((n, 9, 3, 3))
    y = layer.forward(xp.asarray(x))
    if xp is np:
        assert layer._cache.route == ("columns" if n == 1 else "phases")
    np.testing.assert_allclose(to_numpy(y), expected_output(layer, x), **TOL[np.dtype(F64)])
    assert_gradients_close(layer, xp.asarray(x), rng=rng)


@pytest.mark.parametrize("cin, cout", [(13, 1), (2, 3)], ids=["narrow", "wide"])
@pytest.mark.parametrize("block", ["rows", "examples"])
def test_backward_in_blocks_of_rows_or_examples_matches_the_oracle(monkeypatch, cin, cout, block):
    """The CPU backward builds its columns a block at a time: a few rows of one example, or a few
    examples. dx must be the oracle's adjoint convolution of dy, and dW pass the gradient check,
    for a layer whose dx is written in place (narrow: Cout kh kw <= 2 Cin) and one whose dx goes
    through a buffer (wide)."""
    from abp_np.fast import columns

    rng = np.random.default_rng(4)
    layer = randomize(ConvTranspose2d(cin, cout, 5, 2, 2, 1, dtype=F64), rng)
    x = rng.standard_normal((3, cin, 5, 4))
    per_row = cout * 25 * 4 * 8  # K W values of float64: one row of one example's columns
    block_bytes = 2 * per_row if block == "rows" else 2 * 5 * per_row
    monkeypatch.setattr(columns, "BLOCK_BYTES", block_bytes)  # dx alone
    monkeypatch.setattr(columns, "LEARNING_BLOCK_BYTES", block_bytes)  # with dW
    monkeypatch.setattr(columns, "MIN_COLUMNS", 1)  # blocks as small as the bytes say
    y = layer.forward(x)
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy)
    w = layer.params["weight"]
    expected = oracles.conv2d(dy, w, (2, 2), (2, 2), (5, 4))
    np.testing.assert_allclose(dx, expected, rtol=1e-12, atol=1e-12)
    assert_gradients_close(layer, x, rng=rng)


@pytest.mark.parametrize(
    "shape, learning, expected",
    [
        # texture224's 512 -> 256 layer, dx alone: 358,400 bytes of columns per row of 14, so
        # 4 MiB would cut 11 rows (154 positions) and then 3; at least 256 positions keeps the
        # example's 14 rows whole
        ((1, 14, 14, 6400), False, (1, 14)),
        # faces64's RGB output layer: 75 x 32 x 4 = 9,600 bytes a row, 307,200 an example; 4 MiB
        # holds 13 examples
        ((64, 32, 32, 75), False, (13, 32)),
        # the same with weight gradients: 16 MiB hold 54 examples
        ((64, 32, 32, 75), True, (54, 32)),
        # rows of 112 positions, 716,800 bytes each: 4 MiB hold 5 rows (560 positions)
        ((1, 112, 112, 1600), False, (1, 5)),
        # rows of 4 positions, 4 x 6400 x 4 = 102,400 bytes: 4 MiB would hold 40 rows, so the
        # example's 4 rows fit, and 10 examples of 409,600 bytes
        ((64, 4, 4, 6400), False, (10, 4)),
    ],
)
def test_backward_blocks_hold_the_bytes_and_at_least_min_columns_positions(
    shape, learning, expected
):
    from abp_np.fast import columns

    assert columns.BLOCK_BYTES == 4 * 2**20 and columns.LEARNING_BLOCK_BYTES == 16 * 2**20
    assert columns.MIN_COLUMNS == 256
    N, H, W, K = shape
    assert columns.backward_blocks(N, H, W, K, 4, learning) == expected


@pytest.mark.parametrize("dtype", [np.float32, F64])
def test_column_form_in_blocks_of_examples_matches_naive_loops(monkeypatch, dtype):
    """An RGB output layer takes the column form on the CPU, a block of examples at a time:
    with blocks of 2 examples (the last one short), the output and the gradients must be
    those of the oracle and of the finite differences."""
    from abp_np.fast import columns

    rng = np.random.default_rng(3)
    # Cout kh kw = 75 <= 2 Cin: the column form (the phase form takes layers with more outputs)
    layer = randomize(ConvTranspose2d(40, 3, 5, 2, 2, 1, dtype=dtype), rng)
    x = rng.standard_normal((5, 40, 3, 3)).astype(dtype)
    per_example = 3 * 5 * 5 * 3 * 3 * np.dtype(dtype).itemsize  # Cout kh kw H W values
    monkeypatch.setattr(columns, "BLOCK_BYTES", 2 * per_example)
    y = layer.forward(x)
    assert layer._cache.route == "columns"
    tol = TOL[np.dtype(dtype)]
    np.testing.assert_allclose(y, expected_output(layer, x), rtol=tol["rtol"], atol=tol["atol"])
    if dtype == F64:
        assert_gradients_close(layer, x, rng=rng)


@HYPO
@given(geom=deconv_geometry(1), dtype=st.sampled_from([np.float32, F64]), bias=st.booleans())
def test_conv_transpose1d_forward_matches_naive_loops(xp, geom, dtype, bias):
    layer, x, _ = make_deconv(geom, dtype, bias=bias)
    on(layer, xp)
    y = layer.forward(xp.asarray(x))
    expected = expected_output(layer, x)
    assert y.shape == expected.shape == layer.output_shape(x.shape)
    assert layer.params["weight"].shape == (geom[1], geom[2], geom[4][0])
    tol = TOL[np.dtype(dtype)]
    np.testing.assert_allclose(to_numpy(y), expected, rtol=tol["rtol"], atol=tol["atol"] * 10)


@HYPO
@given(geom=st.one_of(deconv_geometry(2), deconv_geometry(1)))
def test_conv_transpose_gradients(xp, geom):
    layer, x, rng = make_deconv(geom)
    assert_gradients_close(on(layer, xp), xp.asarray(x), rng=rng)


@HYPO
@given(geom=deconv_geometry(2), b=st.floats(-2, 2))
def test_conv_transpose2d_all_ones_overlap(xp, geom, b):
    """Caffe's deconvolution test: x = 1, weight = 1, bias = b.

    Each output pixel equals b + (number of (input pixel, tap) pairs that land on it),
    which is Cin * (overlaps along H) * (overlaps along W), counted by a closed form.
    """
    n, cin, cout, (H, W), (kh, kw), (sh, sw), (ph, pw), (oph, opw) = geom
    layer = on(ConvTranspose2d(cin, cout, (kh, kw), (sh, sw), (ph, pw), (oph, opw), dtype=F64), xp)
    layer.params["weight"][...] = 1.0
    layer.params["bias"][...] = b
    y = to_numpy(layer.forward(xp.ones((n, cin, H, W), dtype=F64)))
    count_h = oracles.overlap_count(H, kh, sh, ph, oph)
    count_w = oracles.overlap_count(W, kw, sw, pw, opw)
    expected = b + cin * count_h[:, None] * count_w[None, :]
    assert y.shape == (n, cout, len(count_h), len(count_w))
    np.testing.assert_allclose(y, np.broadcast_to(expected, y.shape), rtol=0, atol=1e-12)


@HYPO
@given(geom=deconv_geometry(1))
def test_conv_transpose1d_all_ones_overlap(xp, geom):
    n, cin, cout, (L,), (k,), (s,), (p,), (op,) = geom
    layer = on(ConvTranspose1d(cin, cout, k, s, p, op, bias=False, dtype=F64), xp)
    layer.params["weight"][...] = 1.0
    y = to_numpy(layer.forward(xp.ones((n, cin, L), dtype=F64)))
    expected = cin * oracles.overlap_count(L, k, s, p, op)
    np.testing.assert_allclose(y, np.broadcast_to(expected, y.shape), rtol=0, atol=1e-12)


def test_overlap_count_of_the_paper_doubling_layer():
    """Kernel 5, stride 2, padding 2, output_padding 1: inner pixels get 2 or 3 taps per axis."""
    counts = oracles.overlap_count(4, 5, 2, 2, 1)
    np.testing.assert_array_equal(counts, [2, 2, 3, 2, 3, 2, 2, 1])
    # the same by brute force over every (input position, tap) pair
    brute = np.zeros(8, int)
    for t in range(4):
        for i in range(5):
            if 0 <= t * 2 + i - 2 < 8:
                brute[t * 2 + i - 2] += 1
    np.testing.assert_array_equal(counts, brute)


@HYPO
@given(geom=st.one_of(deconv_geometry(2), deconv_geometry(1)))
def test_conv_transpose_adjoint_identity(xp, geom):
    """<deconv(x), y> = <x, conv(y)>: the transposed convolution is the adjoint of a convolution
    (with the same weight), computed here by a direct naive convolution."""
    layer, x, rng = make_deconv(geom, bias=False)
    on(layer, xp)
    out = to_numpy(layer.forward(xp.asarray(x)))
    y = rng.standard_normal(out.shape)
    w = to_numpy(layer.params["weight"])
    if x.ndim == 3:  # 1-d as 2-d with height 1
        conv_y = oracles.conv2d(
            y[:, :, None],
            w[:, :, None],
            (1, layer.stride[1]),
            (0, layer.padding[1]),
            (1, x.shape[2]),
        )[:, :, 0]
    else:
        conv_y = oracles.conv2d(y, w, layer.stride, layer.padding, x.shape[2:])
    lhs = float(np.sum(out * y))
    rhs = float(np.sum(x * conv_y))
    assert lhs == pytest.approx(rhs, rel=1e-10, abs=1e-10)
    # and the layer's backward pass is that very convolution
    dx = to_numpy(layer.backward(xp.asarray(y)))
    np.testing.assert_allclose(dx, conv_y, rtol=1e-10, atol=1e-10)


def test_paper_doubling_layer_doubles():
    layer = ConvTranspose2d(3, 2, 5, stride=2, padding=2, output_padding=1)
    assert layer.output_shape((4, 3, 7, 7)) == (4, 2, 14, 14)
    assert layer.forward(np.zeros((4, 3, 7, 7), np.float32)).shape == (4, 2, 14, 14)
    sound = ConvTranspose1d(2, 1, 25, stride=10, padding=8, output_padding=1)
    assert sound.output_shape((1, 2, 6)) == (1, 1, 60)
    assert sound.forward(np.zeros((1, 2, 6), np.float32)).shape == (1, 1, 60)


# --- batch normalisation: modes and running statistics --------------------------------------------


@pytest.mark.parametrize(
    "cls, shape", [(BatchNorm1d, (6, 3)), (BatchNorm1d, (2, 3, 5)), (BatchNorm2d, (2, 3, 2, 4))]
)
def test_batchnorm_running_statistics_follow_pytorch_rule(cls, shape, xp):
    """running <- (1 - momentum) running + momentum batch, with the UNBIASED batch variance;
    evaluation mode normalises with the running statistics; they never enter params."""
    rng = np.random.default_rng(3)
    layer = on(randomize(cls(3, momentum=0.3, dtype=F64), rng), xp)
    assert set(layer.params) == set(layer.grads) == {"weight", "bias"}
    assert set(layer.buffers) == {"running_mean", "running_var"}
    gamma, beta = (to_numpy(layer.params[k]) for k in ("weight", "bias"))
    rm, rv = np.zeros(3), np.ones(3)
    for _ in range(3):
        x = 2.0 + 3.0 * rng.standard_normal(shape)
        y = layer.forward(xp.asarray(x))
        y_ref, mean, unbiased = oracles.batchnorm(x, gamma, beta, layer.eps)
        np.testing.assert_allclose(to_numpy(y), y_ref, rtol=1e-10, atol=1e-10)
        rm = 0.7 * rm + 0.3 * mean
        rv = 0.7 * rv + 0.3 * unbiased
        np.testing.assert_allclose(to_numpy(layer.buffers["running_mean"]), rm, rtol=1e-12)
        np.testing.assert_allclose(to_numpy(layer.buffers["running_var"]), rv, rtol=1e-12)
    layer.eval()
    x = rng.standard_normal(shape)
    y = to_numpy(layer.forward(xp.asarray(x)))
    np.testing.assert_allclose(
        y, oracles.batchnorm(x, gamma, beta, layer.eps, rm, rv)[0], rtol=1e-10, atol=1e-10
    )
    # evaluation mode leaves the running statistics alone
    np.testing.assert_allclose(to_numpy(layer.buffers["running_mean"]), rm, rtol=1e-12)
    assert_gradients_close(layer, xp.asarray(x), rng=rng)  # dx = dy gamma / sqrt(var + eps)


def test_batchnorm_train_mode_couples_the_batch_and_eval_mode_does_not():
    rng = np.random.default_rng(4)
    layer = randomize(BatchNorm2d(2, dtype=F64), rng)
    x = rng.standard_normal((3, 2, 2, 2))
    x2 = x.copy()
    x2[2] += 5.0  # change one example
    y, y2 = layer.forward(x), layer.forward(x2)
    assert not np.allclose(y[0], y2[0])  # batch statistics: example 0 sees example 2
    layer.eval()
    np.testing.assert_array_equal(layer.forward(x)[0], layer.forward(x2)[0])


@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 5)])
def test_batchnorm_without_affine(shape):
    rng = np.random.default_rng(5)
    layer = BatchNorm1d(3, affine=False, dtype=F64)
    assert layer.params == {} and layer.grads == {}
    x = rng.standard_normal(shape)
    y = layer.forward(x)
    np.testing.assert_allclose(
        y, oracles.batchnorm(x, np.ones(3), np.zeros(3), layer.eps)[0], rtol=1e-10, atol=1e-12
    )
    assert_gradients_close(layer, x, rng=rng)


@HYPO
@given(
    two_d=st.booleans(),
    n=st.integers(1, 3),
    c=st.integers(1, 3),
    spatial=st.lists(st.integers(1, 3), min_size=0, max_size=1),
    shift=st.floats(-5, 5),
    scale=st.floats(0.1, 10),
)
def test_batchnorm_gradients_with_batch_statistics(xp, two_d, n, c, spatial, shift, scale):
    """The full Jacobian with batch statistics: perturbing one input moves mu and var."""
    shape = (n, c, *(spatial * 2 if two_d else spatial))
    if np.prod(shape) // c < 2:
        shape = (n + 1, *shape[1:])
    rng = np.random.default_rng(n * 100 + c)
    layer = on(
        randomize((BatchNorm2d if two_d and spatial else BatchNorm1d)(c, dtype=F64), rng), xp
    )
    x = xp.asarray(shift + scale * rng.standard_normal(shape))
    assert_gradients_close(layer, x, rng=rng, rtol=1e-5, atol=1e-7 * max(1.0, 1 / scale))


# --- linear, activations, reshape -----------------------------------------------------------------


@HYPO
@given(n=st.integers(1, 4), d_in=st.integers(1, 6), d_out=st.integers(1, 6), bias=st.booleans())
def test_linear_forward_and_gradients(xp, n, d_in, d_out, bias):
    rng = np.random.default_rng(n + 10 * d_in + 100 * d_out)
    layer = on(randomize(Linear(d_in, d_out, bias=bias, dtype=F64), rng), xp)
    assert layer.params["weight"].shape == (d_out, d_in)
    x = rng.standard_normal((n, d_in))
    y = layer.forward(xp.asarray(x))
    np.testing.assert_allclose(to_numpy(y), expected_output(layer, x), rtol=1e-12, atol=1e-12)
    assert_gradients_close(layer, xp.asarray(x), rng=rng)


@HYPO
@given(
    cls=st.sampled_from([ReLU, LeakyReLU, Tanh]),
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=4),
    slope=st.floats(0.01, 1.0),
)
def test_activation_forward_and_gradients(xp, cls, shape, slope):
    rng = np.random.default_rng(len(shape))
    layer = cls(slope, dtype=F64) if cls is LeakyReLU else cls(dtype=F64)
    x = 2 * rng.standard_normal(shape)
    x[..., 0] = 0.0  # exactly on the kink: forward must still be right
    y = to_numpy(layer.forward(xp.asarray(x)))
    np.testing.assert_allclose(y, expected_output(layer, x), rtol=1e-12, atol=1e-15)
    assert_gradients_close(layer, xp.asarray(x), rng=rng)  # gradcheck moves x off the kink


def test_relu_gradient_at_the_kink_is_zero_and_leaky_is_slope():
    x = np.array([[-1.0, 0.0, 2.0]])
    g = np.array([[3.0, 5.0, 7.0]])
    relu = ReLU(dtype=F64)
    relu.forward(x)
    np.testing.assert_array_equal(relu.backward(g), [[0.0, 0.0, 7.0]])
    leaky = LeakyReLU(0.25, dtype=F64)
    leaky.forward(x)
    np.testing.assert_array_equal(leaky.backward(g), [[0.75, 1.25, 7.0]])


def test_tanh_backward_is_one_minus_y_squared():
    x = np.array([[-2.0, 0.0, 0.5]])
    g = np.array([[1.5, -2.0, 3.0]])
    layer = Tanh(dtype=F64)
    layer.forward(x)
    expected = g * (1 - np.tanh(x) ** 2)
    np.testing.assert_allclose(layer.backward(g), expected, rtol=1e-14)


@pytest.mark.parametrize("layer", [ReLU(dtype=F64), LeakyReLU(0.2, dtype=F64), Tanh(dtype=F64)])
def test_overwrite_dy_computes_the_same_dx_in_dys_memory(xp, layer):
    """``overwrite_dy=True`` reuses dy's memory for dx; the values are those of the oracle."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((3, 5))
    x[0, :2] = 0.0  # the kink too
    g = rng.standard_normal((3, 5))
    on(layer, xp).forward(xp.asarray(x))
    dy = xp.asarray(g.copy())
    dx = layer.backward(dy, overwrite_dy=True)
    assert dx is dy
    y = oracles.layer_forward(layer, x)
    if isinstance(layer, Tanh):
        expected = g * (1 - y**2)
    else:
        expected = np.where(y > 0, g, g * getattr(layer, "negative_slope", 0.0))
    np.testing.assert_allclose(to_numpy(dx), expected, rtol=1e-14)


@HYPO
@given(n=st.integers(1, 3), dims=st.lists(st.integers(1, 3), min_size=1, max_size=3))
def test_reshape_forward_and_gradients(xp, n, dims):
    size = int(np.prod(dims))
    layer = Reshape(tuple(dims), dtype=F64)
    assert layer.output_shape((n, size)) == (n, *dims)
    rng = np.random.default_rng(size)
    x = rng.standard_normal((n, size))
    y = to_numpy(layer.forward(xp.asarray(x)))
    assert y.shape == (n, *dims)
    np.testing.assert_array_equal(y.ravel(), x.ravel())
    assert_gradients_close(layer, xp.asarray(x), rng=rng)


# --- PyTorch cross-checks (optional) --------------------------------------------------------------


@HYPO
@given(geom=st.one_of(deconv_geometry(2), deconv_geometry(1)))
def test_conv_transpose_matches_torch(geom):
    torch = pytest.importorskip("torch")
    layer, x, rng = make_deconv(geom)
    y = layer.forward(x)
    w, b = (torch.from_numpy(to_numpy(layer.params[k])) for k in ("weight", "bias"))
    xt = torch.from_numpy(x).requires_grad_(True)
    wt, bt = w.clone().requires_grad_(True), b.clone().requires_grad_(True)
    if x.ndim == 3:
        f = torch.nn.functional.conv_transpose1d
        kw = dict(
            stride=layer.stride[1], padding=layer.padding[1], output_padding=layer.output_padding[1]
        )
    else:
        f = torch.nn.functional.conv_transpose2d
        kw = dict(stride=layer.stride, padding=layer.padding, output_padding=layer.output_padding)
    yt = f(xt, wt, bt, **kw)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    g = rng.standard_normal(y.shape)
    dx = layer.backward(g)
    yt.backward(torch.from_numpy(g))
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.grads["weight"], wt.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.grads["bias"], bt.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shape", [(5, 3), (2, 3, 4), (2, 3, 2, 3)])
def test_batchnorm_matches_torch(shape):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    layer = randomize(
        (BatchNorm2d if len(shape) == 4 else BatchNorm1d)(3, momentum=0.2, dtype=F64), rng
    )
    x = rng.standard_normal(shape)
    y = layer.forward(x)
    g = rng.standard_normal(shape)
    dx = layer.backward(g)
    xt = torch.from_numpy(x).requires_grad_(True)
    gamma = torch.from_numpy(layer.params["weight"].copy()).requires_grad_(True)
    beta = torch.from_numpy(layer.params["bias"].copy()).requires_grad_(True)
    rm, rv = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    yt = torch.nn.functional.batch_norm(
        xt, rm, rv, gamma, beta, training=True, momentum=0.2, eps=layer.eps
    )
    yt.backward(torch.from_numpy(g))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(layer.grads["weight"], gamma.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(layer.grads["bias"], beta.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(layer.buffers["running_mean"], rm.numpy(), rtol=1e-12)
    np.testing.assert_allclose(layer.buffers["running_var"], rv.numpy(), rtol=1e-12)
    layer.eval()
    np.testing.assert_allclose(
        layer.forward(x),
        torch.nn.functional.batch_norm(
            torch.from_numpy(x),
            rm,
            rv,
            gamma.detach(),
            beta.detach(),
            training=False,
            eps=layer.eps,
        ).numpy(),
        rtol=1e-10,
        atol=1e-12,
    )


def test_linear_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    layer = randomize(Linear(5, 4, dtype=F64), rng)
    x = rng.standard_normal((3, 5))
    xt = torch.from_numpy(x).requires_grad_(True)
    w, b = (
        torch.from_numpy(layer.params[k].copy()).requires_grad_(True) for k in ("weight", "bias")
    )
    yt = torch.nn.functional.linear(xt, w, b)
    np.testing.assert_allclose(layer.forward(x), yt.detach().numpy(), rtol=1e-12, atol=1e-14)
    g = rng.standard_normal((3, 4))
    dx = layer.backward(g)
    yt.backward(torch.from_numpy(g))
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(layer.grads["weight"], w.grad.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(layer.grads["bias"], b.grad.numpy(), rtol=1e-12, atol=1e-14)
