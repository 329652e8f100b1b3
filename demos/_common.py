"""What every demo shares: its command line, its data choice, its output folder and its report.

Each demo script is run from the repository root, e.g. ``python demos/texture.py --quick``, and

* parses the same options (:func:`parser`): ``--device cpu|gpu``, ``--seed``, ``--data PATH``
  (your own images, sound or video), ``--quick`` (a few minutes on a laptop CPU), ``--smoke``
  (seconds: only proves that the script runs), ``--builtin`` (ignore the paper's data folder),
  ``--iterations N`` (override the number of learning iterations), ``--out DIR``;
* picks its data in this order: ``--data`` if given, else the data of the paper's code release when
  it is found (:func:`abp_np.io.datasets.release_root`), else the generated data of
  :mod:`abp_np.io.datasets`; the report always says which;
* writes into ``--out`` (default ``runs/<demo>``) its pictures (PNG grids, GIF for motion), sounds
  (WAV), ``results.json`` (numbers, settings, data, device, seconds taken, command line) and
  ``results.md`` (the same as Markdown tables).

Three sizes of run, chosen with ``--smoke`` / ``--quick`` / nothing:

==========  ==================================================================================
smoke       tiny images, networks and iteration counts: seconds; for the test suite only
quick       small images and networks, tens to hundreds of iterations: minutes on a 2-core CPU
full        the paper's settings (networks, sizes, 600 iterations): meant for a GPU
==========  ==================================================================================

The demos of the paper's quantitative claims (reconstruction, inpainting, compressed sensing,
error curves) also take ``--paper-cpu``: the paper's protocols on 1,000 real training images and
300 held-out ones, at most 30 minutes each on a 2-core CPU (``demos/_protocol.py``; with
``--smoke``, seconds). Their output goes to ``runs/<demo>_paper_cpu``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# abp_np before NumPy: importing it sets OpenBLAS' spin before NumPy loads OpenBLAS
# (abp_np/_blas_spin.py), so that the steps outside the GEMMs have both cores
try:
    import abp_np
except ImportError:  # running from a clone without `pip install .`: use the source tree
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import abp_np

import numpy as np

from abp_np.io import data as D
from abp_np.io import datasets

MODES = ("smoke", "quick", "full")


# --------------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------------


def parser(name: str, description: str) -> argparse.ArgumentParser:
    """The options every demo takes; a demo adds its own before calling ``parse_args``."""
    p = argparse.ArgumentParser(
        prog=f"python demos/{name}.py",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--device", default="cpu", choices=["cpu", "gpu"], help="where to compute")
    p.add_argument("--seed", type=int, default=0, help="seed of every random generator")
    p.add_argument(
        "--cuda-graph",
        action="store_true",
        help="GPU: replay each Langevin loop as one CUDA graph (ABP(cuda_graph=True))",
    )
    p.add_argument("--data", type=Path, default=None, help="your own data (file or folder)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small settings: minutes on a CPU")
    size.add_argument("--smoke", action="store_true", help="tiny settings: seconds (for tests)")
    p.add_argument(
        "--builtin",
        action="store_true",
        help="use the generated built-in data even where the paper's data folder is found",
    )
    p.add_argument("--iterations", type=int, default=None, help="override learning iterations")
    p.add_argument("--out", type=Path, default=None, help=f"output folder (runs/{name})")
    return p


def mode_of(args: argparse.Namespace) -> str:
    """'smoke', 'quick' or 'full'."""
    if args.smoke:
        return "smoke"
    return "quick" if args.quick else "full"


def pick(args: argparse.Namespace, smoke: Any, quick: Any, full: Any) -> Any:
    """The setting for this run's mode."""
    return {"smoke": smoke, "quick": quick, "full": full}[mode_of(args)]


# --------------------------------------------------------------------------------------------------
# data choice
# --------------------------------------------------------------------------------------------------


def release(*parts: str, args: argparse.Namespace | None = None) -> Path | None:
    """``release_root() / parts`` when the paper's data folder is found (and not ``--builtin``)."""
    if args is not None and args.builtin:
        return None
    root = datasets.release_root()
    if root is None:
        return None
    path = root.joinpath(*parts)
    return path if path.exists() else None


def load_image_set(path: Path, size: int, limit: int | None = None) -> np.ndarray:
    """Images of a folder (or one file) as ``(N, 3, size, size)`` float32 in [-1, 1].

    Unreadable files are skipped with one warning (the release folder holds some odd files).
    """
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        images, _ = D.load_images(
            path, size=size, channels=3, fit="crop", skip_bad=True, limit=limit
        )
    return images


# --------------------------------------------------------------------------------------------------
# the run: output folder, progress, report
# --------------------------------------------------------------------------------------------------


class Demo:
    """One run of a demo: its output folder, its clock, its numbers and its report.

    Parameters
    ----------
    name : str
        The demo's name (``texture``, ``sound``, ...).
    title : str
        One line saying what the demo shows, used as the report's heading.
    args : argparse.Namespace
        From :func:`parser`.
    """

    def __init__(self, name: str, title: str, args: argparse.Namespace) -> None:
        self.name = name
        self.title = title
        self.args = args
        self.mode = mode_of(args)
        folder = name
        if getattr(args, "paper_cpu", False):  # demos/_protocol.py
            if args.quick:
                raise SystemExit(f"{name}: --paper-cpu has its own sizes: drop --quick")
            self.mode = "paper-cpu (smoke)" if args.smoke else "paper-cpu"
            folder = f"{name}_paper_cpu"
        self.out = Path(args.out) if args.out is not None else Path("runs") / folder
        self.out.mkdir(parents=True, exist_ok=True)
        if getattr(args, "cuda_graph", False) and args.device != "gpu":
            raise SystemExit(f"{name}: --cuda-graph replays CUDA graphs: add --device gpu")
        self.xp = abp_np.backend.resolve_device(args.device)
        self.start = time.perf_counter()
        self.data: list[dict[str, Any]] = []
        self.settings: dict[str, Any] = {}
        self.results: dict[str, Any] = {}
        self.tables: list[dict[str, Any]] = []
        self.files: list[str] = []
        self.notes: list[str] = []
        self.log(
            f"{name}: mode {self.mode}, device {args.device}, seed {args.seed}, out {self.out}"
        )

    # -- random generators: one per purpose, all from the seed -----------------------------------
    def rng(self, stream: int = 0) -> np.random.Generator:
        """A NumPy generator for stream ``stream`` of this run's seed (masks, matrices, weights)."""
        return np.random.default_rng([self.args.seed, stream])

    def device_rng(self, stream: int = 0) -> Any:
        """A generator on the run's device (NumPy or CuPy) for ``ABP.sample`` / ``ABP.infer``."""
        return abp_np.default_rng(1000 * self.args.seed + stream, self.args.device)

    # -- progress -------------------------------------------------------------------------------
    def log(self, message: str) -> None:
        """Print one progress line, prefixed by the seconds since the start."""
        print(f"[{time.perf_counter() - self.start:7.1f}s] {message}", flush=True)

    def seconds(self) -> float:
        return time.perf_counter() - self.start

    # -- what goes in the report ------------------------------------------------------------------
    def use_data(self, source: str, description: str, path: Path | None = None) -> None:
        """Record one data set: ``source`` is 'user' (--data), 'release' (the paper's),
        'package' (real data from an installed package, e.g. :func:`abp_np.io.datasets.footage`) or
        'built-in' (generated by :mod:`abp_np.io.datasets`). Call once per data set used."""
        entry = {"source": source, "description": description}
        if path is not None:
            entry["path"] = str(path)
        self.data.append(entry)
        self.log(f"data ({source}): {description}")

    def table(
        self,
        title: str,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        note: str = "",
    ) -> None:
        """Add a table to the report (numbers are kept in results.json as they are)."""
        self.tables.append(
            {
                "title": title,
                "columns": list(columns),
                "rows": [list(r) for r in rows],
                "note": note,
            }
        )
        self.log(f"table: {title}")
        for line in _markdown_table(columns, rows).splitlines():
            print("    " + line, flush=True)

    def note(self, text: str) -> None:
        self.notes.append(text)

    # -- files ------------------------------------------------------------------------------------
    def path(self, filename: str) -> Path:
        return self.out / filename

    def _wrote(self, path: Path) -> Path:
        self.files.append(path.name)
        self.log(f"wrote {path}")
        return path

    def save_grid(self, filename: str, images: Any, nrow: int | None = None) -> Path:
        """Save ``images (N, C, H, W)`` in [-1, 1] as one PNG grid."""
        return self._wrote(D.save_image_grid(self.path(filename), to_numpy(images), nrow=nrow))

    def save_image(self, filename: str, image: Any) -> Path:
        return self._wrote(D.save_image(self.path(filename), to_numpy(image)))

    def save_gif(self, filename: str, frames: Any, fps: float = 10) -> Path:
        return self._wrote(D.save_gif(self.path(filename), to_numpy(frames), fps=fps))

    def save_wav(self, filename: str, signal: Any, rate: int) -> Path:
        return self._wrote(D.save_wav(self.path(filename), to_numpy(signal), rate=rate))

    def save_png(self, filename: str, hwc: np.ndarray) -> Path:
        """Save an ``(H, W, 3)`` uint8 picture (charts drawn by :mod:`abp_np.tools.plot`)."""
        from PIL import Image

        path = self.path(filename)
        Image.fromarray(hwc).save(path)
        return self._wrote(path)

    # -- the end ----------------------------------------------------------------------------------
    def finish(self) -> dict[str, Any]:
        """Write results.json and results.md; return the report as a dict."""
        report = {
            "demo": self.name,
            "title": self.title,
            "mode": self.mode,
            "device": self.args.device,
            "device_detail": device_detail(self.args.device),
            "seed": self.args.seed,
            "data": self.data,
            "settings": self.settings,
            "results": self.results,
            "tables": self.tables,
            "notes": self.notes,
            "files": self.files,
            "seconds": round(self.seconds(), 1),
            "command": command_line(),
            "abp_np_version": abp_np.__version__,
        }
        (self.out / "results.json").write_text(
            json.dumps(_jsonable(report), indent=2, allow_nan=True) + "\n", encoding="utf-8"
        )
        (self.out / "results.md").write_text(markdown_report(report), encoding="utf-8")
        self.log(f"done in {report['seconds']} s: {self.out / 'results.md'}")
        return report


def command_line() -> str:
    """The command that ran this demo, as typed from the repository root."""
    argv = list(sys.argv)
    if argv and argv[0].endswith(".py"):
        here = Path(argv[0])
        try:
            argv[0] = str(here.resolve().relative_to(Path.cwd().resolve()))
        except ValueError:
            argv[0] = str(here)
    return "python " + " ".join(shlex.quote(a) for a in argv)


def device_detail(device: str) -> str:
    """A short description of the machine: CPU cores or the GPU's name."""
    import os

    if device == "gpu":
        try:
            import cupy

            props = cupy.cuda.runtime.getDeviceProperties(0)
            name = props["name"]
            return name.decode() if isinstance(name, bytes) else str(name)
        except Exception:  # pragma: no cover - GPU only
            return "gpu"
    return f"CPU, {os.cpu_count()} cores, {platform.machine()}, NumPy {np.__version__}"


def _jsonable(x: Any) -> Any:
    """Convert NumPy scalars and arrays, paths and tuples for json.dumps."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return x


def fmt(x: Any) -> str:
    """A number as the tables show it: 4 significant digits."""
    if isinstance(x, (float, np.floating)):
        if math.isnan(x):
            return "n/a"
        return f"{x:.4g}"
    return str(x)


#: Column names ending in one of these words are errors of competing methods on one set of
#: images ("ABP held-out", "PCA held-out"): the lowest of each row's group is the winner.
GROUPS = ("train", "held-out", "test")


def winners(columns: Sequence[str], row: Sequence[Any]) -> set[int]:
    """Indices of the lowest error in each group of two or more competing columns of a row."""
    best = set()
    for word in GROUPS:
        group = [
            k
            for k, c in enumerate(columns)
            if str(c).endswith(f" {word}")
            and isinstance(row[k], (float, np.floating))
            and not math.isnan(row[k])
        ]
        if len(group) > 1:
            best.add(min(group, key=lambda k: row[k]))
    return best


def _markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table; in each row the winner of every group of competing errors is bold."""

    def cell(v: Any) -> str:
        return fmt(v).replace("|", "\\|")  # a '|' inside a cell would end it

    lines = ["| " + " | ".join(cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        best = winners(columns, r)
        cells = [f"**{cell(v)}**" if k in best else cell(v) for k, v in enumerate(r)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_report(report: dict[str, Any]) -> str:
    """results.md: heading, data, settings, device, time, command, then every table and file."""
    data = "; ".join(f"{d['description']} ({d['source']})" for d in report["data"]) or "none"
    settings = ", ".join(f"{k} = {v}" for k, v in report["settings"].items())
    lines = [
        f"# {report['title']}",
        "",
        f"- data: {data}",
        f"- mode: {report['mode']}; settings: {settings}",
        f"- device: {report['device']} ({report['device_detail']}); seed {report['seed']}",
        f"- time taken: {report['seconds']} s",
        f"- command: `{report['command']}`",
        "",
    ]
    for t in report["tables"]:
        lines += [f"## {t['title']}", "", _markdown_table(t["columns"], t["rows"]), ""]
        if t["note"]:
            lines += [t["note"], ""]
    for n in report["notes"]:
        lines += [n, ""]
    pictures = [f for f in report["files"] if f.endswith((".png", ".gif"))]
    for f in pictures:
        lines += [f"![{f}]({f})", ""]
    others = [f for f in report["files"] if f not in pictures]
    if others:
        lines += ["Other files: " + ", ".join(f"[{f}]({f})" for f in others), ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# arrays and the algorithm
# --------------------------------------------------------------------------------------------------


def to_numpy(x: Any) -> np.ndarray:
    return abp_np.to_numpy(x)


def to_unit(x: Any) -> np.ndarray:
    """Images in [-1, 1] -> [0, 1], the scale on which errors are reported."""
    return np.clip((to_numpy(x).astype(np.float64) + 1.0) / 2.0, 0.0, 1.0)


def mae(Y: Any, Yhat: Any, mask: Any = None) -> float:
    """Mean absolute per-pixel error on the [0, 1] scale, over ``mask`` (True = counted) if given.

    Y and Yhat are in [-1, 1]. Uses :func:`abp_np.tools.evaluation.mean_abs_error`.
    """
    from abp_np.tools import evaluation

    return float(evaluation.mean_abs_error(to_numpy(Y), to_numpy(Yhat), mask=mask))


def progress(demo: Demo, every: int, label: str = "") -> Any:
    """A callback for ``ABP.fit`` that prints one line every ``every`` iterations.

    ``ABP.fit`` calls ``callback(abp, record)`` after each iteration; ``record`` holds
    ``iteration`` (1-based), ``recon_error`` (mean |Y - f(Z)| on the [0, 1] scale, over the
    observed entries) and ``seconds``.
    """

    def callback(model: Any, record: dict[str, Any]) -> None:
        t = int(record["iteration"])
        if t % every == 0 or t == 1:
            demo.log(
                f"{label}iteration {t}: error {record['recon_error']:.4f} "
                f"({record['seconds']:.2f} s)"
            )

    return callback


def add_learning_options(p: argparse.ArgumentParser) -> None:
    """Options of the learning algorithm a demo may expose (defaults depend on the mode)."""
    p.add_argument(
        "--optimizer",
        choices=["sgd", "adam"],
        default=None,
        help="sgd: the paper's (lr 1e-4, momentum 0.5); adam: beta1 0.5, lr 2e-4 in full mode and "
        "the demo's larger step in quick/smoke mode (default: sgd in full mode, adam in "
        "quick/smoke mode, which converges in fewer steps)",
    )
    p.add_argument("--lr", type=float, default=None, help="learning rate of the optimiser")


def make_optimizer(args: argparse.Namespace, quick_lr: float = 2e-3) -> tuple[Any, dict]:
    """The optimiser for this run and a dict describing it for the report.

    Full mode: the paper's SGD (lr 1e-4, momentum 0.5, weight decay 1e-4, clipping at 30).
    Quick and smoke modes: Adam (beta1 0.5) with a larger step, ``quick_lr``, since they run
    only tens of iterations.
    """
    from abp_np import optim

    name = args.optimizer or ("sgd" if mode_of(args) == "full" else "adam")
    if name == "sgd":
        lr = args.lr if args.lr is not None else 1e-4
        return optim.SGD(lr=lr), {"optimizer": "SGD", "lr": lr, "momentum": 0.5}
    lr = args.lr if args.lr is not None else (2e-4 if mode_of(args) == "full" else quick_lr)
    return optim.Adam(lr=lr, beta1=0.5), {"optimizer": "Adam", "lr": lr, "beta1": 0.5}


def fit_abp(
    demo: Demo,
    generator: Any,
    Y: Any,
    *,
    iterations: int,
    sigma: float = 0.3,
    steps: int = 10,
    delta: float = 0.3,
    init_z: str = "zeros",
    optimizer: Any = None,
    observation: Any = None,
    batch_size: int | None = None,
    label: str = "",
    callback: Any = None,
) -> Any:
    """Learn ``generator`` on ``Y`` by alternating back-propagation; returns the fitted ABP.

    Prints progress every tenth of the run; ``callback(model, record)`` (if given) is called
    after each iteration too, as ``ABP.fit`` calls it.
    """
    from abp_np.abp import ABP

    model = ABP(
        generator,
        sigma=sigma,
        langevin_steps=steps,
        step_size=delta,
        init_z=init_z,
        optimizer=optimizer,
        seed=demo.args.seed,
        cuda_graph=getattr(demo.args, "cuda_graph", False),
    )
    every = max(1, iterations // 10)
    show = progress(demo, every, label)

    def both(m: Any, record: dict[str, Any]) -> None:
        show(m, record)
        if callback is not None:
            callback(m, record)

    model.history = model.fit(
        Y, iterations, batch_size=batch_size, observation=observation, callback=both
    )
    return model


def choose_images(
    demo: Demo,
    release_folder: str | None,
    builtin: Any,
    size: int,
    limit: int | None = None,
    what: str = "images",
    user: Path | None = None,
) -> np.ndarray:
    """Pick a set of images: the user's folder, else the release folder, else generated ones.

    Parameters
    ----------
    demo : Demo
    release_folder : str or None
        Sub-folder of the release's ``Image/`` (e.g. ``'lion_tiger'``); None: none to use.
    builtin : callable () -> (images (N, 3, size, size) in [-1, 1], description)
    size : int
        Height and width the images are brought to (centre crop, then resize).
    limit : int or None
        At most this many images.
    what : str
        What the set is, for the report (``'training faces'``).
    user : Path or None
        The user's folder; default ``--data``.

    Returns
    -------
    images : ndarray (N, 3, size, size), float32 in [-1, 1], on the CPU
    """
    user = demo.args.data if user is None else user
    if user is not None:
        Y = load_image_set(user, size, limit)
        demo.use_data("user", f"{what}: {len(Y)} images of {user}, {size} x {size}", user)
        return Y
    path = release("Image", release_folder, args=demo.args) if release_folder else None
    if path is not None:
        Y = load_image_set(path, size, limit)
        demo.use_data(
            "release", f"{what}: {len(Y)} images of Image/{release_folder}, {size} x {size}", path
        )
        return Y
    Y, description = builtin()
    demo.use_data("built-in", f"{what}: {description}")
    return np.asarray(Y, dtype=np.float32)


def to_device(x: Any, demo: Demo) -> Any:
    """Move an array to the run's device as float32."""
    return demo.xp.asarray(x, dtype=demo.xp.float32)
