"""Running the real ``abp`` command in a subprocess, for the command-line tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import subprocess_env

# small and fast: two iterations of a thin network with two Langevin steps
TINY = ["--iterations", "2", "--langevin-steps", "2", "--width", "0.0625"]


def abp(*args, cwd: Path, umask: int | None = None, timeout: float = 300, **env):
    """``abp ARGS...`` run in ``cwd``: the installed command, else ``python -m`` its module."""
    exe = shutil.which("abp")
    cmd = [exe] if exe else [sys.executable, "-m", "abp_np.tools.cli"]
    preexec = None
    if umask is not None:

        def preexec():
            os.umask(umask)

    return subprocess.run(
        [*cmd, *map(str, args)],
        cwd=cwd,
        env=subprocess_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=preexec,
    )


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """The result, after checking that the command succeeded (its stderr shown if not)."""
    assert result.returncode == 0, result.stderr
    return result


def last_json(result: subprocess.CompletedProcess) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


def log_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def grey_images(folder: Path, n: int, size: int, seed: int = 0) -> Path:
    """``n`` grey PNG files of ``size`` x ``size``: a bright disc at a random place on dark."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        cy, cx = rng.uniform(size * 0.3, size * 0.7, 2)
        r = rng.uniform(size * 0.15, size * 0.3)
        img = np.where((yy - cy) ** 2 + (xx - cx) ** 2 < r * r, 220, 30).astype(np.uint8)
        Image.fromarray(img).save(folder / f"{i:03d}.png")
    return folder
