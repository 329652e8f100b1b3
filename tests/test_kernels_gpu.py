"""The CUDA kernels through their CuPy wrappers (``abp_np.fast.cuda``), on a real GPU.

Skipped as a whole where CuPy is missing or no GPU is visible. Expected values come from
NumPy oracles written here (the layout contract's index formulas, as loops), never from the
library. Each kernel is also run twice to check that the bits repeat, and every wrapper is
checked to refuse bad input with a ValueError before it launches anything.
"""

from __future__ import annotations

import numpy as np
import pytest

from abp_np.fast import cuda as _cuda

from oracles import activation_oracle, col2im_oracle, im2col_oracle, out_size

pytestmark = pytest.mark.gpu

try:  # a CuPy that is installed but cannot load CUDA raises more than ImportError
    import cupy
except Exception as err:
    pytest.skip(f"CuPy is not importable ({err})", allow_module_level=True)
try:
    _n_gpus = cupy.cuda.runtime.getDeviceCount()
except Exception as err:
    pytest.skip(f"no CUDA GPU is visible ({err})", allow_module_level=True)
if _n_gpus == 0:
    pytest.skip("no CUDA GPU is visible", allow_module_level=True)

DTYPES = (np.float32, np.float64)
# GPU against NumPy: the GPU may fuse multiply-adds and has its own tanh.
TOL = {
    np.dtype(np.float32): dict(rtol=2e-6, atol=2e-6),
    np.dtype(np.float64): dict(rtol=1e-13, atol=1e-13),
}

# (N, C, H, W, kh, kw, stride, padding, output_padding)
GEOMETRIES = [
    (2, 3, 4, 4, 5, 5, (2, 2), (2, 2), (1, 1)),  # the paper's doubling layer
    (3, 2, 1, 6, 1, 25, (1, 10), (0, 8), (0, 1)),  # the sound layer, 1-D as H = 1, kh = 1
    (1, 4, 3, 5, 3, 2, (1, 1), (0, 0), (0, 0)),  # stride 1, no padding
    (2, 1, 5, 3, 4, 3, (3, 2), (1, 2), (2, 0)),  # uneven everything
    (4, 8, 7, 7, 4, 4, (2, 2), (1, 1), (0, 0)),  # DCGAN-style kernel 4
]
GEOMETRY_IDS = ["doubling", "sound", "stride1", "uneven", "k4"]
ACTIVATIONS = ("identity", "tanh", "relu", "leaky_relu")


def sizes(geometry):
    N, C, H, W, kh, kw, stride, padding, output_padding = geometry
    Hout = out_size(H, kh, stride[0], padding[0], output_padding[0])
    Wout = out_size(W, kw, stride[1], padding[1], output_padding[1])
    return N, C, H, W, kh, kw, stride, padding, Hout, Wout


# --- col2im ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=GEOMETRY_IDS)
@pytest.mark.parametrize("with_bias", [True, False])
def test_col2im_matches_oracle(geometry, dtype, with_bias):
    N, C, H, W, kh, kw, stride, padding, Hout, Wout = sizes(geometry)
    rng = np.random.default_rng(0)
    cols = rng.standard_normal((C, kh, kw, N, H, W)).astype(dtype)
    bias = rng.standard_normal(C).astype(dtype) if with_bias else None
    y = _cuda.col2im(
        cupy.asarray(cols),
        N,
        C,
        Hout,
        Wout,
        kh,
        kw,
        H,
        W,
        stride,
        padding,
        bias=None if bias is None else cupy.asarray(bias),
    )
    assert y.shape == (N, C, Hout, Wout) and y.dtype == dtype and y.flags.c_contiguous
    expected = col2im_oracle(cols, Hout, Wout, stride, padding, bias)
    np.testing.assert_allclose(cupy.asnumpy(y), expected, **TOL[np.dtype(dtype)])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_col2im_fused_activation_matches_oracle(dtype, activation):
    N, C, H, W, kh, kw, stride, padding, Hout, Wout = sizes(GEOMETRIES[0])
    rng = np.random.default_rng(1)
    cols = rng.standard_normal((C, kh, kw, N, H, W)).astype(dtype)
    bias = rng.standard_normal(C).astype(dtype)
    y = _cuda.col2im(
        cupy.asarray(cols),
        N,
        C,
        Hout,
        Wout,
        kh,
        kw,
        H,
        W,
        stride,
        padding,
        bias=cupy.asarray(bias),
        activation=activation,
        slope=0.2,
    )
    pre = col2im_oracle(cols, Hout, Wout, stride, padding, bias)
    expected = activation_oracle(pre, activation, 0.2)
    np.testing.assert_allclose(cupy.asnumpy(y), expected, **TOL[np.dtype(dtype)])


@pytest.mark.parametrize("dtype", DTYPES)
def test_col2im_accepts_the_gemm_output_as_2d(dtype):
    """cols may come straight from the GEMM as (Cout kh kw, N H W)."""
    N, C, H, W, kh, kw, stride, padding, Hout, Wout = sizes(GEOMETRIES[0])
    cols = np.random.default_rng(2).standard_normal((C, kh, kw, N, H, W)).astype(dtype)
    cols2d = cupy.asarray(cols.reshape(C * kh * kw, N * H * W))
    y = _cuda.col2im(cols2d, N, C, Hout, Wout, kh, kw, H, W, stride, padding)
    expected = col2im_oracle(cols, Hout, Wout, stride, padding)
    np.testing.assert_allclose(cupy.asnumpy(y), expected, **TOL[np.dtype(dtype)])


@pytest.mark.parametrize("dtype", DTYPES)
def test_col2im_all_ones_counts_overlaps(dtype):
    """Caffe's test: all-ones columns give bias + the number of taps on each output pixel.

    Kernel 5, stride 2, padding 2: an interior even row is reached by 3 taps, an odd row by 2.
    """
    N, C, H, W, k = 2, 3, 6, 7, 5
    Hout, Wout = 2 * H, 2 * W
    bias = np.array([0.5, -1.0, 2.0], dtype=dtype)
    y = _cuda.col2im(
        cupy.ones((C, k, k, N, H, W), dtype=dtype),
        N,
        C,
        Hout,
        Wout,
        k,
        k,
        H,
        W,
        (2, 2),
        (2, 2),
        bias=cupy.asarray(bias),
    )
    rows = np.where(np.arange(Hout) % 2 == 0, 3, 2)
    cols_count = np.where(np.arange(Wout) % 2 == 0, 3, 2)
    expected = bias.reshape(1, C, 1, 1) + np.multiply.outer(rows, cols_count)
    expected = np.broadcast_to(expected, (N, C, Hout, Wout))
    np.testing.assert_array_equal(cupy.asnumpy(y)[:, :, 1:-2, 1:-2], expected[:, :, 1:-2, 1:-2])


# --- im2col ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=GEOMETRY_IDS)
def test_im2col_matches_oracle(geometry, dtype):
    N, C, H, W, kh, kw, stride, padding, Hout, Wout = sizes(geometry)
    dy = np.random.default_rng(3).standard_normal((N, C, Hout, Wout)).astype(dtype)
    dcols = _cuda.im2col(cupy.asarray(dy), kh, kw, H, W, stride, padding)
    assert dcols.shape == (C, kh, kw, N, H, W) and dcols.dtype == dtype
    # pure copies: exact
    np.testing.assert_array_equal(
        cupy.asnumpy(dcols), im2col_oracle(dy, kh, kw, H, W, stride, padding)
    )


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=GEOMETRY_IDS)
def test_im2col_is_the_adjoint_of_col2im(geometry):
    """<col2im(a), b> = <a, im2col(b)>."""
    N, C, H, W, kh, kw, stride, padding, Hout, Wout = sizes(geometry)
    rng = np.random.default_rng(4)
    a = cupy.asarray(rng.standard_normal((C, kh, kw, N, H, W)))
    b = cupy.asarray(rng.standard_normal((N, C, Hout, Wout)))
    lhs = float(cupy.vdot(_cuda.col2im(a, N, C, Hout, Wout, kh, kw, H, W, stride, padding), b))
    rhs = float(cupy.vdot(a, _cuda.im2col(b, kh, kw, H, W, stride, padding)))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-12, atol=1e-12)


# --- Langevin -------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_noise", [True, False])
def test_langevin_step_matches_oracle(dtype, with_noise):
    rng = np.random.default_rng(5)
    z, grad, noise = (rng.standard_normal((16, 100)).astype(dtype) for _ in range(3))
    delta = 0.3
    z_gpu = cupy.asarray(z)
    out = _cuda.langevin_step_(
        z_gpu, cupy.asarray(grad), cupy.asarray(noise) if with_noise else None, delta
    )
    assert out is z_gpu  # in place
    expected = z + (delta**2 / 2) * (grad - z) + (delta * noise if with_noise else 0.0)
    np.testing.assert_allclose(cupy.asnumpy(z_gpu), expected, **TOL[np.dtype(dtype)])


# --- reproducibility ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_kernels_are_bitwise_repeatable(dtype):
    """No atomics, fixed summation order: two runs give the same bits."""
    rng = np.random.default_rng(6)
    N, C, H, W, k = 8, 16, 14, 14, 5
    Hout, Wout = 2 * H, 2 * W
    cols = cupy.asarray(rng.standard_normal((C, k, k, N, H, W)).astype(dtype))
    bias = cupy.asarray(rng.standard_normal(C).astype(dtype))
    dy = cupy.asarray(rng.standard_normal((N, C, Hout, Wout)).astype(dtype))
    z, grad, noise = (cupy.asarray(rng.standard_normal((N, 100)).astype(dtype)) for _ in range(3))

    def everything():
        z_run = z.copy()
        _cuda.langevin_step_(z_run, grad, noise, 0.3)
        outs = [
            _cuda.col2im(cols, N, C, Hout, Wout, k, k, H, W, (2, 2), (2, 2), bias=bias),
            _cuda.col2im(
                cols, N, C, Hout, Wout, k, k, H, W, (2, 2), (2, 2), bias=bias, activation="tanh"
            ),
            _cuda.im2col(dy, k, k, H, W, (2, 2), (2, 2)),
            z_run,
        ]
        return [cupy.asnumpy(o).tobytes() for o in outs]

    assert everything() == everything()


# --- the module itself ----------------------------------------------------------------------------


def test_available():
    assert _cuda.available()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", _cuda.KERNEL_NAMES)
def test_get_function_by_name_and_dtype(name, dtype):
    assert _cuda.get_function(name, dtype) is not None


def test_get_function_rejects_unknown_names_and_dtypes():
    with pytest.raises(ValueError, match="unknown kernel"):
        _cuda.get_function("conv", np.float32)
    with pytest.raises(ValueError, match="float16"):
        _cuda.get_function("col2im", np.float16)


# --- validation before launch ---------------------------------------------------------------------


def _good_col2im_args(dtype=np.float32):
    N, C, H, W, kh, kw, stride, padding, Hout, Wout = sizes(GEOMETRIES[0])
    cols = cupy.zeros((C, kh, kw, N, H, W), dtype=dtype)
    return cols, (N, C, Hout, Wout, kh, kw, H, W, stride, padding)


def test_col2im_validates_its_input():
    cols, args = _good_col2im_args()
    N, C, Hout, Wout, kh, kw, H, W, stride, padding = args
    _cuda.col2im(cols, *args)  # the good case runs
    with pytest.raises(ValueError, match="dtype"):
        _cuda.col2im(cols.astype(cupy.float16), *args)
    with pytest.raises(ValueError, match="cupy.ndarray"):
        _cuda.col2im(cupy.asnumpy(cols), *args)
    with pytest.raises(ValueError, match="C-contiguous"):
        noncontig = cupy.zeros((N, H, W, C, kh, kw), dtype=cols.dtype).transpose(3, 4, 5, 0, 1, 2)
        _cuda.col2im(noncontig, *args)
    with pytest.raises(ValueError, match="shape"):
        _cuda.col2im(cols[:, :, :, :, :-1].copy(), *args)
    with pytest.raises(ValueError, match="bias"):
        _cuda.col2im(cols, *args, bias=cupy.zeros(C + 1, dtype=cols.dtype))
    with pytest.raises(ValueError, match="float32"):  # bias of another dtype than cols
        _cuda.col2im(cols, *args, bias=cupy.zeros(C, dtype=cupy.float64))
    with pytest.raises(ValueError, match="activation"):
        _cuda.col2im(cols, *args, activation="sigmoid")
    with pytest.raises(ValueError, match="Hout"):  # output size breaks PyTorch's rule
        _cuda.col2im(cols, N, C, Hout + 5, Wout, kh, kw, H, W, stride, padding)
    with pytest.raises(ValueError, match="padding"):
        _cuda.col2im(cols, N, C, Hout, Wout, kh, kw, H, W, stride, (-1, 2))
    with pytest.raises(ValueError, match="stride"):
        _cuda.col2im(cols, N, C, Hout, Wout, kh, kw, H, W, (2, 2, 2), padding)


def test_im2col_validates_its_input():
    N, C, H, W, kh, kw, stride, padding, Hout, Wout = sizes(GEOMETRIES[0])
    dy = cupy.zeros((N, C, Hout, Wout), dtype=cupy.float64)
    _cuda.im2col(dy, kh, kw, H, W, stride, padding)
    with pytest.raises(ValueError, match="dtype"):
        _cuda.im2col(dy.astype(cupy.int32), kh, kw, H, W, stride, padding)
    with pytest.raises(ValueError, match="C-contiguous"):
        _cuda.im2col(
            cupy.zeros((C, N, Hout, Wout)).transpose(1, 0, 2, 3), kh, kw, H, W, stride, padding
        )
    with pytest.raises(ValueError, match="4-D"):
        _cuda.im2col(dy[0], kh, kw, H, W, stride, padding)
    with pytest.raises(ValueError, match="Hout"):
        _cuda.im2col(dy, kh, kw, H + 1, W, stride, padding)


def test_langevin_step_validates_its_input():
    z = cupy.zeros((4, 10), dtype=cupy.float32)
    g = cupy.zeros_like(z)
    _cuda.langevin_step_(z, g, None, 0.1)
    with pytest.raises(ValueError, match="float32"):
        _cuda.langevin_step_(z, g.astype(cupy.float64), None, 0.1)
    with pytest.raises(ValueError, match="shape"):
        _cuda.langevin_step_(z, g[:, :5].copy(), None, 0.1)
    with pytest.raises(ValueError, match="shape"):
        _cuda.langevin_step_(z, g, cupy.zeros((4, 11), dtype=cupy.float32), 0.1)
    with pytest.raises(ValueError, match="C-contiguous"):
        _cuda.langevin_step_(z, cupy.zeros((10, 4), dtype=cupy.float32).T, None, 0.1)
    with pytest.raises(ValueError, match="delta"):
        _cuda.langevin_step_(z, g, None, -0.1)


# --- the GEMMs: cuBLAS called directly (abp_np.fast.cublas) ----------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("la", ["C", "F", "strided"])
@pytest.mark.parametrize("lb", ["C", "F", "strided"])
def test_cublas_matmul_matches_numpy_for_every_layout(dtype, la, lb):
    from abp_np.fast import cublas

    rng = np.random.default_rng(12)

    def layout(rows, cols, kind):
        host = rng.standard_normal((rows, cols)).astype(dtype)
        dev = cupy.asarray(host)
        if kind == "F":
            dev = cupy.asfortranarray(dev)
        elif kind == "strided":
            wide = cupy.zeros((rows, 2 * cols), dtype=dtype)
            wide[:, ::2] = dev
            dev = wide[:, ::2]
        return host, dev

    for m, k, n in ((33, 17, 9), (1, 40, 3), (64, 1, 5), (300, 200, 100)):
        a, da = layout(m, k, la)
        b, db = layout(k, n, lb)
        got = cublas.matmul(da, db)
        assert got.shape == (m, n) and got.dtype == dtype and got.flags.c_contiguous
        want = a.astype(np.float64) @ b.astype(np.float64)
        tol = (
            dict(rtol=1e-5, atol=1e-5 * k) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
        )
        np.testing.assert_allclose(got.get(), want, **tol)


def test_cublas_matmul_is_recorded_in_a_cuda_graph():
    """What CuPy's ``@`` cannot do: a GEMM inside a stream capture, replayed on new contents."""
    from abp_np.fast import cublas

    rng = np.random.default_rng(13)
    a = cupy.asarray(rng.standard_normal((20, 30)).astype(np.float32))
    b = cupy.asarray(rng.standard_normal((30, 10)).astype(np.float32))
    cublas.matmul(a, b)  # the handle is made outside the capture
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        stream.begin_capture()
        bf = b.T.copy().T  # an F-contiguous operand too (kept: the replay writes it)
        c = cublas.matmul(a, bf)
        graph = stream.end_capture()
    a[...] = cupy.asarray(rng.standard_normal((20, 30)).astype(np.float32))
    b[...] = cupy.asarray(rng.standard_normal((30, 10)).astype(np.float32))
    graph.launch()  # on the current stream, after the copies above (as LangevinGraph does)
    cupy.cuda.Device().synchronize()
    want = a.get().astype(np.float64) @ b.get().astype(np.float64)
    np.testing.assert_allclose(c.get(), want, rtol=1e-5, atol=1e-4)


# --- batch normalisation (kernels/batchnorm.cu) ----------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "shape", [(3, 4, 5, 6), (2, 3, 7), (5, 4), (8, 16, 32, 32), (1, 64, 112, 112)]
)
def test_batchnorm_kernels_match_the_oracles(dtype, shape):
    """Forward against the float64 oracle; backward against central differences of it (small
    float64 shapes) and the textbook sums; the bits the same on a second run."""
    from types import SimpleNamespace

    from oracles import batchnorm as batchnorm_oracle
    from oracles import batchnorm_grads, batchnorm_problem

    C = shape[1]
    x, gamma, beta, dy = batchnorm_problem(14, shape, dtype)
    eps = 1e-5
    args = [cupy.asarray(a) for a in (x, gamma, beta)]
    y, xc, inv_std, mu, var = _cuda.batchnorm_forward(*args, eps)
    M = x.size // C
    x64 = x.astype(np.float64).reshape(shape[0], C, -1)
    want_mu = x64.mean(axis=(0, 2))
    want_var = x64.var(axis=(0, 2))
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(mu.get(), want_mu, **tol)
    np.testing.assert_allclose(var.get(), want_var, **tol)
    if M <= 4096:  # the loop oracle
        np.testing.assert_allclose(y.get(), batchnorm_oracle(x, gamma, beta, eps)[0], **tol)
    xhat = (x64 - want_mu[:, None]) / np.sqrt(want_var[:, None] + eps)
    want_y = xhat * gamma.astype(np.float64)[:, None] + beta.astype(np.float64)[:, None]
    np.testing.assert_allclose(y.get().reshape(want_y.shape), want_y, **tol)
    cache = SimpleNamespace(xc=xc, inv_std=inv_std, gamma=args[1])
    dx, dgamma, dbeta = _cuda.batchnorm_backward(cupy.asarray(dy), cache)
    dy64 = dy.astype(np.float64).reshape(x64.shape)
    want_dbeta = dy64.sum(axis=(0, 2))
    want_dgamma = (dy64 * xhat).sum(axis=(0, 2))
    g = gamma.astype(np.float64)[:, None] / np.sqrt(want_var[:, None] + eps)
    want_dx = g * (dy64 - want_dbeta[:, None] / M - xhat * want_dgamma[:, None] / M)
    np.testing.assert_allclose(dbeta.get(), want_dbeta, **tol)
    np.testing.assert_allclose(dgamma.get(), want_dgamma, **tol)
    scale = np.abs(want_dx).max()
    np.testing.assert_allclose(
        dx.get().reshape(want_dx.shape), want_dx, rtol=tol["rtol"], atol=tol["rtol"] * scale
    )
    if dtype == np.float64 and x.size <= 500:  # and against central differences
        ndx, ndgamma, ndbeta = batchnorm_grads(x, gamma, beta, eps, dy)
        np.testing.assert_allclose(dx.get(), ndx, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(dgamma.get(), ndgamma, rtol=1e-5, atol=1e-6)
    again = _cuda.batchnorm_forward(*args, eps)
    for a, b in zip((y, xc, inv_std, mu, var), again, strict=True):
        assert a.get().tobytes() == b.get().tobytes()
    dx2, _, _ = _cuda.batchnorm_backward(cupy.asarray(dy), cache, need_param_grads=False)
    assert dx2.get().tobytes() == dx.get().tobytes()
