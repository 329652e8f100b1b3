"""The Langevin step size delta of the ``--paper-cpu`` runs, chosen from measurements.

With sigma = 0.3 and delta = 0.3 (the paper's values for its small data sets) one Langevin step
moves Z by (delta^2 / 2) / sigma^2 = 0.5 times the data term's gradient of ||r||^2 / 2: a gradient
step of 0.5 on a quadratic whose curvature is the squared singular values of the generator's
Jacobian. Learning pushes the largest of those up, to where such a step stops contracting, so
the chains rattle around instead of settling, the inferred Z drift far outside the prior
N(0, I) and the samples blur. The paper's authors used delta = 0.05 for larger data sets.

This script learns the same model with several delta and measures, on the training images and
on 300 VALIDATION digits (never on the held-out images that the other demos report):

* the reconstruction error of training images (from their chains, noise-free) and of
  validation images (Langevin from N(0, I) with W fixed, then noise-free steps);
* the mean norm of the inferred training Z (about sqrt(d) = 4.5 under the prior for d = 20);
* the energy U(Z) = ||Y - f(Z)||^2 / (2 sigma^2) + ||Z||^2 / 2 along a chain of the validation
  images from N(0, I), step by step, drawn in step_size_energy.png: a stable step brings it down
  and keeps it there.

The step size with the lowest validation error is the one ``demos/_protocol.py`` uses (DELTA).

    python demos/step_size.py --paper-cpu            # about 8 minutes on 2 cores
"""

from __future__ import annotations

import sys

import _common as C
import _protocol as P
import numpy as np

from abp_np.tools.plot import line_chart


def energy_along_chain(model, Y, steps: int, rng) -> list[float]:
    """Mean energy U(Z) of the images Y at each of ``steps`` Langevin steps from N(0, I)."""
    xp = model.xp
    y = xp.asarray(Y, dtype=model.dtype)
    z = rng.standard_normal((len(Y), *model.latent_shape), dtype=model.dtype)
    energies = []
    with model.generator.frozen_statistics():
        for _ in range(steps):
            z = model.langevin(z, y, steps=1, rng=rng)
            energies.append(float(-C.to_numpy(model.log_likelihood(z, y)).mean()))
    return energies


def main(argv: list[str] | None = None) -> dict:
    p = C.parser("step_size", __doc__)
    P.add_options(p)
    p.add_argument(
        "--deltas",
        type=float,
        nargs="+",
        default=[0.3, 0.1, 0.05],
        help="step sizes to compare (default 0.3 0.1 0.05)",
    )
    p.add_argument(
        "--epochs", type=int, default=None, help="epochs of each run (default 15; smoke 2)"
    )
    args = p.parse_args(argv)
    if not args.paper_cpu:
        raise SystemExit("step_size.py measures the --paper-cpu protocol: add --paper-cpu")
    demo = C.Demo("step_size", "The Langevin step size, chosen on validation images", args)
    s = P.settings_of(args)
    epochs = args.epochs or (2 if args.smoke else 15)
    P.note_settings(demo, s)
    demo.settings["epochs of each run"] = epochs
    demo.settings["deltas"] = args.deltas
    split = P.load(args, demo, s)
    chain_steps = 4 if args.smoke else 100
    rows, energies = [], {}
    for delta in args.deltas:
        g = P.network(s["d"], split.train.shape[1:], s["network channels"], demo.rng(1))
        model = P.train(
            demo, g, split.train, s, delta=delta, epochs=epochs, label=f"delta={delta}: "
        )
        run = {**s, "delta": delta}
        model.step_size = delta
        train_rec = P.recover(model, split.train, run, Z=model.Z)
        val_rec = P.recover(model, split.validation, run, rng=demo.device_rng(5))
        energy = energy_along_chain(model, split.validation[:100], chain_steps, demo.device_rng(6))
        energies[f"delta = {delta}"] = (list(range(1, chain_steps + 1)), energy)
        tail = np.asarray(energy[-10:])
        rows.append(
            [
                delta,
                C.mae(split.train, train_rec),
                C.mae(split.validation, val_rec),
                P.z_norm(model),
                float(tail.mean()),
                float(tail.std()),
            ]
        )
        demo.log(f"delta={delta}: " + ", ".join(C.fmt(v) for v in rows[-1][1:]))
    best = min(rows, key=lambda r: r[2])
    columns = [
        "delta",
        "train error",
        "validation error",
        "mean |Z| (train)",
        "energy, last 10 steps",
        "its std",
    ]
    demo.results = {"rows": [dict(zip(columns, r, strict=True)) for r in rows], "best": best[0]}
    demo.table(
        f"Step size delta: errors (mean abs, [0, 1] scale) after {epochs} epochs, and the "
        "chains' state",
        columns,
        rows,
        note=f"Lowest validation error at delta = {best[0]}: the --paper-cpu runs use it. "
        "Energy: U(Z) = ||Y - f(Z)||^2 / (2 sigma^2) + ||Z||^2 / 2, mean over 100 validation "
        f"images, along {chain_steps} Langevin steps from N(0, I) (step_size_energy.png).",
    )
    demo.save_png(
        "step_size_energy.png",
        line_chart(
            energies,
            title="Energy along a Langevin chain of validation images, W fixed",
            xlabel="Langevin step",
            ylabel="mean U(Z)",
        ),
    )
    return demo.finish()


if __name__ == "__main__":
    main(sys.argv[1:])
