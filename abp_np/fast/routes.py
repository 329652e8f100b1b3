"""The route table: for each operation, the ways to compute it, tried in order.

Every operation of :mod:`abp_np.functional` is written once, as plain ``xp`` code that runs on
NumPy and CuPy alike: the *reference*. A *route* computes the same function faster on some
inputs. Each operation asks :func:`choose` which to take, and the table below answers it in
one place: the first route whose condition holds, the reference last, as Thinc's ``CupyOps``
overrides a method of ``Ops`` and falls back to it.

=============================  ============================================================
operation                      routes, in order (then ``"xp"``, the reference)
=============================  ============================================================
``conv_transpose2d_forward``   ``winograd`` (:mod:`~abp_np.fast.winograd`),
                               ``winograd_kept`` (the learning step's forward pass with
                               the U the Langevin loop kept; backward by the columns),
                               ``winograd1d`` (:mod:`~abp_np.fast.winograd1d`, 1-D
                               layers), ``cuda`` (:mod:`~abp_np.fast.cuda`), ``phases``,
                               ``columns`` (:mod:`~abp_np.fast.columns`)
``conv_transpose2d_backward``  ``winograd``, ``winograd1d`` (for a cache of that route),
                               ``cuda``, ``taps`` (dx alone, few input channels), ``blocks``
                               (:mod:`~abp_np.fast.columns`)
``batchnorm_forward``          ``c`` (:mod:`~abp_np.fast.cpu`, batch statistics), ``cuda``
                               (:mod:`~abp_np.fast.cuda`, batch statistics)
``batchnorm_backward``         ``c``, ``cuda``
``batchnorm_update_running``   ``cuda`` (the running statistics in one launch)
``langevin_step``              ``cuda`` (the fused update of equation (5))
``matmul`` (2-D: the fully     ``cuda`` (:mod:`~abp_np.fast.cublas`: cuBLAS called directly,
connected layer)               which a CUDA graph can record)
``relu_forward``,              ``c`` (:mod:`~abp_np.fast.cpu`: the C kernel on the pool's
``relu_backward``              threads), ``threads`` (:mod:`~abp_np.fast.elementwise`)
the other activations,         ``threads`` (:mod:`~abp_np.fast.elementwise`: ranges of
``max_abs``                    elements on several threads)
``optimizer_update``           ``c`` (SGD: :func:`abp_np.fast.cpu.sgd_update`, one pass on the
                               pool's threads), ``threads``
=============================  ============================================================

Each route's condition reads the arrays (NumPy or CuPy, dtype, size) and the settings of
:func:`abp_np.backend.using` (``cuda``, ``c``, ``winograd``, ``cpu_forms``); nowhere else is a
route chosen. The forward pass records the route it took in its cache (``cache.route``), and the
backward pass of the Winograd route is chosen by the cache's type.

The reference entry has no function (``run`` is None): it is the ``xp`` code of
:mod:`abp_np.functional` (and of ``ABP._langevin_step`` in :mod:`abp_np.abp`), which this module
does not import, as no speed route imports the method above it.

What ``when`` and ``run`` receive, per operation:

* ``conv_transpose2d_forward``: ``(x, weight, bias, stride, padding, out_hw, derived)``; ``run``
  returns ``(y, cache)``, with cache None when the route needs only what the reference keeps (a
  :class:`~abp_np.functional.DeconvCache`), else its own (a ``WinogradCache``).
* ``conv_transpose2d_backward``, ``batchnorm_backward``: ``(dy, cache, need_param_grads)``;
  ``run`` returns the op's gradients, ``(dx, dW, db)`` or ``(dx, dgamma, dbeta)``.
* ``batchnorm_forward``: ``(x, gamma, beta, eps, mean, var)``; ``run`` returns
  ``(y, xc, inv_std, mean, var)``, the batch statistics last.
* ``langevin_step``: ``when(z)``, chosen once per chain; ``run(z, dz_data, noise, delta)``
  updates z in place.
* ``matmul``: ``(a, b)``, two 2-D arrays; ``run`` returns ``a @ b``.
* ``batchnorm_update_running``: ``when(running_mean, running_var, mean, var)``;
  ``run(running_mean, running_var, mean, var, momentum, m)`` updates the first two in place.
* ``relu_forward``, ``tanh_forward``: ``(x)``; ``leaky_relu_forward``: ``when(x)``,
  ``run(x, slope)``; each ``run`` returns y. ``relu_backward``, ``tanh_backward``:
  ``(dy, y, out)``; ``leaky_relu_backward``: ``when(dy, y, out)``, ``run(dy, y, slope, out)``;
  each ``run`` returns dx.
* ``max_abs``: ``(g)``; ``run`` returns max |g| (the optimisers' clipping, :mod:`abp_np.optim`).
* ``optimizer_update``: ``(optimizer, p, g, *state)``; ``run(optimizer, p, g, state, lr, scale,
  decay)`` computes ``optimizer._apply(p, g, state, lr, scale, decay)`` (:mod:`abp_np.optim`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from ..backend import get_array_module, switches
from . import columns, elementwise, threads, winograd, winograd1d
from . import cpu as _cpu
from . import cublas as _cublas
from . import cuda as _cuda

__all__ = ["REFERENCE", "TABLE", "Route", "choose", "names"]


class Route(NamedTuple):
    """One way to compute an operation."""

    name: str  # recorded in the caches, e.g. "winograd"
    when: Callable[..., bool]  # does this route take these arguments now?
    run: Callable[..., Any] | None  # the route; None for the reference in abp_np.functional


def _always(*args: Any) -> bool:
    return True


#: The last entry of every operation: the plain ``xp`` code of :mod:`abp_np.functional`.
REFERENCE = Route("xp", _always, None)


# --- conditions -----------------------------------------------------------------------------------


def _on_cpu(a: Any) -> bool:
    return get_array_module(a) is np


def _kernel_fits(a: Any) -> bool:
    """A non-empty float32 / float64 array: what the compiled kernels take."""
    return a.size > 0 and a.dtype in (np.float32, np.float64)


def _cuda_runs(a: Any) -> bool:
    """``a`` is a CuPy array the CUDA kernels take, and they are switched on."""
    return switches().cuda and not _on_cpu(a) and _kernel_fits(a)


def _cpu_forms(a: Any) -> bool:
    return switches().cpu_forms and _on_cpu(a)


# --- transposed convolution -----------------------------------------------------------------------


def _winograd_plan(x, weight, stride, padding, out_hw, derived) -> winograd.Plan | None:
    if not _on_cpu(x):
        return None
    learning = getattr(derived, "learning", False)  # a Derived of the learning step's block
    return winograd.choose(
        x, weight, stride, padding, out_hw, reuse=derived is not None, learning=learning
    )


def _winograd_takes(x, weight, bias, stride, padding, out_hw, derived) -> bool:
    return _winograd_plan(x, weight, stride, padding, out_hw, derived) is not None


def _winograd_forward(x, weight, bias, stride, padding, out_hw, derived):
    plan = _winograd_plan(x, weight, stride, padding, out_hw, derived)
    return winograd.forward(x, weight, plan, bias, derived)


def _kept_u_plan(x, weight, stride, padding, out_hw, derived) -> winograd.Plan | None:
    """In the learning step's block, a layer the Winograd route leaves to the columns (its U
    too large to form U's gradient beside it) but whose U the Langevin loop kept: that plan."""
    if not (_on_cpu(x) and getattr(derived, "learning", False)):
        return None
    return winograd.kept(x, weight, stride, padding, out_hw, derived)


def _kept_u_takes(x, weight, bias, stride, padding, out_hw, derived) -> bool:
    return _kept_u_plan(x, weight, stride, padding, out_hw, derived) is not None


def _kept_u_forward(x, weight, bias, stride, padding, out_hw, derived):
    """The forward pass on the Winograd route with the kept U, and a cache of the columns' kind:
    the backward pass with weight gradients takes the column blocks, as it would have. No
    pass of the block needs U again, so it is dropped here, before the backward pass."""
    plan = _kept_u_plan(x, weight, stride, padding, out_hw, derived)
    y, _ = winograd.forward(x, weight, plan, bias, derived)
    winograd.forget(derived, plan)
    return y, None


def _winograd1d_plan(x, weight, stride, padding, out_hw) -> winograd1d.Plan1d | None:
    return winograd1d.choose(x, weight, stride, padding, out_hw) if _on_cpu(x) else None


def _winograd1d_takes(x, weight, bias, stride, padding, out_hw, derived) -> bool:
    return _winograd1d_plan(x, weight, stride, padding, out_hw) is not None


def _winograd1d_forward(x, weight, bias, stride, padding, out_hw, derived):
    plan = _winograd1d_plan(x, weight, stride, padding, out_hw)
    return winograd1d.forward(x, weight, plan, bias, derived)


def _cuda_forward_takes(x, weight, bias, stride, padding, out_hw, derived) -> bool:
    return _cuda_runs(x)


def _cuda_forward(x, weight, bias, stride, padding, out_hw, derived):
    return _cuda.conv_transpose2d_forward(x, weight, bias, stride, padding, out_hw), None


def _phases_take(x, weight, bias, stride, padding, out_hw, derived) -> bool:
    """The phase form where it moves less data: the column buffer (Cout kh kw, N H W) is larger
    than x (Cout kh kw > 2 Cin) and than the weights (N H W > Cin), which the phase form copies
    into its GEMM layout while the column form's GEMM reads them in place."""
    N, Cin, H, W = x.shape
    _, Cout, kh, kw = weight.shape
    return _cpu_forms(x) and Cout * kh * kw > 2 * Cin and N * H * W > Cin


def _phases_forward(x, weight, bias, stride, padding, out_hw, derived):
    return columns.conv_transpose2d_phases(x, weight, bias, stride, padding, out_hw, derived), None


def _columns_take(x, weight, bias, stride, padding, out_hw, derived) -> bool:
    return _cpu_forms(x)


def _columns_forward(x, weight, bias, stride, padding, out_hw, derived):
    return columns.conv_transpose2d_columns(x, weight, bias, stride, padding, out_hw), None


def _winograd_cache(dy, cache, need_param_grads) -> bool:
    return isinstance(cache, winograd.WinogradCache)


def _winograd_backward(dy, cache, need_param_grads):
    return winograd.backward(dy, cache, need_param_grads)


def _winograd1d_cache(dy, cache, need_param_grads) -> bool:
    return isinstance(cache, winograd1d.Winograd1dCache)


def _winograd1d_backward(dy, cache, need_param_grads):
    return winograd1d.backward(dy, cache, need_param_grads)


def _cuda_backward_takes(dy, cache, need_param_grads) -> bool:
    return _cuda_runs(dy)


def _cuda_backward(dy, cache, need_param_grads):
    c = cache  # a DeconvCache
    args = (c.x, c.weight, c.has_bias, c.stride, c.padding, need_param_grads)
    return _cuda.conv_transpose2d_backward(dy, *args)


def _taps_take(dy, cache, need_param_grads) -> bool:
    return (
        not need_param_grads and _cpu_forms(dy) and columns.taps_worth_it(dy, cache.x, cache.weight)
    )


def _taps_backward(dy, cache, need_param_grads):  # cache: a DeconvCache
    dx = columns.conv_transpose2d_dx_taps(
        dy, cache.weight, cache.x.shape[2:], cache.stride, cache.padding
    )
    return dx, None, None


def _blocks_take(dy, cache, need_param_grads) -> bool:
    return _cpu_forms(dy)


def _blocks_backward(dy, cache, need_param_grads):
    c = cache  # a DeconvCache
    args = (c.x, c.weight, c.has_bias, c.stride, c.padding, need_param_grads)
    return columns.conv_transpose2d_backward(dy, *args)


# --- batch normalisation --------------------------------------------------------------------------


def _c_batchnorm_takes(x, gamma, beta, eps, mean, var) -> bool:
    return mean is None and _on_cpu(x) and _kernel_fits(x) and _cpu.enabled()


def _c_batchnorm_backward_takes(dy, cache, need_param_grads) -> bool:
    return (
        cache.mean is not None
        and _on_cpu(dy)
        and _kernel_fits(dy)
        and dy.dtype == cache.xc.dtype
        and _cpu.enabled()
    )


def _cuda_batchnorm_takes(x, gamma, beta, eps, mean, var) -> bool:
    return (
        mean is None
        and _cuda_runs(x)
        and gamma is not None
        and beta is not None
        and gamma.dtype == beta.dtype == x.dtype
    )


def _cuda_batchnorm_backward_takes(dy, cache, need_param_grads) -> bool:
    return (
        cache.mean is not None
        and _cuda_runs(dy)
        and dy.dtype == cache.xc.dtype == cache.inv_std.dtype == cache.gamma.dtype
    )


def _cuda_running_takes(running_mean, running_var, mean, var) -> bool:
    arrays = (running_mean, running_var, mean, var)
    return _cuda_runs(running_mean) and all(
        a.dtype == running_mean.dtype and a.shape == running_mean.shape and a.flags.c_contiguous
        for a in arrays
    )


# --- the 2-D product (the fully connected layer, the projections) ---------------------------------


def _cuda_matmul_takes(a, b) -> bool:
    return _cuda_runs(a) and a.ndim == 2 and b.ndim == 2 and b.dtype == a.dtype


# --- the Langevin update --------------------------------------------------------------------------


def _cuda_langevin_takes(z) -> bool:
    return _cuda_runs(z)


# --- the activations ------------------------------------------------------------------------------


def _threads_take(*arrays) -> bool:
    """C-contiguous NumPy arrays of one shape (None: no ``out``), large enough to split."""
    x = arrays[0]
    return (
        _on_cpu(x)
        and all(a is None or (a.flags.c_contiguous and a.shape == x.shape) for a in arrays)
        and x.size >= threads.MIN_WORK
        and threads.count() > 1
    )


def _c_sgd_takes(optimizer, *arrays) -> bool:
    """SGD's update (``optimizer._kernel``), on arrays :func:`_c_relu_takes` would take: the
    compiled update on the pool's threads (:func:`abp_np.fast.cpu.sgd_update`)."""
    return optimizer._kernel == "sgd_update" and _c_relu_takes(*arrays)


def _threads_update_takes(optimizer, *arrays) -> bool:
    return _threads_take(*arrays)


def _c_relu_takes(*arrays) -> bool:
    """What :func:`_threads_take` takes, of one float dtype, with the C kernels and their
    pool on (not ``ABP_C_POOL=0``): the ReLU kernel on the pool's threads
    (:func:`abp_np.fast.cpu.relu_forward`)."""
    return (
        _threads_take(*arrays)
        and all(a is None or a.dtype == arrays[0].dtype for a in arrays)
        and _cpu.pooled(arrays[0].dtype)
    )


# --- the table ------------------------------------------------------------------------------------

#: For each operation, its routes in the order they are tried; the reference last.
TABLE: dict[str, tuple[Route, ...]] = {
    "conv_transpose2d_forward": (
        Route("winograd", _winograd_takes, _winograd_forward),
        Route("winograd_kept", _kept_u_takes, _kept_u_forward),
        Route("winograd1d", _winograd1d_takes, _winograd1d_forward),
        Route("cuda", _cuda_forward_takes, _cuda_forward),
        Route("phases", _phases_take, _phases_forward),
        Route("columns", _columns_take, _columns_forward),
        REFERENCE,
    ),
    "conv_transpose2d_backward": (
        Route("winograd", _winograd_cache, _winograd_backward),
        Route("winograd1d", _winograd1d_cache, _winograd1d_backward),
        Route("cuda", _cuda_backward_takes, _cuda_backward),
        Route("taps", _taps_take, _taps_backward),
        Route("blocks", _blocks_take, _blocks_backward),
        REFERENCE,
    ),
    "batchnorm_forward": (
        Route("c", _c_batchnorm_takes, _cpu.batchnorm_forward),
        Route("cuda", _cuda_batchnorm_takes, _cuda.batchnorm_forward),
        REFERENCE,
    ),
    "batchnorm_backward": (
        Route("c", _c_batchnorm_backward_takes, _cpu.batchnorm_backward),
        Route("cuda", _cuda_batchnorm_backward_takes, _cuda.batchnorm_backward),
        REFERENCE,
    ),
    "batchnorm_update_running": (
        Route("cuda", _cuda_running_takes, _cuda.batchnorm_update_running),
        REFERENCE,
    ),
    "langevin_step": (
        Route("cuda", _cuda_langevin_takes, _cuda.langevin_step_),
        REFERENCE,
    ),
    "matmul": (
        Route("cuda", _cuda_matmul_takes, _cublas.matmul),
        REFERENCE,
    ),
    "optimizer_update": (
        Route("c", _c_sgd_takes, _cpu.sgd_update),
        Route("threads", _threads_update_takes, elementwise.optimizer_update),
        REFERENCE,
    ),
    **{
        op: (
            Route("c", _c_relu_takes, getattr(_cpu, op)),
            Route("threads", _threads_take, getattr(elementwise, op)),
            REFERENCE,
        )
        for op in ("relu_forward", "relu_backward")
    },
    **{
        op: (Route("threads", _threads_take, getattr(elementwise, op)), REFERENCE)
        for op in (
            "max_abs",
            "leaky_relu_forward",
            "leaky_relu_backward",
            "tanh_forward",
            "tanh_backward",
        )
    },
}


def choose(op: str, *args: Any) -> Route:
    """The first route of ``op`` in :data:`TABLE` whose condition holds for ``args``.

    Returns :data:`REFERENCE` (``run`` None) when no speed route takes them.
    """
    for route in TABLE[op]:
        if route.when(*args):
            return route
    return REFERENCE  # not reached: every list ends with the reference


def names(op: str) -> list[str]:
    """The names of ``op``'s routes, in the order they are tried."""
    return [route.name for route in TABLE[op]]
