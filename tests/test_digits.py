"""Real handwritten digits: OpenCV's digits.png from Debian's opencv-doc.

The file is optional: the tests that read it are skipped, with the install command as the
reason, where it is missing. The error a user gets when it is missing, and the reading of a
gzip-compressed copy, are tested everywhere on a small sheet written here.
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from abp_np.io import datasets

INSTALLED = datasets.digits_path()
HINT = "sudo apt-get install opencv-doc"

needs_digits = pytest.mark.skipif(
    INSTALLED is None or importlib.util.find_spec("PIL") is None,
    reason=f"needs OpenCV's digits.png ({HINT}) and Pillow",
)


def _sheet(path: Path, gz: bool = False) -> np.ndarray:
    """A 1000 x 2000 sheet whose tile (r, c) is a flat level with one bright pixel, so that
    every tile has a known min-max rescaling: level -> -1, the bright pixel -> +1; the tiles
    of tile row 0 are left flat (constant, rescaled to 0)."""
    from PIL import Image

    sheet = np.zeros((1000, 2000), np.uint8)
    for r in range(50):
        for c in range(100):
            tile = sheet[20 * r : 20 * r + 20, 20 * c : 20 * c + 20]
            tile[...] = r  # the level gives the tile row, hence the class (r // 5)
            if r > 0:
                tile[c % 20, 7] = 200
    img = Image.fromarray(sheet)
    if gz:
        import io

        buf = io.BytesIO()
        img.save(buf, format="PNG")
        path.write_bytes(gzip.compress(buf.getvalue()))
    else:
        img.save(path)
    return sheet


# --------------------------------------------------------------------------------------------------
# on the installed file
# --------------------------------------------------------------------------------------------------


@needs_digits
def test_digits_shape_range_and_classes():
    images, labels = datasets.digits()
    assert images.shape == (5000, 1, 20, 20) and images.dtype == np.float32
    assert labels.shape == (5000,) and labels.dtype.kind == "i"
    np.testing.assert_array_equal(np.bincount(labels), np.full(10, 500))
    flat = images.reshape(5000, -1)
    assert np.all(flat.min(axis=1) == -1.0) and np.all(flat.max(axis=1) == 1.0)
    # a prefix mixes the classes (a fixed shuffle, not the file's class-by-class order)
    assert len(np.unique(labels[:50])) >= 8


@needs_digits
def test_digits_order_is_fixed_by_the_seed_and_n_takes_a_prefix():
    a, la = datasets.digits(40, seed=3)
    b, lb = datasets.digits(40, seed=3)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    c, lc = datasets.digits(10, seed=3)
    np.testing.assert_array_equal(c, a[:10])
    d, _ = datasets.digits(40, seed=4)
    assert not np.array_equal(a, d)


@needs_digits
def test_digits_resized():
    images, labels = datasets.digits(12, size=32)
    assert images.shape == (12, 1, 32, 32) and images.dtype == np.float32
    assert images.min() == -1.0 and images.max() == 1.0
    np.testing.assert_array_equal(labels, datasets.digits(12)[1])


@needs_digits
def test_digits_split_is_disjoint():
    split = datasets.digits_split(300, 100, seed=1)
    assert split.train.shape == (300, 1, 20, 20) and split.test.shape == (100, 1, 20, 20)
    assert split.train_labels.shape == (300,) and split.test_labels.shape == (100,)
    train = {t.tobytes() for t in split.train}
    assert not any(t.tobytes() in train for t in split.test)
    # the split is the start of digits()' order for the same seed
    images, labels = datasets.digits(400, seed=1)
    np.testing.assert_array_equal(split.train, images[:300])
    np.testing.assert_array_equal(split.test_labels, labels[300:])


# --------------------------------------------------------------------------------------------------
# anywhere: a sheet written here, and the missing file
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_digits_reads_a_sheet_tile_by_tile(tmp_path: Path, monkeypatch, gz: bool):
    pytest.importorskip("PIL")
    path = tmp_path / ("digits.png.gz" if gz else "digits.png")
    _sheet(path, gz=gz)
    monkeypatch.setenv("ABP_DIGITS", str(path))
    assert datasets.digits_path() == path
    images, labels = datasets.digits()
    order = np.random.default_rng(0).permutation(5000)  # the documented shuffle
    rows = order // 100
    np.testing.assert_array_equal(labels, rows // 5)
    for i in range(0, 5000, 97):
        r, c = divmod(int(order[i]), 100)
        expected = np.zeros((20, 20), np.float32)
        if r > 0:  # min-max: the level -> -1, the bright pixel -> +1
            expected[:] = -1.0
            expected[c % 20, 7] = 1.0
        np.testing.assert_array_equal(images[i, 0], expected)
    # path= reads a given file
    np.testing.assert_array_equal(datasets.digits(5, path=path)[0], images[:5])


def test_digits_missing_file_names_the_package(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("ABP_DIGITS", str(tmp_path / "nowhere.png"))
    assert datasets.digits_path() is None
    with pytest.raises(FileNotFoundError, match="opencv-doc") as err:
        datasets.digits(10)
    assert HINT in str(err.value) and "ABP_DIGITS" in str(err.value)
    with pytest.raises(FileNotFoundError, match="opencv-doc"):
        datasets.digits_split(10, 5)
    monkeypatch.delenv("ABP_DIGITS")
    monkeypatch.setattr(datasets, "DIGITS_LOCATIONS", (str(tmp_path / "absent.png"),))
    assert datasets.digits_path() is None
    with pytest.raises(FileNotFoundError, match=r"apt-get install opencv-doc"):
        datasets.digits()
    with pytest.raises(FileNotFoundError, match="no such file"):
        datasets.digits(path=tmp_path / "absent.png")


def test_digits_bad_arguments(tmp_path: Path):
    with pytest.raises(ValueError, match="n must be"):
        datasets.digits(0)
    with pytest.raises(ValueError, match="n must be"):
        datasets.digits(5001)
    with pytest.raises(ValueError, match="exceeds"):
        datasets.digits_split(4000, 1001)
    with pytest.raises(ValueError, match="n_test"):
        datasets.digits_split(10, 0)
    pytest.importorskip("PIL")
    from PIL import Image

    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(small)
    with pytest.raises(ValueError, match="not the 2000 x 1000 sheet"):
        datasets.digits(3, path=small)
