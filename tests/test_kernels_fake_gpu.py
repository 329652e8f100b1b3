"""The Python side of the GPU path, run on the CPU through a fake CuPy (``tests/fake_cupy.py``).

No CI machine has a GPU, so ``tests/test_kernels_gpu.py`` is skipped there. These tests install
a NumPy-backed stand-in for CuPy as ``abp_np.backend._cupy``, the CuPy that
``backend.load_cupy`` hands to ``abp_np.fast.cuda`` (the ``fake_gpu`` fixture of
``tests/conftest.py``). Its ``RawModule`` checks every kernel argument as the C++ signature in
``kernels/deconv.cu`` needs it, then runs the kernel's host build (``kernels/host_shim.h``).
What runs for real is everything in Python: the route table's CUDA routes, ``_cuda``'s
validation, grid and argument lists, and ``ABP.langevin``'s fused update.

The reference is the library's ``xp`` path on the same fake device (``using(cuda=False)``).
Both paths do the same GEMMs (NumPy's) and sum the transposed convolution's taps in the same
order (i ascending, then j), and the host build has no fused multiply-add, so the two must agree
bit for bit; only ``tanh`` (libm against NumPy) gets a tolerance.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from abp_np.abp import ABP
from abp_np.backend import using
from abp_np.fast import cublas as _cublas
from abp_np.fast import cuda as _cuda
from abp_np.generator import Generator, object_generator, sound_generator, texture_generator
from abp_np.layers import ConvTranspose1d, ConvTranspose2d, ReLU, Tanh

from oracles import batchnorm as batchnorm_oracle
from oracles import batchnorm_grads, batchnorm_problem

DTYPES = (np.float32, np.float64)

# fake_gpu (tests/conftest.py): the fake CuPy, running the host build of deconv.cu


def launched(cp) -> list[str]:
    """Names of the kernels launched so far, e.g. ['col2im<float>']."""
    return [expression for expression, _, _ in cp.launches]


# --- the fake itself refuses what a real launch would get wrong -------------------------------


def test_fake_kernel_checks_every_argument(fake_gpu):
    cp = fake_gpu
    kernel = _cuda.get_function("langevin_step", np.float32)
    z = cp.zeros(5, dtype=np.float32)
    g = cp.ones(5, dtype=np.float32)
    h, d, n = np.float32(0.5), np.float32(1.0), np.int64(5)
    null = np.uintp(0)  # how the wrappers pass NULL
    kernel((1,), (4,), (z, g, null, h, d, n))  # the good launch
    np.testing.assert_array_equal(cp.asnumpy(z), np.full(5, 0.5, np.float32))
    with pytest.raises(TypeError, match="numpy.int64"):  # a Python int is not a long long
        kernel((1,), (4,), (z, g, null, h, d, 5))
    with pytest.raises(TypeError, match="numpy.float32"):  # double where float is expected
        kernel((1,), (4,), (z, g, null, np.float64(0.5), d, n))
    with pytest.raises(TypeError, match="device array"):
        kernel((1,), (4,), (z, cp.asnumpy(g), null, h, d, n))
    with pytest.raises(TypeError, match="dtype"):
        kernel((1,), (4,), (z, g.astype(np.float64), null, h, d, n))
    with pytest.raises(TypeError, match="uintp"):  # None: a bad pointer in CuPy < 14, not NULL
        kernel((1,), (4,), (z, g, None, h, d, n))
    with pytest.raises(TypeError, match="NULL"):  # z is written
        kernel((1,), (4,), (null, g, null, h, d, n))
    with pytest.raises(ValueError, match="elements"):
        kernel((1,), (4,), (z, cp.ones(6, dtype=np.float32), null, h, d, n))
    with pytest.raises(ValueError, match="overlaps"):
        kernel((1,), (4,), (z, z, null, h, d, n))
    with pytest.raises(TypeError, match="arguments"):
        kernel((1,), (4,), (z, g, null, h, d))
    with pytest.raises(ValueError, match="block"):
        kernel((1,), (2048,), (z, g, null, h, d, n))
    assert launched(cp) == ["langevin_step<float>"]  # only the good one ran


def test_fake_refuses_cupys_cublas_calls_while_a_stream_captures(fake_gpu):
    cp = fake_gpu
    a = cp.ones((2, 3), dtype=np.float32)
    b = cp.ones((3, 2), dtype=np.float32)
    a @ b  # outside a capture: fine
    stream = cp.cuda.Stream(non_blocking=True)
    stream.begin_capture()
    try:
        for product in (lambda: a @ b, lambda: cp.matmul(a, b), lambda: a.dot(b)):
            with pytest.raises(NotImplementedError, match="cuBLAS API during stream capture"):
                product()
        np.testing.assert_array_equal(_cublas.matmul(a, b).view(np.ndarray), np.full((2, 2), 3))
    finally:
        stream.end_capture()


def _layouts(rng, rows, cols, dtype):
    """The same matrix C-contiguous, F-contiguous (a transposed view) and strided."""
    m = rng.standard_normal((rows, cols)).astype(dtype)
    wide = rng.standard_normal((rows, 2 * cols)).astype(dtype)
    wide[:, ::2] = m
    return {"C": m, "F": np.asfortranarray(m), "strided": wide[:, ::2]}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("la", ["C", "F", "strided"])
@pytest.mark.parametrize("lb", ["C", "F", "strided"])
def test_cublas_matmul_reads_every_layout(fake_gpu, dtype, la, lb):
    """The column-major call (ops, sizes, leading dimensions) gives a @ b for every layout."""
    cp = fake_gpu
    rng = np.random.default_rng(5)
    for m, k, n in ((3, 4, 5), (1, 6, 2), (7, 1, 1)):
        a, b = _layouts(rng, m, k, dtype)[la], _layouts(rng, k, n, dtype)[lb]
        got = _cublas.matmul(cp.asarray(a, order="K"), cp.asarray(b, order="K"))
        assert got.shape == (m, n) and got.dtype == dtype and got.flags.c_contiguous
        want = np.ascontiguousarray(a) @ np.ascontiguousarray(b)
        if la != "strided" and lb != "strided":  # read in place: NumPy's very product
            want = a @ b
        np.testing.assert_allclose(
            got.view(np.ndarray), want, rtol=1e-6 if dtype == np.float32 else 1e-14
        )
    assert cp.cublas.handles == 1  # one handle per device
    assert cp.cublas.streams == [0] and len(cp.cublas.workspaces) == 1  # the default stream once
    with cp.cuda.Stream(non_blocking=True) as side:
        _cublas.matmul(cp.asarray(a), cp.asarray(b))
        _cublas.matmul(cp.asarray(a), cp.asarray(b))
    _cublas.matmul(cp.asarray(a), cp.asarray(b))
    # pointed at the current stream when it changes, and each time given its workspace again
    # (cublasSetStream resets it to cuBLAS's own pool)
    assert cp.cublas.streams == [0, side.ptr, 0] and side.ptr != 0
    assert len(cp.cublas.workspaces) == 3 and len(set(cp.cublas.workspaces)) == 1
    calls = " ".join(cp.cublas.calls)
    assert calls.count("stream workspace") == 3 and calls.count("stream") == 3


def test_cublas_is_found_and_its_handle_made_on_the_first_product(fake_gpu, monkeypatch):
    """The first product finds the library and makes the handle (the path a real GPU takes:
    the other tests start with the library in place). It once deadlocked there: run it on a
    thread, with a time limit."""
    import threading

    cp = fake_gpu
    opened = []
    monkeypatch.setattr(_cublas, "_library", None)
    # a lock of the module's kind, for this test alone: a thread stuck on it harms no other test
    monkeypatch.setattr(_cublas, "_lock", type(_cublas._lock)())
    monkeypatch.setattr(_cublas, "_loaded_paths", lambda: ["/lib/libcublas.so.13"])
    monkeypatch.setattr(_cublas.ctypes, "CDLL", lambda name: opened.append(name) or name)
    monkeypatch.setattr(_cublas, "_Library", lambda cdll: cp.cublas)
    a = cp.asarray(np.arange(6, dtype=np.float32).reshape(2, 3))
    out = []
    worker = threading.Thread(target=lambda: out.append(_cublas.matmul(a, a.T)), daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "the first product did not return (a lock taken twice?)"
    np.testing.assert_array_equal(out[0].view(np.ndarray), [[5, 14], [14, 50]])
    assert opened == ["/lib/libcublas.so.13"] and cp.cublas.handles == 1
    _cublas.matmul(a, a.T)
    assert opened == ["/lib/libcublas.so.13"] and cp.cublas.handles == 1  # once only


def test_cublas_missing_is_a_clear_error(fake_gpu, monkeypatch):
    monkeypatch.setattr(_cublas, "_library", None)
    monkeypatch.setattr(_cublas, "_loaded_paths", lambda: [])

    def refuse(name):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(_cublas.ctypes, "CDLL", refuse)
    a = fake_gpu.ones((2, 2), dtype=np.float32)
    with pytest.raises(RuntimeError, match="cannot load cuBLAS.*libcublas.so.13.*cupy-cuda13x"):
        _cublas.matmul(a, a)


def test_cublas_matmul_edges(fake_gpu):
    cp = fake_gpu
    a = cp.ones((3, 0), dtype=np.float32)
    b = cp.ones((0, 2), dtype=np.float32)
    np.testing.assert_array_equal(_cublas.matmul(a, b).view(np.ndarray), np.zeros((3, 2)))
    assert _cublas.matmul(cp.ones((0, 4)), cp.ones((4, 2))).shape == (0, 2)
    assert cp.cublas.gemms == []  # nothing for cuBLAS to do
    with pytest.raises(ValueError, match="2-D product"):
        _cublas.matmul(cp.ones((2, 3)), cp.ones((2, 3)))
    ints = _cublas.matmul(cp.ones((2, 2), dtype=np.int64), cp.ones((2, 2), dtype=np.int64))
    np.testing.assert_array_equal(ints.view(np.ndarray), np.full((2, 2), 2))  # CuPy's @ instead
    assert cp.cublas.gemms == []


def test_fake_arrays_refuse_host_arrays(fake_gpu):
    a = fake_gpu.zeros(3)
    with pytest.raises(TypeError, match="host"):
        a + np.ones(3)
    assert fake_gpu.get_array_module(a) is fake_gpu and fake_gpu.get_array_module(a.get()) is np


# --- transposed convolution: kernel path against the xp path -----------------------------------


def run_layer(layer, x, dy, need_param_grads):
    """Forward and backward on the device; everything returned as host copies."""
    y = layer.forward(x)
    dx = layer.backward(dy, need_param_grads=need_param_grads)
    grads = {k: g.get() for k, g in layer.grads.items()} if need_param_grads else {}
    return y.get(), dx.get(), grads


def both_paths(cp, layer, x, dy, need_param_grads):
    """(kernel path, xp path, kernels launched by each)."""
    x, dy = cp.asarray(x), cp.asarray(dy)
    cp.launches.clear()
    fast = run_layer(layer, x, dy, need_param_grads)
    fast_launches = launched(cp)
    cp.launches.clear()
    with using(cuda=False):
        slow = run_layer(layer, x, dy, need_param_grads)
    assert launched(cp) == []  # the xp path launches nothing
    return fast, slow, fast_launches


def assert_same(fast, slow):
    for a, b in zip(fast[:2], slow[:2]):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    assert fast[2].keys() == slow[2].keys()
    for k in fast[2]:
        np.testing.assert_array_equal(fast[2][k], slow[2][k])


# (Cin, Cout, H, W, kernel, stride, padding, output_padding, bias)
GEOMETRIES_2D = [
    (3, 2, 4, 4, 5, 2, 2, 1, True),  # the paper's doubling layer
    (2, 3, 3, 5, (3, 2), 1, 0, 0, False),  # stride 1, no padding, no bias
    (2, 1, 5, 3, (4, 3), (3, 2), (1, 2), (2, 0), True),  # uneven everything
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geometry", GEOMETRIES_2D, ids=["doubling", "stride1", "uneven"])
@pytest.mark.parametrize("need_param_grads", [True, False])
def test_conv_transpose2d_kernel_path_equals_xp_path(fake_gpu, dtype, geometry, need_param_grads):
    Cin, Cout, H, W, k, s, p, op, bias = geometry
    rng = np.random.default_rng(0)
    layer = ConvTranspose2d(Cin, Cout, k, s, p, op, bias, dtype, init_std=0.5, rng=rng).to("gpu")
    if bias:
        layer.params["bias"][...] = fake_gpu.asarray(rng.standard_normal(Cout).astype(dtype))
    N = 2
    # x as a transposed view: the kernel path must not care how x is laid out
    x = rng.standard_normal((Cin, N, H, W)).astype(dtype).transpose(1, 0, 2, 3)
    dy = rng.standard_normal((N, *layer.output_shape((N, Cin, H, W))[1:])).astype(dtype)
    fast, slow, fast_launches = both_paths(fake_gpu, layer, x, dy, need_param_grads)
    suffix = "float" if dtype == np.float32 else "double"
    assert fast_launches == [f"col2im<{suffix}>", f"im2col<{suffix}>"]
    assert_same(fast, slow)
    assert np.abs(fast[0]).max() > 0 and np.abs(fast[1]).max() > 0  # not trivially zero


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("need_param_grads", [True, False])
def test_conv_transpose1d_kernel_path_equals_xp_path(fake_gpu, dtype, need_param_grads):
    """The sound layer (kernel 25, stride 10), with a non-contiguous upstream gradient."""
    rng = np.random.default_rng(1)
    layer = ConvTranspose1d(3, 2, 25, 10, 8, 1, True, dtype, init_std=0.5, rng=rng).to("gpu")
    layer.params["bias"][...] = fake_gpu.asarray(rng.standard_normal(2).astype(dtype))
    N, L = 2, 4
    x = rng.standard_normal((N, 3, L)).astype(dtype)
    Lout = layer.output_shape((N, 3, L))[2]
    dy = rng.standard_normal((2, N, Lout)).astype(dtype).transpose(1, 0, 2)  # (N, 2, Lout)
    fast, slow, fast_launches = both_paths(fake_gpu, layer, x, dy, need_param_grads)
    assert [e.split("<")[0] for e in fast_launches] == ["col2im", "im2col"]
    assert_same(fast, slow)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 4, 5, 6), (2, 3, 7), (5, 4), (2, 2, 1, 1)])
def test_batchnorm_kernels_match_the_oracles(fake_gpu, dtype, shape):
    """batchnorm.cu's route (host build): forward against the float64 oracle, backward against
    central differences of it, the bits the same on a second run."""
    cp = fake_gpu
    C = shape[1]
    x, gamma, beta, dy = batchnorm_problem(9, shape, dtype)
    eps = 1e-5
    args = [cp.asarray(a) for a in (x, gamma, beta)]
    cp.launches.clear()
    y, xc, inv_std, mu, var = _cuda.batchnorm_forward(*args, eps)
    suffix = "float" if dtype == np.float32 else "double"
    assert launched(cp) == [
        f"{k}<{suffix}>"
        for k in ("channel_partials", "channel_finish") * 2 + ("bn_inv_std", "bn_forward_apply")
    ]
    want_y, want_mu, unbiased = batchnorm_oracle(x, gamma, beta, eps)
    M = x.size // C
    tol = dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(y.get(), want_y, **tol)
    np.testing.assert_allclose(mu.get(), want_mu, **tol)
    np.testing.assert_allclose(var.get(), unbiased * (M - 1) / M, **tol)
    np.testing.assert_allclose(xc.get(), x - want_mu.reshape(inv_std.shape), **tol)
    assert inv_std.shape == (1, C) + (1,) * (len(shape) - 2)
    cache = SimpleNamespace(xc=xc, inv_std=inv_std, gamma=args[1])
    dx, dgamma, dbeta = _cuda.batchnorm_backward(cp.asarray(dy), cache)
    if dtype == np.float64:  # central differences resolve float64 only
        ndx, ndgamma, ndbeta = batchnorm_grads(x, gamma, beta, eps, dy)
        fd = dict(rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(dx.get(), ndx, **fd)
        np.testing.assert_allclose(dgamma.get(), ndgamma, **fd)
        np.testing.assert_allclose(dbeta.get(), ndbeta, **fd)
    np.testing.assert_allclose(dbeta.get(), dy.reshape(shape[0], C, -1).sum(axis=(0, 2)), **tol)
    again = _cuda.batchnorm_forward(*args, eps)
    for a, b in zip((y, xc, inv_std, mu, var), again, strict=True):
        assert a.tobytes() == b.tobytes()
    dx2, _, _ = _cuda.batchnorm_backward(cp.asarray(dy), cache, need_param_grads=False)
    assert dx2.tobytes() == dx.tobytes()


@pytest.mark.parametrize("dtype", DTYPES)
def test_batchnorm_layer_kernel_path_equals_xp_path(fake_gpu, dtype):
    """The layer with and without the CUDA route: the same outputs, gradients and running
    statistics, to rounding (the sums are added in another order)."""
    cp = fake_gpu
    from abp_np.layers import BatchNorm2d

    rng = np.random.default_rng(10)
    x = cp.asarray((rng.standard_normal((4, 3, 5, 5)) * 3 - 1).astype(dtype))
    dy = cp.asarray(rng.standard_normal((4, 3, 5, 5)).astype(dtype))
    out = []
    for cuda in (True, False):
        bn = BatchNorm2d(3, dtype=dtype).to("gpu")
        bn.params["weight"][...] = cp.asarray(rng.standard_normal(3).astype(dtype))
        with using(cuda=cuda):
            y = bn.forward(x)
            assert bn._cache.route == ("cuda" if cuda else "xp")
            assert ("bn_running_update" in {e.split("<")[0] for e in launched(cp)}) is cuda
            cp.launches.clear()
            dx = bn.backward(dy, True)
        out.append([y, dx, *bn.grads.values(), *bn.buffers.values()])
        rng = np.random.default_rng(10)  # the same weight for the second layer
        rng.standard_normal((4, 3, 5, 5)), rng.standard_normal((4, 3, 5, 5))
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    for a, b in zip(*out, strict=True):
        np.testing.assert_allclose(a.get(), b.get(), **tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ["identity", "tanh", "relu", "leaky_relu"])
def test_col2im_fused_activation_equals_xp_path(fake_gpu, dtype, activation):
    """``col2im_act`` (not used by the layers yet): its longer argument list, checked."""
    from abp_np import functional as F

    cp = fake_gpu
    rng = np.random.default_rng(2)
    N, C, H, W, k, s, p = 2, 3, 3, 4, 5, 2, 2
    Hout, Wout = 2 * H, 2 * W
    cols = rng.standard_normal((C, k, k, N, H, W)).astype(dtype)
    bias = rng.standard_normal(C).astype(dtype)
    y = _cuda.col2im(
        cp.asarray(cols), N, C, Hout, Wout, k, k, H, W, (s, s), (p, p), cp.asarray(bias),
        activation=activation, slope=0.3,
    )  # fmt: skip
    pre = F.col2im(cols, (N, C, Hout, Wout), (s, s), (p, p)) + bias.reshape(1, C, 1, 1)
    expected = {
        "identity": pre,
        "tanh": np.tanh(pre),
        "relu": np.where(pre > 0, pre, dtype(0)),
        "leaky_relu": np.where(pre > 0, pre, dtype(0.3) * pre),
    }[activation]
    if activation == "tanh":  # libm against NumPy
        tol = dict(rtol=1e-6, atol=1e-7) if dtype == np.float32 else dict(rtol=1e-14, atol=0)
        np.testing.assert_allclose(y.get(), expected, **tol)
    else:
        np.testing.assert_array_equal(y.get(), expected)
    name = "col2im" if activation == "identity" else "col2im_act"
    assert launched(cp) == [f"{name}<{'float' if dtype == np.float32 else 'double'}>"]


# --- the wrappers validate before they launch -----------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_wrappers_raise_value_error_before_launching(fake_gpu, dtype):
    cp = fake_gpu
    N, C, H, W, k, s, p = 2, 3, 3, 4, 5, 2, 2
    Hout, Wout = 2 * H - 1, 2 * W - 1  # output_padding 0
    geom = (N, C, Hout, Wout, k, k, H, W, (s, s), (p, p))
    cols = cp.zeros((C, k, k, N, H, W), dtype=dtype)
    bad_cols = {
        "dtype": cols.astype(np.float16),
        "C-contiguous": cp.zeros((N, H, W, C, k, k), dtype=dtype).transpose(3, 4, 5, 0, 1, 2),
        "shape": cp.zeros((C, k, k, N, H, W + 1), dtype=dtype),
    }
    for match, bad in bad_cols.items():
        with pytest.raises(ValueError, match=match):
            _cuda.col2im(bad, *geom)
    with pytest.raises(ValueError, match="bias"):
        _cuda.col2im(cols, *geom, bias=cp.zeros(C + 1, dtype=dtype))
    with pytest.raises(ValueError, match="cupy.ndarray"):
        _cuda.col2im(cols.get(), *geom)
    with pytest.raises(ValueError, match="Hout"):
        _cuda.col2im(cols, N, C, Hout + 3, Wout, k, k, H, W, (s, s), (p, p))

    dy = cp.zeros((N, C, Hout, Wout), dtype=dtype)
    for match, bad in {
        "dtype": dy.astype(np.int32),
        "C-contiguous": cp.zeros((C, N, Hout, Wout), dtype=dtype).transpose(1, 0, 2, 3),
        "4-D": dy[0],
        "Wout": cp.zeros((N, C, Hout, Wout + 2), dtype=dtype),
    }.items():
        with pytest.raises(ValueError, match=match):
            _cuda.im2col(bad, k, k, H, W, (s, s), (p, p))

    z = cp.zeros((4, 6), dtype=dtype)
    g = cp.zeros((4, 6), dtype=dtype)
    other = np.float64 if dtype == np.float32 else np.float32
    for match, args in {
        "dtype": (z, g.astype(other), None),
        "C-contiguous": (z, cp.zeros((6, 4), dtype=dtype).T, None),
        "shape": (z, g, cp.zeros((4, 7), dtype=dtype)),
    }.items():
        with pytest.raises(ValueError, match=match):
            _cuda.langevin_step_(*args, 0.1)
    with pytest.raises(ValueError, match="delta"):
        _cuda.langevin_step_(z, g, None, float("nan"))
    assert launched(cp) == []  # every refusal came before a launch
    _cuda.col2im(cols, *geom)
    _cuda.im2col(dy, k, k, H, W, (s, s), (p, p))
    _cuda.langevin_step_(z, g, None, 0.1)
    assert [e.split("<")[0] for e in launched(cp)] == ["col2im", "im2col", "langevin_step"]


def test_arrays_on_another_gpu_are_refused_before_launching(fake_gpu, monkeypatch):
    cp = fake_gpu
    z = cp.zeros((2, 3), dtype=np.float32)
    monkeypatch.setattr(cp.ndarray, "device", property(lambda self: SimpleNamespace(id=1)))
    with pytest.raises(ValueError, match="on GPU 1, but the current device is GPU 0"):
        _cuda.langevin_step_(z, z.copy(), None, 0.3)
    assert cp.launches == []


def test_kernel_objects_are_looked_up_once_per_module(fake_gpu, monkeypatch):
    first = _cuda.get_function("col2im", np.float32)
    assert _cuda.get_function("col2im", np.float32) is first
    assert _cuda.get_function("col2im", np.float64) is not first
    monkeypatch.setattr(_cuda, "_module", None)  # a module built afresh: its own kernels
    assert _cuda.get_function("col2im", np.float32) is not first


def test_wrapper_grid_is_capped_and_covers_everything(fake_gpu):
    """256-thread blocks, as many as the elements need; every element written."""
    cp = fake_gpu
    z = cp.zeros(1000, dtype=np.float64)
    _cuda.langevin_step_(z, cp.ones(1000), None, 1.0)
    assert cp.launches == [("langevin_step<double>", (4, 1, 1), (256, 1, 1))]
    np.testing.assert_array_equal(z.get(), np.full(1000, 0.5))


# --- ABP.langevin through the fused Langevin kernel ----------------------------------------------


# Kernel chain against xp chain. Without batch norm every step is bitwise the same. With it,
# only nearly: the xp path's deconvolution output is laid out channel-major (a transposed view)
# and the kernel's batch-major, so NumPy's pairwise sums in batch norm's mean and variance add
# in another order.
CHAIN_TOL = {
    np.dtype(np.float32): dict(rtol=1e-4, atol=1e-5),
    np.dtype(np.float64): dict(rtol=1e-10, atol=1e-12),
}


def tiny_generator(net, dtype):
    rng = np.random.default_rng(4)
    if net == "no-bn":  # 2 x 3 x 3 -> 2 x 6 x 6 -> 1 x 12 x 12
        layers = [
            ConvTranspose2d(2, 2, 4, 2, 1, 0, True, dtype, init_std=0.3, rng=rng),
            ReLU(dtype),
            ConvTranspose2d(2, 1, 4, 2, 1, 0, False, dtype, init_std=0.3, rng=rng),
            Tanh(dtype),
        ]
        return Generator(layers, (2, 3, 3))
    if net == "object":  # z 8 -> Linear -> 8 x 4 x 4 -> ... -> 3 x 16 x 16, with batch norm
        return object_generator(8, (8, 4), 3, batch_norm=True, dtype=dtype, init_std=0.3, rng=rng)
    if net == "texture":  # 1 x 2 x 2 -> 2 x 16 x 16, with batch norm
        return texture_generator((4, 3), 2, 2, dtype=dtype, init_std=0.3, rng=rng)
    return sound_generator((3, 2), 3, dtype=dtype, init_std=0.3, rng=rng)  # 1 x 3 -> 1 x 3000


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("net", ["no-bn", "texture", "sound"])
def test_langevin_fused_kernel_equals_xp_update(fake_gpu, dtype, net):
    cp = fake_gpu
    G = tiny_generator(net, dtype)
    n_deconv = sum(isinstance(layer, ConvTranspose2d) for layer in G.layers)
    abp = ABP(G, sigma=0.3, step_size=0.3, seed=0).to("gpu")
    rng = np.random.default_rng(3)
    N, steps = 3, 4
    z0 = rng.standard_normal((N, *G.latent_shape)).astype(dtype)
    y = rng.uniform(-1, 1, (N, *abp.image_shape)).astype(dtype)
    U = rng.standard_normal((steps, N, *G.latent_shape)).astype(dtype)
    z0_d, y_d, U_d = cp.asarray(z0), cp.asarray(y), cp.asarray(U)

    cp.launches.clear()
    fast = abp.langevin(z0_d, y_d, steps=steps, noise_arrays=U_d)
    names = [e.split("<")[0] for e in launched(cp)]
    assert names.count("langevin_step") == steps
    assert names.count("col2im") == names.count("im2col") == n_deconv * steps
    with using(cuda=False):
        cp.launches.clear()
        slow = abp.langevin(z0_d, y_d, steps=steps, noise_arrays=U_d)
        assert launched(cp) == []
    assert isinstance(fast, cp.ndarray) and fast.dtype == dtype
    np.testing.assert_array_equal(z0_d.get(), z0)  # the start is not modified
    if net == "no-bn":
        np.testing.assert_array_equal(fast.get(), slow.get())
    else:
        np.testing.assert_allclose(fast.get(), slow.get(), **CHAIN_TOL[np.dtype(dtype)])
    assert np.abs(fast.get() - z0).max() > 1e-2  # the chain moved


@pytest.mark.parametrize("dtype", DTYPES)
def test_langevin_without_noise_launches_the_kernel_with_a_null_noise(fake_gpu, dtype):
    """noise=False: gradient ascent, the kernel gets NULL for the noise."""
    cp = fake_gpu
    abp = ABP(tiny_generator("no-bn", dtype), sigma=0.3, step_size=0.3, seed=0).to("gpu")
    rng = np.random.default_rng(5)
    z0 = cp.asarray(rng.standard_normal((2, 2, 3, 3)).astype(dtype))
    y = cp.asarray(rng.uniform(-1, 1, (2, *abp.image_shape)).astype(dtype))
    fast = abp.langevin(z0, y, steps=3, noise=False)
    with using(cuda=False):
        slow = abp.langevin(z0, y, steps=3, noise=False)
    assert launched(cp).count(f"langevin_step<{'float' if dtype == np.float32 else 'double'}>") == 3
    np.testing.assert_array_equal(fast.get(), slow.get())


# --- the Langevin loop as a CUDA graph (abp_np.fast.cuda_graph) ------------------------------------
#
# The fake records no graph: operations run at once, also while a stream captures, and
# Graph.launch only counts. So these tests check what is captured, when, and what is refused;
# the values a replay gives are checked against the eager loop on a GPU
# (tests/test_kernels_gpu.py).


@pytest.fixture
def fake_capture(fake_gpu, monkeypatch):
    for name in ("capturing", "graphs", "captured", "allocators"):
        monkeypatch.setattr(fake_gpu, name, [])
    return fake_gpu


def graph_problem(cp, net="texture", dtype=np.float32, N=3, seed=7):
    abp = ABP(tiny_generator(net, dtype), sigma=0.3, step_size=0.3, seed=0, cuda_graph=True)
    abp.to("gpu")
    rng = np.random.default_rng(seed)
    z = cp.asarray(rng.standard_normal((N, *abp.latent_shape)).astype(dtype))
    y = cp.asarray(rng.uniform(-1, 1, (N, *abp.image_shape)).astype(dtype))
    return abp, z, y


@pytest.mark.parametrize("net", ["no-bn", "texture", "sound", "object"])
def test_graph_records_the_eager_loops_launches_once(fake_capture, net):
    cp = fake_capture
    abp, z, y = graph_problem(cp, net)
    steps = 3
    abp.cuda_graph = False
    cp.launches.clear()
    abp.langevin(z, y, steps=steps)
    eager = list(cp.launches)
    assert [e.split("<")[0] for e in launched(cp)].count("langevin_step") == steps

    abp.cuda_graph = True
    cp.launches.clear()
    cp.cublas.gemms.clear()
    out = abp.langevin(z, y, steps=steps)
    # the eager warm-up, then the captured loop: the same launches, grids and blocks
    assert cp.captured == eager
    # every GEMM of the loop went to cuBLAS directly (CuPy's would be refused), in both runs
    gemms = cp.cublas.gemms
    assert len(gemms) > 0 and [g[:5] for g in gemms[: len(gemms) // 2]] == [
        g[:5] for g in gemms[len(gemms) // 2 :]
    ]
    assert any(g[5] for g in gemms) and not all(g[5] for g in gemms)
    assert cp.launches == eager + eager
    assert len(cp.graphs) == 1 and cp.graphs[0].launches == 1
    assert cp.capturing == []
    assert isinstance(out, cp.ndarray) and out.shape == z.shape

    cp.launches.clear()
    abp.langevin(z, y, steps=steps)  # the same key: a replay, no kernel launched from Python
    assert cp.launches == [] and len(cp.graphs) == 1 and cp.graphs[0].launches == 2


def test_graph_capture_runs_on_a_side_stream_with_a_private_pool(fake_capture, monkeypatch):
    cp = fake_capture
    abp, z, y = graph_problem(cp)
    seen = []
    inner = ABP._langevin_step

    def watched(self, *args, **kwargs):
        current = cp.Stream._current[-1] if cp.Stream._current else None
        seen.append((bool(cp.capturing), current, cp.allocators[-1] if cp.allocators else None))
        return inner(self, *args, **kwargs)

    monkeypatch.setattr(ABP, "_langevin_step", watched)
    abp.langevin(z, y, steps=2)
    assert [s[0] for s in seen] == [False, False, True, True]  # warm-up, then the capture
    (graph,) = abp._graphs.values()
    for _, stream, allocator in seen:
        assert stream is graph.stream and stream.non_blocking
        assert allocator == graph.pool.malloc


def test_graph_is_kept_for_equal_keys_and_captured_anew_otherwise(fake_capture):
    cp = fake_capture
    abp, z, y = graph_problem(cp)
    abp.langevin(z, y, steps=2)
    assert len(cp.graphs) == 1
    abp.learn(z, y)  # the optimiser updates W in place: the graph reads the new contents
    abp.langevin(z + 1, y * 0.5, steps=2)  # new data, same shapes
    assert len(cp.graphs) == 1 and cp.graphs[0].launches == 2

    abp.langevin(z, y, steps=3)  # another number of steps
    assert len(cp.graphs) == 2
    abp.langevin(z, y, steps=2, step_size=0.1)  # another delta: a third key; the oldest goes
    assert len(cp.graphs) == 3 and len(abp._graphs) == 2
    abp.langevin(z[:2], y[:2], steps=3)  # another batch size
    assert len(cp.graphs) == 4 and len(abp._graphs) == 2

    abp.langevin(z, y, steps=3)  # the second key again: it was dropped, so captured again
    assert len(cp.graphs) == 5
    abp.langevin(z, y, steps=3)
    assert len(cp.graphs) == 5  # and now kept
    layer = abp.generator.layers[0]
    layer.params["weight"] = layer.params["weight"].copy()  # a new array in the weight's place
    abp.langevin(z, y, steps=3)
    assert len(cp.graphs) == 6


def test_graph_gets_the_noise_it_is_given(fake_capture):
    cp = fake_capture
    abp, z, y = graph_problem(cp)
    steps = 2
    U = cp.asarray(np.random.default_rng(1).standard_normal((steps, *z.shape)).astype(z.dtype))
    abp.langevin(z, y, steps=steps, noise_arrays=U)
    (graph,) = abp._graphs.values()
    np.testing.assert_array_equal(graph.U.get(), U.get())
    np.testing.assert_array_equal(graph.y.get(), y.get())
    abp.langevin(z, y, steps=steps, noise=False)  # no noise: a graph without a U buffer
    assert [g.U is None for g in abp._graphs.values()] == [False, True]


def test_graph_refuses_a_host_copy_inside_the_loop(fake_capture):
    """A loop that copies to the host cannot be captured: a clear error, the stream freed."""
    from abp_np.fast.cuda_graph import CaptureError
    from abp_np.observation import Complete

    class Chatty(Complete):
        def residual(self, y_obs, f):
            r = super().residual(y_obs, f)
            print(float(abs(r).max()))  # a synchronising host copy
            return r

    cp = fake_capture
    abp, z, y = graph_problem(cp)
    with pytest.raises(CaptureError, match="cuda_graph=False"):
        abp.langevin(z, y, observation=Chatty(), steps=2)
    assert cp.capturing == [] and abp._graphs == {}
    abp.langevin(z, y, steps=2)  # the default observation still captures
    assert len(abp._graphs) == 1


def test_graph_is_captured_anew_when_a_setting_its_repr_hides_changes(fake_capture):
    """Batch norm's momentum is baked into the captured update of the running statistics."""
    cp = fake_capture
    abp, z, y = graph_problem(cp)  # the texture network has batch norms
    abp.langevin(z, y, steps=2)
    bn = next(layer for layer in abp.generator.layers if hasattr(layer, "momentum"))
    bn.momentum = 0.5
    abp.langevin(z, y, steps=2)
    assert len(cp.graphs) == 2
    abp.langevin(z, y, steps=2)
    assert len(cp.graphs) == 2


def test_graph_frees_the_default_pools_cache_before_its_warm_up(fake_capture, monkeypatch):
    cp = fake_capture
    monkeypatch.setattr(cp._DefaultPool, "freed", 0)
    abp, z, y = graph_problem(cp)
    abp.langevin(z, y, steps=2)
    assert cp._DefaultPool.freed == 1
    abp.langevin(z, y, steps=2)  # a replay allocates nothing: nothing to free
    assert cp._DefaultPool.freed == 1


@pytest.mark.parametrize("when", ["warm-up", "capture"])
def test_graph_failure_releases_the_half_pass_and_keeps_out_of_memory_as_it_is(
    fake_capture, monkeypatch, when
):
    """An allocation failure inside the loop stays CuPy's out-of-memory error (so that fit
    can advise a smaller batch), and the layers let go of what the failed pass saved (the
    private pool's memory, freed with it)."""
    from abp_np.backend import is_device_out_of_memory

    OutOfMemoryError = type("OutOfMemoryError", (MemoryError,), {"__module__": "cupy.cuda.memory"})
    cp = fake_capture
    abp, z, y = graph_problem(cp)
    inner = ABP._langevin_step

    def failing(self, zb, yb, ob, delta, U, kernel=None):
        if bool(cp.capturing) == (when == "capture"):
            self.generator.forward(zb)  # the layers save their inputs, then:
            raise OutOfMemoryError("out of memory allocating 1,048,576 bytes")
        return inner(self, zb, yb, ob, delta, U, kernel)

    monkeypatch.setattr(ABP, "_langevin_step", failing)
    with pytest.raises(OutOfMemoryError) as info:
        abp.langevin(z, y, steps=2)
    assert is_device_out_of_memory(info.value)
    assert all(layer._cache is None for layer in abp.generator.layers)
    assert cp.capturing == [] and abp._graphs == {}


def test_graph_is_off_on_the_cpu_and_by_default(fake_capture):
    dtype = np.float32
    G = tiny_generator("texture", dtype)
    assert ABP(G).cuda_graph is False
    abp = ABP(G, sigma=0.3, step_size=0.3, seed=0, cuda_graph=True)  # stays on the CPU
    rng = np.random.default_rng(2)
    z = rng.standard_normal((3, *abp.latent_shape)).astype(dtype)
    y = rng.uniform(-1, 1, (3, *abp.image_shape)).astype(dtype)
    U = rng.standard_normal((2, *z.shape)).astype(dtype)
    a = abp.langevin(z, y, steps=2, noise_arrays=U)
    abp.cuda_graph = False
    b = abp.langevin(z, y, steps=2, noise_arrays=U)
    np.testing.assert_array_equal(a, b)
    assert fake_capture.graphs == [] and abp._graphs == {}


def test_graph_takes_each_calls_masks_into_its_own_buffer(fake_capture):
    """Per-example masks change every batch: copied in like y, not captured anew."""
    from abp_np.observation import Masked

    cp = fake_capture
    abp, z, y = graph_problem(cp)
    rng = np.random.default_rng(8)
    masks = [cp.asarray(rng.random((3, *abp.image_shape)) < 0.6) for _ in range(2)]
    for m in masks:
        abp.langevin(z, y, observation=Masked(m), steps=2)
    (graph,) = abp._graphs.values()
    assert len(cp.graphs) == 1 and cp.graphs[0].launches == 2
    assert graph.obs.mask is not masks[1]  # the graph's own array ...
    np.testing.assert_array_equal(graph.obs.mask.get(), masks[1].get())  # ... holding the last
    abp.langevin(z, y, observation=Masked(masks[0][:1]), steps=2)  # one mask for all: new shape
    assert len(cp.graphs) == 2


def test_graph_records_a_projection_observation(fake_capture):
    """Compressed sensing's shared S: its products go to cuBLAS directly, so the loop is
    recorded (CuPy's ``@`` would be refused inside the capture)."""
    from abp_np.observation import Projection

    cp = fake_capture
    abp, z, y_img = graph_problem(cp)
    rng = np.random.default_rng(11)
    D = int(np.prod(abp.image_shape))
    S = cp.asarray((rng.standard_normal((7, D)) / np.sqrt(D)).astype(np.float32))
    obs = Projection(S, abp.image_shape)
    y = obs.observe(y_img)
    abp.cuda_graph = False
    want = abp.langevin(z, y, observation=obs, steps=2, noise=False)
    abp.cuda_graph = True
    cp.cublas.gemms.clear()
    got = abp.langevin(z, y, observation=obs, steps=2, noise=False)
    assert len(cp.graphs) == 1 and cp.capturing == []
    captured = [g for g in cp.cublas.gemms if g[5]]
    assert any(g[2:5] == (7, 3, D) for g in captured)  # observe, (N, D) @ (D, m), column-major
    assert got.shape == want.shape  # (values: the fake replays nothing; a GPU test compares them)


def test_graph_leaves_random_projections_to_the_eager_loop(fake_capture):
    """One S per example (batched products, matrices drawn on the host in chunks): the loop
    runs eagerly under cuda_graph=True, with the eager loop's result."""
    from abp_np.observation import RandomProjections

    cp = fake_capture
    abp, z, y_img = graph_problem(cp)
    obs = RandomProjections.for_examples(3, 5, abp.image_shape, seed=2)
    y = obs.like(y_img).observe(y_img)
    abp.cuda_graph = False
    want = abp.langevin(z, y, observation=obs, steps=2, noise=False)
    abp.cuda_graph = True
    got = abp.langevin(z, y, observation=obs, steps=2, noise=False)
    assert cp.graphs == [] and abp._graphs == {}
    np.testing.assert_array_equal(got.get(), want.get())
