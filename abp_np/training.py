"""The training run around alternating back-propagation: :func:`fit`.

:mod:`abp_np.abp` holds the algorithm, each piece next to its equation: one Langevin step
(5), one learning step (6), the log-likelihood (2) and its gradient (3). This module holds
what a long run needs besides: it visits the training set in mini-batches, keeps one
persistent chain per example, and makes the run safe to leave unattended:

* **rollback**: before each iteration a copy of everything it changes (weights, batch-norm
  buffers, optimiser state, the chains Z, the random generator's state) is taken on the
  device; an iteration that fails is undone;
* **divergence**: a run that leaves sanity raises :class:`DivergenceError`, naming the stage
  that blew up and its setting: the learning step (the learning rate ``lr``) when a layer's
  weights became NaN/inf or grew :data:`WEIGHT_GROWTH` times their norm at the start of the
  run, the Langevin dynamics (the step size ``step_size``) when the chains Z became NaN/inf
  or their root mean square grew :data:`Z_GROWTH` times the prior's scale (or their own, if
  larger); every other array of the state (batch-norm buffers, optimiser state) must stay
  finite. All of it is checked on the device, in one synchronisation per iteration. The
  run is rolled back to the last good iteration, which is saved as the checkpoint;
* **checkpoints and logs**: a checkpoint every few iterations and at the end (atomic, see
  :mod:`abp_np.io.checkpoint`), one JSON line per iteration with the settings it ran with, a
  progress line, a callback. A resumed run first drops the log lines past its checkpoint (left
  by a run that stopped after its last checkpoint), so the log holds each iteration once;
* **interruption**: Ctrl-C, or the GPU running out of memory, rolls back to the last
  completed iteration and saves a checkpoint there, so that resuming continues the run
  exactly; out of memory says which batch size to try. Ctrl-C during a checkpoint write waits
  for the write (:func:`abp_np.io.atomic.deferred_interrupt`); temporary files of killed
  writers are removed when the run starts;
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

from .backend import (
    check_count,
    get_array_module,
    is_device_out_of_memory,
    out_of_memory_error,
    to_numpy,
)
from .io.atomic import atomic_write, deferred_interrupt, remove_stale_temps

if TYPE_CHECKING:  # abp imports this module; the reverse import is for annotations only
    from .abp import ABP
    from .observation import Observation

__all__ = ["DivergenceError", "fit", "WEIGHT_GROWTH", "Z_GROWTH"]

#: A layer whose weights' norm grows this many times its norm at the start of the run has run
#: away (a learning rate far too large). A sound run changes its weights' norms by a few times
#: at most: the paper's SGD moves a weight by at most lr x 2 x 60 per step.
WEIGHT_GROWTH = 1e3
#: Chains Z whose root mean square exceeds this many times max(1, their value at the start)
#: have run away (a Langevin step size far too large): under the prior N(0, I) it is 1, and
#: a chain that runs away grows geometrically, step after step. (Chains started at zeros
#: below a batch norm take one large first step, as the norm divides by a batch variance of
#: zero: tens of times the prior's scale with large initial weights.)
Z_GROWTH = 1e3

_SETTING = {"learning": "lr", "inference": "step_size"}
_OPTION = {"lr": "--lr", "step_size": "--step-size"}


class DivergenceError(RuntimeError):
    """The run left sanity: a Langevin or learning step produced NaN/inf or ran away.

    Attributes
    ----------
    stage : {'inference', 'learning'}
        Which step blew up: the Langevin dynamics on Z (inferential back-propagation) or the
        learning step on W (learning back-propagation).
    setting : {'step_size', 'lr'}
        The setting of that stage to reduce: the Langevin step size for inference, the
        learning rate for learning.
    value, suggestion : float
        Its value in the iteration that diverged, and a smaller one to try.
    iteration : int
        The iteration (1-based) in which it happened; the model is back at ``iteration - 1``.
    checkpoint : str or None
        The last good checkpoint (written at ``iteration - 1`` when the run has a
        checkpoint path), if any.
    """

    def __init__(
        self,
        message: str,
        stage: str,
        iteration: int,
        checkpoint: str | None,
        setting: str | None = None,
        value: float | None = None,
        suggestion: float | None = None,
    ) -> None:
        super().__init__(message)
        self.stage, self.iteration, self.checkpoint = stage, iteration, checkpoint
        self.setting = setting if setting is not None else _SETTING.get(stage)
        self.value, self.suggestion = value, suggestion

    @property
    def option(self) -> str | None:
        """The command line's option for :attr:`setting` (``--lr`` or ``--step-size``)."""
        return _OPTION.get(self.setting or "")


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
        Written every ``checkpoint_every`` iterations, at the end, on Ctrl-C and at a
        divergence (the last good iteration). Temporary files that killed writers left
        beside it are removed first.
    log_path : path, optional
        One JSON line per iteration is appended. Lines of iterations after
        ``model.iteration`` (written by a run that stopped after its last checkpoint) are
        removed first, so that a resumed run's log holds each iteration once.
    progress : bool
        Print one line per iteration to stderr.
    shuffle : bool
        Visit examples in a fresh random order each iteration (drawn from ``model.rng``).

    Returns
    -------
    history : list of dict
        One record per iteration run: ``iteration`` (1-based count), ``recon_error``,
        ``data_energy``, ``prior_energy`` (see :meth:`ABP.learn <abp_np.abp.ABP.learn>`;
        averaged over the set), the settings it ran with (``lr``, ``step_size``, ``sigma``,
        ``langevin_steps``) and ``seconds``.

    Raises
    ------
    DivergenceError
        When a Langevin or learning step produced NaN/inf or ran away (see the module's
        docstring); the error names the stage and its setting. The in-memory model is
        rolled back to the end of the last completed iteration, and saved there when
        ``checkpoint_path`` is given.
    KeyboardInterrupt
        Re-raised after rolling back to the last completed iteration and saving a
        checkpoint there (when ``checkpoint_path`` is given), so that resuming
        continues the run exactly.
    DeviceOutOfMemoryError
        When the GPU ran out of memory: rolled back and saved as for ``KeyboardInterrupt``;
        the message names the batch size to try.
    """

    owner = "ABP.fit"
    Y, obs = model._prepare_data(Y, observation, owner)
    n = Y.shape[0]
    iterations = check_count(iterations, "iterations")
    checkpoint_every = check_count(checkpoint_every, "checkpoint_every", minimum=1)
    if batch_size is None:
        batch_size = n
    batch_size = check_count(batch_size, "batch_size", minimum=1)
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
    if checkpoint_path is not None:
        remove_stale_temps(checkpoint_path)
    if log_path is not None:
        remove_stale_temps(log_path)
        _truncate_log(log_path, model.iteration)
    limits = _Limits(model)

    history: list[dict[str, Any]] = []
    snapshot = None
    try:
        while model.iteration < iterations:
            snapshot = _snapshot(model)
            try:
                record = _iteration(model, Y, obs, batch_size, shuffle, limits)
                if model.iteration == iterations:  # the end: exact statistics of the training Z
                    recompute = getattr(model.generator, "recompute_statistics", None)
                    if recompute is not None:
                        recompute(model.Z, batch_size)
                        if not bool(to_numpy(_state_finite(model))):
                            _diverged(model, "learning", limits)
            except DivergenceError as err:
                _restore(model, snapshot)
                snapshot = None
                err.checkpoint = model.last_checkpoint
                kept = (
                    f"the last good checkpoint is {err.checkpoint}"
                    if err.checkpoint
                    else "no checkpoint was written"
                )
                if checkpoint_path is not None:  # the last good iteration, checked
                    try:
                        err.checkpoint = model.save(checkpoint_path)
                        kept = f"it is saved in {err.checkpoint}"
                    except OSError as save_error:
                        kept += f" (saving the rolled-back state failed: {save_error})"
                err.args = (
                    f"{err.args[0]} The model was rolled back to iteration {model.iteration}; "
                    f"{kept}.",
                )
                raise
            with deferred_interrupt():  # Ctrl-C waits until the iteration is logged
                snapshot = None  # the state is consistent again
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


def _iteration(
    model: ABP, Y: Any, obs: Observation, batch_size: int, shuffle: bool, limits: _Limits
) -> dict:
    """One iteration (epoch) over all mini-batches; one device synchronisation at the end.

    After each Langevin run and each learning step a device boolean says whether the state
    is still sane (:class:`_Limits`); the first that is not names the stage that blew up.
    """
    xp = model.xp
    t0 = time.perf_counter()
    n = Y.shape[0]
    opt = model.optimizer
    opt.lr = opt.initial_lr * model.lr_decay**model.iteration
    order = model.rng.permutation(n) if shuffle else np.arange(n)
    totals = xp.zeros(4, dtype=xp.float64)  # the LearnStats of the batches, summed
    flags = []  # sanity after each Langevin run and each learning step, in order
    with np.errstate(over="ignore", invalid="ignore"):  # divergence is checked below
        for start in range(0, n, batch_size):
            idx = xp.asarray(order[start : start + batch_size])
            y_b, obs_b = Y[idx], obs.take(idx)
            z0 = model._initial_z(len(idx)) if model.chains == "restart" else model.Z[idx]
            # inferential back-propagation (5), then learning back-propagation (6)
            z, stats = model._alternate(z0, y_b, obs_b, None)
            model.Z[idx] = z  # the chains are indexed by example, not by batch position
            flags.append(limits.z_sane(z))
            totals += xp.stack(stats)
            flags.append(limits.weights_sane(model))
        flags.append(limits.z_sane(model.Z))  # every chain, visited or not: inference's
        flags.append(_state_finite(model))  # buffers and optimiser state: learning's products
        ok = to_numpy(xp.stack(flags))  # the one synchronisation of the iteration
        stats = model.LearnStats(*to_numpy(totals))
    model.iteration += 1
    if not ok.all():
        first = int(np.argmin(ok))  # even: after a Langevin run, odd: after a learning step
        _diverged(model, "inference" if first % 2 == 0 else "learning", limits)
    return {
        "iteration": model.iteration,
        **stats.means(n),
        "lr": opt.lr,
        "step_size": model.step_size,
        "sigma": model.sigma,
        "langevin_steps": model.langevin_steps,
        "seconds": time.perf_counter() - t0,
    }


# --- sanity: what a run that has not diverged looks like --------------------------------------------


def _layers_with_params(model: ABP) -> list[Any]:
    return [layer for layer in model.generator.layers if layer.params]


def _sum_squares(xp: Any, arrays: Any) -> Any:
    """Sum of squares of ``arrays`` on the device (inf or NaN when one holds them)."""
    total = xp.zeros((), dtype=xp.float64)
    for a in arrays:
        flat = a.reshape(-1)
        total = total + xp.vdot(flat, flat).astype(xp.float64)
    return total


class _Limits:
    """How large the weights and the chains may grow in this run, from their start.

    Each layer's weights (its parameters together) may reach :data:`WEIGHT_GROWTH` times
    their norm at the start of :func:`fit` (a layer that starts at zero: that many times
    root-mean-square 1); the chains Z a root mean square of :data:`Z_GROWTH` times
    max(1, theirs at the start). Kept on the device, compared there.
    """

    def __init__(self, model: ABP) -> None:
        xp = model.xp
        layers = _layers_with_params(model)
        sums = [_sum_squares(xp, layer.params.values()) for layer in layers]
        start = to_numpy(xp.stack(sums)) if sums else np.zeros(0)
        sizes = np.array([sum(p.size for p in layer.params.values()) for layer in layers])
        ok = np.isfinite(start) & (start > 0)
        self.start_norms = np.sqrt(np.where(ok, start, sizes.astype(np.float64)))
        self.weight_limit2 = xp.asarray((WEIGHT_GROWTH * self.start_norms) ** 2)
        z = model.Z
        z_rms = float(np.sqrt(float(to_numpy(_sum_squares(xp, [z]))) / max(z.size, 1)))
        self.z_start = max(1.0, z_rms if np.isfinite(z_rms) else 1.0)
        self.z_limit2 = (Z_GROWTH * self.z_start) ** 2

    def weights_sane(self, model: ABP) -> Any:
        """A device boolean: every layer's weights are finite and within their limit."""
        xp = model.xp
        layers = _layers_with_params(model)
        if not layers:
            return xp.asarray(True)
        sums = xp.stack([_sum_squares(xp, layer.params.values()) for layer in layers])
        return xp.all(sums <= self.weight_limit2)  # NaN compares False

    def z_sane(self, z: Any) -> Any:
        """A device boolean: the chains ``z`` are finite and within their limit."""
        xp = get_array_module(z)
        return _sum_squares(xp, [z]) <= self.z_limit2 * max(z.size, 1)


def _state_finite(model: ABP) -> Any:
    """A device boolean: every batch-norm buffer and optimiser state array is finite."""
    xp = model.xp
    arrays = [b for layer in model.generator.layers for b in layer.buffers.values()]
    arrays += [v for bufs in model.optimizer.state.values() for v in bufs.values()]
    if not arrays:
        return xp.asarray(True)
    return xp.all(xp.stack([xp.all(xp.isfinite(a)) for a in arrays]))


def _diverged(model: ABP, stage: str, limits: _Limits) -> None:
    """Raise :class:`DivergenceError` for ``stage``, saying what blew up and what to reduce."""
    it = model.iteration
    if stage == "inference":
        z = to_numpy(model.Z).astype(np.float64)
        if not np.isfinite(z).all():
            what = "the chains Z became NaN/inf"
        else:
            rms = float(np.sqrt(np.mean(z * z)))
            what = (
                f"the chains Z grew to a root mean square of {rms:.3g}, {rms / limits.z_start:.3g} "
                f"times their scale at the start (the prior's is 1)"
            )
        delta = model.step_size
        value, suggestion = delta, min(delta / 2, 1.0)
        cause = f"the Langevin step size step_size={delta:g} is too large for sigma={model.sigma:g}"
        if delta >= 2:
            cause += " (with delta >= 2 even the prior's pull |1 - delta^2/2| z makes Z grow)"
        stage_name = "the Langevin dynamics on Z (inference)"
        grown = _largest_growth(model, limits)
        if grown is not None and grown[1] > 10:
            cause += (
                f"; the weights have grown too ({grown[0]}: {grown[1]:.3g} times their norm at "
                f"the start), so if a smaller step size does not help, lower the learning rate "
                f"lr={model.optimizer.initial_lr:g}"
            )
        name = "step_size"
    else:
        grown = _largest_growth(model, limits)
        if grown is not None and not np.isfinite(grown[1]):
            what = f"the weights of {grown[0]} became NaN/inf"
        elif grown is not None and grown[1] > WEIGHT_GROWTH:
            what = (
                f"the weights of {grown[0]} grew to {grown[1]:.3g} times their norm at the "
                "start of the run"
            )
        else:
            what = f"{_first_not_finite(model)} became NaN/inf"
        lr = model.optimizer.initial_lr
        value, suggestion = lr, min(lr / 10, 1e-3)
        cause = f"the learning rate lr={model.optimizer.lr:g} is too large"
        stage_name = "the learning step on W"
        name = "lr"
    raise DivergenceError(  # fit adds where the run was rolled back to and saved
        f"ABP diverged in iteration {it}, in {stage_name}: {what}. Cause: {cause}; try "
        f"{name}={suggestion:g}.",
        stage,
        it,
        model.last_checkpoint,
        setting=name,
        value=value,
        suggestion=suggestion,
    )


def _first_not_finite(model: ABP) -> str:
    """Names the first batch-norm buffer or optimiser state array that holds NaN or inf."""
    for i, layer in enumerate(model.generator.layers):
        for k, b in layer.buffers.items():
            if not np.isfinite(to_numpy(b)).all():
                return f"the buffer {k} of layer {i} ({layer!r})"
    for kind, bufs in model.optimizer.state.items():
        for k, v in bufs.items():
            if not np.isfinite(to_numpy(v)).all():
                return f"the optimiser's {kind} of {k}"
    return "the state"


def _largest_growth(model: ABP, limits: _Limits) -> tuple[str, float] | None:
    """(layer, growth of its weights' norm since the start) for the layer that grew most."""
    best: tuple[str, float] | None = None
    for i, layer in enumerate(model.generator.layers):
        if not layer.params:
            continue
        k = sum(1 for other in model.generator.layers[:i] if other.params)
        w = np.concatenate([to_numpy(p).astype(np.float64).ravel() for p in layer.params.values()])
        with np.errstate(over="ignore", invalid="ignore"):
            growth = float(np.sqrt(np.sum(w * w))) / limits.start_norms[k]
        if not np.isfinite(growth):
            growth = float("inf")
        if best is None or growth > best[1]:
            best = (f"layer {i} ({layer!r})", growth)
    return best


# --- the log --------------------------------------------------------------------------------------


def _truncate_log(log_path: str | os.PathLike, iteration: int) -> None:
    """Keep the log's lines of iterations 1 .. ``iteration``; drop later and torn lines."""
    try:
        with open(log_path, encoding="utf-8") as fh:
            lines = fh.read().split("\n")
    except FileNotFoundError:
        return
    keep = []
    for line in lines:
        if not line.strip():
            continue
        try:
            k = int(json.loads(line)["iteration"])
        except (ValueError, TypeError, KeyError):
            continue  # torn by a kill in mid-write
        if 1 <= k <= iteration:
            keep.append(line)
    text = "".join(line + "\n" for line in keep)
    if text != "\n".join(lines):
        atomic_write(log_path, lambda fh: fh.write(text.encode("utf-8")))


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
    """Put back what :func:`_snapshot` copied: every array of the state, and the counters."""
    dicts = [d for layer in model.generator.layers for d in (layer.params, layer.buffers)]
    for d, saved in zip(dicts, snap["params"], strict=True):
        for k, v in saved.items():
            d[k][...] = v
    forget = getattr(model.generator, "_forget_derived", None)  # derived from the weights
    if forget is not None:
        forget()
    model.optimizer.state = snap["optim"]
    model.optimizer.steps = snap["optim_steps"]
    model.optimizer.lr = snap["lr"]
    model.Z = snap["Z"]
    model.rng.bit_generator.state = snap["rng"]
    model.iteration = snap["iteration"]
