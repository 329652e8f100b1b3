"""abp_np.tools.dynamic: the auto-regression on Z of a dynamic texture, its synthesis and clips."""

from __future__ import annotations

import numpy as np
import pytest

from abp_np.tools import dynamic


def _var_process(A, T, rng, noise=0.05):
    d = A.shape[0]
    Z = np.zeros((T, d))
    for t in range(1, T):
        Z[t] = A @ Z[t - 1] + noise * rng.standard_normal(d)
    return Z + 3.0  # a mean away from zero


def test_fit_recovers_a_known_auto_regression():
    rng = np.random.default_rng(0)
    c, s = np.cos(0.3), np.sin(0.3)
    A = 0.9 * np.array([[c, -s], [s, c]])  # a damped rotation, spectral radius 0.9
    Z = _var_process(A, 4000, rng)
    dyn = dynamic.fit_dynamics(Z)
    np.testing.assert_allclose(dyn.A, A, atol=0.03)
    np.testing.assert_allclose(dyn.mean, [3.0, 3.0], atol=0.05)
    np.testing.assert_allclose(dyn.noise_cov, 0.05**2 * np.eye(2), atol=3e-4)
    assert dyn.spectral_radius == pytest.approx(0.9, abs=0.03)
    # one-step prediction: mu + A (Z_{t-1} - mu)
    mu = dyn.mean
    np.testing.assert_allclose(dyn.predict(Z[:3]), mu + (Z[:2] - mu) @ dyn.A.T)


def test_radius_is_capped_and_runs_have_the_length_asked(tmp_path):
    Z = np.cumsum(np.ones((10, 3)), axis=0)  # a straight line: A = I fits, radius 1
    dyn = dynamic.fit_dynamics(Z, max_radius=0.5)
    assert dyn.spectral_radius == pytest.approx(0.5)
    run = dyn.run(25, np.random.default_rng(1), start=4, burn_in=0)
    assert run.shape == (25, 3)
    # from Z[4] with no noise left after the fit on a line, the chain decays towards the mean
    with pytest.raises(ValueError, match="start"):
        dyn.run(5, np.random.default_rng(1), start=10)
    dyn.save(tmp_path / "d.npz")
    back = dynamic.Dynamics.load(tmp_path / "d.npz")
    for name in ("A", "noise_cov", "mean", "Z"):
        np.testing.assert_array_equal(getattr(back, name), getattr(dyn, name))


def test_decode_and_save_clip(tmp_path):
    pytest.importorskip("PIL")
    from PIL import Image, ImageSequence

    from abp_np.generator import build

    g = build(
        "object",
        latent_dim=2,
        out_channels=1,
        channels=(4, 2),
        image_size=8,
        rng=np.random.default_rng(0),
    )
    z = np.random.default_rng(1).standard_normal((7, 2)).astype(np.float32)
    frames = dynamic.decode(g, z, batch_size=3)  # in batches of 3, 3 and 1
    assert frames.shape == (7, 1, 8, 8)
    np.testing.assert_allclose(frames, g.forward(z), atol=1e-6)
    written = dynamic.save_clip(tmp_path / "clip", frames, fps=5)
    assert written[0].name == "clip.gif"
    with Image.open(written[0]) as im:
        ms = sum(f.info["duration"] for f in ImageSequence.Iterator(im))
    assert ms == 7 * 200  # 7 frames at 5 frames a second
