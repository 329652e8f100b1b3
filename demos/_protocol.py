"""The paper's quantitative protocols on real data, at a size a 2-core CPU runs: ``--paper-cpu``.

The paper's experiments 5-8 (learning from occluded images, compressed sensing, held-out
reconstruction, train / test / negative error curves) were run on a few dozen images per
category. At that size a linear baseline fitted to the same images is hard to beat, and quick
mode (32-76 images, one batch, 100-200 weight updates) showed exactly that. ``--paper-cpu`` runs
the same protocols on enough real data for the claims to be tested:

* data: the 5,000 real handwritten digits of Debian's ``opencv-doc`` (20 x 20, one channel,
  :func:`abp_np.io.datasets.digits`), a fixed shuffle of which gives 300 held-out images, 300
  validation images (only for choosing settings; no result is measured on them) and 1,000
  training images (up to 4,400 for the crossover chart); or ``--data FOLDER``: any folder of images, split with ``--test-fraction``;
* network: fc -> (64, 5, 5) -> (32, 10, 10) -> (1, 20, 20), batch norm and ReLU on the hidden
  layers, tanh at the output (:func:`network`): the paper's object network with two doubling
  layers, sized for 20-pixel images;
* learning: mini-batches of 25, 30 epochs (1,200 weight updates), 10 Langevin steps per batch,
  Adam (lr 1e-3, beta1 0.5), sigma 0.3 and the step size ``delta`` that ``demos/step_size.py``
  chose on the validation images (:data:`DELTA`);
* recovery (:func:`recover`): every recovered image is read from a noise-free state. Training
  images: the persistent chains' Z, then noise-free steps. Held-out images: Langevin from
  N(0, I) with W fixed, then noise-free steps. Both in eval mode, with batch norm's running
  statistics recomputed from the training Z after learning, so that a held-out image's Z does
  not depend on which other images share its batch;
* error: mean absolute difference on the paper's [0, 1] scale, over the occluded pixels where
  that applies (:func:`abp_np.tools.evaluation.mean_abs_error`).

With ``--smoke`` the same code runs on tiny settings (seconds; for CI).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import _common as C
import numpy as np

import abp_np
from abp_np import layers as L

#: Langevin step size of the ``--paper-cpu`` runs, chosen by ``demos/step_size.py --paper-cpu``
#: on the 300 validation digits (never on the held-out ones): see demos/RESULTS.md.
DELTA = 0.05

PAPER_CPU = {
    "training images": 1000,
    "held-out images": 300,
    "validation images": 300,
    "image size": 20,
    "d": 20,
    "network channels": [64, 32],
    "batch size": 25,
    "epochs": 30,
    "Langevin steps": 10,
    "delta": DELTA,
    "sigma": 0.3,
    "optimizer": "Adam",
    "lr": 1e-3,
    "beta1": 0.5,
    "held-out Langevin steps": 100,
    "noise-free finishing steps": 30,
}
SMOKE = {
    **PAPER_CPU,
    "training images": 24,
    "held-out images": 8,
    "validation images": 8,
    "d": 3,
    "network channels": [8, 4],
    "batch size": 12,
    "epochs": 2,
    "Langevin steps": 2,
    "held-out Langevin steps": 3,
    "noise-free finishing steps": 2,
}


def add_options(p: argparse.ArgumentParser) -> None:
    """``--paper-cpu`` and the options of its data split."""
    g = p.add_argument_group("--paper-cpu: the paper's protocol on 1,000+ real images")
    g.add_argument(
        "--paper-cpu",
        action="store_true",
        help="real digits (Debian's opencv-doc) or --data, 1,000 training and 300 held-out "
        "images, mini-batches, 1,200 weight updates: at most 30 minutes on a 2-core CPU "
        "(with --smoke: seconds)",
    )
    g.add_argument(
        "--test-fraction",
        type=float,
        default=0.2,
        help="--paper-cpu --data FOLDER: the share of the images held out (default 0.2)",
    )
    g.add_argument(
        "--size",
        type=int,
        default=32,
        help="--paper-cpu --data FOLDER: images are brought to size x size (a multiple of 4; "
        "default 32)",
    )
    g.add_argument(
        "--channels",
        type=int,
        choices=[1, 3],
        default=3,
        help="--paper-cpu --data FOLDER: 1 (grayscale) or 3 (RGB, default)",
    )


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    """The ``--paper-cpu`` settings, tiny with ``--smoke``; ``--iterations`` sets the epochs."""
    s = dict(SMOKE if args.smoke else PAPER_CPU)
    if args.iterations:
        s["epochs"] = int(args.iterations)
    return s


class Split:
    """Training, held-out and validation images, each (N, C, H, W) float32 in [-1, 1]."""

    def __init__(self, train: np.ndarray, test: np.ndarray, validation: np.ndarray) -> None:
        self.train, self.test, self.validation = train, test, validation


def load(args: argparse.Namespace, demo: C.Demo, s: dict[str, Any], n_train=None) -> Split:
    """The real images of a ``--paper-cpu`` run: the digits, or the user's folder split.

    The digits come in a fixed shuffled order (``--seed``): the first ``held-out images`` are
    held out, the next ``validation images`` validate, and training takes the next ``n_train``.
    So every run, whatever its training-set size, is measured on the same held-out images. A
    folder is shuffled with ``--seed`` and its last ``--test-fraction`` held out; its
    validation images are the last tenth of the training part (used only by
    ``demos/step_size.py``).
    """
    n_train = s["training images"] if n_train is None else int(n_train)
    n_test, n_val = s["held-out images"], s["validation images"]
    if args.data is not None:
        return _load_folder(args, demo, s)
    from abp_np.io import datasets

    X, _ = datasets.digits(n=n_test + n_val + n_train, seed=args.seed)
    demo.use_data(
        "package",
        f"real handwritten digits: digits.png of the Debian package opencv-doc (5,000 digits, "
        f"20 x 20, 500 per class), a fixed shuffle (seed {args.seed}): {n_test} held-out, "
        f"{n_val} validation, {n_train} training images",
        datasets.digits_path(),
    )
    return Split(X[n_test + n_val :], X[:n_test], X[n_test : n_test + n_val])


def _load_folder(args: argparse.Namespace, demo: C.Demo, s: dict[str, Any]) -> Split:
    from abp_np.io import data as D

    if args.size % 4 or args.size < 8:
        raise SystemExit(f"--size must be a multiple of 4 and at least 8, got {args.size}")
    if not 0.0 < args.test_fraction < 1.0:
        raise SystemExit(f"--test-fraction must be between 0 and 1, got {args.test_fraction}")
    X, _ = D.load_images(
        args.data, size=args.size, channels=args.channels, fit="crop", skip_bad=True
    )
    X = X[np.random.default_rng(args.seed).permutation(len(X))]
    k = int(round(len(X) * args.test_fraction))
    if k < 1 or len(X) - k < 4:
        raise SystemExit(
            f"{args.data} has {len(X)} readable images: too few to hold {args.test_fraction:.0%} "
            "out and train on the rest; add images or change --test-fraction"
        )
    train, test = X[:-k], X[-k:]
    val = train[-max(1, len(train) // 10) :]
    demo.use_data(
        "user",
        f"{args.data}: {len(X)} images, {args.size} x {args.size}, {args.channels} channel(s), "
        f"shuffled (seed {args.seed}): {len(train)} training, {k} held out",
        args.data,
    )
    s["training images"], s["held-out images"], s["image size"] = len(train), k, args.size
    s["validation images"] = len(val)
    for key in ("training images", "held-out images", "validation images", "image size"):
        if key in demo.settings:  # already recorded by note_settings: record what was used
            demo.settings[key] = s[key]
    return Split(train, test, val)


def network(d: int, image_shape: tuple[int, int, int], channels, rng) -> abp_np.Generator:
    """fc -> (c0, S/4, S/4) -> (c1, S/2, S/2) -> (C, S, S): two doubling layers, BN, ReLU, tanh.

    The paper's object network (fc, doubling 5 x 5 transposed convolutions with stride 2,
    batch norm and ReLU on the hidden layers, tanh) with two doubling layers instead of four.
    """
    C_out, S, _ = image_shape
    c0, c1 = channels
    s0 = S // 4
    up = {"stride": 2, "padding": 2, "output_padding": 1}
    return abp_np.Generator(
        [
            L.Linear(d, c0 * s0 * s0, init_std=0.02, rng=rng),
            L.Reshape((c0, s0, s0)),
            L.BatchNorm2d(c0),
            L.ReLU(),
            L.ConvTranspose2d(c0, c1, 5, **up, init_std=0.02, rng=rng),
            L.BatchNorm2d(c1),
            L.ReLU(),
            L.ConvTranspose2d(c1, C_out, 5, **up, init_std=0.02, rng=rng),
            L.Tanh(),
        ],
        (d,),
    )


def train(
    demo: C.Demo,
    generator: abp_np.Generator,
    Y: np.ndarray,
    s: dict[str, Any],
    observation: Any = None,
    label: str = "",
    delta: float | None = None,
    epochs: int | None = None,
    callback: Any = None,
) -> abp_np.ABP:
    """ABP on ``Y`` (observed through ``observation``) with the run's settings; eval mode after.

    ``fit`` ends by recomputing batch norm's running statistics from the training Z, so that
    eval mode afterwards normalises every image the same way, alone or in a batch.
    """
    optimizer = abp_np.Adam(lr=s["lr"], beta1=s["beta1"])
    epochs = s["epochs"] if epochs is None else epochs
    batch = min(s["batch size"], len(Y))
    model = C.fit_abp(
        demo,
        generator.to(demo.args.device),
        C.to_device(Y, demo),
        iterations=epochs,
        sigma=s["sigma"],
        steps=s["Langevin steps"],
        delta=s["delta"] if delta is None else delta,
        optimizer=optimizer,
        observation=observation,
        batch_size=batch,
        label=label,
        callback=callback,
    )
    generator.eval()
    return model


def recover(
    model: abp_np.ABP,
    Y: Any,
    s: dict[str, Any],
    observation: Any = None,
    Z: Any = None,
    rng: Any = None,
    chunk: int = 250,
) -> np.ndarray:
    """f(Z) read from a noise-free state: the one way every ``--paper-cpu`` recovery is made.

    Training images (``Z`` given: their persistent chains) get ``noise-free finishing steps``
    of gradient ascent on log p(Z | Y) from there. Held-out images (``Z`` None) get ``held-out
    Langevin steps`` of Langevin dynamics from N(0, I), then the same noise-free steps
    (``ABP.infer(..., finish_steps=...)``). W is fixed and the generator in eval mode, so
    every image is treated alone and the work goes in chunks of ``chunk`` images.

    Returns
    -------
    f : ndarray (N, *image_shape), on the CPU
    """
    xp = model.xp
    finish = s["noise-free finishing steps"]
    out = []
    for start in range(0, len(Y), chunk):
        idx = np.arange(start, min(start + chunk, len(Y)))
        y = xp.asarray(Y[start : start + chunk], dtype=model.dtype)
        obs = observation.take(idx) if observation is not None else None
        if Z is None:  # infer and reconstruct leave batch norm's statistics alone themselves
            f = model.reconstruct(
                y,
                steps=s["held-out Langevin steps"],
                observation=obs,
                init="normal",
                rng=rng,
                finish_steps=finish,
            )
        else:
            with model.generator.frozen_statistics():  # langevin is also fit's, so it may not
                z = model.langevin(Z[start : start + chunk], y, obs, steps=finish, noise=False)
                f = model.generator.forward(z)
        out.append(C.to_numpy(f))
    return np.concatenate(out)


def z_norm(model: abp_np.ABP) -> float:
    """Mean norm of the inferred training Z (about sqrt(d) for draws of the prior N(0, I_d))."""
    Z = C.to_numpy(model.Z).reshape(len(model.Z), -1)
    return float(np.linalg.norm(Z, axis=1).mean())


def note_settings(demo: C.Demo, s: dict[str, Any]) -> None:
    """Record the run's settings in its report."""
    demo.settings = {"protocol": "--paper-cpu", **s}
    if demo.args.smoke:
        demo.settings["protocol"] = "--paper-cpu --smoke"


def chart(path: Path, series: dict, title: str, xlabel: str, ylabel: str, **kw: Any) -> None:
    """A line chart (:func:`abp_np.tools.plot.line_chart`, ``logx``, ``marks``) saved as PNG."""
    from PIL import Image

    from abp_np.tools import plot

    picture = plot.line_chart(series, title=title, xlabel=xlabel, ylabel=ylabel, **kw)
    Image.fromarray(picture).save(path)
