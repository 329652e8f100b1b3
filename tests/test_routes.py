"""The speed routes: their one switch (``abp_np.backend.using``), their one table
(``abp_np.fast.routes``), the reference they fall back to, and every route held to it.

Expected values: the settings written in each test; for the reference, the naive loops of
``tests/oracles.py`` and finite differences; for each route, the reference (itself held to the
oracles here), with every route switched off.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from abp_np import functional as F
from abp_np.backend import Switches, switches, using, using_kernels
from abp_np.fast import columns, routes, winograd
from abp_np.fast import cpu as _cpu
from abp_np.gradcheck import assert_gradients_close
from abp_np.layers import BatchNorm2d, ConvTranspose2d

import oracles
from conftest import TOL, reference_only

F64 = np.float64
TOL64 = TOL[np.dtype(F64)]
HYPO = settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

DEFAULT = Switches(cuda=True, c=True, winograd="auto", cpu_forms=True)


def test_defaults():
    """Outside any block: every route on, Winograd where it pays (the test run does not set
    ABP_CPU_KERNELS=0; tests/test_winograd.py checks that variable in a fresh interpreter)."""
    assert switches() == DEFAULT


def test_using_sets_what_it_names_and_restores_everything():
    with using(cuda=False) as inside:
        assert inside == Switches(cuda=False, c=True, winograd="auto", cpu_forms=True)
        assert switches() == inside
        with using(c=False, winograd="on", cpu_forms=False):
            assert switches() == Switches(cuda=False, c=False, winograd="on", cpu_forms=False)
        assert switches() == inside
    assert switches() == DEFAULT


def test_using_restores_after_an_exception():
    with pytest.raises(KeyError), using(cuda=False, c=False, winograd="off", cpu_forms=False):
        raise KeyError("inside")
    assert switches() == DEFAULT


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"cuda": 1}, "cuda must be True or False"),
        ({"c": "off"}, "c must be True or False"),
        ({"cpu_forms": None, "winograd": "sometimes"}, "winograd must be one of"),
        ({"winograd": True}, "winograd must be one of"),
    ],
)
def test_using_rejects_bad_values_and_changes_nothing(kwargs, match):
    with pytest.raises(ValueError, match=match), using(**kwargs):
        pass
    assert switches() == DEFAULT


def test_using_takes_keywords_only():
    with pytest.raises(TypeError):
        using(False)  # type: ignore[misc]


def test_the_older_names_are_the_same_switch():
    """using_kernels(flag) sets cuda and c; winograd.using(mode) sets winograd."""
    with using_kernels(False):
        assert switches() == Switches(cuda=False, c=False, winograd="auto", cpu_forms=True)
        with winograd.using("off"):
            assert winograd.mode() == "off" == switches().winograd
    assert switches() == DEFAULT


# --- the table ------------------------------------------------------------------------------------


def test_the_table_lists_each_operation_s_routes_in_order_with_the_reference_last():
    assert routes.names("conv_transpose2d_forward") == [
        "winograd",
        "winograd_kept",
        "winograd1d",
        "cuda",
        "phases",
        "columns",
        "xp",
    ]
    assert routes.names("conv_transpose2d_backward") == [
        "winograd",
        "winograd1d",
        "cuda",
        "taps",
        "blocks",
        "xp",
    ]
    assert routes.names("batchnorm_forward") == ["c", "cuda", "xp"]
    assert routes.names("batchnorm_backward") == ["c", "cuda", "xp"]
    assert routes.names("langevin_step") == ["cuda", "xp"]
    assert routes.names("matmul") == ["cuda", "xp"]
    assert routes.names("batchnorm_update_running") == ["cuda", "xp"]
    assert routes.names("optimizer_update") == ["c", "threads", "xp"]
    assert routes.names("max_abs") == ["threads", "xp"]
    for op, entries in routes.TABLE.items():
        assert entries[-1] is routes.REFERENCE and entries[-1].run is None, op
        assert all(r.run is not None for r in entries[:-1]), op


# --- the reference against independent oracles ----------------------------------------------------


@st.composite
def geometries(draw):
    """(N, Cin, Cout, (H, W), kernel, stride, padding, output_padding), non-empty output."""
    size, k, s, p, op = [], [], [], [], []
    for _ in range(2):
        size.append(draw(st.integers(1, 4)))
        k.append(draw(st.integers(1, 5)))
        s.append(draw(st.integers(1, 3)))
        op.append(draw(st.integers(0, s[-1] - 1)))
        uncropped = (size[-1] - 1) * s[-1] + k[-1] + op[-1]
        p.append(draw(st.integers(0, min(3, (uncropped - 1) // 2))))
    n, cin, cout = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    return n, cin, cout, tuple(size), tuple(k), tuple(s), tuple(p), tuple(op)


@HYPO
@given(geom=geometries(), seed=st.integers(0, 2**16))
def test_reference_col2im_and_im2col_are_the_oracles_loops(geom, seed):
    """The reference scatter and gather, element for element (integer data: exact sums)."""
    n, _, c, (h, w), k, s, p, op = geom
    rng = np.random.default_rng(seed)
    hout, wout = (oracles.out_size(a, b, d, e, f) for a, b, d, e, f in zip((h, w), k, s, p, op))
    cols = rng.integers(-8, 9, (c, *k, n, h, w)).astype(F64)
    np.testing.assert_array_equal(
        F.col2im(cols, (n, c, hout, wout), s, p), oracles.col2im_oracle(cols, hout, wout, s, p)
    )
    dy = rng.integers(-8, 9, (n, c, hout, wout)).astype(F64)
    np.testing.assert_array_equal(
        F.im2col(dy, k, (h, w), s, p), oracles.im2col_oracle(dy, *k, h, w, s, p)
    )


@HYPO
@given(geom=geometries(), bias=st.booleans(), seed=st.integers(0, 2**16))
def test_reference_conv_transpose2d_matches_the_oracles(geom, bias, seed):
    """With every route off: y is the naive scatter's, dx the naive convolution's (the adjoint),
    and dW, db pass the finite-difference check."""
    n, cin, cout, hw, k, s, p, op = geom
    rng = np.random.default_rng(seed)
    layer = ConvTranspose2d(cin, cout, k, s, p, op, bias=bias, dtype=F64, rng=rng)
    for value in layer.params.values():
        value[...] = rng.standard_normal(value.shape)
    x = rng.standard_normal((n, cin, *hw))
    w, b = layer.params["weight"], layer.params.get("bias")
    with reference_only():
        y = layer.forward(x)
        assert layer._cache.route == "xp"
        dy = rng.standard_normal(y.shape)
        dx = layer.backward(dy)
        assert_gradients_close(layer, x, rng=rng)
    np.testing.assert_allclose(y, oracles.conv_transpose2d(x, w, b, s, p, op), **TOL64)
    np.testing.assert_allclose(dx, oracles.conv2d(dy, w, s, p, hw), **TOL64)


def test_reference_batchnorm_matches_the_oracle():
    """With every route off (the C kernels too): batch statistics, y and the gradients."""
    rng = np.random.default_rng(2)
    layer = BatchNorm2d(3, dtype=F64)
    layer.params["weight"][...] = 1 + 0.5 * rng.standard_normal(3)
    layer.params["bias"][...] = rng.standard_normal(3)
    x = rng.standard_normal((4, 3, 5, 2))
    with reference_only():
        y = layer.forward(x)
        assert layer._cache.route == "xp"
        assert_gradients_close(layer, x, rng=rng)
    y_ref, mean, unbiased = oracles.batchnorm(x, layer.params["weight"], layer.params["bias"], 1e-5)
    np.testing.assert_allclose(y, y_ref, **TOL64)
    np.testing.assert_allclose(layer._cache.mean, mean, **TOL64)
    np.testing.assert_allclose(layer._cache.var, unbiased * 39 / 40, **TOL64)


# --- every CPU route against the reference --------------------------------------------------------

# (name, layer arguments, x shape, settings that make the route take this layer)
CPU_ROUTES = [
    ("phases", (3, 8, 5, 2, 2, 1), (2, 3, 4, 4), {"winograd": "off"}),
    ("columns", (40, 3, 5, 2, 2, 1), (3, 40, 3, 3), {"winograd": "off"}),  # an RGB output layer
    ("columns", (9, 3, 5, 2, 2, 1), (1, 9, 3, 3), {"winograd": "off"}),  # N H W <= Cin
    ("phases", (2, 4, (3, 4), (1, 3), (1, 0), (0, 2)), (2, 2, 3, 5), {}),  # no Winograd fit
    ("winograd", (3, 5, 5, 2, 2, 1), (2, 3, 4, 6), {"winograd": "on", "c": False}),
    ("winograd", (3, 5, 5, 2, 2, 1), (2, 3, 4, 6), {"winograd": "on", "c": True}),
    # a 1-D layer (height 1), kernel 5 over stride 2
    ("winograd1d", (3, 4, (1, 5), (1, 2), (0, 1), (0, 1)), (2, 3, 1, 6), {"winograd": "on"}),
    (
        "winograd1d",
        (3, 4, (1, 5), (1, 2), (0, 1), (0, 1)),
        (2, 3, 1, 6),
        {"c": False, "winograd": "on"},
    ),
]


def _run(layer, x, dy, need_param_grads):
    y = layer.forward(x).copy()
    route = layer._cache.route
    dx = layer.backward(dy, need_param_grads=need_param_grads).copy()
    grads = [g.copy() for g in layer.grads.values()]
    layer.zero_grad()
    return route, y, dx, grads


@pytest.mark.parametrize("need_param_grads", [True, False])
@pytest.mark.parametrize("name, args, x_shape, settings", CPU_ROUTES)
def test_each_cpu_route_gives_the_reference_s_results(
    name, args, x_shape, settings, need_param_grads
):
    """The route named is the one taken (recorded in the cache), and its y, dx, dW and db are
    the reference's (float64; the blocked backward runs after every route but Winograd's)."""
    if settings.get("c") and not _cpu.available():
        pytest.skip(f"compiled CPU kernels not available: {_cpu.reason()}")
    rng = np.random.default_rng(5)
    layer = ConvTranspose2d(*args, dtype=F64, rng=rng)
    for value in layer.params.values():
        value[...] = rng.standard_normal(value.shape)
    x = rng.standard_normal(x_shape)
    dy = rng.standard_normal(layer.output_shape(x_shape))
    with using(**settings):
        got = _run(layer, x, dy, need_param_grads)
    with reference_only():
        want = _run(layer, x, dy, need_param_grads)
    assert got[0] == name and want[0] == "xp"
    scale = max(1.0, float(np.abs(want[1]).max()))
    for a, b in zip([got[1], got[2], *got[3]], [want[1], want[2], *want[3]], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * scale)


@pytest.mark.parametrize("need_param_grads", [True, False])
def test_the_kept_u_route_gives_the_reference_s_results(need_param_grads):
    """winograd_kept: in a learning block nested in a Langevin block whose pass kept U, a
    layer the learning rule leaves to the columns (float64 U of 9.4 MB) runs its forward pass
    on the Winograd route with that U, drops it, and goes back by the column blocks; y, dx, dW
    and db are the reference's."""
    from abp_np.generator import Generator

    if not _cpu.available():
        pytest.skip(f"compiled CPU kernels not available: {_cpu.reason()}")
    rng = np.random.default_rng(5)
    layer = ConvTranspose2d(128, 64, 5, 2, 2, 1, dtype=F64, rng=rng)
    for value in layer.params.values():
        value[...] = rng.standard_normal(value.shape)
    g = Generator([layer], (128, 4, 4))
    x = rng.standard_normal((16, 128, 4, 4))
    dy = rng.standard_normal(layer.output_shape(x.shape))
    with g.fixed_weights():
        layer.forward(x)  # a Langevin pass: U kept
        assert layer._cache.route == "winograd" and "winograd U, m=4" in layer._derived
        with g.fixed_weights(learning=True):
            got = _run(layer, x, dy, need_param_grads)
            assert "winograd U, m=4" not in layer._derived
    with reference_only():
        want = _run(layer, x, dy, need_param_grads)
    assert got[0] == "winograd_kept" and want[0] == "xp"
    scale = max(1.0, float(np.abs(want[1]).max()))
    for a, b in zip([got[1], got[2], *got[3]], [want[1], want[2], *want[3]], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * scale)


# (route, layer arguments, x shape, settings): layers whose temporaries are megabytes
LARGE_CPU_ROUTES = [
    ("phases", (16, 32, 5, 2, 2, 1), (8, 16, 16, 16), {"winograd": "off"}),
    ("columns", (64, 3, 5, 2, 2, 1), (16, 64, 16, 16), {"winograd": "off"}),
    ("winograd", (32, 16, 5, 2, 2, 1), (16, 32, 16, 16), {"winograd": "on"}),
    ("winograd1d", (32, 16, (1, 5), (1, 2), (0, 1), (0, 1)), (16, 32, 1, 1024), {}),
]


@pytest.mark.parametrize("need_param_grads", [True, False])
@pytest.mark.parametrize("name, args, x_shape, settings", LARGE_CPU_ROUTES)
def test_the_cpu_routes_keep_no_memory_once_the_pass_is_over(
    name, args, x_shape, settings, need_param_grads
):
    """Column blocks, shifted copies and transformed tiles are temporaries: once the layer's
    outputs, cache and gradients are dropped, the memory NumPy holds is what it held before the
    first call (``tracemalloc`` counts NumPy's allocations; 256 KiB allowed for small caches
    such as the Winograd plans). Buffers kept between calls would stay with the process and add
    to the peak of every later pass."""
    import gc
    import tracemalloc

    rng = np.random.default_rng(0)
    layer = ConvTranspose2d(*args, dtype=np.float32, rng=rng)
    x = rng.standard_normal(x_shape).astype(np.float32)
    dy = rng.standard_normal(layer.output_shape(x_shape)).astype(np.float32)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        with using(**settings):
            for _ in range(2):
                layer.forward(x)
                assert layer._cache.route == name
                layer.backward(dy, need_param_grads=need_param_grads)
        _, peak = tracemalloc.get_traced_memory()
        layer._cache = None
        layer.grads.clear()
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert peak - before > 2 * 2**20  # the pass did make megabytes of arrays
    assert kept < 256 * 2**10, f"{kept / 2**20:.2f} MiB kept after the {name} route's pass"


def test_the_winograd_backward_is_chosen_by_the_cache_s_type():
    """A Winograd forward's cache goes back to the Winograd backward even where the switch has
    since been turned off; any other cache never does."""
    rng = np.random.default_rng(6)
    layer = ConvTranspose2d(3, 5, 5, 2, 2, 1, dtype=F64, rng=rng)
    x = rng.standard_normal((2, 3, 4, 4))
    dy = rng.standard_normal((2, 5, 8, 8))
    with using(winograd="on"):
        layer.forward(x)
    assert isinstance(layer._cache, winograd.WinogradCache)
    with using(winograd="off", cpu_forms=False):
        assert routes.choose("conv_transpose2d_backward", dy, layer._cache, True).name == (
            "winograd"
        )
    with using(winograd="off"):
        layer.forward(x)
    assert isinstance(layer._cache, F.DeconvCache)
    assert routes.choose("conv_transpose2d_backward", dy, layer._cache, True).name == "blocks"


@st.composite
def few_input_channels(draw):
    """(N, Cin, Cout, (H, W), kernel, stride, padding, output_padding) with 1-2 input channels
    and 4-24 output channels: the layers the taps form is for, and any geometry."""
    geom = list(draw(geometries()))
    geom[1], geom[2] = draw(st.integers(1, 2)), draw(st.integers(4, 24))
    return tuple(geom)


@HYPO
@given(geom=few_input_channels(), seed=st.integers(0, 2**16))
def test_the_taps_form_of_dx_is_the_oracle_s_convolution(geom, seed):
    """dx by taps (one GEMM, then a strided sum per tap) is the adjoint: the naive convolution
    of dy with the filters, for every stride, padding and output padding."""
    n, cin, cout, hw, k, s, p, op = geom
    rng = np.random.default_rng(seed)
    hout, wout = (oracles.out_size(a, b, d, e, f) for a, b, d, e, f in zip(hw, k, s, p, op))
    w = rng.standard_normal((cin, cout, *k))
    dy = rng.standard_normal((n, cout, hout, wout))
    dx = columns.conv_transpose2d_dx_taps(dy, w, hw, s, p)
    assert dx.shape == (n, cin, *hw) and dx.dtype == F64
    np.testing.assert_allclose(dx, oracles.conv2d(dy, w, s, p, hw), **TOL64)


def test_the_taps_route_takes_dx_alone_of_layers_with_few_input_channels():
    """A 1 -> 16 layer (the texture network's first layer in small): dx alone (the Langevin
    dynamics) goes by taps, dx with dW (the learning step) by blocks, a 16 -> 16 layer by
    blocks; the taps' dx is the reference's."""
    rng = np.random.default_rng(8)
    layer = ConvTranspose2d(1, 16, 5, 2, 2, 1, dtype=F64, rng=rng)
    x = rng.standard_normal((2, 1, 4, 4))
    dy = rng.standard_normal((2, 16, 8, 8))
    with using(winograd="off"):
        layer.forward(x)
        assert routes.choose("conv_transpose2d_backward", dy, layer._cache, False).name == "taps"
        assert routes.choose("conv_transpose2d_backward", dy, layer._cache, True).name == "blocks"
        dx = layer.backward(dy, need_param_grads=False)
        wide = ConvTranspose2d(16, 16, 5, 2, 2, 1, dtype=F64, rng=rng)
        wide.forward(rng.standard_normal((2, 16, 4, 4)))
        assert routes.choose("conv_transpose2d_backward", dy, wide._cache, False).name == "blocks"
    with reference_only():
        layer.forward(x)
        want = layer.backward(dy, need_param_grads=False)
    np.testing.assert_allclose(dx, want, rtol=1e-12, atol=1e-12)


def test_the_gpu_route_and_the_reference_on_the_fake_device(fake_gpu):
    """On CuPy arrays: the CUDA route while ``cuda`` is on, the reference otherwise; batch norm
    and the Langevin update likewise (``c`` and ``cpu_forms`` do not apply to the GPU)."""
    cp = fake_gpu
    rng = np.random.default_rng(7)
    layer = ConvTranspose2d(2, 3, 5, 2, 2, 1, rng=rng).to("gpu")
    x = cp.asarray(rng.standard_normal((2, 2, 3, 3)).astype(np.float32))
    layer.forward(x)
    assert layer._cache.route == "cuda"
    assert routes.choose("langevin_step", x).name == "cuda"
    with using(cuda=False):
        layer.forward(x)
        assert layer._cache.route == "xp"
        assert routes.choose("langevin_step", x).name == "xp"
    bn = BatchNorm2d(2).to("gpu")
    bn.forward(x)
    assert bn._cache.route == "cuda"  # batch statistics: the kernels of batchnorm.cu
    bn.eval()
    bn.forward(x)
    assert bn._cache.route == "xp"  # fixed statistics: the reference
    bn.train()
    with using(cuda=False):
        bn.forward(x)
        assert bn._cache.route == "xp"
    w = cp.asarray(rng.standard_normal((4, 3)).astype(np.float32))
    assert routes.choose("matmul", w, w.T).name == "cuda"
    with using(cuda=False):
        assert routes.choose("matmul", w, w.T).name == "xp"
