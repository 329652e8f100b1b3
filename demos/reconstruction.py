"""Experiment 7 of the paper: reconstruction of held-out images, ABP against PCA.

After learning on the training images, the Z of each held-out image is inferred with W fixed
(Langevin dynamics started from N(0, I)), and f(Z) is compared with the image. PCA with the same
number d of components is the linear special case of the model; its reconstruction of a
held-out image is its projection onto the d-dimensional principal subspace of the training set.
The paper's claim is that ABP's error is below PCA's at every d; this demo reports whichever way
it comes out.

Error: mean absolute difference on the [0, 1] scale over all pixels.

Data: --data FOLDER (last fifth held out), else the paper's Image/face and Image/face_eva, else
generated face-like blobs (abp_np.io.datasets.shapes_split).

--paper-cpu (demos/_protocol.py): 1,000 real training digits and 300 held-out ones, d = 10, 20,
40, mini-batches, 1,200 weight updates; and the crossover chart: ABP's and PCA's held-out error
at d = 20 as the training set grows from 100 to 3,000 images, with the paper's data-set size
marked, so one sees how much data the claim needs.

    python demos/reconstruction.py --quick               # 32 x 32, d = 5, 10, 20
    python demos/reconstruction.py --paper-cpu           # real digits, about 20 minutes on 2 cores
    python demos/reconstruction.py --paper-cpu --data FOLDER --test-fraction 0.2
    python demos/reconstruction.py --device gpu          # 64 x 64, d = 10, 20, 50, 600 iterations
"""

from __future__ import annotations

import sys

import _common as C
import _protocol as P
import numpy as np
from inpainting import train_test

import abp_np
from abp_np.tools import evaluation


def main(argv: list[str] | None = None) -> dict:
    p = C.parser("reconstruction", __doc__)
    C.add_learning_options(p)
    p.add_argument("--dims", type=int, nargs="+", default=None, help="dimensions d to compare")
    P.add_options(p)
    p.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=None,
        help="--paper-cpu: training-set sizes of the crossover chart (default 30 100 300 1000 3000)",
    )
    args = p.parse_args(argv)
    demo = C.Demo("reconstruction", "Reconstruction of held-out images: ABP against PCA", args)
    if args.paper_cpu:
        return paper_cpu(args, demo)

    size = C.pick(args, 16, 32, 64)
    dims = args.dims or C.pick(args, [2], [5, 10, 20], [10, 20, 50])
    channels = C.pick(args, (32, 16), (64, 32, 16), (512, 256, 128, 64))
    n_train = C.pick(args, 8, None, None)
    n_test = C.pick(args, 4, 12, None)
    iterations = args.iterations or C.pick(args, 2, 150, 600)
    steps = C.pick(args, 2, 10, 30)
    test_steps = C.pick(args, 4, 100, 300)
    opt = C.make_optimizer(args, quick_lr=2e-3)[1]
    demo.settings = {
        "image size": size,
        "network channels": list(channels) + [3],
        "iterations": iterations,
        "Langevin steps": steps,
        "held-out Langevin steps": test_steps,
        "held-out start": "N(0, I)",
        "delta": 0.3,
        "sigma": 0.3,
        **opt,
    }
    Y, Y_test = train_test(args, demo, size, n_train, n_test)
    demo.settings["training images"] = len(Y)
    demo.settings["held-out images"] = len(Y_test)

    rows = []
    pictures = [Y_test[:8]]
    for d in dims:
        if d >= len(Y) - 1:
            demo.note(
                f"d = {d} skipped: PCA of {len(Y)} images needs d well below {len(Y)} (at most "
                f"{len(Y) - 2} here)."
            )
            continue
        g = abp_np.object_generator(latent_dim=d, channels=channels, rng=demo.rng(1))
        g.to(args.device)
        optimizer, _ = C.make_optimizer(args, quick_lr=2e-3)
        model = C.fit_abp(
            demo,
            g,
            C.to_device(Y, demo),
            iterations=iterations,
            steps=steps,
            optimizer=optimizer,
            label=f"d={d}: ",
        )
        abp_train = C.to_numpy(g.forward(model.Z))
        abp_test = C.to_numpy(
            model.reconstruct(
                C.to_device(Y_test, demo), steps=test_steps, init="normal", rng=demo.device_rng(5)
            )
        )
        pca = evaluation.PCA(d).fit(Y)
        pca_train = C.to_numpy(pca.reconstruct(Y))
        pca_test = C.to_numpy(pca.reconstruct(Y_test))
        row = [
            d,
            C.mae(Y, abp_train),
            C.mae(Y, pca_train),
            C.mae(Y_test, abp_test),
            C.mae(Y_test, pca_test),
        ]
        rows.append(row)
        demo.log(f"d={d}: " + ", ".join(C.fmt(v) for v in row[1:]))
        pictures += [abp_test[:8], pca_test[:8]]

    columns = ["d", "ABP train", "PCA train", "ABP held-out", "PCA held-out"]
    wins = sum(r[3] < r[4] for r in rows)
    demo.results = {
        "rows": [dict(zip(columns, r, strict=True)) for r in rows],
        "abp_wins_held_out": wins,
    }
    verdict = (
        "ABP is below PCA at every d on held-out images."
        if rows and wins == len(rows)
        else f"ABP is below PCA at {wins} of {len(rows)} d on held-out images: the paper's "
        "claim is not reproduced at these settings."
    )
    demo.table(
        "Reconstruction error (mean abs, [0, 1] scale)",
        columns,
        rows,
        note=verdict + " Picture reconstruction.png, rows: held-out images, then for each d "
        "ABP's and PCA's reconstructions.",
    )
    demo.save_grid("reconstruction.png", np.concatenate(pictures), nrow=min(8, len(Y_test)))
    return demo.finish()


def _one_run(args, demo: C.Demo, s: dict, split: P.Split, d: int, label: str) -> dict:
    """ABP and PCA at dimension d on one training set; errors on training and held-out images."""
    shape = split.train.shape[1:]
    g = P.network(d, shape, s["network channels"], demo.rng(1))
    model = P.train(demo, g, split.train, s, label=label)
    abp_train = P.recover(model, split.train, s, Z=model.Z)
    abp_test = P.recover(model, split.test, s, rng=demo.device_rng(5))
    pca = evaluation.PCA(d).fit(split.train)
    return {
        "d": d,
        "training images": len(split.train),
        "ABP train": C.mae(split.train, abp_train),
        "PCA train": C.mae(split.train, pca.reconstruct(split.train)),
        "ABP held-out": C.mae(split.test, abp_test),
        "PCA held-out": C.mae(split.test, pca.reconstruct(split.test)),
        "mean |Z|": P.z_norm(model),
        "pictures": (abp_test[:10], C.to_numpy(pca.reconstruct(split.test[:10]))),
    }


def paper_cpu(args, demo: C.Demo) -> dict:
    """Experiment 7 on 1,000 real images, and the crossover chart (see demos/_protocol.py)."""
    s = P.settings_of(args)
    dims = args.dims or ([2, 3] if args.smoke else [10, 20, 40])
    sizes = args.sizes or ([12, 24] if args.smoke else [30, 100, 300, 1000, 3000])
    P.note_settings(demo, s)
    demo.settings["dimensions d"] = dims
    demo.settings["crossover: training-set sizes (d = 20, same number of weight updates)"] = sizes
    split = P.load(args, demo, s)
    updates = s["epochs"] * -(-len(split.train) // s["batch size"])  # weight updates of a run

    runs = []
    for d in dims:
        runs.append(_one_run(args, demo, s, split, d, f"d={d}: "))
        demo.log(
            f"d={d}: "
            + ", ".join(f"{k} {C.fmt(v)}" for k, v in runs[-1].items() if k != "pictures")
        )
    columns = ["d", "ABP train", "PCA train", "ABP held-out", "PCA held-out", "mean |Z|"]
    rows = [[r[c] for c in columns] for r in runs]
    wins = sum(r["ABP held-out"] < r["PCA held-out"] for r in runs)
    demo.table(
        f"Reconstruction error (mean abs, [0, 1] scale), {len(split.train)} training and "
        f"{len(split.test)} held-out images",
        columns,
        rows,
        note=f"ABP is below PCA on held-out images at {wins} of {len(runs)} values of d. "
        "mean |Z|: mean norm of the inferred training Z (about sqrt(d) under the prior). "
        "Picture reconstruction_paper_cpu.png, rows: held-out images, then for each d ABP's and "
        "PCA's reconstructions.",
    )
    pictures = [split.test[:10]] + [p for r in runs for p in r["pictures"]]
    demo.save_grid("reconstruction_paper_cpu.png", np.concatenate(pictures), nrow=10)

    # the crossover: training-set size against held-out error at d = 20, fixed updates
    d = 20 if not args.smoke else dims[-1]
    cross = []
    for n in sizes:
        same = [r for r in runs if r["d"] == d and r["training images"] == n]
        if same:
            cross.append(same[0])
            continue
        sub = P.load(args, demo, s, n_train=n) if args.data is None else _subset(split, n)
        epochs = max(1, round(updates / -(-n // min(s["batch size"], n))))
        s_n = {**s, "epochs": epochs}
        cross.append(_one_run(args, demo, s_n, sub, d, f"n={n}: "))
        demo.log(
            f"n={n}: ABP {C.fmt(cross[-1]['ABP held-out'])}, PCA {C.fmt(cross[-1]['PCA held-out'])}"
        )
    ccols = [
        "training images",
        "ABP train",
        "PCA train",
        "ABP held-out",
        "PCA held-out",
        "mean |Z|",
    ]
    crows = [[r[c] for c in ccols] for r in cross]
    demo.table(
        f"Crossover: held-out error against the number of training images (d = {d}, "
        f"{updates} weight updates each)",
        ccols,
        crows,
        note="Every run sees the same held-out images and makes the same number of weight "
        "updates (more epochs for fewer images). The paper's face set had 76 training images "
        "(marked on crossover.png).",
    )
    P.chart(
        demo.path("crossover.png"),
        {
            "ABP held-out": (
                [r["training images"] for r in cross],
                [r["ABP held-out"] for r in cross],
            ),
            "PCA held-out": (
                [r["training images"] for r in cross],
                [r["PCA held-out"] for r in cross],
            ),
            "ABP train": ([r["training images"] for r in cross], [r["ABP train"] for r in cross]),
            "PCA train": ([r["training images"] for r in cross], [r["PCA train"] for r in cross]),
        },
        title=f"Reconstruction error, d = {d}, against the training-set size",
        xlabel="training images (log scale)",
        ylabel="mean abs error [0, 1]",
        logx=True,
        marks={"paper's faces: 76": 76},
    )
    demo.results = {
        "rows": [dict(zip(columns, r, strict=True)) for r in rows],
        "abp_wins_held_out": wins,
        "crossover": [dict(zip(ccols, r, strict=True)) for r in crows],
        "weight updates per run": updates,
    }
    return demo.finish()


def _subset(split: P.Split, n: int) -> P.Split:
    """The first n training images of a user's folder (held-out images unchanged)."""
    return P.Split(split.train[:n], split.test, split.validation)


if __name__ == "__main__":
    main(sys.argv[1:])
