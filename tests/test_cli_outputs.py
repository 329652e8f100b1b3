"""What the `abp` commands write: names, no silent overwrite, where, and with which mode."""

from __future__ import annotations

import stat

import numpy as np
import pytest
from abp_command import TINY, abp, grey_images, last_json, ok

pytest.importorskip("PIL")


@pytest.fixture(scope="module")
def run32(tmp_path_factory):
    """A tiny run on 32-pixel grey images, and a folder of held-out images."""
    root = tmp_path_factory.mktemp("run32")
    data = grey_images(root / "train", 6, 32)
    held = grey_images(root / "held", 3, 32, seed=1)
    ok(abp("train", data, "--out", root / "faces", *TINY, cwd=root))
    return root, root / "faces", held


def test_occlusion_names_are_whole_scaled_and_never_overwritten(run32, tmp_path):
    _, run, held = run32
    steps = ["--langevin-steps", "2"]
    a = last_json(ok(abp("complete", run, held, "--occlusion", "P.7", *steps, cwd=tmp_path)))
    b = last_json(ok(abp("complete", run, held, "--occlusion", "P.5", *steps, cwd=tmp_path)))
    # on 32-pixel images the paper's 3-pixel blocks (at 64 px) are round(3 * 32 / 64) = 2 wide
    names = sorted(p.name for p in tmp_path.glob("*.png"))
    assert names == ["faces_complete_P.5_2px-blocks.png", "faces_complete_P.7_2px-blocks.png"]
    assert a["occlusion"] == "P.7" and b["occlusion"] == "P.5"
    # M30 is 30 px at 64 px: 15 x 15 on 32 px
    r = ok(abp("complete", run, held, "--occlusion", "M30", *steps, cwd=tmp_path))
    assert last_json(r)["occlusion_pixels"] == "15px" and "one 15 x 15 square" in r.stderr
    first = (tmp_path / "faces_complete_M30_15px.png").read_bytes()
    r = ok(abp("complete", run, held, "--occlusion", "M30", *steps, "--seed", "1", cwd=tmp_path))
    assert "exists: writing faces_complete_M30_15px_2 instead" in r.stderr
    assert (tmp_path / "faces_complete_M30_15px.png").read_bytes() == first  # kept
    assert (tmp_path / "faces_complete_M30_15px_2.png").is_file()
    r = ok(abp("complete", run, held, "--occlusion", "M30", *steps, "--overwrite", cwd=tmp_path))
    assert "replacing" in r.stderr and not (tmp_path / "faces_complete_M30_15px_3.png").exists()


def test_outputs_go_to_out_not_into_the_run(run32, tmp_path):
    _, run, held = run32
    before = sorted(p.name for p in run.iterdir())
    ok(abp("synthesize", run, "--n", "4", cwd=tmp_path))
    ok(abp("interpolate", run, "--from", "0", "--to", "2", "--n", "3", cwd=tmp_path))
    ok(
        abp(
            "reconstruct",
            run,
            held,
            "--langevin-steps",
            "2",
            "--out",
            tmp_path / "rec",
            cwd=tmp_path,
        )
    )
    assert sorted(p.name for p in run.iterdir()) == before
    assert (tmp_path / "faces_synthesized.png").is_file()
    assert (tmp_path / "faces_interpolate_linear_0-2.png").is_file()
    assert sorted(p.name for p in (tmp_path / "rec").iterdir()) == [
        "faces_reconstruct_input.png",
        "faces_reconstruct_output.png",
    ]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_files_follow_the_umask(tmp_path, umask, mode):
    out = tmp_path / "run"
    data = grey_images(tmp_path / "imgs", 4, 8)
    ok(abp("train", data, "--out", out, *TINY, cwd=tmp_path, umask=umask))
    ok(abp("synthesize", out, "--n", "2", cwd=tmp_path, umask=umask))
    files = [*out.iterdir(), tmp_path / "run_synthesized.png"]
    assert {p.suffix for p in files} >= {".png", ".npz", ".json", ".jsonl"}
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == mode, p.name


def test_sound_reconstruction_reports_examples_not_images(tmp_path):
    soundfile = pytest.importorskip("soundfile")
    rate = 11025
    t = np.arange(3000) / rate
    soundfile.write(tmp_path / "tone.wav", 0.5 * np.sin(2 * np.pi * 440 * t), rate)
    out = tmp_path / "snd"
    ok(abp("train", tmp_path / "tone.wav", "--out", out, *TINY, cwd=tmp_path))
    r = ok(abp("reconstruct", out, tmp_path / "tone.wav", "--langevin-steps", "2", cwd=tmp_path))
    result = last_json(r)
    assert result["kind"] == "sound" and result["examples"] == 1 and "images" not in result
