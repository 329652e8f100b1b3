"""Observation models: how the data Y we are given relate to the generated image f(Z; W).

The paper learns from complete images (Y = f(Z) + eps), from occluded images (only the
observed pixels enter both steps, experiment 5) and from random projections
(X = S f(Z) + eps, experiment 6). All three are *linear* observation operators ``A``::

    y_obs = A f(Z; W) + eps,      eps ~ N(0, sigma^2 I)

so the log-likelihood term and its gradient with respect to the image f are::

    L   = - ||y_obs - A f||^2 / (2 sigma^2)
    dL/df = A^T (y_obs - A f) / sigma^2 = adjoint(residual(y_obs, f)) / sigma^2

Every model below offers the same small interface:

* ``observe(images) -> y_obs``   applies A (for simulation and tests);
* ``residual(y_obs, f) -> r``    r = y_obs - A f, in observation space;
* ``adjoint(r) -> dY``           A^T r, in image space (flattened per example for
  :class:`Projection` unless it knows the image shape);
* ``squared_error(y_obs, f)``    ||y_obs - A f||^2 per example, shape (N,);
* ``abs_error(y_obs, f)``        (sum |y_obs - A f| over observed entries, their count);
* ``take(indices)``              the model restricted to a mini-batch of examples
  (a mask is per example; a :class:`Projection` matrix is shared; a
  :class:`RandomProjections` batch draws its examples' matrices once);
* ``check(y_obs, image_shape)``  raises ValueError when ``y_obs`` does not fit;
* ``like(x)``                    a copy whose arrays live on ``x``'s device with ``x``'s dtype.

The adjoint identity <A y, r> = <y, A^T r> holds for each of them (tested). Arrays may be
NumPy or CuPy, float32 or float64.

Random projections (experiment 6) come in two forms: :class:`Projection`, one matrix ``S``
shared by every example, and :class:`RandomProjections`, one matrix ``S_i`` per example,
drawn from a seed per example. With ONE shared ``S`` the ``D - m`` dimensions of its null
space are observed in no image, so only the generator's structure can fill them in; with
one ``S_i`` per image, the whole image space is observed across the training set.

**Scale of S and sigma.** The data term is ``||x - S f||^2 / (2 sigma^2)`` with ``sigma``
the noise of one measurement. With entries N(0, 1/D) (``D`` pixels), ``E ||S v||^2 = (m/D)
||v||^2``: a measurement carries the noise level of one pixel when ``sigma`` is the
per-pixel sigma of complete data. The Langevin step on the data term scales with the
eigenvalues of ``S^T S / sigma^2``: about ``D/m`` times larger with entries N(0, 1/m)
(norm-preserving matrices) than with N(0, 1/D), which needs a smaller step size ``delta``.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import numpy as np

from . import functional as F
from .backend import get_array_module, to_numpy

__all__ = ["Observation", "Complete", "Masked", "Projection", "RandomProjections"]


def _sum_per_example(x: Any) -> Any:
    """Sum over every axis but the first: (N, ...) -> (N,)."""
    return x.reshape(x.shape[0], -1).sum(axis=1)


def _check_array(y: Any, owner: str) -> None:
    if not hasattr(y, "shape") or not hasattr(y, "dtype"):
        raise ValueError(f"{owner}: expected a NumPy or CuPy array, got {type(y).__name__}")
    if y.dtype not in (np.float32, np.float64):
        raise ValueError(
            f"{owner}: data dtype is {y.dtype}; use float32 or float64 (e.g. Y.astype('float32'))"
        )


class Observation:
    """Base class of the linear observation models y_obs = A f + eps."""

    #: Can a Langevin loop with this model be recorded as a CUDA graph
    #: (:mod:`abp_np.fast.cuda_graph`)? Where not, ``ABP(cuda_graph=True)`` runs it eagerly.
    graph_capturable = True

    def observe(self, images: Any) -> Any:  # pragma: no cover - abstract
        """Apply A to a batch of images: (N, *image_shape) -> y_obs."""
        raise NotImplementedError

    def residual(self, y_obs: Any, f: Any) -> Any:
        """r = y_obs - A f, in observation space (same shape as ``y_obs``)."""
        return y_obs - self.observe(f)

    def adjoint(self, r: Any) -> Any:  # pragma: no cover - abstract
        """A^T r: from observation space back to image space."""
        raise NotImplementedError

    def squared_error(self, y_obs: Any, f: Any) -> Any:
        """||y_obs - A f||^2 for each example, shape (N,)."""
        r = self.residual(y_obs, f)
        return _sum_per_example(r * r)

    def abs_error(self, y_obs: Any, f: Any) -> tuple[Any, Any]:
        """(sum of |y_obs - A f| over the observed entries, number of those entries).

        Both are 0-d arrays on the device of ``f`` (nothing is synchronised); their ratio
        is the mean absolute error of the paper's error measure (before the /2 that maps
        [-1, 1] data to the [0, 1] scale).
        """
        r = self.residual(y_obs, f)
        xp = get_array_module(r)
        return xp.abs(r).sum(), xp.asarray(r.size, dtype=xp.float64)

    def take(self, indices: Any) -> Observation:
        """The model restricted to the examples ``indices`` (shared models return self)."""
        return self

    def check(self, y_obs: Any, image_shape: tuple[int, ...], owner: str = "observation") -> None:
        """Raise ValueError unless ``y_obs`` (N, ...) fits this model and ``image_shape``."""
        _check_array(y_obs, owner)

    def like(self, x: Any) -> Observation:
        """A copy whose arrays are on ``x``'s device (and, for float arrays, ``x``'s dtype)."""
        return self

    def finite(self, y_obs: Any) -> Any:
        """0-d boolean array: are all observed entries of ``y_obs`` finite?"""
        xp = get_array_module(y_obs)
        return xp.all(xp.isfinite(y_obs))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Complete(Observation):
    """Every pixel is observed: A = I, y_obs = f + eps (the paper's default setting).

    Shapes: y_obs (N, *image_shape); residual (N, *image_shape); adjoint is the identity.
    """

    def observe(self, images: Any) -> Any:
        return images.copy()

    def residual(self, y_obs: Any, f: Any) -> Any:
        return y_obs - f

    def adjoint(self, r: Any) -> Any:
        return r

    def check(self, y_obs: Any, image_shape: tuple[int, ...], owner: str = "Complete") -> None:
        _check_array(y_obs, owner)
        if tuple(y_obs.shape[1:]) != tuple(image_shape) or y_obs.ndim < 1:
            raise ValueError(
                f"{owner}: data of shape {tuple(y_obs.shape)} do not match the generator's output: "
                f"expected (N, *{tuple(image_shape)})"
            )


class Masked(Observation):
    """Occluded data: only pixels where ``mask`` is 1 are observed (experiment 5).

    A = diag(mask) restricted to the observed pixels; unobserved pixels of ``y_obs``
    are never read (they may hold anything, NaN included), so they change neither Z
    nor W.

    Parameters
    ----------
    mask : bool or 0/1 array, shape (n, *image_shape) or broadcastable to it
        One mask per example (``(n, *image_shape)``; ``take`` selects the rows of a
        mini-batch), or one shared by all examples (leading axis of length 1). The
        leading batch axis is required; other axes may be 1 to broadcast (e.g.
        ``(n, 1, H, W)`` masks every channel of a pixel alike). 1 / True = observed.

    Notes
    -----
    ``residual`` is ``where(mask, y_obs - f, 0)`` (shape (N, *image_shape)); the adjoint
    of a 0/1 diagonal is itself, so ``adjoint(r) = where(mask, r, 0)``.
    """

    def __init__(self, mask: Any) -> None:
        if not hasattr(mask, "shape") or not hasattr(mask, "dtype"):
            mask = np.asarray(mask)
        xp = get_array_module(mask)
        if mask.dtype != np.bool_:
            if mask.dtype.kind not in "biuf":
                raise ValueError(f"Masked: mask must be boolean or 0/1 numbers, got {mask.dtype}")
            if not bool(xp.all((mask == 0) | (mask == 1))):
                raise ValueError("Masked: mask must hold only 0 and 1 (1 = observed)")
            mask = mask != 0
        if mask.ndim < 1:
            raise ValueError("Masked: mask needs a leading batch axis, shape (n, *image_shape)")
        self.mask = mask

    def _mask_for(self, x: Any) -> Any:
        xp = get_array_module(x)
        return self.mask if get_array_module(self.mask) is xp else xp.asarray(self.mask)

    def observe(self, images: Any) -> Any:
        xp = get_array_module(images)
        return xp.where(self._mask_for(images), images, images.dtype.type(0))

    def residual(self, y_obs: Any, f: Any) -> Any:
        xp = get_array_module(f)
        # where, not a product: unobserved pixels of y_obs never enter, even NaN ones
        return xp.where(self._mask_for(f), y_obs - f, f.dtype.type(0))

    def adjoint(self, r: Any) -> Any:
        xp = get_array_module(r)
        return xp.where(self._mask_for(r), r, r.dtype.type(0))

    def abs_error(self, y_obs: Any, f: Any) -> tuple[Any, Any]:
        r = self.residual(y_obs, f)
        xp = get_array_module(r)
        m = xp.broadcast_to(self._mask_for(r), r.shape)
        return xp.abs(r).sum(), m.sum(dtype=xp.float64)

    def finite(self, y_obs: Any) -> Any:
        xp = get_array_module(y_obs)
        return xp.all(xp.isfinite(y_obs) | ~self._mask_for(y_obs))

    def take(self, indices: Any) -> Masked:
        if self.mask.shape[0] == 1:
            return self
        out = Masked.__new__(Masked)
        xp = get_array_module(self.mask)
        out.mask = self.mask[xp.asarray(indices)]
        return out

    def like(self, x: Any) -> Masked:
        xp = get_array_module(x)
        if get_array_module(self.mask) is xp:
            return self
        out = Masked.__new__(Masked)
        out.mask = xp.asarray(self.mask)
        return out

    def check(self, y_obs: Any, image_shape: tuple[int, ...], owner: str = "Masked") -> None:
        Complete().check(y_obs, image_shape, owner)
        m = self.mask
        full = tuple(y_obs.shape)
        ok = m.ndim == len(full) and m.shape[0] in (1, full[0])
        ok = ok and all(a in (1, b) for a, b in zip(m.shape[1:], full[1:], strict=True))
        if not ok:
            raise ValueError(
                f"{owner}: mask of shape {tuple(m.shape)} does not fit data of shape {full}: "
                f"expected ({full[0]} or 1, *{tuple(full[1:])}) with axes of length 1 allowed "
                "(add the batch axis with mask[None] for a shared mask)"
            )
        if not bool(get_array_module(m).any(m)):
            raise ValueError(f"{owner}: the mask observes no pixel at all")

    def __repr__(self) -> str:
        share = float(self.mask.mean())
        return f"Masked(mask shape {tuple(self.mask.shape)}, {share:.0%} observed)"


class Projection(Observation):
    """Indirect data: random projections X = S vec(f(Z)) (experiment 6, compressed sensing).

    Parameters
    ----------
    S : array (m, D)
        Shared by all examples; D = prod(image_shape). The paper used white-noise images.
    image_shape : tuple of int, optional
        When given, :meth:`adjoint` returns (N, *image_shape); otherwise (N, D).

    Shapes: y_obs (N, m); residual (N, m); adjoint (N, D) or (N, *image_shape).
    ``observe(f) = vec(f) S^T``, ``adjoint(r) = r S``.

    **Scale of S and sigma.** The data term is ``||x - S f||^2 / (2 sigma^2)``, ``sigma`` per
    measurement. With entries N(0, 1/D), ``E ||S v||^2 = (m/D) ||v||^2``: a measurement
    carries the noise level of one pixel when ``sigma`` is the per-pixel sigma. The Langevin
    step on the data term scales with the eigenvalues of ``S^T S / sigma^2``, about ``D/m``
    times larger with entries N(0, 1/m), which then needs a smaller step size ``delta``.

    **Shared S.** The ``D - m`` dimensions of the null space of the one ``S`` are observed
    in no image: only the generator's structure fills them in. :class:`RandomProjections`
    draws one matrix per image instead, so that across the training set every direction of
    the image space is observed.
    """

    def __init__(self, S: Any, image_shape: tuple[int, ...] | None = None) -> None:
        if not hasattr(S, "shape") or not hasattr(S, "dtype"):
            S = np.asarray(S)
        if S.ndim != 2 or S.shape[0] < 1 or S.shape[1] < 1:
            raise ValueError(f"Projection: S must be a 2-d (m, D) matrix, got shape {S.shape}")
        if S.dtype not in (np.float32, np.float64):
            raise ValueError(f"Projection: S dtype is {S.dtype}; use float32 or float64")
        self.S = S
        self.image_shape = None if image_shape is None else tuple(int(s) for s in image_shape)
        if self.image_shape is not None and int(np.prod(self.image_shape)) != S.shape[1]:
            raise ValueError(
                f"Projection: S has {S.shape[1]} columns but image_shape {self.image_shape} has "
                f"{int(np.prod(self.image_shape))} pixels"
            )

    def observe(self, images: Any) -> Any:
        # (N, *image_shape) -> (N, D) -> (N, m)
        flat = images.reshape(images.shape[0], -1)
        if flat.shape[1] != self.S.shape[1]:
            raise ValueError(
                f"Projection: images have {flat.shape[1]} pixels each but S has {self.S.shape[1]} "
                "columns"
            )
        return F.matmul(flat, self.S.T)  # on the GPU a GEMM a CUDA graph can record

    def adjoint(self, r: Any) -> Any:
        # (N, m) @ (m, D) -> (N, D)
        dy = F.matmul(r, self.S)
        return dy if self.image_shape is None else dy.reshape(r.shape[0], *self.image_shape)

    def like(self, x: Any) -> Projection:
        xp = get_array_module(x)
        if get_array_module(self.S) is xp and self.S.dtype == x.dtype:
            return self
        return Projection(xp.asarray(self.S, dtype=x.dtype), self.image_shape)

    def check(self, y_obs: Any, image_shape: tuple[int, ...], owner: str = "Projection") -> None:
        _check_array(y_obs, owner)
        D = int(np.prod(image_shape))
        if self.S.shape[1] != D:
            raise ValueError(
                f"{owner}: S has shape {tuple(self.S.shape)} but the generator's output "
                f"{tuple(image_shape)} has D = {D} pixels: S must be (m, {D})"
            )
        if y_obs.ndim != 2 or y_obs.shape[1] != self.S.shape[0]:
            raise ValueError(
                f"{owner}: projected data must have shape (N, {self.S.shape[0]}) "
                f"(one row of S per measurement), got {tuple(y_obs.shape)}"
            )

    def __repr__(self) -> str:
        return f"Projection(S of shape {tuple(self.S.shape)})"


_SCALES = ("1/D", "1/m")


class RandomProjections(Observation):
    """Indirect data, one random projection matrix per example: X_i = S_i vec(f(Z_i)).

    Compressed sensing as in experiment 6, with a fresh white-noise matrix for every
    image: example ``i`` is seen only through its own ``S_i (m, D)``, ``D =
    prod(image_shape)``, with independent entries ::

        scale "1/D":  S_i[k, j] ~ N(0, 1/D)        scale "1/m":  S_i[k, j] ~ N(0, 1/m)

    drawn from ``numpy.random.default_rng(seeds[i])`` (in float64, then cast), so the same
    seed gives the same matrix on every call, on every device and in every dtype. The
    matrices of all examples are never stored at once: :meth:`take` (which
    :meth:`ABP.fit <abp_np.abp.ABP.fit>` calls for every mini-batch) draws those of the
    batch once, ``S (batch, m, D)`` on the device and in the dtype set by :meth:`like`,
    and every Langevin step on the batch reuses them.

    **Why one matrix per image.** With one ``S`` shared by every image (:class:`Projection`)
    the ``D - m`` directions of its null space are observed in no image at all: only the
    structure of the generator can fill them in. With a matrix per image, each image is
    observed in its own ``m`` directions, and across the training set the whole image space
    is observed.

    **Scale of S and sigma.** The data term of ABP is ``||X_i - S_i f||^2 / (2 sigma^2)``
    with ``sigma`` the noise of one *measurement*. With N(0, 1/D) entries ``E ||S v||^2 =
    (m / D) ||v||^2``: a measurement carries about the energy of one pixel, so ``sigma`` can
    stay the per-pixel sigma of complete data (the paper's 0.3). The Langevin step on the
    data term scales with the eigenvalues of ``S^T S / sigma^2``, which are of order
    ``1 / sigma^2`` with N(0, 1/D) entries and about ``D / m`` times larger with N(0, 1/m)
    entries (which preserve norms, ``E ||S v||^2 = ||v||^2``): those need a smaller step
    size ``delta`` (or a larger ``sigma``).

    Parameters
    ----------
    m : int
        Measurements per example.
    image_shape : tuple of int
        Shape of one image, e.g. ``(1, 20, 20)``; ``D = prod(image_shape)``.
    seeds : int array (N,)
        One seed per example (non-negative); :meth:`for_examples` makes them from one seed.
    scale : {"1/D", "1/m"}
        Variance of the entries.
    cache_limit : int
        Used directly on all of its examples (``observe``, ``adjoint``, e.g. in
        :meth:`ABP.infer <abp_np.abp.ABP.infer>` on a held-out set), the model keeps the
        matrices it draws when they hold at most this many numbers (default 2**26, 256 MB
        in float32); above it, each call draws them again, a chunk of examples at a time.

    Shapes: y_obs (N, m); residual (N, m); observe ``(N, *image_shape) -> (N, m)``, ``X_i =
    S_i vec(f_i)``; adjoint ``(N, m) -> (N, *image_shape)``, ``S_i^T r_i``.

    Attributes
    ----------
    seeds : int array (N,)
        On the device of the data (see :meth:`like`).
    S : array (N, m, D) or None
        The matrices, once drawn (always for a model returned by :meth:`take`).
    """

    # Its per-example products are batched CuPy matmuls (cuBLAS, which CuPy refuses inside a
    # stream capture), and beyond ``cache_limit`` the matrices are drawn batch by batch on the
    # host: the Langevin loop runs eagerly with it, also under ABP(cuda_graph=True).
    graph_capturable = False

    def __init__(
        self,
        m: int,
        image_shape: tuple[int, ...],
        seeds: Any,
        scale: str = "1/D",
        cache_limit: int = 2**26,
    ) -> None:
        owner = "RandomProjections"
        if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
            raise ValueError(
                f"{owner}: m (measurements per example) must be an int >= 1, got {m!r}"
            )
        try:
            shape = tuple(int(s) for s in image_shape)
        except TypeError as err:
            raise ValueError(
                f"{owner}: image_shape must be a tuple of ints, got {image_shape!r}"
            ) from err
        if not shape or any(s < 1 for s in shape):
            raise ValueError(f"{owner}: image_shape must hold positive sizes, got {image_shape!r}")
        if scale not in _SCALES:
            raise ValueError(f"{owner}: scale must be '1/D' or '1/m', got {scale!r}")
        if not hasattr(seeds, "shape"):
            seeds = np.asarray(seeds)
        xp = get_array_module(seeds)
        if seeds.ndim != 1 or seeds.shape[0] < 1 or seeds.dtype.kind not in "iu":
            raise ValueError(
                f"{owner}: seeds must be a 1-d int array (one seed per example), got shape "
                f"{tuple(seeds.shape)} and dtype {seeds.dtype}"
            )
        if bool((seeds < 0).any()) or (seeds.dtype.kind == "u" and bool((seeds >= 2**63).any())):
            raise ValueError(f"{owner}: seeds must be non-negative and below 2**63")
        self.m = int(m)
        self.image_shape = shape
        self.D = int(np.prod(shape))
        self.scale = scale
        self.std = float(1.0 / np.sqrt(self.D if scale == "1/D" else self.m))
        self.seeds = seeds.astype(xp.int64, copy=False)
        self.dtype = np.dtype(np.float32)
        self.cache_limit = int(cache_limit)
        self.S: Any = None

    @classmethod
    def for_examples(
        cls,
        n: int,
        m: int,
        image_shape: tuple[int, ...],
        seed: int = 0,
        scale: str = "1/D",
        **kwargs: Any,
    ) -> RandomProjections:
        """``n`` examples whose seeds are drawn from ``numpy.random.default_rng(seed)``.

        The first ``k`` seeds do not depend on ``n``. Use another ``seed`` for another set
        of images (e.g. a held-out set), so that its matrices differ from the training ones.
        """
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"RandomProjections.for_examples: n must be an int >= 1, got {n!r}")
        seeds = np.random.default_rng(seed).integers(0, 2**63 - 1, size=int(n), dtype=np.int64)
        return cls(m, image_shape, seeds, scale=scale, **kwargs)

    @property
    def n_examples(self) -> int:
        return int(self.seeds.shape[0])

    # -- the matrices ----------------------------------------------------------------------------
    def matrices(self, indices: Any = None, like: Any = None) -> Any:
        """Draw ``S_i`` for the examples ``indices`` (default all): ``(len(indices), m, D)``.

        On the device and in the dtype of ``like`` when given, else those of this model
        (:meth:`like`). Independent of what is cached: always drawn from the seeds.
        """
        seeds = to_numpy(self.seeds)
        if indices is not None:
            seeds = seeds[to_numpy(indices)]
        xp = get_array_module(like if like is not None else self.seeds)
        dtype = like.dtype if like is not None and like.dtype.kind == "f" else self.dtype
        out = np.empty((seeds.shape[0], self.m, self.D), dtype=dtype)

        def draw(i: int) -> None:
            rng = np.random.default_rng(int(seeds[i]))
            np.multiply(rng.standard_normal((self.m, self.D)), self.std, out=out[i])

        if seeds.shape[0] * self.m * self.D >= 2**20 and (os.cpu_count() or 1) > 1:
            from concurrent.futures import ThreadPoolExecutor  # the generators release the GIL

            with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
                list(pool.map(draw, range(seeds.shape[0])))
        else:
            for i in range(seeds.shape[0]):
                draw(i)
        return out if xp is np else xp.asarray(out)

    def _apply(self, x: Any, fn: Any) -> Any:
        """``fn(S_chunk, x_chunk)`` over the examples, with the cached or freshly drawn S."""
        xp = get_array_module(x)
        n = x.shape[0]
        if n != self.n_examples:
            raise ValueError(
                f"RandomProjections: got {n} examples but the model has {self.n_examples} seeds; "
                "select a batch's matrices with take(indices)"
            )
        if self.S is None and n * self.m * self.D <= self.cache_limit:
            self.S = self.matrices(like=x)
        if self.S is not None:
            S = self.S if get_array_module(self.S) is xp else xp.asarray(self.S)
            return fn(S, x)
        chunk = max(1, self.cache_limit // (self.m * self.D))
        parts = [
            fn(self.matrices(np.arange(lo, min(n, lo + chunk)), like=x), x[lo : lo + chunk])
            for lo in range(0, n, chunk)
        ]
        return xp.concatenate(parts, axis=0)

    # -- the observation interface ---------------------------------------------------------------
    def observe(self, images: Any) -> Any:
        # (N, *image_shape) -> (N, D) -> (N, m): X_i = S_i vec(f_i)
        flat = images.reshape(images.shape[0], -1)
        if flat.shape[1] != self.D:
            raise ValueError(
                f"RandomProjections: images have {flat.shape[1]} pixels each but the model "
                f"projects {self.D} = prod({self.image_shape})"
            )
        return self._apply(flat, lambda S, v: (S @ v[:, :, None])[:, :, 0])

    def adjoint(self, r: Any) -> Any:
        # (N, m) -> (N, D) -> (N, *image_shape): S_i^T r_i
        if r.ndim != 2 or r.shape[1] != self.m:
            raise ValueError(f"RandomProjections: r must be (N, {self.m}), got {tuple(r.shape)}")
        dy = self._apply(r, lambda S, v: (v[:, None, :] @ S)[:, 0, :])
        return dy.reshape(r.shape[0], *self.image_shape)

    def take(self, indices: Any) -> RandomProjections:
        """The model for the examples ``indices``, with their matrices drawn once (``.S``)."""
        xp = get_array_module(self.seeds)
        idx = to_numpy(indices).astype(np.int64, copy=False).reshape(-1)
        out = copy.copy(self)
        out.seeds = xp.asarray(to_numpy(self.seeds)[idx])
        if self.S is not None:
            out.S = self.S[xp.asarray(idx)]
        else:
            out.S = self.matrices(idx)
        return out

    def like(self, x: Any) -> RandomProjections:
        xp = get_array_module(x)
        dtype = x.dtype if x.dtype.kind == "f" else self.dtype
        same_place = get_array_module(self.seeds) is xp
        if same_place and dtype == self.dtype and (self.S is None or self.S.dtype == dtype):
            return self
        out = copy.copy(self)
        out.seeds = self.seeds if same_place else xp.asarray(to_numpy(self.seeds))
        out.dtype = np.dtype(dtype)
        if self.S is not None:
            S = self.S if get_array_module(self.S) is xp else xp.asarray(to_numpy(self.S))
            out.S = S.astype(dtype, copy=False)
        return out

    def check(
        self, y_obs: Any, image_shape: tuple[int, ...], owner: str = "RandomProjections"
    ) -> None:
        _check_array(y_obs, owner)
        D = int(np.prod(image_shape))
        if self.D != D:
            raise ValueError(
                f"{owner}: the projections take images of shape {self.image_shape} (D = "
                f"{self.D}) but the generator's output {tuple(image_shape)} has D = {D} pixels"
            )
        if y_obs.ndim != 2 or y_obs.shape[1] != self.m or y_obs.shape[0] != self.n_examples:
            raise ValueError(
                f"{owner}: projected data must have shape ({self.n_examples}, {self.m}) "
                f"(one row of {self.m} measurements per seed), got {tuple(y_obs.shape)}"
            )

    def __repr__(self) -> str:
        held = "" if self.S is None else ", matrices drawn"
        return (
            f"RandomProjections(m={self.m}, image_shape={self.image_shape}, "
            f"{self.n_examples} examples, scale={self.scale!r}{held})"
        )
