"""Experiment 2 of the paper: sound synthesis.

One model per clip. The generator is a 1-d fully convolutional network: Z is a short sequence of
latent factors (60 for a 60,000-sample clip), each layer up-sampling by 10. After learning on the
one clip, a longer Z drawn from N(0, I) gives a longer sound (Z of 120: 120,000 samples).

Data: --data SOUNDFILE, else the paper's Sound/training<--clip>/training.wav (resampled to
11,025 Hz), else a generated sound texture (abp_np.io.datasets.sound: rain, bells or chirps).

    python demos/sound.py --quick            # 60,000 samples, small network, CPU minutes
    python demos/sound.py --device gpu       # the paper's: 60,000 samples, 600 iterations
"""

from __future__ import annotations

import sys

import _common as C
import numpy as np

import abp_np
from abp_np.io import data as D
from abp_np.io import datasets
from abp_np.tools.plot import waveform

RATE = 11025


def load_clip(args, demo: C.Demo, length: int) -> np.ndarray:
    """One mono clip, (1, 1, length) in [-1, 1], at 11,025 Hz."""
    if args.data is not None:
        y = D.load_audio(args.data, rate=RATE, length=length)
        demo.use_data("user", f"{args.data}, first {length} samples at {RATE} Hz", args.data)
        return y
    path = C.release("Sound", f"training{args.clip}", args=args)
    if path is not None:
        y = D.load_audio(path, rate=RATE, length=length)
        demo.use_data(
            "release", f"Sound/training{args.clip}, first {length} samples at {RATE} Hz", path
        )
        return y
    name = args.clip if args.clip in datasets.SOUNDS else datasets.SOUNDS[0]
    demo.use_data("built-in", f"generated sound '{name}', {length} samples at {RATE} Hz")
    return datasets.sound(name, length=length, rate=RATE, seed=args.seed)


def spectral_centroid(x: np.ndarray, rate: int) -> float:
    """Centre of mass of the magnitude spectrum, in Hz: sum_k f_k |X_k| / sum_k |X_k|."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    mag = np.abs(np.fft.rfft(x))
    freq = np.fft.rfftfreq(x.size, 1.0 / rate)
    return float((freq * mag).sum() / max(mag.sum(), 1e-12))


def main(argv: list[str] | None = None) -> dict:
    p = C.parser("sound", __doc__)
    C.add_learning_options(p)
    p.add_argument(
        "--clip",
        default="1",
        help=f"release clip number 1-10, or a generated sound ({', '.join(datasets.SOUNDS)})",
    )
    args = p.parse_args(argv)
    demo = C.Demo("sound", "Sound synthesis: learn on one clip, synthesise a longer one", args)

    channels = C.pick(args, (8, 4), (64, 32), (256, 128))
    length = C.pick(args, 2000, 60000, 60000)
    latent = length // 1000  # three layers, each up-sampling by 10
    iterations = args.iterations or C.pick(args, 2, 150, 600)
    steps = C.pick(args, 2, 10, 10)
    delta = 0.1
    optimizer, opt = C.make_optimizer(args, quick_lr=2e-3)
    demo.settings = {
        "samples": length,
        "rate": RATE,
        "network channels": list(channels) + [1],
        "Z length": latent,
        "synthesis Z length": 2 * latent,
        "iterations": iterations,
        "Langevin steps": steps,
        "delta": delta,
        "sigma": 0.3,
        "initial Z": "zeros",
        **opt,
    }

    y = load_clip(args, demo, length)
    g = abp_np.sound_generator(channels=channels, latent_length=latent, rng=demo.rng(1))
    g.to(args.device)
    model = C.fit_abp(
        demo,
        g,
        C.to_device(y, demo),
        iterations=iterations,
        steps=steps,
        delta=delta,
        init_z="zeros",
        optimizer=optimizer,
    )
    recon = C.to_numpy(g.forward(model.Z))
    synth = C.to_numpy(model.sample(1, latent_shape=(1, 2 * latent), rng=demo.device_rng(2)))

    demo.save_wav("sound_original.wav", y, RATE)
    demo.save_wav("sound_reconstruction.wav", recon, RATE)
    demo.save_wav("sound_synthesis.wav", synth, RATE)
    demo.save_png(
        "sound_waveforms.png",
        waveform(
            {
                f"original ({length} samples)": y,
                "reconstruction": recon,
                f"synthesis from a Z twice as long ({synth.shape[-1]} samples)": synth,
            }
        ),
    )

    err = C.mae(y, recon)
    rows = [
        [
            name,
            x.shape[-1],
            x.shape[-1] / RATE,
            float(np.sqrt(np.mean(x**2))),
            spectral_centroid(x, RATE),
        ]
        for name, x in (("original", y), ("reconstruction", recon), ("synthesis", synth))
    ]
    demo.results = {
        "train_reconstruction_error": err,
        "signals": {
            r[0]: {"samples": r[1], "seconds": r[2], "rms": r[3], "centroid_hz": r[4]} for r in rows
        },
    }
    demo.table(
        "Sound: reconstruction of the training clip",
        ["iterations", "mean abs error ([-1, 1] signal, halved to the [0, 1] scale)"],
        [[iterations, err]],
    )
    demo.table(
        "Sound: the three signals",
        ["signal", "samples", "seconds", "RMS", "spectral centroid (Hz)"],
        rows,
        note="A synthesis should match the clip's loudness and spectrum without copying it.",
    )
    return demo.finish()


if __name__ == "__main__":
    main(sys.argv[1:])
