"""Experiment 3 of the paper: object patterns.

Lion-tiger faces with a 2-dimensional Z: after learning, the generator is shown on a 9 x 9 grid of
(z1, z2) in [-2, 2]^2, so one sees what each latent factor controls. Faces with d = 100: random
samples f(Z), Z ~ N(0, I), and paths between the inferred Z of two training faces, linear
z(t) = (1 - t) z0 + t z1 and spherical (slerp, which keeps |z| where linear paths shrink it).

Data: --data FOLDER (used for both parts), else the paper's Image/lion_tiger and Image/face, else
generated face-like blobs that vary in position and size (abp_np.io.datasets.shapes).

    python demos/objects.py --quick            # minutes on a CPU, 32 x 32 images, small network
    python demos/objects.py --device gpu       # the paper's network and settings, 64 x 64
"""

from __future__ import annotations

import sys

import _common as C
import numpy as np

import abp_np
from abp_np.io import datasets
from abp_np.tools import evaluation


def build(d: int, args, demo: C.Demo, quick_channels=(128, 64, 32)) -> abp_np.Generator:
    """The paper's object network (fc -> 4 x 4, doubling deconvolutions, leaky ReLU 0.2, tanh)."""
    channels = C.pick(args, (32, 16), quick_channels, (512, 256, 128, 64))
    g = abp_np.object_generator(latent_dim=d, channels=channels, rng=demo.rng(1))
    return g.to(args.device)


def lion_tiger(args, demo: C.Demo, size: int, iterations: int, steps: int, optimizer_args) -> None:
    """d = 2: learn, then draw the 9 x 9 latent grid."""
    Y = C.choose_images(
        demo,
        "lion_tiger",
        lambda: (
            datasets.shapes(n=C.pick(args, 8, 64, 64), size=size, seed=args.seed)[0],
            f"face-like blobs (position and size vary), {size} x {size}",
        ),
        size,
        what="lion-tiger (d = 2)",
    )
    g = build(2, args, demo)
    optimizer, _ = C.make_optimizer(args, **optimizer_args)
    Yd = C.to_device(Y, demo)
    model = C.fit_abp(
        demo, g, Yd, iterations=iterations, steps=steps, optimizer=optimizer, label="d=2 "
    )
    recon = g.forward(model.Z)
    err = C.mae(Y, recon)
    grid = C.to_device(evaluation.latent_grid(9, 2.0), demo)
    demo.save_grid("lion_tiger_training.png", Y, nrow=min(len(Y), 11))
    demo.save_grid("lion_tiger_reconstruction.png", recon, nrow=min(len(Y), 11))
    demo.save_grid("lion_tiger_grid.png", g.forward(grid), nrow=9)
    Z = C.to_numpy(model.Z)
    # the same grid over the range the inferred Z actually cover, axis by axis
    lo, hi = Z.min(axis=0), Z.max(axis=0)
    unit = (evaluation.latent_grid(9, 1.0) + 1.0) / 2.0  # (81, 2) in [0, 1]^2
    spread = (lo + unit * (hi - lo)).astype(np.float32)
    demo.save_grid(
        "lion_tiger_grid_inferred_range.png", g.forward(C.to_device(spread, demo)), nrow=9
    )
    demo.results["lion_tiger"] = {
        "images": len(Y),
        "d": 2,
        "train_error": err,
        "z_range": [float(Z.min()), float(Z.max())],
    }
    demo.table(
        "Lion-tiger, d = 2: training reconstruction",
        ["images", "d", "iterations", "mean abs error [0, 1]", "inferred z range"],
        [[len(Y), 2, iterations, err, f"[{Z.min():.2f}, {Z.max():.2f}]"]],
        note="lion_tiger_grid.png: f(z) on the 9 x 9 grid (z1 left to right, z2 top to bottom, "
        "both in [-2, 2]); lion_tiger_grid_inferred_range.png: the same grid spanning the range "
        "of the inferred z of the training images.",
    )


def faces(args, demo: C.Demo, size: int, iterations: int, steps: int, optimizer_args) -> None:
    """d = 100: samples and linear / spherical interpolation between inferred Z."""
    d = C.pick(args, 8, 100, 100)
    Y = C.choose_images(
        demo,
        "face",
        lambda: (
            datasets.shapes(n=C.pick(args, 8, 64, 76), size=size, seed=args.seed + 1)[0],
            f"face-like blobs (position and size vary), {size} x {size}",
        ),
        size,
        what=f"faces (d = {d})",
    )
    g = build(d, args, demo, quick_channels=(64, 32, 16))  # 76 faces: a lighter network
    optimizer, _ = C.make_optimizer(args, **optimizer_args)
    Yd = C.to_device(Y, demo)
    batch = C.pick(args, None, None, None)
    model = C.fit_abp(
        demo,
        g,
        Yd,
        iterations=iterations,
        steps=steps,
        optimizer=optimizer,
        batch_size=batch,
        label=f"d={d} ",
    )
    recon = g.forward(model.Z)
    err = C.mae(Y, recon)
    n_show = min(len(Y), 16)
    demo.save_grid("faces_training.png", Y[:n_show], nrow=8)
    demo.save_grid("faces_reconstruction.png", recon[:n_show], nrow=8)
    # samples: Z ~ N(0, I) from an explicit generator
    z = demo.rng(2).standard_normal((16, d)).astype(np.float32)
    demo.save_grid("faces_samples.png", g.forward(C.to_device(z, demo)), nrow=8)
    # interpolation between the inferred Z of pairs of training faces
    Z = model.Z
    pairs = [(0, 1), (2, 3), (4, 5), (6, 7)][: max(1, len(Y) // 2)]
    pairs = [(i % len(Y), j % len(Y)) for i, j in pairs]
    rows = {}
    norms = {}
    for method in ("linear", "slerp"):
        paths = [evaluation.interpolate(Z[i], Z[j], 8, method=method) for i, j in pairs]
        path = demo.xp.concatenate(paths).astype(Z.dtype)  # (pairs * 8, d)
        rows[method] = g.forward(path)
        norms[method] = float(np.linalg.norm(C.to_numpy(path), axis=1).reshape(-1, 8)[:, 4].mean())
        demo.save_grid(f"faces_interpolation_{method}.png", rows[method], nrow=8)
    end_norm = float(np.linalg.norm(C.to_numpy(Z), axis=1).mean())
    demo.results["faces"] = {
        "images": len(Y),
        "d": d,
        "train_error": err,
        "mean_norm_inferred_z": end_norm,
        "mean_norm_midpoint_linear": norms["linear"],
        "mean_norm_midpoint_slerp": norms["slerp"],
    }
    demo.table(
        f"Faces, d = {d}: training reconstruction and interpolation",
        [
            "images",
            "d",
            "iterations",
            "mean abs error [0, 1]",
            "norm of inferred z",
            "norm mid linear",
            "norm mid slerp",
        ],
        [[len(Y), d, iterations, err, end_norm, norms["linear"], norms["slerp"]]],
        note="Interpolation rows: 8 points from one training face's inferred Z to another's. "
        "norm mid: the norm of z at the middle of the path "
        "(linear paths shrink it, slerp keeps it).",
    )


def main(argv: list[str] | None = None) -> dict:
    p = C.parser("objects", __doc__)
    C.add_learning_options(p)
    p.add_argument("--part", choices=["lion_tiger", "faces", "both"], default="both")
    args = p.parse_args(argv)
    demo = C.Demo("objects", "Object patterns: lion-tiger (d = 2) and faces (d = 100)", args)
    size = C.pick(args, 16, 32, 64)
    iterations = args.iterations or C.pick(args, 2, 150, 600)
    steps = C.pick(args, 2, 10, 30)
    optimizer_args = {"quick_lr": 2e-3}
    _, opt = C.make_optimizer(args, **optimizer_args)
    demo.settings = {
        "image size": size,
        "network channels (lion-tiger; faces)": C.pick(
            args,
            "32, 16, 3",
            "128, 64, 32, 3; 64, 32, 16, 3",
            "512, 256, 128, 64, 3",
        ),
        "iterations": iterations,
        "Langevin steps": steps,
        "delta": 0.3,
        "sigma": 0.3,
        "initial Z": "zeros",
        **opt,
    }
    if args.part in ("lion_tiger", "both"):
        lion_tiger(args, demo, size, iterations, steps, optimizer_args)
    if args.part in ("faces", "both"):
        faces(args, demo, size, iterations, steps, optimizer_args)
    return demo.finish()


if __name__ == "__main__":
    main(sys.argv[1:])
