"""Real footage for the dynamic-texture demo, and what ``load_video`` gained for it.

The footage (OpenCV's ``tree.avi``, from the Debian package ``opencv-doc``) and a video decoder
(PyAV or imageio-ffmpeg) are optional: the tests that read it are skipped, with the install
command as the reason, where either is missing. The error a user gets when they are missing is
tested everywhere, by pointing the lookup at nothing. ``skip_repeats`` and ``box`` are tested on
folders of PNG frames whose pixel values the tests choose, so that they run on any machine.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from abp_np.io import data, datasets

ROOT = Path(__file__).resolve().parent.parent
CLIP = datasets.FOOTAGE["tree"]
INSTALLED = datasets.footage_path("tree")
DECODER = importlib.util.find_spec("av") or importlib.util.find_spec("imageio_ffmpeg")
READER = importlib.util.find_spec("imageio") and importlib.util.find_spec("PIL")

needs_footage = pytest.mark.skipif(
    INSTALLED is None or not DECODER or not READER,
    reason=f"needs {CLIP.file} ({CLIP.install}), imageio with Pillow and a video decoder "
    "(pip install 'abp_np[video]')",
)


def _png(path: Path, rgb: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(rgb).save(path)


def _frames_folder(folder: Path, levels: list[int], shape=(6, 8)) -> None:
    """One PNG per entry of ``levels``: a flat grey frame of that level (0-255)."""
    folder.mkdir(parents=True, exist_ok=True)
    for k, level in enumerate(levels):
        _png(folder / f"frame{k:03d}.png", np.full((*shape, 3), level, dtype=np.uint8))


# --------------------------------------------------------------------------------------------------
# load_video: skip_repeats and box
# --------------------------------------------------------------------------------------------------


def test_skip_repeats_drops_only_consecutive_copies(tmp_path: Path) -> None:
    # levels 0 0 100 100 100 200 0: the last 0 follows a 200, so it is not a repeat
    _frames_folder(tmp_path, [0, 0, 100, 100, 100, 200, 0])
    kept = data.load_video(tmp_path, size=None, skip_repeats=True)
    assert kept.shape == (4, 3, 6, 8)
    # one min-max over the clip: levels 0, 100, 200 -> -1, 0, 1
    np.testing.assert_allclose(kept[:, 0, 0, 0], [-1.0, 0.0, 1.0, -1.0], atol=1e-6)
    every = data.load_video(tmp_path, size=None)
    assert every.shape[0] == 7


def test_skip_repeats_comes_before_step_and_max_frames(tmp_path: Path) -> None:
    # distinct frames: 0, 40, 80, 120, 160 (each stored twice)
    _frames_folder(tmp_path, [0, 0, 40, 40, 80, 80, 120, 120, 160, 160])
    stepped = data.load_video(tmp_path, size=None, skip_repeats=True, step=2)
    # distinct frames 0, 2, 4 -> levels 0, 80, 160 -> -1, 0, 1
    np.testing.assert_allclose(stepped[:, 0, 0, 0], [-1.0, 0.0, 1.0], atol=1e-6)
    first = data.load_video(tmp_path, size=None, skip_repeats=True, max_frames=2)
    # levels 0, 40 -> -1, 1
    np.testing.assert_allclose(first[:, 0, 0, 0], [-1.0, 1.0], atol=1e-6)


def test_box_keeps_the_rectangle_before_resizing(tmp_path: Path) -> None:
    # each pixel holds its column index * 10 (red) and row index * 10 (green)
    h, w = 6, 8
    rows, cols = np.mgrid[0:h, 0:w]
    frame = np.stack([cols * 10, rows * 10, np.zeros_like(rows)], axis=-1).astype(np.uint8)
    tmp_path.mkdir(exist_ok=True)
    for k in range(2):
        _png(tmp_path / f"{k}.png", frame)
    out = data.load_video(tmp_path, size=None, box=(2, 1, 5, 4))  # columns 2-4, rows 1-3
    assert out.shape == (2, 3, 3, 3)
    # min-max over the clip: the kept values are 0 (blue) ... 40 (red at column 4)
    expected_red = np.array([20, 30, 40], np.float32)[None, :].repeat(3, axis=0)
    np.testing.assert_allclose(out[0, 0], 2 * expected_red / 40 - 1, atol=1e-6)
    expected_green = np.array([10, 20, 30], np.float32)[:, None].repeat(3, axis=1)
    np.testing.assert_allclose(out[0, 1], 2 * expected_green / 40 - 1, atol=1e-6)


@pytest.mark.parametrize("box", [(3, 0, 3, 2), (0, 2, 4, 1), (-1, 0, 2, 2), (0, 0, 2)])
def test_box_must_be_a_rectangle(tmp_path: Path, box) -> None:
    _frames_folder(tmp_path, [0, 50])
    with pytest.raises(ValueError, match="box must be"):
        data.load_video(tmp_path, size=None, box=box)


def test_box_outside_the_frames_is_named(tmp_path: Path) -> None:
    _frames_folder(tmp_path, [0, 50], shape=(6, 8))
    with pytest.raises(ValueError, match="8 x 6"):
        data.load_video(tmp_path, size=None, box=(0, 0, 9, 6))


# --------------------------------------------------------------------------------------------------
# footage: the clear errors, everywhere
# --------------------------------------------------------------------------------------------------


def test_missing_package_names_it_and_the_install_command(monkeypatch) -> None:
    missing = dataclasses.replace(CLIP, locations=("/nonexistent/tree.avi",))
    monkeypatch.setitem(datasets.FOOTAGE, "tree", missing)
    assert datasets.footage_path("tree") is None
    with pytest.raises(FileNotFoundError) as info:
        datasets.footage("tree", frames=4, size=8)
    message = str(info.value)
    assert "opencv-doc" in message and "sudo apt-get install opencv-doc" in message
    assert "/nonexistent/tree.avi" in message and "path=" in message


def test_missing_decoder_names_the_pip_command(monkeypatch, tmp_path: Path) -> None:
    fake = tmp_path / "tree.avi"
    fake.write_bytes(b"RIFF not really a video")
    monkeypatch.setattr(datasets, "_video_decoder", lambda: None)
    with pytest.raises(ImportError, match=r"pip install imageio av"):
        datasets.footage("tree", frames=4, size=8, path=fake)


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown footage 'sea'"):
        datasets.footage("sea")
    with pytest.raises(ValueError, match="unknown footage"):
        datasets.footage_path("sea")
    with pytest.raises(ValueError, match=f"between 1 and {CLIP.frames}"):
        datasets.footage("tree", frames=CLIP.frames + 1)
    with pytest.raises(ValueError, match="between 1 and"):
        datasets.footage("tree", frames=0)
    with pytest.raises(ValueError, match="size must be"):
        datasets.footage("tree", size=1)
    with pytest.raises(FileNotFoundError, match="no such video file"):
        datasets.footage("tree", path=tmp_path / "absent.avi")


# --------------------------------------------------------------------------------------------------
# footage: the real file, where it is installed
# --------------------------------------------------------------------------------------------------


@needs_footage
def test_footage_shape_range_dtype() -> None:
    video = datasets.footage("tree", size=24)
    assert video.shape == (CLIP.frames, 3, 24, 24)
    assert video.dtype == np.float32
    assert video.min() == -1.0 and abs(float(video.max()) - 1.0) < 1e-6
    # real motion: no two consecutive frames alike, but each close to the one before
    step = np.abs(np.diff(video, axis=0)).mean(axis=(1, 2, 3))
    assert step.min() > 1e-3 and step.max() < 0.5
    # leaves: more green than red or blue on average
    mean = video.mean(axis=(0, 2, 3))
    assert mean[1] > mean[0] and mean[1] > mean[2]


@needs_footage
def test_footage_frames_are_the_first_distinct_frames_of_the_file() -> None:
    # the oracle: decode the file with PyAV or imageio directly, keep the frames that differ from
    # the one before, cut the box, and compare the first few after the same resizing
    import imageio.v3 as iio
    from PIL import Image

    plugin = "pyav" if importlib.util.find_spec("av") else "FFMPEG"
    raw = [np.asarray(f) for f in iio.imiter(INSTALLED, plugin=plugin)]
    assert raw[0].shape[:2] == CLIP.source_size
    distinct = [raw[0]] + [b for a, b in zip(raw, raw[1:]) if not np.array_equal(a, b)]
    assert len(distinct) > CLIP.frames
    left, top, right, bottom = CLIP.box
    n = 5
    cut = [
        np.asarray(
            Image.fromarray(f[top:bottom, left:right]).resize((16, 16), Image.Resampling.LANCZOS),
            dtype=np.float32,
        ).transpose(2, 0, 1)
        for f in distinct[:n]
    ]
    cut = np.stack(cut)
    expected = 2 * (cut - cut.min()) / (cut.max() - cut.min()) - 1
    got = datasets.footage("tree", frames=n, size=16)
    np.testing.assert_allclose(got, expected, atol=1e-5)


# --------------------------------------------------------------------------------------------------
# the demo's choice of data
# --------------------------------------------------------------------------------------------------


def _demo_module():
    sys.path.insert(0, str(ROOT / "demos"))
    try:
        import dynamic_texture
    finally:
        sys.path.remove(str(ROOT / "demos"))
    return dynamic_texture


@pytest.mark.skipif(not (ROOT / "demos").is_dir(), reason="demos/ is not next to the tests")
def test_demo_falls_back_to_generated_data_and_says_why(monkeypatch, tmp_path: Path) -> None:
    demo_module = _demo_module()
    C = demo_module.C
    missing = dataclasses.replace(CLIP, locations=("/nonexistent/tree.avi",))
    monkeypatch.setitem(datasets.FOOTAGE, "tree", missing)
    args = C.parser("dynamic_texture", "").parse_args(["--smoke", "--out", str(tmp_path)])
    demo = C.Demo("dynamic_texture", "test", args)
    Y, fps = demo_module.load_frames(args, demo, 6, 8)
    assert Y.shape == (6, 3, 8, 8) and fps > 0
    assert [d["source"] for d in demo.data] == ["built-in"]
    assert any("apt-get install opencv-doc" in n for n in demo.notes)


@needs_footage
@pytest.mark.skipif(not (ROOT / "demos").is_dir(), reason="demos/ is not next to the tests")
def test_demo_uses_the_footage_when_installed(tmp_path: Path) -> None:
    demo_module = _demo_module()
    C = demo_module.C
    args = C.parser("dynamic_texture", "").parse_args(["--smoke", "--out", str(tmp_path)])
    demo = C.Demo("dynamic_texture", "test", args)
    Y, _ = demo_module.load_frames(args, demo, 100, 8)
    assert Y.shape == (CLIP.frames, 3, 8, 8)  # no more than the clip holds
    assert demo.data[0]["source"] == "package"
    assert demo.data[0]["path"] == str(INSTALLED)
