"""Observation models: adjoint identities, residuals against naive loops, batching, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from abp_np.observation import Complete, Masked, Projection, RandomProjections

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


# --- per-example random projections ---------------------------------------------------------------


def _oracle_matrix(seed, m, D, scale="1/D"):
    """S_i by its definition: N(0, 1/D) (or 1/m) entries from default_rng(seed), float64."""
    std = 1 / np.sqrt(D if scale == "1/D" else m)
    return np.random.default_rng(int(seed)).standard_normal((m, D)) * std


def test_random_projections_draw_one_matrix_per_example_by_its_seed(xp):
    m, D = 5, int(np.prod(IMG))
    seeds = np.array([3, 0, 17, 3, 99])
    obs = RandomProjections(m, IMG, seeds).like(xp.zeros(1, dtype=np.float64))
    y = _randn(xp, np.random.default_rng(6), (N, *IMG), np.float64)
    got = _np(obs.observe(y))
    for i in range(N):  # X_i = S_i vec(y_i), written out
        np.testing.assert_allclose(
            got[i], _oracle_matrix(seeds[i], m, D) @ _np(y)[i].ravel(), rtol=1e-12
        )
    S = _np(obs.matrices())
    np.testing.assert_array_equal(S[0], S[3])  # the same seed twice, the same matrix
    # scale "1/m": the same draws, scaled by sqrt(D / m)
    wide = RandomProjections(m, IMG, seeds, scale="1/m").like(y)
    np.testing.assert_allclose(_np(wide.observe(y)), got * np.sqrt(D / m), rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_random_projections_adjoint_identity_per_example(xp, dtype):
    rng = np.random.default_rng(7)
    obs = RandomProjections.for_examples(N, 9, IMG, seed=1).like(xp.zeros(1, dtype=dtype))
    y = _randn(xp, rng, (N, *IMG), dtype)
    r = _randn(xp, rng, (N, 9), dtype)
    Sy, Str = obs.observe(y), obs.adjoint(r)
    assert Sy.shape == (N, 9) and Str.shape == (N, *IMG)
    for i in range(N):  # <S_i y_i, r_i> = <y_i, S_i^T r_i>, example by example
        lhs = float((Sy[i] * r[i]).sum())
        rhs = float((y[i] * Str[i]).sum())
        scale = float(xp.abs(y[i]).sum() * xp.abs(r[i]).max()) + 1.0
        assert abs(lhs - rhs) <= 10 * TOL[np.dtype(dtype)]["rtol"] * scale
    # the adjoint against the explicit transpose
    D = int(np.prod(IMG))
    for i in range(N):
        S = _oracle_matrix(_np(obs.seeds)[i], 9, D)
        np.testing.assert_allclose(
            _np(Str[i]).ravel(), S.T @ _np(r[i]).astype(np.float64), **TOL[np.dtype(dtype)]
        )


def test_random_projections_take_draws_the_batch_matrices_once(xp):
    obs = RandomProjections.for_examples(7, 4, IMG, seed=2)
    full = obs.matrices()  # (7, 4, D), drawn from the seeds
    idx = xp.asarray(np.array([5, 0, 3]))
    batch = obs.like(xp.zeros(1, dtype=np.float32)).take(idx)
    assert batch.S.shape == (3, 4, 24) and batch.S.dtype == np.float32
    np.testing.assert_array_equal(_np(batch.S), full[[5, 0, 3]])
    np.testing.assert_array_equal(_np(batch.seeds), obs.seeds[[5, 0, 3]])
    # same seeds, same matrices: a second take, a new object, another dtype (float64 draws)
    np.testing.assert_array_equal(_np(obs.take(np.array([5, 0, 3])).S), full[[5, 0, 3]])
    again = RandomProjections(4, IMG, obs.seeds.copy()).like(np.zeros(1))
    np.testing.assert_array_equal(again.matrices()[[5, 0, 3]].astype(np.float32), full[[5, 0, 3]])
    np.testing.assert_allclose(
        again.matrices(np.array([5]))[0], _oracle_matrix(obs.seeds[5], 4, 24), rtol=0
    )
    # the batch observes with its stored matrices; a batch of a batch selects rows
    y = _randn(xp, np.random.default_rng(8), (3, *IMG), np.float32)
    np.testing.assert_allclose(
        _np(batch.observe(y)),
        np.einsum("bmd,bd->bm", full[[5, 0, 3]], _np(y).reshape(3, -1)),
        rtol=1e-5,
        atol=1e-6,
    )
    np.testing.assert_array_equal(_np(batch.take(np.array([2])).S), full[[3]])
    # the first seeds of for_examples do not depend on n
    np.testing.assert_array_equal(
        RandomProjections.for_examples(3, 4, IMG, seed=2).seeds, obs.seeds[:3]
    )


def test_random_projections_direct_use_caches_or_draws_in_chunks():
    rng = np.random.default_rng(9)
    y = rng.standard_normal((N, *IMG))
    r = rng.standard_normal((N, 6))
    cached = RandomProjections.for_examples(N, 6, IMG, seed=3)
    chunked = RandomProjections.for_examples(N, 6, IMG, seed=3, cache_limit=2 * 6 * 24)
    x1, x2 = cached.observe(y), chunked.observe(y)
    assert cached.S is not None and chunked.S is None  # all N at once only under the limit
    np.testing.assert_allclose(x1, x2, rtol=1e-12)
    np.testing.assert_allclose(cached.adjoint(r), chunked.adjoint(r), rtol=1e-12)
    with pytest.raises(ValueError, match="take"):
        cached.observe(y[:2])


def test_random_projections_entries_have_the_stated_variance():
    D, m = 400, 50
    obs = RandomProjections.for_examples(4, m, (1, 20, 20), seed=4)
    S = obs.matrices()
    assert S.std() == pytest.approx(1 / np.sqrt(D), rel=0.02)
    wide = RandomProjections.for_examples(4, m, (1, 20, 20), seed=4, scale="1/m").matrices()
    assert wide.std() == pytest.approx(1 / np.sqrt(m), rel=0.02)
    # E ||S v||^2 = (m / D) ||v||^2 with N(0, 1/D) entries, averaged over many v
    v = np.random.default_rng(5).standard_normal((200, D))
    ratio = (np.einsum("md,nd->nm", S[0].astype(np.float64), v) ** 2).sum() / (v**2).sum()
    assert ratio == pytest.approx(m / D, rel=0.1)


def test_random_projections_in_an_abp_fit():
    """A small ABP fit through RandomProjections: mini-batches take their matrices, the
    data energy falls, and inference on held-out images runs with another set of seeds."""
    from abp_np import ABP, Adam, linear_generator

    rng = np.random.default_rng(10)
    shape, d, n, m = (1, 4, 4), 2, 24, 8
    W = rng.standard_normal((16, d)) * 0.5
    images = (rng.standard_normal((n + 6, d)) @ W.T).reshape(n + 6, *shape).astype(np.float32)
    train = RandomProjections.for_examples(n, m, shape, seed=0)
    test = RandomProjections.for_examples(6, m, shape, seed=1)
    X, X_test = train.observe(images[:n]), test.observe(images[n:])
    assert X.dtype == np.float32 and X.shape == (n, m)
    g = linear_generator(d, shape, rng=np.random.default_rng(0))
    abp = ABP(g, sigma=0.3, langevin_steps=5, step_size=0.1, optimizer=Adam(lr=0.02), seed=0)
    fresh = RandomProjections(m, shape, train.seeds)  # nothing drawn yet
    history = abp.fit(X, iterations=25, batch_size=8, observation=fresh)
    assert history[-1]["data_energy"] < 0.5 * history[0]["data_energy"]
    assert fresh.S is None  # fit drew the matrices batch by batch, never all at once
    z = abp.infer(X_test, steps=20, observation=test)
    assert z.shape == (6, d) and np.all(np.isfinite(z))
    with pytest.raises(ValueError, match=r"shape \(24, 8\)"):
        abp.fit(X[:, :5], iterations=26, observation=train)


def test_random_projections_like_check_and_bad_input():
    obs = RandomProjections(3, IMG, np.arange(N))
    assert obs.like(np.zeros(1, np.float32)) is obs
    o64 = obs.like(np.zeros(1))
    assert o64.dtype == np.float64 and o64.take(np.array([0])).S.dtype == np.float64
    assert "RandomProjections(m=3" in repr(obs) and "5 examples" in repr(obs)
    obs.check(np.zeros((N, 3)), IMG)
    obs.check(np.zeros((N, 3)), (24,))  # any shape with D pixels
    with pytest.raises(ValueError, match=r"\(5, 3\)"):
        obs.check(np.zeros((N, 4)), IMG)
    with pytest.raises(ValueError, match=r"\(5, 3\)"):
        obs.check(np.zeros((N + 1, 3)), IMG)
    with pytest.raises(ValueError, match="D = 25"):
        obs.check(np.zeros((N, 3)), (25,))
    with pytest.raises(ValueError, match="dtype"):
        obs.check(np.zeros((N, 3), dtype=np.int32), IMG)
    with pytest.raises(ValueError, match="scale"):
        RandomProjections(3, IMG, np.arange(N), scale="1/n")
    with pytest.raises(ValueError, match="seeds"):
        RandomProjections(3, IMG, np.arange(6).reshape(2, 3))
    with pytest.raises(ValueError, match="non-negative"):
        RandomProjections(3, IMG, np.array([1, -1]))
    with pytest.raises(ValueError, match="m "):
        RandomProjections(0, IMG, np.arange(N))
    with pytest.raises(ValueError, match="pixels"):
        obs.observe(np.zeros((N, 25)))
    with pytest.raises(ValueError, match="r must be"):
        obs.adjoint(np.zeros((N, 4)))
