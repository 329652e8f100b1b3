"""Built-in data for quick starts, demos and tests: generated here, no network, no external folder.

Each generator is deterministic given its ``seed`` and returns ``float32`` arrays in ``[-1, 1]``
in the layouts the networks use, standing in for the paper's data where that is not at hand:

==================  =====================================  =================================
function            shape                                  stands in for
==================  =====================================  =================================
``texture``         (1, 3, size, size)                     a texture image
``sound``           (1, 1, length)                         a 60,000-sample sound clip
``shapes``          (N, 3, size, size) and (N, 2) factors  lion/tiger faces with d = 2
``shapes_split``    train / test / negative sets           held-out and other-category sets
``moving_texture``  (T, 3, size, size)                     a dynamic-texture video
==================  =====================================  =================================

Two functions read real data from files that Debian's package ``opencv-doc`` installs
(``apt-get install opencv-doc``); nothing is downloaded:

==================  =====================================  =================================
function            shape                                  what
==================  =====================================  =================================
``footage``         (T, 3, size, size)                     a tree's leaves in the wind (needs
                                                           a video decoder, ``pip install av``)
``digits``          (N, 1, size, size) and (N,) labels     5,000 handwritten digits, 0 to 9
``digits_split``    train / test sets and their labels     disjoint held-out digits
==================  =====================================  =================================

:func:`release_root` finds the data of the paper's code release when it is present; nothing
here needs it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "TEXTURES",
    "SOUNDS",
    "texture",
    "sound",
    "shapes",
    "shapes_split",
    "ShapesSplit",
    "moving_texture",
    "Footage",
    "FOOTAGE",
    "footage",
    "footage_path",
    "DIGITS_LOCATIONS",
    "digits",
    "digits_path",
    "digits_split",
    "DigitsSplit",
    "release_root",
]

TEXTURES = ("waves", "cells", "noise")
SOUNDS = ("rain", "bells", "chirps")


def _to_range(x: np.ndarray) -> np.ndarray:
    """Min-max rescale ``x`` to ``[-1, 1]`` as float32 (as the paper's preprocessing does)."""
    lo, hi = float(x.min()), float(x.max())
    if hi <= lo:
        return np.zeros(x.shape, np.float32)
    return (2.0 * (x - lo) / (hi - lo) - 1.0).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# textures
# --------------------------------------------------------------------------------------------------


def _waves(rng: np.random.Generator, size: int) -> np.ndarray:
    """Sum of oriented sinusoids with random periods, phases and colours, through a soft clip."""
    K = 7
    theta = rng.uniform(0.0, np.pi, K)
    period = rng.uniform(12.0, 40.0, K)  # pixels
    phase = rng.uniform(0.0, 2 * np.pi, K)
    colour = 1.0 + 0.4 * rng.normal(0.0, 1.0, (K, 3))  # mostly shared across channels
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    img = np.zeros((3, size, size))
    for k in range(K):
        s = np.sin(2 * np.pi * (x * np.cos(theta[k]) + y * np.sin(theta[k])) / period[k] + phase[k])
        img += colour[k][:, None, None] * s[None]
    return _tint(rng, np.tanh(0.5 * img))


def _tint(rng: np.random.Generator, v: np.ndarray) -> np.ndarray:
    """Give a pattern ``v (3, H, W)`` in ``[-1, 1]`` one overall colour drawn from ``rng``."""
    tint = rng.uniform(0.35, 1.0, 3)
    return tint[:, None, None] * (0.6 + 0.4 * v)


def _cells(rng: np.random.Generator, size: int) -> np.ndarray:
    """Worley (Voronoi) pattern on a torus: coloured cells with dark borders, tileable."""
    n = max(4, round((size / 28.0) ** 2))  # about one cell per 28 x 28 pixels
    pts = rng.uniform(0.0, size, (n, 2))
    colours = 0.5 + 0.35 * rng.uniform(-1.0, 1.0, (n, 3)) + 0.15 * rng.uniform(-1.0, 1.0, (1, 3))
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    f1 = np.full((size, size), np.inf)  # distance to the nearest point
    f2 = np.full((size, size), np.inf)  # distance to the second nearest
    nearest = np.zeros((size, size), np.int64)
    for i, (py, px) in enumerate(pts):
        dy = np.abs(y - py)
        dx = np.abs(x - px)
        d = np.hypot(np.minimum(dy, size - dy), np.minimum(dx, size - dx))  # wrap-around distance
        closer = d < f1
        f2 = np.where(closer, f1, np.minimum(f2, d))
        nearest = np.where(closer, i, nearest)
        f1 = np.where(closer, d, f1)
    border = np.clip((f2 - f1) / 3.0, 0.0, 1.0)  # 0 on a border, 1 inside a cell
    shade = 1.0 - 0.4 * f1 / (f1.max() + 1e-9)  # brighter at the cell centres
    # (n, 3)[nearest] -> (size, size, 3) -> (3, size, size)
    return colours[nearest].transpose(2, 0, 1) * (border * shade)[None]


def _noise(rng: np.random.Generator, size: int) -> np.ndarray:
    """Band-limited noise: white noise filtered to a ring of spatial frequencies, then coloured."""
    white = rng.normal(0.0, 1.0, (3, size, size))
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.fftfreq(size)[None, :]
    radius = np.hypot(fy, fx)  # cycles per pixel
    f0 = 1.0 / rng.uniform(10.0, 16.0)
    band = np.exp(-0.5 * ((radius - f0) / (0.35 * f0)) ** 2)
    # a preferred orientation makes it look like a material rather than static
    angle = np.arctan2(fy, fx)
    band = band * (1.0 + 0.8 * np.cos(2 * (angle - rng.uniform(0, np.pi))))
    smooth = np.real(np.fft.ifft2(np.fft.fft2(white) * band[None]))
    mixing = 0.5 * rng.normal(0.0, 1.0, (3, 3)) + np.ones((3, 3))  # mostly shared across channels
    # (3, 3) x (3, H, W) -> (3, H, W)
    img = np.tensordot(mixing, smooth, axes=1)
    return _tint(rng, np.tanh(img / img.std()))


def texture(name: str = "waves", size: int = 224, seed: int = 0) -> np.ndarray:
    """A generated colour texture image.

    Parameters
    ----------
    name : {"waves", "cells", "noise"}
        ``"waves"``: a sum of oriented sinusoids with random periods (12 to 40 pixels), phases
        and colours.
        ``"cells"``: a Worley/Voronoi pattern, coloured cells with dark borders, tileable.
        ``"noise"``: white noise band-pass filtered around one spatial frequency, with an
        orientation and a colour mixing.
        The scale is in pixels, so a bigger ``size`` shows more of the same texture.
    size : int
        Height and width (the paper's textures are 224 x 224).
    seed : int
        The same seed gives the same image.

    Returns
    -------
    image : ndarray, shape (1, 3, size, size), float32 in [-1, 1]
        Min-max rescaled to exactly ``[-1, 1]``.
    """
    makers = {"waves": _waves, "cells": _cells, "noise": _noise}
    if name not in makers:
        raise ValueError(f"unknown texture {name!r}; choose one of {', '.join(TEXTURES)}")
    if size < 2:
        raise ValueError(f"size must be >= 2, got {size}")
    rng = np.random.default_rng(seed)
    return _to_range(makers[name](rng, int(size)))[None]


# --------------------------------------------------------------------------------------------------
# sounds
# --------------------------------------------------------------------------------------------------


def _decaying_tone(t: np.ndarray, f0: float, tau: float, sweep: float, rate: int) -> np.ndarray:
    """``exp(-t / tau) sin(phase)``, the frequency going from ``f0`` as ``f0 exp(sweep t)``."""
    freq = np.minimum(f0 * np.exp(sweep * t), 0.45 * rate)  # stay below Nyquist
    phase = 2 * np.pi * np.cumsum(freq) / rate
    return np.exp(-t / tau) * np.sin(phase)


def _add(out: np.ndarray, start: int, event: np.ndarray) -> None:
    """Add ``event`` into ``out`` from sample ``start`` on, cut at the end of ``out``."""
    n = min(event.shape[0], out.shape[0] - start)
    if n > 0:
        out[start : start + n] += event[:n]


def _rain(rng: np.random.Generator, length: int, rate: int) -> np.ndarray:
    """Rain: a hiss of filtered noise plus many drops, each a short rising decaying tone."""
    spectrum = np.fft.rfft(rng.normal(0.0, 1.0, length))
    f = np.fft.rfftfreq(length, 1.0 / rate)
    hiss = np.fft.irfft(spectrum / np.sqrt(1.0 + (f / 1500.0) ** 2), length)
    out = 0.15 * hiss / hiss.std()
    n_drops = rng.poisson(40.0 * length / rate)  # about 40 drops a second
    t = np.arange(int(0.05 * rate)) / rate
    for _ in range(n_drops):
        f0 = rng.uniform(0.08, 0.3) * rate  # 900 to 3300 Hz at 11,025 Hz
        drop = _decaying_tone(t, f0, rng.uniform(0.003, 0.012), rng.uniform(2.0, 8.0), rate)
        _add(out, int(rng.integers(0, length)), rng.lognormal(-1.0, 0.5) * drop)
    return out


def _bells(rng: np.random.Generator, length: int, rate: int) -> np.ndarray:
    """Bells: strikes of inharmonic partials with long decays, pitches from a pentatonic scale."""
    out = np.zeros(length)
    scale = 220.0 * 2.0 ** (np.array([0, 2, 4, 7, 9, 12, 14]) / 12.0)
    ratios = np.array([1.0, 2.0, 2.4, 3.0, 4.2, 5.4])  # partials of a church-bell-like spectrum
    t = np.arange(int(1.5 * rate)) / rate
    start = 0
    while start < length:
        f0 = rng.choice(scale)
        strike = np.zeros(t.shape[0])
        for k, r in enumerate(ratios):
            if f0 * r < 0.45 * rate:
                strike += _decaying_tone(t, f0 * r, 0.9 / (1 + k), 0.0, rate) / (1 + k)
        _add(out, start, rng.uniform(0.5, 1.0) * strike)
        start += int(rng.uniform(0.25, 0.6) * rate)
    return out


def _chirps(rng: np.random.Generator, length: int, rate: int) -> np.ndarray:
    """Birdsong-like chirps: groups of quick falling sweeps over a faint hiss."""
    out = 0.02 * rng.normal(0.0, 1.0, length)
    t = np.arange(int(0.06 * rate)) / rate
    window = np.sin(np.pi * t / t[-1]) ** 2
    start = int(rng.uniform(0.0, 0.3) * rate)
    while start < length:
        f0 = rng.uniform(0.2, 0.35) * rate
        for _ in range(int(rng.integers(3, 7))):
            _add(out, start, window * _decaying_tone(t, f0, 1.0, -12.0, rate))
            start += int(rng.uniform(0.07, 0.1) * rate)
        start += int(rng.uniform(0.3, 0.8) * rate)
    return out


def sound(name: str = "rain", length: int = 60000, rate: int = 11025, seed: int = 0) -> np.ndarray:
    """A generated sound texture.

    Parameters
    ----------
    name : {"rain", "bells", "chirps"}
        ``"rain"``: filtered-noise hiss plus about 40 drops a second, each a short rising tone.
        ``"bells"``: strikes of inharmonic partials on a pentatonic scale, with long decays.
        ``"chirps"``: groups of quick falling sweeps, like birdsong.
    length : int
        Number of samples (the paper's clips: 60,000, about 5.4 s at 11,025 Hz).
    rate : int
        Sample rate in Hz; frequencies are in Hz, so a clip sounds the same at any rate.
    seed : int
        The same seed gives the same clip.

    Returns
    -------
    signal : ndarray, shape (1, 1, length), float32
        Peak amplitude 0.9 (inside ``[-1, 1]``, like a sound file as read).
    """
    makers = {"rain": _rain, "bells": _bells, "chirps": _chirps}
    if name not in makers:
        raise ValueError(f"unknown sound {name!r}; choose one of {', '.join(SOUNDS)}")
    if length < 1 or rate < 100:
        raise ValueError(f"need length >= 1 and rate >= 100, got {length} and {rate}")
    rng = np.random.default_rng(seed)
    x = makers[name](rng, int(length), int(rate))
    peak = float(np.abs(x).max())
    if peak > 0:
        x = 0.9 * x / peak
    # (L,) -> (1, 1, L)
    return x.astype(np.float32)[None, None, :]


# --------------------------------------------------------------------------------------------------
# objects with two latent factors
# --------------------------------------------------------------------------------------------------


def _render(factors: np.ndarray, size: int, kind: str) -> np.ndarray:
    """Draw one face-like blob per row of ``factors`` (position, size), anti-aliased.

    factors : (N, 2) in [-1, 1]; returns (N, 3, size, size) in [0, 1].
    """
    N = factors.shape[0]
    # pixel centres, (1, size, size)
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)[:, None] + 0.5
    # per image, (N, 1, 1)
    cx = (0.5 + 0.18 * factors[:, 0])[:, None, None] * size
    cy = np.full((N, 1, 1), 0.5 * size)
    r = (0.22 + 0.08 * factors[:, 1])[:, None, None] * size

    def inside(dist: np.ndarray, radius: np.ndarray) -> np.ndarray:
        """Coverage of a pixel by the shape, linear across one pixel of edge."""
        return np.clip(radius - dist + 0.5, 0.0, 1.0)

    if kind == "disc":
        body = inside(np.hypot(x - cx, y - cy), r)
    elif kind == "square":
        # half-width 0.886 r: the same area as the disc
        body = inside(np.maximum(np.abs(x - cx), np.abs(y - cy)), 0.886 * r)
    else:
        raise ValueError(f'kind must be "disc" or "square", got {kind!r}')
    eyes = np.maximum(
        inside(np.hypot(x - (cx - 0.38 * r), y - (cy - 0.2 * r)), 0.13 * r),
        inside(np.hypot(x - (cx + 0.38 * r), y - (cy - 0.2 * r)), 0.13 * r),
    )
    mouth = inside(np.hypot((x - cx) / 2.5, y - (cy + 0.35 * r)), 0.09 * r)
    # light from the upper left: brighter towards it, (N, size, size)
    light = 1.0 - 0.35 * np.clip(np.hypot(x - (cx - 0.3 * r), y - (cy - 0.3 * r)) / (1.6 * r), 0, 1)
    face_rgb = np.array([0.95, 0.6, 0.2])[None, :, None, None]  # (1, 3, 1, 1), orange
    back_rgb = (0.75 + 0.15 * y / size)[None] * np.array([0.8, 0.85, 0.95])[None, :, None, None]
    face = face_rgb * light[:, None] * (1.0 - 0.85 * np.maximum(eyes, mouth))[:, None]
    return back_rgb * (1.0 - body[:, None]) + face * body[:, None]


def shapes(
    n: int = 81, size: int = 64, seed: int = 0, kind: str = "disc"
) -> tuple[np.ndarray, np.ndarray]:
    """Face-like blobs that vary in two continuous factors: horizontal position and size.

    A stand-in for the paper's lion/tiger faces in the d = 2 experiment: a model with a 2-d latent
    vector should recover the two factors, and a 9 x 9 grid of ``(z1, z2)`` should sweep them.

    Parameters
    ----------
    n : int
        Number of images.
    size : int
        Height and width.
    seed : int
        The factors are drawn uniformly from ``[-1, 1]^2`` with this seed.
    kind : {"disc", "square"}
        The outline of the blob ("square" gives another category, see :func:`shapes_split`).

    Returns
    -------
    images : ndarray, shape (n, 3, size, size), float32 in [-1, 1]
        Pixel values ``2 v - 1`` with ``v`` the rendered colour in ``[0, 1]`` (no per-image
        rescaling, so each image is a smooth function of its factors).
    factors : ndarray, shape (n, 2), float32 in [-1, 1]
        Column 0: horizontal position of the centre (-1 left, +1 right, over 36 % of the width).
        Column 1: radius (-1: 14 % of the width, +1: 30 %).
    """
    factors = np.random.default_rng(seed).uniform(-1.0, 1.0, (int(n), 2))
    return _shapes_from(factors, size, kind)


def _shapes_from(factors: np.ndarray, size: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Render ``factors (N, 2)`` -> ``(images (N, 3, size, size) in [-1, 1], factors float32)``."""
    images = 2.0 * _render(factors, int(size), kind) - 1.0
    return images.astype(np.float32), factors.astype(np.float32)


@dataclass(frozen=True)
class ShapesSplit:
    """Train, held-out and negative sets from :func:`shapes_split`.

    Attributes
    ----------
    train, test : ndarray, shape (N, 3, size, size)
        Discs with factors drawn independently from the same distribution.
    negative : ndarray, shape (N, 3, size, size)
        Squares (another category) with the same factor distribution.
    train_factors, test_factors, negative_factors : ndarray, shape (N, 2)
        The factors of each set, as returned by :func:`shapes`.
    """

    train: np.ndarray
    test: np.ndarray
    negative: np.ndarray
    train_factors: np.ndarray
    test_factors: np.ndarray
    negative_factors: np.ndarray


def shapes_split(
    n_train: int = 64, n_test: int = 16, n_negative: int = 16, size: int = 64, seed: int = 0
) -> ShapesSplit:
    """Training, held-out and negative (other-category) sets for the train / test / negative errors.

    The training and held-out sets are discs (as :func:`shapes`) with independent factors; the
    negative set is squares. Reconstruction error on held-out images close to that on negative
    images signals over-fitting; all three alike signals under-fitting.

    Returns
    -------
    ShapesSplit
        ``.train``, ``.test``, ``.negative``: ndarrays ``(n, 3, size, size)`` in ``[-1, 1]``, and
        their ``*_factors`` ``(n, 2)``.
    """
    # three independent streams from one seed
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)]
    train, f_train = _shapes_from(streams[0].uniform(-1, 1, (n_train, 2)), size, "disc")
    test, f_test = _shapes_from(streams[1].uniform(-1, 1, (n_test, 2)), size, "disc")
    neg, f_neg = _shapes_from(streams[2].uniform(-1, 1, (n_negative, 2)), size, "square")
    return ShapesSplit(train, test, neg, f_train, f_test, f_neg)


# --------------------------------------------------------------------------------------------------
# dynamic texture
# --------------------------------------------------------------------------------------------------


def moving_texture(frames: int = 60, size: int = 64, seed: int = 0) -> np.ndarray:
    """A generated dynamic texture: coloured plane waves travelling in different directions.

    Frame ``t`` is ``tanh(sum_k c_k sin(k_k . x - omega_k t + phi_k))``; each wave moves a few
    pixels per frame, so consecutive frames are strongly correlated and a low-order vector
    auto-regression of the latent codes can continue the sequence (the paper's dynamic-texture
    experiment).

    Parameters
    ----------
    frames : int
        Number of frames T.
    size : int
        Height and width.
    seed : int
        The same seed gives the same clip.

    Returns
    -------
    video : ndarray, shape (frames, 3, size, size), float32 in [-1, 1]
        Min-max rescaled once over the whole clip.
    """
    if frames < 1 or size < 2:
        raise ValueError(f"need frames >= 1 and size >= 2, got {frames} and {size}")
    rng = np.random.default_rng(seed)
    K = 5
    theta = rng.uniform(0.0, 2 * np.pi, K)
    period = rng.uniform(10.0, 28.0, K)  # pixels
    speed = rng.uniform(0.5, 1.5, K)  # pixels per frame along the wave vector
    phase = rng.uniform(0.0, 2 * np.pi, K)
    colour = 1.0 + 0.4 * rng.normal(0.0, 1.0, (K, 3))
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    t = np.arange(int(frames), dtype=np.float64)[:, None, None]
    video = np.zeros((int(frames), 3, size, size))
    for k in range(K):
        along = x * np.cos(theta[k]) + y * np.sin(theta[k])  # (size, size)
        s = np.sin(
            2 * np.pi * (along[None] - speed[k] * t) / period[k] + phase[k]
        )  # (T, size, size)
        video += colour[k][None, :, None, None] * s[:, None]
    return _to_range(_tint(rng, np.tanh(0.5 * video)))


# --------------------------------------------------------------------------------------------------
# real footage, from a file a package installs
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Footage:
    """A clip of real video that a package installs, and how to get it.

    Attributes
    ----------
    name : str
        The name :func:`footage` takes.
    description : str
        What the clip shows.
    file : str
        The file's name.
    package : str
        The Debian package that installs it (Debian main; Ubuntu has the same package).
    version : str
        The package version whose file was checked (the file has not changed across versions).
    licence : str
        The licence of the file, as the package's copyright file gives it.
    install : str
        The command that installs the package.
    locations : tuple of str
        Absolute paths where the package puts the file, tried in order.
    frames : int
        Distinct frames that :func:`footage` can return (see its Notes).
    source_size : tuple of int
        ``(height, width)`` of the stored frames.
    box : tuple of int
        ``(left, top, right, bottom)``: the part of each stored frame that :func:`footage` keeps,
        the one that shows the texture.
    """

    name: str
    description: str
    file: str
    package: str
    version: str
    licence: str
    install: str
    locations: tuple[str, ...]
    frames: int
    source_size: tuple[int, int]
    box: tuple[int, int, int, int]


FOOTAGE = {
    "tree": Footage(
        name="tree",
        description="a tree's leaves moving in the wind, filmed through a window",
        file="tree.avi",
        package="opencv-doc",
        version="4.6.0+dfsg-12 (Debian 12), 4.10.0+dfsg-5 (Debian 13)",
        licence="Apache-2.0 AND BSD-3-Clause",
        install="sudo apt-get install opencv-doc",
        locations=("/usr/share/doc/opencv-doc/examples/data/tree.avi",),
        frames=53,
        source_size=(240, 320),
        # 200 x 200 of leaves: without the window frame (left) and the bright sky (top right)
        box=(50, 25, 250, 225),
    ),
}


def footage_path(name: str = "tree") -> Path | None:
    """Where the file of the clip ``name`` is installed, or None when it is not.

    Parameters
    ----------
    name : str
        A key of :data:`FOOTAGE`.

    Returns
    -------
    Path or None
        The first of ``FOOTAGE[name].locations`` that is a file.
    """
    if name not in FOOTAGE:
        raise ValueError(f"unknown footage {name!r}; choose one of {', '.join(FOOTAGE)}")
    for location in FOOTAGE[name].locations:
        if Path(location).is_file():
            return Path(location)
    return None


def _video_decoder() -> str | None:
    """The Python package that will decode a video file for imageio, or None when none is there."""
    import importlib.util

    if importlib.util.find_spec("imageio") is None:
        return None
    for module in ("av", "imageio_ffmpeg"):
        if importlib.util.find_spec(module) is not None:
            return module
    return None


def footage(
    name: str = "tree",
    frames: int | None = None,
    size: int = 64,
    path: str | os.PathLike | None = None,
) -> np.ndarray:
    """Real footage of a dynamic texture, read from the file a package installs.

    ``"tree"``: a tree's leaves moving in the wind, filmed through a window; the sample video
    ``tree.avi`` of OpenCV (320 x 240, Cinepak, 1.2 MB), licensed Apache-2.0 and BSD-3-Clause,
    which Debian's and Ubuntu's package ``opencv-doc`` installs under
    ``/usr/share/doc/opencv-doc/examples/data/``. Nothing is downloaded at run time; to get it::

        sudo apt-get install opencv-doc     # the file (a 96 MB package of documentation)
        pip install av                      # a decoder for it (or: pip install 'abp_np[video]')

    Elsewhere, give ``path``: the same file is ``samples/data/tree.avi`` in OpenCV's sources.

    Parameters
    ----------
    name : str
        A key of :data:`FOOTAGE` (``"tree"``).
    frames : int or None
        Number of frames T, from the start of the clip; None: all :attr:`Footage.frames` (53).
    size : int
        Height and width: each frame is cut to :attr:`Footage.box` (for ``"tree"``, the
        200 x 200 square of leaves at columns 50 to 249 and rows 25 to 224 of the 320 x 240
        frames) and resized with a Lanczos filter.
    path : str, path-like or None
        The video file to read instead of the installed one.

    Returns
    -------
    video : ndarray, shape (frames, 3, size, size), float32 in [-1, 1]
        Min-max rescaled once over the whole clip (as :func:`abp_np.io.data.load_video` does).

    Raises
    ------
    FileNotFoundError
        The package is not installed (the message gives the command that installs it).
    ImportError
        No video decoder is installed (the message gives the ``pip install`` command).

    Notes
    -----
    The file stores 449 frames at 15 frames a second, but only 68 of them are distinct (about
    2.5 new frames a second); the rest repeat the frame before and are dropped
    (``load_video(..., skip_repeats=True)``). A hand enters the view at the 54th distinct frame,
    so the clip ends before it: 53 frames of leaves only.
    """
    if name not in FOOTAGE:
        raise ValueError(f"unknown footage {name!r}; choose one of {', '.join(FOOTAGE)}")
    clip = FOOTAGE[name]
    if frames is None:
        frames = clip.frames
    if not 1 <= frames <= clip.frames:
        raise ValueError(f"frames must be between 1 and {clip.frames} for {name!r}, got {frames}")
    if size < 2:
        raise ValueError(f"size must be >= 2, got {size}")

    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(f"no such video file: {str(file)!r}")
    else:
        file = footage_path(name)
        if file is None:
            raise FileNotFoundError(
                f"the footage {name!r} ({clip.file}) comes with the Debian/Ubuntu package "
                f"{clip.package!r}, which is not installed: install it with `{clip.install}`, "
                f"or pass path= to a copy of {clip.file} (looked in "
                f"{', '.join(clip.locations)}; minimal container images may drop /usr/share/doc)."
            )
    if _video_decoder() is None:
        raise ImportError(
            f"reading the footage {name!r} ({file}) needs imageio and a video decoder: "
            "install them with `pip install imageio av` (or `pip install 'abp_np[video]'`)."
        )

    from abp_np.io.data import load_video

    video = load_video(
        file, size=int(size), channels=3, max_frames=frames, skip_repeats=True, box=clip.box
    )
    if video.shape[0] < frames:
        raise ValueError(
            f"{str(file)!r} holds {video.shape[0]} distinct frames, fewer than the {frames} "
            f"asked for: is it {clip.package}'s {clip.file}?"
        )
    return video


# --------------------------------------------------------------------------------------------------
# real handwritten digits, from a file a package installs
# --------------------------------------------------------------------------------------------------

#: Where Debian's and Ubuntu's ``opencv-doc`` puts OpenCV's ``digits.png``, tried in order (the
#: package may compress its documentation files; the ``.gz`` form is read as well).
DIGITS_LOCATIONS = (
    "/usr/share/doc/opencv-doc/examples/data/digits.png",
    "/usr/share/doc/opencv-doc/examples/data/digits.png.gz",
)

_DIGITS_HINT = (
    "5,000 handwritten digits come with Debian's opencv-doc: sudo apt-get install opencv-doc "
    "(or set ABP_DIGITS to a copy of digits.png)"
)
_DIGITS_GRID = (50, 100)  # rows and columns of 20 x 20 tiles in digits.png
_DIGIT_SIZE = 20


def digits_path() -> Path | None:
    """Where OpenCV's ``digits.png`` is, or None when it is not found.

    Looked for, in order: the file named by the environment variable ``ABP_DIGITS`` (when
    set, only there), then :data:`DIGITS_LOCATIONS`.

    Returns
    -------
    Path or None
        The first candidate that is a file.
    """
    env = os.environ.get("ABP_DIGITS")
    if env:
        path = Path(env).expanduser()
        return path if path.is_file() else None
    for location in DIGITS_LOCATIONS:
        if Path(location).is_file():
            return Path(location)
    return None


def _read_digits_sheet(path: Path) -> np.ndarray:
    """The grey levels of ``digits.png`` (or its gzip-compressed form), ``(1000, 2000)`` uint8."""
    import gzip
    import io

    from PIL import Image

    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip, whatever the file is called
        raw = gzip.decompress(raw)
    with Image.open(io.BytesIO(raw)) as img:
        sheet = np.asarray(img.convert("L"))
    rows, cols = _DIGITS_GRID
    want = (rows * _DIGIT_SIZE, cols * _DIGIT_SIZE)
    if sheet.shape != want:
        raise ValueError(
            f"{str(path)!r} is {sheet.shape[1]} x {sheet.shape[0]} pixels, not the "
            f"{want[1]} x {want[0]} sheet of OpenCV's digits.png"
        )
    return sheet


def _digits_order(seed: int) -> np.ndarray:
    """The fixed shuffle of the 5,000 tiles that ``seed`` gives."""
    rows, cols = _DIGITS_GRID
    return np.random.default_rng(seed).permutation(rows * cols)


def _digit_tiles(
    order: np.ndarray, size: int, path: str | os.PathLike | None
) -> tuple[np.ndarray, np.ndarray]:
    """Tiles ``order`` of the sheet, resized and min-max rescaled: (N, 1, size, size), labels (N,)."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 2:
        raise ValueError(f"size must be an int >= 2, got {size!r}")
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(f"no such file: {str(file)!r} ({_DIGITS_HINT})")
    else:
        file = digits_path()
        if file is None:
            where = os.environ.get("ABP_DIGITS")
            looked = f"ABP_DIGITS={where}" if where else ", ".join(DIGITS_LOCATIONS)
            raise FileNotFoundError(f"digits.png not found (looked in {looked}); {_DIGITS_HINT}")
    rows, cols = _DIGITS_GRID
    n = _DIGIT_SIZE
    tiles = _read_digits_sheet(file).reshape(rows, n, cols, n).transpose(0, 2, 1, 3)
    tiles = tiles.reshape(rows * cols, n, n)[order]  # tile k: row k // cols, column k % cols
    labels = (order // cols) // (rows // 10)  # five tile rows per class
    if size != n:
        from PIL import Image

        tiles = np.stack(
            [
                np.asarray(
                    Image.fromarray(t.astype(np.float32), mode="F").resize(
                        (size, size), Image.Resampling.LANCZOS
                    )
                )
                for t in tiles
            ]
        )
    out = np.empty((len(order), 1, size, size), dtype=np.float32)
    for i, t in enumerate(tiles):
        lo, hi = float(t.min()), float(t.max())
        out[i, 0] = 0.0 if hi <= lo else (t - lo) * (2.0 / (hi - lo)) - 1.0
    return out, labels.astype(np.int64)


def digits(
    n: int | None = None,
    size: int = 20,
    seed: int = 0,
    path: str | os.PathLike | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Real handwritten digits: OpenCV's 5,000 samples, 500 of each digit 0 to 9.

    ``digits.png`` of OpenCV (a 2000 x 1000 grey sheet of 50 rows by 100 columns of 20 x 20
    digits; tile rows ``5k`` to ``5k + 4`` hold the digit ``k``), which Debian's and
    Ubuntu's package ``opencv-doc`` installs under ``/usr/share/doc/opencv-doc/examples/data/``
    (licensed Apache-2.0 and BSD-3-Clause, as the package's copyright file gives it). Nothing
    is downloaded at run time; to get it::

        sudo apt-get install opencv-doc

    or set the environment variable ``ABP_DIGITS`` to a copy of ``digits.png`` (it is
    ``samples/data/digits.png`` in OpenCV's sources).

    Parameters
    ----------
    n : int or None
        The first ``n`` digits of the shuffled order; None: all 5,000.
    size : int
        Height and width; other than 20, each digit is resized (Lanczos) before rescaling.
    seed : int
        The fixed shuffle of the 5,000 digits, so that any prefix mixes the classes; the same
        seed gives the same order.
    path : str, path-like or None
        The file to read instead of the one :func:`digits_path` finds.

    Returns
    -------
    images : ndarray, shape (n, 1, size, size), float32 in [-1, 1]
        Each digit min-max rescaled on its own (as :func:`abp_np.io.data.load_images` rescales
        each image): its darkest pixel -1, its brightest +1, a constant tile 0.
    labels : ndarray, shape (n,), int64
        The digit, 0 to 9.

    Raises
    ------
    FileNotFoundError
        The file is missing (the message gives the command that installs it).
    """
    rows, cols = _DIGITS_GRID
    total = rows * cols
    if n is not None and (
        isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= total
    ):
        raise ValueError(f"n must be None or an int between 1 and {total}, got {n!r}")
    order = _digits_order(seed)
    if n is not None:
        order = order[: int(n)]
    return _digit_tiles(order, size, path)


@dataclass(frozen=True)
class DigitsSplit:
    """Disjoint training and held-out digits from :func:`digits_split`.

    Attributes
    ----------
    train, test : ndarray, shape (N, 1, size, size), float32 in [-1, 1]
    train_labels, test_labels : ndarray, shape (N,), int64
    """

    train: np.ndarray
    test: np.ndarray
    train_labels: np.ndarray
    test_labels: np.ndarray


def digits_split(
    n_train: int,
    n_test: int,
    seed: int = 0,
    size: int = 20,
    path: str | os.PathLike | None = None,
) -> DigitsSplit:
    """Training and held-out digits with no digit in both.

    The first ``n_train`` digits of :func:`digits`' shuffled order (for the same ``seed``)
    train; the next ``n_test`` are held out.

    Returns
    -------
    DigitsSplit
        ``.train`` (n_train, 1, size, size), ``.test`` (n_test, 1, size, size) and their
        ``*_labels``.
    """
    rows, cols = _DIGITS_GRID
    total = rows * cols
    for name, value in (("n_train", n_train), ("n_test", n_test)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if n_train + n_test > total:
        raise ValueError(
            f"n_train + n_test = {n_train + n_test} exceeds the {total} digits of digits.png"
        )
    order = _digits_order(seed)[: n_train + n_test]
    images, labels = _digit_tiles(order, size, path)
    return DigitsSplit(images[:n_train], images[n_train:], labels[:n_train], labels[n_train:])


# --------------------------------------------------------------------------------------------------
# the paper's release data, when present
# --------------------------------------------------------------------------------------------------


def release_root() -> Path | None:
    """Find the folder with the data of the paper's code release, or return None.

    Looked for, in order: the folder named by the environment variable ``ABP_DATA`` (when it
    exists); then ``../shared/data/abp-release`` relative to the current directory and each of its
    parents; then the same relative to this package's folder and its parents. The folder holds
    ``Image/`` and ``Sound/`` (lion_tiger, faces, textures, the ten sound clips). Nothing in this
    library requires it.

    Returns
    -------
    Path or None
        The resolved folder, or None when no candidate exists.
    """
    env = os.environ.get("ABP_DATA")
    if env and Path(env).expanduser().is_dir():
        return Path(env).expanduser().resolve()
    starts = [Path.cwd().resolve(), Path(__file__).resolve().parent]
    for start in starts:
        for folder in (start, *start.parents):
            candidate = folder.parent / "shared" / "data" / "abp-release"
            if candidate.is_dir():
                return candidate.resolve()
    return None
