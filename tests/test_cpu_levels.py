"""The C kernels built for the CPU's vector instructions (abp_np/fast/cpu.py, ``_LEVELS``).

On an x86-64 CPU with AVX2 or AVX-512 the kernels are compiled with ``-march=x86-64-v3`` or
``-v4``. Such a build must compute the same bits as the baseline (SSE2) build: the same
operations in the same order, only more of them at once. The check runs the same work in two
fresh processes, one with ``ABP_CPU_LEVEL=baseline`` and one with the level this CPU gets,
and compares every array byte for byte.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest

from abp_np.fast import cpu as _cpu

from conftest import subprocess_env

TESTS = Path(__file__).resolve().parent

# The x86-64 psABI's micro-architecture levels (the flag names of Linux's /proc/cpuinfo).
V3 = {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}
V4 = {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}
SSE = {"sse", "sse2", "ssse3", "sse4_1", "sse4_2", "popcnt"}


@pytest.mark.parametrize(
    ("flags", "level"),
    [
        (set(), "baseline"),
        (SSE, "baseline"),
        (SSE | V3, "x86-64-v3"),
        (SSE | V3 | V4, "x86-64-v4"),
        (SSE | V3 - {"fma"}, "baseline"),  # one flag missing: not the level
        (SSE | V4, "baseline"),  # AVX-512 without AVX2 (no such CPU): v4 needs v3
        (SSE | V3 | V4 - {"avx512vl"}, "x86-64-v3"),
    ],
)
def test_the_best_level_is_the_highest_whose_flags_and_those_below_are_all_there(flags, level):
    assert _cpu.best_level(frozenset(flags)) == level


def _in_a_process(code: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    """``python -c code *args`` in a fresh process, importing abp_np as this test run does
    (and the helpers of tests/), ``ABP_CPU_LEVEL`` as given or unset."""
    environ = subprocess_env(TESTS, **env)
    if "ABP_CPU_LEVEL" not in env:
        environ.pop("ABP_CPU_LEVEL", None)
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env=environ,
        cwd=tempfile.gettempdir(),  # off the checkout, which `python -c` would put on sys.path
        capture_output=True,
        text=True,
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [("avx9", "is not a level; use one of auto, baseline"), ("x86-64-v5", "is not a level")],
)
def test_a_bad_abp_cpu_level_is_an_error_that_says_what_to_set(value, message):
    code = "from abp_np.fast import cpu; cpu.available()"
    out = _in_a_process(code, ABP_CPU_LEVEL=value)
    assert out.returncode != 0
    assert f"ValueError: ABP_CPU_LEVEL={value!r}" in out.stderr and message in out.stderr


@pytest.mark.parametrize(
    ("flags", "asked", "level"),
    [
        (SSE, "", "baseline"),
        (SSE | V3, "auto", "x86-64-v3"),
        (SSE | V3 | V4, "x86-64-v3", "x86-64-v3"),
        (SSE | V3 | V4, "baseline", "baseline"),
        (SSE, "x86-64-v3", None),
        (SSE | V3, "x86-64-v4", None),
    ],
)
def test_the_level_asked_for_is_built_unless_the_cpu_lacks_it(monkeypatch, flags, asked, level):
    monkeypatch.setattr(_cpu, "_cpu_flags", lambda: frozenset(flags))
    monkeypatch.setenv("ABP_CPU_LEVEL", asked)
    if level is None:
        with pytest.raises(ValueError, match="this CPU lacks its instructions"):
            _cpu._wanted_level()
    else:
        assert _cpu._wanted_level() == level


# Every kernel at work: batch norm (2-D and 1-D, both dtypes, sizes that are no multiple of a
# vector), ReLU, the 2-D Winograd route (m = 2 and 4), the 1-D one, the column forms, the SGD
# update, and whole ABP iterations on two threads.
_WORK = textwrap.dedent(
    """
    import sys
    import numpy as np
    from abp_np.backend import using
    from abp_np.fast import cpu
    from abp_np.layers import BatchNorm1d, BatchNorm2d, ReLU
    from conftest import tiny_abp_iteration  # tests/ is on PYTHONPATH

    assert cpu.enabled(), cpu.reason()
    out = {"level": np.array(cpu.level())}
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        for k, shape in enumerate([(5, 7, 9, 11), (64, 16, 32, 32), (3, 33, 5, 7)]):
            x = rng.standard_normal(shape).astype(dtype)
            dy = rng.standard_normal(shape).astype(dtype)
            bn = BatchNorm2d(shape[1], dtype=dtype)
            out[f"bn{k}{dtype.__name__}"] = bn.forward(x)
            out[f"dbn{k}{dtype.__name__}"] = bn.backward(dy, True)
            out[f"gbn{k}{dtype.__name__}"] = np.concatenate([g.ravel() for g in bn.grads.values()])
            relu = ReLU(dtype)
            out[f"relu{k}{dtype.__name__}"] = relu.forward(x)
            out[f"drelu{k}{dtype.__name__}"] = relu.backward(dy, False)
        x = rng.standard_normal((6, 13, 301)).astype(dtype)
        bn = BatchNorm1d(13, dtype=dtype)
        out[f"bn1d{dtype.__name__}"] = bn.forward(x)
        out[f"dbn1d{dtype.__name__}"] = bn.backward(x[::-1].copy(), True)

    for net in ("object", "texture", "sound"):
        for winograd in ("on", "off"):
            with using(threads=2, winograd=winograd):
                z, f, params, _ = tiny_abp_iteration(net)
            params = np.concatenate([p.ravel() for p in params])
            for i, a in enumerate((z, f, params)):
                out[f"{net}-{winograd}-{i}"] = a
    np.savez(sys.argv[1], **out)
    """
)


def test_every_level_computes_the_baseline_s_bits(tmp_path):
    best = _cpu.best_level()
    if best == "baseline":
        pytest.skip("this CPU has no level above the baseline (no AVX2)")
    runs = {}
    for level in ("baseline", best):
        path = tmp_path / f"{level}.npz"
        out = _in_a_process(_WORK, str(path), ABP_CPU_LEVEL=level)
        assert out.returncode == 0, out.stderr
        with np.load(path) as f:
            runs[level] = {k: f[k] for k in f.files}
    base, wide = runs["baseline"], runs[best]
    assert str(base.pop("level")) == "baseline" and str(wide.pop("level")) == best
    assert base.keys() == wide.keys() and len(base) > 40
    for key in base:
        assert base[key].dtype == wide[key].dtype and base[key].shape == wide[key].shape, key
        assert base[key].tobytes() == wide[key].tobytes(), key


def test_a_compiler_that_cannot_build_the_level_falls_back_to_the_baseline(tmp_path):
    if _cpu.best_level() == "baseline":
        pytest.skip("this CPU has no level above the baseline (no AVX2)")
    cc = tmp_path / "old-cc"
    cc.write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do case "$a" in -march=*) '
        "echo \"cc: error: bad value ('$a') for '-march=' switch\" >&2; exit 1;; esac; done\n"
        'exec cc "$@"\n'
    )
    cc.chmod(0o755)
    cache = tmp_path / "cache"
    code = (
        "from abp_np.fast import cpu; print(cpu.enabled()); print(cpu.level()); "
        "print(cpu.level_note())"
    )
    out = _in_a_process(code, CC=str(cc), ABP_CACHE_DIR=str(cache))
    assert out.returncode == 0, out.stderr
    enabled, level, note = out.stdout.splitlines()
    assert enabled == "True" and level == "baseline"
    assert f"the {_cpu.best_level()} build failed" in note and "-march=" in note
    assert len(list(cache.glob("abp_np_cpu-*.so"))) == 1  # the baseline's library only
