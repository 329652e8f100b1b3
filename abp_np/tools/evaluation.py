"""Evaluation tools for the paper's experiments: the error metric, latent grids and paths.

* :func:`mean_abs_error` -- the paper's error: mean absolute per-pixel difference on
  images scaled to ``[0, 1]``, over all pixels or over the occluded ones.
* :func:`interpolate`, :func:`latent_grid` -- paths and grids in latent space
  (experiment 3).

The baselines live in :mod:`abp_np.tools.baselines` and are re-exported here, so that
``abp_np.evaluation.PCA`` and the other old names keep working: :class:`PCA`,
:func:`pca_complete`, :func:`fit_pca_incomplete`, :func:`pca_project_recover` (the PCA
baseline), :class:`PPCAMissing` (probabilistic PCA fitted by EM to occluded images),
:func:`neighbour_fill` (harmonic interpolation from neighbouring pixels),
:func:`tv_inpaint` (total-variation inpainting), :func:`fit_var`, :func:`run_var`,
:class:`LinearDynamicTexture`, :func:`linear_dynamic_texture` (dynamic textures).

Array maths is written against ``xp`` (NumPy or CuPy, whichever the input is).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import get_array_module
from .baselines import (
    PCA,
    LinearDynamicTexture,
    PPCAMissing,
    _broadcast_mask,
    _check_positive_int,
    _check_same_shape,
    fit_pca_incomplete,
    fit_var,
    linear_dynamic_texture,
    neighbour_fill,
    pca_complete,
    pca_project_recover,
    run_var,
    total_variation,
    tv_inpaint,
)

__all__ = [
    "mean_abs_error",
    "mean_abs_error_per_example",
    "interpolate",
    "latent_grid",
    # re-exported from abp_np.tools.baselines
    "PCA",
    "pca_complete",
    "fit_pca_incomplete",
    "pca_project_recover",
    "PPCAMissing",
    "neighbour_fill",
    "tv_inpaint",
    "total_variation",
    "fit_var",
    "run_var",
    "LinearDynamicTexture",
    "linear_dynamic_texture",
]


# --------------------------------------------------------------------------------------------------
# the error measure
# --------------------------------------------------------------------------------------------------


def mean_abs_error_per_example(Y: Any, Yhat: Any, mask: Any = None) -> Any:
    """The paper's error measure, one value per example.

    Images in ``[-1, 1]`` are mapped to ``[0, 1]`` by ``(y + 1) / 2``, so a difference
    of pixels shrinks by half::

        err_i = sum_p m_ip |Y_ip - Yhat_ip| / 2  /  sum_p m_ip

    where ``p`` runs over all pixels and channels and ``m`` is the mask (all ones
    when ``mask`` is None).

    Parameters
    ----------
    Y, Yhat : arrays (N, ...)
        Truth and estimate, in ``[-1, 1]``.
    mask : bool array broadcastable to Y, e.g. (N, 1, H, W), optional
        Pixels to average over. For the recovery of occluded pixels pass the
        *occluded* pixels, ``~observed``.

    Returns
    -------
    err : array (N,)
        NaN for an example whose mask selects no pixel.
    """
    owner = "mean_abs_error_per_example"
    _check_same_shape(Y, Yhat, "Y and Yhat", owner)
    if Y.ndim < 1 or Y.shape[0] == 0:
        raise ValueError(f"{owner}: Y must have a leading batch axis with at least one example")
    xp = get_array_module(Y, Yhat)
    diff = xp.abs(Y - Yhat) / 2  # (N, ...) on the [0, 1] scale
    N = Y.shape[0]
    if mask is None:
        return diff.reshape(N, -1).mean(axis=1)
    m = _broadcast_mask(mask, Y, owner)
    total = xp.where(m, diff, 0).reshape(N, -1).sum(axis=1)  # (N,)
    count = m.reshape(N, -1).sum(axis=1)  # (N,)
    safe = xp.maximum(count, 1)
    return xp.where(count > 0, total / safe, xp.nan)


def mean_abs_error(Y: Any, Yhat: Any, mask: Any = None) -> float:
    """The paper's error measure: mean absolute per-pixel difference on ``[0, 1]`` images.

    ::

        err = sum_{i,p} m_ip |Y_ip - Yhat_ip| / 2  /  sum_{i,p} m_ip

    an average over every selected pixel of every example (examples with more
    selected pixels weigh more). Expected magnitudes in the paper: a few hundredths to
    a few tenths.

    Parameters
    ----------
    Y, Yhat : arrays of one shape, values in ``[-1, 1]``
        Truth and estimate.
    mask : bool array broadcastable to Y, optional
        Pixels to average over (e.g. ``~observed`` for the occluded pixels). Mask and
        data must have the same number of axes.

    Returns
    -------
    err : float
    """
    owner = "mean_abs_error"
    _check_same_shape(Y, Yhat, "Y and Yhat", owner)
    if Y.size == 0:
        raise ValueError(f"{owner}: Y is empty")
    xp = get_array_module(Y, Yhat)
    diff = xp.abs(Y - Yhat) / 2
    if mask is None:
        return float(diff.mean())
    m = _broadcast_mask(mask, Y, owner)
    count = int(m.sum())
    if count == 0:
        raise ValueError(f"{owner}: the mask selects no pixel")
    return float(xp.where(m, diff, 0).sum()) / count


# --------------------------------------------------------------------------------------------------
# latent space: interpolation and grids (experiment 3)
# --------------------------------------------------------------------------------------------------


def interpolate(z0: Any, z1: Any, steps: int, method: str = "linear", eps: float = 1e-7) -> Any:
    """Points on a path from ``z0`` to ``z1`` (both ends included).

    With ``t_k = k / (steps - 1)``, ``k = 0 ... steps - 1``:

    * ``'linear'``: ``z(t) = (1 - t) z0 + t z1``.
    * ``'slerp'`` (spherical), on the flattened vectors with angle
      ``omega = arccos(<z0, z1> / (|z0| |z1|))``::

          z(t) = sin((1 - t) omega) / sin(omega) z0 + sin(t omega) / sin(omega) z1

      For endpoints of equal norm every point keeps that norm, which suits a
      Gaussian prior in high dimension (samples live near a sphere). When
      ``sin(omega) < eps`` (parallel or opposite endpoints) the formula is undefined
      and the linear path is returned.

    Parameters
    ----------
    z0, z1 : arrays of one shape (e.g. the latent shape (d,) or (C, h, w))
    steps : int >= 2
    method : {'linear', 'slerp'}

    Returns
    -------
    path : array (steps, *z0.shape)
    """
    owner = "interpolate"
    _check_same_shape(z0, z1, "z0 and z1", owner)
    steps = _check_positive_int(steps, "steps", owner, minimum=2)
    if method not in ("linear", "slerp"):
        raise ValueError(f"{owner}: method must be 'linear' or 'slerp', got {method!r}")
    xp = get_array_module(z0, z1)
    dtype = np.result_type(z0.dtype, z1.dtype, np.float32)
    a = xp.asarray(z0, dtype=dtype).reshape(-1)  # (D,)
    b = xp.asarray(z1, dtype=dtype).reshape(-1)  # (D,)
    t = xp.linspace(0.0, 1.0, steps, dtype=dtype)[:, None]  # (steps, 1)

    w0, w1 = 1 - t, t  # linear weights, (steps, 1)
    if method == "slerp":
        na, nb = float(xp.linalg.norm(a)), float(xp.linalg.norm(b))
        if na > 0 and nb > 0:
            cos = float(xp.dot(a, b)) / (na * nb)
            omega = float(np.arccos(np.clip(cos, -1.0, 1.0)))
            if np.sin(omega) >= eps:
                s = float(np.sin(omega))  # a Python float keeps t's dtype (NEP 50)
                w0 = xp.sin((1 - t) * omega) / s
                w1 = xp.sin(t * omega) / s
    path = w0 * a[None, :] + w1 * b[None, :]  # (steps, D)
    return path.reshape((steps,) + tuple(z0.shape))


def latent_grid(n: int = 9, limit: float = 2.0, dtype: Any = np.float32) -> np.ndarray:
    """The ``n x n`` grid of ``(z1, z2)`` in ``[-limit, limit]^2`` shown as an image grid.

    Row-major, as the images appear on an ``n x n`` grid read left to right, top to
    bottom: entry ``k = r * n + c`` (row ``r``, column ``c``) is ::

        (z1, z2) = (v[c], v[r]),    v = linspace(-limit, limit, n)

    so **z1 grows along a row (left to right), z2 down a column (top to bottom)**; the
    top-left image is ``(-limit, -limit)``, the bottom-right ``(limit, limit)``.

    Parameters
    ----------
    n : int >= 2
        Points per axis (9 in the paper).
    limit : float > 0
        Half-width of the square (2 in the paper).
    dtype : float dtype

    Returns
    -------
    z : ndarray (n * n, 2)
        NumPy; move it to the GPU with :func:`abp_np.to_device` and reshape it to the
        latent shape as needed.
    """
    owner = "latent_grid"
    n = _check_positive_int(n, "n", owner, minimum=2)
    if not float(limit) > 0:
        raise ValueError(f"{owner}: limit must be positive, got {limit!r}")
    v = np.linspace(-float(limit), float(limit), n)
    z2, z1 = np.meshgrid(v, v, indexing="ij")  # (n, n): z2 constant along a row, z1 along a column
    return np.stack([z1.ravel(), z2.ravel()], axis=1).astype(dtype)
