"""Layers: thin objects around the pure pairs of :mod:`abp_np.functional`.

Every layer has

* ``params`` and ``grads``: dicts with the same keys (``weight``, ``bias``), arrays
  updated in place by the optimisers;
* ``forward(x) -> y``, which checks its input and overwrites the layer's one cache;
* ``backward(dy, need_param_grads=True) -> dx``, which fills ``grads`` only when asked;
* ``release()``, which lets go of the cache once no backward pass will need it.

Names, shapes and semantics follow PyTorch (``nn.Linear``, ``nn.ConvTranspose2d``,
``nn.BatchNorm2d`` ...), so that a model can be checked against or ported from it.

To add a layer: write its ``*_forward`` / ``*_backward`` pair in ``functional.py``,
a subclass of :class:`Layer` here that checks its input and calls them, and a gradient
test in ``tests/test_layers.py``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import functional as F
from .backend import check_float_dtype, get_array_module, pair, resolve_device, to_device

__all__ = [
    "Layer",
    "Linear",
    "ConvTranspose2d",
    "ConvTranspose1d",
    "BatchNorm1d",
    "BatchNorm2d",
    "ReLU",
    "LeakyReLU",
    "Tanh",
    "Reshape",
]


class Derived(dict):
    """What a layer derives from its weights and keeps while they are fixed, by name: the
    layer's store inside :meth:`Generator.fixed_weights
    <abp_np.generator.Generator.fixed_weights>`.

    ``learning``: the block is one learning step (a forward pass and the backward pass with
    weight gradients, :meth:`ABP.learn <abp_np.abp.ABP.learn>`) rather than the Langevin
    loop's many passes; a route may choose by it (:func:`abp_np.fast.winograd.worth_it`).
    """

    def __init__(self, learning: bool = False) -> None:
        super().__init__()
        self.learning = learning


class Layer:
    """Base class. Subclasses set ``params``/``grads`` and implement ``_forward``/``_backward``."""

    def __init__(self, dtype: Any = np.float32) -> None:
        self.dtype = check_float_dtype(dtype, type(self).__name__)
        self.params: dict[str, Any] = {}
        self.grads: dict[str, Any] = {}
        self.buffers: dict[str, Any] = {}  # state that is not learned (running statistics)
        self.training = True
        self._cache: Any = None
        self._out_shape: tuple[int, ...] | None = None  # shape of the last forward's output
        # Quantities derived from the weights and kept between calls while they are fixed
        # (a Derived inside Generator.fixed_weights(), else None): see ConvTranspose2d.
        self._derived: Derived | None = None

    # -- the contract -----------------------------------------------------------------------------
    def forward(self, x: Any) -> Any:
        """Compute the layer's output; keep what the backward pass needs."""
        self._check_input(x)
        self._out_shape = None  # a forward that fails leaves nothing to back-propagate
        self._cache = None  # the last pass's saved values go before this pass makes its own
        y = self._forward(x)
        self._out_shape = tuple(y.shape)
        return y

    def backward(self, dy: Any, need_param_grads: bool = True, overwrite_dy: bool = False) -> Any:
        """Return dL/dx given dL/dy; fill ``grads`` only when ``need_param_grads``.

        ``dy`` must have the shape of the output of the last :meth:`forward`; this is
        checked before any computation. ``overwrite_dy``: the caller has no further use for
        ``dy``, so a layer whose dx has dy's shape may compute it in dy's memory (as SciPy's
        ``overwrite_a``); :meth:`Generator.backward <abp_np.generator.Generator.backward>`
        says so for the gradients it made itself, which saves an array per activation layer.
        """
        if self._cache is None or self._out_shape is None:
            raise RuntimeError(
                f"{self}: backward() called before forward(); run forward(x) first, then "
                "backward(dy) with dy of the output's shape"
            )
        if not hasattr(dy, "shape") or not hasattr(dy, "dtype"):
            raise ValueError(f"{self}: dy must be a NumPy or CuPy array, got {type(dy).__name__}")
        if tuple(dy.shape) != self._out_shape:
            raise ValueError(
                f"{self}: dy has shape {tuple(dy.shape)}, expected {self._out_shape} (the shape "
                "of the output of the last forward)"
            )
        return self._backward(dy, need_param_grads, overwrite_dy)

    def release(self) -> None:
        """Let go of what the last forward pass saved (a new forward is needed to back-propagate).

        :meth:`Generator.backward <abp_np.generator.Generator.backward>` calls it on each
        layer once that layer's backward has run, so that the saved activations of the layers
        above are freed while the layers below are still working.
        """
        self._cache = None
        self._out_shape = None

    __call__ = forward

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of the output for an input of ``input_shape`` (batch axis included)."""
        return tuple(input_shape)

    # -- housekeeping ------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> Layer:
        self.training = bool(mode)
        return self

    def eval(self) -> Layer:
        return self.train(False)

    def to(self, device: str) -> Layer:
        """Move parameters, gradients and buffers to 'cpu' or 'gpu'."""
        resolve_device(device)
        for d in (self.params, self.grads, self.buffers):
            for k in d:
                d[k] = to_device(d[k], device)
        self._cache = None
        self._out_shape = None
        self._forget_derived()
        return self

    def zero_grad(self) -> None:
        for g in self.grads.values():
            g[...] = 0

    def num_params(self) -> int:
        return int(sum(p.size for p in self.params.values()))

    def _forget_derived(self) -> None:
        """Drop what was derived from the weights (they changed); keep deriving if fixed."""
        if self._derived is not None:
            self._derived.clear()

    def _set_param(self, name: str, value: Any) -> None:
        self._forget_derived()
        self.params[name] = value
        xp = get_array_module(value)
        self.grads[name] = xp.zeros_like(value)

    def _check_input(self, x: Any) -> None:
        if not hasattr(x, "ndim") or not hasattr(x, "dtype"):
            raise ValueError(f"{self}: expected a NumPy or CuPy array, got {type(x).__name__}")
        if x.dtype != self.dtype:
            raise ValueError(
                f"{self}: input dtype is {x.dtype}, expected {self.dtype} "
                f"(convert with x.astype('{self.dtype}') or build the layer with dtype={x.dtype})"
            )
        for name, p in self.params.items():
            if get_array_module(p) is not get_array_module(x):
                raise ValueError(
                    f"{self}: input is on {'gpu' if get_array_module(x) is not np else 'cpu'} "
                    f"but parameter {name!r} is not; move the model with .to(device)"
                )

    def _expect_ndim(self, x: Any, ndim: int, layout: str) -> None:
        if x.ndim != ndim:
            raise ValueError(
                f"{self}: expected a {ndim}-d input {layout}, got shape {tuple(x.shape)}"
            )

    def _expect_channels(self, x: Any, c: int) -> None:
        if x.shape[1] != c:
            raise ValueError(
                f"{self}: expected {c} channels on axis 1, got {x.shape[1]} (input shape "
                f"{tuple(x.shape)})"
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._extra_repr()})"

    def _extra_repr(self) -> str:
        return ""

    def _forward(self, x: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _backward(self, dy: Any, need_param_grads: bool, overwrite_dy: bool) -> Any:
        raise NotImplementedError  # pragma: no cover

    def _store_grads(self, **grads: Any) -> None:
        """Write parameter gradients into ``self.grads`` in place (``None`` entries skipped).

        ``weight=dW`` fills ``self.grads["weight"]``, reshaped to its shape if needed.
        """
        for name, g in grads.items():
            if g is not None:
                self.grads[name][...] = g.reshape(self.grads[name].shape)


def _normal(rng: Any, shape: tuple[int, ...], std: float, dtype: np.dtype) -> np.ndarray:
    rng = rng if rng is not None else np.random.default_rng()
    return (std * rng.standard_normal(shape)).astype(dtype)


class Linear(Layer):
    """Fully connected layer, y = x W^T + b (PyTorch's ``nn.Linear``).

    Parameters
    ----------
    in_features, out_features : int
    bias : bool
    init_std : float
        Weights are drawn from N(0, init_std^2) (the paper's code used 0.005); biases are 0.
    rng : numpy.random.Generator, optional

    Shapes: x (N, in_features) -> y (N, out_features); weight (out_features, in_features).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        dtype: Any = np.float32,
        init_std: float = 0.005,
        rng: Any = None,
    ) -> None:
        super().__init__(dtype)
        if int(in_features) < 1 or int(out_features) < 1:
            raise ValueError(f"Linear: features must be >= 1, got {in_features}, {out_features}")
        self.in_features, self.out_features = int(in_features), int(out_features)
        self._set_param(
            "weight", _normal(rng, (self.out_features, self.in_features), init_std, self.dtype)
        )
        if bias:
            self._set_param("bias", np.zeros(self.out_features, self.dtype))

    def _extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}"

    def output_shape(self, input_shape):
        return (input_shape[0], self.out_features)

    def _forward(self, x):
        self._expect_ndim(x, 2, "(N, in_features)")
        if x.shape[1] != self.in_features:
            raise ValueError(
                f"{self}: expected {self.in_features} input features, got shape {tuple(x.shape)}"
            )
        y, self._cache = F.linear_forward(x, self.params["weight"], self.params.get("bias"))
        return y

    def _backward(self, dy, need_param_grads, overwrite_dy):
        dx, dW, db = F.linear_backward(dy, self._cache, need_param_grads)
        if need_param_grads:
            self._store_grads(weight=dW, bias=db)
        return dx


class ConvTranspose2d(Layer):
    """Transposed 2-D convolution (PyTorch's ``nn.ConvTranspose2d``, groups = dilation = 1).

    The data-gradient of a convolution, used to up-sample: with kernel 5, stride 2,
    padding 2, output_padding 1 it doubles the image size (the paper's layers).

    Shapes: x (N, Cin, H, W) -> y (N, Cout, Hout, Wout),
    Hout = (H - 1) stride - 2 padding + kernel_size + output_padding;
    weight (Cin, Cout, kh, kw); bias (Cout,).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = 0,
        output_padding: Any = 0,
        bias: bool = True,
        dtype: Any = np.float32,
        init_std: float = 0.005,
        rng: Any = None,
    ) -> None:
        super().__init__(dtype)
        name = type(self).__name__
        if int(in_channels) < 1 or int(out_channels) < 1:
            raise ValueError(f"{name}: channels must be >= 1, got {in_channels}, {out_channels}")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = pair(kernel_size, "kernel_size", name, 1)
        self.stride = pair(stride, "stride", name, 1)
        self.padding = pair(padding, "padding", name, 0)
        self.output_padding = pair(output_padding, "output_padding", name, 0)
        for op, s in zip(self.output_padding, self.stride):
            if op >= s:
                raise ValueError(
                    f"{name}: output_padding must be smaller than stride, got "
                    f"output_padding={output_padding!r}, stride={stride!r}"
                )
        shape = (self.in_channels, self.out_channels, *self.kernel_size)
        self._set_param("weight", _normal(rng, shape, init_std, self.dtype))
        if bias:
            self._set_param("bias", np.zeros(self.out_channels, self.dtype))

    def _extra_repr(self) -> str:
        def fmt(p: tuple[int, int]) -> str:
            return str(p[0]) if p[0] == p[1] else str(p)

        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={fmt(self.kernel_size)}, "
            f"stride={fmt(self.stride)}, padding={fmt(self.padding)}, "
            f"output_padding={fmt(self.output_padding)}"
        )

    def _out_hw(self, h: int, w: int) -> tuple[int, int]:
        (kh, kw), (sh, sw), (ph, pw), (oh, ow) = (
            self.kernel_size,
            self.stride,
            self.padding,
            self.output_padding,
        )
        return (
            F.conv_transpose_output_size(h, kh, sh, ph, oh),
            F.conv_transpose_output_size(w, kw, sw, pw, ow),
        )

    def output_shape(self, input_shape):
        n, _, h, w = input_shape
        return (n, self.out_channels, *self._out_hw(h, w))

    def _forward(self, x):
        self._expect_ndim(x, 4, "(N, C, H, W)")
        self._expect_channels(x, self.in_channels)
        hout, wout = self._out_hw(x.shape[2], x.shape[3])
        if hout < 1 or wout < 1:
            raise ValueError(f"{self}: input of shape {tuple(x.shape)} gives an empty output")
        y, self._cache = F.conv_transpose2d_forward(
            x,
            self.params["weight"],
            self.params.get("bias"),
            self.stride,
            self.padding,
            self.output_padding,
            derived=self._derived,
        )
        return y

    def _backward(self, dy, need_param_grads, overwrite_dy):
        dx, dW, db = F.conv_transpose2d_backward(dy, self._cache, need_param_grads)
        if need_param_grads:
            self._store_grads(weight=dW, bias=db)
        return dx


class ConvTranspose1d(ConvTranspose2d):
    """Transposed 1-D convolution (PyTorch's ``nn.ConvTranspose1d``), for sound.

    Runs as a 2-D one with height 1. Shapes: x (N, Cin, L) -> y (N, Cout, Lout),
    Lout = (L - 1) stride - 2 padding + kernel_size + output_padding;
    weight (Cin, Cout, k). The paper's sound layers: kernel 25, stride 10.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        output_padding: int = 0,
        bias: bool = True,
        dtype: Any = np.float32,
        init_std: float = 0.005,
        rng: Any = None,
    ) -> None:
        for name, v in (
            ("kernel_size", kernel_size),
            ("stride", stride),
            ("padding", padding),
            ("output_padding", output_padding),
        ):
            if isinstance(v, (tuple, list)):
                raise ValueError(f"ConvTranspose1d: {name} must be an int, got {v!r}")
        super().__init__(
            in_channels,
            out_channels,
            (1, kernel_size),
            (1, stride),
            (0, padding),
            (0, output_padding),
            bias,
            dtype,
            init_std,
            rng,
        )
        # PyTorch's weight shape (Cin, Cout, k) is a view of the 2-D (Cin, Cout, 1, k)
        self._set_param(
            "weight",
            self.params["weight"].reshape(self.in_channels, self.out_channels, self.kernel_size[1]),
        )

    def _extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size[1]}, "
            f"stride={self.stride[1]}, padding={self.padding[1]}, "
            f"output_padding={self.output_padding[1]}"
        )

    def output_shape(self, input_shape):
        n, _, length = input_shape
        return (n, self.out_channels, self._out_hw(1, length)[1])

    def _forward(self, x):
        self._expect_ndim(x, 3, "(N, C, L)")
        self._expect_channels(x, self.in_channels)
        if self._out_hw(1, x.shape[2])[1] < 1:
            raise ValueError(f"{self}: input of shape {tuple(x.shape)} gives an empty output")
        y, self._cache = F.conv_transpose2d_forward(
            x[:, :, None, :],
            self._weight_2d(),
            self.params.get("bias"),
            self.stride,
            self.padding,
            self.output_padding,
            derived=self._derived,
        )
        return y[:, :, 0, :]

    def _weight_2d(self) -> Any:
        """The weight (Cin, Cout, k) as the 2-D layer's (Cin, Cout, 1, k), a view. Inside
        :meth:`Generator.fixed_weights <abp_np.generator.Generator.fixed_weights>` the same view
        object is handed out on every call, so that what the routes derive from it (and key on
        its identity) is reused."""
        w = self.params["weight"]
        if self._derived is None:
            return w.reshape(*w.shape[:2], 1, w.shape[2])
        kept = self._derived.get("weight 2-D")
        if kept is None or kept[0] is not w:
            kept = self._derived["weight 2-D"] = (w, w.reshape(*w.shape[:2], 1, w.shape[2]))
        return kept[1]

    def _backward(self, dy, need_param_grads, overwrite_dy):
        dx, dW, db = F.conv_transpose2d_backward(dy[:, :, None, :], self._cache, need_param_grads)
        if need_param_grads:
            self._store_grads(weight=dW, bias=db)
        return dx[:, :, 0, :]


class _BatchNorm(Layer):
    """Shared code of BatchNorm1d / BatchNorm2d.

    In training mode (the default) the layer normalises with the statistics of the
    current batch, as the paper's code always did, during Langevin inference, learning
    and synthesis alike; so one example's output depends on the rest of its batch.
    Running averages (PyTorch's momentum rule) are kept in ``buffers`` for an
    evaluation mode (``eval()``), and never enter ``params``. As in PyTorch, a
    training-mode forward pass moves them, except while ``update_running_stats`` is False:
    :meth:`Generator.frozen_statistics <abp_np.generator.Generator.frozen_statistics>` sets it
    so, and :meth:`ABP.infer <abp_np.abp.ABP.infer>`, ``reconstruct`` and ``sample`` run
    inside that block; so only training moves them. In training mode ABP never reads them.
    """

    _ndims: tuple[int, ...] = ()
    _layout = ""

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float = 0.1,
        affine: bool = True,
        dtype: Any = np.float32,
    ) -> None:
        super().__init__(dtype)
        name = type(self).__name__
        if int(num_features) < 1:
            raise ValueError(f"{name}: num_features must be >= 1, got {num_features!r}")
        if isinstance(eps, bool) or not (
            isinstance(eps, (int, float, np.floating)) and math.isfinite(eps) and eps > 0
        ):
            raise ValueError(
                f"{name}: eps must be a finite number > 0 (it keeps 1/sqrt(var + eps) finite), "
                f"got {eps!r}; PyTorch's default is 1e-5"
            )
        if isinstance(momentum, bool) or not (
            isinstance(momentum, (int, float, np.floating)) and 0 <= momentum <= 1
        ):
            raise ValueError(
                f"{name}: momentum must be a number in [0, 1] (the weight of the new batch in the "
                f"running statistics), got {momentum!r}"
            )
        self.num_features, self.eps, self.momentum = int(num_features), float(eps), float(momentum)
        self.affine = affine
        self.update_running_stats = True  # False: a training-mode pass leaves them as they are
        c = self.num_features
        if affine:
            self._set_param("weight", np.ones(c, self.dtype))
            self._set_param("bias", np.zeros(c, self.dtype))
        else:
            # gamma = 1 and beta = 0, not learned: y is the normalised x
            self._unit_affine = {"weight": np.ones(c, self.dtype), "bias": np.zeros(c, self.dtype)}
        stat = np.promote_types(self.dtype, np.float32)
        self.buffers["running_mean"] = np.zeros(c, stat)
        self.buffers["running_var"] = np.ones(c, stat)

    def to(self, device):
        super().to(device)
        if not self.affine:
            self._unit_affine = {k: to_device(v, device) for k, v in self._unit_affine.items()}
        return self

    def _extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}"
        )

    def _forward(self, x):
        if x.ndim not in self._ndims:
            raise ValueError(
                f"{self}: expected an input {self._layout}, got shape {tuple(x.shape)}"
            )
        self._expect_channels(x, self.num_features)
        axes = (0,) + tuple(range(2, x.ndim))
        p = self.params if self.affine else self._unit_affine
        if self.training:
            m = x.size // x.shape[1]
            if m < 2:
                raise ValueError(
                    f"{self}: batch statistics need more than one value per channel, got input "
                    f"shape {tuple(x.shape)}"
                )
            y, self._cache = F.batchnorm_forward(x, p["weight"], p["bias"], self.eps, axes)
            mu, var = self._cache.mean, self._cache.var  # the batch statistics
            if self.momentum > 0 and self.update_running_stats:
                rm, rv = self.buffers["running_mean"], self.buffers["running_var"]
                F.batchnorm_update_running(rm, rv, mu, var, self.momentum, m)
        else:
            y, self._cache = F.batchnorm_forward(
                x,
                p["weight"],
                p["bias"],
                self.eps,
                axes,
                self.buffers["running_mean"],
                self.buffers["running_var"],
            )
        return y

    def _backward(self, dy, need_param_grads, overwrite_dy):
        dx, dgamma, dbeta = F.batchnorm_backward(dy, self._cache, need_param_grads)
        if need_param_grads and self.affine:
            self._store_grads(weight=dgamma, bias=dbeta)
        return dx


class BatchNorm1d(_BatchNorm):
    """Batch norm over (N, C) or (N, C, L) inputs (PyTorch's ``nn.BatchNorm1d``)."""

    _ndims = (2, 3)
    _layout = "(N, C) or (N, C, L)"


class BatchNorm2d(_BatchNorm):
    """Batch norm over (N, C, H, W) inputs (PyTorch's ``nn.BatchNorm2d``)."""

    _ndims = (4,)
    _layout = "(N, C, H, W)"


class ReLU(Layer):
    """y = max(x, 0)."""

    def _forward(self, x):
        y, self._cache = F.relu_forward(x)
        return y

    def _backward(self, dy, need_param_grads, overwrite_dy):
        return F.relu_backward(dy, self._cache, out=dy if overwrite_dy else None)


class LeakyReLU(Layer):
    """y = x for x > 0, negative_slope x otherwise (the paper's objects network: 0.2)."""

    def __init__(self, negative_slope: float = 0.2, dtype: Any = np.float32) -> None:
        super().__init__(dtype)
        if not negative_slope > 0:
            raise ValueError(f"LeakyReLU: negative_slope must be > 0, got {negative_slope}")
        self.negative_slope = float(negative_slope)

    def _extra_repr(self) -> str:
        return f"{self.negative_slope}"

    def _forward(self, x):
        y, self._cache = F.leaky_relu_forward(x, self.negative_slope)
        return y

    def _backward(self, dy, need_param_grads, overwrite_dy):
        return F.leaky_relu_backward(dy, self._cache, out=dy if overwrite_dy else None)


class Tanh(Layer):
    """y = tanh(x): the output layer, so that data live in [-1, 1]."""

    def _forward(self, x):
        y, self._cache = F.tanh_forward(x)
        return y

    def _backward(self, dy, need_param_grads, overwrite_dy):
        return F.tanh_backward(dy, self._cache, out=dy if overwrite_dy else None)


class Reshape(Layer):
    """Reshape every example to ``shape`` (the batch axis is kept), e.g. (512, 4, 4) after a Linear."""

    def __init__(self, shape: tuple[int, ...], dtype: Any = np.float32) -> None:
        super().__init__(dtype)
        self.shape = tuple(int(s) for s in shape)
        if any(s < 1 for s in self.shape):
            raise ValueError(f"Reshape: shape must be positive, got {shape!r}")

    def _extra_repr(self) -> str:
        return f"{self.shape}"

    def output_shape(self, input_shape):
        return (input_shape[0], *self.shape)

    def _forward(self, x):
        if x.ndim < 1:
            raise ValueError(f"{self}: expected an input (N, ...) with a batch axis, got 0-d")
        if int(np.prod(x.shape[1:])) != int(np.prod(self.shape)):
            raise ValueError(
                f"{self}: cannot reshape input of shape {tuple(x.shape)} to (N, *{self.shape}): "
                f"{int(np.prod(x.shape[1:]))} values per example, expected {int(np.prod(self.shape))}"
            )
        self._cache = x.shape
        return x.reshape(x.shape[0], *self.shape)

    def _backward(self, dy, need_param_grads, overwrite_dy):
        return dy.reshape(self._cache)
