"""The training run (abp_np.training) around the algorithm (abp_np.abp).

The run's rollback, divergence, checkpoints, Ctrl-C and out-of-memory handling are tested
through ``ABP.fit`` in test_abp.py, test_checkpoint.py and test_out_of_memory.py. Here: the
module's own entry point, the named statistics of a learning step, and the batch-norm
statistics a run leaves behind.
"""

from __future__ import annotations

import numpy as np
import pytest

import abp_np
from abp_np import training
from abp_np.abp import ABP, LearnStats
from abp_np.backend import to_numpy
from abp_np.generator import Generator
from abp_np.layers import BatchNorm1d, Linear, ReLU, Tanh
from abp_np.observation import Masked

import oracles

F64 = np.float64


def two_norm_net(seed=0):
    """3 -> 8 -> BN -> ReLU -> 6 -> BN -> ReLU -> 12 -> tanh: a batch norm below another one."""
    rng = np.random.default_rng(seed)
    layers = [
        Linear(3, 8, dtype=F64, init_std=0.5, rng=rng),
        BatchNorm1d(8, dtype=F64),
        ReLU(F64),
        Linear(8, 6, dtype=F64, init_std=0.5, rng=rng),
        BatchNorm1d(6, dtype=F64),
        ReLU(F64),
        Linear(6, 12, dtype=F64, init_std=0.5, rng=rng),
        Tanh(F64),
    ]
    for layer in layers:  # gains and shifts away from 1 and 0, so that they matter below
        if isinstance(layer, BatchNorm1d):
            layer.params["weight"][...] = rng.uniform(0.5, 1.5, layer.num_features)
            layer.params["bias"][...] = rng.uniform(-0.3, 0.3, layer.num_features)
    return Generator(layers, (3,))


def norm_statistics_oracle(g, z):
    """Per batch norm: mean and unbiased variance of its input in one training-mode pass over
    all of ``z`` as one batch, by the plain NumPy oracles (float64)."""
    x, stats = np.asarray(z, dtype=F64), []
    for layer in g.layers:
        if isinstance(layer, BatchNorm1d):
            gamma, beta = (to_numpy(layer.params[k]) for k in ("weight", "bias"))
            x, mean, unbiased_var = oracles.batchnorm(x, gamma, beta, layer.eps)
            stats.append((mean, unbiased_var))
        else:
            x = oracles.layer_forward(layer, x)
    return stats


def running_statistics(g):
    """Copies of every batch norm's (running_mean, running_var), in order."""
    return [
        (layer.buffers["running_mean"].copy(), layer.buffers["running_var"].copy())
        for layer in g.layers
        if "running_mean" in layer.buffers
    ]


def test_fit_ends_with_the_exact_statistics_of_the_training_chains(tmp_path):
    """After the last iteration every batch norm holds the mean and unbiased variance of its
    input over the training Z (computed here by a plain NumPy pass), whatever the batches; the
    last checkpoint and the last callback see them."""
    rng = np.random.default_rng(1)
    Y = np.tanh(rng.standard_normal((6, 12)))
    path = tmp_path / "run.npz"
    seen = []
    g = two_norm_net(seed=2)
    model = ABP(g, sigma=0.4, step_size=0.2, langevin_steps=3, init_z="normal", seed=3)
    model.fit(
        Y,
        iterations=3,
        batch_size=4,  # batches of 4 and 2
        checkpoint_path=path,
        callback=lambda m, record: seen.append(running_statistics(m.generator)),
    )
    want = norm_statistics_oracle(g, model.Z)
    got = running_statistics(g)
    for (mean, var), (want_mean, want_var) in zip(got, want, strict=True):
        np.testing.assert_allclose(mean, want_mean, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(var, want_var, rtol=1e-10, atol=1e-12)
    for stats in (
        seen[-1],
        running_statistics(ABP(two_norm_net(seed=9), seed=0).load(path).generator),
    ):
        for (mean, var), (final_mean, final_var) in zip(stats, got, strict=True):
            np.testing.assert_array_equal(mean, final_mean)
            np.testing.assert_array_equal(var, final_var)
    # before the end they move by the momentum rule: the second iteration's are not the exact ones
    assert not np.allclose(seen[1][0][0], want[0][0], rtol=1e-3)


def test_fit_module_function_is_what_abp_fit_runs():
    rng = np.random.default_rng(4)
    Y = np.tanh(rng.standard_normal((5, 12)))

    def run(through_module):
        # chains from N(0, I): from zeros the batch norms see a batch of one value, and the
        # first Langevin step throws Z far out (a run away, which fit refuses)
        model = ABP(two_norm_net(seed=5), langevin_steps=2, init_z="normal", seed=6)
        if through_module:
            history = training.fit(model, Y, 2, batch_size=3, shuffle=False)
        else:
            history = model.fit(Y, 2, batch_size=3, shuffle=False)
        return model, [{k: v for k, v in r.items() if k != "seconds"} for r in history]

    (a, ha), (b, hb) = run(True), run(False)
    assert ha == hb and [r["iteration"] for r in ha] == [1, 2]
    np.testing.assert_array_equal(a.Z, b.Z)
    for x, y in zip(a.generator.state_dict().values(), b.generator.state_dict().values()):
        np.testing.assert_array_equal(x, y)
    assert abp_np.DivergenceError is training.DivergenceError
    assert abp_np.abp.DivergenceError is training.DivergenceError


def test_learn_step_returns_its_four_sums_by_name():
    """The sums against a direct computation from f(Z) before the update, and their means as
    ABP.learn reports them."""
    rng = np.random.default_rng(7)
    g = two_norm_net(seed=8)
    model = ABP(g, sigma=0.4, seed=0)
    z = rng.standard_normal((5, 3))
    y = np.tanh(rng.standard_normal((5, 12)))
    mask = rng.uniform(size=(5, 12)) < 0.6
    f = g.forward(z)  # training mode, as the learning step runs it
    r = np.where(mask, y - f, 0.0)
    stats = model._learn_step(z, y, Masked(mask))
    assert isinstance(stats, LearnStats)
    assert stats._fields == ("data_energy", "prior_energy", "abs_residual", "observed")
    assert float(stats.data_energy) == pytest.approx((r**2).sum() / (2 * 0.4**2), rel=1e-12)
    assert float(stats.prior_energy) == pytest.approx((z**2).sum() / 2, rel=1e-12)
    assert float(stats.abs_residual) == pytest.approx(np.abs(r).sum(), rel=1e-12)
    assert float(stats.observed) == mask.sum()
    means = LearnStats(*(float(v) for v in stats)).means(5)
    assert means == pytest.approx(
        {
            "recon_error": np.abs(r).sum() / mask.sum() / 2,
            "data_energy": (r**2).sum() / (2 * 0.4**2) / 5,
            "prior_energy": (z**2).sum() / 2 / 5,
        },
        rel=1e-12,
    )


# --- on the GPU's code path, through the fake CuPy (tests/fake_cupy.py) --------------------------


def test_infer_finish_steps_and_recomputed_statistics_run_on_cupy_arrays(fake_gpu):
    cp = fake_gpu
    rng = np.random.default_rng(10)
    Y = np.tanh(rng.standard_normal((4, 12)))
    cpu = ABP(two_norm_net(seed=11), sigma=0.4, step_size=0.2, langevin_steps=2, seed=0)
    gpu = ABP(two_norm_net(seed=11), sigma=0.4, step_size=0.2, langevin_steps=2, seed=0).to("gpu")
    before = [tuple(cp.asnumpy(a) for a in s) for s in running_statistics(gpu.generator)]
    z_gpu = gpu.infer(cp.asarray(Y), steps=3, init="zeros", noise=False, finish_steps=2)
    z_cpu = cpu.infer(Y, steps=3, init="zeros", noise=False, finish_steps=2)
    assert isinstance(z_gpu, cp.ndarray)
    np.testing.assert_allclose(cp.asnumpy(z_gpu), z_cpu, rtol=1e-10, atol=1e-12)
    assert isinstance(gpu.infer(cp.asarray(Y), steps=2, finish_steps=1), cp.ndarray)
    for (mean, var), (old_mean, old_var) in zip(
        running_statistics(gpu.generator), before, strict=True
    ):
        np.testing.assert_array_equal(cp.asnumpy(mean), old_mean)
        np.testing.assert_array_equal(cp.asnumpy(var), old_var)
    z = rng.standard_normal((5, 3))
    gpu.generator.recompute_statistics(z, batch_size=2)  # a host Z is moved to the device
    cpu.generator.recompute_statistics(z, batch_size=2)
    for (gm, gv), (cm, cv) in zip(
        running_statistics(gpu.generator), running_statistics(cpu.generator), strict=True
    ):
        assert isinstance(gm, cp.ndarray)
        np.testing.assert_allclose(cp.asnumpy(gm), cm, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(cp.asnumpy(gv), cv, rtol=1e-12, atol=1e-14)


def test_the_sanity_checks_run_on_cupy_arrays(fake_gpu, tmp_path):
    """The divergence checks (weights, chains, buffers, optimiser state) stay on the device."""
    from abp_np.optim import Adam

    cp = fake_gpu
    Y = np.tanh(np.random.default_rng(12).standard_normal((4, 12)))

    def make():
        model = ABP(two_norm_net(seed=13), optimizer=Adam(lr=1e-3), init_z="normal", seed=0)
        return model.to("gpu")

    gpu = make()
    path = tmp_path / "run.npz"
    gpu.fit(cp.asarray(Y), iterations=2, batch_size=2, checkpoint_path=path)
    assert isinstance(gpu.Z, cp.ndarray)
    good = gpu.generator.state_dict()
    gpu.optimizer.initial_lr = 1e6
    with pytest.raises(abp_np.DivergenceError) as info:
        gpu.fit(cp.asarray(Y), iterations=4, batch_size=2, checkpoint_path=path)
    assert (info.value.stage, info.value.setting, gpu.iteration) == ("learning", "lr", 2)
    for k, v in gpu.generator.state_dict().items():
        np.testing.assert_array_equal(v, good[k])
    assert make().load(path).iteration == 2
