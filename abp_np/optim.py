"""Optimisers for the learning back-propagation: the paper's SGD and Adam.

Sign convention
---------------
ABP *ascends* the log-likelihood L(W). Like every deep-learning library, abp_np's
optimisers *descend*: after :meth:`abp_np.abp.ABP.learn`, each layer's ``grads`` holds the
gradient of the loss

    J(W) = - L(W) / n = (1/n) sum_i ||Y_i - f(Z_i; W)||^2 / (2 sigma^2)   (+ const)

over the n examples of the mini-batch, i.e. minus the paper's "per example summed over
pixels, averaged over the batch, times 1/sigma^2" gradient. ``step`` then moves every
parameter against ``grads``. (The MATLAB code kept the ascent direction and added the
update; the two are the same arithmetic with the sign of the momentum buffer flipped.)

The paper's SGD (its released MatConvNet code), for each parameter tensor p with
gradient g = dJ/dp::

    g <- g * min(1, clip / max|g|)              # rescale so that max|g| <= clip (per tensor)
    g <- g + weight_decay * p                   # filters only
    v <- momentum * v + g                       # momentum buffer
    p <- p - lr * lr_mult[group(p)] * v

Parameter groups (by layer type and parameter name, see :func:`param_group`): the
``weight`` of a Linear / ConvTranspose layer is a *filter* (lr x1, weight decay), its
``bias`` a *bias* (lr x2), a batch norm's ``weight`` its *gain* (lr x2) and its ``bias``
the BN *bias* (lr x1); only filters are decayed.

Both optimisers update parameters in place with vectorised ``xp`` operations (NumPy or
CuPy), never synchronise with the device, and keep their state as plain arrays
(:meth:`Optimizer.state_dict`), so that a checkpoint can hold them.
"""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import numpy as np

from .backend import get_array_module, to_numpy
from .fast import routes

__all__ = ["Optimizer", "SGD", "Adam", "param_group", "PAPER_LR_MULT", "GROUPS"]

#: The parameter groups, see :func:`param_group`.
GROUPS = ("filter", "bias", "bn_gain", "bn_bias")

#: Learning-rate multipliers of the paper's code: filters x1, biases x2, BN gain x2, BN bias x1.
PAPER_LR_MULT = {"filter": 1.0, "bias": 2.0, "bn_gain": 2.0, "bn_bias": 1.0}


def param_group(name: str, layer: Any) -> str:
    """The group of a parameter: 'filter', 'bias', 'bn_gain', 'bn_bias' (or 'other').

    Parameters
    ----------
    name : str
        The name from :meth:`Generator.named_parameters`, e.g. ``'3.weight'``.
    layer : Layer
        The layer holding it; batch-norm layers are recognised by type.
    """
    from .layers import _BatchNorm

    key = name.rsplit(".", 1)[-1]
    if isinstance(layer, _BatchNorm):
        return {"weight": "bn_gain", "bias": "bn_bias"}.get(key, "other")
    return {"weight": "filter", "bias": "bias"}.get(key, "other")


def _lr_mult(lr_mult: Any, default: dict[str, float], owner: str) -> dict[str, float]:
    """Turn the ``lr_mult`` argument (None, a number or a partial dict) into a full dict."""
    if lr_mult is None:
        out = dict(default)
    elif isinstance(lr_mult, (int, float)):
        out = {g: float(lr_mult) for g in GROUPS}
    elif isinstance(lr_mult, dict):
        unknown = sorted(set(lr_mult) - set(GROUPS))
        if unknown:
            raise ValueError(f"{owner}: unknown lr_mult groups {unknown}; expected {GROUPS}")
        out = {**default, **{k: float(v) for k, v in lr_mult.items()}}
    else:
        raise ValueError(f"{owner}: lr_mult must be None, a number or a dict, got {lr_mult!r}")
    if any(not (v >= 0 and math.isfinite(v)) for v in out.values()):
        raise ValueError(f"{owner}: lr_mult values must be finite and >= 0, got {out}")
    out["other"] = 1.0
    return out


class Optimizer:
    """Base class: per-tensor gradient clipping, filter-only weight decay, multipliers.

    Subclasses implement :meth:`_update` for one parameter tensor. ``lr`` may be changed
    between steps (learning-rate decay); ``initial_lr`` keeps the value given.
    """

    _buffer_names: tuple[str, ...] = ()
    _kernel: str | None = None  # the name of a compiled form of _apply, if one exists

    def __init__(
        self,
        lr: float,
        weight_decay: float,
        lr_mult: Any,
        clip: float | None,
        default_mult: dict[str, float],
    ) -> None:
        owner = type(self).__name__
        for name, v in (("lr", lr), ("weight_decay", weight_decay)):
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{owner}: {name} must be a finite number >= 0, got {v!r}")
        if clip is not None and not (math.isfinite(clip) and clip > 0):
            raise ValueError(f"{owner}: clip must be None or a number > 0, got {clip!r}")
        self.lr = float(lr)
        self.initial_lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.lr_mult = _lr_mult(lr_mult, default_mult, owner)
        self.clip = None if clip is None else float(clip)
        self.steps = 0
        self.state: dict[str, dict[str, Any]] = {b: {} for b in self._buffer_names}

    # -- the update ------------------------------------------------------------------------------
    def step(self, generator: Any) -> None:
        """Update every parameter of ``generator`` in place from its ``grads``.

        ``grads`` must hold dJ/dW with J = -L/n (see the module docstring): the step
        descends J, i.e. ascends the log-likelihood.

        Past the clipping scale (one number per tensor), the update is elementwise: on the CPU
        with several threads, :func:`abp_np.fast.elementwise.optimizer_update` runs the same
        :meth:`_apply` on ranges of elements at once, and SGD's update has a compiled form
        (:func:`abp_np.fast.cpu.sgd_update`): the same bits (``tests/test_threads.py``).

        The weights change in place, so the generator's layers drop what they derived from the
        old ones (inside :meth:`Generator.fixed_weights
        <abp_np.generator.Generator.fixed_weights>`).
        """
        self.steps += 1
        for name, p, g, layer in generator.named_parameters():
            group = param_group(name, layer)
            lr = self.lr * self.lr_mult[group]
            decay = self.weight_decay if group == "filter" else 0.0
            scale = self._clip_scale(g)
            state = tuple(self._buffer(kind, name, p) for kind in self._buffer_names)
            route = routes.choose("optimizer_update", self, p, g, *state)
            if route.run is None:
                self._apply(p, g, state, lr, scale, decay)
            else:  # the same arithmetic on several threads (abp_np/fast/routes.py)
                route.run(self, p, g, state, lr, scale, decay)
        forget = getattr(generator, "_forget_derived", None)  # derived from the old weights
        if forget is not None:
            forget()

    def _apply(
        self, p: Any, g: Any, state: tuple[Any, ...], lr: float, scale: Any, decay: float
    ) -> None:
        """One tensor's update from its raw gradient: clip, decay, then :meth:`_update`::

        g <- g * scale          (scale = min(1, clip / max|g|), see _clip_scale)
        g <- g + decay * p      (decay = weight_decay for filters, else 0)
        """
        if scale is not None:
            g = g * scale
        if decay:
            g = g + decay * p
        self._update(p, g, state, lr)

    def _clip_scale(self, g: Any) -> Any:
        """min(1, clip / max|g|) as a 0-d array of g's dtype (None without clipping).

        ``g * scale`` then has its largest entry at most ``clip``; a gradient already within
        bounds is multiplied by exactly 1. Computed on the device, so it never synchronises.
        """
        if self.clip is None:
            return None
        xp = get_array_module(g)
        route = routes.choose("max_abs", g)
        peak = xp.max(xp.abs(g)) if route.run is None else route.run(g)
        # clip / max(peak, clip) is exactly 1 when peak <= clip, else clip / peak
        scale = self.clip / xp.maximum(peak, self.clip)
        return scale.astype(g.dtype)

    def _update(
        self, p: Any, g: Any, state: tuple[Any, ...], lr: float
    ) -> None:  # pragma: no cover
        """The optimiser's rule for one tensor (or a range of its elements), in place.

        ``state`` holds the tensor's arrays named by ``_buffer_names``, in that order.
        """
        raise NotImplementedError

    def _buffer(self, kind: str, name: str, p: Any) -> Any:
        """The state array ``kind`` of parameter ``name``, created as zeros on first use."""
        xp = get_array_module(p)
        buf = self.state[kind].get(name)
        if buf is None:
            buf = xp.zeros_like(p)
        elif get_array_module(buf) is not xp:  # the model moved to another device
            buf = xp.asarray(buf)
        self.state[kind][name] = buf
        return buf

    def to(self, device: str) -> Optimizer:
        """Move the state arrays to 'cpu' or 'gpu'."""
        from .backend import to_device

        for kind in self.state:
            self.state[kind] = {k: to_device(v, device) for k, v in self.state[kind].items()}
        return self

    # -- state -----------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """Hyper-parameters as a JSON-able dict."""
        return {
            "lr": self.lr,
            "initial_lr": self.initial_lr,
            "weight_decay": self.weight_decay,
            "lr_mult": {g: self.lr_mult[g] for g in GROUPS},
            "clip": self.clip,
        }

    def state_dict(self) -> dict[str, np.ndarray]:
        """Everything needed to continue exactly, as plain NumPy arrays.

        Keys: ``'class'`` and ``'config'`` (JSON) as unicode arrays, ``'steps'``, and
        ``'<buffer>/<param name>'`` for each state array (e.g. ``'momentum/0.weight'``).
        """
        out = {
            "class": np.array(type(self).__name__),
            "config": np.array(json.dumps(self.config())),
            "steps": np.array(self.steps, dtype=np.int64),
        }
        for kind, bufs in self.state.items():
            for name, buf in bufs.items():
                out[f"{kind}/{name}"] = to_numpy(buf).copy()
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output (hyper-parameters, step count and buffers)."""
        owner = type(self).__name__
        cls = str(np.asarray(state.get("class", "")))
        if cls != owner:
            raise ValueError(f"{owner}.load_state_dict: state was saved by {cls or 'nothing'!r}")
        try:
            cfg = json.loads(str(np.asarray(state["config"])))
            steps = int(np.asarray(state["steps"]))
        except (KeyError, ValueError, TypeError) as err:
            raise ValueError(f"{owner}.load_state_dict: missing or bad config ({err})") from err
        if not isinstance(cfg, dict):
            raise ValueError(f"{owner}.load_state_dict: its config is not a JSON object")
        if steps < 0:
            raise ValueError(f"{owner}.load_state_dict: step count {steps} is negative")
        bufs: dict[str, dict[str, Any]] = {b: {} for b in self._buffer_names}
        for key, value in state.items():
            if "/" not in key:
                continue
            kind, name = key.split("/", 1)
            if kind not in bufs:
                raise ValueError(f"{owner}.load_state_dict: unexpected state {key!r}")
            bufs[kind][name] = np.array(value)
        probe = copy.copy(self)  # the config is tried on a copy: a bad one changes nothing
        try:
            probe._set_config(cfg)
        except KeyError as err:
            raise ValueError(f"{owner}.load_state_dict: its config lacks {err}") from err
        except (ValueError, TypeError, AttributeError) as err:
            raise ValueError(f"{owner}.load_state_dict: bad config ({err})") from err
        probe._check_config()
        self._set_config(cfg)
        self.steps = steps
        self.state = bufs

    def _check_config(self) -> None:
        """The hyper-parameters' ranges, as the constructor checks them."""
        owner = type(self).__name__
        for name in ("lr", "initial_lr", "weight_decay"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{owner}: {name} must be a finite number >= 0, got {v!r}")
        if self.clip is not None and not (math.isfinite(self.clip) and self.clip > 0):
            raise ValueError(f"{owner}: clip must be None or a number > 0, got {self.clip!r}")
        if set(self.lr_mult) != {*GROUPS, "other"} or any(
            not (math.isfinite(v) and v >= 0) for v in self.lr_mult.values()
        ):
            raise ValueError(f"{owner}: lr_mult must give every group {GROUPS} a number >= 0")

    def _set_config(self, cfg: dict[str, Any]) -> None:
        self.lr = float(cfg["lr"])
        self.initial_lr = float(cfg["initial_lr"])
        self.weight_decay = float(cfg["weight_decay"])
        self.lr_mult = {**{g: float(v) for g, v in cfg["lr_mult"].items()}, "other": 1.0}
        self.clip = None if cfg["clip"] is None else float(cfg["clip"])

    def __repr__(self) -> str:
        cfg = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "initial_lr")
        return f"{type(self).__name__}({cfg})"


class SGD(Optimizer):
    """Stochastic gradient descent with momentum: the paper's optimiser.

    Parameters
    ----------
    lr : float
        Base learning rate (paper: 1e-4; large data sets about 6e-5, decayed 0.99 per epoch).
    momentum : float
        Paper: 0.5.
    weight_decay : float
        L2 decay on filters only (paper: 1e-4).
    lr_mult : None, float or dict
        None: the paper's multipliers :data:`PAPER_LR_MULT`. A number: the same for all
        groups. A dict: overrides some groups, e.g. ``{'bias': 1}``.
    clip : float or None
        Each tensor's gradient is rescaled so that its largest absolute entry is at most
        ``clip`` (paper: 30), after the 1/n and 1/sigma^2 scaling, before weight decay,
        exactly where the MATLAB code did it. None: no clipping.

    Update (per tensor; ``g`` the clipped, decayed gradient of J = -L/n)::

        v <- momentum * v + g
        p <- p - lr * lr_mult * v
    """

    _buffer_names = ("momentum",)

    @property
    def _kernel(self) -> str | None:
        """ "sgd_update", the compiled form of :meth:`_apply` (``abp_np/fast/routes.py``), unless
        a subclass changes the arithmetic that form computes."""
        cls = type(self)
        same = cls._update is SGD._update and cls._apply is Optimizer._apply
        return "sgd_update" if same else None

    def __init__(
        self,
        lr: float = 1e-4,
        momentum: float = 0.5,
        weight_decay: float = 1e-4,
        lr_mult: Any = None,
        clip: float | None = 30.0,
    ) -> None:
        if not (isinstance(momentum, (int, float)) and 0 <= momentum < 1):
            raise ValueError(f"SGD: momentum must be in [0, 1), got {momentum!r}")
        self.momentum = float(momentum)
        super().__init__(lr, weight_decay, lr_mult, clip, PAPER_LR_MULT)

    def _update(self, p: Any, g: Any, state: tuple[Any, ...], lr: float) -> None:
        (v,) = state
        v *= self.momentum
        v += g
        p -= lr * v

    def config(self) -> dict[str, Any]:
        return {**super().config(), "momentum": self.momentum}

    def _set_config(self, cfg: dict[str, Any]) -> None:
        super()._set_config(cfg)
        self.momentum = float(cfg["momentum"])

    def _check_config(self) -> None:
        super()._check_config()
        if not 0 <= self.momentum < 1:
            raise ValueError(f"SGD: momentum must be in [0, 1), got {self.momentum!r}")


class Adam(Optimizer):
    """Adam (Kingma & Ba), a common modern substitute for the paper's SGD.

    Parameters
    ----------
    lr, beta1, beta2, eps : float
        Defaults 2e-4, 0.5, 0.999, 1e-8 (the usual settings for generator networks).
    weight_decay : float
        L2 decay added to the gradient of filters only (default 0).
    lr_mult : None, float or dict
        None: 1 for every group (see :class:`SGD`).
    clip : float or None
        Per-tensor max-abs rescaling as in :class:`SGD` (default None: off).

    Update (per tensor, t = number of steps taken)::

        m <- beta1 m + (1 - beta1) g
        v <- beta2 v + (1 - beta2) g^2
        p <- p - lr * lr_mult * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)
    """

    _buffer_names = ("m", "v")

    def __init__(
        self,
        lr: float = 2e-4,
        beta1: float = 0.5,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        lr_mult: Any = None,
        clip: float | None = None,
    ) -> None:
        for name, b in (("beta1", beta1), ("beta2", beta2)):
            if not (isinstance(b, (int, float)) and 0 <= b < 1):
                raise ValueError(f"Adam: {name} must be in [0, 1), got {b!r}")
        if not (isinstance(eps, (int, float)) and eps > 0):
            raise ValueError(f"Adam: eps must be > 0, got {eps!r}")
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)
        super().__init__(lr, weight_decay, lr_mult, clip, {g: 1.0 for g in GROUPS})

    def _update(self, p: Any, g: Any, state: tuple[Any, ...], lr: float) -> None:
        xp = get_array_module(p)
        m, v = state
        m *= self.beta1
        m += (1 - self.beta1) * g
        v *= self.beta2
        v += (1 - self.beta2) * (g * g)
        m_hat = m / (1 - self.beta1**self.steps)
        v_hat = v / (1 - self.beta2**self.steps)
        p -= lr * m_hat / (xp.sqrt(v_hat) + self.eps)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "beta1": self.beta1, "beta2": self.beta2, "eps": self.eps}

    def _set_config(self, cfg: dict[str, Any]) -> None:
        super()._set_config(cfg)
        self.beta1, self.beta2 = float(cfg["beta1"]), float(cfg["beta2"])
        self.eps = float(cfg["eps"])

    def _check_config(self) -> None:
        super()._check_config()
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"Adam: {name} must be in [0, 1), got {getattr(self, name)!r}")
        if not (math.isfinite(self.eps) and self.eps > 0):
            raise ValueError(f"Adam: eps must be a finite number > 0, got {self.eps!r}")
