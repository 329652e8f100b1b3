"""The ``abp`` command: train, synthesize, reconstruct, interpolate and complete.

A run lives in one folder (``--out``)::

    model.json        what network and data the run uses (to rebuild the generator)
    checkpoint.npz    model, optimiser, persistent Z, random state (written atomically)
    log.jsonl         one JSON line per iteration
    *.png / *.wav     pictures and sounds

Examples::

    abp train path/to/faces --out runs/faces --iterations 200
    abp train builtin:texture --out runs/tex --quick
    abp train clip.wav --out runs/sound
    abp synthesize runs/tex --scale 2
    abp reconstruct runs/faces path/to/held_out
    abp interpolate runs/faces --method slerp
    abp complete runs/faces path/to/held_out --occlusion M30

Errors are reported on one line; Ctrl-C during training saves a checkpoint first.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main"]

AUDIO_EXT = {".wav", ".flac", ".ogg", ".aiff", ".aif", ".mp3"}
VIDEO_EXT = {".gif", ".mp4", ".avi", ".mov", ".mkv", ".webm", ".mpg", ".mpeg"}

# The paper's settings per kind of data (those of the paper's released code).
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
# --quick: small networks and few iterations, for a first look on a CPU (a minute or two).
QUICK = {
    "texture": {"size": 64, "width": 0.125, "iterations": 60},
    "sound": {"length": 6000, "width": 0.25, "iterations": 60},
    "images": {"size": 32, "width": 0.25, "iterations": 60, "latent_dim": 8, "limit": 32},
    "video": {"size": 32, "width": 0.25, "iterations": 60, "latent_dim": 8},
}


class CLIError(Exception):
    """A mistake in the command line or its data, reported on one line."""


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


def load_data(data: str, kind: str, cfg: dict[str, Any], seed: int, skip_bad: bool) -> np.ndarray:
    """The training array for ``kind``, in [-1, 1]."""
    from ..io import data as D
    from ..io import datasets

    if data.startswith("builtin:"):
        name = data.split(":", 1)[1]
        if name == "texture":
            return datasets.texture("cells", size=cfg["size"], seed=seed)
        if name == "sound":
            return datasets.sound("bells", length=cfg["length"], rate=cfg["rate"], seed=seed)
        if name == "shapes":
            images, _ = datasets.shapes(n=cfg.get("limit") or 64, size=cfg["size"], seed=seed)
            return images
        return datasets.moving_texture(frames=32, size=cfg["size"], seed=seed)
    if kind == "sound":
        return D.load_audio(data, rate=cfg["rate"], length=cfg["length"])
    if kind == "video":
        return D.load_video(data, size=cfg["size"], max_frames=cfg.get("limit"))
    images, _names = D.load_images(
        data, size=cfg["size"], skip_bad=skip_bad, limit=cfg.get("limit")
    )
    return images


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


def build_generator(spec: dict[str, Any], seed: int) -> Any:
    from ..generator import build

    kwargs = {
        k: (tuple(v) if isinstance(v, list) else v) for k, v in spec.items() if k != "builder"
    }
    try:
        return build(spec["builder"], rng=np.random.default_rng(seed), **kwargs)
    except ValueError as err:
        raise CLIError(str(err)) from err


def make_abp(spec: dict[str, Any], cfg: dict[str, Any], seed: int, device: str) -> Any:
    from ..abp import ABP
    from ..optim import SGD, Adam

    g = build_generator(spec, seed)
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
    return abp.to(device)


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def load_run(run: str, device: str) -> tuple[Any, dict[str, Any]]:
    """Rebuild the ABP of a run folder from its model.json and checkpoint.npz."""
    folder = Path(run)
    spec_path, ckpt = folder / "model.json", folder / "checkpoint.npz"
    if not spec_path.is_file() or not ckpt.is_file():
        raise CLIError(
            f"{run}: not a run folder (needs model.json and checkpoint.npz written by `abp train`)"
        )
    meta = json.loads(spec_path.read_text())
    abp = make_abp(meta["spec"], meta["config"], meta["seed"], "cpu")
    abp.load(ckpt)
    return abp.to(device), meta


# --- output -------------------------------------------------------------------------------------


def save_examples(path: Path, x: Any, kind: str, rate: int, nrow: int | None = None) -> list[str]:
    """Write images as a PNG grid, sound as WAV files; return the names written."""
    from ..backend import to_numpy
    from ..io import data as D

    x = to_numpy(x)
    if kind == "sound":
        names = []
        for i, clip in enumerate(x[: min(len(x), 4)]):
            p = path.with_name(f"{path.stem}_{i}.wav")
            D.save_wav(p, clip, rate)
            names.append(p.name)
        return names
    D.save_image_grid(path.with_suffix(".png"), x, nrow=nrow)
    return [path.with_suffix(".png").name]


class Progress:
    """A one-line progress bar with ETA on stderr (plain lines when stderr is not a terminal)."""

    def __init__(self, total: int, start: int = 0) -> None:
        self.total, self.start, self.t0 = total, start, time.perf_counter()
        self.tty = sys.stderr.isatty()

    def __call__(self, abp: Any, record: dict[str, Any]) -> None:
        k = record["iteration"]
        done = k - self.start
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / max(done, 1) * (self.total - k)
        frac = k / self.total
        bar = "#" * int(30 * frac) + "-" * (30 - int(30 * frac))
        line = (
            f"[{bar}] {k}/{self.total}  error {record['recon_error']:.4f}  "
            f"{elapsed:6.1f}s elapsed, ETA {eta:6.1f}s"
        )
        if self.tty:
            print("\r" + line, end="" if k < self.total else "\n", file=sys.stderr, flush=True)
        elif k == self.total or k % max(1, self.total // 20) == 0:
            print(line, file=sys.stderr, flush=True)


# --- commands -----------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    from ..abp import DivergenceError

    if args.cuda_graph and args.device != "gpu":
        raise CLIError("--cuda-graph replays the Langevin loop as a CUDA graph: add --device gpu")
    kind = args.kind if args.kind != "auto" else detect_kind(args.data)
    cfg = {
        "rate": 11025,
        "length": 60000,
        "width": 1.0,
        "limit": None,
        "latent_dim": 100,
        "sigma": 0.3,
        "optimizer": "sgd",
        "lr": None,
        **DEFAULTS[kind],
    }
    if args.quick:
        cfg.update(QUICK[kind])
    for key in (
        "size",
        "length",
        "rate",
        "width",
        "limit",
        "latent_dim",
        "iterations",
        "langevin_steps",
        "step_size",
        "sigma",
        "optimizer",
        "lr",
    ):
        v = getattr(args, key, None)
        if v is not None:
            cfg[key] = v
    if cfg["lr"] is None:
        cfg["lr"] = 2e-4 if cfg["optimizer"] == "adam" else 1e-4

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt, log = out / "checkpoint.npz", out / "log.jsonl"
    if ckpt.exists() and not args.resume:
        raise CLIError(
            f"{out} already holds a run; pass --resume to continue it, or choose another --out"
        )

    Y = load_data(args.data, kind, cfg, args.seed, args.skip_bad)
    if kind == "images" and len(Y) < 2:
        raise CLIError(f"{args.data}: need at least 2 images to learn from, found {len(Y)}")
    spec = model_spec(kind, cfg, Y.shape[1])
    meta = {"spec": spec, "config": cfg, "seed": args.seed, "kind": kind, "data": args.data}
    if args.resume and (out / "model.json").is_file():
        meta = json.loads((out / "model.json").read_text())
        spec, cfg = meta["spec"], {**meta["config"], "iterations": cfg["iterations"]}
    _write_json(out / "model.json", meta)

    abp = make_abp(spec, cfg, args.seed, args.device)
    abp.cuda_graph = args.cuda_graph
    if args.resume and ckpt.exists():
        abp.load(ckpt)
        print(f"resuming {out} at iteration {abp.iteration}", file=sys.stderr)

    observation, mask = None, None
    if args.occlusion:
        from ..observation import Masked
        from .occlusion import occlusion_mask

        mask = occlusion_mask(args.occlusion, len(Y), Y.shape[-2:], rng=args.seed)
        observation = Masked(mask)
        Y = Y * mask  # the hidden pixels are never seen

    print(abp.generator.summary(), file=sys.stderr)
    print(
        f"training on {len(Y)} example(s) of shape {Y.shape[1:]} ({kind}), "
        f"{cfg['iterations']} iterations, device {args.device}",
        file=sys.stderr,
    )
    try:
        abp.fit(
            Y,
            iterations=cfg["iterations"],
            batch_size=args.batch_size,
            observation=observation,
            checkpoint_path=ckpt,
            checkpoint_every=args.checkpoint_every,
            log_path=log,
            callback=Progress(cfg["iterations"], abp.iteration),
        )
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: checkpoint saved at iteration {abp.iteration} in {ckpt}; continue "
            f"with the same command and --resume",
            file=sys.stderr,
        )
        return 130
    except DivergenceError as err:
        raise CLIError(str(err)) from err

    rate = cfg["rate"]
    written = save_examples(out / "reconstruction", abp.generator.forward(abp.Z), kind, rate)
    written += save_examples(out / "observed", Y, kind, rate)
    sample_n = 1 if kind in ("texture", "sound") else 16
    written += save_examples(out / "samples", abp.sample(sample_n), kind, rate)
    print(f"done: {out} ({', '.join(written)}, checkpoint.npz, log.jsonl)", file=sys.stderr)
    return 0


def cmd_synthesize(args: argparse.Namespace) -> int:
    abp, meta = load_run(args.run, args.device)
    latent = tuple(abp.latent_shape)
    if args.scale != 1:
        if meta["kind"] not in ("texture", "sound"):
            raise CLIError("--scale needs a fully convolutional network (texture or sound)")
        latent = (
            latent[:-2] + tuple(int(s * args.scale) for s in latent[-2:])
            if meta["kind"] == "texture"
            else latent[:-1] + (int(latent[-1] * args.scale),)
        )
    rng = np.random.default_rng(args.seed)
    x = abp.sample(args.n, latent_shape=latent, rng=rng if abp.device == "cpu" else None)
    out = Path(args.out or args.run)
    written = save_examples(out / "synthesized", x, meta["kind"], meta["config"]["rate"])
    print(f"wrote {', '.join(str(out / w) for w in written)}", file=sys.stderr)
    return 0


def _load_like_run(path: str, meta: dict[str, Any], skip_bad: bool) -> np.ndarray:
    cfg = dict(meta["config"])
    cfg["limit"] = None
    return load_data(path, meta["kind"], cfg, meta["seed"], skip_bad)


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from ..backend import to_numpy
    from .evaluation import mean_abs_error

    abp, meta = load_run(args.run, args.device)
    Y = _load_like_run(args.data, meta, args.skip_bad)
    rng = np.random.default_rng(args.seed)
    rec = to_numpy(abp.reconstruct(Y, steps=args.steps, rng=rng if abp.device == "cpu" else None))
    err = mean_abs_error(Y, rec)
    out = Path(args.out or args.run)
    kind, rate = meta["kind"], meta["config"]["rate"]
    written = save_examples(out / "reconstruct_input", Y, kind, rate)
    written += save_examples(out / "reconstruct_output", rec, kind, rate)
    print(json.dumps({"images": len(Y), "mean_abs_error": err}))
    print(f"wrote {', '.join(written)} in {out}", file=sys.stderr)
    return 0


def cmd_interpolate(args: argparse.Namespace) -> int:
    from .evaluation import interpolate

    abp, meta = load_run(args.run, args.device)
    if meta["kind"] not in ("images", "video"):
        raise CLIError("interpolate works on image runs (objects, faces)")
    Z = abp.Z
    for i in (args.a, args.b):
        if not 0 <= i < len(Z):
            raise CLIError(f"example index {i} out of range: the run has {len(Z)} examples")
    path = interpolate(Z[args.a], Z[args.b], args.steps, method=args.method)
    x = abp.generator.forward(path)
    out = Path(args.out or args.run)
    written = save_examples(out / f"interpolate_{args.method}", x, "images", 0, nrow=args.steps)
    print(f"wrote {out / written[0]}", file=sys.stderr)
    return 0


def cmd_complete(args: argparse.Namespace) -> int:
    from ..backend import to_numpy
    from ..observation import Masked
    from .evaluation import mean_abs_error
    from .occlusion import occlusion_mask

    abp, meta = load_run(args.run, args.device)
    if meta["kind"] != "images":
        raise CLIError("complete works on image runs")
    Y = _load_like_run(args.data, meta, args.skip_bad)
    mask = occlusion_mask(args.occlusion, len(Y), Y.shape[-2:], rng=args.seed)
    rng = np.random.default_rng(args.seed)
    rec = to_numpy(
        abp.reconstruct(
            Y * mask,
            steps=args.steps,
            observation=Masked(mask),
            rng=rng if abp.device == "cpu" else None,
        )
    )
    hidden = np.broadcast_to(mask == 0, Y.shape)
    err = mean_abs_error(Y, rec, mask=hidden)
    out = Path(args.out or args.run)
    grid = np.concatenate([Y * mask, rec, Y])
    written = save_examples(out / f"complete_{args.occlusion}", grid, "images", 0, nrow=len(Y))
    print(
        json.dumps({"images": len(Y), "occlusion": args.occlusion, "mean_abs_error_occluded": err})
    )
    print(f"wrote {out / written[0]} (rows: occluded, recovered, original)", file=sys.stderr)
    return 0


# --- parser -------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="abp",
        description="Alternating back-propagation for generator networks.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Examples::")[1] if __doc__ else None,
    )
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp):
        sp.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
        sp.add_argument("--seed", type=int, default=0)
        sp.add_argument(
            "--skip-bad", action="store_true", help="skip unreadable files instead of stopping"
        )

    t = sub.add_parser("train", help="learn a generator from images, a sound or a video")
    t.add_argument(
        "data",
        help="a folder of images, one texture image, an audio file, a video "
        "or GIF, or builtin:texture|sound|shapes|video",
    )
    t.add_argument("--out", required=True, help="run folder (checkpoint, log, pictures)")
    t.add_argument(
        "--kind", choices=["auto", "texture", "sound", "images", "video"], default="auto"
    )
    t.add_argument("--quick", action="store_true", help="small network, few iterations")
    t.add_argument("--resume", action="store_true", help="continue the run in --out")
    t.add_argument(
        "--cuda-graph",
        action="store_true",
        help="GPU: replay the Langevin loop as one CUDA graph (ABP(cuda_graph=True))",
    )
    t.add_argument("--iterations", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--size", type=int, help="image side (pixels)")
    t.add_argument("--length", type=int, help="sound length (samples)")
    t.add_argument("--rate", type=int, help="sound sample rate (Hz)")
    t.add_argument("--limit", type=int, help="use at most this many images / frames")
    t.add_argument("--latent-dim", type=int, help="d, for image networks")
    t.add_argument("--width", type=float, help="multiply every layer's channel count")
    t.add_argument("--langevin-steps", type=int)
    t.add_argument("--step-size", type=float, help="Langevin delta")
    t.add_argument("--sigma", type=float)
    t.add_argument("--optimizer", choices=["sgd", "adam"])
    t.add_argument("--lr", type=float)
    t.add_argument("--checkpoint-every", type=int, default=10)
    t.add_argument("--occlusion", help="learn from occluded images: P.5, P.7, P.9, M20 ... M50")
    common(t)
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("synthesize", help="sample new images / sounds from a trained run")
    s.add_argument("run")
    s.add_argument("--n", type=int, default=16)
    s.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="latent size multiplier: 2 gives a texture twice as large",
    )
    s.add_argument("--out")
    common(s)
    s.set_defaults(func=cmd_synthesize)

    r = sub.add_parser("reconstruct", help="infer Z of new data with W fixed; reconstruct")
    r.add_argument("run")
    r.add_argument("data")
    r.add_argument("--steps", type=int, default=100)
    r.add_argument("--out")
    common(r)
    r.set_defaults(func=cmd_reconstruct)

    i = sub.add_parser("interpolate", help="images along a path between two inferred latents")
    i.add_argument("run")
    i.add_argument("--a", type=int, default=0)
    i.add_argument("--b", type=int, default=1)
    i.add_argument("--steps", type=int, default=8)
    i.add_argument("--method", choices=["linear", "slerp"], default="linear")
    i.add_argument("--out")
    common(i)
    i.set_defaults(func=cmd_interpolate)

    c = sub.add_parser("complete", help="recover occluded pixels of new images, W fixed")
    c.add_argument("run")
    c.add_argument("data")
    c.add_argument("--occlusion", default="M30")
    c.add_argument("--steps", type=int, default=100)
    c.add_argument("--out")
    common(c)
    c.set_defaults(func=cmd_complete)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
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
        print(f"abp: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nabp: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
