"""Evaluation tools: error metric, latent paths and grids, PCA baselines, harmonic fill, VAR.

Expected values come from closed forms, hand-made arrays or naive loops written here.
"""

from __future__ import annotations

import numpy as np
import pytest

from abp_np.backend import to_numpy
from abp_np.tools.evaluation import (
    PCA,
    fit_pca_incomplete,
    fit_var,
    interpolate,
    latent_grid,
    linear_dynamic_texture,
    mean_abs_error,
    mean_abs_error_per_example,
    neighbour_fill,
    pca_complete,
    pca_project_recover,
    run_var,
)


def low_rank_images(rng, n, shape, rank):
    """n images of ``shape`` lying exactly in a ``rank``-dimensional affine subspace."""
    D = int(np.prod(shape))
    Y = rng.standard_normal((n, rank)) @ rng.standard_normal((rank, D)) + rng.standard_normal(D)
    return Y.reshape((n,) + shape)


# --------------------------------------------------------------------------------------------------
# the error measure
# --------------------------------------------------------------------------------------------------


def test_mean_abs_error_hand_made(xp):
    Y = xp.asarray([[1.0, -1.0, 0.0, 0.5], [0.0, 0.0, 1.0, 1.0]])
    Yhat = xp.asarray([[1.0, 1.0, 0.5, 0.5], [-1.0, 0.0, 1.0, 0.0]])
    # |diffs| = [0, 2, .5, 0] and [1, 0, 0, 1]; halved: [0, 1, .25, 0], [.5, 0, 0, .5]
    assert mean_abs_error(Y, Yhat) == pytest.approx(2.25 / 8)
    np.testing.assert_allclose(to_numpy(mean_abs_error_per_example(Y, Yhat)), [1.25 / 4, 1.0 / 4])
    mask = xp.asarray([[True, True, False, False], [False, False, False, True]])
    assert mean_abs_error(Y, Yhat, mask) == pytest.approx(1.5 / 3)
    np.testing.assert_allclose(to_numpy(mean_abs_error_per_example(Y, Yhat, mask)), [0.5, 0.5])


def test_mean_abs_error_mask_broadcasts_over_channels(xp):
    rng = np.random.default_rng(0)
    Y = rng.uniform(-1, 1, (2, 3, 4, 5))
    Yhat = rng.uniform(-1, 1, (2, 3, 4, 5))
    mask = rng.random((2, 1, 4, 5)) < 0.4
    # naive loop over every selected pixel of every channel
    total, count, per = 0.0, 0, [[0.0, 0], [0.0, 0]]
    for i in range(2):
        for c in range(3):
            for y in range(4):
                for x in range(5):
                    if mask[i, 0, y, x]:
                        e = abs(Y[i, c, y, x] - Yhat[i, c, y, x]) / 2
                        total, count = total + e, count + 1
                        per[i][0] += e
                        per[i][1] += 1
    got = mean_abs_error(xp.asarray(Y), xp.asarray(Yhat), xp.asarray(mask))
    assert got == pytest.approx(total / count)
    got_per = to_numpy(mean_abs_error_per_example(xp.asarray(Y), xp.asarray(Yhat), mask))
    np.testing.assert_allclose(got_per, [per[0][0] / per[0][1], per[1][0] / per[1][1]])


def test_mean_abs_error_empty_selection():
    Y, Yhat = np.zeros((2, 1, 2, 2)), np.ones((2, 1, 2, 2))
    mask = np.zeros((2, 1, 2, 2), dtype=bool)
    mask[1, 0, 0, 0] = True
    per = mean_abs_error_per_example(Y, Yhat, mask)
    assert np.isnan(per[0]) and per[1] == 0.5
    with pytest.raises(ValueError, match="no pixel"):
        mean_abs_error(Y, Yhat, np.zeros_like(mask))


def test_mean_abs_error_bad_inputs():
    with pytest.raises(ValueError, match="same shape"):
        mean_abs_error(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="broadcast"):
        mean_abs_error(np.zeros((2, 3, 4, 4)), np.zeros((2, 3, 4, 4)), np.ones((2, 2, 4, 4)))
    with pytest.raises(ValueError, match="axes"):
        mean_abs_error_per_example(np.zeros((2, 3, 4, 4)), np.zeros((2, 3, 4, 4)), np.ones((4, 4)))


# --------------------------------------------------------------------------------------------------
# interpolation and the latent grid
# --------------------------------------------------------------------------------------------------


def test_linear_interpolation(xp):
    z0 = xp.asarray([[1.0, 2.0], [3.0, 4.0]])
    z1 = xp.asarray([[5.0, 2.0], [-1.0, 0.0]])
    path = to_numpy(interpolate(z0, z1, 5))
    assert path.shape == (5, 2, 2)
    np.testing.assert_allclose(path[0], to_numpy(z0))
    np.testing.assert_allclose(path[-1], to_numpy(z1))
    np.testing.assert_allclose(path[2], [[3.0, 2.0], [1.0, 2.0]])
    np.testing.assert_allclose(path[1], [[2.0, 2.0], [2.0, 3.0]])


def test_slerp_orthogonal_closed_form(xp):
    z0 = xp.asarray([2.0, 0.0, 0.0])
    z1 = xp.asarray([0.0, 2.0, 0.0])
    path = to_numpy(interpolate(z0, z1, 7, method="slerp"))
    angles = np.linspace(0, np.pi / 2, 7)
    expected = 2.0 * np.stack([np.cos(angles), np.sin(angles), np.zeros(7)], axis=1)
    np.testing.assert_allclose(path, expected, atol=1e-6)


def test_slerp_keeps_norm_and_hits_endpoints(xp):
    rng = np.random.default_rng(3)
    a = rng.standard_normal((10, 10))
    b = rng.standard_normal((10, 10))
    b *= np.linalg.norm(a) / np.linalg.norm(b)
    path = to_numpy(interpolate(xp.asarray(a), xp.asarray(b), 9, method="slerp"))
    assert path.shape == (9, 10, 10)
    np.testing.assert_allclose(path[0], a, atol=1e-6)
    np.testing.assert_allclose(path[-1], b, atol=1e-6)
    norms = np.linalg.norm(path.reshape(9, -1), axis=1)
    np.testing.assert_allclose(norms, np.linalg.norm(a), rtol=1e-6)
    # constant angular speed: consecutive points are equally far apart
    gaps = np.linalg.norm(np.diff(path.reshape(9, -1), axis=0), axis=1)
    np.testing.assert_allclose(gaps, gaps[0], rtol=1e-6)
    # and it is not the linear path (whose midpoint is shorter)
    assert np.linalg.norm(path[4]) > np.linalg.norm((a + b) / 2) + 1e-3


def test_slerp_parallel_falls_back_to_linear():
    z0 = np.array([1.0, 2.0, 3.0])
    z1 = 2 * z0
    path = interpolate(z0, z1, 3, method="slerp")
    assert np.all(np.isfinite(path))
    np.testing.assert_allclose(path[1], 1.5 * z0)


def test_interpolate_bad_inputs():
    with pytest.raises(ValueError, match="same shape"):
        interpolate(np.zeros(3), np.zeros(4), 5)
    with pytest.raises(ValueError, match="steps"):
        interpolate(np.zeros(3), np.ones(3), 1)
    with pytest.raises(ValueError, match="method"):
        interpolate(np.zeros(3), np.ones(3), 5, method="cubic")


def test_latent_grid_corners_and_order():
    z = latent_grid(9, 2.0)
    assert z.shape == (81, 2) and z.dtype == np.float32
    np.testing.assert_allclose(z[0], [-2, -2])  # top-left
    np.testing.assert_allclose(z[8], [2, -2])  # top-right: z1 grows along a row
    np.testing.assert_allclose(z[72], [-2, 2])  # bottom-left: z2 grows down a column
    np.testing.assert_allclose(z[80], [2, 2])  # bottom-right
    np.testing.assert_allclose(z[40], [0, 0])  # centre
    np.testing.assert_allclose(z[1] - z[0], [0.5, 0])
    np.testing.assert_allclose(z[9] - z[0], [0, 0.5])
    assert len({tuple(p) for p in z.tolist()}) == 81
    with pytest.raises(ValueError, match="n"):
        latent_grid(1)
    with pytest.raises(ValueError, match="limit"):
        latent_grid(9, 0.0)


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
    with pytest.raises(ValueError, match="at least d"):
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
