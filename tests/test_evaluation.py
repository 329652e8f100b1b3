"""Evaluation tools: the error metric, latent paths and grids, and the re-exported baselines.

Expected values come from closed forms, hand-made arrays or naive loops written here. The
baselines themselves are tested in test_baselines.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from abp_np.backend import to_numpy
from abp_np.tools import baselines, evaluation
from abp_np.tools.evaluation import (
    interpolate,
    latent_grid,
    mean_abs_error,
    mean_abs_error_per_example,
)

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
# the baselines, under their old names
# --------------------------------------------------------------------------------------------------


def test_baselines_keep_their_old_names():
    import abp_np

    moved = [
        "PCA",
        "pca_complete",
        "fit_pca_incomplete",
        "pca_project_recover",
        "neighbour_fill",
        "fit_var",
        "run_var",
        "LinearDynamicTexture",
        "linear_dynamic_texture",
        "PPCAMissing",
        "tv_inpaint",
    ]
    for name in moved:
        assert getattr(evaluation, name) is getattr(baselines, name), name
        assert getattr(abp_np.evaluation, name) is getattr(baselines, name), name
        assert name in evaluation.__all__ and name in baselines.__all__
    assert abp_np.PCA is baselines.PCA
