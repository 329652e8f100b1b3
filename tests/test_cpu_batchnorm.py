"""Batch normalisation through the compiled CPU kernels (``kernels/batchnorm_cpu.c``).

Expected values come from ``tests/oracles.py`` (``oracles.batchnorm``: the textbook formula
in float64) and from finite differences (:mod:`abp_np.gradcheck`); the NumPy path of
:func:`abp_np.functional.batchnorm_forward` (kernels off) is compared too, as a second
implementation of the same formulas. Skipped where no C compiler could build the kernels.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from abp_np import functional as F
from abp_np.backend import using
from abp_np.fast import cpu as _cpu
from abp_np.gradcheck import assert_gradients_close
from abp_np.layers import BatchNorm1d, BatchNorm2d

import oracles

pytestmark = pytest.mark.skipif(
    not _cpu.available(), reason=f"CPU kernels not built: {_cpu.reason()}"
)


def _case(rng, shape, dtype):
    x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    C = shape[1]
    gamma = rng.uniform(0.5, 2, C).astype(dtype)
    beta = rng.standard_normal(C).astype(dtype)
    return x, gamma, beta


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 5),
    c=st.integers(1, 6),
    spatial=st.lists(st.integers(1, 9), min_size=0, max_size=2),
    seed=st.integers(0, 2**16),
)
def test_forward_and_backward_match_the_oracle(n, c, spatial, seed):
    """The C path gives the oracle's y, batch statistics, dx, dgamma and dbeta (float64)."""
    shape = (n, c, *spatial)
    if n * int(np.prod(spatial, dtype=int)) < 2:
        shape = (n + 1, c, *spatial)  # at least two values per channel
    rng = np.random.default_rng(seed)
    x, gamma, beta = _case(rng, shape, np.float64)
    axes = (0, *range(2, x.ndim))
    assert _cpu.enabled()
    y, cache = F.batchnorm_forward(x, gamma, beta, 1e-5, axes)
    assert cache.route == "c"
    mu, var = cache.mean, cache.var
    y_ref, mu_ref, unbiased = oracles.batchnorm(x, gamma, beta, 1e-5)
    M = x.size // c
    var_ref = unbiased * (M - 1) / M  # the batch statistic is the biased variance
    np.testing.assert_allclose(y, y_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(mu, mu_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(var, var_ref, rtol=1e-12)

    # the gradient by hand, from the chain rule through mean and variance
    dy = rng.standard_normal(shape)
    bshape = [1] * x.ndim
    bshape[1] = c
    xhat = (x - mu_ref.reshape(bshape)) / np.sqrt(var_ref.reshape(bshape) + 1e-5)
    dxhat = dy * gamma.reshape(bshape)
    dx_ref = (
        M * dxhat
        - dxhat.sum(axis=axes, keepdims=True)
        - xhat * (dxhat * xhat).sum(axis=axes, keepdims=True)
    ) / (M * np.sqrt(var_ref.reshape(bshape) + 1e-5))
    dx, dgamma, dbeta = F.batchnorm_backward(dy, cache)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(dgamma, (dy * xhat).sum(axis=axes), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dbeta, dy.sum(axis=axes), rtol=1e-12, atol=1e-12)
    dx2, g2, b2 = F.batchnorm_backward(dy, cache, need_param_grads=False)
    np.testing.assert_array_equal(dx2, dx)
    assert g2 is None and b2 is None


@pytest.mark.parametrize("shape", [(64, 32, 8, 8), (2, 256, 300), (1, 16, 40, 40), (7, 5)])
def test_float32_agrees_with_the_numpy_path(shape):
    """float32: C (double sums) and NumPy (float32 BLAS sums) agree to float32 rounding."""
    rng = np.random.default_rng(1)
    x, gamma, beta = _case(rng, shape, np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    axes = (0, *range(2, x.ndim))
    results = []
    for on in (True, False):
        with using(c=on):
            y, cache = F.batchnorm_forward(x, gamma, beta, 1e-5, axes)
            assert cache.route == ("c" if on else "xp")
            results.append((y, cache.mean, cache.var, *F.batchnorm_backward(dy, cache)))
    for got, ref in zip(*results, strict=True):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, ref, rtol=2e-5, atol=2e-5 * float(np.abs(ref).max()))


@pytest.mark.parametrize(
    "layer", [BatchNorm2d(3, dtype=np.float64), BatchNorm1d(4, dtype=np.float64)]
)
def test_gradients_by_finite_differences(layer):
    """The layers' gradients (C path) against central differences."""
    rng = np.random.default_rng(2)
    shape = (5, 3, 4, 3) if isinstance(layer, BatchNorm2d) else (6, 4)
    assert_gradients_close(layer, rng.standard_normal(shape), rng=rng)


def test_running_statistics_are_updated_from_the_c_statistics():
    """The layer's running mean / variance follow the batch statistics (unbiased variance)."""
    rng = np.random.default_rng(3)
    layer = BatchNorm2d(2, momentum=0.5, dtype=np.float64)
    x = rng.standard_normal((4, 2, 3, 3)) * 2 + 5
    layer.forward(x)
    m = x.mean(axis=(0, 2, 3))
    v = x.var(axis=(0, 2, 3), ddof=1)
    np.testing.assert_allclose(layer.buffers["running_mean"], 0.5 * 0 + 0.5 * m, rtol=1e-12)
    np.testing.assert_allclose(layer.buffers["running_var"], 0.5 * 1 + 0.5 * v, rtol=1e-12)


def test_wrappers_refuse_bad_arrays():
    """The ctypes wrappers check dtypes, contiguity and shapes before calling C."""
    x = np.ones((2, 3, 4), np.float32)
    xc = np.empty_like(x)
    m, v = np.empty(3, np.float32), np.empty(3, np.float32)
    with pytest.raises(ValueError, match="one dtype"):
        _cpu.bn_stats(x, xc.astype(np.float64), m, v)
    with pytest.raises(ValueError, match="contiguous"):
        _cpu.bn_stats(x[:, :, ::2], xc[:, :, ::2], m, v)
    with pytest.raises(ValueError, match=r"\(3,\)"):
        _cpu.bn_stats(x, xc, np.empty(2, np.float32), v)
    with pytest.raises(ValueError, match="differ"):
        _cpu.bn_scale_shift(x, np.empty((2, 3, 5), np.float32), m, v)
