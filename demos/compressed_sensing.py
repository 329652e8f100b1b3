"""Experiment 6 of the paper: learning from indirect data (compressed sensing).

Each image Y_i is never seen: only m random projections X_i = S vec(Y_i) are, with S a fixed
(m, D) matrix whose rows are white-noise images (m much smaller than the D pixels). ABP replaces
f by S f in both steps (abp_np.observation.Projection); after learning, f(Z_i) recovers the
image. Held-out images are recovered from their projections with W fixed.

Baseline: PCA at the same d, recovering c from X = S (mu + U^T c) by least squares
(abp_np.tools.evaluation.pca_project_recover). The PCA basis is fitted on the COMPLETE training images,
which ABP never sees: an advantage given to the baseline.

Error: mean absolute difference on the [0, 1] scale over all pixels.

Data: --data FOLDER (last fifth held out), else the paper's Image/face and Image/face_eva, else
generated face-like blobs (abp_np.io.datasets.shapes_split).

--paper-cpu (demos/_protocol.py): 1,000 real training digits (D = 400 pixels) seen only through
m = 40, 100, 200 projections each, and 300 held-out digits recovered from theirs, in two
settings: ONE matrix S shared by every image (the paper's wording), and one S per image (drawn
from a seed per image: abp_np.observation.RandomProjections). With a shared S the D - m
directions of its null space are never observed in any image, so only the generator's structure
can fill them in; with one S per image the whole image space is observed across the training
set. The fair baseline learns a linear generator y = W z + b (no tanh, same d) by the same ABP
from the same projections (abp_np.linear_generator), with its step size and learning rate
chosen on 300 validation images from two candidates; the grey image (all pixels 0.5) is a
reference that uses no data.

    python demos/compressed_sensing.py --quick          # 32 x 32, four numbers of measurements
    python demos/compressed_sensing.py --paper-cpu      # real digits, about 25 minutes on 2 cores
    python demos/compressed_sensing.py --device gpu     # 64 x 64, d = 100, 600 iterations
"""

from __future__ import annotations

import sys

import _common as C
import _protocol as P
import numpy as np
from inpainting import train_test

import abp_np
from abp_np.observation import Projection
from abp_np.tools import evaluation


def main(argv: list[str] | None = None) -> dict:
    p = C.parser("compressed_sensing", __doc__)
    C.add_learning_options(p)
    p.add_argument(
        "--measurements",
        type=int,
        nargs="+",
        default=None,
        help="numbers m of random projections per image",
    )
    p.add_argument("--d", type=int, default=None, help="dimension of Z and of the PCA")
    P.add_options(p)
    args = p.parse_args(argv)
    demo = C.Demo(
        "compressed_sensing", "Compressed sensing: learning from random projections", args
    )
    if args.paper_cpu:
        return paper_cpu(args, demo)

    size = C.pick(args, 16, 32, 64)
    D = 3 * size * size
    d = args.d or C.pick(args, 4, 20, 100)
    channels = C.pick(args, (32, 16), (64, 32, 16), (512, 256, 128, 64))
    ms = args.measurements or C.pick(args, [100, 30], [600, 300, 150, 60], [2000, 1000, 500, 200])
    n_train = C.pick(args, 8, 32, None)
    n_test = C.pick(args, 4, 12, None)
    iterations = args.iterations or C.pick(args, 2, 200, 600)
    steps = C.pick(args, 2, 10, 30)
    test_steps = C.pick(args, 4, 100, 300)
    opt = C.make_optimizer(args, quick_lr=2e-3)[1]
    demo.settings = {
        "image size": size,
        "pixels D": D,
        "d": d,
        "network channels": list(channels) + [3],
        "iterations": iterations,
        "Langevin steps": steps,
        "held-out Langevin steps": test_steps,
        "delta": 0.3,
        "sigma": 0.3,
        "S": "white noise, N(0, 1/D) entries",
        **opt,
    }
    Y, Y_test = train_test(args, demo, size, n_train, n_test)
    demo.settings["training images"] = len(Y)
    demo.settings["held-out images"] = len(Y_test)
    pca = evaluation.PCA(min(d, len(Y) - 2)).fit(Y)

    rows = []
    for k, m in enumerate(ms):
        # white-noise measurement images, one per row: (m, D), scaled so |row| is about 1
        S = (demo.rng(20 + k).standard_normal((m, D)) / np.sqrt(D)).astype(np.float32)
        X = Y.reshape(len(Y), -1) @ S.T  # (N, m)
        X_test = Y_test.reshape(len(Y_test), -1) @ S.T

        g = abp_np.object_generator(latent_dim=d, channels=channels, rng=demo.rng(1))
        g.to(args.device)
        optimizer, _ = C.make_optimizer(args, quick_lr=2e-3)
        obs = Projection(demo.xp.asarray(S), image_shape=Y.shape[1:])
        model = C.fit_abp(
            demo,
            g,
            C.to_device(X, demo),
            iterations=iterations,
            steps=steps,
            optimizer=optimizer,
            observation=obs,
            label=f"m={m}: ",
        )
        abp_train = C.to_numpy(g.forward(model.Z))
        z_test = model.infer(
            C.to_device(X_test, demo), steps=test_steps, observation=obs, init="zeros"
        )
        abp_test = C.to_numpy(g.forward(z_test))
        S_img = S.reshape(m, *Y.shape[1:])
        pca_train = C.to_numpy(evaluation.pca_project_recover(X, S_img, pca))
        pca_test = C.to_numpy(evaluation.pca_project_recover(X_test, S_img, pca))
        row = [
            m,
            m / D,
            C.mae(Y, abp_train),
            C.mae(Y, pca_train),
            C.mae(Y_test, abp_test),
            C.mae(Y_test, pca_test),
        ]
        rows.append(row)
        demo.log(f"m={m}: " + ", ".join(C.fmt(v) for v in row[1:]))
        n = min(len(Y), 8)
        demo.save_grid(
            f"cs_m{m}.png", np.concatenate([Y[:n], abp_train[:n], pca_train[:n]]), nrow=n
        )

    columns = ["measurements m", "m / D", "ABP train", "PCA train", "ABP test", "PCA test"]
    demo.results = {
        "rows": [dict(zip(columns, r, strict=True)) for r in rows],
        "abp_wins_train": sum(r[2] < r[3] for r in rows),
        "abp_wins_test": sum(r[4] < r[5] for r in rows),
    }
    demo.table(
        f"Recovery error from random projections (mean abs, [0, 1] scale), d = {d}",
        columns,
        rows,
        note=f"ABP is below PCA for {demo.results['abp_wins_train']} of {len(rows)} settings on "
        f"training images and {demo.results['abp_wins_test']} of {len(rows)} on held-out ones. "
        "Pictures cs_m<m>.png, rows: original, ABP, PCA.",
    )
    return demo.finish()


#: (delta, lr) tried for the linear generator; the one with the lowest validation error is kept.
LINEAR_CHOICES = ((P.DELTA, 1e-3), (0.1, 3e-3))


def paper_cpu(args, demo: C.Demo) -> dict:
    """Experiment 6 on 1,000 real images, with a shared S and with one S per image."""
    from abp_np.observation import RandomProjections

    s = P.settings_of(args)
    if args.d:
        s["d"] = args.d
    ms = args.measurements or ([20, 40] if args.smoke else [40, 100, 200])
    P.note_settings(demo, s)
    demo.settings["measurements m"] = ms
    demo.settings["S"] = "entries N(0, 1/D), D = number of pixels"
    split = P.load(args, demo, s)
    Y, Y_test = split.train, split.test
    shape = Y.shape[1:]
    D = int(np.prod(shape))
    d = s["d"]
    grey = C.mae(Y_test, np.zeros_like(Y_test))
    shared = {}  # m -> the one S of that m (training, held-out and validation images alike)
    obs_val = {
        "shared S": lambda k, m: shared[m],
        "one S per image": lambda k, m: RandomProjections.for_examples(
            len(split.validation), m, shape, seed=1000 * args.seed + 50 + k
        ),
    }
    rows, curves = [], {}
    for k, m in enumerate(ms):
        for setting in ("shared S", "one S per image"):
            if setting == "shared S":
                S = (demo.rng(20 + k).standard_normal((m, D)) / np.sqrt(D)).astype(np.float32)
                obs = Projection(demo.xp.asarray(S), image_shape=shape)
                obs_test = shared[m] = obs
            else:
                obs = RandomProjections.for_examples(
                    len(Y), m, shape, seed=1000 * args.seed + 30 + k
                )
                obs_test = RandomProjections.for_examples(
                    len(Y_test), m, shape, seed=1000 * args.seed + 40 + k
                )
            X = C.to_numpy(_observe(obs, Y, demo))
            X_test = C.to_numpy(_observe(obs_test, Y_test, demo))
            X_val = C.to_numpy(_observe(obs_val[setting](k, m), split.validation, demo))
            errors = []
            # ABP: the protocol's settings
            g = P.network(d, shape, s["network channels"], demo.rng(1))
            model = P.train(demo, g, X, s, observation=obs, label=f"m={m} {setting} ABP: ")
            abp_test = P.recover(model, X_test, s, obs_test, rng=demo.device_rng(5))
            errors += [C.mae(Y, P.recover(model, X, s, obs, Z=model.Z)), C.mae(Y_test, abp_test)]
            # the linear generator: its step size and learning rate chosen on the validation
            # images (the protocol's delta is slow for a model that starts near zero)
            best = None
            for delta, lr in LINEAR_CHOICES:
                g = abp_np.linear_generator(d, shape, rng=demo.rng(1))
                run = {**s, "delta": delta, "lr": lr}
                lin = P.train(
                    demo, g, X, run, observation=obs, label=f"m={m} {setting} linear {delta}/{lr}: "
                )
                v_obs = obs_val[setting](k, m)
                val = C.mae(
                    split.validation, P.recover(lin, X_val, run, v_obs, rng=demo.device_rng(6))
                )
                if best is None or val < best[0]:
                    best = (val, lin, run, f"delta {delta}, lr {lr:g}")
            _, lin, run, chosen = best
            lin_test = P.recover(lin, X_test, run, obs_test, rng=demo.device_rng(5))
            errors += [C.mae(Y, P.recover(lin, X, run, obs, Z=lin.Z)), C.mae(Y_test, lin_test)]
            pictures = [Y_test[:10], np.clip(abp_test[:10], -1, 1), np.clip(lin_test[:10], -1, 1)]
            row = [m, setting, errors[0], errors[2], errors[1], errors[3], grey, chosen]
            rows.append(row)
            demo.log(f"m={m}, {setting}: " + ", ".join(C.fmt(v) for v in row[2:]))
            curves.setdefault(f"ABP, {setting}", ([], []))
            curves.setdefault(f"linear, {setting}", ([], []))
            for label, value in ((f"ABP, {setting}", errors[1]), (f"linear, {setting}", errors[3])):
                curves[label][0].append(m)
                curves[label][1].append(value)
            tag = "shared" if setting == "shared S" else "per_image"
            demo.save_grid(f"cs_paper_cpu_m{m}_{tag}.png", np.concatenate(pictures), nrow=10)
    columns = [
        "m",
        "S",
        "ABP train",
        "linear train",
        "ABP held-out",
        "linear held-out",
        "grey image held-out",
        "linear: chosen on validation",
    ]
    wins = {
        setting: sum(r[4] < r[5] for r in rows if r[1] == setting)
        for setting in ("shared S", "one S per image")
    }
    demo.results = {
        "rows": [dict(zip(columns, r, strict=True)) for r in rows],
        "abp_wins_held_out": wins,
    }
    demo.table(
        f"Recovery error from m projections (mean abs over all pixels, [0, 1] scale), d = {d}, "
        f"D = {D}, {len(Y)} training and {len(Y_test)} held-out images",
        columns,
        rows,
        note=f"ABP recovers held-out images better than the linear generator learned the same way "
        f"in {wins['shared S']} of {len(ms)} settings of m with a shared S and in "
        f"{wins['one S per image']} of {len(ms)} with one S per image. Pictures "
        "cs_paper_cpu_m<m>_<shared|per_image>.png, rows: held-out images, ABP's recovery, the "
        "linear generator's.",
    )
    P.chart(
        demo.path("cs_paper_cpu.png"),
        curves,
        title="Held-out recovery error against the number of projections m",
        xlabel="projections per image m",
        ylabel="mean abs error [0, 1]",
    )
    return demo.finish()


def _observe(obs, Y, demo: C.Demo, chunk: int = 250):
    """The projections of Y, chunk by chunk (per-image S are drawn for a chunk at a time)."""
    out = []
    for start in range(0, len(Y), chunk):
        idx = np.arange(start, min(start + chunk, len(Y)))
        out.append(C.to_numpy(obs.take(idx).observe(demo.xp.asarray(Y[idx]))))
    return np.concatenate(out)


if __name__ == "__main__":
    main(sys.argv[1:])
