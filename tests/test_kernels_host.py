"""The CUDA kernels of ``kernels/deconv.cu``, built as host C++ and run on the CPU.

``kernels/host_shim.h`` turns the kernels into plain C++ functions and runs a "launch" as a
loop over blocks and threads, so every kernel can be tested here without a GPU. The driver
``tests/kernel_shim_driver.cpp`` exports one ``extern "C"`` entry point per kernel and dtype;
g++ builds it once per session into a shared library that ctypes loads.

Expected values come from the oracles below: the index formulas of the layout contract,
written as plain loops. Because ``col2im`` sums its taps in a fixed order (i ascending, then
j ascending) and the oracle loops over taps in that same order, the host results must equal
the oracle bit for bit; only ``tanh`` (libm against NumPy) gets a tolerance.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from abp_np.fast import cuda as _cuda

from conftest import HOST_SUFFIX, host_compile_flags
from oracles import activation_oracle, col2im_oracle, im2col_oracle, out_size

# When a hypothesis test fails, the plugin imports libcst to suggest a patch, and that import
# warns (mypy_extensions.TypedDict); under filterwarnings=error this would hide the failure
# behind an INTERNALERROR.
pytestmark = pytest.mark.filterwarnings(
    "ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning"
)

DTYPES = (np.float32, np.float64)
SUFFIX = HOST_SUFFIX
# tanh: the host libm against NumPy's implementation
TANH_TOL = {
    np.dtype(np.float32): dict(rtol=1e-6, atol=1e-7),
    np.dtype(np.float64): dict(rtol=1e-14, atol=1e-15),
}
ACT_CODES = {"identity": 0, "tanh": 1, "relu": 2, "leaky_relu": 3}


@pytest.fixture(scope="session")
def lib(host_library):
    """deconv.cu built as host C++ (``host_library`` in tests/conftest.py)."""
    return host_library


def _ptr(a: np.ndarray | None) -> int | None:
    if a is None:
        return None
    assert a.flags.c_contiguous
    return a.ctypes.data


# --- host "launches", mirroring abp_np.fast.cuda ------------------------------------------------------


def run_col2im(
    lib, cols, Hout, Wout, stride, padding, bias=None, activation=None, slope=0.2, grid=(2, 3)
):
    """y (N, C, Hout, Wout) from cols (C, kh, kw, N, H, W); activation None -> col2im<T>."""
    C, kh, kw, N, H, W = cols.shape
    dt = cols.dtype
    y = np.full((N, C, Hout, Wout), np.nan, dtype=dt)  # NaN shows any element left unwritten
    geometry = (N, C, Hout, Wout, kh, kw, H, W, *stride, *padding)
    if activation is None:
        fn = getattr(lib, f"host_col2im_{SUFFIX[dt]}")
        fn(_ptr(cols), _ptr(bias), _ptr(y), *geometry, y.size, *grid)
    else:
        fn = getattr(lib, f"host_col2im_act_{SUFFIX[dt]}")
        fn(_ptr(cols), _ptr(bias), _ptr(y), *geometry, ACT_CODES[activation], slope, y.size, *grid)
    return y


def run_im2col(lib, dy, kh, kw, H, W, stride, padding, grid=(2, 3)):
    """dcols (C, kh, kw, N, H, W) from dy (N, C, Hout, Wout)."""
    N, C, Hout, Wout = dy.shape
    dcols = np.full((C, kh, kw, N, H, W), np.nan, dtype=dy.dtype)
    fn = getattr(lib, f"host_im2col_{SUFFIX[dy.dtype]}")
    fn(_ptr(dy), _ptr(dcols), N, C, Hout, Wout, kh, kw, H, W, *stride, *padding, dcols.size, *grid)
    return dcols


def run_langevin(lib, z, grad, noise, delta, grid=(2, 3)):
    """z + delta^2/2 (grad - z) + delta noise, in place on a copy of z."""
    z = z.copy()
    fn = getattr(lib, f"host_langevin_step_{SUFFIX[z.dtype]}")
    fn(_ptr(z), _ptr(grad), _ptr(noise), 0.5 * delta * delta, delta, z.size, *grid)
    return z


# --- oracles: the layout contract, as loops -------------------------------------------------------


# --- strategies -----------------------------------------------------------------------------------


@st.composite
def geometries(draw):
    """(N, C, H, W, kh, kw, stride, padding, Hout, Wout) with Hout, Wout >= 1."""
    N = draw(st.integers(1, 3))
    C = draw(st.integers(1, 3))
    sizes = []
    for _ in range(2):
        n_in = draw(st.integers(1, 5))
        k = draw(st.integers(1, 5))
        s = draw(st.integers(1, 3))
        op = draw(st.integers(0, s - 1))
        # largest padding that keeps the output non-empty
        p = draw(st.integers(0, ((n_in - 1) * s + k + op - 1) // 2))
        sizes.append((n_in, k, s, p, out_size(n_in, k, s, p, op)))
    (H, kh, sh, ph, Hout), (W, kw, sw, pw, Wout) = sizes
    return N, C, H, W, kh, kw, (sh, sw), (ph, pw), Hout, Wout


grids = st.tuples(st.integers(1, 4), st.integers(1, 8))
dtypes = st.sampled_from(DTYPES)
seeds = st.integers(0, 2**32 - 1)
fast = settings(max_examples=60, deadline=None)


# --- the build itself -----------------------------------------------------------------------------


@pytest.mark.parametrize("source", _cuda.SOURCE_FILES)
def test_cu_files_compile_unchanged_as_host_cpp(source):
    """deconv.cu and batchnorm.cu, untouched, are valid C++ once host_shim.h is force-included."""
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ is not on PATH")
    kdir = _cuda.kernel_dir()
    # (the driver build in the `host_library` fixture instantiates every template for both dtypes)
    cmd = [gxx, *host_compile_flags(kdir), "-fsyntax-only", "-x", "c++", str(kdir / source)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_every_kernel_is_exported_for_both_dtypes(lib):
    """Each __global__ kernel of the .cu files is known to _cuda and has host entry points."""
    source = "".join((_cuda.kernel_dir() / f).read_text() for f in _cuda.SOURCE_FILES)
    kernels = set(re.findall(r"__global__\s+void\s+(\w+)\s*\(", source))
    assert kernels == set(_cuda.KERNEL_NAMES)
    for name in kernels:
        for suffix in SUFFIX.values():
            assert hasattr(lib, f"host_{name}_{suffix}")


# --- col2im ---------------------------------------------------------------------------------------


@fast
@given(geometries(), dtypes, grids, seeds, st.booleans())
def test_col2im_matches_oracle(lib, geometry, dtype, grid, seed, with_bias):
    N, C, H, W, kh, kw, stride, padding, Hout, Wout = geometry
    rng = np.random.default_rng(seed)
    cols = rng.standard_normal((C, kh, kw, N, H, W)).astype(dtype)
    bias = rng.standard_normal(C).astype(dtype) if with_bias else None
    y = run_col2im(lib, cols, Hout, Wout, stride, padding, bias=bias, grid=grid)
    np.testing.assert_array_equal(y, col2im_oracle(cols, Hout, Wout, stride, padding, bias))


@fast
@given(geometries(), dtypes, grids, seeds, st.sampled_from(sorted(ACT_CODES)), st.booleans())
def test_col2im_act_matches_oracle(lib, geometry, dtype, grid, seed, activation, with_bias):
    N, C, H, W, kh, kw, stride, padding, Hout, Wout = geometry
    rng = np.random.default_rng(seed)
    cols = rng.standard_normal((C, kh, kw, N, H, W)).astype(dtype)
    bias = rng.standard_normal(C).astype(dtype) if with_bias else None
    slope = 0.2
    y = run_col2im(lib, cols, Hout, Wout, stride, padding, bias, activation, slope, grid)
    pre = col2im_oracle(cols, Hout, Wout, stride, padding, bias)
    expected = activation_oracle(pre, activation, slope)
    assert y.dtype == expected.dtype
    if activation == "tanh":
        np.testing.assert_allclose(y, expected, **TANH_TOL[np.dtype(dtype)])
    else:
        np.testing.assert_array_equal(y, expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_col2im_all_ones_counts_overlaps(lib, dtype):
    """Caffe's test: with all-ones columns, each output is bias + the number of taps on it.

    The paper's doubling layer (kernel 5, stride 2, padding 2, output_padding 1): away from
    the borders an even row is reached by taps i = 0, 2, 4 and an odd row by i = 1, 3, so an
    interior pixel counts 3 x 3, 3 x 2, 2 x 3 or 2 x 2 taps.
    """
    N, C, H, W, k = 2, 3, 6, 7, 5
    Hout, Wout = 2 * H, 2 * W
    cols = np.ones((C, k, k, N, H, W), dtype=dtype)
    bias = np.array([0.5, -1.0, 2.0], dtype=dtype)
    y = run_col2im(lib, cols, Hout, Wout, (2, 2), (2, 2), bias=bias)
    rows = np.where(np.arange(Hout) % 2 == 0, 3, 2)
    cols_count = np.where(np.arange(Wout) % 2 == 0, 3, 2)
    expected = np.broadcast_to(
        bias.reshape(1, C, 1, 1) + np.multiply.outer(rows, cols_count), y.shape
    )
    np.testing.assert_array_equal(y[:, :, 1:-2, 1:-2], expected[:, :, 1:-2, 1:-2])


@pytest.mark.parametrize("dtype", DTYPES)
def test_col2im_one_dimensional_sound_layer(lib, dtype):
    """The 1-D case is H = 1, kh = 1: the paper's sound layer, kernel 25, up-sampling 10."""
    N, C, L, k, s, p, op = 2, 3, 6, 25, 10, 8, 1
    Lout = out_size(L, k, s, p, op)
    assert Lout == 10 * L
    rng = np.random.default_rng(0)
    cols = rng.standard_normal((C, 1, k, N, 1, L)).astype(dtype)
    bias = rng.standard_normal(C).astype(dtype)
    y = run_col2im(lib, cols, 1, Lout, (1, s), (0, p), bias=bias, activation="tanh", slope=0.0)
    expected = np.tanh(col2im_oracle(cols, 1, Lout, (1, s), (0, p), bias))
    np.testing.assert_allclose(y, expected, **TANH_TOL[np.dtype(dtype)])


# --- im2col ---------------------------------------------------------------------------------------


@fast
@given(geometries(), dtypes, grids, seeds)
def test_im2col_matches_oracle(lib, geometry, dtype, grid, seed):
    N, C, H, W, kh, kw, stride, padding, Hout, Wout = geometry
    dy = np.random.default_rng(seed).standard_normal((N, C, Hout, Wout)).astype(dtype)
    dcols = run_im2col(lib, dy, kh, kw, H, W, stride, padding, grid)
    np.testing.assert_array_equal(dcols, im2col_oracle(dy, kh, kw, H, W, stride, padding))


@fast
@given(geometries(), seeds)
def test_im2col_is_the_adjoint_of_col2im(lib, geometry, seed):
    """<col2im(a), b> = <a, im2col(b)>: the forward's scatter and the backward's gather agree."""
    N, C, H, W, kh, kw, stride, padding, Hout, Wout = geometry
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((C, kh, kw, N, H, W))
    b = rng.standard_normal((N, C, Hout, Wout))
    lhs = np.vdot(run_col2im(lib, a, Hout, Wout, stride, padding), b)
    rhs = np.vdot(a, run_im2col(lib, b, kh, kw, H, W, stride, padding))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-12, atol=1e-12)


# --- Langevin -------------------------------------------------------------------------------------


@fast
@given(st.integers(1, 300), dtypes, grids, seeds, st.floats(0.0, 1.0), st.booleans())
def test_langevin_step_matches_oracle(lib, n, dtype, grid, seed, delta, with_noise):
    rng = np.random.default_rng(seed)
    z, grad, noise = (rng.standard_normal(n).astype(dtype) for _ in range(3))
    t = np.dtype(dtype).type
    half, d = t(0.5 * delta * delta), t(delta)
    out = run_langevin(lib, z, grad, noise if with_noise else None, delta, grid)
    # z + delta^2/2 (dlogp/dz - z) + delta u, in the dtype, in the kernel's order
    expected = z + half * (grad - z)
    if with_noise:
        expected = expected + d * noise
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_langevin_step_without_noise_is_gradient_ascent(lib, dtype):
    """At dz_data = z the prior and the data term cancel: noiseless steps stay put."""
    z = np.linspace(-2, 2, 17).astype(dtype).reshape(1, 17)
    out = run_langevin(lib, z, z.copy(), None, 0.3)
    np.testing.assert_array_equal(out, z)


# --- reproducibility ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_kernels_are_bitwise_repeatable_and_grid_independent(lib, dtype):
    """No atomics, fixed summation order: same bits on every run and for every grid size."""
    rng = np.random.default_rng(7)
    N, C, H, W, k, s, p, op = 3, 4, 5, 6, 5, 2, 2, 1
    Hout, Wout = out_size(H, k, s, p, op), out_size(W, k, s, p, op)
    cols = rng.standard_normal((C, k, k, N, H, W)).astype(dtype)
    bias = rng.standard_normal(C).astype(dtype)
    dy = rng.standard_normal((N, C, Hout, Wout)).astype(dtype)
    z, grad, noise = (rng.standard_normal((N, 49)).astype(dtype) for _ in range(3))

    def everything(grid):
        return [
            run_col2im(lib, cols, Hout, Wout, (s, s), (p, p), bias=bias, grid=grid),
            run_col2im(lib, cols, Hout, Wout, (s, s), (p, p), bias, "tanh", grid=grid),
            run_im2col(lib, dy, k, k, H, W, (s, s), (p, p), grid=grid),
            run_langevin(lib, z, grad, noise, 0.3, grid=grid),
        ]

    first = everything((3, 5))
    for grid in ((3, 5), (1, 1), (7, 64), (1000, 256)):
        for a, b in zip(first, everything(grid), strict=True):
            assert a.tobytes() == b.tobytes()


# --- the Python side, without a GPU ---------------------------------------------------------------


def test_cuda_module_reads_the_source_and_names_every_instance():
    source = _cuda.kernel_source()
    assert source == "\n".join(
        (_cuda.kernel_dir() / f).read_text() for f in ("deconv.cu", "batchnorm.cu")
    )
    assert _cuda.name_expressions() == [
        f"{name}<{t}>" for name in _cuda.KERNEL_NAMES for t in ("float", "double")
    ]
    # the activation codes match the macros of deconv.cu
    for name, code in _cuda.ACTIVATIONS.items():
        assert re.search(rf"#define ABP_ACT_{name.upper()} {code}\b", source)
    assert ACT_CODES == _cuda.ACTIVATIONS


def test_cuda_module_checks_names_and_dtypes_before_touching_cupy():
    assert isinstance(_cuda.available(), bool)
    with pytest.raises(ValueError, match="unknown kernel"):
        _cuda.get_function("conv", np.float32)
    with pytest.raises(ValueError, match="float16"):
        _cuda.get_function("col2im", np.float16)
