"""Reading and writing images, sounds and videos as NumPy arrays.

Everything read comes back as ``float32`` in ``[-1, 1]`` (the range of the generator's tanh output),
in the layouts the networks use: images ``(N, C, H, W)``, sounds ``(1, 1, L)``, videos
``(T, C, H, W)``. Everything written is clipped to ``[-1, 1]`` first and lands atomically: the bytes
go to a temporary file in the destination folder, which then replaces the destination in one
``os.replace``, so an interrupted write never leaves half a file behind.

Pillow, SciPy, soundfile and imageio are imported inside the functions that need them, so
``import abp_np`` needs NumPy alone.

Preprocessing follows the paper's released code: each image is min-max rescaled on its own,

    y = 2 (x - min x) / (max x - min x) - 1,

over all its pixels and channels at once, and a constant image maps to 0. Sound is taken as read
(already in ``[-1, 1]``), only mixed down to mono and resampled.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from .atomic import atomic_write as _atomic_write

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".aif", ".aiff", ".au", ".mp3")

__all__ = [
    "IMAGE_EXTENSIONS",
    "AUDIO_EXTENSIONS",
    "load_images",
    "load_audio",
    "load_video",
    "to_unit",
    "image_grid",
    "save_image",
    "save_image_grid",
    "save_wav",
    "save_gif",
]


# --------------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------------


def _to_numpy(x: Any) -> np.ndarray:
    """Return ``x`` as a NumPy array, copying a CuPy array to the host (``x.get()``) if need be."""
    if not isinstance(x, np.ndarray) and hasattr(x, "get"):
        x = x.get()
    return np.asarray(x)


def _natural_key(name: str) -> list:
    """Sort key that puts ``frame2`` before ``frame10`` (digit runs compare as numbers)."""
    return [
        (0, int(part), "") if part.isdigit() else (1, 0, part.lower())
        for part in re.split(r"(\d+)", name)
    ]


def _list_files(folder: Path, extensions: Sequence[str]) -> list[Path]:
    """Files of ``folder`` (not recursive, no hidden files) whose extension is in ``extensions``."""
    files = [
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in extensions
    ]
    return sorted(files, key=lambda p: _natural_key(p.name))


def _size_hw(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    """``size`` as ``(height, width)``; an int means a square."""
    if size is None:
        return None
    if isinstance(size, (int, np.integer)):
        size = (int(size), int(size))
    h, w = (int(s) for s in size)
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive, got {size!r}")
    return h, w


def _minmax(x: np.ndarray) -> np.ndarray:
    """Rescale ``x`` so that its minimum is -1 and its maximum +1; a constant array becomes 0."""
    x = x.astype(np.float32, copy=False)
    lo, hi = float(x.min()), float(x.max())
    if hi <= lo:
        return np.zeros_like(x)
    return ((x - lo) * (2.0 / (hi - lo)) - 1.0).astype(np.float32)


def _pil_format(path: Path) -> str:
    """Pillow's format name for the extension of ``path`` (``.png`` -> ``PNG``)."""
    from PIL import Image

    ext = path.suffix.lower()
    formats = Image.registered_extensions()
    if ext not in formats:
        raise ValueError(f"cannot tell the image format of {str(path)!r}: use e.g. .png or .jpg")
    return formats[ext]


# --------------------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------------------


def _flatten_pil(img: Any) -> Any:
    """Bring any Pillow image to mode ``RGB``, ``L`` or ``F``.

    Transparency is composited on white; palettes are expanded; 16- and 32-bit grey become ``F``
    (float) so that no precision is lost before the min-max rescaling.
    """
    from PIL import Image

    mode = img.mode
    if mode in ("RGB", "L", "F"):
        return img
    if mode.startswith("I"):  # I, I;16, I;16B, I;16L, ...: high bit-depth grey
        return Image.fromarray(np.asarray(img, dtype=np.float32))  # float32 -> mode "F"
    if mode == "1":
        return img.convert("L")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if has_alpha:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode == "P":
        return img.convert("RGB")
    return img.convert("RGB")  # CMYK, YCbCr, LAB, HSV, ...


def _fit_pil(img: Any, size: tuple[int, int] | None, fit: str) -> Any:
    """Centre-crop ``img`` to the aspect of ``size`` (``fit="crop"``) and resize it (LANCZOS)."""
    from PIL import Image

    if size is None:
        return img
    h, w = size
    if fit == "crop":
        W0, H0 = img.size
        # target aspect w/h; crop the longer side of the source to it
        if W0 * h > H0 * w:
            new_w = max(1, round(H0 * w / h))
            left = (W0 - new_w) // 2
            img = img.crop((left, 0, left + new_w, H0))
        elif W0 * h < H0 * w:
            new_h = max(1, round(W0 * h / w))
            top = (H0 - new_h) // 2
            img = img.crop((0, top, W0, top + new_h))
    elif fit != "resize":
        raise ValueError(f'fit must be "crop" or "resize", got {fit!r}')
    if img.size != (w, h):
        img = img.resize((w, h), Image.Resampling.LANCZOS)
    return img


def _pil_to_chw(img: Any, channels: int) -> np.ndarray:
    """Pillow image (``RGB``, ``L`` or ``F``) -> raw float32 ``(channels, H, W)``, not rescaled."""
    a = np.asarray(img, dtype=np.float32)
    if a.ndim == 2:
        # grey: (H, W) -> (1, H, W), replicated to 3 channels if asked
        a = a[None]
        if channels == 3:
            a = np.repeat(a, 3, axis=0)
    else:
        # colour: (H, W, 3) -> (3, H, W)
        a = a.transpose(2, 0, 1)
        if channels == 1:
            # luminance, ITU-R 601 weights (as Pillow's "L" conversion), in float
            a = np.tensordot(np.array([0.299, 0.587, 0.114], np.float32), a, axes=1)[None]
    return np.ascontiguousarray(a, dtype=np.float32)


def _read_image(path: Path, size: tuple[int, int] | None, channels: int, fit: str) -> np.ndarray:
    """Read one image file by its content: raw float32 ``(channels, H, W)``."""
    from PIL import Image, ImageOps

    with Image.open(path) as img:
        img.seek(0)  # first frame of an animation
        img.load()
        img = ImageOps.exif_transpose(img)
        img = _flatten_pil(img)
        img = _fit_pil(img, size, fit)
        return _pil_to_chw(img, channels)


def load_images(
    path: str | os.PathLike,
    size: int | Sequence[int] | None = (64, 64),
    channels: int = 3,
    fit: str = "crop",
    skip_bad: bool = False,
    limit: int | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Load a folder of images (or one image file) as a batch in ``[-1, 1]``.

    Files are opened by their content, not their extension (a PNG named ``.jpg`` loads as a PNG).
    Transparency is composited on white, palettes are expanded, 16-bit images keep their precision,
    and the EXIF orientation is applied. Each image is then min-max rescaled on its own to
    ``[-1, 1]`` (over all its pixels and channels; a constant image becomes all zeros), as the
    paper's code did.

    Parameters
    ----------
    path : str or path-like
        A folder, whose files with an image extension (``IMAGE_EXTENSIONS``, any case) are read in
        natural sort order (``2.png`` before ``10.png``; not recursive; hidden files ignored), or
        one image file.
    size : int or (H, W) or None
        Output height and width; an int means a square. ``None`` keeps each image's own size (the
        images must then all have the same size).
    channels : {3, 1}
        3: grey images are replicated to RGB. 1: colour images become luminance
        ``0.299 R + 0.587 G + 0.114 B``.
    fit : {"crop", "resize"}
        ``"crop"``: centre-crop to the aspect ratio of ``size``, then resize (LANCZOS), so nothing
        is stretched. ``"resize"``: resize directly, changing the aspect ratio if they differ.
    skip_bad : bool
        False: an unreadable file raises ``ValueError``. True: unreadable files are left out and ONE
        ``UserWarning`` lists them all; the names returned are those of the images actually loaded.
    limit : int or None
        Load at most this many images (the first ones in sort order that load).

    Returns
    -------
    images : ndarray, shape (N, channels, H, W), float32 in [-1, 1]
    names : list of str, length N
        The file names (without folder) of the loaded images, in the order of ``images``.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        No image files in the folder, an unreadable file (without ``skip_bad``), nothing readable at
        all, or images of different sizes with ``size=None``.
    """
    hw = _size_hw(size)
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    if fit not in ("crop", "resize"):
        raise ValueError(f'fit must be "crop" or "resize", got {fit!r}')
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of images or None, got {limit!r}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such image file or folder: {str(path)!r}")
    if path.is_dir():
        files = _list_files(path, IMAGE_EXTENSIONS)
        if not files:
            raise ValueError(
                f"no image files in folder {str(path)!r} (looked for extensions "
                f"{', '.join(IMAGE_EXTENSIONS)}, any case, not in subfolders)"
            )
    else:
        files = [path]
        skip_bad = False  # one file asked for by name: failing to read it is an error

    images: list[np.ndarray] = []
    names: list[str] = []
    skipped: list[str] = []
    for f in files:
        if limit is not None and len(images) >= limit:
            break
        try:
            raw = _read_image(f, hw, channels, fit)
        except Exception as e:  # Pillow raises many kinds for broken files
            if not skip_bad:
                raise ValueError(
                    f"cannot read image {str(f)!r}: {e}. "
                    "Pass skip_bad=True to skip unreadable files."
                ) from e
            skipped.append(f.name)
            continue
        images.append(_minmax(raw))
        names.append(f.name)

    if skipped:
        warnings.warn(
            f"skipped {len(skipped)} unreadable file(s) in {str(path)!r}: {', '.join(skipped)}",
            UserWarning,
            stacklevel=2,
        )
    if not images:
        raise ValueError(f"none of the {len(files)} image file(s) in {str(path)!r} could be read")
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise ValueError(
            f"images in {str(path)!r} have different sizes {sorted(shapes)}; pass size=(H, W)"
        )
    # N images of shape (C, H, W) -> (N, C, H, W)
    return np.stack(images).astype(np.float32, copy=False), names


# --------------------------------------------------------------------------------------------------
# sound
# --------------------------------------------------------------------------------------------------


def _read_sound(path: Path) -> tuple[np.ndarray, int]:
    """Read a sound file: ``(samples (L, channels) float32 in [-1, 1], sample rate)``.

    soundfile (libsndfile) reads WAV, FLAC, OGG, AIFF, ...; without it, SciPy reads WAV.
    """
    try:
        import soundfile
    except ImportError:
        soundfile = None
    if soundfile is not None:
        x, sr = soundfile.read(str(path), dtype="float32", always_2d=True)
        return x, int(sr)

    from scipy.io import wavfile

    sr, x = wavfile.read(str(path))
    if np.issubdtype(x.dtype, np.integer):
        info = np.iinfo(x.dtype)
        if info.min == 0:  # 8-bit WAV is unsigned, centred on 128
            x = (x.astype(np.float32) - (info.max + 1) / 2) / ((info.max + 1) / 2)
        else:
            x = x.astype(np.float32) / -float(info.min)
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[:, None]
    return x, int(sr)


#: The highest sample rate accepted, in a file's header or as ``rate`` (Hz). Audio files go up to
#: 768 kHz; a header that claims more is damaged, and resampling from it would need a filter of
#: gigabytes.
MAX_RATE = 1_000_000
#: A signal whose every sample is below this in magnitude is silent (one step of 16-bit audio).
SILENCE = 2.0**-15


def _count_arg(v: Any, name: str, minimum: int, none_ok: bool = True) -> int | None:
    if v is None and none_ok:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise ValueError(f"load_audio: {name} must be an integer >= {minimum}, got {v!r}")
    return int(v)


def load_audio(
    path: str | os.PathLike,
    rate: int | None = 11025,
    length: int | None = None,
    offset: int = 0,
) -> np.ndarray:
    """Load a sound clip as a mono signal in ``[-1, 1]``.

    Stereo (or more channels) is averaged to mono; the signal is resampled from the file's rate to
    ``rate`` with a polyphase filter (``scipy.signal.resample_poly``), then cut to
    ``signal[offset : offset + length]`` and padded with zeros at the end if it is shorter.
    Values are taken as read (no rescaling), clipped to ``[-1, 1]`` after resampling.

    Parameters
    ----------
    path : str or path-like
        A sound file (WAV, FLAC, OGG, ... through soundfile; WAV alone without it), or a folder
        holding exactly one sound file (as the paper's ``Sound/trainingK/`` folders do).
    rate : int or None
        Output sample rate in Hz; None keeps the file's. The paper used 11,025 Hz.
    length : int or None
        Number of output samples; None keeps them all (from ``offset`` on). The paper's clips are
        60,000.
    offset : int
        First sample kept, counted at the output rate.

    Returns
    -------
    signal : ndarray, shape (1, 1, L), float32 in [-1, 1]
        ``(N, C, L)`` layout, ready for the 1-d generator.

    Raises
    ------
    ValueError
        For a ``rate`` outside 1 .. :data:`MAX_RATE`, a ``length`` below 1, a negative
        ``offset``; a file whose header claims a rate above :data:`MAX_RATE`; a file that holds
        no sample (at ``offset``); a silent one (every sample below :data:`SILENCE` in
        magnitude once the channels are averaged, e.g. stereo channels in opposite phase,
        which cancel).
    """
    rate = _count_arg(rate, "rate (samples per second)", 1)
    if rate is not None and rate > MAX_RATE:
        raise ValueError(f"load_audio: rate must be at most {MAX_RATE:,} Hz, got {rate:,}")
    length = _count_arg(length, "length (samples)", 1)
    offset = _count_arg(offset, "offset (samples)", 0, none_ok=False)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such sound file or folder: {str(path)!r}")
    if path.is_dir():
        files = _list_files(path, AUDIO_EXTENSIONS)
        if len(files) != 1:
            raise ValueError(
                f"folder {str(path)!r} holds {len(files)} sound files (extensions "
                f"{', '.join(AUDIO_EXTENSIONS)}); give the file itself"
            )
        path = files[0]
    try:
        x, sr = _read_sound(path)
    except Exception as e:
        raise ValueError(f"cannot read sound file {str(path)!r}: {e}") from e
    if not 1 <= sr <= MAX_RATE:
        raise ValueError(
            f"sound file {str(path)!r} claims a sample rate of {sr:,} Hz; audio files go up to "
            f"768,000 Hz, so its header is damaged (re-encode it, e.g. with ffmpeg or sox)"
        )
    if x.shape[0] == 0:
        raise ValueError(f"sound file {str(path)!r} holds no samples")
    if not np.isfinite(x).all():
        raise ValueError(f"sound file {str(path)!r} holds NaN or inf samples")

    # (L, channels) -> (L,)
    channels = x
    x = x.mean(axis=1, dtype=np.float64)
    if np.abs(x).max() < SILENCE:
        if np.abs(channels).max() >= SILENCE:
            raise ValueError(
                f"sound file {str(path)!r} is silent once its {channels.shape[1]} channels are "
                "averaged to mono: they cancel (in opposite phase); keep one channel, e.g. "
                "`sox in.wav out.wav remix 1`"
            )
        raise ValueError(
            f"sound file {str(path)!r} is silent: every sample is below {SILENCE:.1e} in "
            "magnitude (there is nothing to learn)"
        )
    if rate is not None and int(rate) != sr:
        from scipy.signal import resample_poly

        g = math.gcd(int(rate), sr)
        x = resample_poly(x, int(rate) // g, sr // g)
    x = np.clip(x, -1.0, 1.0).astype(np.float32)
    if offset >= x.shape[0]:
        raise ValueError(
            f"load_audio: offset {offset:,} is past the end of {str(path)!r} "
            f"({x.shape[0]:,} samples at {rate or sr:,} Hz)"
        )
    x = x[offset:]
    if length is not None:
        out = np.zeros(int(length), dtype=np.float32)
        n = min(int(length), x.shape[0])
        out[:n] = x[:n]
        x = out
    # (L,) -> (1, 1, L)
    return x[None, None, :]


# --------------------------------------------------------------------------------------------------
# video
# --------------------------------------------------------------------------------------------------


def _pil_frames(path: Path) -> Any:
    """Yield the frames of a multi-frame image file (GIF, APNG, WEBP, TIFF) as Pillow images."""
    from PIL import Image, ImageSequence

    with Image.open(path) as img:
        for frame in ImageSequence.Iterator(img):
            yield frame.copy()


def _imageio_frames(path: Path) -> Any:
    """Yield the frames of a video file, decoded by imageio (PyAV or ffmpeg), as Pillow images."""
    import importlib.util

    import imageio.v3 as iio
    from PIL import Image

    if importlib.util.find_spec("av") is not None:
        plugin = "pyav"
    elif importlib.util.find_spec("imageio_ffmpeg") is not None:
        plugin = "FFMPEG"
    else:
        raise ImportError(
            f"cannot decode video {str(path)!r}: imageio needs a video plugin. "
            "Install one with `pip install imageio-ffmpeg` or `pip install av`, "
            "or give an animated GIF or a folder of frame images instead."
        )
    try:
        for frame in iio.imiter(path, plugin=plugin):
            yield Image.fromarray(np.asarray(frame))
    except Exception as e:
        raise ValueError(
            f"cannot read video {str(path)!r} with imageio's {plugin} plugin: {e}"
        ) from e


def load_video(
    path: str | os.PathLike,
    size: int | Sequence[int] | None = (64, 64),
    channels: int = 3,
    max_frames: int | None = None,
    step: int = 1,
    fit: str = "crop",
    skip_repeats: bool = False,
    box: Sequence[int] | None = None,
) -> np.ndarray:
    """Load a video as a sequence of frames in ``[-1, 1]``.

    Unlike :func:`load_images`, the min-max rescaling is done ONCE over the whole clip, so that the
    brightness of a frame is not changed relative to its neighbours (a dynamic texture's frames are
    modelled as a sequence).

    Parameters
    ----------
    path : str or path-like
        An animated image (GIF, APNG, WEBP, multi-page TIFF; read by Pillow), a folder of frame
        images (natural sort order, as in :func:`load_images`), or a video file (MP4, AVI, ...) read
        by imageio, which needs a plugin: ``pip install imageio-ffmpeg`` or ``pip install av``.
    size, channels, fit
        As in :func:`load_images`.
    max_frames : int or None
        Keep at most this many frames (after ``skip_repeats`` and ``step``).
    step : int
        Keep every ``step``-th frame (frames 0, step, 2 step, ...), counted after
        ``skip_repeats``.
    skip_repeats : bool
        Drop every frame that is identical, pixel for pixel, to the frame just before it in the
        file. Some videos are stored at a higher frame rate than they were filmed at and fill the
        gaps by repeating frames; decoders differ in whether they hand the repeats out
        (imageio-ffmpeg does, PyAV does not), so this also makes the result the same whichever
        decoder is installed. Repeated frames would otherwise teach a model of the dynamics that
        the scene often stands still.
    box : (left, top, right, bottom) or None
        Keep only this rectangle of each frame, in pixels of the stored frames (as Pillow's
        ``Image.crop``: columns ``left`` to ``right - 1``, rows ``top`` to ``bottom - 1``), before
        ``size`` and ``fit`` apply: the part of a video that shows the texture.

    Returns
    -------
    frames : ndarray, shape (T, channels, H, W), float32 in [-1, 1]
    """
    from PIL import Image, UnidentifiedImageError

    hw = _size_hw(size)
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1 or None, got {max_frames}")
    if box is not None:
        box = tuple(int(b) for b in box)
        if len(box) != 4 or not (0 <= box[0] < box[2] and 0 <= box[1] < box[3]):
            raise ValueError(
                f"box must be (left, top, right, bottom) with 0 <= left < right and "
                f"0 <= top < bottom, got {box!r}"
            )
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such video file or folder: {str(path)!r}")

    if path.is_dir():
        files = _list_files(path, IMAGE_EXTENSIONS)
        if not files:
            raise ValueError(
                f"no frame images in folder {str(path)!r} (looked for extensions "
                f"{', '.join(IMAGE_EXTENSIONS)})"
            )

        def opened(files=files):
            for f in files:
                try:
                    with Image.open(f) as img:
                        img.load()
                        frame = img.copy()
                except Exception as e:
                    raise ValueError(f"cannot read frame image {str(f)!r}: {e}") from e
                yield frame

        source = opened()
    else:
        try:
            with Image.open(path):
                pass
            source = _pil_frames(path)
        except UnidentifiedImageError:
            source = _imageio_frames(path)

    frames: list[np.ndarray] = []
    previous: np.ndarray | None = None  # the last frame read, for skip_repeats
    distinct = 0  # frames read that were not dropped as repeats
    try:
        for img in source:
            if max_frames is not None and len(frames) >= max_frames:
                break
            img = _flatten_pil(img)
            if skip_repeats:
                pixels = np.asarray(img)
                if previous is not None and np.array_equal(pixels, previous):
                    continue
                previous = pixels
            distinct += 1
            if (distinct - 1) % step:
                continue
            if box is not None:
                if box[2] > img.width or box[3] > img.height:
                    raise ValueError(
                        f"box {box!r} reaches outside the {img.width} x {img.height} (width x "
                        f"height) frames of {str(path)!r}"
                    )
                img = img.crop(box)
            img = _fit_pil(img, hw, fit)
            frames.append(_pil_to_chw(img, channels))
    finally:
        source.close()  # closes the file a generator still holds open
    if not frames:
        raise ValueError(f"no frames could be read from {str(path)!r}")
    shapes = {f.shape for f in frames}
    if len(shapes) > 1:
        raise ValueError(
            f"frames of {str(path)!r} differ in size {sorted(shapes)}; pass size=(H, W)"
        )
    # T frames of shape (C, H, W) -> (T, C, H, W), one rescaling for the whole clip
    return _minmax(np.stack(frames))


# --------------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------------


def to_unit(x: Any) -> np.ndarray:
    """Map data from ``[-1, 1]`` to ``[0, 1]``: ``clip((x + 1) / 2, 0, 1)``.

    Parameters
    ----------
    x : array-like (NumPy or CuPy), any shape

    Returns
    -------
    ndarray, same shape, float32 in [0, 1]
    """
    x = _to_numpy(x).astype(np.float32)
    return np.clip((x + 1.0) * 0.5, 0.0, 1.0)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    """``[-1, 1]`` -> ``uint8`` ``[0, 255]``, rounded."""
    return np.round(to_unit(x) * 255.0).astype(np.uint8)


def image_grid(
    images: Any, nrow: int | None = None, padding: int = 2, pad_value: float = 1.0
) -> np.ndarray:
    """Tile a batch of images into one picture.

    Parameters
    ----------
    images : array-like, shape (N, C, H, W) or (C, H, W), values in [-1, 1]
        ``C`` is 1 (grey) or 3 (RGB). NumPy or CuPy.
    nrow : int or None
        Images per row; None makes the grid as square as possible (``ceil(sqrt(N))`` columns).
    padding : int
        Pixels between images and around the border.
    pad_value : float
        Colour of the padding, in the data range ``[-1, 1]`` (1 is white).

    Returns
    -------
    grid : ndarray, shape (rows * (H + padding) + padding, ncol * (W + padding) + padding, C), uint8
    """
    x = _to_numpy(images)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"images must have shape (N, C, H, W) with C = 1 or 3, got {x.shape}")
    N, C, H, W = x.shape
    if N == 0:
        raise ValueError("no images to tile")
    ncol = min(N, nrow if nrow is not None else math.ceil(math.sqrt(N)))
    nrows = math.ceil(N / ncol)
    p = int(padding)
    grid = np.full(
        (nrows * (H + p) + p, ncol * (W + p) + p, C),
        _to_uint8(np.float32(pad_value)),
        dtype=np.uint8,
    )
    # (N, C, H, W) -> (N, H, W, C)
    tiles = _to_uint8(x).transpose(0, 2, 3, 1)
    for k in range(N):
        r, c = divmod(k, ncol)
        top, left = p + r * (H + p), p + c * (W + p)
        grid[top : top + H, left : left + W] = tiles[k]
    return grid


def _save_hwc(path: str | os.PathLike, hwc: np.ndarray) -> Path:
    """Write a uint8 picture ``(H, W, C)`` atomically, in the format given by the extension."""
    from PIL import Image

    path = Path(path)
    fmt = _pil_format(path)
    img = Image.fromarray(hwc[:, :, 0] if hwc.shape[2] == 1 else hwc)
    return _atomic_write(path, lambda f: img.save(f, format=fmt))


def save_image(path: str | os.PathLike, image: Any) -> Path:
    """Write one image in ``[-1, 1]`` to a picture file (format from the extension).

    Parameters
    ----------
    path : str or path-like
        Destination, e.g. ``out/sample.png``; parent folders are created.
    image : array-like, shape (C, H, W) or (1, C, H, W), C = 1 or 3
        Values in ``[-1, 1]`` (clipped). NumPy or CuPy.

    Returns
    -------
    Path of the written file.
    """
    x = _to_numpy(image)
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 3 or x.shape[0] not in (1, 3):
        raise ValueError(f"image must have shape (C, H, W) with C = 1 or 3, got {x.shape}")
    # (C, H, W) -> (H, W, C)
    return _save_hwc(path, _to_uint8(x).transpose(1, 2, 0))


def save_image_grid(
    path: str | os.PathLike, images: Any, nrow: int | None = None, padding: int = 2
) -> Path:
    """Write a batch of images ``(N, C, H, W)`` in ``[-1, 1]`` as one tiled picture.

    See :func:`image_grid` for the layout. Returns the path of the written file.
    """
    return _save_hwc(path, image_grid(images, nrow=nrow, padding=padding))


def save_wav(path: str | os.PathLike, signal: Any, rate: int = 11025) -> Path:
    """Write a mono signal in ``[-1, 1]`` as a 16-bit PCM WAV file (with Python's ``wave`` module).

    Parameters
    ----------
    path : str or path-like
        Destination; parent folders are created.
    signal : array-like, shape (L,), (1, L) or (1, 1, L)
        Values in ``[-1, 1]``; clipped, then scaled by 32767 and rounded. NumPy or CuPy.
    rate : int
        Sample rate in Hz.

    Returns
    -------
    Path of the written file.
    """
    import wave

    x = _to_numpy(signal).astype(np.float64)
    if x.ndim > 1 and x.size == x.shape[-1]:
        x = x.reshape(-1)
    if x.ndim != 1:
        raise ValueError(f"signal must have shape (L,), (1, L) or (1, 1, L), got {x.shape}")
    pcm = np.round(np.clip(x, -1.0, 1.0) * 32767.0).astype("<i2")

    def write(f: IO[bytes]) -> None:
        with wave.open(f, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(int(rate))
            w.writeframes(pcm.tobytes())

    return _atomic_write(path, write)


def save_gif(path: str | os.PathLike, frames: Any, fps: float = 10, loop: int = 0) -> Path:
    """Write frames in ``[-1, 1]`` as an animated GIF.

    Parameters
    ----------
    path : str or path-like
        Destination; parent folders are created.
    frames : array-like, shape (T, C, H, W), C = 1 or 3
        Values in ``[-1, 1]`` (clipped). NumPy or CuPy.
    fps : float
        Frames per second (GIF stores delays in hundredths of a second, so at most 50 is exact).
    loop : int
        Number of repeats; 0 loops forever.

    Returns
    -------
    Path of the written file.
    """
    from PIL import Image

    x = _to_numpy(frames)
    if x.ndim != 4 or x.shape[1] not in (1, 3) or x.shape[0] == 0:
        raise ValueError(f"frames must have shape (T, C, H, W) with C = 1 or 3, got {x.shape}")
    # (T, C, H, W) -> (T, H, W, C)
    u8 = _to_uint8(x).transpose(0, 2, 3, 1)
    imgs = [Image.fromarray(f[:, :, 0] if f.shape[2] == 1 else f) for f in u8]
    duration = max(1, round(1000.0 / fps))

    def write(f: IO[bytes]) -> None:
        imgs[0].save(
            f,
            format="GIF",
            save_all=True,
            append_images=imgs[1:],
            duration=duration,
            loop=int(loop),
            optimize=False,
            disposal=1,
        )

    return _atomic_write(path, write)
