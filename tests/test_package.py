"""Packaging: the import stays light, and the installed package carries its CUDA sources."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

import abp_np

from conftest import subprocess_env

REPO = Path(__file__).resolve().parent.parent


def test_import_needs_numpy_only(tmp_path):
    code = (
        "import sys, abp_np, abp_np.layers, abp_np.generator\n"
        "heavy = [m for m in ('cupy', 'scipy', 'imageio', 'soundfile', 'PIL', 'torch') "
        "if m in sys.modules]\n"
        "print(','.join(heavy))\n"
        "print(abp_np.__file__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env=subprocess_env(),
    )
    heavy, where = out.stdout.split("\n")[:2]
    assert heavy == "", f"import abp_np pulled in: {heavy}"
    if os.environ.get("ABP_EXPECT_INSTALLED") == "1":  # CI: the subprocesses see the wheel too
        assert Path(where).resolve().parent != REPO / "abp_np", where


def test_cupy_is_imported_only_when_needed(tmp_path):
    """With CuPy installed, a CPU run never imports it; a CuPy array or device='gpu' does."""
    fake = tmp_path / "cupy"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "import numpy, sys\n"
        "class ndarray:\n"
        "    pass\n"
        "def get_array_module(*arrays):\n"
        "    return sys.modules[__name__]\n"
    )
    code = (
        "import sys, numpy as np, abp_np\n"
        "from abp_np import backend\n"
        "from abp_np.generator import texture_generator\n"
        "g = texture_generator((4, 3), 2, 2)\n"
        "y = g.forward(np.zeros((2, 1, 2, 2), np.float32))\n"
        "g.backward(np.ones_like(y))\n"
        "backend.to_numpy(y)\n"
        "print('cupy' in sys.modules)\n"
        "import cupy\n"
        "print(backend.get_array_module(cupy.ndarray()) is cupy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=subprocess_env(tmp_path),
        cwd=tmp_path,
        check=True,
    )
    assert out.stdout.split() == ["False", "True"], out.stdout + out.stderr


def test_cuda_sources_are_found():
    from abp_np.fast import cuda as _cuda

    cu = _cuda.kernel_dir() / "deconv.cu"
    assert cu.is_file(), f"deconv.cu not found in {_cuda.kernel_dir()}"
    assert "__global__" in _cuda.kernel_source()


@pytest.mark.skipif(
    os.environ.get("ABP_EXPECT_INSTALLED") != "1",
    reason="only meaningful when CI runs the tests against the installed wheel",
)
def test_cuda_sources_ship_with_the_wheel():
    cu = resources.files("abp_np.kernels").joinpath("deconv.cu")
    assert cu.is_file(), "abp_np.kernels/deconv.cu is missing from the installed package"


@pytest.mark.skipif(
    os.environ.get("ABP_EXPECT_INSTALLED") != "1",
    reason="only meaningful when CI runs the tests against the installed wheel",
)
def test_tests_run_against_the_installed_wheel():
    where = Path(abp_np.__file__).resolve()
    assert where.parent != REPO / "abp_np", f"abp_np imported from the source tree: {where}"
    assert "site-packages" in where.parts, f"abp_np not imported from an installation: {where}"


@pytest.mark.parametrize("layout", ["source tree", "wheel"])
def test_a_copy_of_the_package_compiles_its_own_kernel_sources(tmp_path, layout):
    """A copy of abp_np imported from another folder (an older commit unpacked for a
    side-by-side benchmark) takes the kernel sources beside it, in the source tree's layout
    (kernels/ next to abp_np/) or the wheel's (abp_np/kernels/), and not those of the
    installed abp_np, whose C functions may take other arguments."""
    copy = tmp_path / "copy"
    package = Path(abp_np.__file__).resolve().parent
    shutil.copytree(package, copy / "abp_np", ignore=shutil.ignore_patterns("kernels"))
    kernels = copy / "kernels" if layout == "source tree" else copy / "abp_np" / "kernels"
    shutil.copytree(REPO / "kernels", kernels, dirs_exist_ok=True)
    code = (
        "from abp_np import _cpu, _cuda\n"
        "print(_cpu._source_paths()[0].parent)\n"
        "print(_cuda.kernel_dir())\n"
    )
    env = dict(os.environ, PYTHONPATH=str(copy))
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    cpu_dir, cuda_dir = (Path(line).resolve() for line in out.stdout.split())
    assert cpu_dir == kernels.resolve()
    assert cuda_dir == kernels.resolve()
