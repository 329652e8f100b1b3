"""Observation models: adjoint identities, residuals against naive loops, batching, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from abp_np.observation import Complete, Masked, Projection

from conftest import TOL

DTYPES = [np.float32, np.float64]
IMG = (2, 3, 4)  # one example: C, H, W
N = 5


def _randn(xp, rng, shape, dtype):
    return xp.asarray(rng.standard_normal(shape).astype(dtype))


def _models(xp, rng, dtype):
    """Each model with a random image batch y and a random observation-space array r."""
    D = int(np.prod(IMG))
    mask = xp.asarray(rng.random((N, *IMG)) < 0.6)
    shared = xp.asarray(rng.random((1, 1, 3, 4)) < 0.5)
    S = _randn(xp, rng, (7, D), dtype)
    return {
        "complete": (Complete(), (N, *IMG)),
        "masked": (Masked(mask), (N, *IMG)),
        "masked-shared": (Masked(shared), (N, *IMG)),
        "projection": (Projection(S), (N, 7)),
        "projection-shaped": (Projection(S, IMG), (N, 7)),
    }


@pytest.mark.parametrize("dtype", DTYPES)
def test_adjoint_identity(xp, dtype):
    """<A y, r> = <y, A^T r> for every model (A = observe, A^T = adjoint)."""
    rng = np.random.default_rng(0)
    for name, (model, obs_shape) in _models(xp, rng, dtype).items():
        y = _randn(xp, rng, (N, *IMG), dtype)
        r = _randn(xp, rng, obs_shape, dtype)
        lhs = float((model.observe(y) * r).sum())
        rhs = float((y.reshape(N, -1) * model.adjoint(r).reshape(N, -1)).sum())
        scale = float(xp.abs(y).sum() * xp.abs(r).max()) + 1.0
        assert abs(lhs - rhs) <= 10 * TOL[np.dtype(dtype)]["rtol"] * scale, name


def test_residual_and_errors_against_naive_loops(xp):
    rng = np.random.default_rng(1)
    dtype = np.float64
    f = _randn(xp, rng, (N, *IMG), dtype)
    y = _randn(xp, rng, (N, *IMG), dtype)
    m = rng.random((N, *IMG)) < 0.5
    S = rng.standard_normal((6, int(np.prod(IMG))))
    fn, yn = np.asarray(f.get() if xp is not np else f), np.asarray(y.get() if xp is not np else y)

    # masked: loops over every pixel
    want_r = np.zeros_like(fn)
    want_sq = np.zeros(N)
    want_abs, want_count = 0.0, 0
    for idx in np.ndindex(*fn.shape):
        if m[idx]:
            want_r[idx] = yn[idx] - fn[idx]
            want_sq[idx[0]] += want_r[idx] ** 2
            want_abs += abs(want_r[idx])
            want_count += 1
    model = Masked(xp.asarray(m))
    got = model.residual(y, f)
    np.testing.assert_allclose(_np(got), want_r, rtol=1e-12, atol=0)
    np.testing.assert_allclose(_np(model.squared_error(y, f)), want_sq, rtol=1e-12)
    s, c = model.abs_error(y, f)
    assert float(c) == want_count
    assert float(s) == pytest.approx(want_abs, rel=1e-12)

    # projection: one matrix-vector product per example, written out
    x = np.stack([S @ fn[i].ravel() for i in range(N)]) + 0.1
    proj = Projection(xp.asarray(S))
    want = np.array(
        [
            [
                x[i, k] - sum(S[k, j] * fn[i].ravel()[j] for j in range(S.shape[1]))
                for k in range(S.shape[0])
            ]
            for i in range(N)
        ]
    )
    np.testing.assert_allclose(_np(proj.residual(xp.asarray(x), f)), want, rtol=1e-10)
    np.testing.assert_allclose(
        _np(proj.squared_error(xp.asarray(x), f)), (want**2).sum(1), rtol=1e-10
    )
    s, c = proj.abs_error(xp.asarray(x), f)
    assert float(c) == want.size and float(s) == pytest.approx(np.abs(want).sum(), rel=1e-10)

    # complete
    np.testing.assert_array_equal(_np(Complete().residual(y, f)), yn - fn)
    np.testing.assert_allclose(
        _np(Complete().squared_error(y, f)), ((yn - fn) ** 2).reshape(N, -1).sum(1), rtol=1e-12
    )


def _np(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


def test_masked_never_reads_unobserved_pixels(xp):
    rng = np.random.default_rng(2)
    f = _randn(xp, rng, (N, *IMG), np.float32)
    y = _randn(xp, rng, (N, *IMG), np.float32)
    m = xp.asarray(rng.random((N, *IMG)) < 0.5)
    y_nan = xp.where(m, y, xp.float32(np.nan))
    model = Masked(m)
    r1, r2 = model.residual(y, f), model.residual(y_nan, f)
    assert bool(xp.all(xp.isfinite(r2)))
    np.testing.assert_array_equal(_np(r1), _np(r2))
    assert bool(model.finite(y_nan))
    assert not bool(Complete().finite(y_nan))
    # the adjoint is zero under the mask
    assert float(xp.abs(model.adjoint(_randn(xp, rng, (N, *IMG), np.float32))[~m]).sum()) == 0


def test_take_selects_rows_of_a_per_example_mask_only():
    rng = np.random.default_rng(3)
    m = rng.random((N, *IMG)) < 0.5
    idx = np.array([4, 1])
    np.testing.assert_array_equal(Masked(m).take(idx).mask, m[idx])
    shared = Masked(m[:1])
    assert shared.take(idx) is shared
    p = Projection(rng.standard_normal((3, 24)))
    assert p.take(idx) is p
    c = Complete()
    assert c.take(idx) is c


def test_masked_accepts_zero_one_numbers_and_broadcast_axes():
    m = np.ones((N, 1, 3, 4))
    m[0, 0, 0, 0] = 0
    model = Masked(m)
    assert model.mask.dtype == np.bool_
    y = np.zeros((N, *IMG))
    model.check(y, IMG)  # a channel-shared mask fits
    s, c = model.abs_error(y, y)
    assert float(c) == N * 24 - 2  # one pixel, both channels


def test_projection_identity_equals_complete(xp):
    rng = np.random.default_rng(4)
    f = _randn(xp, rng, (N, *IMG), np.float64)
    y = _randn(xp, rng, (N, *IMG), np.float64)
    proj = Projection(xp.eye(24), IMG)
    np.testing.assert_array_equal(
        _np(proj.residual(y.reshape(N, -1), f)), _np((y - f).reshape(N, -1))
    )
    np.testing.assert_array_equal(_np(proj.adjoint((y - f).reshape(N, -1))), _np(y - f))


def test_like_moves_to_dtype_and_device():
    S = np.random.default_rng(5).standard_normal((3, 24))
    p = Projection(S).like(np.zeros(1, np.float32))
    assert p.S.dtype == np.float32
    assert Projection(S).like(np.zeros(1)).S is S


# --- bad input ------------------------------------------------------------------------------------


def test_bad_masks_and_matrices_are_rejected():
    with pytest.raises(ValueError, match="only 0 and 1"):
        Masked(np.full((2, 3), 0.5))
    with pytest.raises(ValueError, match="boolean"):
        Masked(np.array([["a"]]))
    with pytest.raises(ValueError, match="batch axis"):
        Masked(np.array(True))
    with pytest.raises(ValueError, match="2-d"):
        Projection(np.ones(5))
    with pytest.raises(ValueError, match="dtype"):
        Projection(np.ones((2, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="columns"):
        Projection(np.ones((2, 3)), image_shape=(2, 2))


def test_check_names_the_mismatch():
    y = np.zeros((N, *IMG))
    with pytest.raises(ValueError, match=r"expected \(N, \*\(2, 3, 4\)\)"):
        Complete().check(np.zeros((N, 3, 3, 4)), IMG)
    with pytest.raises(ValueError, match="mask of shape"):
        Masked(np.ones((N, 3, 3, 4), bool)).check(y, IMG)
    with pytest.raises(ValueError, match="mask of shape"):
        Masked(np.ones((N + 1, *IMG), bool)).check(y, IMG)
    with pytest.raises(ValueError, match="mask of shape"):
        Masked(np.ones(IMG, bool)).check(y, IMG)  # no batch axis
    with pytest.raises(ValueError, match="no pixel"):
        Masked(np.zeros((N, *IMG), bool)).check(y, IMG)
    with pytest.raises(ValueError, match=r"S must be \(m, 24\)"):
        Projection(np.ones((3, 25))).check(np.zeros((N, 3)), IMG)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        Projection(np.ones((3, 24))).check(np.zeros((N, 4)), IMG)
    with pytest.raises(ValueError, match="dtype"):
        Complete().check(np.zeros((N, *IMG), dtype=np.int32), IMG)
    with pytest.raises(ValueError, match="array"):
        Complete().check([[0.0]], IMG)
