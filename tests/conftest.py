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


REPO = Path(__file__).resolve().parent.parent


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


def pytest_collection_modifyitems(config, items):
    if gpu_available():
        return
    skip = pytest.mark.skip(reason="needs CuPy and a visible CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
