"""Experiment 4 of the paper: dynamic textures.

The frames Y_1 ... Y_T of a video are treated as independent images: ABP learns W and infers one
Z_t per frame. A first-order vector auto-regression is then fitted to the inferred factors by least
squares,

    Z_t - mu = A (Z_{t-1} - mu) + e_t,    e_t ~ N(0, Q),

and a new sequence is synthesised by running it from a random start (here the Z of a randomly
chosen training frame; the first 20 steps are discarded) and decoding each Z_t with the
generator. With a linear generator (PCA of the frames)
this is Doretto et al.'s linear dynamic texture, the baseline shown alongside.

Data, the first of:
  --data VIDEO    a GIF, a folder of frames, or a video file imageio can read (frames that
                  repeat the one before are dropped);
  real footage    a tree's leaves in the wind (OpenCV's sample tree.avi, 53 distinct frames), when
                  the Debian/Ubuntu package opencv-doc and a video decoder are installed:
                      sudo apt-get install opencv-doc && pip install av
                  (abp_np.io.datasets.footage; --builtin skips it);
  generated       a moving texture (abp_np.io.datasets.moving_texture: plane waves travelling in
                  several directions).
The report says which was used, and why the footage was not.

    python demos/dynamic_texture.py --quick          # 60 frames (53 of footage) of 32 x 32
    python demos/dynamic_texture.py --device gpu     # 150 frames (53 of footage) of 64 x 64
"""

from __future__ import annotations

import sys

import _common as C
import numpy as np

import abp_np
from abp_np.io import data as D
from abp_np.io import datasets
from abp_np.tools import dynamic, evaluation

# Steps of the auto-regression run and discarded before the first synthesised frame. The chain
# starts from the Z of a random training frame: started from N(0, Q) instead, a nearly noiseless
# fit (small Q, as the linear model gets on smooth videos) would need hundreds of steps to reach
# the scale of the data and the synthesis would show a faint, almost still mean frame.
BURN_IN = dynamic.BURN_IN

# The real footage tried when no --data is given (a key of abp_np.io.datasets.FOOTAGE).
FOOTAGE = "tree"


def load_frames(args, demo: C.Demo, frames: int, size: int) -> tuple[np.ndarray, float]:
    """The video, (T, 3, size, size) in [-1, 1], and the frame rate to show it at."""
    if args.data is not None:
        # a frame identical to the one before it is a repeat the file stores, not motion
        Y = D.load_video(args.data, size=size, channels=3, max_frames=frames, skip_repeats=True)
        demo.use_data(
            "user", f"{len(Y)} distinct frames of {args.data}, {size} x {size}", args.data
        )
        return Y, 10.0
    why = "--builtin was given"
    if not args.builtin:
        clip = datasets.FOOTAGE[FOOTAGE]
        try:
            Y = datasets.footage(FOOTAGE, frames=min(frames, clip.frames), size=size)
        except (FileNotFoundError, ImportError) as e:
            why = str(e)
            demo.log(f"real footage not used: {why}")
        else:
            demo.use_data(
                "package",
                f"real footage, {clip.description}: {clip.file} of the Debian package "
                f"{clip.package} ({clip.licence}), {len(Y)} distinct frames, "
                f"a {clip.box[2] - clip.box[0]} x {clip.box[3] - clip.box[1]} region resized "
                f"to {size} x {size}",
                datasets.footage_path(FOOTAGE),
            )
            return Y, 5.0  # the camera delivered about 2.5 distinct frames a second
    demo.use_data(
        "built-in",
        f"generated moving texture (travelling plane waves), {frames} frames of {size} x {size} "
        "(the paper's release holds no video)",
    )
    demo.note(f"Real footage ({FOOTAGE}) was not used: {why}")
    return datasets.moving_texture(frames=frames, size=size, seed=args.seed), 10.0


def motion(frames: np.ndarray) -> float:
    """Mean absolute change between consecutive frames, on the [0, 1] scale."""
    return float(np.abs(np.diff(C.to_unit(frames), axis=0)).mean())


def main(argv: list[str] | None = None) -> dict:
    p = C.parser("dynamic_texture", __doc__)
    C.add_learning_options(p)
    p.add_argument("--d", type=int, default=None, help="dimension of Z_t (and of the PCA)")
    args = p.parse_args(argv)
    demo = C.Demo("dynamic_texture", "Dynamic textures: ABP + vector auto-regression", args)

    T = C.pick(args, 8, 60, 150)
    size = C.pick(args, 16, 32, 64)
    d = args.d or C.pick(args, 4, 20, 50)
    channels = C.pick(args, (32, 16), (64, 32, 16), (512, 256, 128, 64))
    iterations = args.iterations or C.pick(args, 2, 100, 600)
    steps = C.pick(args, 2, 10, 30)
    optimizer, opt = C.make_optimizer(args, quick_lr=2e-3)
    demo.settings = {
        "frames": T,
        "frame size": size,
        "d": d,
        "iterations": iterations,
        "Langevin steps": steps,
        "delta": 0.3,
        "sigma": 0.3,
        "VAR": f"order 1, least squares, spectral radius capped at 0.99, started from the Z of "
        f"a random training frame, burn-in {BURN_IN}",
        **opt,
    }

    Y, fps = load_frames(args, demo, T, size)
    T = len(Y)
    demo.settings["frames"] = T
    g = abp_np.object_generator(latent_dim=d, channels=channels, rng=demo.rng(1))
    g.to(args.device)
    model = C.fit_abp(
        demo, g, C.to_device(Y, demo), iterations=iterations, steps=steps, optimizer=optimizer
    )
    Z = C.to_numpy(model.Z).astype(np.float64)  # (T, d)
    recon = C.to_numpy(g.forward(model.Z))

    # the auto-regression on the inferred factors, and a new sequence from it (the library's
    # abp_np.tools.dynamic, as `abp train VIDEO` and `abp synthesize` use it)
    dyn = dynamic.fit_dynamics(Z, max_radius=0.99)
    start = int(demo.rng(4).integers(T))  # the VAR starts from the Z of a random training frame
    Z_new = dyn.run(T, demo.rng(2), start=start, burn_in=BURN_IN)
    synth = C.to_numpy(g.forward(C.to_device(Z_new.astype(np.float32), demo)))
    # one-step prediction of each frame from the previous frame's factors
    Z_pred = dyn.predict(Z)  # (T - 1, d)
    pred = C.to_numpy(g.forward(C.to_device(Z_pred.astype(np.float32), demo)))

    # Doretto et al.'s linear dynamic texture at the same d
    ldt = evaluation.linear_dynamic_texture(Y, d, max_radius=0.99)
    lin_recon = C.to_numpy(ldt.pca.reconstruct(Y))
    X = np.asarray(C.to_numpy(ldt.coefficients), dtype=np.float64)
    lin_synth = C.to_numpy(ldt.synthesise(T, demo.rng(3), burn_in=BURN_IN, z0=X[start]))
    X_pred = ldt.mean + (X[:-1] - ldt.mean) @ ldt.A.T
    lin_pred = C.to_numpy(ldt.pca.inverse_transform(X_pred.astype(np.float32)))

    demo.save_gif("dynamic_original.gif", Y, fps=fps)
    demo.save_gif("dynamic_abp_synthesis.gif", synth, fps=fps)
    demo.save_gif("dynamic_linear_synthesis.gif", lin_synth, fps=fps)
    show = slice(0, min(T, 8))
    demo.save_grid(
        "dynamic_frames.png",
        np.concatenate([Y[show], synth[show], lin_synth[show]]),
        nrow=min(T, 8),
    )
    demo.note(
        "dynamic_frames.png: first 8 frames of the original (top row), of the ABP synthesis "
        "(middle) and of the linear dynamic texture's synthesis (bottom). The GIFs play the "
        "original, the ABP synthesis and the linear synthesis (dynamic_original.gif, "
        f"dynamic_abp_synthesis.gif, dynamic_linear_synthesis.gif) at {fps:g} frames a second."
    )

    rows = [
        ["ABP + VAR", C.mae(Y, recon), C.mae(Y[1:], pred), motion(synth)],
        [
            "linear dynamic texture (PCA + VAR)",
            C.mae(Y, lin_recon),
            C.mae(Y[1:], lin_pred),
            motion(lin_synth),
        ],
        ["(original video)", float("nan"), float("nan"), motion(Y)],
    ]
    demo.results = {
        "abp": {"recon_error": rows[0][1], "one_step_error": rows[0][2], "motion": rows[0][3]},
        "linear": {"recon_error": rows[1][1], "one_step_error": rows[1][2], "motion": rows[1][3]},
        "original_motion": rows[2][3],
        "var_spectral_radius": dyn.spectral_radius,
    }
    demo.table(
        f"Dynamic texture, d = {d}: errors on the training video (mean abs, [0, 1] scale)",
        ["model", "reconstruction error", "one-step prediction error", "motion of synthesis"],
        rows,
        note="One-step prediction: frame t decoded from mu + A (Z_{t-1} - mu). Motion: mean "
        "absolute change between consecutive frames; a good synthesis moves about as much as "
        "the original.",
    )
    return demo.finish()


if __name__ == "__main__":
    main(sys.argv[1:])
