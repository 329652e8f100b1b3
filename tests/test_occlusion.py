"""Occlusion masks: shapes, seeds, realised fractions, block structure, squares, names."""

from __future__ import annotations

import numpy as np
import pytest

from abp_np.backend import to_numpy
from abp_np.tools.occlusion import (
    OCCLUSION_KINDS,
    observed_fraction,
    occlusion_mask,
    salt_pepper_mask,
    square_mask,
)


@pytest.mark.parametrize("fraction", [0.5, 0.7, 0.9])
def test_salt_pepper_shape_dtype_and_realised_fraction(fraction):
    mask = salt_pepper_mask(200, 64, fraction, rng=np.random.default_rng(1))
    assert mask.shape == (200, 1, 64, 64)
    assert mask.dtype == bool
    # 200 images x 22 x 22 cells = 96,800 independent cells: std of the occluded fraction
    # is below 0.002, and the 64 x 64 crop keeps each pixel's probability exact.
    occluded = 1.0 - mask.mean()
    assert abs(occluded - fraction) < 0.01
    # per image the fraction is near the target too (484 cells: std about 0.023)
    per_image = 1.0 - mask.reshape(200, -1).mean(axis=1)
    assert np.all(np.abs(per_image - fraction) < 0.12)


def test_salt_pepper_is_made_of_aligned_blocks():
    H, W, b = 31, 20, 3  # not multiples of 3: the last blocks are cropped
    mask = salt_pepper_mask(5, (H, W), 0.5, rng=7, block=b)[:, 0]  # (5, H, W)
    for i in range(5):
        for y in range(H):
            for x in range(W):
                # every pixel equals the top-left pixel of its block
                assert mask[i, y, x] == mask[i, (y // b) * b, (x // b) * b]
    # and the blocks are not all alike (the cell draws really vary)
    cells = mask[:, ::b, ::b]
    assert 0 < cells.mean() < 1


def test_salt_pepper_extremes():
    assert salt_pepper_mask(3, 9, 0.0, rng=0).all()
    assert not salt_pepper_mask(3, 9, 1.0, rng=0).any()


def test_masks_reproducible_from_seed_and_differ_across_seeds():
    a = occlusion_mask("P.7", 4, 32, rng=123)
    b = occlusion_mask("P.7", 4, 32, rng=np.random.default_rng(123))
    c = occlusion_mask("P.7", 4, 32, rng=124)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    s1 = occlusion_mask("M20", 6, 64, rng=5)
    s2 = occlusion_mask("M20", 6, 64, rng=5)
    np.testing.assert_array_equal(s1, s2)


@pytest.mark.parametrize("side", [20, 30, 40, 50])
def test_square_mask_exact_size_and_inside(side):
    H, W = 64, 70
    mask = square_mask(50, (H, W), side, rng=np.random.default_rng(side))
    assert mask.shape == (50, 1, H, W) and mask.dtype == bool
    tops = set()
    for i in range(50):
        hole = ~mask[i, 0]
        assert hole.sum() == side * side
        rows = np.nonzero(hole.any(axis=1))[0]
        cols = np.nonzero(hole.any(axis=0))[0]
        # one contiguous side x side block, inside the image
        assert rows[-1] - rows[0] + 1 == side and cols[-1] - cols[0] + 1 == side
        assert hole[rows[0] : rows[0] + side, cols[0] : cols[0] + side].all()
        assert 0 <= rows[0] and rows[-1] <= H - 1 and 0 <= cols[0] and cols[-1] <= W - 1
        tops.add(int(rows[0]))
    assert len(tops) > 5  # positions are random


def test_square_that_fills_the_image():
    mask = square_mask(2, 8, 8, rng=0)
    assert not mask.any()


@pytest.mark.parametrize("kind", OCCLUSION_KINDS)
def test_occlusion_mask_names(kind):
    mask = occlusion_mask(kind, 40, 64, rng=3)
    assert mask.shape == (40, 1, 64, 64)
    hole = 1.0 - float(np.mean(mask))  # counted here, not by observed_fraction
    if kind.startswith("P"):
        assert abs(hole - float(kind[1:])) < 0.02
    else:
        side = int(kind[1:])
        assert hole == pytest.approx(side * side / 64**2)


def test_occlusion_mask_lowercase_and_other_values():
    mask = occlusion_mask("m10", 3, 16, rng=0, reference=None)  # sizes in pixels
    assert (~mask).reshape(3, -1).sum(axis=1).tolist() == [100, 100, 100]
    mask = occlusion_mask("P0.25", 100, 30, rng=0)
    assert abs((1 - mask.mean()) - 0.25) < 0.02


@pytest.mark.parametrize("kind", ["", "P", "Q.5", "M", "M-20", "P1.5", "square", "P.5x"])
def test_unknown_kind_raises(kind):
    with pytest.raises(ValueError, match="occlusion"):
        occlusion_mask(kind, 2, 32, rng=0)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="fraction"):
        salt_pepper_mask(2, 32, 1.5, rng=0)
    with pytest.raises(ValueError, match="rng"):
        salt_pepper_mask(2, 32, 0.5, rng=None)
    with pytest.raises(ValueError, match="rng"):
        square_mask(2, 32, 10, rng=0.5)
    with pytest.raises(ValueError, match="does not fit"):
        square_mask(2, 32, 40, rng=0)
    with pytest.raises(ValueError, match="side"):
        square_mask(2, 32, 0, rng=0)
    with pytest.raises(ValueError, match="n "):
        square_mask(0, 32, 10, rng=0)
    with pytest.raises(ValueError, match="size"):
        salt_pepper_mask(2, (32, 32, 3), 0.5, rng=0)
    with pytest.raises(ValueError, match="block"):
        salt_pepper_mask(2, 32, 0.5, rng=0, block=0)
    with pytest.raises(ValueError, match="kind"):
        occlusion_mask(5, 2, 32, rng=0)


def test_mask_on_device_matches_cpu(device):
    on_device = occlusion_mask("P.5", 3, 16, rng=9, device=device)
    np.testing.assert_array_equal(to_numpy(on_device), occlusion_mask("P.5", 3, 16, rng=9))


def test_observed_fraction_counts_the_observed_pixels():
    mask = np.zeros((2, 1, 4, 5), dtype=bool)
    mask[0, 0, :2] = True  # 10 of the 40 pixels
    assert observed_fraction(mask) == 0.25
    assert isinstance(observed_fraction(mask), float)


@pytest.mark.parametrize(
    "size, kind, side",
    [
        (64, "M20", 20),
        (32, "M20", 10),
        (32, "M30", 15),
        (20, "M40", 12),
        (20, "M50", 16),
        (128, "M50", 100),
    ],
)
def test_square_names_scale_with_the_image(size, kind, side):
    # the paper's sizes are for 64-pixel images: side * size / 64, rounded (counted here)
    mask = occlusion_mask(kind, 5, size, rng=1)
    assert (~mask).reshape(5, -1).sum(axis=1).tolist() == [side * side] * 5


@pytest.mark.parametrize("size, block", [(64, 3), (32, 2), (20, 1), (128, 6)])
def test_pepper_blocks_scale_with_the_image(size, block):
    mask = occlusion_mask("P.5", 3, size, rng=2)[:, 0]  # (3, H, W)
    # every block x block cell is all observed or all hidden, and no larger cell is
    cells = mask[:, : size - size % block, : size - size % block].reshape(
        3, size // block, block, size // block, block
    )
    assert (cells.min(axis=(2, 4)) == cells.max(axis=(2, 4))).all()
    bigger = 2 * block  # cells of twice the side are not uniform: the blocks are no larger
    cut = mask[:, : size - size % bigger, : size - size % bigger].reshape(
        3, size // bigger, bigger, size // bigger, bigger
    )
    assert not (cut.min(axis=(2, 4)) == cut.max(axis=(2, 4))).all()
    assert 0.4 < 1 - mask.mean() < 0.6


def test_reference_must_be_a_side():
    with pytest.raises(ValueError, match="reference"):
        occlusion_mask("M20", 2, 32, rng=0, reference=0)
