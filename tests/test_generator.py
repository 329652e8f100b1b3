"""The whole generator: gradients of dZ and of every parameter, bookkeeping, bad input.

Small versions of the paper's three networks, in float64, with O(1) random parameters
(the library's std-0.005 initialisation would make every gradient tiny, and a gradient
check of tiny gradients passes whatever the backward pass does).
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from abp_np.backend import to_numpy
from abp_np.generator import (
    Generator,
    build,
    object_generator,
    sound_generator,
    texture_generator,
)
from abp_np.gradcheck import check_layer
from abp_np.layers import BatchNorm1d, ConvTranspose1d, Linear, ReLU, Reshape, Tanh

import oracles

F64 = np.float64


def small(name, dtype=F64, seed=0):
    """A small version of one of the paper's networks, with O(1) random parameters."""
    rng = np.random.default_rng(seed)
    if name.startswith("object"):
        g = object_generator(
            latent_dim=3,
            channels=(8, 4, 4, 2),
            activation="relu" if "relu" in name else "leaky_relu",
            batch_norm="bn" in name,
            dtype=dtype,
            rng=rng,
        )
    elif name == "texture":
        g = texture_generator(channels=(4, 3, 2, 2), latent_size=2, dtype=dtype, rng=rng)
    elif name == "sound":
        g = sound_generator(channels=(3, 2), latent_length=3, dtype=dtype, rng=rng)
    else:
        raise AssertionError(name)
    return randomize(g, rng)


def randomize(g, rng):
    """Weights of std 1 / sqrt(fan-in), so that every layer's output is O(1); biases, batch-norm
    gains and shifts random too."""
    for name, p, _grad, layer in g.named_parameters():
        key = name.split(".")[1]
        z = rng.standard_normal(p.shape)
        if type(layer).__name__.startswith("BatchNorm"):
            values = 1.0 + 0.3 * z if key == "weight" else 0.3 * z
        elif key == "bias":
            values = 0.3 * z
        elif isinstance(layer, Linear):
            values = z / math.sqrt(layer.in_features)
        else:  # a transposed convolution: each output sums about Cin k^2 / s^2 products
            taps = np.prod(layer.kernel_size) / np.prod(layer.stride)
            values = z / math.sqrt(layer.in_channels * taps)
        p[...] = values.astype(p.dtype)
    return g


def latent(g, n, rng, dtype=F64):
    return rng.standard_normal((n, *g.latent_shape)).astype(dtype)


NETWORKS = ["object-leaky", "object-relu", "object-bn-relu", "object-bn-leaky", "texture", "sound"]


# --- gradients --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NETWORKS)
def test_gradients_of_z_and_every_parameter(name, xp):
    """Central differences of <f(Z; W), G> for a random G, through the whole network: dZ
    entry by entry, each parameter entry by entry when small, along random directions when big.
    With batch norm, perturbing one example's Z moves the batch statistics of every example."""
    g = small(name).to("cpu" if xp is np else "gpu")
    rng = np.random.default_rng(1)
    z = xp.asarray(latent(g, 3, rng))
    report = check_layer(g, z, rng=rng, max_full_size=8, n_directions=3)
    assert report.passed, str(report)
    names = [c.name for c in report.comparisons]
    assert names == ["x"] + [n for n, *_ in g.named_parameters()]
    # the check is not vacuous: every gradient is far above the tolerance
    dy = xp.asarray(rng.standard_normal(g.forward(z).shape))
    assert float(xp.abs(g.backward(dy)).max()) > 1e-2
    for n, _p, grad, layer in g.named_parameters():
        i = g.layers.index(layer)
        if n.endswith(".bias") and type(g.layers[i + 1]).__name__.startswith("BatchNorm"):
            # a per-channel constant before batch norm is subtracted again: its gradient is 0
            assert float(xp.abs(grad).max()) < 1e-10, n
        else:
            assert float(xp.abs(grad).max()) > 1e-3, n


@pytest.mark.parametrize("dtype", [np.float32, F64])
@pytest.mark.parametrize("name", NETWORKS)
def test_dz_is_identical_with_and_without_param_grads(name, dtype, xp):
    g = small(name, dtype).to("cpu" if xp is np else "gpu")
    rng = np.random.default_rng(2)
    z = xp.asarray(latent(g, 2, rng, dtype))
    dy = xp.asarray(rng.standard_normal(g.forward(z).shape).astype(dtype))
    dz_learn = g.backward(dy, need_param_grads=True).copy()
    sentinels = {}
    for n, _p, grad, _layer in g.named_parameters():
        grad[...] = xp.asarray(rng.standard_normal(grad.shape).astype(dtype))
        sentinels[n] = to_numpy(grad).copy()
    g.forward(z)
    dz_infer = g.backward(dy, need_param_grads=False)
    assert dz_infer.dtype == dtype and dz_infer.shape == z.shape
    np.testing.assert_array_equal(to_numpy(dz_infer), to_numpy(dz_learn))
    for n, _p, grad, _layer in g.named_parameters():
        np.testing.assert_array_equal(to_numpy(grad), sentinels[n])


@pytest.mark.parametrize("name", NETWORKS)
def test_backward_uses_up_the_pass_and_leaves_the_callers_dy_alone(name, xp):
    """Generator.backward lets every layer go of its saved values (a second backward needs a
    new forward), may overwrite the gradients it makes between layers, and never the dy it
    was given: the result equals the layer-by-layer chain with nothing overwritten."""
    g = small(name).to("cpu" if xp is np else "gpu")
    rng = np.random.default_rng(5)
    z = xp.asarray(latent(g, 2, rng, F64))
    dy = xp.asarray(rng.standard_normal(g.forward(z).shape))
    expected = dy
    for layer in reversed(g.layers):  # the chain by hand, every dy kept
        expected = layer.backward(expected, need_param_grads=False)
    g.forward(z)
    before = to_numpy(dy).copy()
    dz = g.backward(dy, need_param_grads=False)
    np.testing.assert_array_equal(to_numpy(dz), to_numpy(expected))
    np.testing.assert_array_equal(to_numpy(dy), before)
    for layer in g.layers:
        with pytest.raises(RuntimeError, match="before forward"):
            layer.backward(dy, need_param_grads=False)


@pytest.mark.parametrize("top", [ReLU, Tanh])
def test_a_view_of_the_callers_dy_is_not_overwritten_either(top):
    """A Reshape on top hands the layer below a view of the caller's dy: that layer must not
    take it as its own to overwrite."""
    rng = np.random.default_rng(6)
    lin = Linear(3, 8, dtype=F64, rng=rng)
    g = Generator([lin, top(dtype=F64), Reshape((2, 4), dtype=F64)], latent_shape=(3,))
    z = rng.standard_normal((5, 3))
    dy = rng.standard_normal(g.forward(z).shape)
    before = dy.copy()
    g.backward(dy)
    np.testing.assert_array_equal(dy, before)


def test_backward_frees_each_layers_saved_values_as_it_goes_down():
    """When a layer's backward runs, the activations saved by the layers above it are gone."""
    import gc
    import weakref

    rng = np.random.default_rng(7)
    g = small("object-bn-relu")
    y = g.forward(rng.standard_normal((2, 3)))
    top = g.layers[-1]  # Tanh: saves its output
    dy = rng.standard_normal(y.shape)
    del y  # the caller's reference to the output, which Tanh saved
    ref = weakref.ref(top._cache)
    seen = []
    bottom = g.layers[0]
    inner = bottom._backward

    def spy(*args, inner=inner):
        gc.collect()
        seen.append(ref() is None)
        return inner(*args)

    bottom._backward = spy
    g.backward(dy)
    assert seen == [True]


@pytest.mark.parametrize("name, n", [("object-bn-leaky", 2), ("texture", 2), ("sound", 2)])
def test_forward_matches_a_chain_of_oracles(name, n):
    g = small(name)
    if name == "texture":  # 1 x 1 -> 32 x 32 keeps the naive loops quick
        g = randomize(
            texture_generator(
                channels=(4, 3, 2, 2), latent_size=1, dtype=F64, rng=np.random.default_rng(0)
            ),
            np.random.default_rng(0),
        )
    z = latent(g, n, np.random.default_rng(3))
    h = z
    for layer in g.layers:
        h = oracles.layer_forward(layer, h)
    y = g.forward(z)
    assert y.shape == h.shape == (n, *g.output_shape())
    np.testing.assert_allclose(y, h, rtol=1e-10, atol=1e-12)
    assert np.abs(y).max() <= 1.0  # tanh output


# --- shapes, summary, parameters ------------------------------------------------------------------


def _expected_rows(name):
    """(layer class name, output shape without N, parameter count) per layer, by hand."""
    if name == "object-bn-relu":
        return [
            ("Linear", (128,), 3 * 128 + 128),
            ("Reshape", (8, 4, 4), 0),
            ("BatchNorm2d", (8, 4, 4), 16),
            ("ReLU", (8, 4, 4), 0),
            ("ConvTranspose2d", (4, 8, 8), 8 * 4 * 25 + 4),
            ("BatchNorm2d", (4, 8, 8), 8),
            ("ReLU", (4, 8, 8), 0),
            ("ConvTranspose2d", (4, 16, 16), 4 * 4 * 25 + 4),
            ("BatchNorm2d", (4, 16, 16), 8),
            ("ReLU", (4, 16, 16), 0),
            ("ConvTranspose2d", (2, 32, 32), 4 * 2 * 25 + 2),
            ("BatchNorm2d", (2, 32, 32), 4),
            ("ReLU", (2, 32, 32), 0),
            ("ConvTranspose2d", (3, 64, 64), 2 * 3 * 25 + 3),
            ("Tanh", (3, 64, 64), 0),
        ]
    if name == "sound":
        return [
            ("ConvTranspose1d", (3, 30), 1 * 3 * 25 + 3),
            ("BatchNorm1d", (3, 30), 6),
            ("ReLU", (3, 30), 0),
            ("ConvTranspose1d", (2, 300), 3 * 2 * 25 + 2),
            ("BatchNorm1d", (2, 300), 4),
            ("ReLU", (2, 300), 0),
            ("ConvTranspose1d", (1, 3000), 2 * 1 * 25 + 1),
            ("Tanh", (1, 3000), 0),
        ]
    raise AssertionError(name)


@pytest.mark.parametrize("name", ["object-bn-relu", "sound"])
def test_summary_lists_every_layer_with_shape_and_params(name):
    g = small(name)
    rows = _expected_rows(name)
    assert [type(layer).__name__ for layer in g.layers] == [r[0] for r in rows]
    text = g.summary()
    lines = text.splitlines()
    for i, (layer, (_, shape, count)) in enumerate(zip(g.layers, rows, strict=True)):
        (line,) = [ln for ln in lines if ln.startswith(f"{i}: ")]
        assert repr(layer) in line
        rest = line.split(repr(layer), 1)[1]
        numbers = [int(s.replace(",", "")) for s in re.findall(r"\d[\d,]*", rest)]
        assert numbers == [*shape, count], line
        assert layer.num_params() == count
    total = sum(r[2] for r in rows)
    assert g.num_params() == total
    (total_line,) = [ln for ln in lines if ln.startswith("total")]
    assert total_line.split()[-1].replace(",", "") == str(total)
    assert g.output_shape() == rows[-1][1]


@pytest.mark.parametrize(
    "name, bigger, expected",
    [
        ("texture", (1, 3, 5), (3, 96, 160)),  # each of 5 layers doubles: x 32
        ("sound", (1, 7), (1, 7000)),  # each of 3 layers multiplies by 10
        ("object-leaky", (3,), (3, 64, 64)),
    ],
)
def test_output_shape_with_a_bigger_latent(name, bigger, expected):
    g = small(name)
    assert g.output_shape(bigger) == expected
    y = g.forward(np.zeros((1, *bigger)))
    assert y.shape == (1, *expected)
    assert str(expected[-1]) in g.summary(bigger).splitlines()[-2]


def _expected_param_names(name):
    if name == "object-leaky":  # Linear, Reshape, act, then (deconv, act) x 3, deconv, tanh
        layers_with_params = [0, 3, 5, 7, 9]
        return [f"{i}.{k}" for i in layers_with_params for k in ("weight", "bias")]
    if name == "texture":  # (deconv, BN, ReLU) x 4, deconv, tanh
        return [f"{i}.{k}" for i in range(13) if i % 3 in (0, 1) for k in ("weight", "bias")]
    raise AssertionError(name)


@pytest.mark.parametrize("name", ["object-leaky", "texture"])
def test_named_parameters(name):
    g = small(name)
    named = list(g.named_parameters())
    assert [n for n, *_ in named] == _expected_param_names(name)
    for n, p, grad, layer in named:
        i, key = n.split(".")
        assert g.layers[int(i)] is layer
        assert layer.params[key] is p and layer.grads[key] is grad
        assert grad.shape == p.shape and grad.dtype == p.dtype
    assert g.num_params() == sum(p.size for _, p, _, _ in named)


def test_state_dict_round_trip():
    a, b = small("object-bn-relu", seed=0), small("object-bn-relu", seed=1)
    rng = np.random.default_rng(4)
    for _ in range(2):  # move the running statistics away from their initial values
        a.forward(latent(a, 4, rng))
    state = a.state_dict()
    params = [n for n, *_ in a.named_parameters()]
    buffers = [f"{i}.{k}" for i in (2, 5, 8, 11) for k in ("running_mean", "running_var")]
    assert sorted(state) == sorted(params + buffers)
    assert all(isinstance(v, np.ndarray) for v in state.values())
    z = latent(a, 3, rng)
    assert not np.allclose(a.forward(z), b.forward(z))
    state = a.state_dict()
    b.load_state_dict(state)
    np.testing.assert_array_equal(b.forward(z), a.forward(z))
    a.eval(), b.eval()
    np.testing.assert_array_equal(b.forward(z[:1]), a.forward(z[:1]))
    # the state dict holds copies
    state["0.weight"][...] = 0.0
    assert np.abs(a.layers[0].params["weight"]).max() > 0
    assert np.abs(b.layers[0].params["weight"]).max() > 0


def test_load_state_dict_rejects_bad_state():
    g = small("sound")
    state = g.state_dict()
    with pytest.raises(ValueError, match=r"missing keys \['0.bias'\]"):
        g.load_state_dict({k: v for k, v in state.items() if k != "0.bias"})
    with pytest.raises(ValueError, match=r"unexpected \['9.weight'\]"):
        g.load_state_dict({**state, "9.weight": np.zeros(3)})
    with pytest.raises(ValueError, match=r"0.weight has shape \(1, 3, 24\), expected \(1, 3, 25\)"):
        g.load_state_dict({**state, "0.weight": np.zeros((1, 3, 24))})


# --- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, z, pattern",
    [
        ("object-leaky", np.zeros((2, 3, 1)), r"Generator: expected z of shape \(N, \*\(3,\)\)"),
        ("object-leaky", np.zeros(3), r"Generator: expected z of shape"),
        ("object-leaky", np.zeros((2, 4)), r"Linear.*expected 3 input features"),
        ("object-leaky", [[0.0, 0.0, 0.0]], r"Generator: expected z of shape"),
        (
            "object-leaky",
            np.zeros((2, 3), np.float32),
            r"Linear.*input dtype is float32, expected float64",
        ),
        ("texture", np.zeros((2, 2, 2)), r"Generator: expected z of shape \(N, \*\(1, 2, 2\)\)"),
        ("texture", np.zeros((2, 2, 2, 2)), r"ConvTranspose2d.*expected 1 channels"),
        ("sound", np.zeros((2, 3)), r"Generator: expected z of shape \(N, \*\(1, 3\)\)"),
    ],
)
def test_bad_z_is_rejected(name, z, pattern):
    g = small(name)
    with pytest.raises(ValueError, match=pattern):
        g.forward(z)


def test_generator_constructor_and_builder_errors():
    with pytest.raises(ValueError, match="at least one layer"):
        Generator([], (3,))
    with pytest.raises(ValueError, match="one dtype"):
        Generator([Linear(3, 2, dtype=F64), Tanh()], (3,))
    with pytest.raises(ValueError, match="unknown network 'faces'"):
        build("faces")
    with pytest.raises(ValueError, match="unknown activation 'elu'"):
        object_generator(latent_dim=2, channels=(4, 2), activation="elu")
    with pytest.raises(ValueError, match="dtype"):
        sound_generator(channels=(2,), latent_length=2, dtype=np.int32)


def test_train_and_eval_modes_reach_every_layer():
    g = small("texture")
    assert all(layer.training for layer in g.layers)
    g.eval()
    assert not any(layer.training for layer in g.layers)
    g.train()
    assert all(layer.training for layer in g.layers)


def test_build_by_name_gives_the_same_network():
    a = build("sound", channels=(3, 2), latent_length=3, dtype=F64, rng=np.random.default_rng(5))
    b = sound_generator(channels=(3, 2), latent_length=3, dtype=F64, rng=np.random.default_rng(5))
    assert [repr(layer) for layer in a.layers] == [repr(layer) for layer in b.layers]
    assert isinstance(a.layers[0], ConvTranspose1d) and isinstance(a.layers[2], ReLU)
    for (na, pa, _, _), (nb, pb, _, _) in zip(
        a.named_parameters(), b.named_parameters(), strict=True
    ):
        assert na == nb
        np.testing.assert_array_equal(pa, pb)


# --- batch norm's running statistics --------------------------------------------------------------

BN_NETWORKS = ["object-bn-relu", "texture", "sound"]


def norm_statistics_oracle(g, z):
    """Per batch norm of ``g``, in order: the mean and the unbiased variance of its input in one
    training-mode pass over all of ``z`` as one batch, by the oracles (float64, plain loops)."""
    x, stats = np.asarray(z, dtype=F64), []
    for layer in g.layers:
        if type(layer).__name__.startswith("BatchNorm"):
            gamma, beta = (to_numpy(layer.params[k]) for k in ("weight", "bias"))
            x, mean, unbiased_var = oracles.batchnorm(x, gamma, beta, layer.eps)
            stats.append((mean, unbiased_var))
        else:
            x = oracles.layer_forward(layer, x)
    return stats


def running_statistics(g):
    """Copies of every batch norm's (running_mean, running_var), in order."""
    return [
        (
            to_numpy(layer.buffers["running_mean"]).copy(),
            to_numpy(layer.buffers["running_var"]).copy(),
        )
        for layer in g.layers
        if "running_mean" in layer.buffers
    ]


@pytest.mark.parametrize("name", BN_NETWORKS)
def test_recompute_statistics_equals_one_training_mode_pass_over_all_of_z(name):
    """Every batch norm gets the mean and unbiased variance of its input over all of Z, the
    batch norms above it normalising with the whole set's statistics; whatever the batch size."""
    rng = np.random.default_rng(11)
    g = small(name, seed=3)
    z = latent(g, 5, rng)
    want = norm_statistics_oracle(g, z)
    assert len(want) >= 2  # a batch norm below another one is checked too
    weights = [p.copy() for p in g.parameters()]
    g.eval()  # the layers' modes are left as they are
    for batch_size in (None, 1, 2, 5, 9):
        assert g.recompute_statistics(z, batch_size=batch_size) is g
        got = running_statistics(g)
        for (mean, var), (want_mean, want_var) in zip(got, want, strict=True):
            np.testing.assert_allclose(mean, want_mean, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(var, want_var, rtol=1e-10, atol=1e-12)
        assert not any(layer.training for layer in g.layers)
    g.train()
    g.recompute_statistics(z, batch_size=2)
    assert all(layer.training for layer in g.layers)
    for a, b in zip(weights, g.parameters(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_recompute_statistics_in_float32_keeps_the_buffers_dtype():
    g = small("sound", dtype=np.float32, seed=4)
    z = latent(g, 4, np.random.default_rng(12), dtype=np.float32)
    want = norm_statistics_oracle(g, z)
    g.recompute_statistics(z, batch_size=3)
    for layer in g.layers:
        if "running_mean" in layer.buffers:
            assert layer.buffers["running_mean"].dtype == layer.buffers["running_var"].dtype
            assert layer.buffers["running_var"].dtype == np.float32
    for (mean, var), (want_mean, want_var) in zip(running_statistics(g), want, strict=True):
        np.testing.assert_allclose(mean, want_mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(var, want_var, rtol=1e-4, atol=1e-5)


def test_recompute_statistics_refuses_bad_input_and_keeps_the_old_statistics():
    g = small("object-bn-relu", seed=5)
    z = latent(g, 3, np.random.default_rng(13))
    before = running_statistics(g)
    with pytest.raises(ValueError, match=r"expected z of shape \(N, \*\(3,\)\)"):
        g.recompute_statistics(z[0])
    with pytest.raises(ValueError, match="dtype is float32"):
        g.recompute_statistics(z.astype(np.float32))
    with pytest.raises(ValueError, match="holds no example"):
        g.recompute_statistics(z[:0])
    for bad in (0, -1, True, 2.0):
        with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
            g.recompute_statistics(z, batch_size=bad)
    # batch norm over (N, C): one example gives one value per channel, no variance
    rng = np.random.default_rng(14)
    one = Generator([Linear(2, 3, dtype=F64, rng=rng), BatchNorm1d(3, dtype=F64), Tanh(F64)], (2,))
    with pytest.raises(ValueError, match="more than one value per channel"):
        one.recompute_statistics(np.ones((1, 2)))
    for (mean, var), (old_mean, old_var) in zip(running_statistics(g), before, strict=True):
        np.testing.assert_array_equal(mean, old_mean)
        np.testing.assert_array_equal(var, old_var)
    assert all(layer.training for layer in g.layers)


def test_recompute_statistics_puts_every_statistic_back_when_a_layer_fails(monkeypatch):
    g = small("texture", seed=6)
    z = latent(g, 2, np.random.default_rng(15))
    before = running_statistics(g)
    last = g.layers[-1]

    def broken(x):
        raise RuntimeError("a failing layer")

    norms = [i for i, layer in enumerate(g.layers) if "running_mean" in layer.buffers]
    monkeypatch.setattr(g.layers[norms[-1] - 1], "forward", broken)  # after some were set
    with pytest.raises(RuntimeError, match="a failing layer"):
        g.recompute_statistics(z)
    for (mean, var), (old_mean, old_var) in zip(running_statistics(g), before, strict=True):
        np.testing.assert_array_equal(mean, old_mean)
        np.testing.assert_array_equal(var, old_var)
    assert last.training and all(layer.training for layer in g.layers)


def test_recompute_statistics_without_batch_norm_changes_nothing():
    g = small("object-leaky")
    state = g.state_dict()
    assert g.recompute_statistics(latent(g, 2, np.random.default_rng(16))) is g
    for k, v in g.state_dict().items():
        np.testing.assert_array_equal(v, state[k])


def test_frozen_statistics_keeps_running_statistics_and_computes_the_same():
    g = small("texture", seed=7)
    z = latent(g, 3, np.random.default_rng(17))
    before = running_statistics(g)
    with g.frozen_statistics() as same:
        assert same is g
        inside = g.forward(z)
        with g.frozen_statistics():  # nested blocks
            g.forward(z)
        g.forward(z)  # still inside the outer block
    for (mean, var), (old_mean, old_var) in zip(running_statistics(g), before, strict=True):
        np.testing.assert_array_equal(mean, old_mean)
        np.testing.assert_array_equal(var, old_var)
    outside = g.forward(z)  # training mode outside the block: the statistics move, as in PyTorch
    np.testing.assert_array_equal(inside, outside)
    assert not np.array_equal(running_statistics(g)[0][0], before[0][0])
    with pytest.raises(KeyError), g.frozen_statistics():  # left by an error: unfrozen again
        raise KeyError("x")
    moved = running_statistics(g)
    g.forward(z)
    assert not np.array_equal(running_statistics(g)[0][0], moved[0][0])


def test_a_learning_block_inside_a_fixed_block_keeps_what_was_derived_and_marks_it():
    """fixed_weights(learning=True) nested in fixed_weights(): the layers keep the outer
    block's stores (and what they hold), marked as the learning step's inside the inner block
    and as before after it; leaving the outer block drops them. An optimiser's step inside a
    block empties them: the weights it changed in place make what was derived stale."""
    from abp_np.optim import SGD

    rng = np.random.default_rng(0)
    g = Generator([Linear(3, 4, rng=rng), Tanh()], (3,))
    layer = g.layers[0]
    with g.fixed_weights():
        store = layer._derived
        store["derived"] = "from W"
        assert store.learning is False
        with g.fixed_weights(learning=True):
            assert layer._derived is store and store["derived"] == "from W"
            assert store.learning is True
        assert layer._derived is store and store["derived"] == "from W"
        assert store.learning is False
        g.forward(rng.standard_normal((2, 3)).astype(np.float32))
        g.backward(np.ones((2, 4), np.float32))
        SGD(lr=0.1).step(g)
        assert layer._derived is store and "derived" not in store
    assert layer._derived is None
