"""Dynamic textures (experiment 4 of the paper): ABP on the frames, an auto-regression on Z.

The frames ``Y_1 ... Y_T`` of a video are learned as independent images: ABP gives the
generator ``f`` and one inferred ``Z_t`` per frame. A first-order vector auto-regression is
fitted to the inferred factors by least squares (:func:`abp_np.tools.evaluation.fit_var`)::

    Z_t - mu = A (Z_{t-1} - mu) + e_t,      e_t ~ N(0, Q)

and a new clip of any length is made by running it from the ``Z`` of a training frame,
discarding a burn-in, and decoding each ``Z_t`` with ``f``. The spectral radius of ``A`` is
capped (0.99 by default) so that a long synthesis cannot explode.

``abp train VIDEO`` and ``abp synthesize RUN --frames N`` use this module, and so does
``demos/dynamic_texture.py``::

    dyn = fit_dynamics(abp.Z)                       # after abp.fit(frames, ...)
    Z_new = dyn.run(120, rng, start=0)              # 120 new factors
    clip = decode(abp.generator, Z_new)             # (120, C, H, W) in [-1, 1]
    save_clip("synthesis", clip, fps=10)            # synthesis.gif (+ .mp4 with PyAV)
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..backend import to_numpy

__all__ = ["BURN_IN", "MAX_RADIUS", "Dynamics", "fit_dynamics", "decode", "save_clip"]

#: Steps of the auto-regression run and discarded before the first synthesised frame. The chain
#: starts from the Z of a training frame: started from N(0, Q) instead, a nearly noiseless fit
#: would need hundreds of steps to reach the scale of the data.
BURN_IN = 20

#: The spectral radius of A is scaled down to this when the least-squares fit exceeds it.
MAX_RADIUS = 0.99


@dataclass
class Dynamics:
    """A fitted auto-regression of the latent factors of consecutive frames.

    Attributes
    ----------
    A : ndarray (d, d)
    noise_cov : ndarray (d, d)
        Covariance ``Q`` of the innovations.
    mean : ndarray (d,)
        ``mu``, the mean of the training factors.
    Z : ndarray (T, d)
        The training factors (float64), from which a synthesis starts.
    """

    A: np.ndarray
    noise_cov: np.ndarray
    mean: np.ndarray
    Z: np.ndarray

    @property
    def spectral_radius(self) -> float:
        """Largest absolute eigenvalue of ``A`` (below 1: the process is stable)."""
        return float(np.max(np.abs(np.linalg.eigvals(self.A))))

    def predict(self, Z: Any) -> np.ndarray:
        """One-step predictions ``mu + A (Z_{t-1} - mu)`` of ``Z_1 ... Z_{T-1}``, (T - 1, d)."""
        Z = np.asarray(to_numpy(Z), dtype=np.float64)
        return self.mean + (Z[:-1] - self.mean) @ self.A.T

    def run(
        self,
        frames: int,
        rng: np.random.Generator,
        start: int | None = None,
        burn_in: int = BURN_IN,
    ) -> np.ndarray:
        """New factors ``(frames, d)``: the auto-regression from ``Z[start]``, burn-in discarded.

        ``start`` is the index of the training frame whose ``Z`` starts the chain; None draws
        it from ``rng`` (one integer, before the innovations).
        """
        from .evaluation import run_var

        T = len(self.Z)
        if start is None:
            start = int(rng.integers(T))
        if not 0 <= int(start) < T:
            raise ValueError(f"Dynamics.run: start must be a frame index in [0, {T}), got {start}")
        return run_var(
            self.A, self.noise_cov, self.mean, frames, rng, z0=self.Z[int(start)], burn_in=burn_in
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write the four arrays to an ``.npz`` file, atomically."""
        from ..io.atomic import atomic_write

        arrays = {"A": self.A, "noise_cov": self.noise_cov, "mean": self.mean, "Z": self.Z}
        return atomic_write(path, lambda f: np.savez(f, **arrays))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Dynamics:
        """Read what :meth:`save` wrote."""
        with np.load(path) as f:
            return cls(f["A"], f["noise_cov"], f["mean"], f["Z"])


def fit_dynamics(Z: Any, max_radius: float | None = MAX_RADIUS, ridge: float = 0.0) -> Dynamics:
    """Fit the auto-regression to the factors ``Z`` (T, d) of T consecutive frames (T >= 2)."""
    from .evaluation import fit_var

    Z = np.asarray(to_numpy(Z), dtype=np.float64)
    A, Q, mu = fit_var(Z, ridge=ridge, max_radius=max_radius)
    return Dynamics(A, Q, mu, Z)


def decode(generator: Any, Z: Any, batch_size: int = 64) -> np.ndarray:
    """Frames ``f(Z_t)`` on the host, ``(T, C, H, W)``, decoded in batches with W fixed."""
    xp = np
    try:
        from ..backend import get_array_module

        xp = get_array_module(generator.parameters()[0])
    except (AttributeError, IndexError):
        pass
    dtype = generator.parameters()[0].dtype if generator.parameters() else np.float32
    Z = np.asarray(to_numpy(Z))
    out = []
    with generator.frozen_statistics():
        for i in range(0, len(Z), batch_size):
            z = xp.asarray(Z[i : i + batch_size], dtype=dtype)
            out.append(to_numpy(generator.forward(z)))
    return np.concatenate(out)


def _mp4_bytes(frames: np.ndarray, fps: float) -> bytes | None:
    """The clip as H.264 (or MPEG-4) in an MP4 container, or None without imageio and PyAV."""
    import importlib.util

    if importlib.util.find_spec("imageio") is None or importlib.util.find_spec("av") is None:
        return None
    import imageio.v3 as iio

    from ..io.data import to_unit

    u8 = np.round(to_unit(frames) * 255).astype(np.uint8).transpose(0, 2, 3, 1)  # (T, H, W, C)
    if u8.shape[-1] == 1:
        u8 = np.repeat(u8, 3, axis=-1)
    H, W = u8.shape[1:3]
    if H % 2 or W % 2:  # the encoders' 4:2:0 colour needs even sides
        u8 = np.pad(u8, ((0, 0), (0, H % 2), (0, W % 2), (0, 0)), mode="edge")
    last: Exception | None = None
    for codec in ("libx264", "mpeg4"):
        buf = io.BytesIO()
        try:
            iio.imwrite(buf, u8, plugin="pyav", extension=".mp4", codec=codec, fps=fps)
        except Exception as e:  # an encoder missing from this build of PyAV: try the next
            last = e
            continue
        return buf.getvalue()
    raise RuntimeError(f"cannot encode MP4 with PyAV: {last}")


def save_clip(
    stem: str | os.PathLike, frames: Any, fps: float = 10, mp4: bool = True
) -> list[Path]:
    """Write frames ``(T, C, H, W)`` in [-1, 1] as ``stem.gif``, and ``stem.mp4`` where possible.

    The MP4 is written when ``mp4`` and the video extra (imageio and PyAV,
    ``pip install 'abp_np[video]'``) are installed. Returns the paths written.
    """
    from ..io.atomic import atomic_write
    from ..io.data import save_gif

    stem = Path(stem)
    frames = to_numpy(frames)
    written = [save_gif(stem.with_name(stem.name + ".gif"), frames, fps=fps)]
    if mp4:
        data = _mp4_bytes(frames, fps)
        if data is not None:
            path = stem.with_name(stem.name + ".mp4")
            written.append(atomic_write(path, lambda f: f.write(data)))
    return written
