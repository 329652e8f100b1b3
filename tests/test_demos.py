"""Smoke tests of the demos: each script runs end to end in its tiniest setting (``--smoke``).

The scripts run as a user runs them (``python demos/NAME.py ...`` from the repository root, in a
subprocess) on the generated built-in data (``--builtin``), so the tests pass on a fresh machine
without the paper's data folder. They check that the promised files are written, that
results.json parses and records the data, the device, the time and the command, and that every
reported error is a number on the [0, 1] scale.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
DEMOS = ROOT / "demos"

pytestmark = pytest.mark.skipif(not DEMOS.is_dir(), reason="demos/ is not next to the tests")

# demo -> files it must write (besides results.json and results.md)
EXPECTED = {
    "texture": ["texture_original.png", "texture_synthesis.png", "texture_samples.png"],
    "sound": ["sound_original.wav", "sound_synthesis.wav", "sound_waveforms.png"],
    "objects": ["lion_tiger_grid.png", "faces_samples.png", "faces_interpolation_slerp.png"],
    "dynamic_texture": ["dynamic_original.gif", "dynamic_abp_synthesis.gif", "dynamic_frames.png"],
    "inpainting": ["inpainting_P5.png", "inpainting_P7.png"],
    "compressed_sensing": ["cs_m100.png", "cs_m30.png"],
    "reconstruction": ["reconstruction.png"],
    "error_curves": ["error_curves.png"],
}

UNIT_SCALE = ("inpainting", "compressed_sensing", "reconstruction", "error_curves")


def run_demo(name: str, out: Path, *extra: str) -> dict:
    cmd = [sys.executable, str(DEMOS / f"{name}.py"), "--smoke", "--out", str(out), *extra]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads((out / "results.json").read_text(encoding="utf-8"))


def table_numbers(report: dict) -> list[float]:
    return [v for t in report["tables"] for r in t["rows"] for v in r if isinstance(v, float)]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_demo_runs_and_reports(name, tmp_path):
    report = run_demo(name, tmp_path, "--builtin")
    for f in [*EXPECTED[name], "results.json", "results.md"]:
        assert (tmp_path / f).is_file(), f"{name} did not write {f}"
        assert (tmp_path / f).stat().st_size > 0
    assert report["demo"] == name
    assert report["mode"] == "smoke"
    assert report["device"] == "cpu"
    assert report["seconds"] > 0
    assert f"demos/{name}.py" in report["command"] and "--smoke" in report["command"]
    assert report["data"] and all(d["source"] == "built-in" for d in report["data"])
    assert report["tables"] and all(t["rows"] for t in report["tables"])
    md = (tmp_path / "results.md").read_text(encoding="utf-8")
    assert report["command"] in md and "built-in" in md
    if name in UNIT_SCALE:  # every number in their tables is an error on the [0, 1] scale
        errors = [v for v in table_numbers(report) if not math.isnan(v)]
        assert errors and all(0.0 <= v <= 1.0 for v in errors)


def test_user_data_folder_is_used(tmp_path):
    from PIL import Image

    folder = tmp_path / "mine"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    report = run_demo("objects", tmp_path / "out", "--data", str(folder), "--part", "lion_tiger")
    assert report["data"][0]["source"] == "user"
    assert report["data"][0]["path"] == str(folder)
    assert report["results"]["lion_tiger"]["images"] == 6


def test_bad_device_is_refused(tmp_path):
    cmd = [
        sys.executable,
        str(DEMOS / "texture.py"),
        "--smoke",
        "--device",
        "tpu",
        "--out",
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "invalid choice" in proc.stderr


def test_cuda_graph_needs_the_gpu(tmp_path):
    cmd = [sys.executable, str(DEMOS / "texture.py"), "--smoke", "--cuda-graph"]
    proc = subprocess.run(
        [*cmd, "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode != 0 and "--device gpu" in proc.stderr
