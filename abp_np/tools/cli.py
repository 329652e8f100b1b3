"""The ``abp`` command: train, synthesize, reconstruct, interpolate and complete.

``abp train DATA --out RUN`` learns a generator from a folder of images, one texture image, a
sound, or a video (a video file, an animated GIF, or a folder of frames with ``--kind video``).
Left to its defaults it fits the run to the machine: the data keep their nature where the
network allows (image size, grey or colour, the whole sound), the network's width, d, the
optimiser (Adam) and the number of iterations are chosen from the data and from one timed step
on the device, and the plan is printed with an estimated time before the first iteration; the
run takes about ``--minutes`` (3; 1 with ``--quick``). ``--paper`` takes the paper's settings
instead (64 x 64 images, d = 100, full-width networks, SGD, 600 iterations: hours on a CPU).
Every change made to the data (a resize, a resampling, a cut) is printed once.

A run lives in one folder (``--out``)::

    model.json        what network and data the run uses (to rebuild the generator)
    checkpoint.npz    model, optimiser, persistent Z, random state (written atomically)
    log.jsonl         one JSON line per iteration
    *.png / *.wav     pictures and sounds (a video: *.gif, *.mp4 and dynamics.npz)

``synthesize``, ``reconstruct``, ``interpolate`` and ``complete`` read a run folder and write
into ``--out`` (default: the current folder) files named after the run and the command. An
existing file is never replaced silently: the new one gets a number (``_2``, ``_3``, ...) unless
``--overwrite`` is given.

Examples::

    abp train path/to/images --out runs/faces       # minutes on a CPU; the plan is printed
    abp train path/to/images --out runs/paper --paper
    abp train texture.jpg --out runs/bark
    abp train clip.wav --out runs/sound             # the whole clip
    abp train tree.avi --out runs/tree              # a dynamic texture: ABP + VAR on Z
    abp train builtin:texture --out runs/tex --quick
    abp synthesize runs/bark --scale 2              # a texture twice as large
    abp synthesize runs/tree --frames 120           # a new clip: GIF (and MP4 with PyAV)
    abp reconstruct runs/faces path/to/held_out
    abp interpolate runs/faces --method slerp
    abp complete runs/faces path/to/held_out --occlusion M30

Errors are reported on one line; Ctrl-C during training saves a checkpoint first.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main"]

AUDIO_EXT = {".wav", ".flac", ".ogg", ".aiff", ".aif", ".mp3"}
VIDEO_EXT = {".gif", ".mp4", ".avi", ".mov", ".mkv", ".webm", ".mpg", ".mpeg"}

#: Image sides the image network makes: 4 x 4 doubled k times.
IMAGE_SIDES = (8, 16, 32, 64, 128)
#: The texture network makes sides that are multiples of 32; the sound network lengths that are
#: multiples of 1,000 samples (three layers that up-sample by 10).
TEXTURE_STEP, SOUND_STEP = 32, 1000

# The paper's settings per kind of data (those of the paper's released code): --paper.
DEFAULTS: dict[str, dict[str, Any]] = {
    "texture": {
        "size": 224,
        "langevin_steps": 10,
        "step_size": 0.3,
        "init_z": "normal",
        "iterations": 600,
    },
    "sound": {
        "rate": 11025,
        "length": 60000,
        "langevin_steps": 10,
        "step_size": 0.1,
        "init_z": "zeros",
        "iterations": 600,
    },
    "images": {
        "size": 64,
        "latent_dim": 100,
        "langevin_steps": 30,
        "step_size": 0.3,
        "init_z": "zeros",
        "iterations": 600,
    },
    "video": {
        "size": 64,
        "latent_dim": 100,
        "langevin_steps": 30,
        "step_size": 0.3,
        "init_z": "zeros",
        "iterations": 600,
    },
}
PAPER_LEARNING = {"width": 1.0, "optimizer": "sgd", "lr": 1e-4, "batch_size": None}

# The defaults fitted to the machine: the paper's Langevin step sizes and initial Z, fewer
# Langevin steps, Adam with a larger step (as the demos' quick mode), mini-batches.
AUTO: dict[str, dict[str, Any]] = {
    "texture": {"langevin_steps": 10, "step_size": 0.3, "init_z": "normal"},
    "sound": {"langevin_steps": 10, "step_size": 0.1, "init_z": "zeros"},
    "images": {"langevin_steps": 10, "step_size": 0.3, "init_z": "zeros"},
    "video": {"langevin_steps": 10, "step_size": 0.3, "init_z": "zeros"},
}
AUTO_LEARNING = {"optimizer": "adam", "lr": 2e-3}
AUTO_BATCH = 32  # examples per learning step when a data set has more than 64
#: The largest side the defaults keep, per device; larger data are resized (and the run says so).
SIDE_CAP = {
    "cpu": {"images": 64, "video": 64, "texture": 128},
    "gpu": {"images": 128, "video": 128, "texture": 224},
}
#: Network widths tried, widest first, until MIN_ITERATIONS fit in the time budget.
WIDTHS = {"cpu": (0.25, 0.125, 0.0625), "gpu": (1.0, 0.5, 0.25)}
MINUTES, QUICK_MINUTES = 3.0, 1.0
MIN_ITERATIONS, MAX_ITERATIONS = 40, 600
AUTO_RATE = 11025  # sounds at a higher rate are resampled to this (the paper's rate)
#: Built-in data, generated at these sizes (--quick; otherwise).
BUILTIN_SIZES = {
    "texture": (64, 128),
    "sound": (20000, 60000),
    "shapes": (32, 200),
    "video": (24, 48),
}
HEARTBEAT = 5.0  # seconds without a progress line before one is printed within an iteration


class CLIError(Exception):
    """A mistake in the command line or its data, reported on one line."""


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


# --- data ---------------------------------------------------------------------------------------


def detect_kind(data: str) -> str:
    """'texture', 'sound', 'images' or 'video', from a path or a ``builtin:NAME``."""
    if data.startswith("builtin:"):
        name = data.split(":", 1)[1]
        kinds = {"texture": "texture", "sound": "sound", "shapes": "images", "video": "video"}
        if name not in kinds:
            raise CLIError(
                f"unknown built-in data {data!r}: use one of "
                + ", ".join(f"builtin:{k}" for k in kinds)
            )
        return kinds[name]
    p = Path(data)
    if not p.exists():
        raise CLIError(f"{data}: no such file or folder")
    if p.is_file():
        ext = p.suffix.lower()
        if ext in AUDIO_EXT:
            return "sound"
        if ext in VIDEO_EXT:
            return "video"
        return "texture"  # one image: learn its texture
    return "images"


def _image_sizes(path: Path) -> Counter:
    """(height, width) -> count over the image files of a folder (or one file), from headers."""
    from PIL import Image

    from ..io import data as D

    files = D._list_files(path, D.IMAGE_EXTENSIONS) if path.is_dir() else [path]
    sizes: Counter = Counter()
    for f in files:
        try:
            with Image.open(f) as im:
                sizes[(im.height, im.width)] += 1
        except Exception:  # unreadable: the loader reports it (or skips it with --skip-bad)
            continue
    return sizes


def _first_frame_size(path: Path) -> tuple[int, int] | None:
    """(height, width) of a video's frames, or None when it cannot be told cheaply."""
    try:
        if path.is_dir():
            sizes = _image_sizes(path)
            return sizes.most_common(1)[0][0] if sizes else None
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as im:
                return (im.height, im.width)
        except UnidentifiedImageError:
            import imageio.v3 as iio

            shape = iio.improps(path, plugin="pyav").shape  # (T, H, W, C)
            return (int(shape[1]), int(shape[2]))
    except Exception:
        return None


def _hw(hw: tuple[int, int]) -> str:
    return f"{hw[1]} x {hw[0]}"


def _nearest_side(side: int, cap: int) -> int:
    """The image network's side nearest to ``side`` (on a log scale), at most ``cap``."""
    allowed = [s for s in IMAGE_SIDES if s <= cap] or [IMAGE_SIDES[0]]
    return min(allowed, key=lambda s: (abs(math.log2(s / max(side, 1))), -s))


def _resize_note(sizes: Counter, side: int, why: str) -> str | None:
    """How images of ``sizes`` become ``side x side``; None when they already are."""
    if not sizes or set(sizes) == {(side, side)}:
        return None
    target = f"{side} x {side}"
    if len(sizes) > 1:
        common, count = sizes.most_common(1)[0]
        return (
            f"the images have {len(sizes)} sizes (most often {_hw(common)}, {count} of "
            f"{sum(sizes.values())}): each is centre-cropped to a square and resized to "
            f"{target} ({why})"
        )
    (h, w) = next(iter(sizes))
    crop = "centre-cropped to a square and " if h != w else ""
    return f"{crop}resized from {_hw((h, w))} to {target} ({why})"


def _grey(Y: np.ndarray) -> bool:
    """True when every image of a 3-channel batch has R = G = B."""
    return (
        Y.shape[1] == 3
        and bool(np.array_equal(Y[:, 0], Y[:, 1]))
        and bool(np.array_equal(Y[:, 1], Y[:, 2]))
    )


def _channels(Y: np.ndarray, want: Any, reload: Any, notes: list[str]) -> tuple[np.ndarray, int]:
    """Keep grey data in one channel and colour in three, or follow ``--channels``.

    ``Y`` was read with 3 channels; ``reload(1)`` reads the data again as luminance.
    """
    grey = _grey(Y)
    if want in (None, "auto"):
        return (Y[:, :1], 1) if grey else (Y, 3)
    want = int(want)
    if want == 3:
        if grey:
            notes.append("grey copied to 3 channels (--channels 3)")
        return Y, 3
    if grey:
        return Y[:, :1], 1
    notes.append("colour converted to grey (luminance; --channels 1)")
    return reload(1), 1


class Prepared:
    """Training data ready for a network: the array, what was done to it, and its settings."""

    def __init__(self, Y: np.ndarray, cfg: dict[str, Any], source: str, notes: list[str]):
        self.Y, self.cfg, self.source, self.notes = Y, cfg, source, notes


def _builtin(name: str, kind: str, fixed: dict | None, quick: bool, seed: int) -> Prepared:
    from ..io import datasets

    small, large = BUILTIN_SIZES[name]
    value = small if quick else large
    if name == "texture":
        size = (fixed or {}).get("size") or value
        Y = datasets.texture("cells", size=size, seed=seed)
        return Prepared(Y, {"size": size}, f"a generated texture of {size} x {size}", [])
    if name == "sound":
        length = (fixed or {}).get("length") or value
        Y = datasets.sound("bells", length=length, rate=AUTO_RATE, seed=seed)
        cfg = {"rate": AUTO_RATE, "length": length}
        return Prepared(Y, cfg, f"a generated sound of {length:,} samples at {AUTO_RATE:,} Hz", [])
    if name == "shapes":
        size = (fixed or {}).get("size") or 32
        n = (fixed or {}).get("count") or value
        Y, _ = datasets.shapes(n=n, size=size, seed=seed)
        return Prepared(
            Y, {"size": size, "count": n}, f"{n} generated shapes of {size} x {size}", []
        )
    size = (fixed or {}).get("size") or 32
    frames = (fixed or {}).get("frames") or value
    Y = datasets.moving_texture(frames=frames, size=size, seed=seed)
    cfg = {"size": size, "frames": frames}
    return Prepared(Y, cfg, f"a generated moving texture, {frames} frames of {size} x {size}", [])


def prepare_data(
    data: str,
    kind: str,
    args: argparse.Namespace,
    device: str,
    fixed: dict[str, Any] | None = None,
) -> Prepared:
    """Read ``data`` for a network of ``kind``: as it is where the network allows.

    ``fixed``: the data settings of an existing run (resume, reconstruct, complete): the size,
    channels and sample rate the run's network was made for. Otherwise they follow the data,
    the options (``--size``, ``--channels``, ``--rate``, ``--length``, ``--limit``), ``--paper``
    and the device.
    """
    from ..io import data as D

    opt = lambda name: getattr(args, name, None)  # noqa: E731
    paper, quick, skip_bad = bool(opt("paper")), bool(opt("quick")), bool(opt("skip_bad"))
    seed = opt("seed") or 0
    if data.startswith("builtin:"):
        return _builtin(data.split(":", 1)[1], kind, fixed, quick, seed)
    path = Path(data)
    notes: list[str] = []
    limit = opt("limit")

    if kind == "sound":
        try:
            raw, file_rate = D._read_sound(path if path.is_file() else _one_sound(path))
        except CLIError:
            raise
        except Exception as e:
            raise CLIError(f"cannot read sound file {data!r}: {e}") from e
        if fixed is not None:
            rate = fixed["rate"]
        elif opt("rate"):
            rate = opt("rate")
        else:
            rate = DEFAULTS["sound"]["rate"] if paper else min(file_rate, AUTO_RATE)
        if rate != file_rate:
            notes.append(
                f"resampled from {file_rate:,} Hz to {rate:,} Hz"
                + ("" if opt("rate") or fixed else f" (--rate {file_rate} keeps it)")
            )
        if raw.shape[1] > 1:
            notes.append(f"{raw.shape[1]} channels averaged to mono")
        signal = D.load_audio(path, rate=rate)
        n = signal.shape[-1]
        seconds = n / rate
        want = (fixed or {}).get("length") if fixed is not None else opt("length")
        if want is None and paper and fixed is None:
            want = DEFAULTS["sound"]["length"]
        if want is not None:
            length = int(want)
            why = "--length" if opt("length") else ("the run's length" if fixed else "--paper")
        else:  # the whole clip: the latent length follows it
            length = max(SOUND_STEP, n // SOUND_STEP * SOUND_STEP)
            why = "the sound network makes multiples of 1,000 samples"
        if length < n:
            notes.append(
                f"cut from {n:,} samples ({seconds:.2f} s) to the first {length:,} "
                f"({length / rate:.2f} s; {why})"
            )
        elif length > n:
            notes.append(
                f"padded with zeros from {n:,} samples ({seconds:.2f} s) to {length:,} "
                f"({length / rate:.2f} s; {why})"
            )
        out = np.zeros((1, 1, length), dtype=np.float32)
        out[..., : min(n, length)] = signal[..., :length]
        source = f"{data}: {n:,} samples at {rate:,} Hz ({seconds:.2f} s)"
        return Prepared(out, {"rate": rate, "length": length}, source, notes)

    if kind == "video":
        from ..io import datasets

        box, frames = None, limit
        known = datasets.footage_path("tree")
        if known is not None and path.is_file() and path.resolve() == known.resolve():
            clip = datasets.FOOTAGE["tree"]
            box, frames = clip.box, min(limit or clip.frames, clip.frames)
            notes.append(
                f"this is OpenCV's footage {clip.file}: its first {clip.frames} distinct frames "
                f"(before a hand enters the view) and the {clip.box[2] - clip.box[0]} x "
                f"{clip.box[3] - clip.box[1]} region that shows leaves"
            )
        native = (box[3] - box[1], box[2] - box[0]) if box else _first_frame_size(path)
        size = _side(kind, native, fixed, opt("size"), paper, device)
        why = "the image network makes sides of " + ", ".join(map(str, IMAGE_SIDES))
        if native is not None:
            note = _resize_note(Counter({native: 1}), size, why)
            if note:
                notes.append("frames " + note)

        def read(channels: int) -> np.ndarray:
            return D.load_video(
                path, size=size, channels=channels, max_frames=frames, skip_repeats=True, box=box
            )

        Y = read(3)
        notes.append("frames identical to the one before them are dropped (stored repeats)")
        if limit:
            notes.append(f"the first {len(Y)} frames are used (--limit {limit})")
        want = (fixed or {}).get("channels") if fixed is not None else opt("channels")
        Y, channels = _channels(Y, want, read, notes)
        cfg = {"size": size, "channels": channels, "frames": len(Y), "box": box}
        return Prepared(Y, cfg, f"{data}: {len(Y)} frames", notes)

    # images: a folder (objects) or one texture image
    sizes = _image_sizes(path)
    native = None
    if sizes:
        common = sizes.most_common(1)[0][0]
        native = common
    size = _side(kind, native, fixed, opt("size"), paper, device)
    if kind == "texture":
        why = "the texture network makes multiples of 32"
    else:
        why = "the image network makes sides of " + ", ".join(map(str, IMAGE_SIDES))
    if not opt("size") and fixed is None and not paper and native is not None:
        larger = size + TEXTURE_STEP if kind == "texture" else 2 * size
        if min(native) > size and larger <= (max(IMAGE_SIDES) if kind != "texture" else 1e9):
            why += f"; --size {larger} keeps more"
        elif min(native) < size:
            if kind != "texture" and size > min(IMAGE_SIDES):
                why += f"; --size {size // 2} shrinks them instead"
    note = _resize_note(sizes, size, why)
    if note:
        notes.append(note)

    def read(channels: int) -> np.ndarray:
        return D.load_images(path, size=size, channels=channels, skip_bad=skip_bad, limit=limit)[0]

    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Y = read(3)
    for w in caught:
        notes.append(str(w.message))
    total = sum(sizes.values())
    if limit and len(Y) < total:
        notes.append(f"the first {len(Y)} of {total} images are used (--limit {limit})")
    want = (fixed or {}).get("channels") if fixed is not None else opt("channels")
    Y, channels = _channels(Y, want, read, notes)
    what = "image" if kind == "texture" else "images"
    source = f"{data}: {len(Y)} {what}" if kind != "texture" else f"{data}: one texture image"
    return Prepared(Y, {"size": size, "channels": channels}, source, notes)


def _one_sound(folder: Path) -> Path:
    from ..io import data as D

    files = D._list_files(folder, D.AUDIO_EXTENSIONS)
    if len(files) != 1:
        raise CLIError(f"{folder}: holds {len(files)} sound files; give the file itself")
    return files[0]


def _side(
    kind: str,
    native: tuple[int, int] | None,
    fixed: dict | None,
    size: int | None,
    paper: bool,
    device: str,
) -> int:
    """The image side to learn at: the run's, --size, the paper's, or the data's own."""
    if fixed is not None:
        return int(fixed["size"])
    if size is not None:
        if kind == "texture" and (size < TEXTURE_STEP or size % TEXTURE_STEP):
            raise CLIError(
                f"--size must be a multiple of {TEXTURE_STEP} for a texture (the texture network "
                f"doubles a latent grid 5 times), got {size}"
            )
        if kind != "texture" and size not in IMAGE_SIDES:
            raise CLIError(
                f"--size must be one of {', '.join(map(str, IMAGE_SIDES))} for images and video "
                f"(the image network doubles a 4 x 4 grid), got {size}"
            )
        return int(size)
    if paper:
        return int(DEFAULTS[kind]["size"])
    cap = SIDE_CAP["gpu" if device == "gpu" else "cpu"][kind]
    if native is None:
        return min(cap, 64)
    side = min(native)
    if kind == "texture":
        return int(min(cap, max(TEXTURE_STEP, side // TEXTURE_STEP * TEXTURE_STEP)))
    return _nearest_side(side, cap)


# --- the model ----------------------------------------------------------------------------------


def model_spec(kind: str, cfg: dict[str, Any], n_channels: int) -> dict[str, Any]:
    """A JSON-able description from which :func:`build_generator` rebuilds the network."""
    w = cfg.get("width", 1.0)

    def widths(base):
        return [max(2, int(round(c * w))) for c in base]

    if kind == "texture":
        size = cfg["size"]
        if size % 32:
            raise CLIError(f"--size must be a multiple of 32 for textures, got {size}")
        return {
            "builder": "texture",
            "channels": widths((512, 256, 128, 64)),
            "out_channels": n_channels,
            "latent_size": size // 32,
        }
    if kind == "sound":
        length = cfg["length"]
        if length % 1000:
            raise CLIError(f"--length must be a multiple of 1000 for sound, got {length}")
        return {"builder": "sound", "channels": widths((256, 128)), "latent_length": length // 1000}
    return {
        "builder": "object",
        "latent_dim": cfg["latent_dim"],
        "out_channels": n_channels,
        "channels": widths((512, 256, 128, 64, 32)),
        "image_size": cfg["size"],
    }


def build_generator(spec: dict[str, Any], seed: int, source: Path | None = None) -> Any:
    """The network of ``spec``; ``source``: the model.json it was read from, named in errors."""
    from ..generator import build

    try:
        kwargs = {
            k: (tuple(v) if isinstance(v, list) else v) for k, v in spec.items() if k != "builder"
        }
        return build(spec["builder"], rng=np.random.default_rng(seed), **kwargs)
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        if source is None and isinstance(err, ValueError):
            raise CLIError(str(err)) from err
        where = f"{source}: its 'spec'" if source is not None else "the network's spec"
        raise CLIError(
            f"{where} does not describe a network ({type(err).__name__}: {err}); restore the "
            "run's model.json, or train a new run"
        ) from err


def make_abp(
    spec: dict[str, Any], cfg: dict[str, Any], seed: int, device: str, source: Path | None = None
) -> Any:
    from ..abp import ABP
    from ..optim import SGD, Adam

    g = build_generator(spec, seed, source)
    try:
        opt = Adam(lr=cfg["lr"]) if cfg["optimizer"] == "adam" else SGD(lr=cfg["lr"])
        abp = ABP(
            g,
            sigma=cfg["sigma"],
            langevin_steps=cfg["langevin_steps"],
            step_size=cfg["step_size"],
            init_z=cfg["init_z"],
            optimizer=opt,
            seed=seed,
        )
    except (KeyError, TypeError, ValueError) as err:
        if source is None:
            raise
        raise CLIError(
            f"{source}: its 'config' does not give the run's settings ({type(err).__name__}: "
            f"{err}); restore the run's model.json, or train a new run"
        ) from err
    return abp.to(device)


def _write_json(path: Path, obj: Any) -> None:
    from ..io.atomic import atomic_write

    text = json.dumps(obj, indent=2)
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


KINDS = ("texture", "sound", "images", "video")


def read_meta(path: Path) -> dict[str, Any]:
    """A run's model.json, checked: a JSON object with ``spec``, ``config``, ``seed``, ``kind``."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise CLIError(
            f"{path}: unreadable ({type(err).__name__}: {err}); this run folder's model.json "
            "is damaged: restore it, or train a new run"
        ) from err
    problem = None
    if not isinstance(meta, dict):
        problem = "it is not a JSON object"
    elif not isinstance(meta.get("spec"), dict) or meta["spec"].get("builder") not in (
        "texture",
        "sound",
        "object",
    ):
        problem = "its 'spec' (the network) is missing or has no known 'builder'"
    elif not isinstance(meta.get("config"), dict):
        problem = "its 'config' (the settings) is missing"
    elif meta.get("kind") not in KINDS:
        problem = f"its 'kind' must be one of {', '.join(KINDS)}"
    elif isinstance(meta.get("seed"), bool) or not isinstance(meta.get("seed"), int):
        problem = "its 'seed' must be an integer"
    if problem:
        raise CLIError(
            f"{path}: {problem}; this run folder's model.json is damaged: restore it, or "
            "train a new run"
        )
    return meta


def load_run(run: str, device: str) -> tuple[Any, dict[str, Any]]:
    """Rebuild the ABP of a run folder from its model.json and checkpoint.npz."""
    folder = Path(run)
    spec_path, ckpt = folder / "model.json", folder / "checkpoint.npz"
    if not spec_path.is_file() or not ckpt.is_file():
        raise CLIError(
            f"{run}: not a run folder (needs model.json and checkpoint.npz written by `abp train`)"
        )
    meta = read_meta(spec_path)
    abp = make_abp(meta["spec"], meta["config"], meta["seed"], "cpu", spec_path)
    abp.load(ckpt)
    return abp.to(device), meta


# --- the plan: settings from the data, the device and one timed step -----------------------------


def choose_settings(
    args: argparse.Namespace, kind: str, prep: Prepared, device: str
) -> tuple[dict[str, Any], list[str]]:
    """The run's settings: --paper's or the machine's defaults, then the options given.

    Returns the settings and, for the plan, which of them were chosen here rather than given.
    """
    Y = prep.Y
    n = len(Y)
    cfg: dict[str, Any] = {"rate": AUTO_RATE, "length": None, "sigma": 0.3, "width": None}
    cfg.update(prep.cfg)
    chosen: list[str] = []
    if args.paper:
        cfg.update({k: v for k, v in DEFAULTS[kind].items() if k not in prep.cfg})
        cfg.update(PAPER_LEARNING)
    else:
        cfg.update(AUTO[kind])
        cfg.update(AUTO_LEARNING)
        cfg["iterations"] = None
        cfg["batch_size"] = None if n <= 64 else AUTO_BATCH
        if kind in ("images", "video"):
            pixels = int(np.prod(Y.shape[1:]))
            share = 10 if kind == "images" else 3
            cfg["latent_dim"] = int(min(100, max(2, n // share), max(2, pixels // 8)))
            chosen.append("latent_dim")
    for key in (
        "latent_dim",
        "width",
        "iterations",
        "batch_size",
        "langevin_steps",
        "step_size",
        "sigma",
        "optimizer",
        "lr",
    ):
        v = getattr(args, key, None)
        if v is not None:
            cfg[key] = v
            if key in chosen:
                chosen.remove(key)
    if args.optimizer is not None and args.lr is None:  # that optimiser's usual step
        cfg["lr"] = 1e-4 if args.optimizer == "sgd" else (2e-4 if args.paper else 2e-3)
    if cfg.get("batch_size") is not None and cfg["batch_size"] > n:
        if args.batch_size is not None:
            raise CLIError(f"--batch-size {cfg['batch_size']} is larger than the {n} examples")
        cfg["batch_size"] = n
    return cfg, chosen


def _time_step(abp: Any, Y: np.ndarray, batch: int, mask: Any, budget: float) -> float:
    """Seconds of one learning step (Langevin + learning) on ``batch`` examples, on a copy.

    The copy runs two steps on the first examples and the second is timed: the first also pays
    for one-time set-up (compiled kernels, routes, the heap). The model itself is untouched.
    """
    from ..observation import Masked

    probe = copy.deepcopy(abp)
    obs = Masked(mask[:batch]) if mask is not None else None
    history = probe.fit(Y[:batch], iterations=1, batch_size=batch, observation=obs)
    seconds = history[-1]["seconds"]
    if seconds < budget / 10:  # the first step also paid for one-time set-up: time another
        history = probe.fit(Y[:batch], iterations=2, batch_size=batch, observation=obs)
        seconds = history[-1]["seconds"]
    return float(seconds)


def plan_run(
    args: argparse.Namespace,
    kind: str,
    prep: Prepared,
    cfg: dict[str, Any],
    mask: Any,
    fixed_spec: dict | None = None,
) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """Build the model; choose the width and the iterations from timed steps.

    Widths are tried from the widest of the device's list until ``MIN_ITERATIONS`` fit in the
    time budget (``--minutes``); the iterations are then as many as fit (between
    ``MIN_ITERATIONS`` and ``MAX_ITERATIONS``). A width or an iteration count given (or
    ``--paper``'s) is kept. Returns the model, its spec and the timing.
    """
    Y = prep.Y
    n = len(Y)
    budget = 60.0 * (
        args.minutes if args.minutes is not None else (QUICK_MINUTES if args.quick else MINUTES)
    )
    batch = cfg["batch_size"] or n
    steps_per_iteration = math.ceil(n / batch)
    if fixed_spec is not None or cfg["width"] is not None:
        widths = [cfg["width"]]
    else:
        widths = list(WIDTHS["gpu" if args.device == "gpu" else "cpu"])
    for i, width in enumerate(widths):
        cfg["width"] = width
        spec = fixed_spec or model_spec(kind, cfg, Y.shape[1])
        abp = make_abp(spec, cfg, args.seed, args.device)
        abp.cuda_graph = args.cuda_graph
        step = _time_step(abp, Y, batch, mask, budget)
        per_iteration = step * steps_per_iteration
        fits = budget / per_iteration
        if cfg["iterations"] is not None or fits >= MIN_ITERATIONS or i == len(widths) - 1:
            break
    auto_iterations = cfg["iterations"] is None
    if auto_iterations:
        cfg["iterations"] = int(min(MAX_ITERATIONS, max(MIN_ITERATIONS, fits)))
    timing = {
        "step": step,
        "iteration": per_iteration,
        "steps_per_iteration": steps_per_iteration,
        "budget": budget,
        "auto_iterations": auto_iterations,
        "auto_width": len(widths) > 1,
    }
    return abp, spec, timing


def _channel_list(spec: dict[str, Any], kind: str, size: int | None) -> str:
    widths = list(spec["channels"])
    if kind in ("images", "video") and size:
        widths = widths[: int(round(math.log2(size / 4)))]
    return "-".join(str(c) for c in widths)


def print_plan(
    kind: str,
    prep: Prepared,
    cfg: dict[str, Any],
    spec: dict[str, Any],
    abp: Any,
    timing: dict[str, Any],
    args: argparse.Namespace,
    start: int,
) -> None:
    """The data, the network, the learning and the estimated time, before the first iteration."""
    Y = prep.Y
    shape = " x ".join(str(s) for s in Y.shape[1:])
    colour = {1: "grey", 3: "colour"}.get(Y.shape[1], "") if kind != "sound" else "mono"
    _say(f"data: {prep.source}; learned as {len(Y)} x {shape} ({colour})")
    for note in prep.notes:
        _say(f"  changed: {note}")
    net = {"images": "image", "video": "image (frames)", "texture": "texture", "sound": "sound"}
    detail = f"widths {_channel_list(spec, kind, cfg.get('size'))} (--width {cfg['width']:g}"
    detail += ", chosen for the time budget)" if timing["auto_width"] else ")"
    latent = " x ".join(str(s) for s in abp.latent_shape)
    dim = f"d = {cfg['latent_dim']}" if kind in ("images", "video") else f"Z of {latent}"
    _say(
        f"network: {net[kind]}, {dim}, {detail}, {abp.generator.num_params():,} parameters"
        + ("; the paper's settings (--paper)" if args.paper else "")
    )
    opt = "Adam" if cfg["optimizer"] == "adam" else "SGD"
    batch = cfg["batch_size"] or len(Y)
    _say(
        f"learning: {opt} lr {cfg['lr']:g}, {cfg['langevin_steps']} Langevin steps of delta "
        f"{cfg['step_size']:g}, sigma {cfg['sigma']:g}, batches of {batch} "
        f"({timing['steps_per_iteration']} per iteration)"
    )
    left = max(0, cfg["iterations"] - start)
    total = left * timing["iteration"]
    how = (
        f"as many as fit in {_duration(timing['budget'])} (--minutes; --iterations N to choose)"
        if timing["auto_iterations"]
        else "--iterations"
        if args.iterations is not None
        else "--paper"
    )
    _say(
        f"time: one learning step took {timing['step']:.3g} s on {args.device}, so about "
        f"{timing['iteration']:.3g} s per iteration; {left} iterations ({how}): about "
        f"{_duration(total)}"
    )
    if timing["auto_iterations"] and total > 1.5 * timing["budget"]:
        _say(
            f"  note: {MIN_ITERATIONS} iterations of the thinnest network take longer than "
            f"--minutes {timing['budget'] / 60:g}: a smaller --size, fewer --iterations, or "
            "--device gpu would be faster"
        )


# --- output -------------------------------------------------------------------------------------


def _example_names(stem: str, kind: str, n: int) -> list[str]:
    """The file names :func:`save_examples` writes for ``n`` examples under ``stem``."""
    if kind == "sound":
        return [f"{stem}_{i}.wav" for i in range(min(n, 4))]
    return [f"{stem}.png"]


def free_stem(folder: Path, stem: str, names: Any, overwrite: bool) -> str:
    """``stem``, or ``stem_2``, ``stem_3`` ... the first whose files (``names(stem)``) are new."""
    if overwrite:
        return stem
    candidate, k = stem, 1
    while any((folder / name).exists() for name in names(candidate)):
        k += 1
        candidate = f"{stem}_{k}"
    return candidate


def save_examples(path: Path, x: Any, kind: str, rate: int, nrow: int | None = None) -> list[str]:
    """Write images as a PNG grid ``path.png``, sound as ``path_0.wav`` ...; return the names."""
    from ..backend import to_numpy
    from ..io import data as D

    x = to_numpy(x)
    names = _example_names(path.name, kind, len(x))
    for name, clip in zip(names, x, strict=False):
        if kind == "sound":
            D.save_wav(path.parent / name, clip, rate)
    if kind != "sound":
        D.save_image_grid(path.parent / names[0], x, nrow=nrow)
    return names


def write_outputs(
    folder: Path, stem: str, x: Any, kind: str, rate: int, overwrite: bool, nrow: int | None = None
) -> list[str]:
    """Save examples under a free name in ``folder``; say when a name was taken or replaced."""
    folder.mkdir(parents=True, exist_ok=True)
    n = len(x)
    chosen = free_stem(folder, stem, lambda s: _example_names(s, kind, n), overwrite)
    existing = [m for m in _example_names(stem, kind, n) if (folder / m).exists()]
    if existing and chosen != stem:
        _say(f"{folder / existing[0]} exists: writing {chosen} instead (--overwrite replaces)")
    elif existing:
        _say(f"replacing {', '.join(str(folder / m) for m in existing)} (--overwrite)")
    return save_examples(folder / chosen, x, kind, rate, nrow=nrow)


class Progress:
    """Progress on stderr: a line per iteration (one updated line on a terminal), and a line
    every ``HEARTBEAT`` seconds within an iteration that takes longer."""

    def __init__(self, total: int, start: int = 0, per_iteration: float | None = None) -> None:
        self.total, self.start, self.t0 = total, start, time.perf_counter()
        self.per_iteration = per_iteration
        self.tty = sys.stderr.isatty()
        self.last = self.t0  # when the last line was printed
        self.iteration = start
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def __enter__(self) -> Progress:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)
        if self.tty:
            print(file=sys.stderr, flush=True)

    def _print(self, line: str) -> None:
        with self._lock:
            self.last = time.perf_counter()
            if self.tty:
                print("\r" + line.ljust(100), end="", file=sys.stderr, flush=True)
            else:
                print(line, file=sys.stderr, flush=True)

    def _beat(self) -> None:
        while not self._stop.wait(min(0.5, HEARTBEAT / 4)):
            now = time.perf_counter()
            if now - self.last >= HEARTBEAT:
                running = now - self._iteration_start
                guess = ""
                if self.per_iteration:
                    guess = f" of about {self.per_iteration:.0f} s"
                self._print(
                    f"iteration {self.iteration + 1}/{self.total} running: {running:.0f} s"
                    f"{guess}, {now - self.t0:.0f} s elapsed"
                )

    @property
    def _iteration_start(self) -> float:
        return getattr(self, "_started", self.t0)

    def __call__(self, abp: Any, record: dict[str, Any]) -> None:
        k = record["iteration"]
        self.iteration = k
        self._started = time.perf_counter()
        done = k - self.start
        elapsed = self._started - self.t0
        left = elapsed / max(done, 1) * (self.total - k)
        self._print(
            f"iteration {k}/{self.total}  error {record['recon_error']:.4f}  "
            f"{elapsed:.1f} s elapsed, about {_duration(left)} left"
        )


# --- commands -----------------------------------------------------------------------------------


def describe_occlusion(name: str, hw: tuple[int, int]) -> tuple[str, str]:
    """A file-name tag and a sentence for an occlusion name on images of ``hw`` pixels."""
    from .occlusion import scaled_occlusion

    s = scaled_occlusion(name, hw)
    side, label = min(hw), name.strip().upper()
    if s["kind"] == "square":
        px = s["side"]
        size = label[1:]
        return (
            f"{label}_{px}px",
            f"{label}: one {px} x {px} square hidden per image ({size} px on the paper's 64-pixel "
            f"images, scaled to {side} px)",
        )
    b = s["block"]
    return (
        f"{label}_{b}px-blocks",
        f"{label}: about {s['fraction']:.0%} of the pixels hidden in {b} x {b} blocks (3 x 3 on "
        f"the paper's 64-pixel images, scaled to {side} px)",
    )


def cmd_train(args: argparse.Namespace) -> int:
    from ..abp import DivergenceError

    if args.cuda_graph and args.device != "gpu":
        raise CLIError("--cuda-graph replays the Langevin loop as a CUDA graph: add --device gpu")
    out = Path(args.out)
    ckpt, log = out / "checkpoint.npz", out / "log.jsonl"
    if ckpt.exists() and not args.resume:
        raise CLIError(
            f"{out} already holds a run; pass --resume to continue it, or choose another --out"
        )
    meta = None
    if args.resume and (out / "model.json").is_file():
        meta = read_meta(out / "model.json")
        resume_options(args, meta, out)  # the run's data settings; refuses other ones
    if args.seed is None:
        args.seed = 0
    kind = args.kind if args.kind != "auto" else detect_kind(args.data)
    if meta is not None:
        kind = meta["kind"]

    prep = prepare_data(
        args.data, kind, args, args.device, None if meta is None else meta["config"]
    )
    Y = prep.Y
    fingerprint = data_fingerprint(Y)
    if meta is not None:
        same_data(meta, fingerprint, args.data, out)
    if kind == "sound":
        check_audible(Y, args.data, prep.cfg.get("rate") or AUTO_RATE)
    if kind in ("images", "video") and len(Y) < 2:
        what = "images" if kind == "images" else "frames"
        raise CLIError(f"{args.data}: need at least 2 {what} to learn from, found {len(Y)}")
    mask = None
    if args.occlusion:
        from .occlusion import occlusion_mask

        if kind == "sound":
            raise CLIError("--occlusion hides pixels: it works on images, textures and video")
        _, text = describe_occlusion(args.occlusion, Y.shape[-2:])
        mask = occlusion_mask(args.occlusion, len(Y), Y.shape[-2:], rng=args.seed)
        prep.notes.append("occluded: " + text)

    if meta is None:
        cfg, _ = choose_settings(args, kind, prep, args.device)
        if kind == "video":
            cfg["fps"] = args.fps
        fixed_spec = None
        cfg["limit"] = args.limit
    else:
        cfg = dict(meta["config"])
        for key in ("iterations", "batch_size", *RESUME_SETTINGS):  # applied to the run
            if getattr(args, key, None) is not None:
                cfg[key] = getattr(args, key)
        fixed_spec = meta["spec"]
    Yt = Y * mask if mask is not None else Y  # the hidden pixels are never seen
    try:
        abp, spec, timing = plan_run(
            args, kind, Prepared(Yt, prep.cfg, prep.source, []), cfg, mask, fixed_spec
        )
    except DivergenceError as err:  # the timed steps, on a copy: nothing of the run changed
        hint = ""
        if err.option is not None and err.suggestion is not None:
            again = "the same command" + (" (with --resume)" if args.resume else "")
            hint = f"; run {again} with {err.option} {err.suggestion:g}"
        raise CLIError(
            f"the timed first learning step, on a copy of the model, diverged: {err}{hint}"
        ) from err
    out.mkdir(parents=True, exist_ok=True)
    if meta is None:
        meta = {
            "spec": spec,
            "config": cfg,
            "seed": args.seed,
            "kind": kind,
            "data": args.data,
            "occlusion": args.occlusion,
            **fingerprint,
        }
    else:
        meta = {**meta, "config": cfg}
    start = 0
    if args.resume and ckpt.exists():
        abp.load(ckpt)
        start = abp.iteration
        if cfg["iterations"] <= start:
            raise CLIError(
                f"{out}: the run has already completed {start} iterations (its --iterations is "
                f"{cfg['iterations']}); pass --iterations N with N > {start} to continue it"
            )
        changed = apply_resume_settings(abp, args)
        _say(
            f"resuming {out} at iteration {abp.iteration}"
            + (f" with {', '.join(changed)}" if changed else "")
        )
    _write_json(out / "model.json", meta)
    print_plan(kind, prep, cfg, spec, abp, timing, args, start)

    observation = None
    if mask is not None:
        from ..observation import Masked

        observation = Masked(mask)
    try:
        with Progress(cfg["iterations"], abp.iteration, timing["iteration"]) as progress:
            abp.fit(
                Yt,
                iterations=cfg["iterations"],
                batch_size=cfg["batch_size"],
                observation=observation,
                checkpoint_path=ckpt,
                checkpoint_every=args.checkpoint_every,
                log_path=log,
                callback=progress,
            )
    except KeyboardInterrupt:
        _say(
            f"\ninterrupted: checkpoint saved at iteration {abp.iteration} in {ckpt}; continue "
            f"with the same command and --resume"
        )
        return 130
    except DivergenceError as err:
        hint = ""
        if err.option is not None and err.suggestion is not None:
            hint = (
                f" Continue from iteration {err.iteration - 1} with the same command and "
                f"--resume {err.option} {err.suggestion:g}"
            )
        raise CLIError(f"{err}{hint}") from err

    rate = cfg["rate"]
    existed = any(out.glob("*.png")) or any(out.glob("*.wav")) or any(out.glob("*.gif"))
    if kind == "video":
        written = _video_outputs(out, abp, Yt, args)
    else:
        written = save_examples(out / "reconstruction", abp.generator.forward(abp.Z), kind, rate)
        written += save_examples(out / "observed", Yt, kind, rate)
        sample_n = 1 if kind in ("texture", "sound") else 16
        written += save_examples(out / "samples", abp.sample(sample_n), kind, rate)
    verb = "updated" if existed else "wrote"
    _say(f"done: {out} ({verb} {', '.join(written)}; checkpoint.npz, log.jsonl)")
    return 0


# --- resuming a run -------------------------------------------------------------------------------

#: Settings that --resume applies to the run from the next iteration (recorded in the log, the
#: checkpoint and model.json): the learning rate, and the Langevin dynamics' step size, noise and
#: steps. dest -> option.
RESUME_SETTINGS = {
    "lr": "--lr",
    "step_size": "--step-size",
    "sigma": "--sigma",
    "langevin_steps": "--langevin-steps",
}
#: Options that fix the data or the network of a run: --resume takes the run's, and refuses
#: others. dest -> (option, where the run keeps it: "config", or a key of model.json).
RUN_OPTIONS = {
    "size": ("--size", "config"),
    "channels": ("--channels", "config"),
    "length": ("--length", "config"),
    "rate": ("--rate", "config"),
    "limit": ("--limit", "config"),
    "latent_dim": ("--latent-dim", "config"),
    "width": ("--width", "config"),
    "optimizer": ("--optimizer", "config"),
    "occlusion": ("--occlusion", "meta"),
    "seed": ("--seed", "meta"),
    "kind": ("--kind", "meta"),
}


def resume_options(args: argparse.Namespace, meta: dict[str, Any], out: Path) -> None:
    """Set the data and network options left out to the run's; refuse ones that differ."""
    for dest, (option, where) in RUN_OPTIONS.items():
        source = meta["config"] if where == "config" else meta
        if dest not in source:  # an older run that did not record it
            if dest == "seed" and args.seed is None:
                args.seed = 0
            continue
        run_value = source[dest]
        given = getattr(args, dest, None)
        if dest in ("channels", "kind") and given == "auto":
            given = None
        if given is None:
            if dest not in ("channels", "kind"):
                setattr(args, dest, run_value)
            continue
        if dest == "channels":
            given = int(given)
        if dest == "occlusion" and run_value is not None:
            same = str(given).strip().upper() == str(run_value).strip().upper()
        else:
            same = given == run_value
        if not same:
            shown = "none" if run_value is None else run_value
            extra = " (the checkpoint holds its optimiser's state)" if dest == "optimizer" else ""
            raise CLIError(
                f"{option} {given} differs from the run's {option} {shown} in {out}{extra}: a "
                f"resumed run keeps the data, the network and the seed it started with; leave "
                f"{option} out to continue it, or train a new run with another --out"
            )


def apply_resume_settings(abp: Any, args: argparse.Namespace) -> list[str]:
    """Apply --lr, --step-size, --sigma and --langevin-steps to a loaded run; say what changed.

    ``--lr`` sets the optimiser's base learning rate (the one that learning-rate decay
    multiplies); the others the Langevin dynamics' settings. The checkpoints written from now
    on, and the log's records, hold the new values.
    """
    changed = []
    for dest, option in RESUME_SETTINGS.items():
        v = getattr(args, dest, None)
        if v is None:
            continue
        if dest == "lr":
            old = abp.optimizer.initial_lr
            abp.optimizer.initial_lr = float(v)
            abp.optimizer.lr = float(v) * abp.lr_decay**abp.iteration
        else:
            old = getattr(abp, dest)
            setattr(abp, dest, int(v) if dest == "langevin_steps" else float(v))
        if v != old:
            changed.append(f"{option} {v:g} (was {old:g})")
    return changed


def data_fingerprint(Y: np.ndarray) -> dict[str, Any]:
    """What model.json records of the training data, to recognise them on --resume."""
    import hashlib

    digest = hashlib.sha256(np.ascontiguousarray(Y).tobytes()).hexdigest()
    return {"data_shape": list(Y.shape), "data_sha256": digest}


def same_data(meta: dict[str, Any], fingerprint: dict[str, Any], data: str, out: Path) -> None:
    """Refuse to resume a run on data other than its own."""
    shape, digest = meta.get("data_shape"), meta.get("data_sha256")
    if shape is None or digest is None:  # an older run: fit compares the shapes
        return
    if list(shape) != fingerprint["data_shape"]:
        why = (
            f"{data} gives {len(fingerprint['data_shape'])}-d data of shape "
            f"{tuple(fingerprint['data_shape'])}, the run learned {tuple(shape)}"
        )
    elif digest != fingerprint["data_sha256"]:
        why = f"{data} gives data of the run's shape {tuple(shape)} but other values"
    else:
        return
    raise CLIError(
        f"the data differ from the run's in {out} ({meta.get('data', 'its data')}): {why}; "
        "resume with the run's data and settings, or train a new run with another --out"
    )


def check_audible(Y: np.ndarray, data: str, rate: int) -> None:
    """Refuse a sound that is more than half silence or padding: it would learn silence."""
    from ..io.data import SILENCE

    x = np.abs(Y.reshape(-1))
    audible = np.flatnonzero(x >= SILENCE)
    sound = int(audible[-1]) + 1 if audible.size else 0
    if 2 * sound >= x.size:
        return
    if sound * 2 >= SOUND_STEP:
        fix = f"pass a --length of at most {sound * 2 // SOUND_STEP * SOUND_STEP:,}"
    else:
        fix = (
            f"the sound network needs a clip of at least {SOUND_STEP // 2:,} samples "
            f"({SOUND_STEP // 2 / rate:.3f} s at {rate:,} Hz)"
        )
    raise CLIError(
        f"{data}: only the first {sound:,} of the {x.size:,} samples to learn are sound (the "
        f"rest is silence or padding), so the network would learn mostly silence; {fix}"
    )


def _video_outputs(out: Path, abp: Any, Y: np.ndarray, args: argparse.Namespace) -> list[str]:
    """A dynamic texture's outputs: the auto-regression on Z, and the clips."""
    from ..io import data as D
    from .dynamic import decode, fit_dynamics, save_clip

    dyn = fit_dynamics(abp.Z)
    dyn.save(out / "dynamics.npz")
    recon = decode(abp.generator, abp.Z)
    synth = decode(abp.generator, dyn.run(len(Y), np.random.default_rng(args.seed)))
    written = [p.name for p in save_clip(out / "observed", Y, fps=args.fps, mp4=False)]
    written += [p.name for p in save_clip(out / "reconstruction", recon, fps=args.fps, mp4=False)]
    written += [p.name for p in save_clip(out / "synthesis", synth, fps=args.fps)]
    show = slice(0, min(len(Y), 8))
    D.save_image_grid(
        out / "frames.png", np.concatenate([Y[show], recon[show], synth[show]]), nrow=min(len(Y), 8)
    )
    _say(
        f"dynamics: Z_t - mu = A (Z_(t-1) - mu) + e_t fitted to the {len(Y)} frames' Z "
        f"(spectral radius of A: {dyn.spectral_radius:.3f}); frames.png rows: original, "
        f"reconstruction, synthesis"
    )
    return written + ["frames.png", "dynamics.npz"]


def _run_name(run: str) -> str:
    return Path(run).resolve().name or "run"


def cmd_synthesize(args: argparse.Namespace) -> int:
    abp, meta = load_run(args.run, args.device)
    kind = meta["kind"]
    out = Path(args.out)
    name = _run_name(args.run)
    if kind == "video":
        from .dynamic import Dynamics, decode, save_clip

        if args.scale != 1:
            raise CLIError("--scale needs a fully convolutional network (texture or sound)")
        path = Path(args.run) / "dynamics.npz"
        if not path.is_file():
            raise CLIError(f"{args.run}: no dynamics.npz (the auto-regression on Z); train again")
        dyn = Dynamics.load(path)
        frames = args.frames or len(dyn.Z)
        clip = decode(abp.generator, dyn.run(frames, np.random.default_rng(args.seed)))
        out.mkdir(parents=True, exist_ok=True)
        wanted = f"{name}_synthesis_{frames}frames"
        stem = free_stem(
            out,
            f"{name}_synthesis_{frames}frames",
            lambda s: [s + ".gif", s + ".mp4"],
            args.overwrite,
        )
        if stem != wanted:
            _say(f"{out / wanted}.gif exists: writing {stem} instead (--overwrite replaces)")
        elif args.overwrite and (out / f"{wanted}.gif").exists():
            _say(f"replacing {out / wanted}.gif (--overwrite)")
        written = save_clip(out / stem, clip, fps=args.fps or meta["config"].get("fps", 10))
        _say(f"wrote {', '.join(str(p) for p in written)} ({frames} frames)")
        return 0
    if args.frames is not None:
        raise CLIError("--frames is for video runs; use --n for the number of samples")
    latent = tuple(abp.latent_shape)
    if args.scale != 1:
        if kind not in ("texture", "sound"):
            raise CLIError("--scale needs a fully convolutional network (texture or sound)")
        trained = latent
        latent = (
            latent[:-2] + tuple(int(s * args.scale) for s in latent[-2:])
            if kind == "texture"
            else latent[:-1] + (int(latent[-1] * args.scale),)
        )
        if min(latent) < 1:
            smallest = 1 / min(trained[-2:] if kind == "texture" else trained[-1:])
            raise CLIError(
                f"--scale {args.scale:g} shrinks the run's latent {trained} to {latent}, which "
                f"holds nothing: use --scale {smallest:g} or more"
            )
        check_memory(abp, args.n, latent, f"--scale {args.scale:g}")
    rng = np.random.default_rng(args.seed)
    x = abp.sample(args.n, latent_shape=latent, rng=rng if abp.device == "cpu" else None)
    stem = f"{name}_synthesized" + (f"_x{args.scale:g}" if args.scale != 1 else "")
    written = write_outputs(out, stem, x, kind, meta["config"]["rate"], args.overwrite)
    _say(f"wrote {', '.join(str(out / w) for w in written)}")
    return 0


def _memory_bytes() -> int | None:
    """This machine's physical memory in bytes, where it can be told."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(abp: Any, n: int, latent: tuple[int, ...], option: str) -> None:
    """Refuse a synthesis whose network's largest layer would not fit in this machine's memory."""
    shape: tuple[int, ...] = (n, *latent)
    largest = math.prod(shape)
    for layer in abp.generator.layers:
        shape = layer.output_shape(shape)
        largest = max(largest, math.prod(shape))
    need = largest * np.dtype(abp.dtype).itemsize * 2  # a layer's input and output at least
    have = _memory_bytes()
    if have is not None and need > have:
        out = abp.generator.output_shape(latent)
        raise CLIError(
            f"{option} asks for {n} sample(s) of shape {' x '.join(map(str, out))}: about "
            f"{need / 2**30:,.0f} GiB in the network's largest layer, more than this machine's "
            f"{have / 2**30:,.0f} GiB; use a smaller --scale (or --n)"
        )


def _load_like_run(path: str, meta: dict[str, Any], args: argparse.Namespace) -> np.ndarray:
    """Data read for the run's network (its size, channels and rate); changes are printed."""
    fixed = dict(meta["config"])
    fixed["length"] = None  # a sound is read whole: the latent length follows it
    prep = prepare_data(path, meta["kind"], args, args.device, fixed)
    _say(f"data: {prep.source}")
    for note in prep.notes:
        _say(f"  changed: {note}")
    return prep.Y


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from ..backend import to_numpy
    from .evaluation import mean_abs_error

    abp, meta = load_run(args.run, args.device)
    kind = "images" if meta["kind"] == "video" else meta["kind"]
    Y = _load_like_run(args.data, meta, args)
    rng = np.random.default_rng(args.seed)
    rec = to_numpy(
        abp.reconstruct(Y, steps=args.langevin_steps, rng=rng if abp.device == "cpu" else None)
    )
    err = mean_abs_error(Y, rec)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n = len(Y)

    def names(s):
        return _example_names(s + "_input", kind, n) + _example_names(s + "_output", kind, n)

    stem = free_stem(out, f"{_run_name(args.run)}_reconstruct", names, args.overwrite)
    rate = meta["config"]["rate"]
    written = save_examples(out / f"{stem}_input", Y, kind, rate)
    written += save_examples(out / f"{stem}_output", rec, kind, rate)
    print(
        json.dumps({"data": args.data, "kind": meta["kind"], "examples": n, "mean_abs_error": err})
    )
    _say(f"wrote {', '.join(written)} in {out}")
    return 0


def cmd_interpolate(args: argparse.Namespace) -> int:
    from .evaluation import interpolate

    abp, meta = load_run(args.run, args.device)
    if meta["kind"] not in ("images", "video"):
        raise CLIError("interpolate works on image runs (objects, faces) and video runs")
    Z = abp.Z
    for i in (args.a, args.b):
        if not 0 <= i < len(Z):
            raise CLIError(
                f"example index {i} out of range: the run has {len(Z)} examples (0 to {len(Z) - 1})"
            )
    path = interpolate(Z[args.a], Z[args.b], args.n, method=args.method)
    x = abp.generator.forward(path)
    out = Path(args.out)
    stem = f"{_run_name(args.run)}_interpolate_{args.method}_{args.a}-{args.b}"
    written = write_outputs(out, stem, x, "images", 0, args.overwrite, nrow=args.n)
    _say(f"wrote {out / written[0]}")
    return 0


def cmd_complete(args: argparse.Namespace) -> int:
    from ..backend import to_numpy
    from ..observation import Masked
    from .evaluation import mean_abs_error
    from .occlusion import occlusion_mask

    abp, meta = load_run(args.run, args.device)
    if meta["kind"] != "images":
        raise CLIError("complete works on image runs")
    Y = _load_like_run(args.data, meta, args)
    tag, text = describe_occlusion(args.occlusion, Y.shape[-2:])
    _say(f"occlusion {text}")
    mask = occlusion_mask(args.occlusion, len(Y), Y.shape[-2:], rng=args.seed)
    rng = np.random.default_rng(args.seed)
    rec = to_numpy(
        abp.reconstruct(
            Y * mask,
            steps=args.langevin_steps,
            observation=Masked(mask),
            rng=rng if abp.device == "cpu" else None,
        )
    )
    hidden = np.broadcast_to(mask == 0, Y.shape)
    err = mean_abs_error(Y, rec, mask=hidden)
    out = Path(args.out)
    grid = np.concatenate([Y * mask, rec, Y])
    stem = f"{_run_name(args.run)}_complete_{tag}"
    written = write_outputs(out, stem, grid, "images", 0, args.overwrite, nrow=len(Y))
    print(
        json.dumps(
            {
                "data": args.data,
                "examples": len(Y),
                "occlusion": args.occlusion,
                "occlusion_pixels": tag.split("_", 1)[1],
                "mean_abs_error_occluded": err,
            }
        )
    )
    _say(f"wrote {out / written[0]} (rows: occluded, recovered, original)")
    return 0


# --- parser -------------------------------------------------------------------------------------


class _Formatter(argparse.HelpFormatter):
    """Shows each option's default, unless it has none or its help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "default" not in text
            and action.default is not None
            and action.default is not False
            and action.default is not argparse.SUPPRESS
            and (action.option_strings or action.nargs in ("?", "*"))
        ):
            text += " (default: %(default)s)"
        return text


class _TopFormatter(_Formatter, argparse.RawDescriptionHelpFormatter):
    """The command's own help: its examples keep their lines."""


OCCLUSION_HELP = (
    "P.5, P.7, P.9: salt-and-pepper hiding about 50/70/90 %% of the pixels in blocks; M20 ... "
    "M50: one square. Sizes are the paper's on 64-pixel images and scale with the image "
    "(M30 is 30 x 30 at 64 px, 15 x 15 at 32 px; P blocks are 3 px at 64 px)"
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="abp",
        description="Alternating back-propagation for generator networks (Han et al. 2017):\n"
        "learn a generator from images, a texture, a sound or a video, then sample,\n"
        "reconstruct, interpolate and complete with it. `abp COMMAND --help` for each.",
        formatter_class=_TopFormatter,
        epilog="examples:" + __doc__.split("Examples::")[1].split("Errors are")[0]
        if __doc__
        else None,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, summary, description):
        return sub.add_parser(
            name, help=summary, description=description, formatter_class=_Formatter
        )

    def common(sp, reads_files: bool, resumable: bool = False) -> None:
        sp.add_argument("--device", choices=["cpu", "gpu"], default="cpu", help="where to compute")
        if resumable:  # None: not given, so that --resume takes the run's own
            sp.add_argument(
                "--seed",
                type=int,
                help="seed of every random choice (same seed, same run) (default: 0; "
                "--resume: the run's)",
            )
        else:
            sp.add_argument(
                "--seed",
                type=int,
                default=0,
                help="seed of every random choice (same seed, same run)",
            )
        if reads_files:
            sp.add_argument(
                "--skip-bad",
                action="store_true",
                help="leave out unreadable image files (named once) instead of stopping",
            )

    def run_and_out(sp) -> None:
        sp.add_argument("run", help="a run folder written by `abp train` (its --out)")

    def outputs(sp) -> None:
        sp.add_argument(
            "--out",
            default=".",
            help="folder for the files written, named after the run and the command",
        )
        sp.add_argument(
            "--overwrite",
            action="store_true",
            help="replace files of the same name (default: a number is added to the new name)",
        )

    t = command(
        "train",
        "learn a generator from images, a texture, a sound or a video",
        "Learn a generator by alternating back-propagation. By default the run is fitted to "
        "the machine: the data keep their size (rounded to what the network makes), channels "
        "and length; the width, d, iterations and batches are chosen from the data and a timed "
        "step so that the run takes about --minutes; the plan and the estimated time are "
        "printed before the first iteration, and every change to the data is printed once. "
        "--paper takes the paper's settings instead.",
    )
    t.add_argument(
        "data",
        help="a folder of images; one image (its texture); a sound file (WAV, FLAC, OGG...); a "
        "video file, an animated GIF, or a folder of frames with --kind video; or "
        "builtin:texture|sound|shapes|video (generated data)",
    )
    t.add_argument("--out", required=True, help="run folder (checkpoint, log, pictures)")
    t.add_argument(
        "--kind",
        choices=["auto", "texture", "sound", "images", "video"],
        default="auto",
        help="what the data are: auto tells by the path (a folder: images; an image file: "
        "texture; a sound or video file); video for a folder of frames",
    )
    mode = t.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick",
        action="store_true",
        help=f"a first look: the defaults with a budget of {QUICK_MINUTES:g} minute (a smaller "
        "network or fewer iterations), on all the data (built-in data are generated smaller)",
    )
    mode.add_argument(
        "--paper",
        action="store_true",
        help="the paper's settings: images and video at 64 x 64 with d = 100, textures at "
        "224 x 224, sounds of 60,000 samples at 11,025 Hz, full-width networks, SGD lr 1e-4, "
        "30 (images) or 10 Langevin steps, the whole set in one batch, 600 iterations",
    )
    t.add_argument(
        "--minutes",
        type=float,
        help=f"time budget that sets the width and iterations left unset (default: {MINUTES:g}; "
        f"{QUICK_MINUTES:g} with --quick)",
    )
    t.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out with its data, network and seed (options left out take "
        "the run's values; one that differs is refused); --lr, --step-size, --sigma, "
        "--langevin-steps, --iterations and --batch-size given are applied from the next "
        "iteration and recorded in the log, the checkpoint and model.json",
    )
    t.add_argument(
        "--cuda-graph",
        action="store_true",
        help="GPU: replay the Langevin loop as one CUDA graph (ABP(cuda_graph=True))",
    )
    t.add_argument(
        "--iterations",
        type=int,
        help="passes over the data, each Langevin on every example's Z then learning "
        "(default: as many as fit in --minutes, between "
        f"{MIN_ITERATIONS} and {MAX_ITERATIONS}; --paper: 600)",
    )
    t.add_argument(
        "--batch-size",
        type=int,
        help=f"examples per learning step (default: all of them up to 64, else {AUTO_BATCH}; "
        "--paper: all)",
    )
    t.add_argument(
        "--size",
        type=int,
        help="image side in pixels: 8, 16, 32, 64 or 128 for images and video, a multiple of 32 "
        "for a texture (default: the data's own, rounded to what the network makes and at most "
        "64 (texture: 128) on a CPU; --paper: 64, texture 224)",
    )
    t.add_argument(
        "--channels",
        choices=["auto", "1", "3"],
        default="auto",
        help="1: grey, 3: colour; auto keeps grey data grey and colour data colour",
    )
    t.add_argument(
        "--length",
        type=int,
        help="sound length in samples, a multiple of 1000: the clip is cut or padded to it "
        "(default: the whole clip, its last < 1000 samples cut; --paper: 60,000)",
    )
    t.add_argument(
        "--rate",
        type=int,
        help=f"sound sample rate in Hz (default: the file's, at most {AUTO_RATE:,}; --paper: "
        f"{AUTO_RATE:,})",
    )
    t.add_argument("--limit", type=int, help="use only the first N images or frames (default: all)")
    t.add_argument(
        "--latent-dim",
        type=int,
        help="d, the dimension of Z, for images and video (default: a tenth of the number of "
        "images, a third of the frames, between 2 and 100; --paper: 100)",
    )
    t.add_argument(
        "--width",
        type=float,
        help="multiplies every layer's channel count of the paper's network (default: the widest "
        "of "
        + ", ".join(f"{w:g}" for w in WIDTHS["cpu"])
        + " (GPU: "
        + ", ".join(f"{w:g}" for w in WIDTHS["gpu"])
        + f") with {MIN_ITERATIONS} iterations in "
        "--minutes; --paper: 1)",
    )
    t.add_argument(
        "--langevin-steps",
        type=int,
        help="Langevin steps on Z per iteration (default: 10; --paper: 30 for images and video)",
    )
    t.add_argument(
        "--step-size",
        type=float,
        help="Langevin step size delta (default: the paper's, 0.3; 0.1 for sound)",
    )
    t.add_argument("--sigma", type=float, help="std of the noise of Y given Z (default: 0.3)")
    t.add_argument(
        "--optimizer",
        choices=["sgd", "adam"],
        help="sgd: momentum 0.5 (the paper's); adam: beta1 0.5 (default: adam; --paper: sgd)",
    )
    t.add_argument(
        "--lr",
        type=float,
        help="learning rate (default: 0.002 for adam, 2e-4 with --paper; 1e-4 for sgd)",
    )
    t.add_argument(
        "--checkpoint-every", type=int, default=10, help="write checkpoint.npz every N iterations"
    )
    t.add_argument(
        "--fps", type=float, default=10, help="video: frames per second of the clips written"
    )
    t.add_argument("--occlusion", help="learn from occluded images: " + OCCLUSION_HELP)
    common(t, reads_files=True, resumable=True)
    t.set_defaults(func=cmd_train)

    s = command(
        "synthesize",
        "sample new images, textures, sounds or a new video clip from a run",
        "Sample Z ~ N(0, I) and decode it (images, textures, sounds); for a video run, run "
        "the auto-regression on Z from a training frame's Z and decode each step into a clip "
        "(GIF, and MP4 where imageio and PyAV are installed).",
    )
    run_and_out(s)
    s.add_argument("--n", type=int, default=16, help="number of samples (not for video runs)")
    s.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="latent size multiplier for a texture or a sound: 2 makes one twice as large / long",
    )
    s.add_argument(
        "--frames",
        type=int,
        help="video runs: length of the new clip in frames (default: the training clip's)",
    )
    s.add_argument(
        "--fps", type=float, help="video runs: frames per second (default: the run's --fps)"
    )
    outputs(s)
    common(s, reads_files=False)
    s.set_defaults(func=cmd_synthesize)

    r = command(
        "reconstruct",
        "infer Z of new data with W fixed, and reconstruct them",
        "Infer Z of new data by Langevin dynamics from N(0, I) with the run's weights fixed, "
        "and decode it; prints the mean absolute error on the [0, 1] scale as JSON.",
    )
    run_and_out(r)
    r.add_argument("data", help="images (or a sound, a video) like the run's training data")
    r.add_argument(
        "--langevin-steps", type=int, default=100, help="Langevin steps of the inference"
    )
    outputs(r)
    common(r, reads_files=True)
    r.set_defaults(func=cmd_reconstruct)

    i = command(
        "interpolate",
        "images along a path between two training examples' inferred Z",
        "Decode images along a straight line (linear) or a great circle (slerp) between the "
        "inferred Z of two training examples.",
    )
    run_and_out(i)
    i.add_argument(
        "--from", "--a", dest="a", type=int, default=0, help="index of the first example"
    )
    i.add_argument("--to", "--b", dest="b", type=int, default=1, help="index of the last example")
    i.add_argument(
        "--n", type=int, default=8, help="number of images along the path, ends included"
    )
    i.add_argument(
        "--method", choices=["linear", "slerp"], default="linear", help="the path between the Zs"
    )
    outputs(i)
    common(i, reads_files=False)
    i.set_defaults(func=cmd_interpolate)

    c = command(
        "complete",
        "recover occluded pixels of new images, W fixed",
        "Hide part of each image, infer Z from the visible pixels with the run's weights "
        "fixed, and fill in the rest; prints the mean absolute error on the hidden pixels as "
        "JSON.",
    )
    run_and_out(c)
    c.add_argument("data", help="images like the run's training data")
    c.add_argument("--occlusion", default="M30", help=OCCLUSION_HELP)
    c.add_argument(
        "--langevin-steps", type=int, default=100, help="Langevin steps of the inference"
    )
    outputs(c)
    common(c, reads_files=True)
    c.set_defaults(func=cmd_complete)
    for parser in sub.choices.values():  # short names for the values in the usage lines
        for action in parser._actions:
            if action.dest in METAVARS and action.option_strings and action.nargs != 0:
                action.metavar = METAVARS[action.dest]
    return p


METAVARS = {
    "out": "FOLDER",
    "minutes": "M",
    "iterations": "N",
    "batch_size": "N",
    "size": "PIXELS",
    "length": "SAMPLES",
    "rate": "HZ",
    "limit": "N",
    "latent_dim": "D",
    "width": "W",
    "langevin_steps": "N",
    "step_size": "DELTA",
    "sigma": "SIGMA",
    "lr": "LR",
    "checkpoint_every": "N",
    "fps": "FPS",
    "occlusion": "NAME",
    "seed": "SEED",
    "n": "N",
    "scale": "S",
    "frames": "N",
    "a": "I",
    "b": "J",
}


# --- checks of the numbers given -----------------------------------------------------------------

#: dest -> (option, rule): "count>=k" an integer >= k; "positive" a finite number > 0.
NUMBERS: dict[str, tuple[str, str]] = {
    "iterations": ("--iterations", "count>=1"),
    "batch_size": ("--batch-size", "count>=1"),
    "size": ("--size", "count>=1"),
    "length": ("--length", "count>=1"),
    "rate": ("--rate", "count>=1"),
    "limit": ("--limit", "count>=1"),
    "latent_dim": ("--latent-dim", "count>=1"),
    "langevin_steps": ("--langevin-steps", "count>=0"),
    "checkpoint_every": ("--checkpoint-every", "count>=1"),
    "seed": ("--seed", "count>=0"),
    "frames": ("--frames", "count>=1"),
    "a": ("--from", "count>=0"),
    "b": ("--to", "count>=0"),
    "width": ("--width", "positive"),
    "step_size": ("--step-size", "positive"),
    "sigma": ("--sigma", "positive"),
    "lr": ("--lr", "positive"),
    "minutes": ("--minutes", "positive"),
    "fps": ("--fps", "positive"),
    "scale": ("--scale", "positive"),
}
#: The largest sample rate accepted (Hz).
MAX_RATE = 1_000_000


def check_numbers(args: argparse.Namespace) -> None:
    """Every number given is in its range, or a :class:`CLIError` names the option."""
    for dest, (option, rule) in NUMBERS.items():
        v = getattr(args, dest, None)
        if v is None:
            continue
        if rule.startswith("count"):
            low = int(rule.split(">=")[1])
            if v < low:
                what = "a positive integer" if low == 1 else f"an integer >= {low}"
                raise CLIError(f"{option} must be {what}, got {v}")
        elif not (math.isfinite(v) and v > 0):
            raise CLIError(f"{option} must be a finite number > 0, got {v}")
    n = getattr(args, "n", None)
    if n is not None:
        low = 2 if args.command == "interpolate" else 1
        if n < low:
            raise CLIError(f"--n must be an integer >= {low}, got {n}")
    rate = getattr(args, "rate", None)
    if rate is not None and rate > MAX_RATE:
        raise CLIError(f"--rate must be at most {MAX_RATE:,} Hz, got {rate:,}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_numbers(args)
        return args.func(args)
    except (
        CLIError,
        ValueError,
        FileNotFoundError,
        RuntimeError,
        ImportError,
        OSError,
        MemoryError,
    ) as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        msg = msg.replace("Pass skip_bad=True to skip", "Pass --skip-bad to skip")
        print(f"abp: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nabp: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
