"""`abp train` on sounds and videos: a sound learned whole, a video learned as a dynamic texture."""

from __future__ import annotations

import importlib.util
import io
import json
import sys
import time

import numpy as np
import pytest
from abp_command import TINY, abp, ok

pytest.importorskip("PIL")


def _tone(path, seconds, rate):
    soundfile = pytest.importorskip("soundfile")
    t = np.arange(int(round(seconds * rate))) / rate
    soundfile.write(path, 0.5 * np.sin(2 * np.pi * 440 * t) * np.exp(-(t % 0.25) * 8), rate)
    return path


def test_a_sound_is_learned_whole_and_its_cut_printed(tmp_path):
    soundfile = pytest.importorskip("soundfile")
    clip = _tone(tmp_path / "clip.wav", 0.77, 11025)  # 8,489 samples
    out = tmp_path / "run"
    r = ok(abp("train", clip, "--out", out, *TINY, cwd=tmp_path))
    cfg = json.loads((out / "model.json").read_text())["config"]
    # the network makes multiples of 1,000 samples: 8,489 -> 8,000, the rest printed as cut
    assert cfg["length"] == 8000 and cfg["rate"] == 11025
    assert r.stderr.count("cut from 8,489 samples (0.77 s) to the first 8,000") == 1
    x, rate = soundfile.read(out / "reconstruction_0.wav")
    assert rate == 11025 and x.shape == (8000,)


def test_a_faster_sound_is_resampled_and_says_so(tmp_path):
    clip = _tone(tmp_path / "clip.wav", 0.5, 22050)  # 11,025 samples at 22,050 Hz
    r = ok(abp("train", clip, "--out", tmp_path / "run", *TINY, cwd=tmp_path))
    assert "resampled from 22,050 Hz to 11,025 Hz (--rate 22050 keeps it)" in r.stderr
    r = ok(abp("train", clip, "--out", tmp_path / "as", "--rate", "22050", *TINY, cwd=tmp_path))
    assert "resampled" not in r.stderr
    cfg = json.loads((tmp_path / "as" / "model.json").read_text())["config"]
    assert (cfg["rate"], cfg["length"]) == (22050, 11000)


def _moving_gif(path, frames=12, size=16):
    """A bright bar moving one pixel a frame, as an animated GIF."""
    from PIL import Image

    imgs = []
    for t in range(frames):
        a = np.full((size, size), 20, np.uint8)
        a[:, (2 * t) % size] = 230
        imgs.append(Image.fromarray(a))
    imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=100, loop=0)
    return path


def _gif_frames(path, fps=10):
    """Length of a GIF in frames of 1 / fps s (Pillow merges identical consecutive frames)."""
    from PIL import Image, ImageSequence

    with Image.open(path) as im:
        ms = sum(frame.info["duration"] for frame in ImageSequence.Iterator(im))
    return round(ms * fps / 1000)


def test_a_video_is_learned_as_a_dynamic_texture_and_synthesized_at_any_length(tmp_path):
    gif = _moving_gif(tmp_path / "bar.gif")
    out = tmp_path / "run"
    r = ok(abp("train", gif, "--out", out, *TINY, cwd=tmp_path))
    assert "learned as 12 x 1 x 16 x 16 (grey)" in r.stderr  # frames kept at their size
    assert "spectral radius of A" in r.stderr
    for name in ("dynamics.npz", "observed.gif", "reconstruction.gif", "synthesis.gif"):
        assert (out / name).is_file(), name
    assert _gif_frames(out / "synthesis.gif") == 12
    with np.load(out / "dynamics.npz") as dyn:
        assert dyn["A"].shape == (dyn["Z"].shape[1],) * 2 and dyn["Z"].shape[0] == 12
    r = ok(abp("synthesize", out, "--frames", "30", cwd=tmp_path))
    assert _gif_frames(tmp_path / "run_synthesis_30frames.gif") == 30
    mp4 = tmp_path / "run_synthesis_30frames.mp4"
    has_video_extra = all(importlib.util.find_spec(m) for m in ("imageio", "av"))
    assert mp4.is_file() == bool(has_video_extra)
    if has_video_extra:
        import imageio.v3 as iio

        assert iio.improps(mp4, plugin="pyav").shape[0] == 30
    r = abp("synthesize", out, "--scale", "2", cwd=tmp_path)
    assert r.returncode == 2 and "--scale" in r.stderr


def test_a_folder_of_frames_is_a_video_with_kind_video(tmp_path):
    from PIL import Image

    frames = tmp_path / "frames"
    frames.mkdir()
    for t in range(6):
        a = np.full((16, 16), 20, np.uint8)
        a[(3 * t) % 16] = 230
        Image.fromarray(a).save(frames / f"{t}.png")
    ok(abp("train", frames, "--out", tmp_path / "run", "--kind", "video", *TINY, cwd=tmp_path))
    assert (tmp_path / "run" / "synthesis.gif").is_file()
    r = abp("synthesize", tmp_path / "run", "--n", "3", "--frames", "4", cwd=tmp_path)
    assert r.returncode == 0 and _gif_frames(tmp_path / "run_synthesis_4frames.gif") == 4


def test_progress_prints_within_a_long_iteration(monkeypatch):
    """A line every HEARTBEAT seconds while an iteration runs, and one when it ends."""
    from abp_np.tools import cli

    monkeypatch.setattr(cli, "HEARTBEAT", 0.2)
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    with cli.Progress(total=2, per_iteration=1.0) as progress:
        time.sleep(1.3)  # the first iteration, still running
        progress(None, {"iteration": 1, "recon_error": 0.5})
    lines = err.getvalue().splitlines()
    running = [line for line in lines if line.startswith("iteration 1/2 running")]
    assert len(running) >= 3 and lines[-1].startswith("iteration 1/2  error 0.5000")
