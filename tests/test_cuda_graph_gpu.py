"""The Langevin loop replayed as a CUDA graph (``ABP(cuda_graph=True)``) against the eager loop,
on a real GPU. Skipped where CuPy or a GPU is missing (``tests/test_kernels_fake_gpu.py`` checks
on the CPU what is captured and when).

The reference is the eager loop of the same library on the same device with the same weights
and the same noise: the graph must record exactly that loop, so the two must agree to rounding
(cuBLAS may pick another GEMM algorithm inside a capture, hence a tolerance, not equality).
"""

from __future__ import annotations

import numpy as np
import pytest

from abp_np.abp import ABP
from abp_np.generator import object_generator, sound_generator, texture_generator
from abp_np.optim import SGD

from conftest import TOL

pytestmark = pytest.mark.gpu

NETS = ("texture", "sound", "object")


def make(net, dtype, graph, noise=True):
    rng = np.random.default_rng(11)  # the same weights for both sides
    if net == "texture":  # 1 x 2 x 2 -> 2 x 16 x 16, batch norm between
        G = texture_generator((4, 3), 2, 2, dtype=dtype, init_std=0.3, rng=rng)
    elif net == "sound":  # 1 x 3 -> 1 x 3000
        G = sound_generator((3, 2), 3, dtype=dtype, init_std=0.3, rng=rng)
    else:  # z 8 -> Linear -> 8 x 4 x 4 -> 4 x 8 x 8 -> 3 x 16 x 16, batch norm between
        G = object_generator(8, (8, 4), 3, batch_norm=True, dtype=dtype, init_std=0.3, rng=rng)
    opt = SGD(lr=1e-3)
    abp = ABP(G, sigma=0.3, step_size=0.3, noise=noise, optimizer=opt, seed=3, cuda_graph=graph)
    return abp.to("gpu")


def draws(cupy, abp, N, steps, seed):
    rng = np.random.default_rng(seed)
    dt = abp.dtype
    z = rng.standard_normal((N, *abp.latent_shape)).astype(dt)
    y = rng.uniform(-1, 1, (N, *abp.image_shape)).astype(dt)
    U = rng.standard_normal((steps, N, *abp.latent_shape)).astype(dt)
    return cupy.asarray(z), cupy.asarray(y), cupy.asarray(U)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("net", NETS)
def test_graph_replays_the_eager_loop(net, dtype):
    import cupy

    eager, graph = make(net, dtype, False), make(net, dtype, True)
    steps, tol = 4, TOL[np.dtype(dtype)]
    for call in range(4):  # new data every call; the weights change between calls
        z, y, U = draws(cupy, eager, 5, steps, seed=call)
        want = eager.langevin(z, y, steps=steps, noise_arrays=U)
        got = graph.langevin(z, y, steps=steps, noise_arrays=U)
        assert isinstance(got, cupy.ndarray) and got is not z
        np.testing.assert_allclose(got.get(), want.get(), **tol)
        assert float(abs(got - z).max()) > 1e-3  # the chain moved
        for abp in (eager, graph):
            abp.learn(want, y)  # the same update on both sides, in place
    assert len(graph._graphs) == 1  # captured once, replayed four times
    for a, b in zip(eager.generator.layers, graph.generator.layers, strict=True):
        for k in a.buffers:  # batch norm's running statistics moved as much on both sides
            np.testing.assert_allclose(b.buffers[k].get(), a.buffers[k].get(), **tol)


def test_graph_reads_weights_loaded_in_place():
    import cupy

    eager, graph = make("texture", np.float32, False), make("texture", np.float32, True)
    z, y, U = draws(cupy, eager, 4, 3, seed=20)
    graph.langevin(z, y, steps=3, noise_arrays=U)  # captured with the first weights
    other = make("texture", np.float32, False)
    for layer in other.generator.layers:
        for v in layer.params.values():
            v *= 1.5
    state = other.generator.state_dict()
    eager.generator.load_state_dict(state)
    graph.generator.load_state_dict(state)  # copies in place: the same graph, new contents
    want = eager.langevin(z, y, steps=3, noise_arrays=U)
    got = graph.langevin(z, y, steps=3, noise_arrays=U)
    np.testing.assert_allclose(got.get(), want.get(), **TOL[np.dtype(np.float32)])
    assert len(graph._graphs) == 1


def test_graph_fit_matches_eager_fit():
    """fit() without noise (deterministic): batches of 3, 3 and a last one of 2."""
    import cupy

    eager = make("object", np.float32, False, noise=False)
    graph = make("object", np.float32, True, noise=False)
    Y = cupy.asarray(np.random.default_rng(30).uniform(-1, 1, (8, 3, 16, 16)).astype(np.float32))
    for abp in (eager, graph):
        abp.fit(Y, iterations=2, batch_size=3, progress=False)
    tol = TOL[np.dtype(np.float32)]
    np.testing.assert_allclose(graph.Z.get(), eager.Z.get(), **tol)
    for a, b in zip(eager.generator.parameters(), graph.generator.parameters(), strict=True):
        np.testing.assert_allclose(b.get(), a.get(), **tol)
    assert len(graph._graphs) == 2  # the batches of 3 and the last one of 2
    assert all(g.nbytes > 0 for g in graph._graphs.values())
    graph.to("cpu")
    assert graph._graphs == {}  # graphs hold device memory: moving drops them


def test_graph_fit_with_a_mask_per_example_matches_eager_fit():
    import cupy

    from abp_np.observation import Masked

    rng = np.random.default_rng(31)
    Y = cupy.asarray(rng.uniform(-1, 1, (6, 3, 16, 16)).astype(np.float32))
    mask = cupy.asarray(rng.random((6, 3, 16, 16)) < 0.7)
    eager = make("object", np.float32, False, noise=False)
    graph = make("object", np.float32, True, noise=False)
    for abp in (eager, graph):
        abp.fit(Y, iterations=2, batch_size=3, observation=Masked(mask), progress=False)
    np.testing.assert_allclose(graph.Z.get(), eager.Z.get(), **TOL[np.dtype(np.float32)])
    assert len(graph._graphs) == 1  # both batches, each with its own masks, one graph


def test_graph_with_a_projection_matches_the_eager_loop():
    """Compressed sensing's shared S inside the recorded loop (its GEMMs: cuBLAS directly)."""
    import cupy

    from abp_np.observation import Projection

    eager, graph = make("texture", np.float32, False), make("texture", np.float32, True)
    z, images, U = draws(cupy, eager, 4, 3, seed=40)
    D = int(np.prod(eager.image_shape))
    rng = np.random.default_rng(41)
    S = cupy.asarray((rng.standard_normal((50, D)) / np.sqrt(D)).astype(np.float32))
    obs = Projection(S, eager.image_shape)
    y = obs.observe(images)
    want = eager.langevin(z, y, observation=obs, steps=3, noise_arrays=U)
    got = graph.langevin(z, y, observation=obs, steps=3, noise_arrays=U)
    np.testing.assert_allclose(got.get(), want.get(), **TOL[np.dtype(np.float32)])
    assert len(graph._graphs) == 1
