"""Experiment 1 of the paper: texture synthesis.

One model per texture image. The generator is fully convolutional: Z is a small image of latent
factors (7 x 7 x 1 for a 224 x 224 texture), each up-sampled by 2 five times. After learning on the
one image, a bigger Z (14 x 14) drawn from N(0, I) gives a bigger texture (448 x 448) that was
never seen: the network has learnt local statistics, not the picture.

Data: --data IMAGE (or a folder: its first image), else the paper's Image/<--texture> (default
bark), else a generated texture (abp_np.io.datasets.texture: waves, cells or noise).

    python demos/texture.py --quick                  # 112 -> 224, small network, CPU minutes
    python demos/texture.py --device gpu             # the paper's: 224 -> 448, 600 iterations
    python demos/texture.py --quick --texture water5
"""

from __future__ import annotations

import sys

import _common as C
import numpy as np

import abp_np
from abp_np.io import datasets

RELEASE_TEXTURES = (
    "bark",
    "beehive",
    "brick1",
    "coffee",
    "grass1",
    "ivy",
    "pave2",
    "pave5",
    "rose",
    "water5",
)


def load_texture(args, demo: C.Demo, size: int) -> np.ndarray:
    """One texture image, (1, 3, size, size) in [-1, 1]."""
    name = args.texture
    if args.data is not None:
        Y = C.load_image_set(args.data, size, limit=1)
        demo.use_data("user", f"texture {args.data}, {size} x {size}", args.data)
        return Y
    if name in RELEASE_TEXTURES:
        path = C.release("Image", name, args=args)
        if path is not None:
            Y = C.load_image_set(path, size, limit=1)
            demo.use_data("release", f"texture Image/{name} (first image), {size} x {size}", path)
            return Y
    builtin = name if name in datasets.TEXTURES else datasets.TEXTURES[0]
    demo.use_data("built-in", f"generated texture '{builtin}', {size} x {size}")
    return datasets.texture(builtin, size=size, seed=args.seed)


def main(argv: list[str] | None = None) -> dict:
    p = C.parser("texture", __doc__)
    C.add_learning_options(p)
    p.add_argument(
        "--texture",
        default="bark",
        help=f"release texture ({', '.join(RELEASE_TEXTURES)}) or generated one "
        f"({', '.join(datasets.TEXTURES)})",
    )
    args = p.parse_args(argv)
    demo = C.Demo("texture", "Texture synthesis: learn on one image, synthesise a bigger one", args)

    # network: len(channels) + 1 doubling deconvolutions, so the image is 2^(layers) times Z
    channels = C.pick(args, (16, 8), (64, 32, 16), (512, 256, 128, 64))
    layers = len(channels) + 1
    size = C.pick(args, 32, 112, 224)
    latent = size // 2**layers  # 4, 7, 7
    big = 2 * latent  # the synthesis Z: twice the side, four times the area
    iterations = args.iterations or C.pick(args, 2, 100, 600)
    steps = C.pick(args, 2, 10, 10)
    optimizer, opt = C.make_optimizer(args, quick_lr=2e-3)
    demo.settings = {
        "image size": size,
        "network channels": list(channels) + [3],
        "Z": f"{latent} x {latent}",
        "synthesis Z": f"{big} x {big}",
        "iterations": iterations,
        "Langevin steps": steps,
        "delta": 0.3,
        "sigma": 0.3,
        "initial Z": "N(0, I)",
        **opt,
    }

    Y = load_texture(args, demo, size)
    g = abp_np.texture_generator(channels=channels, latent_size=latent, rng=demo.rng(1))
    g.to(args.device)
    model = C.fit_abp(
        demo,
        g,
        C.to_device(Y, demo),
        iterations=iterations,
        steps=steps,
        delta=0.3,
        init_z="normal",
        optimizer=optimizer,
    )
    recon = g.forward(model.Z)
    synth = model.sample(1, latent_shape=(1, big, big), rng=demo.device_rng(2))
    small = model.sample(3, rng=demo.device_rng(3))

    demo.save_image("texture_original.png", Y[0])
    demo.save_image("texture_reconstruction.png", recon[0])
    demo.save_image("texture_synthesis.png", synth[0])
    demo.save_grid("texture_samples.png", small, nrow=3)

    err = C.mae(Y, recon)
    y01, s01 = C.to_unit(Y), C.to_unit(synth)
    rows = [
        ["training image", f"{size} x {size}", float(y01.mean()), float(y01.std())],
        [
            "synthesis",
            f"{synth.shape[-2]} x {synth.shape[-1]}",
            float(s01.mean()),
            float(s01.std()),
        ],
    ]
    demo.results = {
        "train_reconstruction_error": err,
        "synthesis_size": list(synth.shape[-2:]),
        "training_mean_std": rows[0][2:],
        "synthesis_mean_std": rows[1][2:],
        "final_recon_error_logged": model.history[-1]["recon_error"],
    }
    demo.table(
        "Texture: reconstruction of the training image",
        ["iterations", "mean abs error [0, 1]"],
        [[iterations, err]],
    )
    demo.table(
        "Texture: pixel statistics of the synthesis (on the [0, 1] scale)",
        ["image", "size", "mean", "std"],
        rows,
        note="A synthesis should match the texture's statistics without copying it.",
    )
    return demo.finish()


if __name__ == "__main__":
    main(sys.argv[1:])
