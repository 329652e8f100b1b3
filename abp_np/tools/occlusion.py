"""Occlusion masks for learning from incomplete data (experiment 5 of the paper).

A mask has shape ``(N, 1, H, W)`` and is boolean: ``True`` (1) where a pixel is
**observed**, ``False`` (0) where it is occluded. The channel axis of length 1
broadcasts over the colour channels of images ``(N, C, H, W)``, so in ABP the masked
residual is simply ``mask * (Y - f(Z))``.

The paper's occlusion types, by name (:func:`occlusion_mask`):

====== ===================================================================
name   occlusion
====== ===================================================================
P.5    salt-and-pepper of 3 x 3 blocks covering about 50 % of the pixels
P.7    ... about 70 %
P.9    ... about 90 %
M20    one square of 20 x 20 pixels at a random position inside the image
M30    ... 30 x 30
M40    ... 40 x 40
M50    ... 50 x 50
====== ===================================================================

The sizes are the paper's, on its 64-pixel images, and are scaled to the image by default
(``reference=64``): on a 32-pixel image M20 is a 10-pixel square and P.5's blocks are 2 pixels
wide (``round(3 * 32 / 64)``, at least 1), so each name hides the same share of the image at
every size. ``reference=None`` takes the sizes as pixels.

Masks are always drawn on the CPU from an explicit :class:`numpy.random.Generator`
(or an integer seed), then moved to ``device``: a CPU run and a GPU run given the
same seed see the same masks.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..backend import to_device

__all__ = [
    "OCCLUSION_KINDS",
    "salt_pepper_mask",
    "square_mask",
    "occlusion_mask",
    "scaled_occlusion",
    "observed_fraction",
]

#: The occlusion types of the paper's experiment 5.
OCCLUSION_KINDS = ("P.5", "P.7", "P.9", "M20", "M30", "M40", "M50")


# --- argument checks ------------------------------------------------------------------------------


def _as_generator(rng: Any, owner: str) -> np.random.Generator:
    """``rng`` as a NumPy generator: a Generator is used as is, an int is a seed."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise ValueError(
        f"{owner}: rng must be a numpy.random.Generator or an int seed, got {type(rng).__name__}. "
        "Masks are drawn on the CPU so that CPU and GPU runs with one seed see the same masks; "
        "use device='gpu' to get them on the GPU."
    )


def _check_n(n: Any, owner: str) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{owner}: n (number of masks) must be a positive int, got {n!r}")
    return int(n)


def _size_hw(size: int | Sequence[int], owner: str) -> tuple[int, int]:
    """``size`` as ``(H, W)``; an int means a square image."""
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        hw = (int(size), int(size))
    elif isinstance(size, Sequence) and len(size) == 2:
        hw = (int(size[0]), int(size[1]))
    else:
        raise ValueError(f"{owner}: size must be an int or a pair (H, W), got {size!r}")
    if hw[0] < 1 or hw[1] < 1:
        raise ValueError(f"{owner}: size must be positive, got {size!r}")
    return hw


# --- the two kinds of occlusion -------------------------------------------------------------------


def salt_pepper_mask(
    n: int,
    size: int | Sequence[int],
    fraction: float,
    rng: np.random.Generator | int,
    block: int = 3,
    device: str = "cpu",
) -> Any:
    """Salt-and-pepper occlusion made of ``block x block`` squares (the paper's P.5, P.7, P.9).

    The image is cut into a grid of ``ceil(H / block) x ceil(W / block)`` cells of
    ``block x block`` pixels (the last row and column of cells are cropped at the image
    edge). Each cell of each image is occluded independently with probability
    ``fraction``::

        occluded[n, i, j] ~ Bernoulli(fraction)         # one draw per cell
        mask[n, 0, y, x] = not occluded[n, y // block, x // block]

    So every pixel is occluded with probability exactly ``fraction``: the expected
    occluded fraction is ``fraction`` and the realised one is close to it, within
    about ``sqrt(fraction (1 - fraction) / cells)`` for one image (for 64 x 64 images
    and 3 x 3 blocks, 484 cells: about 0.02).

    Parameters
    ----------
    n : int
        Number of masks (one per image).
    size : int or (H, W)
        Image size; an int means ``H = W = size``.
    fraction : float in [0, 1]
        Probability that a block is occluded: the expected fraction of occluded pixels.
    rng : numpy.random.Generator or int
        Explicit random generator, or a seed for a new one.
    block : int
        Side of the square blocks, 3 in the paper.
    device : {'cpu', 'gpu'}
        Where the returned mask lives.

    Returns
    -------
    mask : bool array (n, 1, H, W)
        True where observed.
    """
    owner = "salt_pepper_mask"
    n = _check_n(n, owner)
    H, W = _size_hw(size, owner)
    if not 0.0 <= float(fraction) <= 1.0:
        raise ValueError(
            f"{owner}: fraction must be in [0, 1] (e.g. 0.5 for P.5), got {fraction!r}"
        )
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 1:
        raise ValueError(f"{owner}: block must be a positive int, got {block!r}")
    gen = _as_generator(rng, owner)

    rows, cols = -(-H // block), -(-W // block)  # ceil division: cells covering the image
    occluded = gen.random((n, rows, cols)) < float(fraction)  # (n, rows, cols)
    # each cell becomes a block x block square of pixels; crop to (H, W)
    pixels = np.repeat(np.repeat(occluded, block, axis=1), block, axis=2)[:, :H, :W]
    mask = ~pixels[:, None, :, :]  # (n, 1, H, W)
    return to_device(np.ascontiguousarray(mask), device)


def square_mask(
    n: int,
    size: int | Sequence[int],
    side: int,
    rng: np.random.Generator | int,
    device: str = "cpu",
) -> Any:
    """One occluded ``side x side`` square per image, fully inside it (the paper's M20 ... M50).

    The top-left corner ``(top, left)`` is uniform over all positions that keep the
    square inside the image: ``top`` in ``{0, ..., H - side}``, ``left`` in
    ``{0, ..., W - side}``.

    Parameters
    ----------
    n : int
        Number of masks.
    size : int or (H, W)
        Image size.
    side : int
        Side of the square in pixels, at most ``min(H, W)``.
    rng : numpy.random.Generator or int
        Explicit random generator, or a seed for a new one.
    device : {'cpu', 'gpu'}
        Where the returned mask lives.

    Returns
    -------
    mask : bool array (n, 1, H, W)
        True where observed, i.e. everywhere but the square.
    """
    owner = "square_mask"
    n = _check_n(n, owner)
    H, W = _size_hw(size, owner)
    if isinstance(side, bool) or not isinstance(side, (int, np.integer)) or side < 1:
        raise ValueError(f"{owner}: side must be a positive int, got {side!r}")
    if side > min(H, W):
        raise ValueError(f"{owner}: a square of side {side} does not fit in a {H} x {W} image")
    gen = _as_generator(rng, owner)

    top = gen.integers(0, H - side + 1, size=n)  # (n,)
    left = gen.integers(0, W - side + 1, size=n)  # (n,)
    ys = np.arange(H)[None, :]  # (1, H)
    xs = np.arange(W)[None, :]  # (1, W)
    in_rows = (ys >= top[:, None]) & (ys < top[:, None] + side)  # (n, H)
    in_cols = (xs >= left[:, None]) & (xs < left[:, None] + side)  # (n, W)
    inside = in_rows[:, :, None] & in_cols[:, None, :]  # (n, H, W)
    mask = ~inside[:, None, :, :]  # (n, 1, H, W)
    return to_device(np.ascontiguousarray(mask), device)


# --- the paper's names ----------------------------------------------------------------------------

_PEPPER = re.compile(r"^P(0?\.\d+)$")  # P.5, P0.5, P.75
_SQUARE = re.compile(r"^M(\d+)$")  # M20 ... M50


def scaled_occlusion(kind: str, size: int | Sequence[int], reference: int | None = 64) -> dict:
    """What an occlusion name means on an image of ``size``: its kind and its sizes in pixels.

    Parameters
    ----------
    kind : str
        ``'P.5'`` ... or ``'M20'`` ... (see :func:`occlusion_mask`).
    size : int or (H, W)
    reference : int or None
        The image side the name's sizes refer to (64: the paper's images); ``None``: pixels.

    Returns
    -------
    dict
        ``{'kind': 'pepper', 'fraction': f, 'block': b}`` or ``{'kind': 'square', 'side': s}``,
        with ``b = max(1, round(3 * min(H, W) / reference))`` and
        ``s = max(1, round(side * min(H, W) / reference))``.
    """
    if not isinstance(kind, str):
        raise ValueError(f"occlusion_mask: kind must be a string like 'P.5' or 'M30', got {kind!r}")
    H, W = _size_hw(size, "occlusion_mask")
    if reference is not None and (
        isinstance(reference, bool) or not isinstance(reference, (int, np.integer)) or reference < 1
    ):
        raise ValueError(
            f"occlusion_mask: reference must be a positive image side (64: the paper's) or None "
            f"(sizes in pixels), got {reference!r}"
        )
    ratio = 1.0 if reference is None else min(H, W) / float(reference)
    name = kind.strip().upper()
    pepper = _PEPPER.match(name)
    if pepper:
        return {
            "kind": "pepper",
            "fraction": float(pepper.group(1)),
            "block": max(1, round(3 * ratio)),
        }
    square = _SQUARE.match(name)
    if square:
        return {"kind": "square", "side": max(1, round(int(square.group(1)) * ratio))}
    raise ValueError(
        f"occlusion_mask: unknown occlusion kind {kind!r}; expected one of "
        f"{', '.join(OCCLUSION_KINDS)} (or 'P.<fraction digits>' / 'M<side>')"
    )


def occlusion_mask(
    kind: str,
    n: int,
    size: int | Sequence[int],
    rng: np.random.Generator | int,
    device: str = "cpu",
    reference: int | None = 64,
) -> Any:
    """Masks of one of the paper's occlusion types, by name, scaled to the image.

    Parameters
    ----------
    kind : str
        ``'P.5'``, ``'P.7'``, ``'P.9'`` (salt-and-pepper of 3 x 3 blocks covering about
        that fraction of the pixels; any ``'P.<digits>'`` works, e.g. ``'P.75'``) or
        ``'M20'``, ``'M30'``, ``'M40'``, ``'M50'`` (one square of that side; any
        ``'M<int>'`` that fits). Case-insensitive.
    n, size, rng, device
        As in :func:`salt_pepper_mask` and :func:`square_mask`.
    reference : int or None
        The names' sizes are for images of this side (64, the paper's) and are scaled to
        ``size`` (:func:`scaled_occlusion`); ``None`` takes them as pixels.

    Returns
    -------
    mask : bool array (n, 1, H, W)
        True where observed.
    """
    spec = scaled_occlusion(kind, size, reference)
    if spec["kind"] == "pepper":
        return salt_pepper_mask(n, size, spec["fraction"], rng, block=spec["block"], device=device)
    return square_mask(n, size, spec["side"], rng, device=device)


def observed_fraction(mask: Any) -> float:
    """Fraction of pixels a mask marks as observed (``mask.mean()``), as a Python float."""
    return float(mask.mean())
