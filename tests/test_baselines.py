"""Baselines: PCA (complete and missing data), probabilistic PCA by EM, harmonic and
total-variation inpainting, the vector auto-regression of dynamic textures.

Expected values come from closed forms (the PPCA maximum-likelihood solution, Gaussian
conditioning), hand-made images whose answer is known, or naive loops and dense solves
written here.
"""

from __future__ import annotations

import numpy as np
import pytest

from abp_np.backend import to_numpy
from abp_np.tools.baselines import (
    PCA,
    PPCAMissing,
    fit_pca_incomplete,
    fit_var,
    linear_dynamic_texture,
    neighbour_fill,
    pca_complete,
    pca_project_recover,
    run_var,
    total_variation,
    tv_inpaint,
)
from abp_np.tools.evaluation import mean_abs_error


def low_rank_images(rng, n, shape, rank):
    """n images of ``shape`` lying exactly in a ``rank``-dimensional affine subspace."""
    D = int(np.prod(shape))
    Y = rng.standard_normal((n, rank)) @ rng.standard_normal((rank, D)) + rng.standard_normal(D)
    return Y.reshape((n,) + shape)


# --------------------------------------------------------------------------------------------------
# PCA
# --------------------------------------------------------------------------------------------------


def test_pca_recovers_exact_low_rank_data(xp):
    rng = np.random.default_rng(4)
    Y = low_rank_images(rng, 40, (3, 5, 6), rank=4)
    pca = PCA(4).fit(xp.asarray(Y))
    np.testing.assert_allclose(to_numpy(pca.reconstruct(xp.asarray(Y))), Y, atol=1e-9)
    U = to_numpy(pca.components)
    assert U.shape == (4, 90)
    np.testing.assert_allclose(U @ U.T, np.eye(4), atol=1e-10)
    np.testing.assert_allclose(to_numpy(pca.mean), Y.reshape(40, -1).mean(axis=0), atol=1e-12)
    # explained variances are the top eigenvalues of the sample covariance
    eig = np.sort(np.linalg.eigvalsh(np.cov(Y.reshape(40, -1), rowvar=False)))[::-1][:4]
    np.testing.assert_allclose(to_numpy(pca.explained_variance), eig, rtol=1e-8)
    C = to_numpy(pca.transform(xp.asarray(Y)))
    assert C.shape == (40, 4)
    np.testing.assert_allclose(to_numpy(pca.inverse_transform(xp.asarray(C))), Y, atol=1e-9)


def test_pca_is_best_rank_d_fit():
    rng = np.random.default_rng(5)
    Y = rng.standard_normal((30, 12))
    pca = PCA(3).fit(Y)
    mu = Y.mean(axis=0)
    # projector onto the top-3 eigenvectors of the scatter matrix, from eigh
    w, V = np.linalg.eigh((Y - mu).T @ (Y - mu))
    P = V[:, -3:] @ V[:, -3:].T
    np.testing.assert_allclose(pca.reconstruct(Y), mu + (Y - mu) @ P, atol=1e-10)


def test_pca_bad_inputs():
    with pytest.raises(ValueError, match="d "):
        PCA(0)
    with pytest.raises(ValueError, match="keep d well below"):
        PCA(6).fit(np.zeros((5, 10)))
    with pytest.raises(ValueError, match="not fitted"):
        PCA(2).transform(np.zeros((3, 4)))
    pca = PCA(2).fit(np.random.default_rng(0).standard_normal((5, 4)))
    with pytest.raises(ValueError, match="shape"):
        pca.transform(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="C must be"):
        pca.inverse_transform(np.zeros((3, 3)))


def test_pca_complete_exact_on_low_rank_with_half_missing(xp):
    rng = np.random.default_rng(6)
    Y = low_rank_images(rng, 25, (2, 8, 8), rank=5)
    pca = PCA(5).fit(xp.asarray(Y))
    mask = rng.random((25, 1, 8, 8)) < 0.5
    Y_obs = np.where(mask, Y, np.nan)  # occluded pixels must never be read
    for keep in (True, False):
        got = pca_complete(xp.asarray(Y_obs), xp.asarray(mask), pca, keep_observed=keep)
        np.testing.assert_allclose(to_numpy(got), Y, atol=1e-6)


def test_pca_complete_matches_per_example_least_squares():
    rng = np.random.default_rng(7)
    Y = rng.standard_normal((6, 1, 5, 5))
    pca = PCA(3).fit(rng.standard_normal((20, 1, 5, 5)))
    mask = rng.random((6, 1, 5, 5)) < 0.6
    got = pca_complete(Y, mask, pca, ridge=0.0, keep_observed=False, chunk=4)
    U, mu = pca.components, pca.mean
    for i in range(6):  # naive: one lstsq per example on its observed rows
        obs = mask[i].ravel()
        c = np.linalg.lstsq(U.T[obs], Y[i].ravel()[obs] - mu[obs], rcond=None)[0]
        np.testing.assert_allclose(got[i].ravel(), mu + U.T @ c, atol=1e-10)
    kept = pca_complete(Y, mask, pca, ridge=0.0, keep_observed=True)
    np.testing.assert_array_equal(kept[np.broadcast_to(mask, Y.shape)], Y[mask])


def test_pca_complete_default_is_the_gaussian_conditional_mean():
    """The probabilistic-PCA fill equals E[y_missing | y_observed] under the Gaussian
    y ~ N(mu, U^T diag(v) U + s2 I), computed here by the textbook conditioning formula."""
    rng = np.random.default_rng(17)
    train = rng.standard_normal((40, 1, 4, 5)) * np.linspace(0.2, 2.0, 20).reshape(1, 1, 4, 5)
    pca = PCA(4).fit(train)
    U, mu, v, s2 = pca.components, pca.mean, pca.explained_variance, pca.noise_variance
    # s2 is the mean variance of the discarded directions, by its own formula
    eig = np.sort(np.linalg.eigvalsh(np.cov(train.reshape(40, -1), rowvar=False)))[::-1]
    np.testing.assert_allclose(s2, eig[4:].mean(), rtol=1e-10)
    cov = U.T @ np.diag(v) @ U + s2 * np.eye(20)
    Y = rng.standard_normal((5, 1, 4, 5))
    mask = rng.random((5, 1, 4, 5)) < 0.3  # few pixels observed
    got = pca_complete(Y, mask, pca)
    for i in range(5):
        o = mask[i].ravel()
        m = ~o
        y = Y[i].ravel()
        expected = mu[m] + cov[np.ix_(m, o)] @ np.linalg.solve(cov[np.ix_(o, o)], y[o] - mu[o])
        np.testing.assert_allclose(got[i].ravel()[m], expected, atol=1e-9)
        np.testing.assert_array_equal(got[i].ravel()[o], y[o])
    with pytest.raises(ValueError, match="ridge"):
        pca_complete(Y, mask, pca, ridge=-1.0)


def test_fit_pca_incomplete_recovers_low_rank_training_data(xp):
    rng = np.random.default_rng(8)
    Y = low_rank_images(rng, 50, (1, 6, 6), rank=2)
    mask = rng.random((50, 1, 6, 6)) < 0.5
    Y_obs = xp.asarray(np.where(mask, Y, np.nan))
    pca, filled = fit_pca_incomplete(Y_obs, xp.asarray(mask), 2, iters=400, tol=1e-12)
    np.testing.assert_allclose(to_numpy(filled), Y, atol=1e-5)
    np.testing.assert_allclose(to_numpy(pca.reconstruct(xp.asarray(Y))), Y, atol=1e-5)
    # neighbour init reaches the same answer
    _, filled2 = fit_pca_incomplete(Y_obs, mask, 2, iters=400, tol=1e-12, init="neighbour")
    np.testing.assert_allclose(to_numpy(filled2), Y, atol=1e-5)
    with pytest.raises(ValueError, match="init"):
        fit_pca_incomplete(Y_obs, mask, 3, init="zeros")
    with pytest.raises(ValueError, match="no pixel"):
        fit_pca_incomplete(Y_obs, np.zeros_like(mask), 3)


def test_pca_project_recover_exact_with_enough_measurements(xp):
    rng = np.random.default_rng(9)
    Y = low_rank_images(rng, 10, (3, 6, 6), rank=6)
    pca = PCA(6).fit(xp.asarray(Y))
    S = rng.standard_normal((15, 3, 6, 6))  # 15 white-noise images >= d = 6 measurements
    X = Y.reshape(10, -1) @ S.reshape(15, -1).T  # (10, 15): X_i = S y_i
    got = pca_project_recover(xp.asarray(X), xp.asarray(S), pca)
    np.testing.assert_allclose(to_numpy(got), Y, atol=1e-6)


def test_pca_project_recover_matches_lstsq_on_noisy_data():
    rng = np.random.default_rng(10)
    pca = PCA(4).fit(rng.standard_normal((30, 50)))
    S = rng.standard_normal((12, 50))
    X = rng.standard_normal((5, 12))
    got = pca_project_recover(X, S, pca, ridge=0.0)
    U, mu = pca.components, pca.mean
    c = np.linalg.lstsq(S @ U.T, (X - S @ mu).T, rcond=None)[0].T  # (5, 4)
    np.testing.assert_allclose(got, mu + c @ U, atol=1e-10)
    with pytest.raises(ValueError, match="S must be"):
        pca_project_recover(X, rng.standard_normal((12, 49)), pca)
    with pytest.raises(ValueError, match="X must be"):
        pca_project_recover(rng.standard_normal((5, 11)), S, pca)


def test_pca_refuses_d_at_least_n_minus_1():
    """With d >= n - 1 the components reproduce every centred image: no noise variance is
    left, and the hard-impute fit used to return its initial mean fill unchanged."""
    rng = np.random.default_rng(20)
    Y = rng.standard_normal((10, 1, 4, 4))
    for d in (9, 10):
        with pytest.raises(ValueError, match="keep d well below the number of images") as err:
            PCA(d).fit(Y)
        assert f"d = {d}" in str(err.value) and "n = 10" in str(err.value)
    with pytest.raises(ValueError, match="keep d well below"):
        PCA(4).fit(rng.standard_normal((30, 4)))  # d = D
    mask = rng.random((10, 1, 4, 4)) < 0.7
    with pytest.raises(ValueError, match=r"fit_pca_incomplete: d = 9 .* n = 10"):
        fit_pca_incomplete(Y, mask, 9)
    with pytest.raises(ValueError, match=r"PPCAMissing.fit: d = 9 .* n = 10"):
        PPCAMissing(9).fit(Y, mask)
    # a PCA whose record says it was fitted to too few images is refused by pca_complete
    pca = PCA(3).fit(rng.standard_normal((20, 1, 4, 4)))
    pca.n_examples = 4
    with pytest.raises(ValueError, match=r"pca_complete: d = 3 .* n = 4"):
        pca_complete(Y, mask, pca)
    # d = n - 2 is the largest accepted, and leaves a positive noise variance
    assert PCA(8).fit(Y).noise_variance > 0
    filled = fit_pca_incomplete(Y, mask, 8, iters=3)[1]
    assert filled.shape == Y.shape


# --------------------------------------------------------------------------------------------------
# probabilistic PCA with missing values (EM)
# --------------------------------------------------------------------------------------------------


def ppca_closed_form(Y, d):
    """Tipping and Bishop's maximum-likelihood PPCA: from the eigen-decomposition of the
    sample covariance (1/n normalisation), the top-d projector and the mean discarded
    eigenvalue."""
    X = Y.reshape(len(Y), -1)
    S = np.cov(X, rowvar=False, bias=True)
    lam, V = np.linalg.eigh(S)
    lam, V = lam[::-1], V[:, ::-1]
    return X.mean(axis=0), V[:, :d] @ V[:, :d].T, lam[d:].mean(), lam[:d]


def projector(W):
    return W @ np.linalg.solve(W.T @ W, W.T)


def anisotropic_data(rng, n, D, top):
    """Gaussian data with ``len(top)`` large, distinct variances and a smaller, spread tail."""
    scales = np.concatenate([top, np.linspace(0.8, 0.5, D - len(top))])
    Q = np.linalg.qr(rng.standard_normal((D, D)))[0]
    return (rng.standard_normal((n, D)) * scales) @ Q.T + rng.standard_normal(D)


@pytest.mark.parametrize("init", ["pca", "random"])
def test_ppca_on_complete_data_is_the_closed_form_ml_solution(xp, init):
    rng = np.random.default_rng(21)
    Y = anisotropic_data(rng, 400, 12, [3.0, 2.2, 1.6]).reshape(400, 3, 2, 2)
    mu, P, s2, lam = ppca_closed_form(Y, 3)
    model = PPCAMissing(3, iterations=3000, tol=1e-14, init=init)
    model.fit(xp.asarray(Y), xp.ones((400, 1, 2, 2), dtype=bool))
    W = to_numpy(model.W_)
    assert W.shape == (12, 3) and model.mean_.shape == (12,)
    np.testing.assert_allclose(projector(W), P, atol=1e-6)
    assert model.noise_variance_ == pytest.approx(s2, rel=1e-6)
    np.testing.assert_allclose(to_numpy(model.mean_), mu, atol=1e-10)
    # W = U_d (Lam_d - s2 I)^(1/2) R: the eigenvalues of W^T W are lam_k - s2
    np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(W.T @ W))[::-1], lam - s2, rtol=1e-5)


@pytest.mark.parametrize("init", ["pca", "random"])
def test_ppca_with_more_pixels_than_images_is_the_closed_form(init):
    """D = 50 > n = 30: the PCA start works on the n x n Gram matrix; sigma2 still averages
    the D - d discarded eigenvalues, the D - n + 1 zero ones included."""
    rng = np.random.default_rng(27)
    Y = anisotropic_data(rng, 30, 50, [4.0, 3.0, 2.0])
    mu, P, s2, _ = ppca_closed_form(Y, 3)
    model = PPCAMissing(3, iterations=5000, tol=1e-14, init=init).fit(Y, np.ones_like(Y, bool))
    np.testing.assert_allclose(projector(model.W_), P, atol=1e-8)
    assert model.noise_variance_ == pytest.approx(s2, rel=1e-7)


def low_rank_noisy(rng, n, D, rank, noise):
    """n samples of y = W z + mu + noise * eps: rank-``rank`` data with isotropic noise."""
    W = rng.standard_normal((D, rank))
    Y = rng.standard_normal((n, rank)) @ W.T + 0.5 * rng.standard_normal(D)
    return Y + noise * rng.standard_normal(Y.shape)


def test_ppca_recovers_missing_entries_far_better_than_the_mean(xp):
    """Rank-4 data in D = 60 with noise 0.05 and 30 % of the entries missing: the EM fill's
    RMS error on the missing entries is about the noise level (0.053 here), the mean fill's
    about the spread of the data (1.95); on the paper's [0, 1] scale 0.021 against 0.73."""
    rng = np.random.default_rng(22)
    Y = low_rank_noisy(rng, 500, 60, 4, 0.05)
    Y = Y.reshape(500, 1, 6, 10)
    mask = rng.random(Y.shape) >= 0.3
    Y_obs = np.where(mask, Y, np.nan)  # missing entries must never be read
    model = PPCAMissing(4, iterations=200)
    got = to_numpy(model.fit_complete(xp.asarray(Y_obs), xp.asarray(mask)))
    miss = ~mask
    np.testing.assert_array_equal(got[mask], Y[mask])  # observed entries as given
    pixel_mean = np.nanmean(Y_obs, axis=0, keepdims=True)
    mean_fill = np.where(mask, Y, pixel_mean)
    rmse_em = np.sqrt(((got - Y)[miss] ** 2).mean())
    rmse_mean = np.sqrt(((mean_fill - Y)[miss] ** 2).mean())
    assert rmse_em < 0.08 and rmse_mean > 1.0
    assert rmse_em < 0.06 * rmse_mean
    # and in the paper's measure
    assert mean_abs_error(Y, got, miss) < 0.06 * mean_abs_error(Y, mean_fill, miss)
    assert np.sqrt(model.noise_variance_) == pytest.approx(0.05, rel=0.15)


def test_ppca_log_likelihood_never_decreases():
    rng = np.random.default_rng(23)
    Y = low_rank_noisy(rng, 200, 30, 3, 0.1)
    mask = rng.random(Y.shape) >= 0.4
    for init in ("pca", "random"):
        model = PPCAMissing(5, iterations=60, tol=0.0, init=init).fit(Y, mask)
        ll = np.asarray(model.log_likelihood_)
        assert len(ll) == model.n_iter_ + 1 == 61
        assert np.all(np.diff(ll) >= -1e-9 * np.abs(ll[1:]))
        assert ll[-1] > ll[0]
    # the recorded value is the observed-data log-likelihood, by the dense Gaussian formula
    C = model.W_ @ model.W_.T + model.noise_variance_ * np.eye(30)
    total = 0.0
    for i in range(200):
        o = mask[i]
        r = Y[i, o] - model.mean_[o]
        Co = C[np.ix_(o, o)]
        total += -0.5 * (
            o.sum() * np.log(2 * np.pi) + np.linalg.slogdet(Co)[1] + r @ np.linalg.solve(Co, r)
        )
    # the last entry belongs to the parameters after the last M-step, which the model keeps
    assert ll[-1] == pytest.approx(total, rel=1e-10)


def test_ppca_completes_held_out_images_by_gaussian_conditioning(xp):
    """For new images (W fixed) the fill is E[y_missing | y_observed] under the fitted
    Gaussian y ~ N(mu, W W^T + s2 I), by the textbook conditioning formula; and it recovers
    held-out images about as well as training images."""
    rng = np.random.default_rng(24)
    Y = low_rank_noisy(rng, 600, 24, 3, 0.05).reshape(600, 2, 3, 4)
    mask = rng.random((600, 1, 3, 4)) >= 0.3  # one mask for both channels
    train, test = Y[:500], Y[500:]
    m_train, m_test = mask[:500], mask[500:]
    model = PPCAMissing(3).fit(xp.asarray(train), xp.asarray(m_train))
    got = to_numpy(model.complete(xp.asarray(np.where(m_test, test, np.nan)), xp.asarray(m_test)))
    W, mu, s2 = to_numpy(model.W_), to_numpy(model.mean_), model.noise_variance_
    C = W @ W.T + s2 * np.eye(24)
    full = np.broadcast_to(m_test, test.shape).reshape(100, -1)
    for i in range(100):
        o, m = full[i], ~full[i]
        y = test[i].ravel()
        expected = mu[m] + C[np.ix_(m, o)] @ np.linalg.solve(C[np.ix_(o, o)], y[o] - mu[o])
        np.testing.assert_allclose(got[i].ravel()[m], expected, atol=1e-8)
        np.testing.assert_array_equal(got[i].ravel()[o], y[o])
    miss_test = ~np.broadcast_to(m_test, test.shape)
    miss_train = ~np.broadcast_to(m_train, train.shape)
    err_test = mean_abs_error(test, got, miss_test)
    err_train = mean_abs_error(train, to_numpy(model.complete(train, m_train)), miss_train)
    assert err_test < 1.5 * err_train
    # fit_complete = fit, then complete the same images
    again = PPCAMissing(3).fit_complete(train, m_train)
    np.testing.assert_allclose(again, to_numpy(model.complete(train, m_train)), atol=1e-12)


def test_ppca_pixels_never_observed_and_dtype():
    rng = np.random.default_rng(25)
    Y = low_rank_noisy(rng, 100, 16, 2, 0.1)
    Y = Y.astype(np.float32).reshape(100, 1, 4, 4)
    mask = rng.random(Y.shape) >= 0.2
    mask[:, :, 0, 0] = False  # one pixel seen in no image
    model = PPCAMissing(2).fit(Y, mask)
    assert np.all(np.isfinite(model.W_)) and model.noise_variance_ > 0
    assert np.all(model.W_[0] == 0)
    observed_mean = Y[mask].mean()
    assert model.mean_[0] == pytest.approx(observed_mean, rel=1e-5)
    out = model.complete(Y, mask)
    assert out.dtype == np.float32 and out.shape == Y.shape
    assert np.all(np.isfinite(out))


def test_ppca_bad_inputs():
    rng = np.random.default_rng(26)
    Y = rng.standard_normal((20, 6))
    with pytest.raises(ValueError, match="d must be"):
        PPCAMissing(0)
    with pytest.raises(ValueError, match="init"):
        PPCAMissing(2, init="zeros")
    with pytest.raises(ValueError, match="not fitted"):
        PPCAMissing(2).complete(Y, np.ones_like(Y, bool))
    with pytest.raises(ValueError, match="no pixel"):
        PPCAMissing(2).fit(Y, np.zeros_like(Y, bool))
    model = PPCAMissing(2).fit(Y, np.ones_like(Y, bool))
    with pytest.raises(ValueError, match="fitted shape"):
        model.complete(np.zeros((3, 7)), np.ones((3, 7), bool))
    with pytest.raises(ValueError, match="axes"):
        model.complete(Y, np.ones(6, bool))
    assert "PPCAMissing(d=2" in repr(model)


# --------------------------------------------------------------------------------------------------
# harmonic fill from neighbours
# --------------------------------------------------------------------------------------------------


def dense_harmonic_fill(img, obs):
    """Oracle: build the harmonic equations of every unknown pixel by loops, solve densely."""
    H, W = img.shape
    unknown = [(y, x) for y in range(H) for x in range(W) if not obs[y, x]]
    index = {p: k for k, p in enumerate(unknown)}
    A = np.zeros((len(unknown), len(unknown)))
    b = np.zeros(len(unknown))
    for k, (y, x) in enumerate(unknown):
        for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            q = (y + dy, x + dx)
            if 0 <= q[0] < H and 0 <= q[1] < W:
                A[k, k] += 1
                if obs[q]:
                    b[k] += img[q]
                else:
                    A[k, index[q]] -= 1
    out = img.copy()
    for (y, x), v in zip(unknown, np.linalg.solve(A, b), strict=True):
        out[y, x] = v
    return out


def test_neighbour_fill_matches_dense_solve(xp):
    rng = np.random.default_rng(11)
    Y = rng.uniform(-1, 1, (3, 2, 9, 11))
    mask = rng.random((3, 1, 9, 11)) < 0.3  # 70 % missing, border included
    got = to_numpy(neighbour_fill(xp.asarray(np.where(mask, Y, np.nan)), xp.asarray(mask)))
    for i in range(3):
        for c in range(2):
            expected = dense_harmonic_fill(Y[i, c], mask[i, 0])
            np.testing.assert_allclose(got[i, c], expected, atol=1e-7)


def test_neighbour_fill_exact_on_constant_images(xp):
    rng = np.random.default_rng(12)
    Y = np.broadcast_to(rng.uniform(-1, 1, (4, 3, 1, 1)), (4, 3, 32, 32)).copy()
    mask = rng.random((4, 1, 32, 32)) < 0.1  # 90 % missing
    got = neighbour_fill(xp.asarray(np.where(mask, Y, np.nan)), xp.asarray(mask))
    np.testing.assert_allclose(to_numpy(got), Y, atol=1e-7)


def test_neighbour_fill_reproduces_linear_ramps_with_observed_border(xp):
    rng = np.random.default_rng(13)
    yy, xx = np.mgrid[0:40, 0:40]
    Y = np.stack([0.02 * xx - 0.03 * yy + 0.1, -0.01 * xx + 0.005 * yy])[None]  # (1, 2, 40, 40)
    Y = np.concatenate([Y, -Y])  # (2, 2, 40, 40)
    mask = rng.random((2, 1, 40, 40)) < 0.1  # 90 % missing inside ...
    mask[:, :, [0, -1], :] = True  # ... with the border observed
    mask[:, :, :, [0, -1]] = True
    mask[1, :, 5:35, 5:35] = False  # and one big square hole
    got = neighbour_fill(xp.asarray(Y), xp.asarray(mask))
    np.testing.assert_allclose(to_numpy(got), Y, atol=1e-6)


def test_neighbour_fill_keeps_observed_and_dtype():
    rng = np.random.default_rng(14)
    Y = rng.uniform(-1, 1, (2, 3, 16, 16)).astype(np.float32)
    mask = rng.random((2, 1, 16, 16)) < 0.5
    got = neighbour_fill(Y, mask)
    assert got.dtype == np.float32 and got.shape == Y.shape
    full = np.broadcast_to(mask, Y.shape)
    np.testing.assert_array_equal(got[full], Y[full])
    # a harmonic fill obeys the maximum principle: no value outside the observed range
    assert got.min() >= Y[full].min() - 1e-6 and got.max() <= Y[full].max() + 1e-6


def test_neighbour_fill_bad_inputs():
    with pytest.raises(ValueError, match="N, C, H, W"):
        neighbour_fill(np.zeros((3, 8, 8)), np.ones((3, 8, 8), dtype=bool))
    mask = np.ones((2, 1, 8, 8), dtype=bool)
    mask[1] = False
    with pytest.raises(ValueError, match=r"images \[1\]"):
        neighbour_fill(np.zeros((2, 3, 8, 8)), mask)


# --------------------------------------------------------------------------------------------------
# total-variation inpainting
# --------------------------------------------------------------------------------------------------


def naive_tv(img):
    """Isotropic TV of one (H, W) image by loops (no difference past the last row / column)."""
    H, W = img.shape
    total = 0.0
    for y in range(H):
        for x in range(W):
            dx = img[y, x + 1] - img[y, x] if x + 1 < W else 0.0
            dy = img[y + 1, x] - img[y, x] if y + 1 < H else 0.0
            total += np.hypot(dx, dy)
    return total


def test_total_variation_matches_loops(xp):
    rng = np.random.default_rng(30)
    Y = rng.uniform(-1, 1, (2, 3, 5, 7))
    got = to_numpy(total_variation(xp.asarray(Y)))
    expected = np.array([[naive_tv(Y[i, c]) for c in range(3)] for i in range(2)])
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_tv_inpaint_constant_images_and_holes_in_constant_regions(xp):
    rng = np.random.default_rng(31)
    Y = np.broadcast_to(rng.uniform(-1, 1, (3, 2, 1, 1)), (3, 2, 16, 16)).copy()
    mask = rng.random((3, 1, 16, 16)) < 0.2  # 80 % missing
    got = tv_inpaint(xp.asarray(np.where(mask, Y, np.nan)), xp.asarray(mask), init="mean")
    np.testing.assert_allclose(to_numpy(got), Y, atol=1e-6)
    # a hole inside the constant left half of a two-level image: filled with that level
    img = np.where(np.arange(16)[None, :] < 8, -0.5, 0.75) * np.ones((16, 1))
    Y = img[None, None]
    mask = np.ones((1, 1, 16, 16), bool)
    mask[..., 4:12, 1:6] = False
    got = to_numpy(tv_inpaint(xp.asarray(Y), xp.asarray(mask), init="mean"))
    np.testing.assert_allclose(got, Y, atol=1e-4)


def test_tv_inpaint_keeps_an_edge_sharp_where_harmonic_fill_blurs_it(xp):
    """A one-pixel-wide hole column crosses a horizontal step edge (top -1, bottom +1). The
    image itself is the TV minimiser (its TV, 2 per column, is the least of any image that
    agrees with the observed pixels, each column of which rises from -1 to +1); harmonic
    fill instead bends the edge into a ramp."""
    H, W = 12, 12
    Y = (np.where(np.arange(H)[:, None] < H // 2, -1.0, 1.0) * np.ones((1, W)))[None, None]
    mask = np.ones((1, 1, H, W), bool)
    mask[..., 2 : H - 2, 5] = False
    hole = ~mask
    tv = to_numpy(tv_inpaint(xp.asarray(Y), xp.asarray(mask)))
    harmonic = to_numpy(neighbour_fill(xp.asarray(Y), xp.asarray(mask)))
    err_tv = mean_abs_error(Y, tv, hole)
    err_harmonic = mean_abs_error(Y, harmonic, hole)
    assert err_harmonic > 0.05  # the ramp: about 0.09 on the [0, 1] scale
    assert err_tv < 0.002 and err_tv < err_harmonic / 20
    assert np.abs(tv - Y).max() < 0.01
    assert to_numpy(total_variation(xp.asarray(tv))).sum() == pytest.approx(2 * W, rel=1e-4)


def test_tv_inpaint_lowers_total_variation_below_the_harmonic_fill(xp):
    rng = np.random.default_rng(32)
    yy, xx = np.mgrid[0:20, 0:20]
    shapes = [(xx > 6 + i) & (yy < 14 - i) for i in range(4)]  # a corner per image
    Y = np.stack([np.where(s, 0.8, -0.6) for s in shapes])[:, None]
    Y = np.concatenate([Y, Y[:, :, ::-1]], axis=1) + 0.05 * rng.standard_normal((4, 2, 20, 20))
    for share in (0.3, 0.6):
        mask = rng.random((4, 1, 20, 20)) < share
        tv = tv_inpaint(xp.asarray(Y), xp.asarray(mask))
        harmonic = neighbour_fill(xp.asarray(Y), xp.asarray(mask))
        tv_tv = to_numpy(total_variation(tv))
        tv_harmonic = to_numpy(total_variation(harmonic))
        assert np.all(tv_tv <= tv_harmonic + 1e-6)
        assert tv_tv.sum() < tv_harmonic.sum()


def test_tv_inpaint_keeps_observed_pixels_dtype_and_never_reads_holes(xp):
    rng = np.random.default_rng(33)
    Y = rng.uniform(-1, 1, (2, 3, 10, 10)).astype(np.float32)
    mask = rng.random((2, 1, 10, 10)) < 0.5
    got = tv_inpaint(xp.asarray(np.where(mask, Y, np.nan)), xp.asarray(mask), iterations=50)
    got = to_numpy(got)
    assert got.dtype == np.float32 and got.shape == Y.shape
    full = np.broadcast_to(mask, Y.shape)
    np.testing.assert_array_equal(got[full], Y[full])
    assert np.all(np.isfinite(got))
    # the TV minimiser obeys the maximum principle, like the harmonic fill
    assert got.min() >= Y[full].min() - 1e-3 and got.max() <= Y[full].max() + 1e-3
    # chunks of images give the same answer as one batch
    again = to_numpy(tv_inpaint(xp.asarray(Y), xp.asarray(mask), iterations=50, chunk=1))
    np.testing.assert_allclose(again, got, atol=1e-6)


def test_tv_inpaint_bad_inputs():
    with pytest.raises(ValueError, match="N, C, H, W"):
        tv_inpaint(np.zeros((3, 8, 8)), np.ones((3, 8, 8), dtype=bool))
    mask = np.ones((2, 1, 8, 8), dtype=bool)
    mask[0] = False
    with pytest.raises(ValueError, match=r"images \[0\]"):
        tv_inpaint(np.zeros((2, 3, 8, 8)), mask)
    with pytest.raises(ValueError, match="init"):
        tv_inpaint(np.zeros((1, 1, 4, 4)), np.ones((1, 1, 4, 4), bool), init="zeros")
    with pytest.raises(ValueError, match="iterations"):
        tv_inpaint(np.zeros((1, 1, 4, 4)), np.ones((1, 1, 4, 4), bool), iterations=-1)


# --------------------------------------------------------------------------------------------------
# vector auto-regression and the linear dynamic texture
# --------------------------------------------------------------------------------------------------

A_TRUE = np.array([[0.6, 0.2, 0.0], [-0.3, 0.5, 0.1], [0.0, 0.2, 0.3]])
Q_TRUE = np.array([[0.5, 0.1, 0.0], [0.1, 0.3, 0.05], [0.0, 0.05, 0.2]])
MU_TRUE = np.array([1.0, -2.0, 0.5])


def simulate_var(A, Q, mu, T, rng):
    """Naive VAR(1) simulation, started at the mean."""
    L = np.linalg.cholesky(Q)
    Z = np.empty((T, len(mu)))
    x = np.zeros(len(mu))
    for t in range(T):
        x = A @ x + L @ rng.standard_normal(len(mu))
        Z[t] = mu + x
    return Z


def stationary_cov(A, Q, terms=300):
    """P = sum_k A^k Q (A^k)^T, the solution of P = A P A^T + Q."""
    P, Ak = np.zeros_like(Q), np.eye(len(Q))
    for _ in range(terms):
        P += Ak @ Q @ Ak.T
        Ak = A @ Ak
    return P


def rotation(angle):
    return np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])


def test_fit_var_exact_without_noise():
    # two rotations of periods 12 and 6: over 12 frames the states average to exactly 0,
    # so the sample mean is the true centre c and Z_t - c = A (Z_{t-1} - c) holds exactly
    A_rot = np.zeros((4, 4))
    A_rot[:2, :2] = rotation(2 * np.pi / 12)
    A_rot[2:, 2:] = rotation(2 * np.pi / 6)
    c = np.array([0.5, -1.0, 2.0, 0.0])
    x = np.array([1.0, 0.3, -0.7, 0.4])
    Z = np.empty((12, 4))
    for t in range(12):
        Z[t] = c + x
        x = A_rot @ x
    A, Q, mu = fit_var(Z)
    np.testing.assert_allclose(mu, c, atol=1e-12)
    np.testing.assert_allclose(A, A_rot, atol=1e-10)
    np.testing.assert_allclose(Q, np.zeros((4, 4)), atol=1e-20)


def test_fit_var_recovers_known_dynamics():
    rng = np.random.default_rng(16)
    Z = simulate_var(A_TRUE, Q_TRUE, MU_TRUE, 20000, rng)
    A, Q, mu = fit_var(Z)
    # standard errors are about sqrt(q / (T p)) < 0.01 here
    np.testing.assert_allclose(A, A_TRUE, atol=0.03)
    np.testing.assert_allclose(Q, Q_TRUE, atol=0.02)
    np.testing.assert_allclose(mu, MU_TRUE, atol=0.05)
    assert A.shape == (3, 3) and Q.shape == (3, 3) and mu.shape == (3,)


def test_fit_var_ridge_and_max_radius():
    rng = np.random.default_rng(17)
    Z = simulate_var(A_TRUE, Q_TRUE, MU_TRUE, 200, rng)
    A0, _, _ = fit_var(Z)
    A1, _, _ = fit_var(Z, ridge=1e6)
    assert np.abs(A1).max() < 0.2 * np.abs(A0).max()  # a huge ridge shrinks A towards 0
    A2, _, _ = fit_var(Z, max_radius=0.1)
    np.testing.assert_allclose(np.abs(np.linalg.eigvals(A2)).max(), 0.1)
    np.testing.assert_allclose(A2 / A2[0, 0], A0 / A0[0, 0])  # only rescaled
    with pytest.raises(ValueError, match="T >= 2"):
        fit_var(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="ridge"):
        fit_var(Z, ridge=-1.0)


def test_run_var_noiseless_trajectory():
    z0 = np.array([2.0, 0.0, -1.0])
    out = run_var(A_TRUE, np.zeros((3, 3)), MU_TRUE, 5, np.random.default_rng(0), z0=z0, burn_in=0)
    x = z0 - MU_TRUE
    for t in range(5):
        x = A_TRUE @ x
        np.testing.assert_allclose(out[t], MU_TRUE + x, atol=1e-12)


def test_run_var_has_the_stationary_covariance():
    rng = np.random.default_rng(18)
    Z = run_var(A_TRUE, Q_TRUE, MU_TRUE, 40000, rng, burn_in=50)
    assert Z.shape == (40000, 3)
    np.testing.assert_allclose(Z.mean(axis=0), MU_TRUE, atol=0.04)
    np.testing.assert_allclose(np.cov(Z, rowvar=False), stationary_cov(A_TRUE, Q_TRUE), atol=0.03)
    # lag-one covariance is A P
    Zc = Z - Z.mean(axis=0)
    lag1 = Zc[1:].T @ Zc[:-1] / (len(Z) - 1)
    np.testing.assert_allclose(lag1, A_TRUE @ stationary_cov(A_TRUE, Q_TRUE), atol=0.03)
    # reproducible from the generator
    a = run_var(A_TRUE, Q_TRUE, MU_TRUE, 7, np.random.default_rng(1))
    b = run_var(A_TRUE, Q_TRUE, MU_TRUE, 7, np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)


def test_run_var_bad_inputs():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="square"):
        run_var(np.zeros((2, 3)), np.eye(2), np.zeros(2), 5, rng)
    with pytest.raises(ValueError, match="noise_cov"):
        run_var(np.eye(2), np.eye(3), np.zeros(2), 5, rng)
    with pytest.raises(ValueError, match="steps"):
        run_var(np.eye(2), np.eye(2), np.zeros(2), 0, rng)
    with pytest.raises(ValueError, match="rng"):
        run_var(np.eye(2), np.eye(2), np.zeros(2), 5, 3)
    with pytest.raises(ValueError, match="z0"):
        run_var(np.eye(2), np.eye(2), np.zeros(2), 5, rng, z0=np.zeros(3))


def test_linear_dynamic_texture_recovers_dynamics_up_to_basis(xp):
    rng = np.random.default_rng(19)
    # frames y_t = m + x_t B with x_t a noiseless rotation-and-decay in 2-D
    theta, r = 0.4, 0.97
    A_state = r * rotation(theta)
    x = np.empty((60, 2))
    x[0] = [1.0, 0.0]
    for t in range(1, 60):
        x[t] = A_state @ x[t - 1]
    B = rng.standard_normal((2, 3 * 4 * 4))
    frames = (rng.standard_normal(48) + x @ B).reshape(60, 3, 4, 4)
    ldt = linear_dynamic_texture(xp.asarray(frames), 2)
    # eigenvalues are basis-independent: r exp(+-i theta)
    eig = np.sort_complex(np.linalg.eigvals(ldt.A))
    expected = np.sort_complex(r * np.exp(np.array([-1j, 1j]) * theta))
    np.testing.assert_allclose(eig, expected, atol=1e-3)
    new = ldt.synthesise(10, np.random.default_rng(0), burn_in=5)
    assert new.shape == (10, 3, 4, 4)
    # synthesised frames stay in the fitted 2-D affine subspace
    rec = to_numpy(ldt.pca.reconstruct(new))
    np.testing.assert_allclose(rec, to_numpy(new), atol=1e-8)


# --------------------------------------------------------------------------------------------------
# the linear generator (the linear factor model trained by ABP)
# --------------------------------------------------------------------------------------------------


def test_linear_generator_forward_is_w_z_plus_b(xp):
    from abp_np import linear_generator

    g = linear_generator(3, (2, 4, 5), rng=np.random.default_rng(0), dtype=np.float64)
    assert g.latent_shape == (3,) and len(g.layers) == 2
    W = to_numpy(g.layers[0].params["weight"])
    assert W.shape == (40, 3)
    assert W.std() == pytest.approx(0.005, rel=0.3)  # the paper's initial std
    b = np.random.default_rng(1).standard_normal(40)
    g.layers[0].params["bias"][...] = b
    z = np.random.default_rng(2).standard_normal((6, 3))
    g.to("cpu" if xp is np else "gpu")
    out = to_numpy(g.forward(xp.asarray(z)))
    assert out.shape == (6, 2, 4, 5)
    expected = np.stack([W @ z[i] + b for i in range(6)]).reshape(6, 2, 4, 5)  # no tanh
    np.testing.assert_allclose(out, expected, rtol=1e-12)
    assert linear_generator(2, (1, 3, 3)).layers[0].dtype == np.float32
    with pytest.raises(ValueError, match="image_shape"):
        linear_generator(2, (0, 3))
