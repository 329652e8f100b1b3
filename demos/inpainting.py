"""Experiment 5 of the paper: learning from incomplete (occluded) data.

Every training image is occluded and only its observed pixels enter both steps of ABP: the residual
Y - f(Z) is masked in Langevin inference and in learning (abp_np.observation.Masked). The occluded
pixels of a training image are then recovered as f(Z) there. A held-out image, occluded the same
way, is recovered with W fixed by inferring its Z from the observed pixels alone.

Occlusions (abp_np.tools.occlusion.occlusion_mask, drawn from --seed): P.5 / P.7 / P.9 salt-and-pepper
of 3 x 3 blocks covering about 50 / 70 / 90 % of the pixels; M20 ... M50 one square of that side
on a 64 x 64 image (scaled with the image in quick mode: M20 is 10 pixels on 32 x 32).

Error: mean absolute difference on the [0, 1] scale over the occluded pixels only, for ABP and
two baselines: PCA completion at the same d (PCA fitted to the occluded training set by
iterative imputation; held-out images completed by least squares on their observed pixels) and
interpolation from neighbouring pixels (harmonic fill, no learning).

Data: --data FOLDER (its last fifth held out), else the paper's Image/face (training) and
Image/face_eva (held-out), else generated face-like blobs (abp_np.io.datasets.shapes_split).

--paper-cpu (demos/_protocol.py): 1,000 real training digits, every one occluded, and 300
held-out digits occluded the same way; d = 20; baselines fitted to the same occluded images:
probabilistic PCA with missing values fitted by EM (d = 20), interpolation from neighbouring
pixels (harmonic: the MRF with an l2 smoothness prior) and total-variation inpainting (the l1
MRF). The occlusions are the paper's, scaled from its 64-pixel images to 20 pixels.

    python demos/inpainting.py --quick                 # 32 x 32, all seven occlusions, CPU minutes
    python demos/inpainting.py --paper-cpu             # real digits, about 25 minutes on 2 cores
    python demos/inpainting.py --quick --kinds P.5 M30
    python demos/inpainting.py --device gpu            # 64 x 64, d = 100, 600 iterations
"""

from __future__ import annotations

import sys

import _common as C
import _protocol as P
import numpy as np

import abp_np
from abp_np.io import datasets
from abp_np.observation import Masked
from abp_np.tools import evaluation, occlusion


def train_test(args, demo: C.Demo, size: int, n_train: int | None, n_test: int | None):
    """Training and held-out images, (N, 3, size, size) in [-1, 1]."""
    if args.data is not None:
        Y = C.load_image_set(args.data, size)
        k = max(1, len(Y) // 5)
        demo.use_data("user", f"{args.data}: {len(Y) - k} training, last {k} held out", args.data)
        return Y[:-k][:n_train], Y[-k:][:n_test]
    split = datasets.shapes_split(
        n_train=n_train or 64, n_test=n_test or 16, size=size, seed=args.seed
    )
    Y = C.choose_images(
        demo,
        "face",
        lambda: (split.train, f"face-like blobs, {size} x {size}"),
        size,
        limit=n_train,
        what="training",
    )
    Y_test = C.choose_images(
        demo,
        "face_eva",
        lambda: (split.test, f"face-like blobs, {size} x {size}"),
        size,
        limit=n_test,
        what="held-out",
    )
    return Y, Y_test


def main(argv: list[str] | None = None) -> dict:
    p = C.parser("inpainting", __doc__)
    C.add_learning_options(p)
    p.add_argument(
        "--kinds",
        nargs="+",
        default=list(occlusion.OCCLUSION_KINDS),
        help="occlusion types (default: all seven of the paper)",
    )
    p.add_argument("--d", type=int, default=None, help="dimension of Z and of the PCA")
    P.add_options(p)
    args = p.parse_args(argv)
    demo = C.Demo("inpainting", "Learning from occluded images: recovery of occluded pixels", args)
    if args.paper_cpu:
        return paper_cpu(args, demo)

    size = C.pick(args, 16, 32, 64)
    d = args.d or C.pick(args, 4, 20, 100)
    channels = C.pick(args, (32, 16), (64, 32, 16), (512, 256, 128, 64))
    n_train = C.pick(args, 8, 32, None)
    n_test = C.pick(args, 4, 12, None)
    iterations = args.iterations or C.pick(args, 2, 100, 600)
    steps = C.pick(args, 2, 10, 30)
    test_steps = C.pick(args, 4, 100, 300)
    kinds = args.kinds if not args.smoke else args.kinds[:2] if args.kinds else []
    optimizer_name = C.make_optimizer(args, quick_lr=2e-3)[1]
    demo.settings = {
        "image size": size,
        "d": d,
        "network channels": list(channels) + [3],
        "iterations": iterations,
        "Langevin steps": steps,
        "held-out Langevin steps": test_steps,
        "delta": 0.3,
        "sigma": 0.3,
        **optimizer_name,
    }
    Y, Y_test = train_test(args, demo, size, n_train, n_test)
    demo.settings["training images"] = len(Y)
    demo.settings["held-out images"] = len(Y_test)

    rows = []
    for k, kind in enumerate(kinds):
        # the paper's sizes are for 64-pixel images: occlusion_mask scales them to `size`
        label = f"{kind} ({_describe(occlusion.scaled_occlusion(kind, size))})"
        mask = occlusion.occlusion_mask(kind, len(Y), size, demo.rng(10 + k))
        mask_test = occlusion.occlusion_mask(kind, len(Y_test), size, demo.rng(100 + k))
        occluded, occluded_test = ~mask, ~mask_test
        Y_obs = np.where(mask, Y, 0.0).astype(np.float32)
        Y_test_obs = np.where(mask_test, Y_test, 0.0).astype(np.float32)

        # ABP on the occluded training images
        g = abp_np.object_generator(latent_dim=d, channels=channels, rng=demo.rng(1))
        g.to(args.device)
        optimizer, _ = C.make_optimizer(args, quick_lr=2e-3)
        model = C.fit_abp(
            demo,
            g,
            C.to_device(Y_obs, demo),
            iterations=iterations,
            steps=steps,
            optimizer=optimizer,
            observation=Masked(demo.xp.asarray(mask)),
            label=f"{kind}: ",
        )
        abp_train = C.to_numpy(g.forward(model.Z))
        z_test = model.infer(
            C.to_device(Y_test_obs, demo),
            steps=test_steps,
            observation=Masked(demo.xp.asarray(mask_test)),
            init="zeros",
        )
        abp_test = C.to_numpy(g.forward(z_test))

        # baselines
        pca, pca_train = evaluation.fit_pca_incomplete(Y_obs, mask, min(d, len(Y) - 2))
        pca_test = evaluation.pca_complete(Y_test_obs, mask_test, pca)
        nb_train = evaluation.neighbour_fill(Y_obs, mask)
        nb_test = evaluation.neighbour_fill(Y_test_obs, mask_test)
        # every estimate is brought into the data range [-1, 1] before it is measured (ABP's
        # tanh output already is; a least-squares PCA fill from few pixels may not be)
        pca_train, pca_test, nb_train, nb_test = (
            np.clip(C.to_numpy(a), -1.0, 1.0) for a in (pca_train, pca_test, nb_train, nb_test)
        )

        row = [
            label,
            float(occluded.mean()),
            C.mae(Y, abp_train, occluded),
            C.mae(Y, pca_train, occluded),
            C.mae(Y, nb_train, occluded),
            C.mae(Y_test, abp_test, occluded_test),
            C.mae(Y_test, pca_test, occluded_test),
            C.mae(Y_test, nb_test, occluded_test),
        ]
        rows.append(row)
        demo.log(f"{kind}: " + ", ".join(C.fmt(v) for v in row[1:]))
        n = min(len(Y), 8)
        abp_filled = np.where(mask, Y, abp_train)
        demo.save_grid(
            f"inpainting_{kind.replace('.', '')}.png",
            np.concatenate([Y[:n], Y_obs[:n], abp_filled[:n], pca_train[:n], nb_train[:n]]),
            nrow=n,
        )
        if k == 0:
            samples = model.sample(16, rng=demo.device_rng(2))
            demo.save_grid(f"inpainting_{kind.replace('.', '')}_samples.png", samples, nrow=8)

    columns = [
        "occlusion",
        "occluded fraction",
        "ABP train",
        "PCA train",
        "neighbours train",
        "ABP test",
        "PCA test",
        "neighbours test",
    ]
    demo.results = {
        "rows": [dict(zip(columns, r, strict=True)) for r in rows],
        "abp_best_train": sum(r[2] < min(r[3], r[4]) for r in rows),
        "abp_best_test": sum(r[5] < min(r[6], r[7]) for r in rows),
        "kinds": len(rows),
    }
    demo.table(
        f"Recovery error on the occluded pixels (mean abs, [0, 1] scale), d = {d}",
        columns,
        rows,
        note=f"ABP has the lowest error on {demo.results['abp_best_train']} of {len(rows)} "
        f"occlusions for training images and {demo.results['abp_best_test']} of {len(rows)} for "
        "held-out images. Estimates are clipped to the data range before measuring. "
        "Pictures inpainting_<kind>.png, rows: original, occluded, ABP "
        "(observed pixels kept), PCA completion, neighbour interpolation.",
    )
    return demo.finish()


def paper_cpu(args, demo: C.Demo) -> dict:
    """Experiment 5 on 1,000 real images, every one occluded (see demos/_protocol.py)."""
    from abp_np.tools import baselines

    s = P.settings_of(args)
    if args.d:
        s["d"] = args.d
    kinds = args.kinds[:2] if args.smoke else args.kinds
    P.note_settings(demo, s)
    split = P.load(args, demo, s)
    Y, Y_test = split.train, split.test
    size = Y.shape[-1]
    d = s["d"]
    demo.settings["occlusions"] = ", ".join(
        f"{k} = {_describe(occlusion.scaled_occlusion(k, size))}" for k in kinds
    )
    rows = []
    for k, kind in enumerate(kinds):
        mask = occlusion.occlusion_mask(kind, len(Y), size, demo.rng(10 + k))
        mask_test = occlusion.occlusion_mask(kind, len(Y_test), size, demo.rng(100 + k))
        hidden, hidden_test = ~mask, ~mask_test
        Y_obs = np.where(mask, Y, 0.0).astype(np.float32)
        Y_test_obs = np.where(mask_test, Y_test, 0.0).astype(np.float32)

        g = P.network(d, Y.shape[1:], s["network channels"], demo.rng(1))
        model = P.train(
            demo, g, Y_obs, s, observation=Masked(demo.xp.asarray(mask)), label=f"{kind}: "
        )
        abp_train = P.recover(model, Y_obs, s, Masked(demo.xp.asarray(mask)), Z=model.Z)
        abp_test = P.recover(
            model, Y_test_obs, s, Masked(demo.xp.asarray(mask_test)), rng=demo.device_rng(5)
        )

        ppca = baselines.PPCAMissing(d).fit(Y_obs, mask)
        estimates = {
            "ABP": (abp_train, abp_test),
            "PPCA (EM)": (ppca.complete(Y_obs, mask), ppca.complete(Y_test_obs, mask_test)),
            "harmonic": (
                baselines.neighbour_fill(Y_obs, mask),
                baselines.neighbour_fill(Y_test_obs, mask_test),
            ),
            "TV": (baselines.tv_inpaint(Y_obs, mask), baselines.tv_inpaint(Y_test_obs, mask_test)),
        }
        # every estimate is brought into the data range [-1, 1] before it is measured
        estimates = {
            m: tuple(np.clip(C.to_numpy(a), -1.0, 1.0) for a in pair)
            for m, pair in estimates.items()
        }
        row = [kind, float(hidden.mean())]
        row += [C.mae(Y, tr, hidden) for tr, _ in estimates.values()]
        row += [C.mae(Y_test, te, hidden_test) for _, te in estimates.values()]
        rows.append(row)
        demo.log(f"{kind}: " + ", ".join(C.fmt(v) for v in row[1:]))
        n = 10
        demo.save_grid(
            f"inpainting_paper_cpu_{kind.replace('.', '')}.png",
            np.concatenate(
                [Y_test[:n], np.where(mask_test, Y_test, -1.0)[:n]]
                + [np.where(mask_test, Y_test, te)[:n] for _, te in estimates.values()]
            ),
            nrow=n,
        )
    methods = ["ABP", "PPCA (EM)", "harmonic", "TV"]
    columns = ["occlusion", "occluded fraction"]
    columns += [f"{m} train" for m in methods] + [f"{m} held-out" for m in methods]
    best_train = sum(r[2] < min(r[3:6]) for r in rows)
    best_test = sum(r[6] < min(r[7:10]) for r in rows)
    demo.results = {
        "rows": [dict(zip(columns, r, strict=True)) for r in rows],
        "abp_best_train": best_train,
        "abp_best_test": best_test,
        "kinds": len(rows),
    }
    demo.table(
        f"Recovery error on the occluded pixels (mean abs, [0, 1] scale), d = {d}, "
        f"{len(Y)} occluded training images, {len(Y_test)} occluded held-out images",
        columns,
        rows,
        note=f"ABP has the lowest error on {best_train} of {len(rows)} occlusions for training "
        f"images and {best_test} of {len(rows)} for held-out images. Pictures "
        "inpainting_paper_cpu_<kind>.png, rows: held-out images, occluded (hidden pixels "
        "black), then ABP, PPCA, harmonic and TV (observed pixels kept).",
    )
    return demo.finish()


def _describe(spec: dict) -> str:
    if spec["kind"] == "pepper":
        return f"{spec['fraction']:.0%} hidden in {spec['block']} x {spec['block']} blocks"
    return f"one {spec['side']} x {spec['side']} square"


if __name__ == "__main__":
    main(sys.argv[1:])
