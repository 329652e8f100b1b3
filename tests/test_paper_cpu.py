"""The ``--paper-cpu`` protocol of the demos (``demos/_protocol.py``) on tiny data.

Each demo of the paper's quantitative claims runs its ``--paper-cpu`` protocol with ``--smoke``
sizes, as a user runs it (a subprocess from the repository root), on a folder of images made
here, so the tests need neither the digits of Debian's opencv-doc nor the paper's data; where
the digits are installed, one run on them checks the default data path too. The numbers of such
tiny runs mean nothing: the tests check that the protocol runs end to end, writes what it
promises, measures on the [0, 1] scale, and keeps its held-out images apart.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import subprocess_env

ROOT = Path(__file__).resolve().parent.parent
DEMOS = ROOT / "demos"

pytestmark = pytest.mark.skipif(not DEMOS.is_dir(), reason="demos/ is not next to the tests")
pytest.importorskip("PIL")

EXPECTED = {
    "reconstruction": ["reconstruction_paper_cpu.png", "crossover.png"],
    "inpainting": ["inpainting_paper_cpu_P5.png", "inpainting_paper_cpu_P7.png"],
    "compressed_sensing": ["cs_paper_cpu.png", "cs_paper_cpu_m20_shared.png"],
    "error_curves": ["error_curves_paper_cpu.png"],
    "step_size": ["step_size_energy.png"],
}


def _folder(path: Path, n: int, seed: int) -> Path:
    """n grayscale 20 x 20 images of a bright disc on a dark ground, at random places."""
    from PIL import Image

    path.mkdir()
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:20, :20]
    for i in range(n):
        cy, cx, r = rng.uniform(6, 14), rng.uniform(6, 14), rng.uniform(3, 6)
        disc = ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r).astype(np.uint8) * 200 + 20
        Image.fromarray(disc.astype(np.uint8)).save(path / f"{i}.png")
    return path


def run(name: str, out: Path, *extra: str) -> dict:
    cmd = [sys.executable, str(DEMOS / f"{name}.py"), "--paper-cpu", "--smoke", "--out", str(out)]
    proc = subprocess.run(
        [*cmd, *extra], cwd=ROOT, capture_output=True, text=True, timeout=600, env=subprocess_env()
    )
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads((out / "results.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_paper_cpu_protocol_runs_on_a_folder(name, tmp_path):
    images = _folder(tmp_path / "images", 40, 0)
    extra = ["--data", str(images), "--size", "20", "--channels", "1", "--test-fraction", "0.25"]
    if name == "error_curves":
        extra += ["--negative-data", str(_folder(tmp_path / "negatives", 12, 1))]
    out = tmp_path / "out"
    report = run(name, out, *extra)
    for f in [*EXPECTED[name], "results.json", "results.md"]:
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f"{name}: no {f}"
    assert report["mode"] == "paper-cpu (smoke)"
    assert report["settings"]["protocol"] == "--paper-cpu --smoke"
    assert any(d["source"] == "user" for d in report["data"])
    assert report["settings"]["held-out images"] == 10  # 25 % of 40
    errors = [
        v
        for t in report["tables"]
        for r in t["rows"]
        for c, v in zip(t["columns"], r, strict=True)
        if isinstance(v, float)
        and (c in ("train", "held-out", "negative") or c.endswith(("error", " train", " held-out")))
    ]
    assert errors and all(0.0 <= v <= 1.0 for v in errors if not math.isnan(v))


def test_paper_cpu_refuses_quick(tmp_path):
    cmd = [sys.executable, str(DEMOS / "reconstruction.py"), "--paper-cpu", "--quick"]
    proc = subprocess.run(
        [*cmd, "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode != 0 and "--paper-cpu" in proc.stderr and "--quick" in proc.stderr


def _digits_or_skip():
    from abp_np.io import datasets

    if datasets.digits_path() is None:
        pytest.skip("the digits come with Debian's opencv-doc: sudo apt-get install opencv-doc")


def test_paper_cpu_split_of_the_digits_keeps_held_out_images_fixed_and_apart():
    _digits_or_skip()
    sys.path.insert(0, str(DEMOS))
    try:
        import _protocol as P
    finally:
        sys.path.remove(str(DEMOS))

    class Args:
        data, seed, smoke, iterations = None, 0, False, None

    class Demo:
        def use_data(self, *a, **k):
            pass

    s = P.settings_of(Args())
    small = P.load(Args(), Demo(), s, n_train=100)
    large = P.load(Args(), Demo(), s, n_train=1000)
    assert small.train.shape == (100, 1, 20, 20) and large.train.shape == (1000, 1, 20, 20)
    assert small.test.shape == (300, 1, 20, 20) and small.validation.shape == (300, 1, 20, 20)
    # the same held-out and validation images whatever the training-set size
    np.testing.assert_array_equal(small.test, large.test)
    np.testing.assert_array_equal(small.validation, large.validation)
    np.testing.assert_array_equal(small.train, large.train[:100])
    # no image is in two sets (compared as rows of pixels)
    rows = {
        s.tobytes(): k
        for k, part in enumerate((large.train, large.test, large.validation))
        for s in part
    }
    assert len(rows) == 1600


def test_paper_cpu_on_the_digits(tmp_path):
    _digits_or_skip()
    report = run("reconstruction", tmp_path, "--dims", "3", "--sizes", "24")
    assert report["data"][0]["source"] == "package"
    assert "opencv-doc" in report["data"][0]["description"]


def test_tables_bold_the_lowest_error_of_each_group_of_competing_methods():
    sys.path.insert(0, str(DEMOS))
    try:
        import _common as C
    finally:
        sys.path.remove(str(DEMOS))
    columns = ["d", "ABP train", "PCA train", "ABP held-out", "PCA held-out", "mean |Z|"]
    table = C._markdown_table(columns, [[10, 0.05, 0.07, 0.09, 0.08, 4.0]])
    header, _, row = table.split("\n")
    assert header.count(" | ") == len(columns) - 1  # the '|' of a name is escaped
    cells = [c.strip() for c in row.strip("|").split(" | ")]
    assert cells == ["10", "**0.05**", "0.07", "0.09", "**0.08**", "4"]


def test_results_page_states_each_claim_from_the_runs(tmp_path):
    import shutil

    images = _folder(tmp_path / "images", 40, 0)
    runs = tmp_path / "runs"
    run(
        "reconstruction",
        runs / "reconstruction_paper_cpu",
        "--data",
        str(images),
        "--size",
        "20",
        "--channels",
        "1",
        "--sizes",
        "12",
        "24",
    )
    demos = tmp_path / "demos"  # a copy, so that the real page and pictures stay as they are
    shutil.copytree(DEMOS, demos, ignore=shutil.ignore_patterns("results", "RESULTS.md"))
    proc = subprocess.run(
        [sys.executable, str(demos / "_results_page.py"), str(runs)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=subprocess_env(),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    page = (demos / "RESULTS.md").read_text(encoding="utf-8")
    report = json.loads((runs / "reconstruction_paper_cpu" / "results.json").read_text())
    wins, n = report["results"]["abp_wins_held_out"], len(report["results"]["rows"])
    verdict = "Reproduced" if wins == n else "Not reproduced" if wins == 0 else "Partly reproduced"
    assert f"Held-out reconstruction (experiment 7): {verdict}." in page
    assert f"at {wins} of {n} values of d" in page
    assert "**" in page.split("## reconstruction_paper_cpu", 1)[1]  # winners in bold
    assert (demos / "results" / "reconstruction_paper_cpu" / "crossover.png").is_file()
    assert "## Not run yet" in page and "inpainting.py --paper-cpu" in page
