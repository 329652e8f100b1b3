"""Tests of abp_np.io.data (reading and writing) and abp_np.io.datasets (generated data).

Files with known content are written into ``tmp_path`` with Pillow, soundfile and the ``wave``
module; expected values are worked out here by hand, never by the code under test.
"""

from __future__ import annotations

import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PIL")
pytest.importorskip("scipy")
from PIL import Image  # noqa: E402

from abp_np.io import (
    data,
    datasets,  # noqa: E402
)

from conftest import release_data, subprocess_env  # noqa: E402

RELEASE = release_data() or Path("no-release-data")  # found by the tests' own rule


def _png(path: Path, array: np.ndarray, mode: str | None = None, fmt: str = "PNG") -> Path:
    """Write ``array`` (H, W[, C]) as an image file of format ``fmt`` whatever the extension."""
    img = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    img.save(path, format=fmt)
    return path


def _leftovers(folder: Path) -> list[str]:
    """Temporary files left in ``folder`` (they start with a dot)."""
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


# --------------------------------------------------------------------------------------------------
# load_images: the real-world mess
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def messy_folder(tmp_path: Path) -> Path:
    """A folder like the paper's release: odd names, odd formats, mixed sizes."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)
    _png(tmp_path / "b_png_named.jpg", rgb)  # PNG content, .jpg name
    rgba = rng.integers(0, 256, (40, 40, 4), dtype=np.uint8)
    _png(tmp_path / "c_rgba.png", rgba)
    _png(tmp_path / "d_grey.PNG", rng.integers(0, 256, (20, 60), dtype=np.uint8))
    _png(tmp_path / "e_16bit.png", rng.integers(0, 65536, (25, 25), dtype=np.uint16))
    _png(tmp_path / "f_palette.gif", rgb, mode="P", fmt="GIF")
    _png(tmp_path / "g_截图.jpg", rgb, fmt="JPEG")  # non-ASCII name
    Image.fromarray(rgb).save(tmp_path / "a_real.jpeg", format="JPEG")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub").mkdir()
    _png(tmp_path / "sub" / "ignored.png", rgb)
    return tmp_path


def test_load_images_messy_folder(messy_folder: Path) -> None:
    x, names = data.load_images(messy_folder, size=(16, 24))
    assert names == [
        "a_real.jpeg",
        "b_png_named.jpg",
        "c_rgba.png",
        "d_grey.PNG",
        "e_16bit.png",
        "f_palette.gif",
        "g_截图.jpg",
    ]
    assert x.shape == (7, 3, 16, 24)
    assert x.dtype == np.float32
    # each image on its own spans exactly [-1, 1]
    np.testing.assert_allclose(x.min(axis=(1, 2, 3)), -1.0, atol=1e-6)
    np.testing.assert_allclose(x.max(axis=(1, 2, 3)), 1.0, atol=1e-6)
    # grey images are replicated to three equal channels
    d, e = names.index("d_grey.PNG"), names.index("e_16bit.png")
    for k in (d, e):
        np.testing.assert_array_equal(x[k, 0], x[k, 1])
        np.testing.assert_array_equal(x[k, 0], x[k, 2])


def test_load_images_single_channel_and_limit(messy_folder: Path) -> None:
    x, names = data.load_images(messy_folder, size=8, channels=1, limit=3)
    assert x.shape == (3, 1, 8, 8)
    assert names == ["a_real.jpeg", "b_png_named.jpg", "c_rgba.png"]


def test_minmax_scaling_by_hand(tmp_path: Path) -> None:
    grey = np.array([[50, 100], [150, 200]], dtype=np.uint8)
    _png(tmp_path / "g.png", grey)
    x, _ = data.load_images(tmp_path / "g.png", size=None)
    # y = 2 (v - 50) / (200 - 50) - 1
    expected = np.array([[-1.0, -1.0 / 3.0], [1.0 / 3.0, 1.0]], dtype=np.float32)
    assert x.shape == (1, 3, 2, 2)
    for c in range(3):
        np.testing.assert_allclose(x[0, c], expected, atol=1e-6)


def test_minmax_over_all_channels(tmp_path: Path) -> None:
    # one min and one max for the whole image, not per channel
    rgb = np.array([[[10, 20, 30], [40, 50, 110]]], dtype=np.uint8)  # (1, 2, 3)
    _png(tmp_path / "c.png", rgb)
    x, _ = data.load_images(tmp_path / "c.png", size=None)
    # (H, W, C) -> (C, H, W); y = 2 (v - 10) / 100 - 1
    expected = (2.0 * (rgb.astype(np.float64) - 10.0) / 100.0 - 1.0).transpose(2, 0, 1)
    np.testing.assert_allclose(x[0], expected, atol=1e-6)


def test_luminance_for_one_channel(tmp_path: Path) -> None:
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [0, 0, 0]]], dtype=np.uint8)
    _png(tmp_path / "l.png", rgb)
    x, _ = data.load_images(tmp_path / "l.png", size=None, channels=1)
    lum = np.array([0.299, 0.587, 0.114, 0.0]) * 255.0
    expected = 2.0 * (lum - 0.0) / (lum.max() - 0.0) - 1.0
    assert x.shape == (1, 1, 1, 4)
    np.testing.assert_allclose(x[0, 0, 0], expected, atol=1e-5)


def test_constant_image_maps_to_zero(tmp_path: Path) -> None:
    _png(tmp_path / "flat.png", np.full((5, 7, 3), 123, dtype=np.uint8))
    x, _ = data.load_images(tmp_path, size=(4, 4))
    np.testing.assert_array_equal(x, np.zeros((1, 3, 4, 4), np.float32))


def test_rgba_composited_on_white(tmp_path: Path) -> None:
    # a transparent red pixel must turn white, an opaque black one stays black
    rgba = np.array([[[255, 0, 0, 0], [0, 0, 0, 255]]], dtype=np.uint8)
    _png(tmp_path / "alpha.jpg", rgba)  # PNG with alpha, named .jpg, as in the release data
    x, _ = data.load_images(tmp_path / "alpha.jpg", size=None)
    np.testing.assert_allclose(x[0, :, 0, 0], [1.0, 1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(x[0, :, 0, 1], [-1.0, -1.0, -1.0], atol=1e-6)


def test_16bit_keeps_precision(tmp_path: Path) -> None:
    v = np.array([[0, 1000], [30000, 60000]], dtype=np.uint16)
    _png(tmp_path / "deep.png", v)
    with Image.open(tmp_path / "deep.png") as im:
        assert im.mode.startswith("I")
    x, _ = data.load_images(tmp_path / "deep.png", size=None)
    expected = 2.0 * v / 60000.0 - 1.0  # 1000 / 60000 is lost in 8 bits
    np.testing.assert_allclose(x[0, 0], expected, atol=1e-6)


def test_crop_versus_resize(tmp_path: Path) -> None:
    # 20 high, 40 wide: red left quarter, green middle half, blue right quarter
    img = np.zeros((20, 40, 3), dtype=np.uint8)
    img[:, :10, 0] = 255
    img[:, 10:30, 1] = 255
    img[:, 30:, 2] = 255
    _png(tmp_path / "wide.png", img)
    crop, _ = data.load_images(tmp_path, size=(8, 8), fit="crop")
    # the centre square is the green half: G = +1, R = B = -1 everywhere
    np.testing.assert_allclose(crop[0, 1], 1.0, atol=1e-5)
    np.testing.assert_allclose(crop[0, [0, 2]], -1.0, atol=1e-5)
    squash, _ = data.load_images(tmp_path, size=(8, 8), fit="resize")
    assert squash[0, 0, :, 0].min() > 0.9  # red survives at the left edge
    assert squash[0, 2, :, -1].min() > 0.9  # blue at the right edge
    with pytest.raises(ValueError, match="fit"):
        data.load_images(tmp_path, fit="stretch")


def test_mixed_sizes_need_a_size(messy_folder: Path) -> None:
    with pytest.raises(ValueError, match="different sizes"):
        data.load_images(messy_folder, size=None)


def test_corrupt_file_raises_or_is_skipped(tmp_path: Path) -> None:
    _png(tmp_path / "good.png", np.arange(12, dtype=np.uint8).reshape(3, 4))
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"broken\.jpg.*skip_bad=True"):
        data.load_images(tmp_path, size=None)
    with pytest.warns(UserWarning, match=r"skipped 2 .*broken\.jpg, empty\.png"):
        x, names = data.load_images(tmp_path, size=None, skip_bad=True)
    assert names == ["good.png"]
    assert x.shape == (1, 3, 3, 4)


def test_nothing_to_load(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such"):
        data.load_images(tmp_path / "missing")
    with pytest.raises(ValueError, match=r"no image files.*\.png"):
        data.load_images(tmp_path)
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(ValueError, match="no image files"):
        data.load_images(tmp_path)
    (tmp_path / "bad.png").write_bytes(b"junk")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="could be read"):
        data.load_images(tmp_path, skip_bad=True)


def test_natural_sort_order(tmp_path: Path) -> None:
    for k in (10, 2, 1):
        _png(tmp_path / f"frame{k}.png", np.full((2, 2), k, dtype=np.uint8))
    _, names = data.load_images(tmp_path, size=None)
    assert names == ["frame1.png", "frame2.png", "frame10.png"]


# --------------------------------------------------------------------------------------------------
# sound
# --------------------------------------------------------------------------------------------------


def _write_stereo(path: Path, rate: int, seconds: float) -> np.ndarray:
    soundfile = pytest.importorskip("soundfile")
    t = np.arange(int(rate * seconds)) / rate
    left = 0.5 * np.sin(2 * np.pi * 440.0 * t)
    right = 0.3 * np.sin(2 * np.pi * 440.0 * t)
    soundfile.write(str(path), np.stack([left, right], axis=1), rate, subtype="PCM_16")
    return t


def test_load_audio_stereo_resampled(tmp_path: Path) -> None:
    _write_stereo(tmp_path / "st.wav", 22050, 1.0)
    x = data.load_audio(tmp_path / "st.wav", rate=11025)
    assert x.shape == (1, 1, 11025)
    assert x.dtype == np.float32
    assert np.abs(x).max() <= 1.0
    # the mean of the channels, 0.4 sin(2 pi 440 t), at the new rate (edges left out)
    t = np.arange(11025) / 11025.0
    expected = 0.4 * np.sin(2 * np.pi * 440.0 * t)
    np.testing.assert_allclose(x[0, 0, 200:-200], expected[200:-200], atol=2e-3)


def test_load_audio_length_offset_and_rate(tmp_path: Path) -> None:
    _write_stereo(tmp_path / "st.wav", 22050, 0.5)
    native = data.load_audio(tmp_path / "st.wav", rate=None)
    assert native.shape == (1, 1, 11025)
    padded = data.load_audio(tmp_path / "st.wav", rate=11025, length=8000)
    assert padded.shape == (1, 1, 8000)
    assert np.all(padded[0, 0, 5513:] == 0.0)  # 0.5 s at 11,025 Hz is 5512 or 5513 samples
    cut = data.load_audio(tmp_path / "st.wav", rate=11025, length=100, offset=50)
    full = data.load_audio(tmp_path / "st.wav", rate=11025)
    np.testing.assert_array_equal(cut[0, 0], full[0, 0, 50:150])
    # the paper's case: 60,000 samples at 22,050 Hz become 30,000 at 11,025 Hz
    (tmp_path / "clip").mkdir()
    _write_stereo(tmp_path / "clip" / "training.wav", 22050, 60000 / 22050)
    (tmp_path / "clip" / "training.png").write_bytes(b"a picture next to it")
    assert data.load_audio(tmp_path / "clip", rate=11025).shape == (1, 1, 30000)


def test_load_audio_without_soundfile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_stereo(tmp_path / "st.wav", 22050, 0.2)
    with_sf = data.load_audio(tmp_path / "st.wav", rate=None)
    monkeypatch.setitem(sys.modules, "soundfile", None)  # import soundfile now fails
    with_scipy = data.load_audio(tmp_path / "st.wav", rate=None)
    np.testing.assert_allclose(with_scipy, with_sf, atol=1e-6)


def test_load_audio_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        data.load_audio(tmp_path / "none.wav")
    (tmp_path / "bad.wav").write_bytes(b"RIFF nonsense")
    with pytest.raises(ValueError, match="bad.wav"):
        data.load_audio(tmp_path / "bad.wav")
    (tmp_path / "other.flac").write_bytes(b"")
    with pytest.raises(ValueError, match="2 sound files"):
        data.load_audio(tmp_path)


def test_save_wav_round_trip(tmp_path: Path) -> None:
    x = np.array([0.0, 0.5, -0.5, 1.0, -1.0, 1.7, -3.0, 0.25], dtype=np.float32)
    path = data.save_wav(tmp_path / "out" / "s.wav", x[None, None], rate=8000)
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 8000)
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    expected = np.round(np.clip(x, -1, 1) * 32767).astype(np.int16)
    np.testing.assert_array_equal(pcm, expected)
    back = data.load_audio(path, rate=None)
    np.testing.assert_allclose(back[0, 0], np.clip(x, -1, 1), atol=1e-4)
    assert _leftovers(path.parent) == []
    with pytest.raises(ValueError, match="shape"):
        data.save_wav(tmp_path / "s2.wav", np.zeros((2, 5)))


# --------------------------------------------------------------------------------------------------
# writing pictures and animations
# --------------------------------------------------------------------------------------------------


def test_to_unit() -> None:
    x = np.array([-2.0, -1.0, 0.0, 0.5, 1.0, 3.0])
    np.testing.assert_allclose(data.to_unit(x), [0.0, 0.0, 0.5, 0.75, 1.0, 1.0])
    assert data.to_unit(x).dtype == np.float32


def test_image_grid_layout() -> None:
    images = np.zeros((5, 3, 4, 6), dtype=np.float32)
    images[0] = -1.0
    images[1] = 1.0
    grid = data.image_grid(images, padding=2)
    # ceil(sqrt(5)) = 3 columns, 2 rows: (2 (4 + 2) + 2, 3 (6 + 2) + 2, 3)
    assert grid.shape == (14, 26, 3)
    assert grid.dtype == np.uint8
    assert np.all(grid[:2] == 255) and np.all(grid[:, :2] == 255)  # white border
    assert np.all(grid[2:6, 2:8] == 0)  # image 0, value -1
    assert np.all(grid[2:6, 10:16] == 255)  # image 1, value +1
    assert np.all(grid[2:6, 18:24] == 128)  # image 2, value 0 -> round(127.5)
    assert np.all(grid[8:12, 18:24] == 255)  # the empty sixth cell is padding
    assert data.image_grid(images, nrow=5, padding=0).shape == (4, 30, 3)
    assert data.image_grid(images[:, :1], nrow=1).shape == (5 * 6 + 2, 6 + 4, 1)


class _FakeDeviceArray:
    """Stands in for a CuPy array: not a NumPy array, has ``get()``."""

    def __init__(self, a: np.ndarray) -> None:
        self._a = a

    def get(self) -> np.ndarray:
        return self._a


def test_save_image_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    img = rng.uniform(-1, 1, (3, 9, 7)).astype(np.float32)
    img[0, 0, 0], img[1, 0, 1] = -1.0, 1.0  # span the range, so min-max changes nothing
    path = data.save_image(tmp_path / "a" / "b" / "img.png", _FakeDeviceArray(img))
    assert path.is_file()
    back, names = data.load_images(path, size=None)
    assert names == ["img.png"]
    np.testing.assert_allclose(back[0], img, atol=1.0 / 255 + 1e-6)
    assert _leftovers(path.parent) == []


def test_save_image_grid_file(tmp_path: Path) -> None:
    images = datasets.shapes(n=6, size=16)[0]
    path = data.save_image_grid(tmp_path / "grid.png", images, nrow=3)
    with Image.open(path) as im:
        assert im.size == (3 * 18 + 2, 2 * 18 + 2)
        assert im.mode == "RGB"
    with pytest.raises(ValueError, match="format"):
        data.save_image_grid(tmp_path / "grid.unknown", images)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png"]


def test_atomic_write_leaves_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "keep.bin"
    target.write_bytes(b"old")

    def failing(f) -> None:
        f.write(b"half of the new")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        data._atomic_write(target, failing)
    assert target.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


def test_gif_round_trip_and_load_video(tmp_path: Path) -> None:
    # four frames of pure colours, which a GIF palette stores exactly
    frames = -np.ones((4, 3, 8, 10), dtype=np.float32)
    frames[0] = 1.0  # white
    frames[1, 0] = 1.0  # red
    frames[2, 1] = 1.0  # green
    # frame 3 black
    path = data.save_gif(tmp_path / "anim" / "clip.gif", frames, fps=5)
    assert _leftovers(path.parent) == []
    with Image.open(path) as im:
        assert im.n_frames == 4
        assert im.info["duration"] == 200
    video = data.load_video(path, size=None)
    assert video.shape == (4, 3, 8, 10)
    np.testing.assert_allclose(video, frames, atol=1e-6)
    sub = data.load_video(path, size=(4, 4), step=2)
    np.testing.assert_allclose(sub, frames[::2, :, :4, :4], atol=1e-6)
    assert data.load_video(path, size=4, max_frames=3, channels=1).shape == (3, 1, 4, 4)


def test_load_video_from_frame_folder(tmp_path: Path) -> None:
    for k in (0, 1, 2, 10, 11):
        _png(tmp_path / f"f{k}.png", np.full((6, 6), 20 * k, dtype=np.uint8))
    video = data.load_video(tmp_path, size=None)
    assert video.shape == (5, 3, 6, 6)
    # one min-max over the clip: 0 -> -1, 220 -> +1, in natural order
    expected = 2.0 * np.array([0, 20, 40, 200, 220]) / 220.0 - 1.0
    np.testing.assert_allclose(video[:, 0, 0, 0], expected, atol=1e-6)


def test_load_video_file_needs_plugin(tmp_path: Path) -> None:
    import importlib.util

    fake = tmp_path / "movie.mp4"
    fake.write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    if importlib.util.find_spec("av") or importlib.util.find_spec("imageio_ffmpeg"):
        with pytest.raises(ValueError, match="movie.mp4"):
            data.load_video(fake)
    else:
        with pytest.raises(ImportError, match="pip install imageio-ffmpeg"):
            data.load_video(fake)
    with pytest.raises(FileNotFoundError):
        data.load_video(tmp_path / "none.gif")


def test_data_modules_import_without_their_extras(tmp_path) -> None:
    code = (
        "import sys, abp_np.io.data, abp_np.io.datasets\n"
        "heavy = [m for m in ('PIL', 'scipy', 'soundfile', 'imageio') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, env=subprocess_env())


# --------------------------------------------------------------------------------------------------
# generated data sets
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", datasets.TEXTURES)
def test_texture(name: str) -> None:
    x = datasets.texture(name, size=64, seed=3)
    assert x.shape == (1, 3, 64, 64) and x.dtype == np.float32
    assert x.min() == -1.0 and x.max() == 1.0
    np.testing.assert_array_equal(x, datasets.texture(name, size=64, seed=3))
    assert not np.array_equal(x, datasets.texture(name, size=64, seed=4))
    # visibly textured: neighbouring pixels alike, far ones not (a pattern, not noise or a flat)
    assert x.std() > 0.2
    near = np.mean(np.abs(x[..., 1:] - x[..., :-1]))
    assert near < 0.5 * np.mean(np.abs(x - x.mean()))


def test_unknown_names() -> None:
    with pytest.raises(ValueError, match="waves"):
        datasets.texture("marble")
    with pytest.raises(ValueError, match="rain"):
        datasets.sound("thunder")


@pytest.mark.parametrize("name", datasets.SOUNDS)
def test_sound(name: str) -> None:
    s = datasets.sound(name, length=60000, rate=11025, seed=0)
    assert s.shape == (1, 1, 60000) and s.dtype == np.float32
    assert np.abs(s).max() == pytest.approx(0.9, abs=1e-6)
    assert s.std() > 0.02  # not silence
    np.testing.assert_array_equal(s, datasets.sound(name, length=60000, rate=11025, seed=0))
    assert datasets.sound(name, length=1000, rate=22050).shape == (1, 1, 1000)


def test_shapes_factors_mean_what_they_say() -> None:
    images, factors = datasets.shapes(n=64, size=32, seed=0)
    assert images.shape == (64, 3, 32, 32) and factors.shape == (64, 2)
    assert images.min() >= -1.0 and images.max() <= 1.0
    assert np.all(np.abs(factors) <= 1.0)
    # the orange blob: red well above blue (the background is bluish)
    blob = (images[:, 0] - images[:, 2]) > 0.5
    cols = np.arange(32) + 0.5
    centre_x = (blob * cols).sum(axis=(1, 2)) / blob.sum(axis=(1, 2))
    area = blob.sum(axis=(1, 2))
    assert np.corrcoef(centre_x, factors[:, 0])[0, 1] > 0.95
    assert np.corrcoef(area, factors[:, 1])[0, 1] > 0.95


def test_shapes_split() -> None:
    split = datasets.shapes_split(n_train=10, n_test=4, n_negative=5, size=16, seed=2)
    assert split.train.shape == (10, 3, 16, 16)
    assert split.test.shape == (4, 3, 16, 16)
    assert split.negative.shape == (5, 3, 16, 16)
    assert split.train_factors.shape == (10, 2)
    assert not np.array_equal(split.train[:4], split.test)
    # a square and a disc with the same factors differ only near the corners of the square
    disc = datasets._shapes_from(split.negative_factors, 16, "disc")[0]
    assert not np.allclose(disc, split.negative)


def test_moving_texture() -> None:
    v = datasets.moving_texture(frames=12, size=24, seed=1)
    assert v.shape == (12, 3, 24, 24) and v.dtype == np.float32
    assert v.min() == -1.0 and v.max() == 1.0
    np.testing.assert_array_equal(v, datasets.moving_texture(frames=12, size=24, seed=1))
    step = np.mean(np.abs(v[1:] - v[:-1]))
    assert 0.0 < step < np.mean(np.abs(v - v.mean()))  # it moves, smoothly


def test_release_root_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ABP_DATA", str(tmp_path))
    assert datasets.release_root() == tmp_path.resolve()


# --------------------------------------------------------------------------------------------------
# the paper's release data, where present
# --------------------------------------------------------------------------------------------------

needs_release = pytest.mark.skipif(
    not (RELEASE / "Image" / "lion_tiger").is_dir(), reason="paper's release data not present"
)


@needs_release
def test_release_lion_tiger() -> None:
    x, names = data.load_images(RELEASE / "Image" / "lion_tiger", size=(64, 64), limit=4)
    assert x.shape == (4, 3, 64, 64)
    assert names[0] == "1.jpg"
    np.testing.assert_allclose(x.min(axis=(1, 2, 3)), -1.0, atol=1e-6)
    np.testing.assert_allclose(x.max(axis=(1, 2, 3)), 1.0, atol=1e-6)


@needs_release
def test_release_png_named_jpg_with_chinese_names() -> None:
    folder = RELEASE / "Image" / "dog"
    if not folder.is_dir():
        pytest.skip("dog folder not present")
    x, names = data.load_images(folder, size=32)
    assert x.shape[1:] == (3, 32, 32)
    assert any(not n.isascii() for n in names)


@needs_release
def test_release_sound_clip() -> None:
    folder = RELEASE / "Sound" / "training7"  # 60,000 samples at 22,050 Hz
    if not folder.is_dir():
        pytest.skip("sound clip not present")
    x = data.load_audio(folder / "training.wav", rate=11025)
    assert x.shape == (1, 1, 30000)
    native = data.load_audio(folder, rate=None, length=60000)
    assert native.shape == (1, 1, 60000)
    assert 0.0 < np.abs(native).max() <= 1.0
