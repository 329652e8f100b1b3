"""Train / test / negative reconstruction errors over learning.

While ABP learns on the training images, every few iterations the generator (W fixed at that
point) reconstructs three sets: the training images, held-out images of the same category, and
"negative" images of another category. Each set's Z is inferred afresh the same way (gradient
ascent on the log-posterior from Z = 0, the same number of steps for all three), so the curves
compare like with like.

Reading the curves: test close to train and far below negative is good generalisation; test
climbing towards negative is over-fitting; all three alike is under-fitting (the model has
learnt nothing specific to the category).

Data: --data FOLDER (last fifth held out; negatives are then generated squares), else the
paper's Image/face (training), Image/face_eva (held-out) and Image/cat (negative), else
generated discs (training, held-out) and squares (negative) (abp_np.io.datasets.shapes_split).

--paper-cpu (demos/_protocol.py): trained on 1,000 real digits of the classes 0-4; held-out:
300 other digits of those classes; negative: 300 digits of the classes 5-9. Every few epochs the
three sets are reconstructed the same way (Langevin from N(0, I) with W fixed, then noise-free
steps, in eval mode with batch norm's statistics taken from the training Z at that point).
With --data FOLDER, --negative-data FOLDER gives the negatives.

    python demos/error_curves.py --quick           # 32 x 32, CPU minutes
    python demos/error_curves.py --paper-cpu       # real digits, about 6 minutes on 2 cores
    python demos/error_curves.py --device gpu      # 64 x 64, d = 100, 600 iterations
"""

from __future__ import annotations

import sys

import _common as C
import _protocol as P
import numpy as np
from inpainting import train_test

import abp_np
from abp_np.io import datasets
from abp_np.tools.plot import line_chart


def main(argv: list[str] | None = None) -> dict:
    p = C.parser("error_curves", __doc__)
    C.add_learning_options(p)
    p.add_argument("--d", type=int, default=None, help="dimension of Z")
    p.add_argument("--negative", default="cat", help="release category used as negatives")
    P.add_options(p)
    p.add_argument(
        "--negative-data", type=C.Path, default=None, help="--paper-cpu --data: negative images"
    )
    args = p.parse_args(argv)
    demo = C.Demo(
        "error_curves", "Train / test / negative reconstruction error over learning", args
    )
    if args.paper_cpu:
        return paper_cpu(args, demo)

    size = C.pick(args, 16, 32, 64)
    d = args.d or C.pick(args, 4, 20, 100)
    channels = C.pick(args, (32, 16), (64, 32, 16), (512, 256, 128, 64))
    n_train = C.pick(args, 8, 48, None)
    n_test = C.pick(args, 4, 12, None)
    iterations = args.iterations or C.pick(args, 4, 100, 600)
    every = max(1, iterations // C.pick(args, 2, 10, 20))
    steps = C.pick(args, 2, 10, 30)
    eval_steps = C.pick(args, 4, 60, 200)
    optimizer, opt = C.make_optimizer(args, quick_lr=2e-3)
    demo.settings = {
        "image size": size,
        "d": d,
        "network channels": list(channels) + [3],
        "iterations": iterations,
        "evaluated every": every,
        "Langevin steps": steps,
        "evaluation": f"{eval_steps} steps of gradient ascent on Z from 0, W fixed",
        "delta": 0.3,
        "sigma": 0.3,
        **opt,
    }
    Y, Y_test = train_test(args, demo, size, n_train, n_test)
    split = datasets.shapes_split(
        n_train=1, n_test=1, n_negative=len(Y_test), size=size, seed=args.seed
    )
    if args.data is not None:
        Y_neg = split.negative
        demo.use_data("built-in", f"negative: generated squares, {size} x {size}")
    else:
        Y_neg = C.choose_images(
            demo,
            args.negative,
            lambda: (split.negative, f"generated squares, {size} x {size}"),
            size,
            limit=len(Y_test),
            what="negative",
        )
    demo.settings["training / held-out / negative images"] = (
        f"{len(Y)} / {len(Y_test)} / {len(Y_neg)}"
    )

    sets = {"train": Y, "test": Y_test, "negative": Y_neg}
    curves: dict[str, list[float]] = {k: [] for k in sets}
    at: list[int] = []

    def evaluate(model, record) -> None:
        t = int(record["iteration"])
        if t % every and t != iterations:
            return
        at.append(t)
        for name, images in sets.items():
            z = model.infer(C.to_device(images, demo), steps=eval_steps, init="zeros", noise=False)
            curves[name].append(C.mae(images, model.generator.forward(z)))
        demo.log(f"iteration {t}: " + ", ".join(f"{k} {v[-1]:.4f}" for k, v in curves.items()))

    g = abp_np.object_generator(latent_dim=d, channels=channels, rng=demo.rng(1))
    g.to(args.device)
    C.fit_abp(
        demo,
        g,
        C.to_device(Y, demo),
        iterations=iterations,
        steps=steps,
        optimizer=optimizer,
        callback=evaluate,
    )

    return _report(demo, "error_curves.png", f"d = {d}", "iteration", "test", at, curves)


def _report(demo: C.Demo, picture: str, what: str, unit: str, test: str, at, curves) -> dict:
    """The chart and the table of the three curves, measured at ``at`` (iterations or epochs)."""
    demo.save_png(
        picture,
        line_chart(
            {name: (at, v) for name, v in curves.items()},
            title=f"reconstruction error over learning ({what})",
            xlabel=unit,
            ylabel="mean abs error [0, 1]",
        ),
    )
    rows = [
        [t, curves["train"][i], curves["test"][i], curves["negative"][i]] for i, t in enumerate(at)
    ]
    demo.results = {f"{unit}s": at, **curves}
    last = rows[-1]
    demo.table(
        "Reconstruction error over learning (mean abs, [0, 1] scale)",
        [unit, "train", test, "negative"],
        rows,
        note=f"At the end: {test} - train = {last[2] - last[1]:.4f}, negative - {test} = "
        f"{last[3] - last[2]:.4f}.",
    )
    return demo.finish()


def _digit_sets(args, demo: C.Demo, s: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training and held-out digits of the classes 0-4, negatives of the classes 5-9."""
    from abp_np.io import datasets

    X, labels = datasets.digits(seed=args.seed)
    pos, neg = X[labels < 5], X[labels >= 5]
    n_train, n_test = s["training images"], s["held-out images"]
    demo.use_data(
        "package",
        f"real handwritten digits (digits.png of the Debian package opencv-doc), a fixed shuffle "
        f"(seed {args.seed}): {n_train} training and {n_test} held-out digits of the classes "
        f"0-4, {n_test} negative digits of the classes 5-9",
        datasets.digits_path(),
    )
    return pos[n_test : n_test + n_train], pos[:n_test], neg[:n_test]


def paper_cpu(args, demo: C.Demo) -> dict:
    """Train / held-out / negative errors over learning on real digits (demos/_protocol.py)."""
    from abp_np.io import data as D

    s = P.settings_of(args)
    if args.d:
        s["d"] = args.d
    P.note_settings(demo, s)
    if args.data is not None:
        if args.negative_data is None:
            raise SystemExit("--paper-cpu --data FOLDER needs --negative-data FOLDER (negatives)")
        split = P.load(args, demo, s)
        Y, Y_test = split.train, split.test
        Y_neg, _ = D.load_images(
            args.negative_data,
            size=args.size,
            channels=args.channels,
            skip_bad=True,
            limit=len(Y_test),
        )
        demo.use_data("user", f"negative: {len(Y_neg)} images of {args.negative_data}")
    else:
        Y, Y_test, Y_neg = _digit_sets(args, demo, s)
    n_eval = 8 if args.smoke else 100  # images of each set reconstructed at each point
    s_eval = {
        **s,
        "held-out Langevin steps": 2 if args.smoke else 40,
        "noise-free finishing steps": 2 if args.smoke else 20,
    }
    epochs = s["epochs"]
    every = max(1, epochs // 6)
    demo.settings["evaluated every (epochs)"] = every
    demo.settings["evaluation"] = (
        f"{n_eval} images of each set: {s_eval['held-out Langevin steps']} Langevin steps from "
        f"N(0, I) then {s_eval['noise-free finishing steps']} noise-free steps, W fixed, eval mode"
    )
    sets = {"train": Y[:n_eval], "test": Y_test[:n_eval], "negative": Y_neg[:n_eval]}
    curves: dict[str, list[float]] = {k: [] for k in sets}
    at: list[int] = []

    def evaluate(model, record) -> None:
        t = int(record["iteration"])
        if t % every and t != epochs:
            return
        g = model.generator
        g.recompute_statistics(model.Z, batch_size=s["batch size"])
        g.eval()
        for name, images in sets.items():
            rec = P.recover(model, images, s_eval, rng=demo.device_rng(7))
            curves[name].append(C.mae(images, rec))
        g.train()
        at.append(t)
        demo.log(f"epoch {t}: " + ", ".join(f"{k} {v[-1]:.4f}" for k, v in curves.items()))

    g = P.network(s["d"], Y.shape[1:], s["network channels"], demo.rng(1))
    P.train(demo, g, Y, s, callback=evaluate)
    what = f"d = {s['d']}, {len(Y)} training images"
    return _report(demo, "error_curves_paper_cpu.png", what, "epoch", "held-out", at, curves)


if __name__ == "__main__":
    main(sys.argv[1:])
