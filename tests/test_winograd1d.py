"""The 1-D Winograd route of the CPU transposed convolutions (``abp_np/fast/winograd1d.py``) and
its compiled kernels (``kernels/winograd1d_cpu.c`` through ``abp_np/fast/cpu.py``).

Where the expected values come from, never from abp_np itself:

* the output: the naive scatter loops of ``oracles.conv_transpose1d``;
* the input gradient: the adjoint, the naive direct convolution ``oracles.conv2d`` on a
  height-1 image; the weight gradient: loops written here from the definition
  (``dW[c, o, i] = sum x[n, c, l] dy[n, o, s l + i - p]``); the bias gradient: the sum of dy;
* ``winograd1d.plan``: the rule its docstring states (height 1, ``s < k <= 3 s``), with the
  tile count worked out by hand for the paper's sound layer;
* the gradients once more: central differences (:mod:`abp_np.gradcheck`).

The compiled kernels and the NumPy path (``using(c=False)``) compute the same sums in a
different order: both are held to the oracles, and to each other to rounding.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from abp_np.backend import using
from abp_np.fast import cpu as _cpu
from abp_np.fast import winograd1d
from abp_np.generator import sound_generator
from abp_np.gradcheck import assert_gradients_close
from abp_np.layers import ConvTranspose1d

import oracles

F64, F32 = np.float64, np.float32
HYPO = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SOUND = {"kernel_size": 25, "stride": 10, "padding": 8, "output_padding": 1}


def kernels(kind: str):
    """``using(c=True)`` with the compiled library (skipping without it), or NumPy only."""
    if kind == "compiled":
        if not _cpu.available():
            pytest.skip(f"compiled CPU kernels not available: {_cpu.reason()}")
        return using(c=True)
    return using(c=False)


def make_layer(cin, cout, dtype=F64, seed=0, **geometry):
    rng = np.random.default_rng(seed)
    layer = ConvTranspose1d(cin, cout, **(geometry or SOUND), dtype=dtype, rng=rng)
    for p in layer.params.values():
        p[...] = rng.standard_normal(p.shape).astype(dtype)
    return layer


def took_it(layer) -> bool:
    return isinstance(layer._cache, winograd1d.Winograd1dCache)


def weight_grad_loops(x, dy, k, s, p):
    """dW[c, o, i] = sum over n, l of x[n, c, l] dy[n, o, s l + i - p], inside dy."""
    N, Cin, L = x.shape
    Cout, Lout = dy.shape[1:]
    dW = np.zeros((Cin, Cout, k))
    for i in range(k):
        for l in range(L):
            j = s * l + i - p
            if 0 <= j < Lout:
                dW[:, :, i] += x[:, :, l].T @ dy[:, :, j]
    return dW


def check_against_oracles(layer, x, rng, rtol=1e-10):
    """y, dx, dW, db of a float64 1-D layer against the oracles."""
    k, s, p, op = (layer.kernel_size[1], layer.stride[1], layer.padding[1], layer.output_padding[1])
    w, b = layer.params["weight"], layer.params["bias"]
    y_expected = oracles.conv_transpose1d(x, w, b, s, p, op)
    dy = rng.standard_normal(y_expected.shape)
    y = layer.forward(x).copy()
    assert took_it(layer)
    dx = layer.backward(dy).copy()
    scale = np.abs(y_expected).max()
    np.testing.assert_allclose(y, y_expected, rtol=rtol, atol=rtol * scale)
    dx_expected = oracles.conv2d(dy[:, :, None], w[:, :, None], (1, s), (0, p), (1, x.shape[2]))[
        :, :, 0
    ]
    np.testing.assert_allclose(dx, dx_expected, rtol=rtol, atol=rtol * np.abs(dx_expected).max())
    dW = weight_grad_loops(x, dy, k, s, p)
    np.testing.assert_allclose(layer.grads["weight"], dW, rtol=rtol, atol=rtol * np.abs(dW).max())
    np.testing.assert_allclose(layer.grads["bias"], dy.sum(axis=(0, 2)), rtol=rtol)
    return y, dx, layer.grads["weight"].copy()


# --- 1. the plan ------------------------------------------------------------------------------------


def test_plan_of_the_sound_layer():
    """60 -> 600 samples, k 25, s 10, p 8: outputs u = o + 8 reach q = (599 + 8) // 10 = 60,
    so 61 positions q, 16 tiles of F(4, 3)."""
    p = winograd1d.plan((2, 256, 1, 60), (256, 128, 1, 25), (1, 10), (0, 8), (1, 600))
    assert p == winograd1d.Plan1d(m=4, s=10, p=8, nt=16, Lout=600)


@pytest.mark.parametrize(
    "why, x_shape, w_shape, stride, padding, out_hw",
    [
        ("2-D", (1, 4, 5, 5), (4, 4, 5, 5), (2, 2), (2, 2), (10, 10)),
        ("k <= s", (1, 4, 1, 9), (4, 4, 1, 10), (1, 10), (0, 0), (1, 90)),
        ("k > 3 s", (1, 4, 1, 9), (4, 4, 1, 7), (1, 2), (0, 0), (1, 23)),
        ("kernel height 2", (1, 4, 1, 9), (4, 4, 2, 5), (1, 2), (0, 0), (2, 21)),
    ],
)
def test_plan_refuses_other_geometries(why, x_shape, w_shape, stride, padding, out_hw):
    assert winograd1d.plan(x_shape, w_shape, stride, padding, out_hw) is None, why


# --- 2. the layer against the oracles ---------------------------------------------------------------


@pytest.mark.parametrize("kind", ["compiled", "numpy"])
@given(
    data=st.data(),
    n=st.integers(1, 3),
    cin=st.integers(1, 4),
    cout=st.integers(1, 4),
    length=st.integers(1, 9),
    s=st.integers(2, 5),
    seed=st.integers(0, 2**16),
)
@HYPO
def test_layer_matches_oracles(kind, data, n, cin, cout, length, s, seed):
    """Every geometry with s < k <= 3 s, any padding below k and output padding below s."""
    k = data.draw(st.integers(s + 1, 3 * s), label="k")
    p = data.draw(st.integers(0, k - 1), label="padding")
    op = data.draw(st.integers(0, s - 1), label="output_padding")
    if (length - 1) * s - 2 * p + k + op < 1:
        return  # no output sample
    rng = np.random.default_rng(seed)
    layer = make_layer(cin, cout, seed=seed, kernel_size=k, stride=s, padding=p, output_padding=op)
    x = rng.standard_normal((n, cin, length))
    with kernels(kind), using(winograd="on"):
        check_against_oracles(layer, x, rng)


@pytest.mark.parametrize("kind", ["compiled", "numpy"])
@pytest.mark.parametrize("m", [2, 4])
def test_both_tile_sizes_match_the_oracles(kind, m, monkeypatch):
    """F(2, 3) and F(4, 3) (the compiled kernels write F(4, 3) out, and take any other m from
    the matrices): the sound layer's geometry on a few samples."""
    orig = winograd1d._plan.__wrapped__

    def plan_m(*args):
        p = orig(*args)
        return None if p is None else p._replace(m=m, nt=-(-p.nt * p.m // m))

    monkeypatch.setattr(winograd1d, "_plan", plan_m)
    rng = np.random.default_rng(m)
    layer = make_layer(5, 3, seed=m)
    x = rng.standard_normal((2, 5, 7))
    with kernels(kind), using(winograd="on"):
        check_against_oracles(layer, x, rng)
    assert layer._cache.plan.m == m


@pytest.mark.parametrize("dtype", [F32, F64])
def test_compiled_and_numpy_paths_agree(dtype):
    layer = make_layer(8, 5, dtype=dtype, seed=1)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 8, 13)).astype(dtype)
    dy = rng.standard_normal((3, 5, 130)).astype(dtype)
    out = []
    for kind in ("compiled", "numpy"):
        with kernels(kind), using(winograd="on"):
            y = layer.forward(x).copy()
            assert took_it(layer)
            out.append((y, layer.backward(dy).copy(), layer.grads["weight"].copy()))
    tol = 1e-5 if dtype == F32 else 1e-12
    for a, b in zip(*out):
        assert np.abs(a - b).max() <= tol * np.abs(a).max()


@pytest.mark.parametrize("kind", ["compiled", "numpy"])
def test_float32_is_close_to_the_float64_oracle(kind):
    """The sound layer in float32 (16 -> 8 channels, 64 samples, weights of the network's
    scale) lies within 1e-5 max|y| of the float64 oracle."""
    rng = np.random.default_rng(6)
    layer = ConvTranspose1d(16, 8, **SOUND, dtype=F32, rng=rng)
    x = rng.standard_normal((2, 16, 64)).astype(F32)
    with kernels(kind), using(winograd="on"):
        y = layer.forward(x)
    assert took_it(layer) and y.dtype == F32
    p = layer.params
    y64 = oracles.conv_transpose1d(x, p["weight"], p["bias"], 10, 8, 1)
    assert np.abs(y - y64).max() <= 1e-5 * np.abs(y64).max()


@pytest.mark.parametrize("kind", ["compiled", "numpy"])
def test_gradients_match_finite_differences(kind):
    rng = np.random.default_rng(7)
    layer = make_layer(3, 2)
    x = rng.standard_normal((2, 3, 5))
    with kernels(kind), using(winograd="on"):
        assert_gradients_close(layer, x, rng=rng)
        assert took_it(layer)


def test_blocks_of_examples_give_the_same_results(monkeypatch):
    """A batch cut into blocks of one example gives what the whole batch gives."""
    layer = make_layer(4, 3, seed=2)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 4, 9))
    dy = rng.standard_normal((3, 3, 90))
    out = []
    for block_bytes in (2**30, 1):
        monkeypatch.setattr(winograd1d, "BLOCK_BYTES", block_bytes)
        with using(winograd="on"):
            y = layer.forward(x).copy()
            out.append((y, layer.backward(dy).copy(), layer.grads["weight"].copy()))
    for a, b in zip(*out):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)


def test_non_contiguous_input_and_gradient():
    layer = make_layer(3, 2, seed=3)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 2, 8)).transpose(1, 0, 2)  # (2, 3, 8), not contiguous
    dy = rng.standard_normal((80, 2, 2)).transpose(1, 2, 0)
    with using(winograd="on"):
        y = layer.forward(x).copy()
        dx = layer.backward(dy).copy()
        y2 = layer.forward(np.ascontiguousarray(x)).copy()
        dx2 = layer.backward(np.ascontiguousarray(dy)).copy()
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(dx, dx2)


# --- 3. when the route is taken ---------------------------------------------------------------------


def test_auto_takes_the_wide_sound_layer_only():
    """The sound network under "auto": only its 256 -> 128 layer (the 1 -> 256 layer has one
    input channel, the 128 -> 1 layer one output channel)."""
    g = sound_generator(latent_length=60, rng=np.random.default_rng(0))
    with using(winograd="auto"):
        g.forward(np.zeros((1, *g.latent_shape), F32))
    convs = [layer for layer in g.layers if isinstance(layer, ConvTranspose1d)]
    assert [took_it(layer) for layer in convs] == [False, True, False]
    with using(winograd="off"):
        g.forward(np.zeros((1, *g.latent_shape), F32))
    assert not any(took_it(layer) for layer in convs)


def test_langevin_transforms_the_weights_once():
    """Inside fixed_weights, U is computed once for all passes; outside, in every call."""
    g = sound_generator(channels=(32, 16), latent_length=8, rng=np.random.default_rng(1))
    calls = []
    orig = winograd1d._combined_kernel

    def counting(weight, s):
        calls.append(1)
        return orig(weight, s)

    z = np.zeros((1, *g.latent_shape), F32)
    convs = [layer for layer in g.layers if isinstance(layer, ConvTranspose1d)]
    with pytest.MonkeyPatch.context() as mp, using(winograd="on"):
        mp.setattr(winograd1d, "_combined_kernel", counting)
        with g.fixed_weights():
            for _ in range(3):
                y = g.forward(z)
                taken = sum(took_it(layer) for layer in convs)
                g.backward(np.ones_like(y), need_param_grads=False)
        assert taken == 3 and len(calls) == 3  # "on": all three layers; once each
        g.forward(z)  # outside fixed_weights: U made in the call
        assert len(calls) == 6


# --- 4. the compiled wrappers -----------------------------------------------------------------------


def test_compiled_wrappers_reject_bad_arrays():
    if not _cpu.available():
        pytest.skip(f"compiled CPU kernels not available: {_cpu.reason()}")
    BT, _, AT = winograd1d.transforms(4, F32)
    x = np.zeros((1, 3, 1, 8), F32)
    with pytest.raises(ValueError, match="do not fit"):
        _cpu.winograd1d_input(x, np.zeros((6, 3, 5), F32), BT, 4, 2)
    with pytest.raises(ValueError, match="one dtype"):
        _cpu.winograd1d_input(x, np.zeros((6, 3, 2), F64), BT, 4, 2)
    with pytest.raises(ValueError, match="do not cover"):
        _cpu.winograd1d_output(
            np.zeros((6, 1, 20), F32), np.zeros((1, 2, 1, 40), F32), AT, 10, 1, 1
        )
    with pytest.raises(ValueError, match="bias"):
        _cpu.winograd1d_output(
            np.zeros((6, 2, 20), F32),
            np.zeros((1, 2, 1, 70), F32),
            AT,
            10,
            2,
            5,
            bias=np.zeros(3, F32),
        )
