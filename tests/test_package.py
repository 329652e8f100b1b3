"""Packaging: the import stays light, and the installed package carries its CUDA sources."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

import abp_np

REPO = Path(__file__).resolve().parent.parent


def test_import_needs_numpy_only():
    code = (
        "import sys, abp_np, abp_np.layers, abp_np.generator\n"
        "heavy = [m for m in ('cupy', 'scipy', 'imageio', 'soundfile', 'PIL', 'torch') "
        "if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import abp_np pulled in: {out.stdout.strip()}"


def test_cuda_sources_are_found():
    from abp_np import _cuda

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
