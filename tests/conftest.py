"""Shared fixtures: one ``xp`` fixture (NumPy always, CuPy where a GPU is visible) and tolerances."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from abp_np.backend import gpu_available

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


def pytest_collection_modifyitems(config, items):
    if gpu_available():
        return
    skip = pytest.mark.skip(reason="needs CuPy and a visible CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
