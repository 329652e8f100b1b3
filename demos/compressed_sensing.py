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

    python demos/compressed_sensing.py --quick          # 32 x 32, four numbers of measurements
    python demos/compressed_sensing.py --device gpu     # 64 x 64, d = 100, 600 iterations
"""

from __future__ import annotations

import sys

import _common as C
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
    args = p.parse_args(argv)
    demo = C.Demo(
        "compressed_sensing", "Compressed sensing: learning from random projections", args
    )

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
    pca = evaluation.PCA(min(d, len(Y))).fit(Y)

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


if __name__ == "__main__":
    main(sys.argv[1:])
