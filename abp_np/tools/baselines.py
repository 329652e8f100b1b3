"""Baselines for the paper's quantitative experiments, each at the same dimension d as Z.

* :class:`PCA`, :func:`pca_complete`, :func:`fit_pca_incomplete`,
  :func:`pca_project_recover` -- the PCA baseline: reconstruction of held-out images
  (experiment 7), completion of occluded images (experiment 5) and compressed sensing
  (experiment 6).
* :class:`PPCAMissing` -- probabilistic PCA fitted by EM to occluded training images
  (Tipping and Bishop's model, the missing-data EM of Ilin and Raiko 2010): the linear
  factor model ``y = W z + mu + eps`` learnt from the observed pixels only, the linear
  counterpart of ABP on occluded data (experiment 5).
* :func:`neighbour_fill` -- interpolation from neighbouring pixels (harmonic
  inpainting), the simplest baseline of experiment 5.
* :func:`tv_inpaint` -- total-variation inpainting, the l1 Markov-random-field baseline
  of experiment 5: it keeps edges sharp where harmonic interpolation blurs them.
* :func:`fit_var`, :func:`run_var`, :func:`linear_dynamic_texture` -- the vector
  auto-regression of dynamic textures (experiment 4) and Doretto et al.'s linear
  dynamic texture.

The linear generator trained by ABP itself (the fair baseline for compressed sensing
from the same projections) is :func:`abp_np.generator.linear_generator`.

Every PCA-type baseline needs ``d`` well below the number of training images ``n``:
with ``d >= n - 1`` the components reproduce every centred training image exactly, no
variance is left for the noise, and the fits refuse with a ValueError.

Array maths is written against ``xp`` (NumPy or CuPy, whichever the input is); the
small ``d x d`` linear algebra of the auto-regression runs in NumPy. The error measure
these baselines are judged by is :func:`abp_np.tools.evaluation.mean_abs_error`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backend import device_of, get_array_module, to_device, to_numpy

__all__ = [
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


def _check_rank(d: int, n: int, D: int, owner: str) -> None:
    """Refuse a PCA-type fit whose ``d`` leaves no variance for the noise (d >= n - 1 or d >= D)."""
    if d >= n - 1 or d >= D:
        raise ValueError(
            f"{owner}: d = {d} components from n = {n} images of D = {D} values each: keep d "
            f"well below the number of images (need d < n - 1 = {n - 1} and d < D = {D}); with "
            "d >= n - 1 the components reproduce every centred training image exactly, no "
            "variance is left for the noise and the fit is degenerate"
        )


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
        Number of components: :meth:`fit` needs ``d < n - 1`` and ``d < D`` (keep d well
        below the number of images; with ``d >= n - 1`` the components reproduce every
        centred image exactly and no variance is left for the noise).

    Attributes
    ----------
    mean : array (D,)
    components : array (d, D)
    explained_variance : array (d,)
        Variance of the data along each component, ``s^2 / (n - 1)`` (``s^2`` if n = 1).
    noise_variance : float
        The mean variance left in the ``D - d`` discarded directions: the noise variance of
        probabilistic PCA (Tipping and Bishop), used by :func:`pca_complete` as the prior of
        the coefficients (0 only for data lying exactly in a d-dimensional affine subspace).
    shape : tuple
        Shape of one example, ``Y.shape[1:]``.
    n_examples : int
        Number of examples fitted to.
    """

    def __init__(self, d: int) -> None:
        self.d = _check_positive_int(d, "d", "PCA")
        self.mean: Any = None
        self.components: Any = None
        self.explained_variance: Any = None
        self.noise_variance: float = 0.0
        self.shape: tuple[int, ...] | None = None
        self.n_examples: int | None = None

    def fit(self, Y: Any) -> PCA:
        """Fit to ``Y (n, ...)``, one example per row after flattening. Returns self."""
        owner = "PCA.fit"
        if Y.ndim < 2:
            raise ValueError(f"{owner}: Y must be (n, ...) with one example per row, got {Y.shape}")
        n, D = Y.shape[0], int(np.prod(Y.shape[1:]))
        _check_rank(self.d, n, D, owner)
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
        self.n_examples = n
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
    if pca.n_examples is not None:
        _check_rank(pca.d, pca.n_examples, int(np.prod(pca.shape)), owner)
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
        Number of components; needs ``d < n - 1`` and ``d < D`` (keep d well below the
        number of images).
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
    d = _check_positive_int(d, "d", owner)
    iters = _check_positive_int(iters, "iters", owner)
    if init not in ("mean", "neighbour"):
        raise ValueError(f"{owner}: init must be 'mean' or 'neighbour', got {init!r}")
    xp = get_array_module(Y_obs)
    m = _broadcast_mask(mask, Y_obs, owner)
    _check_rank(d, Y_obs.shape[0], int(np.prod(Y_obs.shape[1:])), owner)
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
# probabilistic PCA with missing values, by EM
# --------------------------------------------------------------------------------------------------


def _triu_pairs(k: int, xp: Any = np) -> tuple[Any, Any]:
    """Row and column indices of the upper triangle (diagonal included) of a ``k x k`` matrix."""
    rows, cols = np.triu_indices(k)
    return xp.asarray(rows), xp.asarray(cols)


def _symmetric_from_triu(flat: Any, k: int, rows: Any, cols: Any) -> Any:
    """``(B, k (k + 1) / 2)`` upper-triangle entries -> the ``(B, k, k)`` symmetric matrices."""
    xp = get_array_module(flat)
    out = xp.zeros((flat.shape[0], k, k), dtype=flat.dtype)
    out[:, rows, cols] = flat
    out[:, cols, rows] = flat
    return out


class PPCAMissing:
    """Probabilistic PCA fitted by EM to images with missing pixels.

    The linear factor model of Tipping and Bishop (1999), the linear special case of the
    generator model::

        y = W z + mu + eps,      z ~ N(0, I_d),   eps ~ N(0, sigma2 I_D)

    fitted by maximum likelihood of the *observed* pixels only (Ilin and Raiko 2010,
    "Practical approaches to principal component analysis in the presence of missing
    values", JMLR 11). With ``o`` the observed pixels of image ``i`` and ``W_o``,
    ``mu_o`` the rows of ``W``, ``mu`` for them, each iteration is:

    **E-step** (the posterior of z_i given the observed pixels)::

        M_i     = sigma2 I_d + W_o^T W_o                      (d, d)
        E[z_i]  = M_i^-1 W_o^T (y_o - mu_o)                   (d,)
        Cov[z_i] = sigma2 M_i^-1

    **M-step** (exact maximisation of the expected complete-data log-likelihood): for each
    pixel ``j``, with ``I_j`` the images that observe it and ``t_i = (E[z_i], 1)``, its row
    ``(W_j, mu_j)`` solves the ``(d + 1) x (d + 1)`` system ::

        sum_{i in I_j} E[t_i t_i^T] (W_j, mu_j) = sum_{i in I_j} y_ij E[t_i]

    (``E[t t^T]`` holds ``Cov[z_i] + E[z_i] E[z_i]^T``; the systems of all pixels are formed
    by two matrix products and solved in one batched solve), then ::

        sigma2 = 1 / |O| sum_{(i, j) in O} [ (y_ij - W_j E[z_i] - mu_j)^2 + W_j Cov[z_i] W_j^T ]

    over the set ``O`` of all observed entries. EM never lowers the observed-data
    log-likelihood (recorded in :attr:`log_likelihood_`)::

        log p(y_o) = -1/2 [ |o| log(2 pi) + (|o| - d) log sigma2 + log det M_i
                            + (r^T r - b^T M_i^-1 b) / sigma2 ],   r = y_o - mu_o,  b = W_o^T r

    (the Gaussian ``N(mu_o, W_o W_o^T + sigma2 I)`` by the matrix determinant lemma and
    Woodbury's identity). With every pixel observed the fit is ordinary probabilistic PCA,
    whose maximum-likelihood solution is known in closed form: ``sigma2`` is the mean of the
    ``D - d`` smallest eigenvalues of the sample covariance ``S = 1/n sum (y - mu)(y - mu)^T``
    and ``W = U_d (Lam_d - sigma2 I)^(1/2) R`` spans its top ``d`` eigenvectors.

    Parameters
    ----------
    d : int
        Number of factors; needs ``d < n - 1`` and ``d < D`` (keep d well below the number
        of images).
    iterations : int
        Most EM iterations.
    tol : float
        Stop when an iteration raises the log-likelihood by at most ``tol * |log-likelihood|``.
    init : {'pca', 'random'}
        Start from PCA of the mean-filled data (each missing pixel set to its mean over the
        images that observe it; this is the maximum-likelihood solution when nothing is
        missing), or from a random ``W`` (drawn with ``seed``) and the mean-filled ``mu``.
    seed : int
        Seed of the random start.

    Attributes
    ----------
    mean_ : array (D,)
    W_ : array (D, d)
    noise_variance_ : float > 0
        ``sigma2`` (kept above ``1e-10`` times the mean variance of the observed pixels, so
        that data lying exactly in a ``d``-dimensional subspace do not divide by zero).
    n_iter_ : int
        EM iterations run.
    log_likelihood_ : list of float
        Observed-data log-likelihood (natural log, summed over the images): entry 0 at the
        start, entry ``k`` after ``k`` iterations (``n_iter_ + 1`` entries, non-decreasing).
    shape_ : tuple
        Shape of one image, ``Y.shape[1:]``.

    Notes
    -----
    Cost per iteration: two products of ``(n, D)`` by ``(D, (d + 1)(d + 2) / 2)`` matrices (the
    per-image ``W_o^T W_o`` and the per-pixel sums; symmetric matrices are formed from
    their upper triangles), ``n`` inversions of ``d x d`` and ``D`` solves of
    ``(d + 1) x (d + 1)`` matrices. Computed in float64; arrays stay on the device of the
    data (NumPy or CuPy).
    """

    def __init__(
        self,
        d: int,
        iterations: int = 100,
        tol: float = 1e-6,
        init: str = "pca",
        seed: int = 0,
    ) -> None:
        owner = "PPCAMissing"
        self.d = _check_positive_int(d, "d", owner)
        self.iterations = _check_positive_int(iterations, "iterations", owner, minimum=0)
        if not float(tol) >= 0:
            raise ValueError(f"{owner}: tol must be >= 0, got {tol!r}")
        self.tol = float(tol)
        if init not in ("pca", "random"):
            raise ValueError(f"{owner}: init must be 'pca' or 'random', got {init!r}")
        self.init = init
        self.seed = int(seed)
        self.mean_: Any = None
        self.W_: Any = None
        self.noise_variance_: float = 0.0
        self.n_iter_: int = 0
        self.log_likelihood_: list[float] = []
        self.shape_: tuple[int, ...] | None = None

    def __repr__(self) -> str:
        fitted = "not fitted" if self.W_ is None else f"sigma2={self.noise_variance_:.4g}"
        return f"PPCAMissing(d={self.d}, iterations={self.iterations}, {fitted})"

    # -- data in ---------------------------------------------------------------------------------
    def _data(self, Y: Any, mask: Any, owner: str) -> tuple[Any, Any]:
        """``(X, m)``: the images as float64 ``(n, D)`` with 0 on missing entries, the mask."""
        if not hasattr(Y, "shape") or Y.ndim < 2:
            raise ValueError(
                f"{owner}: Y must be an array (n, ...) with one image per row, got "
                f"{getattr(Y, 'shape', type(Y).__name__)}"
            )
        xp = get_array_module(Y)
        m = _broadcast_mask(mask, Y, owner)
        n = Y.shape[0]
        m = m.reshape(n, -1)
        X = xp.where(m, xp.asarray(Y, dtype=np.float64).reshape(n, -1), 0.0)  # missing never read
        return X, m

    # -- the E-step ------------------------------------------------------------------------------
    def _posterior(
        self, X: Any, mf: Any, mu: Any, W: Any, s2: float, G: Any = None
    ) -> tuple[Any, Any, Any]:
        """The E-step: ``(E[z] (n, d), M^-1 (n, d, d), log-likelihood of each image (n,))``.

        ``mf``: the mask as 0.0 / 1.0 ``(n, D)``; ``G``: the upper triangles of
        ``W_o^T W_o`` of each image ``(n, d (d + 1) / 2)`` when already at hand.
        """
        xp = get_array_module(X)
        d = W.shape[1]
        rows, cols = _triu_pairs(d, xp)
        if G is None:
            G = mf @ (W[:, rows] * W[:, cols])  # (n, d(d+1)/2), from the W_j W_j^T of (D, ...)
        M = _symmetric_from_triu(G, d, rows, cols)  # (n, d, d): W_o^T W_o
        M += s2 * xp.eye(d)
        R = X - mf * mu  # (n, D): y_o - mu_o, 0 elsewhere (X is 0 there)
        b = R @ W  # (n, d): W_o^T (y_o - mu_o)
        L = xp.linalg.cholesky(M)  # (n, d, d), M = L L^T
        Minv = xp.linalg.inv(M)  # (n, d, d)
        Ez = (Minv @ b[:, :, None])[:, :, 0]  # (n, d)
        logdet = 2 * xp.log(xp.diagonal(L, axis1=1, axis2=2)).sum(axis=1)  # (n,)
        count = mf.sum(axis=1)  # (n,) |o|
        quad = ((R * R).sum(axis=1) - (b * Ez).sum(axis=1)) / s2
        ll = -0.5 * (count * np.log(2 * np.pi) + (count - d) * np.log(s2) + logdet + quad)
        return Ez, Minv, ll

    # -- fitting ---------------------------------------------------------------------------------
    def fit(self, Y: Any, mask: Any) -> PPCAMissing:
        """Fit by EM to images ``Y (n, ...)`` observed where ``mask`` is 1 / True. Returns self.

        Parameters
        ----------
        Y : array (n, ...)
            Training images (e.g. in ``[-1, 1]``); missing entries are never read (NaN is fine).
        mask : bool or 0/1 array, broadcastable to Y with as many axes (e.g. (n, 1, H, W))
            1 / True where observed; all ones gives ordinary probabilistic PCA.
        """
        owner = "PPCAMissing.fit"
        X, m = self._data(Y, mask, owner)
        xp = get_array_module(X)
        n, D = X.shape
        d = self.d
        _check_rank(d, n, D, owner)
        mf = m.astype(np.float64)
        seen = mf.sum(axis=0)  # (D,) images observing each pixel
        total = float(seen.sum())
        if total == 0:
            raise ValueError(f"{owner}: the mask observes no pixel at all")
        overall = float(X.sum()) / total
        mu = xp.where(seen > 0, X.sum(axis=0) / xp.maximum(seen, 1), overall)  # (D,)
        var = float(xp.where(m, (X - mu) ** 2, 0.0).sum()) / total  # mean observed variance
        floor = 1e-10 * max(var, np.finfo(np.float64).tiny)

        # start: PCA of the mean-filled data, or a random W
        Xc = xp.where(m, X - mu, 0.0)  # (n, D) centred, missing at the mean
        if self.init == "pca":
            if D <= n:
                lam, V = xp.linalg.eigh(Xc.T @ Xc / n)  # ascending
            else:  # the small Gram matrix: Xc Xc^T = Q lam Q^T, eigenvectors Xc^T Q / sqrt(n lam)
                lam, Q = xp.linalg.eigh(Xc @ Xc.T / n)
                V = Xc.T @ Q / xp.sqrt(xp.maximum(lam, floor) * n)[None, :]
            lam, V = lam[::-1], V[:, ::-1]  # descending
            s2 = max(float(xp.maximum(lam[d:], 0).sum()) / (D - d), floor)
            W = V[:, :d] * xp.sqrt(xp.maximum(lam[:d] - s2, floor))[None, :]
        else:
            rng = np.random.default_rng(self.seed)
            W = xp.asarray(rng.standard_normal((D, d))) * np.sqrt(max(var, floor) / d)
            s2 = max(var, floor)

        k = d + 1
        rows, cols = _triu_pairs(k, xp)  # of the (d + 1) x (d + 1) systems
        r_d, c_d = _triu_pairs(d, xp)  # of the d x d matrices
        twice = xp.where(r_d == c_d, 1.0, 2.0)  # off-diagonal entries count twice
        in_d = xp.asarray(np.nonzero(np.triu_indices(k)[1] < d)[0])  # entries of the d x d block
        Ez, Minv, ll = self._posterior(X, mf, mu, W, s2)
        history = [float(ll.sum())]
        for _ in range(self.iterations):
            # M-step: per-pixel (d+1) x (d+1) systems in (W_j, mu_j), from upper triangles
            T = xp.concatenate([Ez, xp.ones((n, 1))], axis=1)  # (n, k): E[t_i]
            Cz = s2 * Minv[:, r_d, c_d]  # (n, d(d+1)/2): Cov[z_i]
            Ett = T[:, rows] * T[:, cols]  # (n, k(k+1)/2): E[t_i] E[t_i]^T
            Ett[:, in_d] += Cz  # + Cov[z_i]
            A = _symmetric_from_triu(mf.T @ Ett, k, rows, cols)  # (D, k, k)
            c = X.T @ T  # (D, k): sum_{i in I_j} y_ij E[t_i]
            unseen = seen == 0  # never observed: W_j = 0, mu_j = the overall mean
            if bool(unseen.any()):
                A[unseen] = xp.eye(k)
                c[unseen] = 0.0
                c[unseen, d] = overall
            sol = xp.linalg.solve(A, c[:, :, None])[:, :, 0]  # (D, k)
            W, mu = sol[:, :d], sol[:, d]
            # sigma2: expected squared error of the observed entries,
            # sum_{(i, j) in O} [(y_ij - W_j E[z_i] - mu_j)^2 + W_j Cov_i W_j^T]
            err = X - mf * (Ez @ W.T + mu)  # (n, D), 0 on missing entries
            G = mf @ (W[:, r_d] * W[:, c_d])  # (n, d(d+1)/2): W_o^T W_o with the new W
            trace_term = float((G * Cz * twice).sum())  # sum_i <W_o^T W_o, Cov_i>
            s2 = max((float((err * err).sum()) + trace_term) / total, floor)
            # E-step with the new parameters (and the log-likelihood they reach)
            Ez, Minv, ll = self._posterior(X, mf, mu, W, s2, G)
            history.append(float(ll.sum()))
            if history[-1] - history[-2] <= self.tol * abs(history[-1]):
                break
        self.mean_, self.W_, self.noise_variance_ = mu, W, float(s2)
        self.n_iter_ = len(history) - 1
        self.log_likelihood_ = history
        self.shape_ = tuple(Y.shape[1:])
        return self

    # -- using a fitted model --------------------------------------------------------------------
    def complete(self, Y: Any, mask: Any) -> Any:
        """Fill the missing pixels with the posterior mean of the model.

        For each image, ``E[z]`` given its observed pixels (the E-step above, with the fitted
        ``W``, ``mu``, ``sigma2``), then ::

            y_hat_missing = mu + W E[z]     (on the missing pixels)
            y_hat_observed = y_observed     (as given)

        Works for the training images and for held-out ones alike (W fixed).

        Parameters
        ----------
        Y : array (N, *shape_)
            Missing entries are never read.
        mask : bool or 0/1 array broadcastable to Y, 1 / True = observed

        Returns
        -------
        Y_hat : array (N, *shape_), the dtype of Y (float64 for integer input)
        """
        owner = "PPCAMissing.complete"
        if self.W_ is None:
            raise ValueError(f"{owner}: this model is not fitted yet; call fit(Y, mask) first")
        if not hasattr(Y, "shape") or tuple(Y.shape[1:]) != self.shape_:
            raise ValueError(
                f"{owner}: images of shape {tuple(getattr(Y, 'shape', ())[1:])} do not match the "
                f"fitted shape {self.shape_}"
            )
        X, m = self._data(Y, mask, owner)
        xp = get_array_module(X)
        # the model's arrays on the data's device (fitted on the GPU, it completes host images too)
        mu, W = (to_device(a, device_of(X)) for a in (self.mean_, self.W_))
        Ez, _, _ = self._posterior(X, m.astype(np.float64), mu, W, self.noise_variance_)
        est = xp.where(m, X, Ez @ W.T + mu)  # (N, D)
        dtype = Y.dtype if Y.dtype.kind == "f" else np.float64
        return est.reshape(Y.shape).astype(dtype, copy=False)

    def fit_complete(self, Y: Any, mask: Any) -> Any:
        """:meth:`fit` to ``(Y, mask)``, then :meth:`complete` the same images: the recovery of
        the occluded training pixels. Returns ``Y_hat`` of Y's shape."""
        return self.fit(Y, mask).complete(Y, mask)


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
# total-variation inpainting
# --------------------------------------------------------------------------------------------------


def _forward_grad(u: Any) -> tuple[Any, Any]:
    """Forward differences with a zero difference past the last column / row: (N, C, H, W) x 2."""
    xp = get_array_module(u)
    gx = xp.zeros_like(u)
    gy = xp.zeros_like(u)
    gx[..., :, :-1] = u[..., :, 1:] - u[..., :, :-1]
    gy[..., :-1, :] = u[..., 1:, :] - u[..., :-1, :]
    return gx, gy


def _divergence(px: Any, py: Any) -> Any:
    """``-K^T (px, py)`` for ``K`` = :func:`_forward_grad` (the discrete divergence)."""
    xp = get_array_module(px)
    div = xp.zeros_like(px)
    div[..., :, :-1] += px[..., :, :-1]
    div[..., :, 1:] -= px[..., :, :-1]
    div[..., :-1, :] += py[..., :-1, :]
    div[..., 1:, :] -= py[..., :-1, :]
    return div


def total_variation(u: Any) -> Any:
    """Isotropic total variation of each image and channel: ``(N, C, H, W)`` -> ``(N, C)``.

    ::

        TV(u) = sum_{y, x} sqrt( (u[y, x+1] - u[y, x])^2 + (u[y+1, x] - u[y, x])^2 )

    with a zero difference past the last column and the last row.
    """
    xp = get_array_module(u)
    gx, gy = _forward_grad(u)
    return xp.sqrt(gx * gx + gy * gy).sum(axis=(-2, -1))


def tv_inpaint(
    Y: Any,
    mask: Any,
    iterations: int = 500,
    tol: float = 1e-5,
    init: str = "neighbour",
    check_every: int = 10,
    chunk: int | None = None,
) -> Any:
    """Fill occluded pixels by total-variation minimisation (the l1 Markov-random-field prior).

    For each channel of each image ::

        u* = argmin_u  TV(u) = sum_p |grad u (p)|_2     subject to  u_p = y_p  where observed

    with :func:`total_variation`'s forward differences (isotropic: the gradient's Euclidean
    norm). Where harmonic interpolation (:func:`neighbour_fill`, the l2 prior) spreads an
    edge across a hole, the l1 prior lets it continue sharply through it.

    Solved by the primal-dual algorithm of Chambolle and Pock (2011) on
    ``min_u F(K u) + G(u)`` with ``K = grad``, ``F(q) = sum_p |q_p|_2`` (whose conjugate is the
    indicator of the unit ball at every pixel) and ``G`` the indicator of the observed values::

        p      <- p + s K u_bar,  then  p_p <- p_p / max(1, |p_p|)      (projection on |p_p| <= 1)
        u_new  <- u + t div p,    then  u_new <- y on the observed pixels (projection on G)
        u_bar  <- 2 u_new - u

    with ``s = t = 0.99 / sqrt(8)`` (``s t ||K||^2 < 1``, ``||K||^2 <= 8``). Every step is
    elementwise or a shifted difference, batched over all images and channels.

    Parameters
    ----------
    Y : array (N, C, H, W)
        Images; occluded pixels are never read.
    mask : bool array broadcastable to Y, e.g. (N, 1, H, W)
        True where observed. Every image must have at least one observed pixel.
    iterations : int
        Most primal-dual iterations.
    tol : float
        Stop when no pixel moved by more than ``tol`` over the last ``check_every``
        iterations.
    init : {'neighbour', 'mean'}
        Start from :func:`neighbour_fill` (the harmonic fill; close to the answer in smooth
        regions, so fewer iterations) or from each slice's mean observed value.
    check_every : int
        Iterations between two convergence checks (each check synchronises a GPU).

    Notes
    -----
    The iterates converge at the rate ``O(1 / k)`` and oscillate about the answer: a large
    hole (say a quarter of a 20 x 20 image) may need more than the default 500 iterations
    to settle to ``tol``; starting from the harmonic fill helps.
    chunk : int, optional
        Images solved together (each chunk runs until it converges; bounds the memory of
        the eight image-sized work arrays). Default: all of them.

    Returns
    -------
    Y_filled : array (N, C, H, W), the dtype of Y
        Observed pixels exactly as given, occluded ones from the minimiser. The iterations
        run in Y's precision (at least float32).
    """
    owner = "tv_inpaint"
    if not hasattr(Y, "ndim") or Y.ndim != 4:
        raise ValueError(
            f"{owner}: Y must be images (N, C, H, W), got shape {getattr(Y, 'shape', None)}"
        )
    iterations = _check_positive_int(iterations, "iterations", owner, minimum=0)
    check_every = _check_positive_int(check_every, "check_every", owner)
    if not float(tol) >= 0:
        raise ValueError(f"{owner}: tol must be >= 0, got {tol!r}")
    if init not in ("neighbour", "mean"):
        raise ValueError(f"{owner}: init must be 'neighbour' or 'mean', got {init!r}")
    m = _broadcast_mask(mask, Y, owner)
    xp = get_array_module(Y)
    N, C = Y.shape[:2]
    observed_per_slice = m.reshape(N, C, -1).sum(axis=2)  # (N, C)
    if bool((observed_per_slice == 0).any()):
        empty = sorted({int(i) for i in to_numpy(xp.nonzero(observed_per_slice == 0)[0])})
        raise ValueError(f"{owner}: images {empty} have no observed pixel to inpaint from")
    dtype = np.result_type(Y.dtype, np.float32)
    y = xp.where(m, xp.asarray(Y, dtype=dtype), dtype.type(0))  # occluded pixels never read
    if init == "neighbour":
        u0 = neighbour_fill(y, m).astype(dtype, copy=False)
    else:
        start = y.sum(axis=(2, 3), keepdims=True) / observed_per_slice[:, :, None, None]
        u0 = xp.where(m, y, start.astype(dtype))
    chunk = N if chunk is None else _check_positive_int(chunk, "chunk", owner)
    out = xp.empty(Y.shape, dtype=dtype)
    for lo in range(0, N, chunk):
        hi = min(N, lo + chunk)
        out[lo:hi] = _chambolle_pock_inpaint(u0[lo:hi], m[lo:hi], iterations, tol, check_every)
    return xp.where(m, Y, out.astype(Y.dtype, copy=False))


def _chambolle_pock_inpaint(u: Any, m: Any, iterations: int, tol: float, check_every: int) -> Any:
    """The iterations of :func:`tv_inpaint` from ``u`` (observed pixels already in place)."""
    xp = get_array_module(u)
    dtype = u.dtype
    step = dtype.type(0.99 / np.sqrt(8.0))  # s = t, s t ||K||^2 < 1
    free = (~m).astype(dtype)  # 1 on occluded pixels: the projection on G keeps the others
    u = u.copy()
    u_bar = u.copy()
    u_new = xp.empty_like(u)
    px, py = xp.zeros_like(u), xp.zeros_like(u)  # the dual variable
    gx, gy = xp.zeros_like(u), xp.zeros_like(u)  # K u_bar; gx[..., -1] = gy[..., -1, :] = 0
    div = xp.empty_like(u)
    u_check = u.copy()
    for k in range(1, iterations + 1):
        # p <- proj_{|p| <= 1}(p + s K u_bar)
        xp.subtract(u_bar[..., :, 1:], u_bar[..., :, :-1], out=gx[..., :, :-1])
        xp.subtract(u_bar[..., 1:, :], u_bar[..., :-1, :], out=gy[..., :-1, :])
        gx *= step
        gy *= step
        px += gx
        py += gy
        norm = xp.hypot(px, py, out=gx)  # gx, gy are free until the next iteration
        xp.maximum(norm, dtype.type(1), out=norm)
        px /= norm
        py /= norm
        # u_new <- proj_G(u + t div p): only the occluded pixels move
        div[...] = 0
        div[..., :, :-1] += px[..., :, :-1]
        div[..., :, 1:] -= px[..., :, :-1]
        div[..., :-1, :] += py[..., :-1, :]
        div[..., 1:, :] -= py[..., :-1, :]
        div *= free
        div *= step
        xp.add(u, div, out=u_new)
        # u_bar <- 2 u_new - u = u_new + t div
        xp.add(u_new, div, out=u_bar)
        u, u_new = u_new, u
        if k % check_every == 0:
            # the largest move over the last check_every iterations (the iterates oscillate
            # about the answer, so one iteration's move would understate the distance to it)
            if float(xp.abs(u - u_check).max()) <= tol:
                break
            u_check[...] = u
    return u


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
