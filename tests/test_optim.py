"""Optimisers: one step against hand-computed numbers; groups, decay, multipliers, clipping."""

from __future__ import annotations

import numpy as np
import pytest

from abp_np.generator import Generator
from abp_np.layers import BatchNorm1d, Linear, Tanh
from abp_np.optim import GROUPS, PAPER_LR_MULT, SGD, Adam, param_group


def _net(seed=0):
    """Linear(2 -> 3) + BatchNorm1d(3) + Tanh: one parameter of each group."""
    rng = np.random.default_rng(seed)
    layers = [
        Linear(2, 3, dtype=np.float64, rng=rng),
        BatchNorm1d(3, dtype=np.float64),
        Tanh(np.float64),
    ]
    return Generator(layers, (2,))


def _fill(g, seed):
    """Random parameters and gradients; returns copies {name: (param, grad)}."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, p, grad, _ in g.named_parameters():
        p[...] = rng.standard_normal(p.shape)
        grad[...] = rng.standard_normal(p.shape)
        out[name] = (p.copy(), grad.copy())
    return out


def test_param_groups_follow_layer_type_and_name():
    g = _net()
    groups = {name: param_group(name, layer) for name, _, _, layer in g.named_parameters()}
    assert groups == {
        "0.weight": "filter",
        "0.bias": "bias",
        "1.weight": "bn_gain",
        "1.bias": "bn_bias",
    }
    assert PAPER_LR_MULT == {"filter": 1.0, "bias": 2.0, "bn_gain": 2.0, "bn_bias": 1.0}


def test_sgd_one_step_hand_computed():
    g = Generator([Linear(2, 1, dtype=np.float64)], (2,))
    lin = g.layers[0]
    lin.params["weight"][...] = [[1.0, -2.0]]
    lin.params["bias"][...] = [0.5]
    lin.grads["weight"][...] = [[0.5, 0.25]]
    lin.grads["bias"][...] = [1.0]
    opt = SGD(lr=0.1, momentum=0.5, weight_decay=0.1, clip=None)
    opt.step(g)
    # filter: g + wd p = [0.5 + 0.1, 0.25 - 0.2] = [0.6, 0.05]; p - 0.1 * that
    np.testing.assert_allclose(lin.params["weight"], [[0.94, -2.005]], rtol=0, atol=1e-15)
    # bias: lr x2, no decay: 0.5 - 0.2 * 1.0
    np.testing.assert_allclose(lin.params["bias"], [0.3], rtol=0, atol=1e-15)
    # second step, same gradients: v = 0.5 v + g
    opt.step(g)
    # filter: v1 = [0.6, 0.05]; g2 = [0.5 + 0.094, 0.25 - 0.2005] = [0.594, 0.0495]
    # v2 = [0.3 + 0.594, 0.025 + 0.0495] = [0.894, 0.0745]; p = [0.94 - 0.0894, -2.005 - 0.00745]
    np.testing.assert_allclose(lin.params["weight"], [[0.8506, -2.01245]], rtol=0, atol=1e-14)
    # bias: v2 = 0.5 + 1 = 1.5; p = 0.3 - 0.2 * 1.5
    np.testing.assert_allclose(lin.params["bias"], [0.0], rtol=0, atol=1e-15)


def test_sgd_groups_decay_and_multipliers_against_loop():
    g = _net()
    before = _fill(g, 1)
    lr, mom, wd = 0.05, 0.5, 0.3
    mult = {"filter": 1.0, "bias": 2.0, "bn_gain": 2.0, "bn_bias": 1.0}
    SGD(lr=lr, momentum=mom, weight_decay=wd, clip=None).step(g)
    for name, p, _, layer in g.named_parameters():
        p0, g0 = before[name]
        group = param_group(name, layer)
        want = np.empty_like(p0)
        for i in np.ndindex(p0.shape):  # first step: v = g (+ wd p for filters)
            step = g0[i] + (wd * p0[i] if group == "filter" else 0.0)
            want[i] = p0[i] - lr * mult[group] * step
        np.testing.assert_allclose(p, want, rtol=1e-14, err_msg=name)


def test_weight_decay_touches_filters_only():
    g = _net()
    before = _fill(g, 2)
    g.zero_grad()
    SGD(lr=0.1, momentum=0.0, weight_decay=0.5, clip=None).step(g)
    for name, p, _, layer in g.named_parameters():
        p0 = before[name][0]
        if param_group(name, layer) == "filter":
            np.testing.assert_allclose(p, p0 * (1 - 0.1 * 0.5), rtol=1e-14)
        else:
            np.testing.assert_array_equal(p, p0)


def test_custom_multipliers():
    g = _net()
    before = _fill(g, 3)
    SGD(lr=0.1, momentum=0, weight_decay=0, clip=None, lr_mult={"bias": 0, "bn_gain": 5}).step(g)
    m = {"0.weight": 1, "0.bias": 0, "1.weight": 5, "1.bias": 1}
    for name, p, _, _ in g.named_parameters():
        p0, g0 = before[name]
        np.testing.assert_allclose(p, p0 - 0.1 * m[name] * g0, rtol=1e-14)
    g2 = _net()
    before = _fill(g2, 3)
    Adam(lr=0.1, lr_mult=3.0).step(g2)
    for name, p, _, _ in g2.named_parameters():  # first Adam step moves by lr*mult*sign(g)
        p0, g0 = before[name]
        np.testing.assert_allclose(p, p0 - 0.3 * g0 / (np.abs(g0) + 1e-8), rtol=1e-12)


def test_clipping_rescales_each_tensor_to_max_abs_clip_before_decay():
    g = Generator([Linear(2, 2, dtype=np.float64)], (2,))
    lin = g.layers[0]
    lin.params["weight"][...] = [[1.0, 2.0], [3.0, 4.0]]
    lin.params["bias"][...] = [0.0, 0.0]
    lin.grads["weight"][...] = [[60.0, -30.0], [15.0, 0.0]]  # max |g| = 60 > 30: halved
    lin.grads["bias"][...] = [10.0, -20.0]  # max |g| = 20 <= 30: unchanged
    SGD(lr=0.01, momentum=0, weight_decay=0.1, lr_mult=1.0, clip=30.0).step(g)
    clipped = np.array([[30.0, -15.0], [7.5, 0.0]])
    decay = 0.1 * np.array([[1.0, 2.0], [3.0, 4.0]])  # decay is added after clipping
    np.testing.assert_allclose(
        lin.params["weight"], [[1.0, 2.0], [3.0, 4.0]] - 0.01 * (clipped + decay), rtol=1e-14
    )
    np.testing.assert_allclose(lin.params["bias"], [-0.1, 0.2], rtol=1e-14)


def test_clip_keeps_dtype_float32():
    g = Generator([Linear(2, 2, dtype=np.float32)], (2,))
    g.layers[0].grads["weight"][...] = 100.0
    SGD(clip=30.0).step(g)
    assert g.layers[0].params["weight"].dtype == np.float32


def test_adam_two_steps_against_formula():
    g = Generator([Linear(1, 1, dtype=np.float64)], (1,))
    lin = g.layers[0]
    lin.params["weight"][...] = 1.0
    lin.params["bias"][...] = 0.0
    lin.grads["weight"][...] = 0.5
    lin.grads["bias"][...] = -2.0
    opt = Adam(lr=0.1, beta1=0.5, beta2=0.999, eps=1e-8)
    opt.step(g)
    # step 1: m_hat = g, v_hat = g^2: p -= lr * g / (|g| + eps)
    assert lin.params["weight"][0, 0] == pytest.approx(1.0 - 0.1 * 0.5 / (0.5 + 1e-8), abs=1e-15)
    assert lin.params["bias"][0] == pytest.approx(0.1 * 2.0 / (2.0 + 1e-8), abs=1e-15)
    lin.grads["weight"][...] = 1.5
    opt.step(g)
    m = 0.5 * (0.5 * 0.5) + 0.5 * 1.5  # = 0.875
    v = 0.999 * (0.001 * 0.25) + 0.001 * 2.25
    m_hat, v_hat = m / (1 - 0.25), v / (1 - 0.999**2)
    w1 = 1.0 - 0.1 * 0.5 / (0.5 + 1e-8)
    assert lin.params["weight"][0, 0] == pytest.approx(
        w1 - 0.1 * m_hat / (np.sqrt(v_hat) + 1e-8), abs=1e-14
    )


def test_adam_weight_decay_on_filters_only():
    g = _net()
    before = _fill(g, 4)
    g.zero_grad()
    Adam(lr=0.1, weight_decay=0.2).step(g)
    for name, p, _, layer in g.named_parameters():
        p0 = before[name][0]
        if param_group(name, layer) == "filter":  # gradient wd*p; first step: lr g / (|g| + eps)
            gd = 0.2 * p0
            np.testing.assert_allclose(p, p0 - 0.1 * gd / (np.abs(gd) + 1e-8), rtol=1e-13)
        else:
            np.testing.assert_array_equal(p, p0)


def test_updates_are_in_place_and_follow_lr_changes():
    g = _net()
    before = _fill(g, 5)
    ids = [id(p) for p in g.parameters()]
    opt = SGD(lr=1.0, momentum=0.0, weight_decay=0.0, lr_mult=1.0, clip=None)
    opt.lr = 0.25  # e.g. learning-rate decay
    opt.step(g)
    assert ids == [id(p) for p in g.parameters()]
    for name, p, _, _ in g.named_parameters():
        p0, g0 = before[name]
        np.testing.assert_allclose(p, p0 - 0.25 * g0, rtol=1e-14)


@pytest.mark.parametrize("make", [lambda: SGD(lr=0.1, clip=1.0), lambda: Adam(lr=0.1)])
def test_state_dict_round_trip_continues_exactly(make):
    g1, g2 = _net(), _net()
    _fill(g1, 6)
    _fill(g2, 6)
    o1, o2 = make(), make()
    o1.step(g1)
    o2.step(g2)
    state = o1.state_dict()
    assert all(isinstance(v, np.ndarray) and v.dtype != object for v in state.values())
    o3 = make()
    o3.lr = 123.0  # overwritten by the load
    o3.load_state_dict(state)
    assert o3.lr == o1.lr and o3.steps == 1
    for gen, opt in ((g1, o2), (g2, o3)):
        for _, _, grad, _ in gen.named_parameters():
            grad[...] = 0.5
        opt.step(gen)
    for a, b in zip(g1.parameters(), g2.parameters(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_load_state_dict_rejects_other_class():
    with pytest.raises(ValueError, match="saved by 'SGD'"):
        Adam().load_state_dict(SGD().state_dict())


def test_bad_arguments():
    with pytest.raises(ValueError, match="lr"):
        SGD(lr=-1)
    with pytest.raises(ValueError, match="momentum"):
        SGD(momentum=1.0)
    with pytest.raises(ValueError, match="clip"):
        SGD(clip=0)
    with pytest.raises(ValueError, match="unknown lr_mult"):
        SGD(lr_mult={"filters": 1})
    with pytest.raises(ValueError, match="beta1"):
        Adam(beta1=1.0)
    with pytest.raises(ValueError, match="eps"):
        Adam(eps=0)
    assert set(GROUPS) == set(PAPER_LR_MULT)
