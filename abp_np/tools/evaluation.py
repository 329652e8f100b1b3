"""Evaluation tools for the paper's experiments: error metric, latent grids and paths, baselines.

* :func:`mean_abs_error` -- the paper's error: mean absolute per-pixel difference on
  images scaled to ``[0, 1]``, over all pixels or over the occluded ones.
* :func:`interpolate`, :func:`latent_grid` -- paths and grids in latent space
  (experiment 3).
* :class:`PCA`, :func:`pca_complete`, :func:`fit_pca_incomplete`,
  :func:`pca_project_recover` -- the PCA baseline at the same dimension ``d`` as Z,
  for reconstruction (experiment 7), completion of occluded images (experiment 5)
  and compressed sensing (experiment 6).
* :func:`neighbour_fill` -- interpolation from neighbouring pixels (harmonic
  inpainting), the other baseline of experiment 5.
* :func:`fit_var`, :func:`run_var`, :func:`linear_dynamic_texture` -- the vector
  auto-regression of dynamic textures (experiment 4) and Doretto et al.'s linear
  dynamic texture.

Array maths is written against ``xp`` (NumPy or CuPy, whichever the input is); the
small ``d x d`` linear algebra of the auto-regression runs in NumPy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backend import get_array_module, to_numpy

__all__ = [
    "mean_abs_error",
    "mean_abs_error_per_example",
    "interpolate",
    "latent_grid",
    "PCA",
    "pca_complete",
    "fit_pca_incomplete",
    "pca_project_recover",
    "neighbour_fill",
    "fit_var",
    "run_var",
    "LinearDynamicTexture",
    "linear_dynamic_texture",
]


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def _check_same_shape(a: Any, b: Any, names: str, owner: str) -> None:
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"{owner}: {names} must have the same shape, got {a.shape} and {b.shape}")


def _broadcast_mask(mask: Any, data: Any, owner: str) -> Any:
    """``mask`` as a bool array of the shape and device of ``data`` ((N,1,H,W) -> (N,C,H,W))."""
    xp = get_array_module(data)
    shape = tuple(data.shape)
    mask = xp.asarray(mask)
    if mask.ndim != len(shape):
        raise ValueError(
            f"{owner}: mask of shape {mask.shape} must have as many axes as the data {shape} "
            "(e.g. (N, 1, H, W) for images (N, C, H, W))"
        )
    try:
        out = xp.broadcast_to(mask, shape)
    except ValueError as err:
        raise ValueError(
            f"{owner}: mask of shape {mask.shape} does not broadcast to the data shape {shape}"
        ) from err
    return out.astype(bool) if out.dtype != bool else out


def _check_positive_int(value: Any, name: str, owner: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{owner}: {name} must be an int >= {minimum}, got {value!r}")
    return int(value)


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


# --------------------------------------------------------------------------------------------------
# PCA: the linear baseline at the same dimension d
# --------------------------------------------------------------------------------------------------


class PCA:
    """Principal component analysis: the linear special case of the generator model.

    With the data flattened to ``Y (n, D)``, mean ``mu (D,)`` and the top ``d`` right
    singular vectors ``U (d, D)`` (orthonormal rows) of ``Y - mu``::

        transform:          c = (y - mu) U^T              (n, d)
        inverse_transform:  y = mu + c U                  (n, D), then reshaped
        reconstruct:        y_hat = mu + (y - mu) U^T U   the best rank-d fit

    The sign of each component is fixed (its largest-magnitude entry is positive) so
    that fits are reproducible. Arrays stay on the device of the data they were fitted
    to.

    Parameters
    ----------
    d : int
        Number of components, at most ``min(n, D)``.

    Attributes
    ----------
    mean : array (D,)
    components : array (d, D)
    explained_variance : array (d,)
        Variance of the data along each component, ``s^2 / (n - 1)`` (``s^2`` if n = 1).
    noise_variance : float
        The mean variance left in the ``D - d`` discarded directions (0 when ``d = D``): the
        noise variance of probabilistic PCA (Tipping and Bishop), used by :func:`pca_complete`
        as the prior of the coefficients.
    shape : tuple
        Shape of one example, ``Y.shape[1:]``.
    """

    def __init__(self, d: int) -> None:
        self.d = _check_positive_int(d, "d", "PCA")
        self.mean: Any = None
        self.components: Any = None
        self.explained_variance: Any = None
        self.noise_variance: float = 0.0
        self.shape: tuple[int, ...] | None = None

    def fit(self, Y: Any) -> PCA:
        """Fit to ``Y (n, ...)``, one example per row after flattening. Returns self."""
        owner = "PCA.fit"
        if Y.ndim < 2:
            raise ValueError(f"{owner}: Y must be (n, ...) with one example per row, got {Y.shape}")
        n, D = Y.shape[0], int(np.prod(Y.shape[1:]))
        if self.d > min(n, D):
            raise ValueError(
                f"{owner}: d = {self.d} components need at least d examples and d features; "
                f"got n = {n}, D = {D}"
            )
        xp = get_array_module(Y)
        dtype = np.result_type(Y.dtype, np.float32)
        X = xp.asarray(Y, dtype=np.float64).reshape(n, D)  # (n, D), SVD in float64
        mu = X.mean(axis=0)  # (D,)
        Xc = X - mu
        if n < D:  # images: few examples, many pixels. LAPACK is faster on the tall transpose,
            # Xc^T = P S Q^T  <=>  Xc = Q S P^T, so the right singular vectors of Xc are P.
            P, s, _ = xp.linalg.svd(Xc.T, full_matrices=False)  # P (D, n)
            Vt = P.T  # (n, D)
        else:
            _, s, Vt = xp.linalg.svd(Xc, full_matrices=False)  # Vt (D, D)
        V = Vt[: self.d]  # (d, D)
        # sign convention: the largest-magnitude entry of each component is positive
        pivot = xp.argmax(xp.abs(V), axis=1)  # (d,)
        signs = xp.sign(V[xp.arange(self.d), pivot])  # (d,)
        V = V * xp.where(signs == 0, 1.0, signs)[:, None]
        self.mean = mu.astype(dtype)
        self.components = V.astype(dtype)
        self.explained_variance = (s[: self.d] ** 2 / max(n - 1, 1)).astype(dtype)
        rest = float((s[self.d :] ** 2).sum()) / max(n - 1, 1)  # variance outside the subspace
        self.noise_variance = rest / (D - self.d) if D > self.d else 0.0
        self.shape = tuple(Y.shape[1:])
        return self

    def _check_fitted(self, owner: str) -> None:
        if self.components is None:
            raise ValueError(f"{owner}: this PCA is not fitted yet; call fit(Y) first")

    def _flatten(self, Y: Any, owner: str) -> Any:
        self._check_fitted(owner)
        if tuple(Y.shape[1:]) != self.shape:
            raise ValueError(
                f"{owner}: examples of shape {tuple(Y.shape[1:])} do not match the fitted shape "
                f"{self.shape}"
            )
        return Y.reshape(Y.shape[0], -1)  # (N, D)

    def transform(self, Y: Any) -> Any:
        """Coefficients ``c = (y - mu) U^T``: ``Y (N, ...)`` -> ``(N, d)``."""
        X = self._flatten(Y, "PCA.transform")
        return (X - self.mean) @ self.components.T

    def inverse_transform(self, C: Any) -> Any:
        """Images ``y = mu + c U``: ``C (N, d)`` -> ``(N, ...)``."""
        self._check_fitted("PCA.inverse_transform")
        if C.ndim != 2 or C.shape[1] != self.d:
            raise ValueError(f"PCA.inverse_transform: C must be (N, {self.d}), got {C.shape}")
        X = C @ self.components + self.mean  # (N, D)
        return X.reshape((C.shape[0],) + self.shape)

    def reconstruct(self, Y: Any) -> Any:
        """Best rank-d approximation ``mu + (y - mu) U^T U``, same shape as ``Y``."""
        return self.inverse_transform(self.transform(Y))


def pca_complete(
    Y_obs: Any,
    mask: Any,
    pca: PCA,
    ridge: float | None = None,
    keep_observed: bool = True,
    chunk: int | None = None,
) -> Any:
    """Complete occluded images with a fitted PCA, from the observed pixels.

    For each example ``i`` with observed set ``M_i`` (the mask)::

        c_i = argmin_c  ||M_i (y_i - mu - U^T c)||^2 + c^T Lam_i c
            = (U M_i U^T + Lam_i)^-1  U M_i (y_i - mu)

        y_hat_i = mu + U^T c_i

    with ``U (d, D)`` the components. By default (``ridge=None``) ``Lam`` is the prior of
    probabilistic PCA, ``Lam = s2 diag(1 / v_k)`` with ``v_k`` the variance along component k
    and ``s2`` the variance left outside the subspace (``pca.noise_variance``): ``c_i`` is
    then the posterior mean of the coefficients given the observed pixels, which stays
    sensible when few pixels are observed (the plain least-squares fit from a handful of
    pixels swings far outside the data range). With a number, ``Lam_i = ridge *
    trace(U M_i U^T) / d I`` (a ridge relative to the data it regularises; 0 gives plain
    least squares). The ``d x d`` systems of all examples are formed with batched matrix
    products and solved by one batched solve. Occluded pixels of ``Y_obs`` are never read
    (they may hold anything, NaN included).

    Parameters
    ----------
    Y_obs : array (N, ...)
        Images; only the observed pixels matter.
    mask : bool array broadcastable to Y_obs, e.g. (N, 1, H, W)
        True where observed.
    pca : PCA
        Fitted on examples of the same shape.
    ridge : float >= 0, optional
        Relative ridge instead of the probabilistic-PCA prior; 0 gives plain least squares
        (needs at least d observed pixels per example in general position).
    keep_observed : bool
        If True, observed pixels are returned as given and only occluded ones are
        filled; if False, the whole PCA estimate ``mu + U^T c_i`` is returned.
    chunk : int, optional
        Examples per batched product (bounds the memory of the ``(chunk, d, D)``
        temporary); by default about 2**24 numbers.

    Returns
    -------
    Y_hat : array (N, ...)
    """
    owner = "pca_complete"
    X = pca._flatten(Y_obs, owner)  # (N, D)
    if ridge is not None and not float(ridge) >= 0:
        raise ValueError(f"{owner}: ridge must be >= 0 or None, got {ridge!r}")
    xp = get_array_module(Y_obs)
    N, D = X.shape
    d = pca.d
    m = _broadcast_mask(mask, Y_obs, owner).reshape(N, D)  # (N, D) bool
    U = pca.components  # (d, D)
    R = xp.where(m, X - pca.mean, 0)  # (N, D) centred residual on observed pixels, 0 elsewhere
    b = R @ U.T  # (N, d):  U M_i (y_i - mu)
    if chunk is None:
        chunk = max(1, 2**24 // max(d * D, 1))
    chunk = _check_positive_int(chunk, "chunk", owner)

    G = xp.empty((N, d, d), dtype=U.dtype)  # (N, d, d):  U M_i U^T
    mf = m.astype(U.dtype)
    for start in range(0, N, chunk):
        stop = min(start + chunk, N)
        UM = U[None, :, :] * mf[start:stop, None, :]  # (B, d, D)
        G[start:stop] = UM @ U.T  # (B, d, d)
    eye = xp.eye(d, dtype=U.dtype)
    if ridge is None and pca.noise_variance > 0:  # probabilistic PCA: s2 / v_k on the diagonal
        v = xp.maximum(pca.explained_variance, np.finfo(U.dtype).tiny)
        G += eye * (pca.noise_variance / v)  # (d, d) broadcast over the N systems
    else:  # a relative ridge (also the fallback for data exactly in the subspace: s2 = 0)
        r = 1e-8 if ridge is None else float(ridge)
        lam = r * xp.trace(G, axis1=1, axis2=2) / d  # (N,)
        lam = xp.maximum(lam, r * np.finfo(U.dtype).tiny)
        G += lam[:, None, None] * eye
    c = xp.linalg.solve(G, b[:, :, None])[:, :, 0]  # (N, d)
    est = c @ U + pca.mean  # (N, D)
    if keep_observed:
        est = xp.where(m, X, est)
    return est.reshape(Y_obs.shape).astype(Y_obs.dtype, copy=False)


def fit_pca_incomplete(
    Y_obs: Any,
    mask: Any,
    d: int,
    iters: int = 100,
    tol: float = 1e-6,
    init: str = "mean",
) -> tuple[PCA, Any]:
    """Fit PCA to occluded training data by iterative imputation (hard impute).

    The fair PCA baseline for experiment 5, where no training image is complete::

        Y^0 = Y on observed pixels, an initial fill elsewhere
        repeat:  pca = PCA(d).fit(Y^k)                    # fit
                 Y_hat = pca.reconstruct(Y^k)             # reconstruct
                 Y^{k+1} = Y on observed, Y_hat elsewhere # refill

    Each round lowers ``sum_i ||Y^k_i - reconstruct(Y^k_i)||^2`` over all pixels, and
    the fixed points are rank-d fits of the observed pixels. It stops after ``iters``
    rounds or when the filled values change by less than ``tol`` (relative, RMS).

    Parameters
    ----------
    Y_obs : array (N, ...)
        Training images; occluded pixels are never read.
    mask : bool array broadcastable to Y_obs
        True where observed.
    d : int
        Number of components.
    iters : int
        Maximum rounds.
    tol : float
        Stop when ``rms(change of the filled pixels) <= tol * rms(Y^k)``.
    init : {'mean', 'neighbour'}
        Initial fill: the mean of each pixel over the images where it is observed (the
        mean of all observed values where it never is), or :func:`neighbour_fill`
        (images ``(N, C, H, W)`` only; better when most pixels are missing).

    Returns
    -------
    pca : PCA
        Fitted to the completed data.
    Y_filled : array (N, ...)
        Observed pixels as given, occluded ones from the last reconstruction: PCA's
        recovery of the occluded training pixels.
    """
    owner = "fit_pca_incomplete"
    iters = _check_positive_int(iters, "iters", owner)
    if init not in ("mean", "neighbour"):
        raise ValueError(f"{owner}: init must be 'mean' or 'neighbour', got {init!r}")
    xp = get_array_module(Y_obs)
    m = _broadcast_mask(mask, Y_obs, owner)
    if not bool(m.any()):
        raise ValueError(f"{owner}: the mask observes no pixel at all")
    dtype = np.result_type(Y_obs.dtype, np.float32)
    Y = xp.asarray(Y_obs, dtype=dtype)

    if init == "neighbour":
        filled = neighbour_fill(Y, m)
    else:
        observed = xp.where(m, Y, 0)
        count = m.sum(axis=0)  # (...) how often each pixel is observed
        overall = observed.sum() / m.sum()
        pixel_mean = xp.where(count > 0, observed.sum(axis=0) / xp.maximum(count, 1), overall)
        filled = xp.where(m, Y, pixel_mean[None])

    pca = PCA(d)
    for _ in range(iters):
        pca.fit(filled)
        new = xp.where(m, Y, pca.reconstruct(filled))
        change = float(xp.sqrt(xp.mean((new - filled) ** 2)))
        scale = float(xp.sqrt(xp.mean(new**2)))
        filled = new
        if change <= tol * max(scale, np.finfo(np.float64).tiny):
            break
    pca.fit(filled)
    return pca, filled


def pca_project_recover(X: Any, S: Any, pca: PCA, ridge: float = 1e-8) -> Any:
    """Recover images from random projections ``X = S y`` with a fitted PCA (experiment 6).

    The image is sought in the PCA subspace, ``y = mu + U^T c``::

        c = argmin_c ||X - S (mu + U^T c)||^2 + lam ||c||^2
          = (A^T A + lam I)^-1 A^T (X - S mu),     A = S U^T   (m, d)

    with ``lam = ridge * trace(A^T A) / d``. One ``d x d`` system, shared by all examples.
    With at least ``d`` generic measurements and data in the subspace, the recovery is
    exact (up to the ridge).

    Parameters
    ----------
    X : array (N, m)
        Measurements of N images.
    S : array (m, ...) with prod(...) = D
        The measurement matrix, one white-noise image per row (e.g. (m, C, H, W)).
    pca : PCA
        Fitted on images with D pixels (e.g. on training data, or learnt otherwise).
    ridge : float >= 0

    Returns
    -------
    Y_hat : array (N, *pca.shape)
    """
    owner = "pca_project_recover"
    pca._check_fitted(owner)
    if float(ridge) < 0:
        raise ValueError(f"{owner}: ridge must be >= 0, got {ridge!r}")
    D = int(np.prod(pca.shape))
    if S.ndim < 2 or int(np.prod(S.shape[1:])) != D:
        raise ValueError(
            f"{owner}: S must be (m, ...) with {D} pixels per row to match the PCA, got {S.shape}"
        )
    m = S.shape[0]
    if X.ndim != 2 or X.shape[1] != m:
        raise ValueError(f"{owner}: X must be (N, {m}) for S with {m} rows, got {X.shape}")
    xp = get_array_module(X, S)
    dtype = pca.components.dtype
    Sf = xp.asarray(S, dtype=dtype).reshape(m, D)  # (m, D)
    A = Sf @ pca.components.T  # (m, d)
    G = A.T @ A  # (d, d)
    lam = float(ridge) * float(xp.trace(G)) / pca.d
    rhs = A.T @ (xp.asarray(X, dtype=dtype) - Sf @ pca.mean).T  # (d, N)
    c = xp.linalg.solve(G + lam * xp.eye(pca.d, dtype=dtype), rhs).T  # (N, d)
    return pca.inverse_transform(c)


# --------------------------------------------------------------------------------------------------
# interpolation from neighbouring pixels
# --------------------------------------------------------------------------------------------------


def _neighbour_sum(u: Any) -> Any:
    """Sum of the 4-neighbours that lie inside the image, for ``u (N, C, H, W)``."""
    xp = get_array_module(u)
    s = xp.zeros_like(u)
    s[:, :, 1:, :] += u[:, :, :-1, :]  # from above
    s[:, :, :-1, :] += u[:, :, 1:, :]  # from below
    s[:, :, :, 1:] += u[:, :, :, :-1]  # from the left
    s[:, :, :, :-1] += u[:, :, :, 1:]  # from the right
    return s


def neighbour_fill(Y: Any, mask: Any, tol: float = 1e-8, max_iter: int | None = None) -> Any:
    """Fill occluded pixels by harmonic interpolation from the observed ones.

    Every occluded pixel becomes the mean of its 4-neighbours inside the image
    (2 at a corner, 3 on an edge, 4 elsewhere), and observed pixels stay fixed::

        deg(p) u_p - sum_{q ~ p, q occluded} u_q = sum_{q ~ p, q observed} y_q

    the discrete Laplace equation with the observed pixels as boundary values (and
    no flux across the image border). Its solution is the limit of repeatedly
    replacing each unknown pixel by the mean of its neighbours, but that iteration
    needs ~(hole width)^2 sweeps; the system is symmetric positive definite, so it is
    solved here by conjugate gradients, batched over all images and channels (each
    ``(n, c)`` slice runs its own CG), which needs ~(hole width) sweeps.

    Why this baseline: it is parameter-free, exact on constant images and on linear
    ramps (harmonic functions) wherever the image border is observed, and it stays
    well posed however sparse the observations are (90 % missing still leaves every
    hole touching observed pixels), unlike scattered-data triangulation, which leaves
    NaN outside the convex hull of the observed pixels.

    Parameters
    ----------
    Y : array (N, C, H, W)
        Images; occluded pixels are never read.
    mask : bool array broadcastable to Y, e.g. (N, 1, H, W)
        True where observed. Every image must have at least one observed pixel.
    tol : float
        Stop when every slice's residual norm is below ``tol`` times its right-hand
        side norm.
    max_iter : int, optional
        Most CG sweeps; by default ``H * W`` (CG's worst case in exact arithmetic).

    Returns
    -------
    Y_filled : array (N, C, H, W)
        Observed pixels as given, occluded ones interpolated.
    """
    owner = "neighbour_fill"
    if Y.ndim != 4:
        raise ValueError(f"{owner}: Y must be images (N, C, H, W), got shape {Y.shape}")
    m = _broadcast_mask(mask, Y, owner)
    xp = get_array_module(Y)
    N, C, H, W = Y.shape
    observed_per_slice = m.reshape(N, C, -1).sum(axis=2)  # (N, C)
    if bool((observed_per_slice == 0).any()):
        empty = sorted({int(i) for i in to_numpy(xp.nonzero(observed_per_slice == 0)[0])})
        raise ValueError(f"{owner}: images {empty} have no observed pixel to interpolate from")
    max_iter = H * W if max_iter is None else _check_positive_int(max_iter, "max_iter", owner)

    y = xp.where(m, xp.asarray(Y, dtype=np.float64), 0.0)  # (N, C, H, W), 0 on occluded pixels
    free = ~m  # unknowns
    deg = _neighbour_sum(xp.ones((1, 1, H, W)))  # (1, 1, H, W): 2, 3 or 4 neighbours

    def A(u):  # the Laplacian restricted to the unknowns (u is 0 on observed pixels)
        return xp.where(free, deg * u - _neighbour_sum(u), 0.0)

    def dot(a, b):  # one inner product per (n, c) slice, (N, C, 1, 1)
        return (a * b).sum(axis=(2, 3), keepdims=True)

    b = xp.where(free, _neighbour_sum(y), 0.0)
    # start from each slice's mean observed value: exact for constant images
    start = y.sum(axis=(2, 3), keepdims=True) / observed_per_slice[:, :, None, None]
    u = xp.where(free, start, 0.0)
    r = b - A(u)
    p = r.copy()
    rr = dot(r, r)
    stop = (tol**2) * xp.maximum(dot(b, b), 1e-300)
    for _ in range(max_iter):
        if bool((rr <= stop).all()):
            break
        Ap = A(p)
        pAp = dot(p, Ap)
        alpha = xp.where(pAp > 0, rr / xp.where(pAp > 0, pAp, 1.0), 0.0)
        u = u + alpha * p
        r = r - alpha * Ap
        rr_new = dot(r, r)
        beta = xp.where(rr > 0, rr_new / xp.where(rr > 0, rr, 1.0), 0.0)
        p = r + beta * p
        rr = rr_new
    return xp.where(m, Y, u.astype(Y.dtype))


# --------------------------------------------------------------------------------------------------
# dynamic textures: vector auto-regression of the latent factors (experiment 4)
# --------------------------------------------------------------------------------------------------


def fit_var(
    Z: Any, ridge: float = 0.0, max_radius: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit a first-order vector auto-regression by least squares.

    ::

        Z_t - mu = A (Z_{t-1} - mu) + e_t,      e_t ~ N(0, Q)

    ``mu`` is the mean of all frames; with centred ``X0 = Z_{0..T-2} - mu`` and
    ``X1 = Z_{1..T-1} - mu`` (one frame per row)::

        A^T = argmin ||X1 - X0 A^T||^2 + ridge ||A||^2 = (X0^T X0 + ridge I)^-1 X0^T X1
        Q   = E^T E / (T - 1),      E = X1 - X0 A^T      (the residuals)

    (minimum-norm least squares when ``ridge = 0`` and ``X0`` is rank deficient).

    Parameters
    ----------
    Z : array (T, d)
        Latent factors of T consecutive frames (a CuPy array is copied to the host).
    ridge : float >= 0
    max_radius : float, optional
        If given and the spectral radius of A exceeds it, A is scaled down to it, so
        that synthesis by :func:`run_var` cannot explode (short sequences may fit an
        unstable A).

    Returns
    -------
    A : ndarray (d, d)
    noise_cov : ndarray (d, d)
    mean : ndarray (d,)
    """
    owner = "fit_var"
    Z = np.asarray(to_numpy(Z), dtype=np.float64)
    if Z.ndim != 2 or Z.shape[0] < 2:
        raise ValueError(f"{owner}: Z must be (T, d) with T >= 2 frames, got shape {Z.shape}")
    if float(ridge) < 0:
        raise ValueError(f"{owner}: ridge must be >= 0, got {ridge!r}")
    if max_radius is not None and not float(max_radius) > 0:
        raise ValueError(f"{owner}: max_radius must be positive, got {max_radius!r}")
    T, d = Z.shape
    mu = Z.mean(axis=0)  # (d,)
    X0, X1 = Z[:-1] - mu, Z[1:] - mu  # (T-1, d) each
    if ridge > 0:
        At = np.linalg.solve(X0.T @ X0 + float(ridge) * np.eye(d), X0.T @ X1)  # (d, d)
    else:
        At = np.linalg.lstsq(X0, X1, rcond=None)[0]  # (d, d)
    A = At.T
    if max_radius is not None:
        radius = float(np.max(np.abs(np.linalg.eigvals(A))))
        if radius > max_radius:
            A = A * (float(max_radius) / radius)
    E = X1 - X0 @ A.T  # (T-1, d) residuals
    Q = E.T @ E / (T - 1)
    return A, (Q + Q.T) / 2, mu


def _cov_sqrt(Q: np.ndarray) -> np.ndarray:
    """A matrix L with ``L L^T = Q`` for a symmetric positive semi-definite Q (may be singular)."""
    w, V = np.linalg.eigh((Q + Q.T) / 2)
    return V * np.sqrt(np.clip(w, 0.0, None))[None, :]


def run_var(
    A: Any,
    noise_cov: Any,
    mean: Any,
    steps: int,
    rng: np.random.Generator,
    z0: Any = None,
    burn_in: int = 100,
) -> np.ndarray:
    """Synthesise a sequence from a fitted vector auto-regression.

    ::

        x_0 = z0 - mu  (or x_0 ~ N(0, Q) when z0 is None)
        x_t = A x_{t-1} + L u_t,     u_t ~ N(0, I),   L L^T = Q
        Z_t = mu + x_t

    The first ``burn_in`` steps after ``x_0`` are discarded, so that the returned
    sequence starts near the stationary distribution whatever the start.

    Parameters
    ----------
    A : array (d, d)
    noise_cov : array (d, d)
        Covariance Q of the innovations (positive semi-definite).
    mean : array (d,)
    steps : int >= 1
        Number of frames returned.
    rng : numpy.random.Generator
        Explicit source of the innovations.
    z0 : array (d,), optional
        Starting point; None draws it as above.
    burn_in : int >= 0
        Steps run and discarded before the first returned frame.

    Returns
    -------
    Z : ndarray (steps, d)
    """
    owner = "run_var"
    A = np.asarray(to_numpy(A), dtype=np.float64)
    Q = np.asarray(to_numpy(noise_cov), dtype=np.float64)
    mu = np.asarray(to_numpy(mean), dtype=np.float64)
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"{owner}: A must be a square matrix (d, d), got shape {A.shape}")
    d = A.shape[0]
    if Q.shape != (d, d) or mu.shape != (d,):
        raise ValueError(
            f"{owner}: noise_cov must be ({d}, {d}) and mean ({d},), got {Q.shape} and {mu.shape}"
        )
    steps = _check_positive_int(steps, "steps", owner)
    burn_in = _check_positive_int(burn_in, "burn_in", owner, minimum=0)
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"{owner}: rng must be a numpy.random.Generator, got {type(rng).__name__}")
    L = _cov_sqrt(Q)  # (d, d)
    if z0 is None:
        x = L @ rng.standard_normal(d)
    else:
        z0 = np.asarray(to_numpy(z0), dtype=np.float64)
        if z0.shape != (d,):
            raise ValueError(f"{owner}: z0 must have shape ({d},), got {z0.shape}")
        x = z0 - mu
    noise = rng.standard_normal((burn_in + steps, d)) @ L.T  # (burn_in + steps, d)
    out = np.empty((steps, d))
    for t in range(burn_in + steps):
        x = A @ x + noise[t]
        if t >= burn_in:
            out[t - burn_in] = x
    return out + mu


@dataclass
class LinearDynamicTexture:
    """Doretto et al.'s linear dynamic texture: PCA of the frames plus a VAR on the coefficients.

    ::

        y_t = mu_y + U^T x_t          (the linear generator: PCA)
        x_t = A x_{t-1} + e_t,  e_t ~ N(0, Q)

    It is ABP's dynamic-texture model with the generator ``f`` linear.

    Attributes
    ----------
    pca : PCA
        Fitted to the frames.
    A : ndarray (d, d)
    noise_cov : ndarray (d, d)
    mean : ndarray (d,)
        Mean of the coefficients (about 0, since PCA centres the frames).
    coefficients : array (T, d)
        PCA coefficients of the training frames.
    """

    pca: PCA
    A: np.ndarray
    noise_cov: np.ndarray
    mean: np.ndarray
    coefficients: Any

    def synthesise(
        self, steps: int, rng: np.random.Generator, burn_in: int = 100, z0: Any = None
    ) -> Any:
        """New frames ``(steps, *frame_shape)``: :func:`run_var` on the coefficients, decoded."""
        Z = run_var(self.A, self.noise_cov, self.mean, steps, rng, z0=z0, burn_in=burn_in)
        xp = get_array_module(self.pca.components)
        return self.pca.inverse_transform(xp.asarray(Z, dtype=self.pca.components.dtype))


def linear_dynamic_texture(
    frames: Any, d: int, ridge: float = 0.0, max_radius: float | None = None
) -> LinearDynamicTexture:
    """Fit Doretto et al.'s linear dynamic texture, the linear baseline of experiment 4.

    ``PCA(d)`` (an SVD) of the frames gives the coefficients ``x_t``; :func:`fit_var`
    fits ``x_t = A x_{t-1} + e_t`` to them.

    Parameters
    ----------
    frames : array (T, ...)
        Consecutive frames, e.g. (T, C, H, W).
    d : int
        State dimension, at most T.
    ridge, max_radius
        Passed to :func:`fit_var`.

    Returns
    -------
    LinearDynamicTexture
    """
    pca = PCA(d).fit(frames)
    coefficients = pca.transform(frames)  # (T, d)
    A, Q, mu = fit_var(coefficients, ridge=ridge, max_radius=max_radius)
    return LinearDynamicTexture(pca, A, Q, mu, coefficients)
