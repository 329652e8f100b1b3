"""Gradient checking: compare hand-written backward passes with finite differences.

Every backward pass in abp_np is written by hand, so every one needs a check that does
not trust it. The check here is the classic one (Chainer's ``gradient_check``, CS231n's
``eval_numerical_gradient``), made robust in three ways.

1. **A random upstream gradient.** For a layer y = f(x) and a random array g of y's shape,
   the scalar

       s(x) = <f(x), g> = sum_k f(x)_k g_k

   has the gradient ds/dx = J^T g, which is exactly what ``backward(g)`` must return
   (J = df/dx, the Jacobian). A random g exercises every column of J^T with a different
   weight; ``g = ones`` (i.e. ``f(x).sum()``) would hide a backward pass that, say,
   returns the right sum but the wrong entries, or mixes up two output positions.

2. **Central differences in float64.** For each entry x_k,

       ds/dx_k ~ (s(x + eps e_k) - s(x - eps e_k)) / (2 eps),

   whose truncation error is O(eps^2) and whose round-off error is about
   1e-16 |s| / eps. With eps = 1e-6 in float64 both are far below the tolerances, so a
   mismatch means a wrong backward, not noise. (float32 round-off, 1e-7 |s| / eps, would
   swamp everything: layers are checked in float64.)

3. **Directional derivatives for big tensors.** Checking every entry costs two forward
   passes per entry. For a big tensor, draw a few random unit directions v and compare

       <ds/dx, v>   with   (s(x + eps v) - s(x - eps v)) / (2 eps);

   a wrong gradient almost surely fails on a random direction.

Kinks. ReLU and leaky ReLU are not differentiable at 0; a central difference across the
kink averages the two slopes. :func:`away_from_kinks` moves inputs that are within a
margin of 0 out to the margin (keeping their sign), and :func:`check_layer` applies it
automatically to the input of a :class:`~abp_np.layers.ReLU` or
:class:`~abp_np.layers.LeakyReLU`. Kinks inside a network (pre-activations of hidden
layers) cannot be moved from the outside; with eps = 1e-6 the chance that a random
pre-activation lies within eps of 0 is negligible, and the report says where the worst
entry is if one ever does.

Batch norm. Central differences of the whole forward pass perturb one input at a time
and let the batch mean and variance move with it, so the check covers the full Jacobian
with batch statistics, the terms through mu and var included. Running statistics that
the perturbed forward passes update are restored afterwards.

Typical use::

    from abp_np.gradcheck import assert_gradients_close
    layer = ConvTranspose2d(3, 2, 5, stride=2, padding=2, output_padding=1, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 4))
    assert_gradients_close(layer, x)           # raises GradcheckError (an AssertionError)

    report = check_layer(layer, x)             # or inspect the report yourself
    print(report)

Works on NumPy and CuPy arrays alike: the arithmetic runs on the device of ``x``, in float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .backend import get_array_module, to_numpy

__all__ = [
    "GradcheckError",
    "GradientComparison",
    "GradcheckReport",
    "numerical_gradient",
    "directional_derivative",
    "away_from_kinks",
    "compare_gradients",
    "check_layer",
    "assert_gradients_close",
]


class GradcheckError(AssertionError):
    """A gradient check failed. ``report`` holds the :class:`GradcheckReport`."""

    def __init__(self, report: GradcheckReport) -> None:
        super().__init__(str(report))
        self.report = report


@dataclass
class GradientComparison:
    """How well one analytic gradient matched its numerical estimate.

    An entry passes when ``|analytic - numeric| <= atol + rtol * |numeric|`` (the rule of
    :func:`numpy.allclose`).

    Attributes
    ----------
    name : str
        What was differentiated: ``'x'`` for the input, a parameter name otherwise.
    mode : {'full', 'directional'}
        Every entry, or ``n_checked`` random directions.
    shape : tuple of int
        Shape of the gradient.
    n_checked : int
        Entries (full mode) or directions (directional mode) compared.
    n_failed : int
        How many of those broke the tolerance.
    max_abs_err : float
        max |analytic - numeric|.
    max_rel_err : float
        max |analytic - numeric| / max(|analytic|, |numeric|, atol).
    worst_index : tuple of int or int
        Where the tolerance was broken worst (an index into the gradient in full mode,
        a direction number in directional mode).
    analytic_at_worst, numeric_at_worst : float
        The two values there.
    """

    name: str
    mode: str
    shape: tuple[int, ...]
    n_checked: int
    n_failed: int
    max_abs_err: float
    max_rel_err: float
    worst_index: Any
    analytic_at_worst: float
    numeric_at_worst: float

    @property
    def passed(self) -> bool:
        return self.n_failed == 0

    def line(self) -> str:
        """One line of the report."""
        where = f"[{self.worst_index}]" if self.mode == "directional" else str(self.worst_index)
        what = "direction" if self.mode == "directional" else "entry"
        return (
            f"{'ok  ' if self.passed else 'FAIL'} d{self.name} {self.shape} {self.mode}: "
            f"{self.n_failed}/{self.n_checked} failed, max abs err {self.max_abs_err:.3g}, "
            f"max rel err {self.max_rel_err:.3g}; worst {what} {where}: "
            f"analytic {self.analytic_at_worst:.10g}, numeric {self.numeric_at_worst:.10g}"
        )


@dataclass
class GradcheckReport:
    """All comparisons of one gradient check; ``str(report)`` is a readable table."""

    subject: str
    eps: float
    rtol: float
    atol: float
    comparisons: list[GradientComparison] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.comparisons)

    def __getitem__(self, name: str) -> GradientComparison:
        for c in self.comparisons:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def failures(self) -> list[GradientComparison]:
        return [c for c in self.comparisons if not c.passed]

    def __str__(self) -> str:
        head = (
            f"gradient check of {self.subject}: {'passed' if self.passed else 'FAILED'} "
            f"(eps={self.eps:g}, rtol={self.rtol:g}, atol={self.atol:g})"
        )
        lines = [head] + ["  " + c.line() for c in self.comparisons]
        lines += ["  note: " + n for n in self.notes]
        return "\n".join(lines)

    def raise_if_failed(self) -> GradcheckReport:
        """Raise :class:`GradcheckError` unless every comparison passed; return self."""
        if not self.passed:
            raise GradcheckError(self)
        return self


# --- finite differences ---------------------------------------------------------------------------


def _as_float64(x: Any, what: str) -> Any:
    if not hasattr(x, "dtype") or not hasattr(x, "shape"):
        raise ValueError(f"gradcheck: {what} must be a NumPy or CuPy array, got {type(x).__name__}")
    if x.dtype != np.float64:
        raise ValueError(
            f"gradcheck: {what} has dtype {x.dtype}; finite differences need float64 "
            "(convert with .astype(np.float64) and build layers with dtype=np.float64)"
        )
    return x


def numerical_gradient(f: Callable[[], float], x: Any, eps: float = 1e-6) -> Any:
    """Central-difference gradient of a scalar function with respect to the array ``x``.

    ``x`` is perturbed IN PLACE, one entry at a time, and restored exactly afterwards; ``f``
    takes no arguments and reads ``x`` itself (so ``x`` may be a layer's parameter)::

        grad[k] = (f() with x[k] + eps  -  f() with x[k] - eps) / (2 eps)

    Parameters
    ----------
    f : callable () -> float
        The scalar, e.g. ``lambda: float((layer.forward(x) * g).sum())``.
    x : array, float64, any shape
    eps : float

    Returns
    -------
    grad : array of x's shape and device, float64
    """
    _as_float64(x, "x")
    xp = get_array_module(x)
    grad = np.zeros(x.shape, dtype=np.float64)
    for idx in np.ndindex(*x.shape):
        old = float(x[idx])
        x[idx] = old + eps
        s_plus = f()
        x[idx] = old - eps
        s_minus = f()
        x[idx] = old  # restore exactly: the same float goes back
        grad[idx] = (s_plus - s_minus) / (2 * eps)
    return xp.asarray(grad)


def directional_derivative(f: Callable[[], float], x: Any, v: Any, eps: float = 1e-6) -> float:
    """Central difference of a scalar function along the direction ``v``.

    ``(f() with x + eps v  -  f() with x - eps v) / (2 eps)``, which approximates
    ``<grad f, v>``. ``x`` is modified in place and restored exactly afterwards.

    Parameters
    ----------
    f : callable () -> float
    x : array, float64
    v : array of x's shape, float64 (usually a random unit vector)
    eps : float
    """
    _as_float64(x, "x")
    xp = get_array_module(x)
    v = xp.asarray(v, dtype=np.float64)
    if v.shape != x.shape:
        raise ValueError(f"directional_derivative: v has shape {v.shape}, x has {x.shape}")
    old = x.copy()
    x += eps * v
    s_plus = f()
    x[...] = old
    x -= eps * v
    s_minus = f()
    x[...] = old
    return (s_plus - s_minus) / (2 * eps)


def away_from_kinks(x: Any, margin: float = 1e-3) -> Any:
    """Return a copy of ``x`` in which no entry lies within ``margin`` of 0.

    Entries with ``|x| < margin`` are moved to ``+margin`` or ``-margin`` (their own
    sign; 0 goes to ``+margin``). With ``margin`` well above the finite-difference step,
    a central difference never straddles the kink of ReLU / leaky ReLU at 0.

    Parameters
    ----------
    x : array, any shape
    margin : float, > 0

    Returns
    -------
    array like x
    """
    if not margin > 0:
        raise ValueError(f"away_from_kinks: margin must be > 0, got {margin}")
    xp = get_array_module(x)
    near = xp.abs(x) < margin
    pushed = xp.where(x < 0, -margin, margin).astype(x.dtype)
    return xp.where(near, pushed, x)


def compare_gradients(
    name: str,
    analytic: Any,
    numeric: Any,
    rtol: float = 1e-5,
    atol: float = 1e-7,
    mode: str = "full",
    shape: tuple[int, ...] | None = None,
) -> GradientComparison:
    """Compare an analytic gradient with its numerical estimate, entry by entry.

    Parameters
    ----------
    name : str
        Used in the report.
    analytic, numeric : arrays of one shape (or 1-d arrays of directional derivatives)
    rtol, atol : float
        An entry passes when ``|analytic - numeric| <= atol + rtol |numeric|``.
    mode : {'full', 'directional'}
    shape : tuple of int, optional
        Shape of the gradient, for the report (default: ``analytic.shape``; give it in
        directional mode, where the arrays hold one value per direction).
    """
    a = to_numpy(analytic).astype(np.float64)
    n = to_numpy(numeric).astype(np.float64)
    if a.shape != n.shape:
        raise ValueError(f"compare_gradients: d{name} has shape {a.shape}, expected {n.shape}")
    err = np.abs(a - n)
    excess = err - (atol + rtol * np.abs(n))
    rel = err / np.maximum(np.maximum(np.abs(a), np.abs(n)), atol)
    if a.size == 0:
        return GradientComparison(name, mode, shape or a.shape, 0, 0, 0.0, 0.0, (), 0.0, 0.0)
    # the worst entry: the one furthest beyond the tolerance, a NaN before anything else
    score = np.where(np.isnan(excess), np.inf, excess)
    index = np.unravel_index(int(np.argmax(score)), a.shape)
    worst: Any = int(index[0]) if mode == "directional" else tuple(int(i) for i in index)
    return GradientComparison(
        name=name,
        mode=mode,
        shape=tuple(shape if shape is not None else a.shape),
        n_checked=int(a.size),
        n_failed=int((~(excess <= 0)).sum()),  # NaN counts as a failure
        max_abs_err=float(err.max()),
        max_rel_err=float(rel.max()),
        worst_index=worst,
        analytic_at_worst=float(a[index]),
        numeric_at_worst=float(n[index]),
    )


# --- checking a layer or a whole generator --------------------------------------------------------


def _named_params(obj: Any) -> Iterator[tuple[str, Any, Callable[[], Any]]]:
    """Yield (name, param, get_grad) for a layer (params/grads dicts) or a Generator."""
    if hasattr(obj, "named_parameters"):
        for name, p, _grad, layer in obj.named_parameters():
            key = name.split(".", 1)[1]
            yield name, p, (lambda layer=layer, key=key: layer.grads[key])
    elif hasattr(obj, "params"):
        for key, p in obj.params.items():
            yield key, p, (lambda key=key: obj.grads[key])


def _buffers(obj: Any) -> list[dict[str, Any]]:
    layers = getattr(obj, "layers", [obj])
    return [b for b in (getattr(layer, "buffers", None) for layer in layers) if b]


def _is_kinked(obj: Any) -> bool:
    from .layers import LeakyReLU, ReLU

    return isinstance(obj, (ReLU, LeakyReLU))


def _shape_mismatch(name: str, got: tuple[int, ...], expected: tuple[int, ...]):
    return GradientComparison(
        name=name,
        mode="full",
        shape=tuple(got),
        n_checked=1,
        n_failed=1,
        max_abs_err=math.inf,
        max_rel_err=math.inf,
        worst_index=(),
        analytic_at_worst=math.nan,
        numeric_at_worst=math.nan,
    )


def _unit_direction(rng: np.random.Generator, shape: tuple[int, ...], xp: Any) -> Any:
    v = rng.standard_normal(shape)
    return xp.asarray(v / np.linalg.norm(v))


def check_layer(
    layer: Any,
    x: Any,
    rng: np.random.Generator | None = None,
    eps: float = 1e-6,
    rtol: float = 1e-5,
    atol: float = 1e-7,
    params: bool = True,
    need_param_grads: bool = True,
    max_full_size: int = 4096,
    n_directions: int = 4,
    kink_margin: float | None = None,
) -> GradcheckReport:
    """Check a layer's (or a generator's) backward pass against central differences.

    Draws a random upstream gradient g of the output's shape and differentiates the
    scalar ``s(x, W) = <forward(x), g>``:

    * ``dx = backward(g, need_param_grads)`` is compared with the numerical ds/dx;
    * every parameter gradient (``layer.grads[name]`` after the backward pass, or each
      layer's for a Generator via ``named_parameters()``) with the numerical ds/dW,
      obtained by perturbing the parameter in place.

    A tensor with at most ``max_full_size`` entries is checked entry by entry, a bigger
    one along ``n_directions`` random unit directions.

    Parameters
    ----------
    layer : object with ``forward(x)`` and ``backward(dy, need_param_grads)``
        A float64 :class:`~abp_np.layers.Layer`, a :class:`~abp_np.generator.Generator`,
        or anything with ``params``/``grads`` dicts or ``named_parameters()``.
    x : array, float64
        The input (N, ...). It is copied, never modified.
    rng : numpy.random.Generator, optional
        Draws g and the directions (on the CPU, then moved to x's device). Default: seed 0.
    eps : float
        Finite-difference step.
    rtol, atol : float
        Tolerance per entry: ``|analytic - numeric| <= atol + rtol |numeric|``.
    params : bool
        Check the parameter gradients too (requires ``need_param_grads``).
    need_param_grads : bool
        Passed to ``backward``. With False only dx is checked.
    max_full_size : int
        Bigger tensors are checked along random directions.
    n_directions : int
    kink_margin : float, optional
        Move inputs within this margin of 0 away from it (:func:`away_from_kinks`).
        Default: ``1000 eps`` for a ReLU / LeakyReLU layer, no change otherwise.

    Returns
    -------
    GradcheckReport
        ``report.passed``, ``report['x']``, ``report['weight']``, ``print(report)``.
    """
    _as_float64(x, "x")
    if getattr(layer, "dtype", np.float64) != np.float64:
        raise ValueError(
            f"gradcheck: {layer!r} has dtype {layer.dtype}; finite differences need float64 "
            "(build it with dtype=np.float64)"
        )
    rng = rng if rng is not None else np.random.default_rng(0)
    xp = get_array_module(x)
    x = x.copy()
    notes = []
    if kink_margin is None and _is_kinked(layer):
        kink_margin = 1000 * eps
    if kink_margin:
        moved = int((xp.abs(x) < kink_margin).sum())
        x = away_from_kinks(x, kink_margin)
        if moved:
            notes.append(
                f"{moved} input entries moved to |x| = {kink_margin:g}, away from the kink"
            )
    check_params = params and need_param_grads
    saved_buffers = [{k: v.copy() for k, v in b.items()} for b in _buffers(layer)]

    # 1. analytic gradients: one forward, one backward with a random g
    y = layer.forward(x)
    g = xp.asarray(rng.standard_normal(y.shape))
    dx = layer.backward(g, need_param_grads).copy()
    named = list(_named_params(layer)) if check_params else []
    analytic = {name: get().copy() for name, _p, get in named}

    def s() -> float:
        return float((layer.forward(x) * g).sum())

    # 2. numerical gradients of the same scalar, input first, then each parameter
    plain = hasattr(layer, "layers") or type(layer).__repr__ is object.__repr__
    subject = type(layer).__name__ if plain else repr(layer)  # a Generator's repr is a table
    report = GradcheckReport(subject, eps, rtol, atol, notes=notes)
    for name, target, grad in [("x", x, dx)] + [(n, p, analytic[n]) for n, p, _ in named]:
        if grad.shape != target.shape:  # a backward pass that returns the wrong shape fails
            report.comparisons.append(_shape_mismatch(name, grad.shape, target.shape))
            report.notes.append(
                f"d{name} has shape {tuple(grad.shape)}, expected {tuple(target.shape)}"
            )
            continue
        if target.size <= max_full_size:
            num = numerical_gradient(s, target, eps)
            report.comparisons.append(compare_gradients(name, grad, num, rtol, atol))
        else:
            a, n = [], []
            for _ in range(n_directions):
                v = _unit_direction(rng, tuple(target.shape), xp)
                a.append(float((grad * v).sum()))
                n.append(directional_derivative(s, target, v, eps))
            report.comparisons.append(
                compare_gradients(
                    name, np.array(a), np.array(n), rtol, atol, "directional", tuple(grad.shape)
                )
            )

    for b, saved in zip(_buffers(layer), saved_buffers, strict=True):
        for k, v in saved.items():
            b[k][...] = v
    return report


def assert_gradients_close(layer: Any, x: Any, **kwargs: Any) -> GradcheckReport:
    """Run :func:`check_layer` and raise :class:`GradcheckError` (an AssertionError) on failure.

    The error message is the report: which gradient failed, how many entries, the
    largest absolute and relative errors, and where the worst entry is. Returns the
    report when everything passed.
    """
    return check_layer(layer, x, **kwargs).raise_if_failed()
