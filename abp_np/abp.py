"""Alternating back-propagation (Han, Lu, Zhu, Wu, AAAI 2017), read next to the paper.

The equations are numbered (1)-(6) on this page and cited by number in the code below.

The model (1), a non-linear factor analysis::

    Y = f(Z; W) + eps,      Z ~ N(0, I_d),      eps ~ N(0, sigma^2 I_D)

Complete-data log-likelihood of n examples, up to a constant (2)::

    L(W, {Z_i}) = - sum_i [ ||Y_i - f(Z_i; W)||^2 / (2 sigma^2) + ||Z_i||^2 / 2 ]

Its two gradients, (3) in Z and (4) in W::

    dL/dZ_i = (1/sigma^2) (Y_i - f(Z_i; W)) df/dZ_i - Z_i
    dL/dW   = sum_i (1/sigma^2) (Y_i - f(Z_i; W)) df/dW

both come out of ONE backward pass of the generator with the residual
(Y - f) / sigma^2 injected at its output: :meth:`Generator.backward` returns dL/dZ and,
when asked (``need_param_grads=True``), also fills dL/dW. The algorithm alternates:

1. **Inferential back-propagation** (:meth:`ABP.langevin`): l steps of Langevin dynamics
   on every Z_i, warm-started from the Z_i of the previous iteration (one persistent chain
   per training example)::

       Z <- Z + (delta^2 / 2) dL/dZ + delta U,        U ~ N(0, I_d)          (5)

   Without the noise this is gradient ascent on L in Z.
2. **Learning back-propagation** (:meth:`ABP.learn`): one optimiser step on W with the
   Z_i just inferred (6): with plain gradient ascent W <- W + lr (1/n) dL/dW, the
   gradient (4) averaged over the n examples of the batch; :mod:`abp_np.optim` adds the
   paper's momentum, weight decay, learning-rate multipliers and gradient clipping.

With a linear observation model A (:mod:`abp_np.observation`: occluded pixels, random
projections) Y - f becomes the residual y_obs - A f and the injected gradient
A^T (y_obs - A f) / sigma^2.

Sign convention: the optimisers *descend*. :meth:`ABP.learn` injects the gradient of
J(W) = -L/n at the output, so the layers' ``grads`` hold dJ/dW = minus the paper's
"per example summed over pixels, averaged over the batch, times 1/sigma^2" gradient,
and a descent step on J is an ascent step on L (see :mod:`abp_np.optim`).

Where each equation is in the code below:

=====================  =====================================================================
(2) L                  :meth:`ABP.log_likelihood`
(3) dL/dZ              :meth:`ABP.log_likelihood_grad_z`; its data term :meth:`ABP._grad_z_data`
(5) one Langevin step  :meth:`ABP._langevin_step` (the loop: :meth:`ABP._langevin_loop`)
(4), (6) learning      :meth:`ABP._learn_step` (one backward pass, then the optimiser's step)
one iteration          :meth:`ABP._alternate` ((5) then (6), W fixed across both)
using a learned model  :meth:`ABP.infer`, :meth:`ABP.reconstruct`, :meth:`ABP.sample`
=====================  =====================================================================

``demos/walkthrough.py`` writes one whole iteration in a few lines with nothing hidden and
checks this module against it. The training run around the algorithm (mini-batches,
rollback, divergence messages, checkpoints, logs, Ctrl-C, out-of-memory handling) is
:func:`abp_np.training.fit`, which :meth:`ABP.fit` calls.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from .backend import (
    check_count,
    get_array_module,
    is_device_out_of_memory,
    out_of_memory_error,
    resolve_device,
    to_numpy,
)
from .fast import routes
from .observation import Complete, Observation
from .optim import SGD, Optimizer
from .training import DivergenceError  # the run's error, defined with the run

__all__ = ["ABP", "DivergenceError", "LearnStats"]

_CHAINS = ("persistent", "restart")
_INITS = ("zeros", "normal")


class LearnStats(NamedTuple):
    """What one learning step measures on its batch, before the update: four sums.

    Device scalars (float64) from :meth:`ABP._learn_step`; sums rather than means, so that
    a run adds them up over the batches of an iteration and divides once.

    Attributes
    ----------
    data_energy : scalar
        sum_i ||y_i - A f(z_i)||^2 / (2 sigma^2), the data term of -L (2).
    prior_energy : scalar
        sum_i ||z_i||^2 / 2, the prior term of -L (2).
    abs_residual : scalar
        Sum of |y - A f| over the observed entries.
    observed : scalar
        Number of observed entries.
    """

    data_energy: Any
    prior_energy: Any
    abs_residual: Any
    observed: Any

    def means(self, n: int) -> dict[str, float]:
        """The per-example means of n examples, as :meth:`ABP.learn` reports them.

        ``recon_error`` (mean |y - A f| / 2 over observed entries), ``data_energy`` and
        ``prior_energy`` (sums / n); host floats.
        """
        return {
            "recon_error": float(self.abs_residual / self.observed) / 2,
            "data_energy": float(self.data_energy) / n,
            "prior_energy": float(self.prior_energy) / n,
        }


def _langevin_kernel(z: Any) -> Any:
    """The fused update of (5) for ``z`` from the route table (:mod:`abp_np.fast.routes`), or
    None for the code of :meth:`ABP._langevin_step`."""
    return routes.choose("langevin_step", z).run


class ABP:
    """Alternating back-propagation for a generator network.

    Parameters
    ----------
    generator : Generator
        f(Z; W); its ``latent_shape`` is the shape of one Z.
    sigma : float
        Noise standard deviation of the model (paper: 0.3).
    langevin_steps : int
        l, Langevin steps per iteration (paper: 10 for textures and sound, 30 for objects).
    step_size : float
        delta, the Langevin step size (paper: 0.3; 0.1 for sound; 0.05 for larger data sets,
        with a learning rate of about 6e-5 decayed by 0.99 per epoch).
    noise : bool
        True: Langevin dynamics; False: plain gradient ascent on Z.
    chains : {'persistent', 'restart'}
        'persistent' (the paper): each example keeps its Z across iterations (warm start).
        'restart': Z is drawn afresh (per ``init_z``) before each inference (short-run).
    init_z : {'zeros', 'normal'}
        Initial Z of the chains (paper: zeros for objects and sound, N(0, I) for textures).
    optimizer : Optimizer, optional
        Default: :class:`abp_np.optim.SGD` with the paper's settings.
    observation : Observation, optional
        Default :class:`abp_np.observation.Complete`; may be overridden per call.
    lr_decay : float
        The learning rate of iteration k (0-based) is ``initial_lr * lr_decay ** k``
        (paper, larger data sets: 0.99 per epoch; one iteration is one epoch). 1: none.
    seed : int, optional
        Seed of a fresh random generator (``numpy.random.default_rng(seed)``).
    rng : numpy.random.Generator, optional
        Or the generator itself. It shuffles the data, draws the initial Z and, on the
        CPU, the Langevin noise. On the GPU the noise comes from a CuPy generator seeded
        from it. No hidden global random state is used.
    cuda_graph : bool
        GPU only: run the Langevin loop as one captured CUDA graph
        (:mod:`abp_np.fast.cuda_graph`), replayed at every call, instead of launching its kernels
        one by one from Python. The same arithmetic; it pays where launches dominate (small
        networks and batches). Off by default. Ignored on the CPU.

    Attributes
    ----------
    Z : array (n, *latent_shape) or None
        The persistent chains of :meth:`fit`, one per training example, by example index.
    iteration : int
        Number of completed training iterations.
    """

    #: The learning step's sums (:class:`LearnStats`), as the training run builds them.
    LearnStats = LearnStats

    def __init__(
        self,
        generator: Any,
        sigma: float = 0.3,
        langevin_steps: int = 10,
        step_size: float = 0.3,
        noise: bool = True,
        chains: str = "persistent",
        init_z: str = "zeros",
        optimizer: Optimizer | None = None,
        observation: Observation | None = None,
        lr_decay: float = 1.0,
        seed: int | None = None,
        rng: Any = None,
        cuda_graph: bool = False,
    ) -> None:
        if not hasattr(generator, "backward") or not hasattr(generator, "latent_shape"):
            raise ValueError(f"ABP: generator must be an abp_np Generator, got {type(generator)}")
        if seed is not None and rng is not None:
            raise ValueError("ABP: give seed or rng, not both")
        if rng is not None and not isinstance(rng, np.random.Generator):
            raise ValueError(f"ABP: rng must be a numpy.random.Generator, got {type(rng).__name__}")
        if optimizer is not None and not isinstance(optimizer, Optimizer):
            raise ValueError(f"ABP: optimizer must be an abp_np.optim Optimizer, got {optimizer!r}")
        if observation is not None and not isinstance(observation, Observation):
            raise ValueError(f"ABP: observation must be an abp_np Observation, got {observation!r}")
        self.generator = generator
        self.sigma = _positive(sigma, "sigma")
        self.langevin_steps = _count(langevin_steps, "langevin_steps")
        self.step_size = _nonnegative(step_size, "step_size")
        self.noise = bool(noise)
        self.chains = _choice(chains, _CHAINS, "chains")
        self.init_z = _choice(init_z, _INITS, "init_z")
        self.lr_decay = _positive(lr_decay, "lr_decay")
        self.optimizer = optimizer if optimizer is not None else SGD()
        self.observation = observation if observation is not None else Complete()
        self.rng = rng if rng is not None else np.random.default_rng(seed)
        self._device_rng: Any = None  # CuPy generator for the GPU's Langevin noise
        self.cuda_graph = bool(cuda_graph)
        self._graphs: dict[tuple, Any] = {}  # graph_key -> LangevinGraph, latest last
        self.Z: Any = None
        self.iteration = 0
        self.last_checkpoint: str | None = None

    # -- small helpers -----------------------------------------------------------------------------
    @property
    def device(self) -> str:
        return self.generator.device

    @property
    def xp(self) -> Any:
        return resolve_device(self.device)

    @property
    def dtype(self) -> np.dtype:
        return self.generator.dtype

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return self.generator.latent_shape

    @property
    def image_shape(self) -> tuple[int, ...]:
        """Shape of one generated example, f(Z) without the batch axis."""
        return self.generator.output_shape()

    def settings(self) -> dict[str, Any]:
        """The algorithm's settings, as a JSON-able dict (stored in checkpoints)."""
        return {
            "sigma": self.sigma,
            "langevin_steps": self.langevin_steps,
            "step_size": self.step_size,
            "noise": self.noise,
            "chains": self.chains,
            "init_z": self.init_z,
            "lr_decay": self.lr_decay,
        }

    def noise_rng(self) -> Any:
        """The generator that draws Langevin noise on the current device."""
        if self.device == "cpu":
            return self.rng
        if self._device_rng is None:
            self._device_rng = self.xp.random.default_rng(int(self.rng.integers(2**63)))
        return self._device_rng

    def _standard_normal(self, shape: tuple[int, ...], rng: Any = None) -> Any:
        rng = rng if rng is not None else self.noise_rng()
        return rng.standard_normal(shape, dtype=self.dtype)

    def _initial_z(self, n: int, init: str | None = None, rng: Any = None) -> Any:
        """Z of ``n`` fresh chains: zeros or N(0, I) draws, shape (n, *latent_shape)."""
        shape = (n, *self.latent_shape)
        if (init or self.init_z) == "zeros":
            return self.xp.zeros(shape, dtype=self.dtype)
        return self._standard_normal(shape, rng)

    def _on_device(self, x: Any, name: str) -> Any:
        """``x`` on the generator's device (a host copy moves once, before any loop)."""
        xp = self.xp
        if get_array_module(x) is not xp:
            x = xp.asarray(x)
        return x

    def _prepare_data(
        self, y: Any, observation: Observation | None, owner: str, check_finite: bool = True
    ) -> tuple[Any, Observation]:
        """Validate data ``y`` against the observation model and the generator; move both."""
        obs = observation if observation is not None else self.observation
        if not isinstance(obs, Observation):
            raise ValueError(f"{owner}: observation must be an abp_np Observation, got {obs!r}")
        if not hasattr(y, "shape") or not hasattr(y, "dtype"):
            raise ValueError(f"{owner}: data must be a NumPy or CuPy array, got {type(y).__name__}")
        obs.check(y, self.image_shape, owner)
        if y.dtype != self.dtype:
            raise ValueError(
                f"{owner}: data dtype is {y.dtype} but the generator is {self.dtype}; convert with "
                f"Y.astype('{self.dtype}')"
            )
        if y.shape[0] < 1:
            raise ValueError(f"{owner}: data hold no example (shape {tuple(y.shape)})")
        y = self._on_device(y, "data")
        obs = obs.like(y)
        if check_finite and not bool(obs.finite(y)):
            raise ValueError(
                f"{owner}: the (observed) data contain NaN or inf; mark missing pixels with "
                "observation=Masked(mask) instead"
            )
        return y, obs

    def _check_z(self, z: Any, n: int, owner: str) -> Any:
        shape = (n, *self.latent_shape)
        if not hasattr(z, "shape") or tuple(z.shape) != shape:
            raise ValueError(
                f"{owner}: z must have shape {shape} (one latent per example), got "
                f"{getattr(z, 'shape', type(z).__name__)}"
            )
        if z.dtype != self.dtype:
            raise ValueError(f"{owner}: z dtype is {z.dtype}, expected {self.dtype}")
        return self._on_device(z, "z")

    # -- the log-likelihood and its gradient in Z --------------------------------------------------
    def log_likelihood(self, z: Any, y: Any, observation: Observation | None = None) -> Any:
        """Per-example complete-data log-likelihood (2), up to a constant.

        Parameters
        ----------
        z : array (N, *latent_shape)
        y : array, the observed data of the N examples (see :mod:`abp_np.observation`)
        observation : Observation, optional
            Default: this ABP's.

        Returns
        -------
        L : array (N,), on the device
            ``-||y - A f(z)||^2 / (2 sigma^2) - ||z||^2 / 2``.
        """
        y, obs = self._prepare_data(y, observation, "ABP.log_likelihood")
        z = self._check_z(z, y.shape[0], "ABP.log_likelihood")
        with self._frozen_statistics():  # a measurement: batch norm's running statistics stay
            f = self.generator.forward(z)
        z2 = (z * z).reshape(z.shape[0], -1).sum(axis=1)
        return -obs.squared_error(y, f) / (2 * self.sigma**2) - z2 / 2

    def log_likelihood_grad_z(self, z: Any, y: Any, observation: Observation | None = None) -> Any:
        """dL/dZ (3) by one backward pass, without weight gradients.

        Parameters
        ----------
        z : array (N, *latent_shape)
        y : array, the observed data of the N examples (see :mod:`abp_np.observation`)

        Returns
        -------
        dz : array (N, *latent_shape)
            ``(1/sigma^2) A^T (y - A f(z)) df/dz - z``.
        """
        y, obs = self._prepare_data(y, observation, "ABP.log_likelihood_grad_z")
        z = self._check_z(z, y.shape[0], "ABP.log_likelihood_grad_z")
        with self._frozen_statistics():
            return self._grad_z_data(z, y, obs) - z

    def _grad_z_data(self, z: Any, y: Any, obs: Observation) -> Any:
        """The data term of dL/dZ: one forward and ONE backward pass, no weight gradients."""
        f = self.generator.forward(z)  # f(Z; W), (N, *image_shape)
        r = obs.residual(y, f)  # y - A f, observation space
        # dL/df = A^T r / sigma^2, divided in place: A^T r is a fresh array (or r itself)
        dY = obs.adjoint(r).reshape(f.shape)
        dY /= self.sigma**2
        return self.generator.backward(dY, need_param_grads=False)  # (1/s^2) r df/dZ

    # -- inferential back-propagation --------------------------------------------------------------
    def langevin(
        self,
        z: Any,
        y: Any,
        observation: Observation | None = None,
        steps: int | None = None,
        step_size: float | None = None,
        noise: bool | None = None,
        rng: Any = None,
        noise_arrays: Any = None,
    ) -> Any:
        """Inferential back-propagation: Langevin dynamics on Z with W fixed (5).

        For each of ``steps`` steps::

            dz_data = G.backward(A^T (y - A G.forward(z)) / sigma^2, need_param_grads=False)
            z <- z + (delta^2 / 2) (dz_data - z) + delta U,      U ~ N(0, I)

        ``dz_data - z`` is dL/dZ (3): the data term from one backward pass and the
        N(0, I) prior's ``-z``. Weight gradients are not computed. Nothing is copied off the
        device inside the loop. W is fixed throughout, so the loop runs inside
        :meth:`Generator.fixed_weights <abp_np.generator.Generator.fixed_weights>`: what
        the layers derive from W (the Winograd path's transformed weights) is computed once.

        Parameters
        ----------
        z : array (N, *latent_shape)
            Starting point; not modified (a copy is updated).
        y : array
            Observed data of the N examples: (N, *image_shape), or (N, m) for projections.
        observation : Observation, optional
            Default: this ABP's.
        steps, step_size, noise : optional
            Default: this ABP's ``langevin_steps``, ``step_size`` (delta), ``noise``.
            ``noise=False``: gradient ascent.
        rng : random generator, optional
            Draws U (``standard_normal(shape, dtype=...)``); default :meth:`noise_rng`.
        noise_arrays : array (steps, N, *latent_shape), optional
            Explicit U for every step (e.g. the same noise for a CPU and a GPU chain);
            implies ``noise=True`` and leaves every generator untouched.

        Returns
        -------
        z : array (N, *latent_shape)
        """
        owner = "ABP.langevin"
        y, obs = self._prepare_data(y, observation, owner)
        z = self._check_z(z, y.shape[0], owner)
        steps = self.langevin_steps if steps is None else _count(steps, "steps")
        delta = self.step_size if step_size is None else _nonnegative(step_size, "step_size")
        noise = self.noise if noise is None else bool(noise)
        if noise_arrays is not None:
            want = (steps, *z.shape)
            if tuple(getattr(noise_arrays, "shape", ())) != want:
                raise ValueError(
                    f"{owner}: noise_arrays must have shape {want} (steps, *z.shape), got "
                    f"{getattr(noise_arrays, 'shape', type(noise_arrays).__name__)}"
                )
            if noise_arrays.dtype != self.dtype:
                raise ValueError(
                    f"{owner}: noise_arrays dtype {noise_arrays.dtype}, expected {self.dtype}"
                )
            noise_arrays = self._on_device(noise_arrays, "noise_arrays")
            noise = True
        return self._langevin(z, y, obs, steps, delta, noise, rng, noise_arrays)

    def _langevin(self, z, y, obs, steps, delta, noise, rng, noise_arrays):
        """The Langevin loop of :meth:`langevin`, :meth:`fit` and :meth:`infer`.

        On validated arguments. W is fixed throughout, so the loop runs inside
        ``Generator.fixed_weights()``, whichever method called it.
        """
        fixed = getattr(self.generator, "fixed_weights", contextlib.nullcontext)
        with fixed():  # W fixed: layers may reuse what they derive from it
            return self._langevin_loop(z, y, obs, steps, delta, noise, rng, noise_arrays)

    def _langevin_loop(self, z, y, obs, steps, delta, noise, rng, noise_arrays):
        xp = get_array_module(z)
        if noise and noise_arrays is None:
            rng = rng if rng is not None else self.noise_rng()
        kernel = _langevin_kernel(z)
        if self.cuda_graph and xp is not np and steps > 0 and obs.graph_capturable:
            return self._langevin_graph(z, y, obs, steps, delta, noise, rng, noise_arrays, kernel)
        z = xp.array(z, copy=True, order="C")
        for t in range(steps):
            U = None
            if noise:
                U = (
                    noise_arrays[t]
                    if noise_arrays is not None
                    else rng.standard_normal(z.shape, dtype=z.dtype)
                )
            self._langevin_step(z, y, obs, delta, U, kernel)
        return z

    def _langevin_step(self, z, y, obs, delta, U, kernel=None) -> None:
        """One step of (5) on ``z`` in place; ``U`` this step's noise, or None."""
        dz_data = self._grad_z_data(z, y, obs)  # (1/sigma^2) (y - f) df/dZ
        if kernel is not None:  # fused CUDA update, the same formula as below
            xp = get_array_module(z)
            U = None if U is None else xp.ascontiguousarray(U)
            kernel(z, xp.ascontiguousarray(dz_data), U, delta)
        else:
            z += (0.5 * delta * delta) * (dz_data - z)  # (delta^2/2) dL/dZ, (5)
            if U is not None:
                z += delta * U  # + delta U

    def _langevin_graph(self, z, y, obs, steps, delta, noise, rng, noise_arrays, kernel):
        """:meth:`_langevin` as a replay of a captured CUDA graph (:mod:`abp_np.fast.cuda_graph`)."""
        from .fast.cuda_graph import KEEP, LangevinGraph, graph_key

        key = graph_key(self, z, y, obs, steps, delta, noise)
        graph = self._graphs.pop(key, None)
        if graph is None:
            if len(self._graphs) >= KEEP:  # the oldest goes first, once it has run
                self.xp.cuda.Device().synchronize()
                while len(self._graphs) >= KEEP:
                    self._graphs.pop(next(iter(self._graphs)))

            def step(zb, yb, ob, U):
                self._langevin_step(zb, yb, ob, delta, U, kernel)

            buffers = [b for layer in self.generator.layers for b in layer.buffers.values()]
            release = self.generator.release  # what a failed capture's half pass saved
            graph = LangevinGraph(self.xp, step, z, y, obs, steps, noise, buffers, release)
        self._graphs[key] = graph  # the latest last
        U = None
        if noise:
            U = noise_arrays
            if U is None:
                U = rng.standard_normal((steps, *z.shape), dtype=z.dtype)
        return graph(z, y, obs, U)

    # -- learning back-propagation -----------------------------------------------------------------
    def learn(self, z: Any, y: Any, observation: Observation | None = None) -> dict[str, float]:
        """Learning back-propagation: one optimiser step on W with Z fixed (6).

        ``f = G.forward(z)``; the gradient of J = -L/n,
        ``dY = -A^T (y - A f) / (sigma^2 n)``, is injected at the output;
        ``G.backward(dY, need_param_grads=True)`` fills every layer's ``grads`` with dJ/dW;
        the optimiser descends J (ascends L). W is unchanged from the forward pass to the end of
        the backward pass, which run inside :meth:`Generator.fixed_weights
        <abp_np.generator.Generator.fixed_weights>` as the Langevin loop does: the layers derive
        from W once for both (and may take the routes that pay off only then).

        Returns
        -------
        stats : dict of float
            Measured *before* the update: ``recon_error`` (mean |y - A f| / 2 over observed
            entries: the paper's error for [-1, 1] data on the [0, 1] scale; for
            :class:`Projection` data it is measured on the projections),
            ``data_energy`` (mean over examples of ||y - A f||^2 / (2 sigma^2)) and
            ``prior_energy`` (mean of ||z||^2 / 2).
        """
        y, obs = self._prepare_data(y, observation, "ABP.learn")
        z = self._check_z(z, y.shape[0], "ABP.learn")
        stats = LearnStats(*to_numpy(self.xp.stack(self._learn_step(z, y, obs))))
        return stats.means(z.shape[0])

    def _learn_step(self, z: Any, y: Any, obs: Observation) -> LearnStats:
        """One learning step (6) on validated arguments; the batch's sums, before the update."""
        stats = self._learn_passes(z, y, obs)
        self.optimizer.step(self.generator)  # W <- W - lr * (...)
        return stats

    def _learn_passes(self, z: Any, y: Any, obs: Observation) -> LearnStats:
        """The learning step's forward and backward passes: every layer's ``grads`` <- dJ/dW.

        W changes only at the optimiser's step, after both passes, so they run in a
        fixed-weights block; inside the Langevin loop's block (:meth:`_alternate`) they reuse
        what its passes derived from W. Returns the batch's sums, before the update.
        """
        g = self.generator
        n = z.shape[0]
        fixed = getattr(g, "fixed_weights", None)
        with fixed(learning=True) if fixed is not None else contextlib.nullcontext():
            f = g.forward(z)
            r = obs.residual(y, f)  # y - A f
            dY = obs.adjoint(r).reshape(f.shape) * (-1.0 / (self.sigma**2 * n))  # dJ/df, J = -L/n
            g.backward(dY, need_param_grads=True)  # the same pass; grads <- dJ/dW (dZ unused)
        abs_sum, count = obs.abs_error(y, f)
        data = (r * r).sum() / (2 * self.sigma**2)
        prior = (z * z).sum() / 2
        xp = get_array_module(z)
        return LearnStats(
            data_energy=data.astype(xp.float64),
            prior_energy=prior.astype(xp.float64),
            abs_residual=abs_sum.astype(xp.float64),
            observed=xp.asarray(count, dtype=xp.float64),
        )

    # -- one iteration: (5), then (6) ------------------------------------------------------------
    def alternate(
        self, z: Any, y: Any, observation: Observation | None = None, rng: Any = None
    ) -> tuple[Any, dict[str, float]]:
        """One iteration of alternating back-propagation on a batch: the Langevin loop (5)
        from ``z`` (:meth:`langevin`, this ABP's settings), then one learning step (6) at the
        Z it reached (:meth:`learn`).

        The same as ``z = langevin(z, y); learn(z, y)``, except that W, fixed from the loop's
        first pass to the learning step's backward pass, is derived from once for both: the
        learning step's passes reuse what the loop's layers derived from W (on the CPU, the
        Winograd route's transformed weights). :meth:`fit` runs its batches this way.

        Returns
        -------
        z : array (N, *latent_shape)
            Z after the Langevin loop (``z`` itself is not modified).
        stats : dict of float
            The learning step's, as :meth:`learn` returns them.
        """
        owner = "ABP.alternate"
        y, obs = self._prepare_data(y, observation, owner)
        z = self._check_z(z, y.shape[0], owner)
        z, stats = self._alternate(z, y, obs, rng)
        return z, LearnStats(*to_numpy(self.xp.stack(stats))).means(z.shape[0])

    def _alternate(self, z: Any, y: Any, obs: Observation, rng: Any) -> tuple[Any, LearnStats]:
        """:meth:`alternate` on validated arguments: Z after the loop, the learning step's sums."""
        fixed = getattr(self.generator, "fixed_weights", contextlib.nullcontext)
        with fixed():  # W fixed from the loop's first pass to the learning step's last
            z = self._langevin_loop(
                z, y, obs, self.langevin_steps, self.step_size, self.noise, rng, None
            )  # (5)
            stats = self._learn_passes(z, y, obs)  # (6): the gradients
        self.optimizer.step(self.generator)  # (6): W <- W - lr * (...)
        return z, stats

    # -- the training run ---------------------------------------------------------------------------
    def fit(
        self,
        Y: Any,
        iterations: int,
        batch_size: int | None = None,
        observation: Observation | None = None,
        callback: Callable[[ABP, dict[str, Any]], Any] | None = None,
        checkpoint_path: str | os.PathLike | None = None,
        checkpoint_every: int = 10,
        log_path: str | os.PathLike | None = None,
        progress: bool = False,
        shuffle: bool = True,
    ) -> list[dict[str, Any]]:
        """Alternating back-propagation on a training set, until ``iteration == iterations``.

        Each iteration visits every example once (an epoch): for each mini-batch of example
        indices ``idx``, inferential back-propagation (:meth:`langevin`, (5)) on ``Z[idx]``
        (warm start, or a restart per ``chains``), the result written back to ``Z[idx]``,
        then learning back-propagation (:meth:`learn`, (6)) on that batch.

        The run itself (batches, rollback, divergence messages, checkpoints, logs, Ctrl-C,
        out-of-memory handling, callbacks) lives in :func:`abp_np.training.fit`, whose
        docstring lists every parameter, the returned history and the errors raised.

        Returns
        -------
        history : list of dict
            One record per iteration run (``iteration``, ``recon_error``, ``data_energy``,
            ``prior_energy``, ``lr``, ``seconds``).
        """
        from . import training

        return training.fit(
            self,
            Y,
            iterations,
            batch_size=batch_size,
            observation=observation,
            callback=callback,
            checkpoint_path=checkpoint_path,
            checkpoint_every=checkpoint_every,
            log_path=log_path,
            progress=progress,
            shuffle=shuffle,
        )

    # -- using a learned model ---------------------------------------------------------------------
    # W is fixed here and nothing is learned: these passes leave batch norm's running statistics
    # as they are (Generator.frozen_statistics), so that only training moves them.
    def infer(
        self,
        Y_new: Any,
        steps: int | None = None,
        observation: Observation | None = None,
        init: str = "normal",
        rng: Any = None,
        step_size: float | None = None,
        noise: bool | None = None,
        finish_steps: int = 0,
    ) -> Any:
        """Infer Z of new data with W fixed (no learning): Langevin from a fresh start.

        ``steps`` steps of (5) from ``init``, then ``finish_steps`` noise-free steps::

            z <- z + (delta^2 / 2) dL/dZ                                  (5) without delta U

        The Langevin state is a draw near the posterior of Z, and its last step added
        ``delta U``; a recovery f(Z) read from it carries that noise. The noise-free steps
        are gradient ascent on L (2) in Z from there, towards a mode of the posterior: the
        one way to finish with a noise-free state. They keep the delta of the Langevin
        steps, whose drift ``(delta^2 / 2) dL/dZ`` they are: a step that the chain took
        stably, now without ``delta U``. The authors' own evaluation shrank delta instead,
        which anneals a noisy chain towards the mode; without noise there is nothing left
        to anneal, a shrinking step only climbs more slowly, and one delta keeps the result
        equal to two plain :meth:`langevin` calls (``noise=True``, then ``noise=False``).
        For another finishing delta call :meth:`langevin` with ``noise=False`` and
        ``step_size`` on the result.

        Batch norm: in training mode (the paper's setting) every layer normalises with the
        statistics of the batch being inferred, so an example's Z depends on the others in
        its batch, and an example inferred alone gets its own statistics. After
        ``generator.eval()`` the running statistics are used instead (after :meth:`fit`,
        the exact statistics of the training chains): each example is then inferred on its
        own, whatever else is in its batch. Either way the running statistics are left as
        they are (:meth:`Generator.frozen_statistics
        <abp_np.generator.Generator.frozen_statistics>`).

        Parameters
        ----------
        Y_new : array (N, *image_shape), or (N, m) for projections
        steps : int, optional
            Default: ``langevin_steps`` (held-out images usually want more, e.g. 100+).
        observation : Observation, optional
            E.g. ``Masked(mask)`` to recover occluded test images.
        init : {'normal', 'zeros'}
            Start of the chains (the paper: N(0, I)).
        rng : random generator, optional
            For the initial Z and the noise; default :meth:`noise_rng`.
        step_size, noise : optional
            Default: this ABP's ``step_size`` (delta) and ``noise``; ``noise=False`` is
            gradient ascent to a mode of the posterior of Z.
        finish_steps : int
            Noise-free steps after the ``steps`` steps, with the same delta. 0 (the
            default): none, the state of the last Langevin step is returned.

        Returns
        -------
        Z : array (N, *latent_shape)
        """
        y, obs = self._prepare_data(Y_new, observation, "ABP.infer")
        init = _choice(init, _INITS, "init")
        steps = self.langevin_steps if steps is None else _count(steps, "steps")
        delta = self.step_size if step_size is None else _nonnegative(step_size, "step_size")
        noise = self.noise if noise is None else bool(noise)
        finish_steps = _count(finish_steps, "finish_steps")
        try:
            with self._frozen_statistics():
                z0 = self._initial_z(y.shape[0], init, rng)
                z = self._langevin(z0, y, obs, steps, delta, noise, rng, None)  # (5)
                if finish_steps:  # (5) without the noise: gradient ascent to a mode
                    z = self._langevin(z, y, obs, finish_steps, delta, False, None, None)
                return z
        except Exception as exc:
            if is_device_out_of_memory(exc):
                raise out_of_memory_error(
                    exc, "ABP.infer", y.shape[0], "infer on {n} examples at a time"
                ) from exc
            raise

    def reconstruct(
        self,
        Y: Any,
        steps: int | None = None,
        observation: Observation | None = None,
        init: str = "normal",
        rng: Any = None,
        step_size: float | None = None,
        noise: bool | None = None,
        finish_steps: int = 0,
    ) -> Any:
        """f(Z) for Z = :meth:`infer` (Y): the reconstruction, in image space.

        With :class:`Masked` data this fills in the occluded pixels; with
        :class:`Projection` data it recovers the images. The parameters are
        :meth:`infer`'s; ``finish_steps`` > 0 reads f(Z) from a noise-free state. The
        running statistics of batch norm are left as they are.

        Returns
        -------
        f : array (N, *image_shape)
        """
        with self._frozen_statistics():
            z = self.infer(
                Y,
                steps=steps,
                observation=observation,
                init=init,
                rng=rng,
                step_size=step_size,
                noise=noise,
                finish_steps=finish_steps,
            )
            return self.generator.forward(z)

    def sample(self, n: int, latent_shape: tuple[int, ...] | None = None, rng: Any = None) -> Any:
        """Synthesise ``n`` examples: f(Z) with Z ~ N(0, I).

        The running statistics of batch norm are left as they are; in training mode the
        samples are normalised with their own batch's statistics (the paper's synthesis),
        after ``generator.eval()`` with the running statistics.

        Parameters
        ----------
        n : int
        latent_shape : tuple, optional
            Shape of one Z; default the training one. Larger gives a larger texture or a
            longer sound with a fully convolutional generator.
        rng : random generator, optional
            Draws Z; default :meth:`noise_rng`.

        Returns
        -------
        f : array (n, *output_shape)
        """
        n = _count(n, "n", minimum=1)
        if latent_shape is not None:
            if not isinstance(latent_shape, (tuple, list)) or not all(
                isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1
                for s in latent_shape
            ):
                raise ValueError(
                    f"ABP.sample: latent_shape must be a tuple of sizes >= 1, like "
                    f"{self.latent_shape}, got {latent_shape!r}"
                )
            latent_shape = tuple(int(s) for s in latent_shape)
        shape = (n, *(self.latent_shape if latent_shape is None else latent_shape))
        if len(shape) != len(self.latent_shape) + 1:
            raise ValueError(
                f"ABP.sample: latent_shape must have {len(self.latent_shape)} axes "
                f"like {self.latent_shape}, got {latent_shape}"
            )
        z = (rng if rng is not None else self.noise_rng()).standard_normal(shape, dtype=self.dtype)
        with self._frozen_statistics():
            try:
                return self.generator.forward(z)
            except ValueError as err:
                if latent_shape is None or latent_shape == self.latent_shape:
                    raise
                raise ValueError(
                    f"ABP.sample: latent_shape {latent_shape} does not fit this generator, whose "
                    f"latent shape is {self.latent_shape} ({err}); only a fully convolutional "
                    "generator (texture, sound) takes a latent of another size"
                ) from err

    def _frozen_statistics(self) -> Any:
        """``Generator.frozen_statistics()``: a block that leaves running statistics alone."""
        return getattr(self.generator, "frozen_statistics", contextlib.nullcontext)()

    def to(self, device: str) -> ABP:
        """Move the generator, the chains Z, the optimiser state and the observation model."""
        xp = resolve_device(device)
        if self._graphs:  # captured CUDA graphs hold device memory: drop them once they ran
            self.xp.cuda.Device().synchronize()
            self._graphs.clear()
        self.generator.to(device)
        self.optimizer.to(device)
        if self.Z is not None:
            self.Z = xp.asarray(self.Z) if xp is not np else to_numpy(self.Z)
        probe = xp.zeros(1, dtype=self.dtype)
        self.observation = self.observation.like(probe)
        return self

    # -- checkpoints -------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> str:
        """Write a checkpoint atomically (see :func:`abp_np.io.checkpoint.save_checkpoint`)."""
        from .io.checkpoint import save_checkpoint

        return save_checkpoint(path, self)

    def load(self, path: str | os.PathLike) -> ABP:
        """Restore a checkpoint into this ABP (see :func:`abp_np.io.checkpoint.load_checkpoint`)."""
        from .io.checkpoint import load_checkpoint

        load_checkpoint(path, self)
        return self

    def __repr__(self) -> str:
        s = ", ".join(f"{k}={v!r}" for k, v in self.settings().items())
        return f"ABP({s}, optimizer={self.optimizer!r}, iteration={self.iteration})"


# --- argument checks ------------------------------------------------------------------------------


def _positive(v: Any, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
        raise ValueError(f"ABP: {name} must be a finite number > 0, got {v!r}")
    return float(v)


def _nonnegative(v: Any, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v >= 0):
        raise ValueError(f"ABP: {name} must be a finite number >= 0, got {v!r}")
    return float(v)


_count = check_count  # the argument check the training run shares (abp_np.backend)


def _choice(v: Any, options: tuple[str, ...], name: str) -> str:
    if v not in options:
        raise ValueError(f"ABP: {name} must be one of {options}, got {v!r}")
    return v
