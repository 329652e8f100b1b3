"""The CUDA sources compile with nvcc: the build check that needs no GPU.

Every ``kernels/*.cu`` goes through ``nvcc -std=c++17 --ptx``. A template kernel that nobody
instantiates produces no code, so a second test instantiates every ``name<T>`` that
``abp_np.fast.cuda`` asks CuPy's ``RawModule`` for and checks that each becomes a PTX entry.
Skipped where nvcc is not on PATH.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from abp_np.fast import cuda as _cuda

KERNEL_DIR = _cuda.kernel_dir()
SOURCES = sorted(KERNEL_DIR.glob("*.cu"))


def _nvcc() -> str:
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not on PATH: cannot check the CUDA build")
    return nvcc


def _ptx(source: Path, out: Path) -> str:
    cmd = [_nvcc(), "-std=c++17", "--ptx", "-o", str(out), str(source)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return out.read_text()


def test_the_sources_are_found():
    assert "deconv.cu" in {p.name for p in SOURCES}


@pytest.mark.parametrize("source", SOURCES, ids=[p.name for p in SOURCES])
def test_cu_file_compiles_with_nvcc(source: Path, tmp_path: Path):
    _ptx(source, tmp_path / (source.stem + ".ptx"))


def test_every_name_expression_instantiates(tmp_path: Path):
    """Every ``name<T>`` that _cuda compiles through RawModule becomes a kernel in the PTX."""
    expressions = _cuda.name_expressions()
    assert len(expressions) == 2 * len(_cuda.KERNEL_NAMES)
    # Taking a kernel's address in host code instantiates it for the device.
    wrapper = tmp_path / "instantiate_all.cu"
    addresses = ",\n".join(f"    (void*)&{e}" for e in expressions)
    includes = "".join(f'#include "{(KERNEL_DIR / f).as_posix()}"\n' for f in _cuda.SOURCE_FILES)
    wrapper.write_text(f"{includes}\nvoid* abp_all_kernels[] = {{\n{addresses}\n}};\n")
    ptx = _ptx(wrapper, tmp_path / "instantiate_all.ptx")
    entries = re.findall(r"\.entry\s+(\w+)", ptx)
    assert len(entries) == len(expressions), entries
    for name in _cuda.KERNEL_NAMES:
        # mangled names hold the kernel name as <length><name>, e.g. _Z6col2imIfEv...
        for ctype_code in ("f", "d"):
            mangled = re.compile(rf"^_Z{len(name)}{name}I{ctype_code}E")
            assert any(mangled.match(e) for e in entries), (name, ctype_code, entries)
