"""Shared fixtures and helpers of the tests.

* ``xp`` (NumPy always, CuPy where a GPU is visible) with ``device``, and ``TOL``, the per-dtype
  tolerances for comparing two computations of the same quantity;
* ``host_library``: ``kernels/deconv.cu`` built once per session as host C++ (g++), so the
  CUDA kernels run on the CPU; ``fake_gpu``: the NumPy-backed stand-in for CuPy
  (``tests/fake_cupy.py``) that runs them, installed for one test;
* ``subprocess_env`` and ``release_data`` for tests that start Python or read the paper's data.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from abp_np import backend
from abp_np.backend import gpu_available
from abp_np.fast import cublas as _cublas
from abp_np.fast import cuda as _cuda

import fake_cupy

BACKENDS = ["numpy"] + (["cupy"] if gpu_available() else [])

# Per-dtype tolerances for comparing two computations of the same quantity.
TOL = {
    np.dtype(np.float32): {"rtol": 1e-4, "atol": 1e-5},
    np.dtype(np.float64): {"rtol": 1e-10, "atol": 1e-12},
}


@pytest.fixture(params=BACKENDS)
def xp(request):
    """The array module under test: numpy, and cupy when a GPU is present."""
    if request.param == "numpy":
        return np
    import cupy

    return cupy


@pytest.fixture
def device(xp):
    return "cpu" if xp is np else "gpu"


def reference_only():
    """A ``with`` block with every speed route off: the plain ``xp`` reference of
    :mod:`abp_np.functional` runs everywhere."""
    return backend.using(cuda=False, c=False, winograd="off", cpu_forms=False)


REPO = Path(__file__).resolve().parent.parent


def tiny_abp_iteration(net: str) -> tuple:
    """One seeded ABP iteration (3 Langevin steps, one learning step) of a small ``"object"``,
    ``"texture"`` or ``"sound"`` network, under the routes and threads in force:
    ``(z, f(z), params, stats)``, ``params`` copies of every layer's parameters after the step.
    Also imported by the subprocesses of ``tests/test_cpu_levels.py``."""
    from abp_np import ABP
    from abp_np.generator import object_generator, sound_generator, texture_generator

    rng = np.random.default_rng(3)
    if net == "object":
        g = object_generator(
            latent_dim=8, channels=(32, 16, 8, 8), activation="relu", batch_norm=True, rng=rng
        )
    elif net == "texture":
        g = texture_generator(channels=(16, 8, 8, 8), latent_size=3, rng=rng)
    else:
        g = sound_generator(channels=(32, 16), latent_length=8, rng=rng)
    z_shape = (6 if net == "object" else 2, *g.latent_shape)
    y_shape = g.forward(np.zeros(z_shape, np.float32)).shape
    y = np.tanh(np.random.default_rng(4).standard_normal(y_shape)).astype(np.float32)
    abp = ABP(g, langevin_steps=3, seed=5)
    z = abp.langevin(np.zeros(z_shape, np.float32), y)
    stats = abp.learn(z, y)
    params = [p.copy() for layer in g.layers for p in getattr(layer, "params", {}).values()]
    return z, g.forward(z), params, stats


def subprocess_env(*paths: str | Path, **changes: str) -> dict[str, str]:
    """Environment for a Python subprocess that imports abp_np as this test run does.

    Under CI (``ABP_EXPECT_INSTALLED=1``) that is the installed wheel: the checkout stays off
    ``PYTHONPATH``, and the caller runs the subprocess from a folder outside the checkout (e.g.
    ``tmp_path``), so that ``python -c`` and ``python -m`` do not put it on ``sys.path``
    either. Elsewhere the checkout is added, for runs without ``pip install``. ``paths`` come
    first (e.g. ``tests/``, to import test helpers).
    """
    env = dict(os.environ, **changes)
    extra = [str(p) for p in paths]
    if env.get("ABP_EXPECT_INSTALLED") != "1":
        extra.append(str(REPO))
    if env.get("PYTHONPATH"):
        extra.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(extra)
    return env


def release_data() -> Path | None:
    """The paper's release data folder, or None where it is absent."""
    env = os.environ.get("ABP_DATA")
    candidates = [Path(env)] if env else []
    here = Path(__file__).resolve().parent
    candidates += [p / "shared" / "data" / "abp-release" for p in (here.parent.parent, here.parent)]
    for c in candidates:
        if c.is_dir():
            return c
    return None


# --- the CUDA kernels on the CPU: their host build, and a fake CuPy that launches them ------------

HOST_DRIVER = Path(__file__).resolve().parent / "kernel_shim_driver.cpp"
HOST_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}
_HOST_SCALAR = {np.dtype(np.float32): ctypes.c_float, np.dtype(np.float64): ctypes.c_double}


def host_compile_flags(kdir: Path) -> list[str]:
    """g++ flags that build ``deconv.cu`` as host C++ (``kernels/host_shim.h`` force-included).

    ``-ffp-contract=off``: no fused multiply-add, so the host arithmetic is NumPy's, operation
    by operation.
    """
    return [
        "-std=c++17",
        "-O2",
        "-ffp-contract=off",
        "-Wall",
        "-include",
        str(kdir / "host_shim.h"),
    ]


@pytest.fixture(scope="session")
def host_library(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    """deconv.cu + batchnorm.cu + kernel_shim_driver.cpp, built once with g++, loaded with ctypes.

    One ``extern "C"`` entry point per kernel and dtype, e.g. ``host_col2im_f32``, taking the
    kernel's arguments followed by a grid (blocks, threads per block). Skips where g++ is
    missing.
    """
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ is not on PATH: cannot build kernels/deconv.cu as host C++")
    kdir = _cuda.kernel_dir()
    out = tmp_path_factory.mktemp("deconv_host") / "libdeconv_host.so"
    cmd = [gxx, *host_compile_flags(kdir), "-shared", "-fPIC", "-I", str(kdir), str(HOST_DRIVER)]
    proc = subprocess.run([*cmd, "-o", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, f"g++ failed:\n{' '.join(cmd)}\n{proc.stderr}"
    library = ctypes.CDLL(str(out))

    ptr, i32, i64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_longlong
    geometry = [i32] * 12  # N, C, Hout, Wout, kh, kw, H, W, sh, sw, ph, pw
    launch = [i32, i32]  # blocks, threads per block
    for dt, suffix in HOST_SUFFIX.items():
        scalar = _HOST_SCALAR[dt]
        getattr(library, f"host_col2im_{suffix}").argtypes = [ptr] * 3 + geometry + [i64] + launch
        getattr(library, f"host_col2im_act_{suffix}").argtypes = (
            [ptr] * 3 + geometry + [i32, scalar, i64] + launch
        )
        getattr(library, f"host_im2col_{suffix}").argtypes = [ptr] * 2 + geometry + [i64] + launch
        getattr(library, f"host_langevin_step_{suffix}").argtypes = (
            [ptr] * 3 + [scalar, scalar, i64] + launch
        )
        getattr(library, f"host_channel_partials_{suffix}").argtypes = (
            [ptr] * 5 + [i32] * 4 + [i64] + launch
        )
        getattr(library, f"host_channel_finish_{suffix}").argtypes = (
            [ptr] * 2 + [i32, i32, scalar, i64] + launch
        )
        getattr(library, f"host_bn_inv_std_{suffix}").argtypes = [ptr] * 4 + [scalar, i64] + launch
        getattr(library, f"host_bn_forward_apply_{suffix}").argtypes = (
            [ptr] * 6 + [i32, i32, i64] + launch
        )
        getattr(library, f"host_bn_backward_apply_{suffix}").argtypes = (
            [ptr] * 7 + [i32, i32, scalar, i64] + launch
        )
        getattr(library, f"host_bn_running_update_{suffix}").argtypes = (
            [ptr] * 4 + [scalar] * 3 + [i64] + launch
        )
        for name in _cuda.KERNEL_NAMES:
            getattr(library, f"host_{name}_{suffix}").restype = None
    return library


@pytest.fixture
def fake_gpu(monkeypatch, host_library):
    """The fake CuPy, installed for one test; every launch is recorded in ``.launches``.

    It becomes the CuPy that :mod:`abp_np.backend` hands out (and ``cupy`` in ``sys.modules``),
    its ``RawModule`` runs the kernels' host build, and :mod:`abp_np.fast.cublas` calls its
    ``FakeCublas`` (``.cublas``) in place of cuBLAS.
    """
    monkeypatch.setattr(fake_cupy, "HOST_LIBRARY", host_library)
    monkeypatch.setattr(fake_cupy, "launches", [])
    monkeypatch.setattr(backend, "_cupy", fake_cupy)
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy)
    monkeypatch.setattr(_cuda, "_module", None)  # compile afresh, through the fake RawModule
    # cuBLAS on host memory (``fake_cupy.cublas.gemms`` records the calls), fresh handles
    monkeypatch.setattr(fake_cupy, "cublas", fake_cupy.FakeCublas(), raising=False)
    monkeypatch.setattr(_cublas, "_library", fake_cupy.cublas)
    monkeypatch.setattr(_cublas, "_handles", {})
    assert backend.gpu_available() and _cuda.available()
    return fake_cupy


def pytest_collection_modifyitems(config, items):
    if gpu_available():
        return
    skip = pytest.mark.skip(reason="needs CuPy and a visible CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
