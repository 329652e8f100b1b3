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
  (a mask is per example; a projection matrix is shared);
* ``check(y_obs, image_shape)``  raises ValueError when ``y_obs`` does not fit;
* ``like(x)``                    a copy whose arrays live on ``x``'s device with ``x``'s dtype.

The adjoint identity <A y, r> = <y, A^T r> holds for each of them (tested). Arrays may be
NumPy or CuPy, float32 or float64.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .backend import get_array_module

__all__ = ["Observation", "Complete", "Masked", "Projection"]


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
        return flat @ self.S.T

    def adjoint(self, r: Any) -> Any:
        # (N, m) @ (m, D) -> (N, D)
        dy = r @ self.S
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
