"""The training run around alternating back-propagation: :func:`fit`.

:mod:`abp_np.abp` holds the algorithm, each piece next to its equation: one Langevin step
(5), one learning step (6), the log-likelihood (2) and its gradient (3). This module holds
what a long run needs besides: it visits the training set in mini-batches, keeps one
persistent chain per example, and makes the run safe to leave unattended:

* **rollback**: before each iteration a copy of everything it changes (weights, batch-norm
  buffers, optimiser state, the chains Z, the random generator's state) is taken on the
  device; an iteration that fails is undone;
* **divergence**: NaN or inf in Z or W raises :class:`DivergenceError`, naming the step size
  or the learning rate to reduce; finiteness is checked once per iteration, in one device
  synchronisation;
* **checkpoints and logs**: a checkpoint every few iterations and at the end (atomic, see
  :mod:`abp_np.io.checkpoint`), one JSON line per iteration, a progress line, a callback;
* **interruption**: Ctrl-C, or the GPU running out of memory, rolls back to the last
  completed iteration and saves a checkpoint there, so that resuming continues the run
  exactly; out of memory says which batch size to try;
* **batch-norm statistics**: after the last iteration every batch norm's running statistics
  are set to the exact statistics of its inputs over the training chains Z
  (:meth:`Generator.recompute_statistics
  <abp_np.generator.Generator.recompute_statistics>`), so that ``eval()`` and the last
  checkpoint hold the training set's statistics rather than a momentum average over the
  run's batches.

:meth:`ABP.fit <abp_np.abp.ABP.fit>` calls :func:`fit`. ``demos/walkthrough.py`` writes one
iteration out by hand without any of this.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from .backend import is_device_out_of_memory, out_of_memory_error, to_numpy

if TYPE_CHECKING:  # abp imports this module; the reverse import is for annotations only
    from .abp import ABP
    from .observation import Observation

__all__ = ["DivergenceError", "fit"]


class DivergenceError(RuntimeError):
    """A Langevin or learning step produced NaN or inf.

    Attributes
    ----------
    stage : {'langevin', 'learning', 'data'}
        Which step went wrong first.
    iteration : int
        The iteration (1-based) in which it happened.
    checkpoint : str or None
        The last good checkpoint written or read by this ABP, if any.
    """

    def __init__(self, message: str, stage: str, iteration: int, checkpoint: str | None) -> None:
        super().__init__(message)
        self.stage, self.iteration, self.checkpoint = stage, iteration, checkpoint


def fit(
    model: ABP,
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
    """Alternating back-propagation on a training set, until ``model.iteration == iterations``.

    Each iteration visits every example once (an epoch): for each mini-batch of example
    indices ``idx``, Langevin dynamics on ``Z[idx]`` (warm start, or a restart per
    ``chains``), the result written back to ``Z[idx]``, then one learning step.

    After the last iteration, before the last checkpoint is written and the last callback
    runs, every batch norm's running statistics are set to the exact mean and unbiased
    variance of its inputs over the chains ``model.Z``, in batches of ``batch_size``
    (:meth:`Generator.recompute_statistics
    <abp_np.generator.Generator.recompute_statistics>`); during the run they move by
    batch norm's momentum rule as in PyTorch. Training itself never reads them (batch
    statistics, the paper's setting); ``eval()`` and held-out inference in evaluation mode
    do.

    Parameters
    ----------
    model : ABP
        Trained in place: its generator's weights, its optimiser, its chains ``Z`` and its
        ``iteration`` count.
    Y : array (n, *image_shape), or (n, m) for :class:`Projection` data
        Same dtype as the generator. Moved to the generator's device once.
    iterations : int
        The *total* number of iterations: a fresh model runs ``iterations``; a model
        restored from a checkpoint written at iteration k runs the remaining
        ``iterations - k``, continuing the same run.
    batch_size : int, optional
        Default: the whole set in one batch (the paper's small experiments). With batch
        norm every batch needs at least 2 examples.
    observation : Observation, optional
        Default: the model's. A :class:`Masked` mask is per example (n rows).
    callback : callable(abp, record), optional
        Called after each iteration with its log record.
    checkpoint_path : path, optional
        Written every ``checkpoint_every`` iterations, at the end, and on Ctrl-C.
    log_path : path, optional
        One JSON line per iteration is appended.
    progress : bool
        Print one line per iteration to stderr.
    shuffle : bool
        Visit examples in a fresh random order each iteration (drawn from ``model.rng``).

    Returns
    -------
    history : list of dict
        One record per iteration run: ``iteration`` (1-based count), ``recon_error``,
        ``data_energy``, ``prior_energy`` (see :meth:`ABP.learn <abp_np.abp.ABP.learn>`;
        averaged over the set), ``lr`` and ``seconds``.

    Raises
    ------
    DivergenceError
        When a Langevin or learning step produced NaN or inf. The in-memory model is
        rolled back to the end of the last completed iteration; the last checkpoint
        file is left as it was.
    KeyboardInterrupt
        Re-raised after rolling back to the last completed iteration and saving a
        checkpoint there (when ``checkpoint_path`` is given), so that resuming
        continues the run exactly.
    DeviceOutOfMemoryError
        When the GPU ran out of memory: rolled back and saved as for ``KeyboardInterrupt``;
        the message names the batch size to try.
    """
    from .abp import _count  # the argument checks shared with the algorithm's module

    owner = "ABP.fit"
    Y, obs = model._prepare_data(Y, observation, owner)
    n = Y.shape[0]
    iterations = _count(iterations, "iterations")
    checkpoint_every = _count(checkpoint_every, "checkpoint_every", minimum=1)
    if batch_size is None:
        batch_size = n
    batch_size = _count(batch_size, "batch_size", minimum=1)
    if batch_size > n:
        raise ValueError(f"{owner}: batch_size={batch_size} is larger than the {n} examples")
    if callback is not None and not callable(callback):
        raise ValueError(f"{owner}: callback must be callable, got {callback!r}")
    z_shape = (n, *model.latent_shape)
    if model.Z is not None and tuple(model.Z.shape) != z_shape:
        if model.iteration > 0:
            raise ValueError(
                f"{owner}: this ABP holds chains Z of shape {tuple(model.Z.shape)} from "
                f"{model.iteration} iterations, but the data give {z_shape}; use the same "
                "training set to continue, or a fresh ABP"
            )
        model.Z = None
    if model.Z is None:
        model.Z = model._initial_z(n)
    model.Z = model._on_device(model.Z, "Z")

    history: list[dict[str, Any]] = []
    snapshot = None
    try:
        while model.iteration < iterations:
            snapshot = _snapshot(model)
            try:
                record = _iteration(model, Y, obs, batch_size, shuffle)
            except DivergenceError:
                _restore(model, snapshot)
                snapshot = None
                raise
            snapshot = None  # the state is consistent again
            if model.iteration == iterations:  # the end: exact statistics of the training Z
                recompute = getattr(model.generator, "recompute_statistics", None)
                if recompute is not None:
                    recompute(model.Z, batch_size)
            history.append(record)
            if log_path is not None:
                with open(log_path, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(record) + "\n")
            if progress:
                print(
                    f"iteration {record['iteration']:>5}  error {record['recon_error']:.4f}  "
                    f"data {record['data_energy']:.4g}  prior {record['prior_energy']:.4g}  "
                    f"{record['seconds']:.2f}s",
                    file=sys.stderr,
                )
            if checkpoint_path is not None and (
                model.iteration % checkpoint_every == 0 or model.iteration == iterations
            ):
                model.save(checkpoint_path)
            if callback is not None:
                callback(model, record)
    except KeyboardInterrupt:
        if snapshot is not None:  # interrupted mid-iteration: back to its start
            _restore(model, snapshot)
        if checkpoint_path is not None:
            model.save(checkpoint_path)
        raise
    except Exception as exc:
        if not is_device_out_of_memory(exc):
            raise
        # the GPU ran out of memory: as for Ctrl-C, back to the last completed iteration and
        # save it, then say which batch size to try
        if snapshot is not None:
            _restore(model, snapshot)
        if checkpoint_path is not None:
            model.save(checkpoint_path)
        raise out_of_memory_error(
            exc, owner, batch_size, "batch_size={n} (`--batch-size {n}` on the command line)"
        ) from exc
    return history


def _iteration(model: ABP, Y: Any, obs: Observation, batch_size: int, shuffle: bool) -> dict:
    """One iteration (epoch) over all mini-batches; one device synchronisation at the end."""
    from .abp import LearnStats

    xp = model.xp
    t0 = time.perf_counter()
    n = Y.shape[0]
    opt = model.optimizer
    opt.lr = opt.initial_lr * model.lr_decay**model.iteration
    order = model.rng.permutation(n) if shuffle else np.arange(n)
    totals = xp.zeros(4, dtype=xp.float64)  # the LearnStats of the batches, summed
    flags = []  # finiteness after each Langevin run and each learning step, in order
    with np.errstate(over="ignore", invalid="ignore"):  # divergence is checked below
        for start in range(0, n, batch_size):
            idx = xp.asarray(order[start : start + batch_size])
            y_b, obs_b = Y[idx], obs.take(idx)
            z0 = model._initial_z(len(idx)) if model.chains == "restart" else model.Z[idx]
            z = model._langevin(  # inferential back-propagation (5)
                z0, y_b, obs_b, model.langevin_steps, model.step_size, model.noise, None, None
            )
            model.Z[idx] = z  # the chains are indexed by example, not by batch position
            flags.append(xp.all(xp.isfinite(z)))
            totals += xp.stack(model._learn_step(z, y_b, obs_b))  # learning back-propagation (6)
            flags.append(_params_finite(model))
        ok = to_numpy(xp.stack(flags))  # the one synchronisation of the iteration
        stats = LearnStats(*to_numpy(totals))
    model.iteration += 1
    if not ok.all():
        first = int(np.argmin(ok))
        _diverged(model, "langevin" if first % 2 == 0 else "learning")
    return {
        "iteration": model.iteration,
        **stats.means(n),
        "lr": opt.lr,
        "seconds": time.perf_counter() - t0,
    }


def _params_finite(model: ABP) -> Any:
    """A device boolean: every weight of the generator is finite."""
    xp = model.xp
    return xp.all(xp.stack([xp.all(xp.isfinite(p)) for p in model.generator.parameters()]))


def _diverged(model: ABP, stage: str) -> None:
    """Raise :class:`DivergenceError` for ``stage``, naming the setting to reduce."""
    where = (
        f"the last good checkpoint is {model.last_checkpoint}"
        if model.last_checkpoint
        else "no checkpoint was written"
    )
    if stage == "langevin":
        cause = (
            f"Langevin dynamics produced NaN/inf in Z: the step size delta="
            f"{model.step_size} is too large for sigma={model.sigma} (try a smaller "
            "step_size, e.g. half)"
        )
    else:
        cause = (
            f"the learning step produced NaN/inf in the weights: the learning rate "
            f"lr={model.optimizer.lr:g} is too large (try a smaller lr, or gradient "
            "clipping)"
        )
    raise DivergenceError(
        f"ABP diverged in iteration {model.iteration}: {cause}. The model was rolled back to "
        f"iteration {model.iteration - 1}; {where}.",
        stage,
        model.iteration,
        model.last_checkpoint,
    )


# --- rollback snapshots ---------------------------------------------------------------------------


def _snapshot(model: ABP) -> dict[str, Any]:
    """Copies (on the device) of everything an iteration changes."""
    return {
        "params": [
            {k: v.copy() for k, v in d.items()}
            for layer in model.generator.layers
            for d in (layer.params, layer.buffers)
        ],
        "optim": {
            kind: {k: v.copy() for k, v in bufs.items()}
            for kind, bufs in model.optimizer.state.items()
        },
        "optim_steps": model.optimizer.steps,
        "lr": model.optimizer.lr,
        "Z": None if model.Z is None else model.Z.copy(),
        "rng": copy.deepcopy(model.rng.bit_generator.state),
        "iteration": model.iteration,
    }


def _restore(model: ABP, snap: dict[str, Any]) -> None:
    """Put back what :func:`_snapshot` copied."""
    dicts = [d for layer in model.generator.layers for d in (layer.params, layer.buffers)]
    for d, saved in zip(dicts, snap["params"], strict=True):
        for k, v in saved.items():
            d[k][...] = v
    model.optimizer.state = snap["optim"]
    model.optimizer.steps = snap["optim_steps"]
    model.optimizer.lr = snap["lr"]
    model.Z = snap["Z"]
    model.rng.bit_generator.state = snap["rng"]
    model.iteration = snap["iteration"]
