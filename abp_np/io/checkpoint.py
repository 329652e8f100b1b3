"""Checkpoints: one ``.npz`` file holding everything needed to continue a run exactly.

Contents (all plain arrays, loadable with ``numpy.load(path, allow_pickle=False)``):

===========================  ==================================================================
key                          what
===========================  ==================================================================
``abp_np_checkpoint``        format version (int); marks the file as ours
``settings``                 JSON string: sigma, Langevin steps and step size, noise, chains,
                             init_z, lr_decay, latent shape, dtype
``iteration``                number of completed iterations
``rng_state``                JSON string of ``numpy.random.Generator.bit_generator.state``
``model/<layer>.<name>``     generator parameters and batch-norm buffers (``state_dict``)
``optim/<key>``              optimiser state (class, hyper-parameters, step count, buffers)
``Z``                        the persistent chains, (n, *latent_shape), when there are any
===========================  ==================================================================

Writing is atomic (:mod:`abp_np.io.atomic`): the arrays go to a temporary file in the same
folder, which is flushed and fsync'ed, then renamed over the target with :func:`os.replace`.
A writer killed half-way leaves the previous checkpoint intact and at worst a stray
``.<name>.<pid>.*.tmp`` file, never mistaken for a checkpoint and removed by the next write
of the same checkpoint. Ctrl-C during a write waits for the write to finish.

Loading is all or nothing: the file's settings (sigma > 0, step size >= 0, Langevin steps
>= 0, ...), its iteration count, the shapes and dtypes of the weights, buffers, optimiser
state and chains, the optimiser's configuration and the random state are all checked, and
every floating-point array must be finite, before anything is changed.

On the CPU, a run of k iterations, saved, loaded into a fresh :class:`ABP` and continued
gives bit-for-bit the numbers of an uninterrupted run. (On the GPU the CuPy noise
generator's state is not saved: a resumed GPU run is statistically, not bitwise, the same.)
"""

from __future__ import annotations

import copy
import json
import math
import os
import zipfile
import zlib
from typing import Any

import numpy as np

from ..backend import to_numpy
from .atomic import atomic_write as _atomic_write
from .atomic import deferred_interrupt

__all__ = ["save_checkpoint", "load_checkpoint", "read_checkpoint", "FORMAT_VERSION"]

FORMAT_VERSION = 1
_MARK = "abp_np_checkpoint"


def _plain(obj: Any) -> Any:
    """JSON fallback for NumPy values inside an RNG state (e.g. MT19937's key array)."""
    if isinstance(obj, (np.ndarray, np.generic)):
        return obj.tolist()
    raise TypeError(f"cannot store {type(obj).__name__} in a checkpoint")


def _arrays(abp: Any) -> dict[str, np.ndarray]:
    """Everything to save, as NumPy arrays keyed as in the module docstring."""
    settings = {**abp.settings(), "latent_shape": list(abp.latent_shape), "dtype": str(abp.dtype)}
    out: dict[str, np.ndarray] = {
        _MARK: np.array(FORMAT_VERSION, dtype=np.int64),
        "settings": np.array(json.dumps(settings)),
        "iteration": np.array(abp.iteration, dtype=np.int64),
        "rng_state": np.array(json.dumps(abp.rng.bit_generator.state, default=_plain)),
    }
    for key, value in abp.generator.state_dict().items():
        out[f"model/{key}"] = value
    for key, value in abp.optimizer.state_dict().items():
        out[f"optim/{key}"] = value
    if abp.Z is not None:
        out["Z"] = to_numpy(abp.Z)
    return out


def save_checkpoint(path: str | os.PathLike, abp: Any) -> str:
    """Write ``abp``'s complete state to ``path`` atomically; return the path as a string.

    Parameters
    ----------
    path : path
        The file to (over)write, conventionally ending in ``.npz`` (no suffix is added).
    abp : ABP
    """
    path = os.fspath(path)
    arrays = _arrays(abp)
    folder = os.path.dirname(os.path.abspath(path))
    # Ctrl-C waits until the file is in place and recorded (then raises KeyboardInterrupt)
    with deferred_interrupt():
        # temporary file beside `path`, fsync, then os.replace: atomic on POSIX and Windows
        _atomic_write(path, lambda fh: _write(fh, arrays))
        _fsync_folder(folder)
        abp.last_checkpoint = path
    return path


def _write(fh: Any, arrays: dict[str, np.ndarray]) -> None:
    """Write the arrays to an open binary file as an (uncompressed) ``.npz``."""
    np.savez(fh, **arrays)


def _fsync_folder(folder: str) -> None:
    """Make the rename durable where the platform allows (POSIX); best effort elsewhere."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read and check a checkpoint file; return its arrays (nothing is applied).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is truncated, corrupt, not an ``.npz``, needs pickle, or is not an
        abp_np checkpoint of a known version.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    try:
        with open(path, "rb") as fh:  # our handle: closed even when numpy fails half-way
            data = np.load(fh, allow_pickle=False)
            if not hasattr(data, "files"):  # a plain .npy array
                raise ValueError("it holds a single array, not an .npz archive")
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as err:
        raise ValueError(
            f"{path!r} is not a readable abp_np checkpoint ({type(err).__name__}: {err}); the "
            "file may be truncated or corrupt, or not a checkpoint at all"
        ) from err
    if _MARK not in arrays:
        raise ValueError(
            f"{path!r} is an .npz file but not an abp_np checkpoint (no {_MARK!r} entry)"
        )
    version = int(arrays[_MARK])
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{path!r}: checkpoint format {version} is not supported "
            f"(this abp_np reads format {FORMAT_VERSION})"
        )
    for key in ("settings", "iteration", "rng_state"):
        if key not in arrays:
            raise ValueError(f"{path!r}: checkpoint lacks its {key!r} entry")
    return arrays


def load_checkpoint(path: str | os.PathLike, abp: Any, restore_settings: bool = True) -> Any:
    """Restore a checkpoint into ``abp`` (whose generator has the same architecture).

    Everything is checked before anything is changed: a failing load leaves ``abp`` as it
    was.

    Parameters
    ----------
    path : path
    abp : ABP
        Its generator must have the checkpoint's layers, parameter shapes and dtype; its
        optimiser the checkpoint's class.
    restore_settings : bool
        Also restore sigma, the Langevin settings, chains, init_z and lr_decay (needed to
        continue the run exactly). False keeps ``abp``'s own.

    Returns
    -------
    abp : ABP

    Raises
    ------
    ValueError
        Corrupt or foreign file (see :func:`read_checkpoint`), or an architecture that does
        not match: the message names the first mismatching key and its shapes.
    """
    path = os.fspath(path)
    arrays = read_checkpoint(path)
    try:
        settings = json.loads(str(arrays["settings"]))
        rng_state = json.loads(str(arrays["rng_state"]))
        iteration = arrays["iteration"]
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path!r}: unreadable settings or RNG state ({err})") from err
    if not isinstance(settings, dict):
        raise ValueError(f"{path!r}: its settings are not a JSON object")
    if iteration.shape != () or iteration.dtype.kind not in "iu" or int(iteration) < 0:
        raise ValueError(
            f"{path!r}: its iteration count must be an integer >= 0, got {iteration!r}; the "
            "file was not written by abp_np or was altered"
        )
    iteration = int(iteration)
    settings = _checked_settings(settings, path) if restore_settings else settings

    # -- the architecture must match, key by key, in order -----------------------------------------
    model = {k[len("model/") :]: v for k, v in arrays.items() if k.startswith("model/")}
    expected = abp.generator.state_dict()
    for key, value in expected.items():
        if key not in model:
            raise ValueError(
                f"{path!r}: architecture mismatch: the model has {key!r} "
                f"{value.shape} but the checkpoint does not"
            )
        if model[key].shape != value.shape:
            raise ValueError(
                f"{path!r}: architecture mismatch at {key!r}: checkpoint "
                f"{model[key].shape}, model {value.shape}"
            )
        if model[key].dtype != value.dtype:
            raise ValueError(
                f"{path!r}: dtype mismatch at {key!r}: checkpoint "
                f"{model[key].dtype}, model {value.dtype}"
            )
    extra = [k for k in model if k not in expected]
    if extra:
        raise ValueError(
            f"{path!r}: architecture mismatch: the checkpoint has {extra[0]!r} "
            f"{model[extra[0]].shape} which the model lacks"
        )
    latent = tuple(settings.get("latent_shape", ()))
    z = arrays.get("Z")
    if z is not None and (z.shape[1:] != tuple(abp.latent_shape) or z.dtype != abp.dtype):
        raise ValueError(
            f"{path!r}: chains Z of shape {z.shape} ({z.dtype}) do not fit the "
            f"model's latent shape {abp.latent_shape} ({abp.dtype})"
        )
    if z is None and latent and latent != tuple(abp.latent_shape):
        raise ValueError(
            f"{path!r}: latent shape {latent} does not match the model's {abp.latent_shape}"
        )
    optim = {k[len("optim/") :]: v for k, v in arrays.items() if k.startswith("optim/")}
    saved_cls = str(optim.get("class", ""))
    if saved_cls != type(abp.optimizer).__name__:
        raise ValueError(
            f"{path!r}: the checkpoint's optimiser is {saved_cls or 'missing'}, "
            f"this ABP's is {type(abp.optimizer).__name__}; build the ABP with "
            f"a {saved_cls} optimiser"
        )
    _check_finite(arrays, path)
    optimizer = _checked_optimizer(abp, optim, path)
    probe = np.random.Generator(type(abp.rng.bit_generator)())
    try:
        probe.bit_generator.state = rng_state
    except (ValueError, TypeError, KeyError) as err:
        raise ValueError(
            f"{path!r}: RNG state does not fit {type(abp.rng.bit_generator).__name__} ({err})"
        ) from err

    # -- apply: everything above was checked, nothing below can fail on the file's content ---------
    abp.generator.load_state_dict(model)
    device = abp.device
    abp.optimizer.load_state_dict(optim)  # the same state that `optimizer` took
    abp.optimizer.to(device)
    del optimizer
    if z is not None:
        xp = abp.xp
        abp.Z = xp.asarray(z) if xp is not np else np.array(z)
    else:
        abp.Z = None
    abp.iteration = iteration
    abp.rng.bit_generator.state = rng_state
    abp._device_rng = None
    if restore_settings:
        for key, value in settings.items():
            setattr(abp, key, value)
    abp.last_checkpoint = path
    return abp


# The algorithm's settings a checkpoint stores, each with its check: (kind, allowed).
_SETTINGS: dict[str, tuple[str, Any]] = {
    "sigma": ("number", "> 0"),
    "step_size": ("number", ">= 0"),
    "lr_decay": ("number", "> 0"),
    "langevin_steps": ("count", ">= 0"),
    "noise": ("bool", None),
    "chains": ("choice", ("persistent", "restart")),
    "init_z": ("choice", ("zeros", "normal")),
}


def _checked_settings(settings: dict[str, Any], path: str) -> dict[str, Any]:
    """The checkpoint's algorithm settings, each checked as :class:`ABP` checks its arguments."""
    out: dict[str, Any] = {}
    for key, (kind, allowed) in _SETTINGS.items():
        if key not in settings:
            raise ValueError(f"{path!r}: its settings lack {key!r}")
        v = settings[key]
        if kind == "number":
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            ok = ok and (v > 0 if allowed == "> 0" else v >= 0)
            value: Any = float(v) if ok else None
        elif kind == "count":
            ok = isinstance(v, int) and not isinstance(v, bool) and v >= 0
            value = int(v) if ok else None
        elif kind == "bool":
            ok = isinstance(v, bool)
            value = v
        else:
            ok = v in allowed
            value = v
            allowed = "one of " + ", ".join(map(repr, allowed))
        if not ok:
            what = {"number": "a finite number", "count": "an integer", "bool": "true or false"}
            rule = f"{what.get(kind, '')} {allowed or ''}".strip()
            raise ValueError(
                f"{path!r}: its setting {key} = {v!r} is invalid (must be {rule}); the file was "
                "not written by abp_np or was altered"
            )
        out[key] = value
    return out


def _check_finite(arrays: dict[str, np.ndarray], path: str) -> None:
    """Every floating-point array of the state is finite (a run's state never holds NaN/inf)."""
    for key, value in arrays.items():
        if value.dtype.kind in "fc" and not np.isfinite(value).all():
            raise ValueError(
                f"{path!r}: {key!r} holds NaN or inf; a checkpoint of a sound run never does "
                "(the file was altered, or written by a run that diverged)"
            )


def _checked_optimizer(abp: Any, optim: dict[str, np.ndarray], path: str) -> Any:
    """A copy of ``abp``'s optimiser with the checkpoint's state loaded: the state is usable.

    Its buffers must belong to the generator's parameters, with their shapes and dtypes.
    """
    params = {name: p for name, p, _, _ in abp.generator.named_parameters()}
    for key, value in optim.items():
        if "/" not in key:
            continue
        name = key.split("/", 1)[1]
        if name not in params:
            raise ValueError(
                f"{path!r}: optimiser state 'optim/{key}' belongs to no parameter of the model"
            )
        p = params[name]
        if value.shape != p.shape or value.dtype != p.dtype:
            raise ValueError(
                f"{path!r}: optimiser state 'optim/{key}' is {value.shape} {value.dtype}, its "
                f"parameter {p.shape} {p.dtype}"
            )
    probe = copy.copy(abp.optimizer)  # shallow: its own state is replaced, not touched
    probe.state = {k: {} for k in probe.state}
    try:
        probe.load_state_dict(optim)
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path!r}: unusable optimiser state ({err})") from err
    return probe
