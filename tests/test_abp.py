"""The algorithm against closed forms.

With a generator of one Linear layer, f(Z) = W Z + b, the model is factor analysis and
everything is Gaussian: the posterior of Z given Y is N(mu, C) with

    C = (I + W^T W / sigma^2)^-1,      mu = C W^T (Y - b) / sigma^2

computed here with numpy.linalg. Langevin chains must sample it, gradient ascent must
reach mu, and learning on factor-analysis data must recover the column space of W.
"""

from __future__ import annotations

import numpy as np
import pytest

from abp_np.abp import ABP, DivergenceError
from abp_np.generator import Generator
from abp_np.layers import BatchNorm1d, ConvTranspose2d, Linear, ReLU, Tanh
from abp_np.observation import Complete, Masked, Projection
from abp_np.optim import SGD, Adam


def linear_generator(d, D, seed=0, scale=0.3, dtype=np.float64):
    """f(Z) = Z W^T + b with W (D, d) ~ N(0, scale^2), b ~ N(0, 0.1^2)."""
    rng = np.random.default_rng(seed)
    lin = Linear(d, D, dtype=dtype, init_std=scale, rng=rng)
    lin.params["bias"][...] = 0.1 * rng.standard_normal(D)
    return Generator([lin], (d,))


def small_net(seed=0, dtype=np.float64):
    """A non-linear generator with batch norm: 3 -> 8 -> BN -> ReLU -> 12 -> tanh."""
    rng = np.random.default_rng(seed)
    layers = [
        Linear(3, 8, dtype=dtype, init_std=0.5, rng=rng),
        BatchNorm1d(8, dtype=dtype),
        ReLU(dtype),
        Linear(8, 12, dtype=dtype, init_std=0.5, rng=rng),
        Tanh(dtype),
    ]
    return Generator(layers, (3,))


def posterior(W, b, y, sigma):
    """Closed-form Gaussian posterior of Z given one y (factor analysis)."""
    d = W.shape[1]
    C = np.linalg.inv(np.eye(d) + W.T @ W / sigma**2)
    return C @ W.T @ (y - b) / sigma**2, C


# --- inferential back-propagation -----------------------------------------------------------------


def test_grad_z_matches_closed_form_and_finite_differences():
    g = small_net()
    abp = ABP(g, sigma=0.4, seed=0)
    rng = np.random.default_rng(1)
    z = rng.standard_normal((4, 3))
    y = rng.uniform(-1, 1, (4, 12))
    dz = abp.log_likelihood_grad_z(z, y)

    def total(zz):  # the log-likelihood written out here, summed over the batch
        f = g.forward(zz)
        return -((y - f) ** 2).sum() / (2 * 0.4**2) - (zz**2).sum() / 2

    v = rng.standard_normal(z.shape)  # random direction
    eps = 1e-5
    fd = (total(z + eps * v) - total(z - eps * v)) / (2 * eps)
    assert np.sum(dz * v) == pytest.approx(fd, rel=1e-7)

    lg = linear_generator(3, 6)
    W, b = lg.layers[0].params["weight"], lg.layers[0].params["bias"]
    y = rng.standard_normal((4, 6))
    got = ABP(lg, sigma=0.5, seed=0).log_likelihood_grad_z(z, y)
    np.testing.assert_allclose(got, (y - z @ W.T - b) @ W / 0.25 - z, rtol=1e-12)


def test_one_langevin_step_with_given_noise():
    g = linear_generator(3, 6)
    W, b = g.layers[0].params["weight"], g.layers[0].params["bias"]
    rng = np.random.default_rng(2)
    z0 = rng.standard_normal((5, 3))
    y = rng.standard_normal((5, 6))
    U = rng.standard_normal((2, 5, 3))
    abp = ABP(g, sigma=0.5, seed=0)
    z0_copy = z0.copy()
    z = abp.langevin(z0, y, steps=2, step_size=0.1, noise_arrays=U)
    want = z0.copy()
    for t in range(2):  # Z <- Z + delta^2/2 dL/dZ + delta U
        grad = (y - want @ W.T - b) @ W / 0.25 - want
        want = want + 0.005 * grad + 0.1 * U[t]
    np.testing.assert_allclose(z, want, rtol=1e-12)
    np.testing.assert_array_equal(z0, z0_copy)  # the caller's array is not modified


@pytest.mark.parametrize("kind", ["complete", "masked", "projection"])
def test_langevin_step_per_observation_model_leaves_the_data_alone(kind):
    """One step against the closed form A^T (y - A f) W / sigma^2 - z, for every A.

    The step scales A^T r in place; the data, the mask and the projection must come out
    untouched, and the generator's own output (cached by nothing here) plays no part.
    """
    g = linear_generator(3, 6)
    W, b = g.layers[0].params["weight"], g.layers[0].params["bias"]
    rng = np.random.default_rng(5)
    z0 = rng.standard_normal((4, 3))
    if kind == "complete":
        A, obs = np.eye(6), Complete()
    elif kind == "masked":
        keep = rng.random(6) < 0.5
        A, obs = np.diag(keep.astype(float)), Masked(np.broadcast_to(keep, (4, 6)).copy())
    else:
        A = rng.standard_normal((5, 6))
        obs = Projection(A.copy())
    y = rng.standard_normal((4, 6)) @ A.T
    y_saved = y.copy()
    U = rng.standard_normal((1, 4, 3))
    z = ABP(g, sigma=0.5, seed=0).langevin(
        z0, y, observation=obs, steps=1, step_size=0.2, noise_arrays=U
    )
    r = y - (z0 @ W.T + b) @ A.T  # y - A f, in observation space
    grad = r @ A @ W / 0.25 - z0  # A^T r df/dz / sigma^2 - z
    np.testing.assert_allclose(z, z0 + 0.02 * grad + 0.2 * U[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(y, y_saved)
    if kind == "projection":
        np.testing.assert_array_equal(obs.S, A)


def test_langevin_samples_the_gaussian_posterior():
    """20000 parallel chains of one y against the closed-form posterior.

    The unadjusted Langevin step z' = z + h (c - P z) + delta U (h = delta^2 / 2, P the
    posterior precision) has the exact posterior mean as its stationary mean, and in the
    eigenbasis of P (eigenvalue lam) the stationary variance 1 / (lam (1 - delta^2 lam / 4))
    instead of 1 / lam: an O(delta^2) bias computed here in closed form.
    """
    d, D, sigma, delta, chains = 3, 8, 0.5, 0.3, 20000
    g = linear_generator(d, D, seed=3)
    W, b = g.layers[0].params["weight"], g.layers[0].params["bias"]
    rng = np.random.default_rng(4)
    y = W @ rng.standard_normal(d) + b + sigma * rng.standard_normal(D)
    mu, C = posterior(W, b, y, sigma)
    lam, V = np.linalg.eigh(np.linalg.inv(C))
    C_ula = V @ np.diag(1 / (lam * (1 - delta**2 * lam / 4))) @ V.T

    abp = ABP(g, sigma=sigma, step_size=delta, seed=5)
    # burn-in: the distance to stationarity shrinks like (1 - delta^2 lam_min / 2)^steps < 1e-6
    assert (1 - delta**2 * lam.min() / 2) ** 300 < 1e-6
    z = abp.langevin(np.zeros((chains, d)), np.tile(y, (chains, 1)), steps=300)
    mean, cov = z.mean(0), np.cov(z.T)
    se_mean = np.sqrt(np.diag(C_ula) / chains)
    assert np.all(np.abs(mean - mu) < 4.5 * se_mean), (mean, mu)
    se_cov = np.sqrt((np.outer(np.diag(C_ula), np.diag(C_ula)) + C_ula**2) / chains)
    assert np.all(np.abs(cov - C_ula) < 4.5 * se_cov), (cov, C_ula)
    # the O(delta^2) bias is real (along the top eigenvector the chains are measurably wider
    # than the exact posterior) and accounted for by the oracle above ...
    v = V[:, -1]
    assert v @ cov @ v - 1 / lam[-1] > 4.5 * np.sqrt(2 / chains) * (v @ C_ula @ v)
    # ... and the step is small enough that this stays close to the true posterior covariance

    np.testing.assert_allclose(cov, C, atol=0.2 * np.abs(C).max())
    assert not np.allclose(cov, np.eye(d), atol=0.1 * np.abs(C).max())  # not the prior


def test_noiseless_inference_reaches_the_posterior_mode():
    g = linear_generator(3, 8, seed=6)
    W, b = g.layers[0].params["weight"], g.layers[0].params["bias"]
    rng = np.random.default_rng(7)
    Y = rng.standard_normal((5, 8))
    abp = ABP(g, sigma=0.5, step_size=0.2, noise=False, seed=0)
    z = abp.langevin(np.zeros((5, 3)), Y, steps=2000)
    for i in range(5):
        np.testing.assert_allclose(z[i], posterior(W, b, Y[i], 0.5)[0], atol=1e-10)


def test_langevin_computes_no_weight_gradients_and_changes_no_weights():
    g = small_net()
    sentinel = {
        name: np.random.default_rng(8).standard_normal(p.shape)
        for name, p, _, _ in g.named_parameters()
    }
    for name, _, grad, _ in g.named_parameters():
        grad[...] = sentinel[name]
    params = [p.copy() for p in g.parameters()]
    abp = ABP(g, seed=0)
    rng = np.random.default_rng(9)
    abp.langevin(rng.standard_normal((4, 3)), rng.uniform(-1, 1, (4, 12)), steps=3)
    for name, _, grad, _ in g.named_parameters():
        np.testing.assert_array_equal(grad, sentinel[name])
    for a, b in zip(params, g.parameters(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_langevin_randomness_is_explicit():
    g = linear_generator(2, 4)
    y = np.ones((3, 4))
    abp = ABP(g, seed=0)
    z0 = np.zeros((3, 2))
    a = abp.langevin(z0, y, rng=np.random.default_rng(1))
    b = abp.langevin(z0, y, rng=np.random.default_rng(1))
    c = abp.langevin(z0, y, rng=np.random.default_rng(2))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


# --- learning back-propagation --------------------------------------------------------------------


def test_learn_injects_the_averaged_gradient_and_ascends_the_likelihood():
    g = linear_generator(3, 6, seed=10)
    lin = g.layers[0]
    W0, b0 = lin.params["weight"].copy(), lin.params["bias"].copy()
    rng = np.random.default_rng(11)
    z = rng.standard_normal((7, 3))
    y = rng.standard_normal((7, 6))
    opt = SGD(lr=0.01, momentum=0.0, weight_decay=0.0, lr_mult=1.0, clip=None)
    abp = ABP(g, sigma=0.5, optimizer=opt, seed=0)
    ll_before = abp.log_likelihood(z, y).sum()
    stats = abp.learn(z, y)
    R = y - z @ W0.T - b0  # residuals before the step
    dW = R.T @ z / (7 * 0.25)  # dL/dW / n: per example summed, batch-averaged, / sigma^2
    db = R.sum(0) / (7 * 0.25)
    np.testing.assert_allclose(lin.grads["weight"], -dW, rtol=1e-12)  # grads of J = -L/n
    np.testing.assert_allclose(lin.grads["bias"], -db, rtol=1e-12)
    np.testing.assert_allclose(lin.params["weight"], W0 + 0.01 * dW, rtol=1e-12)
    assert abp.log_likelihood(z, y).sum() > ll_before
    assert stats["recon_error"] == pytest.approx(np.abs(R).mean() / 2, rel=1e-12)
    assert stats["data_energy"] == pytest.approx((R**2).sum() / (2 * 0.25) / 7, rel=1e-12)
    assert stats["prior_energy"] == pytest.approx((z**2).sum() / 2 / 7, rel=1e-12)


def _principal_angles(A, B):
    qa, qb = np.linalg.qr(A)[0], np.linalg.qr(B)[0]
    return np.arccos(np.clip(np.linalg.svd(qa.T @ qb, compute_uv=False), -1, 1))


def test_learning_recovers_the_factor_analysis_subspace():
    d, D, n, sigma = 2, 10, 500, 0.3
    rng = np.random.default_rng(12)
    W_true = rng.standard_normal((D, d))
    b_true = 0.5 * rng.standard_normal(D)
    Y = rng.standard_normal((n, d)) @ W_true.T + b_true + sigma * rng.standard_normal((n, D))
    # closed-form reference: the top-d principal subspace of the data (numpy SVD)
    pca = np.linalg.svd(Y - Y.mean(0), full_matrices=False)[2][:d].T
    g = Generator([Linear(d, D, dtype=np.float64, rng=rng)], (d,))
    abp = ABP(g, sigma=sigma, step_size=0.1, langevin_steps=10, optimizer=Adam(lr=0.02), seed=13)
    angles0 = _principal_angles(g.layers[0].params["weight"], W_true)
    history = abp.fit(Y, iterations=300)
    W = g.layers[0].params["weight"]
    assert _principal_angles(W, W_true).max() < np.radians(5)
    assert _principal_angles(W, pca).max() < np.radians(5)
    assert angles0.max() > np.radians(20)  # it did not start there
    np.testing.assert_allclose(g.layers[0].params["bias"], Y.mean(0), atol=0.15)
    assert history[-1]["recon_error"] < 0.5 * history[0]["recon_error"]


# --- the training loop ----------------------------------------------------------------------------


def test_fit_log_records_against_direct_computation(tmp_path):
    g = linear_generator(2, 5, seed=14)
    W, b = g.layers[0].params["weight"].copy(), g.layers[0].params["bias"].copy()
    Y = np.random.default_rng(15).uniform(-1, 1, (6, 5))
    opt = SGD(lr=0.0, weight_decay=0.0)  # W fixed: the record describes the final Z exactly
    abp = ABP(g, sigma=0.3, langevin_steps=4, step_size=0.1, optimizer=opt, seed=0)
    log = tmp_path / "log.jsonl"
    seen = []
    history = abp.fit(
        Y, iterations=2, batch_size=4, log_path=log, callback=lambda a, r: seen.append(r)
    )
    assert [r["iteration"] for r in history] == [1, 2] and seen == history
    Z = abp.Z
    R = Y - Z @ W.T - b
    last = history[-1]
    assert last["recon_error"] == pytest.approx(np.abs(R).mean() / 2, rel=1e-12)
    assert last["data_energy"] == pytest.approx((R**2).sum() / (2 * 0.09) / 6, rel=1e-12)
    assert last["prior_energy"] == pytest.approx((Z**2).sum() / 2 / 6, rel=1e-12)
    assert last["seconds"] >= 0 and last["lr"] == 0.0
    import json

    lines = [json.loads(s) for s in log.read_text().splitlines()]
    assert lines == history
    assert abp.fit(Y, iterations=2) == []  # iterations is the total: nothing left to do


def test_persistent_chains_follow_their_examples_through_shuffled_batches():
    """W fixed, gradient ascent, shuffled mini-batches: each Z_i must reach Y_i's own mode."""
    g = linear_generator(3, 8, seed=16)
    W, b = g.layers[0].params["weight"], g.layers[0].params["bias"]
    Y = np.random.default_rng(17).standard_normal((10, 8))
    abp = ABP(
        g,
        sigma=0.5,
        langevin_steps=50,
        step_size=0.2,
        noise=False,
        optimizer=SGD(lr=0.0, weight_decay=0.0),
        seed=18,
    )
    abp.fit(Y, iterations=20, batch_size=3, shuffle=True)
    for i in range(10):
        np.testing.assert_allclose(abp.Z[i], posterior(W, b, Y[i], 0.5)[0], atol=1e-9)


def test_restart_chains_start_afresh_each_iteration():
    g = linear_generator(2, 5, seed=19)
    Y = np.random.default_rng(20).standard_normal((4, 5))
    kw = dict(
        sigma=0.5,
        langevin_steps=3,
        step_size=0.2,
        noise=False,
        init_z="zeros",
        optimizer=SGD(lr=0.0, weight_decay=0.0),
        seed=0,
    )
    restart = ABP(g, chains="restart", **kw)
    restart.fit(Y, iterations=3, shuffle=False)
    once = ABP(g, **kw).langevin(np.zeros((4, 2)), Y)
    np.testing.assert_allclose(restart.Z, once, rtol=1e-13)
    persistent = ABP(g, chains="persistent", **kw)
    persistent.fit(Y, iterations=3, shuffle=False)
    assert not np.allclose(persistent.Z, once)


def test_masked_pixels_change_nothing():
    rng = np.random.default_rng(21)
    Y1 = rng.uniform(-1, 1, (8, 12))
    mask = rng.random((8, 12)) < 0.5
    Y2 = np.where(mask, Y1, rng.uniform(-1, 1, Y1.shape))
    Y3 = np.where(mask, Y1, np.nan)  # unobserved pixels may even be NaN
    runs = []
    for Y in (Y1, Y2, Y3):
        abp = ABP(
            small_net(seed=22), langevin_steps=3, init_z="normal", observation=Masked(mask), seed=23
        )
        abp.fit(Y, iterations=3, batch_size=4)
        runs.append(abp)
    for other in runs[1:]:
        np.testing.assert_array_equal(runs[0].Z, other.Z)
        for a, b in zip(runs[0].generator.parameters(), other.generator.parameters(), strict=True):
            np.testing.assert_array_equal(a, b)
    # and the observed pixels do matter
    Y4 = np.where(mask, -Y1, Y1)
    abp = ABP(
        small_net(seed=22), langevin_steps=3, init_z="normal", observation=Masked(mask), seed=23
    )
    abp.fit(Y4, iterations=3, batch_size=4)
    assert not np.array_equal(abp.Z, runs[0].Z)


def test_projection_with_identity_equals_complete():
    Y = np.random.default_rng(24).uniform(-1, 1, (6, 12))
    runs = []
    for obs, data in ((Complete(), Y), (Projection(np.eye(12)), Y.copy())):
        abp = ABP(small_net(seed=25), langevin_steps=3, observation=obs, seed=26)
        runs.append((abp, abp.fit(data, iterations=3, batch_size=3)))
    (a, ha), (b, hb) = runs
    np.testing.assert_allclose(a.Z, b.Z, rtol=1e-12, atol=1e-14)
    for p, q in zip(a.generator.parameters(), b.generator.parameters(), strict=True):
        np.testing.assert_allclose(p, q, rtol=1e-12, atol=1e-14)
    assert ha[-1]["recon_error"] == pytest.approx(hb[-1]["recon_error"], rel=1e-12)


def test_lr_decay_per_iteration():
    g = linear_generator(2, 4)
    opt = SGD(lr=1e-3)
    abp = ABP(g, optimizer=opt, lr_decay=0.5, langevin_steps=1, seed=0)
    h = abp.fit(np.zeros((3, 4)), iterations=3)
    assert [r["lr"] for r in h] == [1e-3, 5e-4, 2.5e-4]


# --- using a learned model ------------------------------------------------------------------------


def test_infer_keeps_w_fixed_and_reconstruct_sample_shapes():
    g = linear_generator(3, 8, seed=27)
    W, b = g.layers[0].params["weight"], g.layers[0].params["bias"]
    params = [p.copy() for p in g.parameters()]
    Y = np.random.default_rng(28).standard_normal((4, 8))
    abp = ABP(g, sigma=0.5, step_size=0.2, seed=0)
    z = abp.infer(Y, steps=1500, init="zeros", noise=False)
    for i in range(4):
        np.testing.assert_allclose(z[i], posterior(W, b, Y[i], 0.5)[0], atol=1e-9)
    for a, c in zip(params, g.parameters(), strict=True):
        np.testing.assert_array_equal(a, c)
    rec = abp.reconstruct(Y, steps=5, rng=np.random.default_rng(1))
    z5 = abp.infer(Y, steps=5, rng=np.random.default_rng(1))
    np.testing.assert_allclose(rec, z5 @ W.T + b, rtol=1e-12)
    assert abp.sample(6).shape == (6, 8)


def test_every_langevin_loop_runs_with_w_fixed_and_the_update_outside(monkeypatch):
    """fit, infer and langevin share one loop, inside Generator.fixed_weights() (the CPU's
    Winograd path keeps its transformed weights there). fit's learning passes run in the same
    block as its Langevin loop, marked as the learning step's; learn's in a block of their own.
    The optimiser's step, which changes W, is outside every block."""
    from abp_np.optim import Optimizer

    g = small_net(seed=3)
    abp = ABP(g, langevin_steps=2, seed=0)
    seen = []
    step, passes, update = ABP._langevin_step, ABP._learn_passes, Optimizer.step

    def learning() -> bool | None:  # the derived stores' mark, as the layers see it
        marks = {layer._derived.learning for layer in g.layers if layer._derived is not None}
        assert len(marks) <= 1
        return marks.pop() if marks else None

    def spy_passes(self, *a, **k):
        real_forward = g.forward

        def forward(*fa, **fk):  # the mark as the learning step's forward pass sees it
            seen.append(("grads", g._fixed, learning()))
            return real_forward(*fa, **fk)

        g.forward = forward
        try:
            return passes(self, *a, **k)
        finally:
            del g.forward

    monkeypatch.setattr(
        ABP,
        "_langevin_step",
        lambda self, *a, **k: seen.append(("z", g._fixed, learning())) or step(self, *a, **k),
    )
    monkeypatch.setattr(ABP, "_learn_passes", spy_passes)
    monkeypatch.setattr(
        Optimizer,
        "step",
        lambda self, gen: seen.append(("W", g._fixed, learning())) or update(self, gen),
    )
    Y = np.tanh(np.random.default_rng(4).standard_normal((6, 12)))
    abp.fit(Y, iterations=1, batch_size=3)
    batch = [("z", True, False)] * 2 + [("grads", True, True), ("W", False, None)]
    assert seen == batch * 2
    seen.clear()
    z, _ = abp.alternate(np.zeros((6, 3)), Y)
    assert seen == [("z", True, False)] * 2 + [("grads", True, True), ("W", False, None)]
    seen.clear()
    abp.learn(z, Y)
    assert seen == [("grads", True, True), ("W", False, None)]
    for run in (
        lambda: abp.infer(Y, steps=2),
        lambda: abp.reconstruct(Y, steps=2),
        lambda: abp.langevin(np.zeros((6, 3)), Y, steps=2),
    ):
        seen.clear()
        run()
        assert seen == [("z", True, False)] * 2
    assert not g._fixed


def test_sample_with_a_bigger_latent_gives_a_bigger_image():
    rng = np.random.default_rng(29)
    geom = dict(kernel_size=5, stride=2, padding=2, output_padding=1, dtype=np.float64, rng=rng)
    g = Generator(
        [
            ConvTranspose2d(1, 2, **geom),
            ReLU(np.float64),
            ConvTranspose2d(2, 1, **geom),
            Tanh(np.float64),
        ],
        (1, 2, 2),
    )
    abp = ABP(g, seed=0)
    assert abp.sample(2).shape == (2, 1, 8, 8)
    assert abp.sample(2, latent_shape=(1, 4, 4)).shape == (2, 1, 16, 16)
    assert abp.sample(2, rng=np.random.default_rng(3)).shape == (2, 1, 8, 8)


def running_statistics(g):
    """Copies of every batch norm's (running_mean, running_var), in order."""
    return [
        (layer.buffers["running_mean"].copy(), layer.buffers["running_var"].copy())
        for layer in g.layers
        if "running_mean" in layer.buffers
    ]


def test_using_a_model_leaves_batch_norms_running_statistics_alone():
    """infer (its Langevin loop included), reconstruct, sample and the likelihood read the
    model only; the running statistics stay bitwise as they were, in training mode too."""
    g = small_net(seed=40)
    abp = ABP(g, langevin_steps=3, seed=0)
    rng = np.random.default_rng(41)
    Y = np.tanh(rng.standard_normal((5, 12)))
    z = rng.standard_normal((5, 3))
    mask = rng.uniform(size=(5, 12)) < 0.5
    before = running_statistics(g)
    for use in (
        lambda: abp.infer(Y),
        lambda: abp.reconstruct(Y, steps=2),
        lambda: abp.sample(4),
        lambda: abp.log_likelihood(z, Y),
        lambda: abp.log_likelihood_grad_z(z, Y),
        lambda: abp.infer(Y, steps=2, finish_steps=2, observation=Masked(mask)),
        lambda: abp.reconstruct(Y, steps=2, finish_steps=1, rng=np.random.default_rng(2)),
    ):
        use()
        for (mean, var), (old_mean, old_var) in zip(running_statistics(g), before, strict=True):
            np.testing.assert_array_equal(mean, old_mean)
            np.testing.assert_array_equal(var, old_var)
    # the steps of a training iteration still move them (PyTorch's momentum rule)
    abp.langevin(z, Y, steps=1)
    assert not np.array_equal(running_statistics(g)[0][0], before[0][0])


def test_finish_steps_are_noise_free_steps_after_the_langevin_steps():
    g = small_net(seed=42)
    abp = ABP(g, sigma=0.4, step_size=0.2, seed=0)
    Y = np.tanh(np.random.default_rng(43).standard_normal((5, 12)))
    rng = np.random.default_rng(44)
    z0 = rng.standard_normal((5, 3))  # infer's initial N(0, I) draw, then the noise, from rng
    noisy = abp.langevin(z0, Y, steps=4, noise=True, rng=rng)
    finished = abp.langevin(noisy, Y, steps=3, noise=False)
    got = abp.infer(Y, steps=4, finish_steps=3, rng=np.random.default_rng(44))
    np.testing.assert_array_equal(got, finished)
    # none by default: the state of the last Langevin step, as before
    np.testing.assert_array_equal(abp.infer(Y, steps=4, rng=np.random.default_rng(44)), noisy)
    np.testing.assert_array_equal(
        abp.infer(Y, steps=4, finish_steps=0, rng=np.random.default_rng(44)), noisy
    )
    # the finishing steps take the call's delta; reconstruct reads f from the finished state
    rng = np.random.default_rng(45)
    want = abp.langevin(np.zeros((5, 3)), Y, steps=2, step_size=0.1, noise=True, rng=rng)
    want = abp.langevin(want, Y, steps=5, step_size=0.1, noise=False)
    rec = abp.reconstruct(
        Y, steps=2, init="zeros", step_size=0.1, finish_steps=5, rng=np.random.default_rng(45)
    )
    np.testing.assert_array_equal(rec, g.forward(want))
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="finish_steps must be an integer >= 0"):
            abp.infer(Y, finish_steps=bad)


def test_in_eval_mode_an_examples_z_does_not_depend_on_the_rest_of_its_batch():
    """Training mode (the paper's): batch statistics couple the examples of a batch. After
    generator.eval(), infer uses the running statistics and each example stands alone."""
    g = small_net(seed=46)
    rng = np.random.default_rng(47)
    g.layers[1].params["bias"][...] = rng.uniform(
        0.2, 0.5, 8
    )  # the ReLUs pass Z's gradient at Z = 0
    abp = ABP(g, sigma=0.4, step_size=0.2, langevin_steps=2, seed=0)
    abp.fit(np.tanh(rng.standard_normal((6, 12))), iterations=2, batch_size=3)
    Y_new = np.tanh(rng.standard_normal((4, 12)))

    def infer(rows):
        return abp.infer(Y_new[rows], steps=30, init="zeros", noise=False)

    whole, pair = infer([0, 1, 2, 3]), infer([2, 0])
    assert np.abs(pair - whole[[2, 0]]).max() > 1e-3  # coupled
    before = running_statistics(g)
    g.eval()
    whole, pair, alone = infer([0, 1, 2, 3]), infer([2, 0]), infer([3])
    np.testing.assert_allclose(pair, whole[[2, 0]], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(alone, whole[[3]], rtol=1e-12, atol=1e-14)
    for (mean, var), (old_mean, old_var) in zip(running_statistics(g), before, strict=True):
        np.testing.assert_array_equal(mean, old_mean)
        np.testing.assert_array_equal(var, old_var)


# --- divergence and interruption ------------------------------------------------------------------


def test_huge_step_size_raises_divergence_and_keeps_last_checkpoint(tmp_path):
    path = tmp_path / "run.npz"
    g = small_net(seed=30)
    Y = np.random.default_rng(31).uniform(-1, 1, (6, 12))
    abp = ABP(g, langevin_steps=5, seed=32)
    abp.fit(Y, iterations=2, checkpoint_path=path)
    saved = [p.copy() for p in g.parameters()]
    Z_saved = abp.Z.copy()
    abp.step_size = 1e100  # Z grows by delta^2/2 = 5e199 per step: inf at the second
    with pytest.raises(DivergenceError, match="step size") as info:
        abp.fit(Y, iterations=4, checkpoint_path=path)
    assert info.value.stage == "inference" and str(path) in str(info.value)
    assert isinstance(info.value, RuntimeError)
    # rolled back in memory, and the file still holds the good state
    assert abp.iteration == 2
    np.testing.assert_array_equal(abp.Z, Z_saved)
    fresh = ABP(small_net(seed=99), seed=0).load(path)
    for a, c, d in zip(saved, fresh.generator.parameters(), g.parameters(), strict=True):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(a, d)
    assert fresh.iteration == 2


def test_huge_learning_rate_raises_divergence_naming_the_learning_rate():
    abp = ABP(linear_generator(2, 4), optimizer=SGD(lr=1e308, clip=None), seed=0)
    with pytest.raises(DivergenceError, match="learning rate") as info:
        abp.fit(np.ones((3, 4)), iterations=3)
    assert info.value.stage == "learning" and info.value.checkpoint is None


def test_ctrl_c_saves_a_checkpoint_that_resumes_exactly(tmp_path):
    path = tmp_path / "run.npz"
    Y = np.random.default_rng(33).uniform(-1, 1, (8, 12))

    def make(seed=34):
        return ABP(small_net(seed=seed), langevin_steps=3, init_z="normal", seed=35)

    reference = make()
    reference.fit(Y, iterations=4, batch_size=4)

    abp = make()
    calls = {"n": 0}
    learn = abp._learn_passes

    def interrupted(*args):
        calls["n"] += 1
        if calls["n"] == 6:  # second batch of the third iteration
            raise KeyboardInterrupt
        return learn(*args)

    abp._learn_passes = interrupted
    with pytest.raises(KeyboardInterrupt):
        abp.fit(Y, iterations=4, batch_size=4, checkpoint_path=path, checkpoint_every=100)
    assert abp.iteration == 2  # rolled back to the last completed iteration

    resumed = make(seed=77).load(path)
    assert resumed.iteration == 2
    resumed.fit(Y, iterations=4, batch_size=4)
    np.testing.assert_array_equal(resumed.Z, reference.Z)
    for a, b in zip(resumed.generator.parameters(), reference.generator.parameters(), strict=True):
        np.testing.assert_array_equal(a, b)


# --- bad input ------------------------------------------------------------------------------------


def test_bad_inputs_raise_clear_value_errors():
    g = small_net()
    abp = ABP(g, seed=0)
    Y = np.zeros((6, 12))
    with pytest.raises(ValueError, match=r"expected \(N, \*\(12,\)\)"):
        abp.fit(np.zeros((6, 13)), iterations=1)
    with pytest.raises(ValueError, match="dtype is float32"):
        abp.fit(Y.astype(np.float32), iterations=1)
    with pytest.raises(ValueError, match="NaN"):
        abp.fit(np.where(np.eye(6, 12) > 0, np.nan, Y), iterations=1)
    with pytest.raises(ValueError, match="mask of shape"):
        abp.fit(Y, iterations=1, observation=Masked(np.ones((5, 12), bool)))
    with pytest.raises(ValueError, match="S has shape"):
        abp.fit(np.zeros((6, 4)), iterations=1, observation=Projection(np.ones((4, 11))))
    with pytest.raises(ValueError, match="batch_size=7 is larger"):
        abp.fit(Y, iterations=1, batch_size=7)
    with pytest.raises(ValueError, match="batch_size"):
        abp.fit(Y, iterations=1, batch_size=0)
    with pytest.raises(ValueError, match="iterations"):
        abp.fit(Y, iterations=-1)
    with pytest.raises(ValueError, match="z must have shape"):
        abp.langevin(np.zeros((5, 3)), Y)
    with pytest.raises(ValueError, match="noise_arrays"):
        abp.langevin(np.zeros((6, 3)), Y, steps=2, noise_arrays=np.zeros((3, 6, 3)))
    with pytest.raises(ValueError, match="data must be"):
        abp.infer([[0.0] * 12])
    with pytest.raises(ValueError, match="sigma"):
        ABP(g, sigma=0)
    with pytest.raises(ValueError, match="chains"):
        ABP(g, chains="warm")
    with pytest.raises(ValueError, match="init_z"):
        ABP(g, init_z="uniform")
    with pytest.raises(ValueError, match="seed or rng"):
        ABP(g, seed=1, rng=np.random.default_rng(1))
    with pytest.raises(ValueError, match="optimizer"):
        ABP(g, optimizer="sgd")
    abp.fit(Y, iterations=1)
    with pytest.raises(ValueError, match="chains Z of shape"):
        abp.fit(np.zeros((5, 12)), iterations=2)


# --- dtypes and devices ---------------------------------------------------------------------------


def test_float32_stays_float32(tmp_path):
    g = small_net(seed=40, dtype=np.float32)
    Y = np.random.default_rng(41).uniform(-1, 1, (6, 12)).astype(np.float32)
    mask = np.random.default_rng(42).random((6, 12)) < 0.7
    abp = ABP(g, observation=Masked(mask), init_z="normal", seed=43)
    history = abp.fit(Y, iterations=2, batch_size=3, checkpoint_path=tmp_path / "c.npz")
    assert abp.Z.dtype == np.float32
    assert all(p.dtype == np.float32 for p in g.parameters())
    assert all(v.dtype == np.float32 for v in abp.optimizer.state["momentum"].values())
    assert np.isfinite(history[-1]["recon_error"])
    assert abp.infer(Y, steps=2).dtype == np.float32
    assert abp.sample(3).dtype == np.float32


@pytest.mark.gpu
def test_gpu_langevin_matches_cpu_with_the_same_noise():
    import cupy

    from abp_np.backend import using_kernels

    from conftest import TOL

    rng = np.random.default_rng(44)
    z0 = rng.standard_normal((6, 3)).astype(np.float32)
    y = rng.uniform(-1, 1, (6, 12)).astype(np.float32)
    U = rng.standard_normal((4, 6, 3)).astype(np.float32)
    cpu = ABP(small_net(seed=45, dtype=np.float32), seed=0)
    gpu = ABP(small_net(seed=45, dtype=np.float32), seed=0).to("gpu")
    want = cpu.langevin(z0, y, steps=4, noise_arrays=U)
    for kernels in (True, False):
        with using_kernels(kernels):
            got = gpu.langevin(
                cupy.asarray(z0), cupy.asarray(y), steps=4, noise_arrays=cupy.asarray(U)
            )
        assert isinstance(got, cupy.ndarray)
        np.testing.assert_allclose(got.get(), want, **TOL[np.dtype(np.float32)])


@pytest.mark.gpu
def test_gpu_fit_checkpoint_and_masks(tmp_path):
    import cupy

    Y = np.random.default_rng(46).uniform(-1, 1, (6, 12)).astype(np.float32)
    mask = np.random.default_rng(47).random((6, 12)) < 0.7
    abp = ABP(small_net(seed=48, dtype=np.float32), observation=Masked(mask), seed=49).to("gpu")
    history = abp.fit(cupy.asarray(Y), iterations=2, batch_size=3, checkpoint_path=tmp_path / "c")
    assert isinstance(abp.Z, cupy.ndarray) and np.isfinite(history[-1]["recon_error"])
    back = ABP(small_net(seed=50, dtype=np.float32), seed=0).to("gpu").load(tmp_path / "c")
    np.testing.assert_array_equal(back.Z.get(), abp.Z.get())
    assert isinstance(back.sample(3), cupy.ndarray)
