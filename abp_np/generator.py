"""The generator network f(Z; W) and builders for the paper's three networks.

The generator is a plain list of layers. Its :meth:`Generator.backward` is the ONE
backward pass of the method: given the gradient of an objective with respect to the
output f(Z; W), it returns the gradient with respect to Z through f, and, when asked, fills
every layer's ``grads`` with the gradient with respect to W::

    dz = g.backward(dy, need_param_grads=False)   # inferential back-propagation (Langevin)
    dz = g.backward(dy, need_param_grads=True)    # learning back-propagation (also dW)

Both calls run the very same code; the flag only skips the weight-gradient GEMMs. ABP
injects ``dy = A^T r / sigma^2`` for inference (the prior's ``-Z`` is added by the caller,
:meth:`abp_np.abp.ABP.log_likelihood_grad_z`) and ``dy = -A^T r / (sigma^2 n)`` for
learning (the gradient of J = -L/n, which the optimisers descend), r the residual.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from .backend import check_float_dtype, get_array_module, to_numpy
from .layers import (
    BatchNorm1d,
    BatchNorm2d,
    ConvTranspose1d,
    ConvTranspose2d,
    Derived,
    Layer,
    LeakyReLU,
    Linear,
    ReLU,
    Reshape,
    Tanh,
)

__all__ = [
    "Generator",
    "texture_generator",
    "sound_generator",
    "object_generator",
    "linear_generator",
    "build",
]


class Generator:
    """A top-down network f(Z; W): a sequence of layers applied in order.

    Parameters
    ----------
    layers : sequence of Layer
    latent_shape : tuple of int
        Shape of one example's Z (without the batch axis), e.g. ``(100,)`` or ``(1, 7, 7)``.
        For fully convolutional networks, a larger latent gives a larger output.
    """

    def __init__(self, layers: Sequence[Layer], latent_shape: tuple[int, ...]) -> None:
        self.layers = list(layers)
        if not self.layers:
            raise ValueError("Generator: needs at least one layer")
        dtypes = {layer.dtype for layer in self.layers}
        if len(dtypes) != 1:
            raise ValueError(
                f"Generator: all layers must share one dtype, got {sorted(map(str, dtypes))}"
            )
        self.dtype = dtypes.pop()
        self.latent_shape = tuple(int(s) for s in latent_shape)
        self._fixed = False  # inside fixed_weights()

    # -- f and its one backward pass ----------------------------------------------------------------
    def forward(self, z: Any) -> Any:
        """Y = f(Z; W). ``z``: (N, *latent_shape) -> (N, *output_shape)."""
        if getattr(z, "ndim", None) != len(self.latent_shape) + 1:
            raise ValueError(
                f"Generator: expected z of shape (N, *{self.latent_shape}), got "
                f"{getattr(z, 'shape', type(z).__name__)}"
            )
        h = z
        for layer in self.layers:
            h = layer.forward(h)
        return h

    __call__ = forward

    def backward(self, dy: Any, need_param_grads: bool = True) -> Any:
        """Back-propagate d(objective)/df through every layer and return it with respect to Z.

        Parameters
        ----------
        dy : array (N, *output_shape)
            Gradient of the objective with respect to f(Z; W): for ABP's inference the
            residual (Y - f(Z; W)) / sigma^2, for its learning step -(Y - f) / (sigma^2 n)
            (see the module's docstring). The returned dz holds the term through f only.
        need_param_grads : bool
            False for inferential back-propagation (only dZ is needed: the weight-gradient
            work is skipped); True for learning back-propagation (every layer's ``grads``
            is filled as well). The same pass serves both.

        Returns
        -------
        dz : array (N, *latent_shape)

        The pass is used up: each layer lets go of what its forward pass saved as soon as its
        own backward has run (:meth:`Layer.release <abp_np.layers.Layer.release>`), and the
        gradients between layers, made here, may be overwritten by the next layer down
        (``overwrite_dy``); ``dy`` itself is left as it is. Run :meth:`forward` again before
        another backward pass.
        """
        xp = get_array_module(dy)
        given = dy
        for layer in reversed(self.layers):
            # a gradient made by the layer above is ours to overwrite; the caller's dy is not
            mine = dy is not given and not xp.may_share_memory(dy, given)
            dy = layer.backward(dy, need_param_grads, overwrite_dy=mine)
            layer.release()  # the layers below need nothing this one saved
        return dy

    def release(self) -> None:
        """Let every layer go of what the last forward pass saved (as a backward pass does)."""
        for layer in self.layers:
            layer.release()

    @contextlib.contextmanager
    def fixed_weights(self, learning: bool = False) -> Iterator[Generator]:
        """A block of passes with W unchanged: layers may keep what they derive from W.

        The inferential back-propagation (Langevin dynamics on Z, equation (5)) runs many
        forward and backward passes with the same W. Inside this block a layer may compute a
        quantity that depends on W alone once and reuse it in every pass: the Winograd
        path's transformed weights ``U = G K G^T`` (:mod:`abp_np.fast.winograd`) are computed once
        per block instead of once per forward pass, and layers whose U would be too costly
        to recompute every pass take that path only here. :meth:`ABP.langevin
        <abp_np.abp.ABP.langevin>` runs its loop inside this block.

        ``learning=True``: the block is one learning step, :meth:`ABP.learn
        <abp_np.abp.ABP.learn>`'s forward pass and its backward pass with weight gradients,
        which share one U. There the backward pass also forms U's gradient, and the routes
        choose with that in mind (:func:`abp_np.fast.winograd.worth_it`; ``BENCHMARKS.md``,
        "The learning step inside fixed_weights").

        Leaving the block drops what was kept. Inside it, change the weights only through
        :meth:`load_state_dict` or an optimiser's ``step`` (which drop it as well): a weight
        changed in place some other way would leave a layer computing with the old one.

        Blocks may be nested; the outer one keeps and drops. A ``learning=True`` block inside
        an ordinary one (:meth:`ABP.alternate <abp_np.abp.ABP.alternate>`: the learning step
        right after the Langevin loop, with the same W) marks its passes as the learning
        step's, and they reuse what the loop's passes derived.
        """
        if self._fixed:  # nested: the outer block keeps and drops
            kept = [layer._derived for layer in self.layers if layer._derived is not None]
            was = [d.learning for d in kept]
            for d in kept:
                d.learning = d.learning or learning
            try:
                yield self
            finally:
                for d, before in zip(kept, was, strict=True):
                    d.learning = before
            return
        self._fixed = True
        for layer in self.layers:
            layer._derived = Derived(learning)
        try:
            yield self
        finally:
            self._fixed = False
            for layer in self.layers:
                layer._derived = None

    # -- batch norm's running statistics -----------------------------------------------------------
    def _norms(self) -> list[int]:
        """Indices of the layers that keep running statistics (the batch norms)."""
        return [i for i, layer in enumerate(self.layers) if "running_mean" in layer.buffers]

    @contextlib.contextmanager
    def frozen_statistics(self) -> Iterator[Generator]:
        """A block of passes that leaves every batch norm's running statistics as they are.

        In training mode a batch norm normalises with the statistics of its batch and, as in
        PyTorch, moves its running averages towards them at every forward pass. Passes that
        only *use* a learned model (inference on held-out data, reconstruction, synthesis)
        should not move them: ``eval()`` and the checkpoint would pick up the statistics of
        held-out images or of prior samples. :meth:`ABP.infer <abp_np.abp.ABP.infer>`,
        :meth:`ABP.reconstruct <abp_np.abp.ABP.reconstruct>` and :meth:`ABP.sample
        <abp_np.abp.ABP.sample>` run inside this block. The passes compute exactly what they
        compute outside it; blocks may be nested.
        """
        norms = [self.layers[i] for i in self._norms()]
        before = [layer.update_running_stats for layer in norms]
        for layer in norms:
            layer.update_running_stats = False
        try:
            yield self
        finally:
            for layer, flag in zip(norms, before, strict=True):
                layer.update_running_stats = flag

    def recompute_statistics(self, z: Any, batch_size: int | None = None) -> Generator:
        """Set every batch norm's running statistics to the exact statistics of its inputs.

        The statistics are those of one training-mode pass over all of ``z`` as one batch:
        for each batch norm, the per-channel mean and the unbiased variance (divided by
        M - 1, as PyTorch keeps it) of its input, M = N values per channel for (N, C)
        inputs, N L or N H W for (N, C, L) or (N, C, H, W), where every batch norm above it
        normalised with the statistics of all of ``z`` (the mean and the biased variance, as
        training mode does). For one batch this is what PyTorch's cumulative averaging
        (``momentum=None``) stores after one pass; for the paper's small experiments, whose
        batch is the whole training set, it is exactly the statistics training used.

        In batches the result is the same, up to rounding: batch norms are taken in order,
        each with the ones above it normalising by the statistics already found for the
        whole set, and the batches' moments are combined exactly (Chan's pairwise update
        of the mean and the sum of squared deviations, in float64). PyTorch's cumulative
        averaging over batches would instead average per-batch variances (missing the
        spread of the batch means) of inputs that depend on each batch's own statistics.
        :func:`abp_np.training.fit` calls this at the end of training on the chains Z.

        Parameters
        ----------
        z : array (N, *latent_shape)
            E.g. the training chains :attr:`ABP.Z <abp_np.abp.ABP.Z>` after fitting. A host
            array is moved to the generator's device.
        batch_size : int, optional
            Examples per forward pass; default all N at once. A batch norm's pass then goes
            through every layer above it again, once per batch: about one forward pass over
            ``z`` per batch norm in all.

        Returns
        -------
        self : Generator
            The weights, the layers' modes and, on an error, the statistics are left as they
            were.
        """
        owner = "Generator.recompute_statistics"
        if getattr(z, "ndim", None) != len(self.latent_shape) + 1:
            raise ValueError(
                f"{owner}: expected z of shape (N, *{self.latent_shape}), got "
                f"{getattr(z, 'shape', type(z).__name__)}"
            )
        if z.dtype != self.dtype:
            raise ValueError(
                f"{owner}: z dtype is {z.dtype} but the generator is {self.dtype}; convert with "
                f"z.astype('{self.dtype}')"
            )
        n = int(z.shape[0])
        if n < 1:
            raise ValueError(f"{owner}: z holds no example (shape {tuple(z.shape)})")
        if batch_size is None:
            batch_size = n
        if (
            isinstance(batch_size, bool)
            or not isinstance(batch_size, (int, np.integer))
            or batch_size < 1
        ):
            raise ValueError(f"{owner}: batch_size must be an integer >= 1, got {batch_size!r}")
        norms = self._norms()
        if not norms:
            return self
        xp = get_array_module(self.layers[norms[0]].buffers["running_mean"])
        if get_array_module(z) is not xp:
            z = xp.asarray(z)
        modes = [layer.training for layer in self.layers]
        saved = [{k: v.copy() for k, v in self.layers[i].buffers.items()} for i in norms]

        def run(start: int, stop: int, h: Any) -> Any:  # layers[start:stop] in eval mode
            for layer in self.layers[start:stop]:
                h = layer.forward(h)
                layer.release()
            return h

        try:
            for layer in self.layers:
                layer.train(False)  # batch norms use running_mean and running_var
            found = []
            h, done = z, 0  # with one batch, the pass goes on from the last batch norm
            for i in norms:
                count, mean, m2 = 0, None, None
                if batch_size >= n:
                    h, done = run(done, i, h), i
                    inputs: Any = [h]
                else:
                    inputs = (run(0, i, z[s : s + batch_size]) for s in range(0, n, batch_size))
                for x in inputs:
                    count, mean, m2 = _merge_moments(count, mean, m2, x)
                if count < 2:
                    raise ValueError(
                        f"{owner}: {self.layers[i]!r} (layer {i}) needs more than one value per "
                        f"channel to estimate a variance, got {count}; give more examples"
                    )
                # for the layers below: normalise as training mode would, with the biased variance
                buffers = self.layers[i].buffers
                buffers["running_mean"][...] = mean.astype(buffers["running_mean"].dtype)
                buffers["running_var"][...] = (m2 / count).astype(buffers["running_var"].dtype)
                found.append((buffers, m2, count))
            for buffers, m2, count in found:  # kept: the unbiased variance
                buffers["running_var"][...] = (m2 / (count - 1)).astype(
                    buffers["running_var"].dtype
                )
        except BaseException:
            for i, kept in zip(norms, saved, strict=True):
                for k, v in kept.items():
                    self.layers[i].buffers[k][...] = v
            raise
        finally:
            for layer, mode in zip(self.layers, modes, strict=True):
                layer.train(mode)
            self.release()
        return self

    # -- parameters ---------------------------------------------------------------------------------
    def named_parameters(self) -> Iterator[tuple[str, Any, Any, Layer]]:
        """Yield ``(name, param, grad, layer)`` for every parameter, e.g. ``('3.weight', W, dW, l)``."""
        for i, layer in enumerate(self.layers):
            for key, p in layer.params.items():
                yield f"{i}.{key}", p, layer.grads[key], layer

    def parameters(self) -> list[Any]:
        return [p for _, p, _, _ in self.named_parameters()]

    def gradients(self) -> list[Any]:
        return [g for _, _, g, _ in self.named_parameters()]

    def num_params(self) -> int:
        return sum(layer.num_params() for layer in self.layers)

    def zero_grad(self) -> None:
        for layer in self.layers:
            layer.zero_grad()

    def state_dict(self) -> dict[str, Any]:
        """Parameters and buffers as NumPy arrays, keyed ``'<layer>.<name>'``."""
        out = {}
        for i, layer in enumerate(self.layers):
            for d in (layer.params, layer.buffers):
                for k, v in d.items():
                    out[f"{i}.{k}"] = to_numpy(v).copy()
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Copy arrays from :meth:`state_dict` into the layers in place (shapes must match)."""
        expected = {
            f"{i}.{k}": (layer, d, k)
            for i, layer in enumerate(self.layers)
            for d in (layer.params, layer.buffers)
            for k in d
        }
        missing = sorted(set(expected) - set(state))
        extra = sorted(set(state) - set(expected))
        if missing or extra:
            raise ValueError(
                f"Generator.load_state_dict: missing keys {missing}, unexpected {extra}"
            )
        for key, (_layer, d, k) in expected.items():
            v = to_numpy(state[key])  # NumPy or CuPy arrays (the latter via the host)
            if v.shape != d[k].shape:
                raise ValueError(
                    f"Generator.load_state_dict: {key} has shape {v.shape}, expected {d[k].shape}"
                )
            xp = get_array_module(d[k])
            d[k][...] = xp.asarray(v, dtype=d[k].dtype)
        self._forget_derived()

    def _forget_derived(self) -> None:
        """The weights changed in place: every layer drops what it derived from the old ones
        (inside :meth:`fixed_weights` it keeps deriving, from the new ones)."""
        for layer in self.layers:
            layer._forget_derived()

    # -- modes and devices ----------------------------------------------------------------------
    def train(self, mode: bool = True) -> Generator:
        """Batch norm uses batch statistics (the paper's setting, the default)."""
        for layer in self.layers:
            layer.train(mode)
        return self

    def eval(self) -> Generator:
        """Batch norm uses its running statistics."""
        return self.train(False)

    def to(self, device: str) -> Generator:
        """Move every layer to 'cpu' or 'gpu'."""
        for layer in self.layers:
            layer.to(device)
        return self

    @property
    def device(self) -> str:
        params = self.parameters()
        if params and get_array_module(params[0]) is not np:
            return "gpu"
        return "cpu"

    # -- shapes and summary ---------------------------------------------------------------------
    def output_shape(self, latent_shape: tuple[int, ...] | None = None) -> tuple[int, ...]:
        """Shape of one output example for one latent of ``latent_shape`` (default: training's)."""
        shape: tuple[int, ...] = (2, *(latent_shape or self.latent_shape))
        for layer in self.layers:
            shape = layer.output_shape(shape)
        return shape[1:]

    def summary(self, latent_shape: tuple[int, ...] | None = None) -> str:
        """A table of layers, output shapes and parameter counts."""
        shape = (2, *(latent_shape or self.latent_shape))

        def fmt(shape: tuple[int, ...]) -> str:
            return "(" + ", ".join(["N", *map(str, shape[1:])]) + ")"

        rows = [("input Z", fmt(shape), "")]
        for i, layer in enumerate(self.layers):
            shape = layer.output_shape(shape)
            rows.append((f"{i}: {layer!r}", fmt(shape), f"{layer.num_params():,}"))
        rows.append(("total", "", f"{self.num_params():,}"))
        w0 = max(len(r[0]) for r in rows)
        w1 = max(len(r[1]) for r in rows)
        head = f"{'layer':<{w0}}  {'output shape':<{w1}}  params"
        lines = [head, "-" * len(head)]
        lines += [f"{a:<{w0}}  {b:<{w1}}  {c}" for a, b, c in rows]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary()


def _merge_moments(count: int, mean: Any, m2: Any, x: Any) -> tuple[int, Any, Any]:
    """Add the values of ``x`` (N, C, ...) to per-channel moments, in float64.

    ``count`` values per channel so far, their ``mean`` and ``m2`` (sum of squared
    deviations from the mean), None for none. Chan, Golub and LeVeque's pairwise update: for
    the new values' count m, mean mu and sum of squares s, with d = mu - mean,
    ``mean += d m / (count + m)`` and ``m2 += s + d^2 count m / (count + m)``.
    """
    xp = get_array_module(x)
    axes = (0, *range(2, x.ndim))
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    x = x.astype(xp.float64)
    m = x.size // x.shape[1]
    mu = x.mean(axis=axes)
    xc = x - mu.reshape(shape)
    s = (xc * xc).sum(axis=axes)
    if count == 0:
        return m, mu, s
    total = count + m
    d = mu - mean
    return total, mean + d * (m / total), m2 + s + d * d * (count * m / total)


# --- builders for the paper's networks ---------------------------------------------------------------

_DOUBLE = {"kernel_size": 5, "stride": 2, "padding": 2, "output_padding": 1}


def texture_generator(
    channels: Sequence[int] = (512, 256, 128, 64),
    out_channels: int = 3,
    latent_size: int = 7,
    dtype: Any = np.float32,
    init_std: float = 0.005,
    rng: Any = None,
) -> Generator:
    """The paper's texture network: Z of 1 x 7 x 7, five doubling 5x5 deconvolutions.

    1 -> 512 -> 256 -> 128 -> 64 -> 3 channels, BN + ReLU after the first four, tanh at
    the output: 7 x 7 -> 224 x 224 (a 14 x 14 Z gives 448 x 448).
    """
    return _deconv_stack(
        1,
        channels,
        out_channels,
        (1, latent_size, latent_size),
        "relu",
        dtype,
        init_std,
        rng,
        conv=ConvTranspose2d,
        bn=BatchNorm2d,
        geom=_DOUBLE,
    )


def sound_generator(
    channels: Sequence[int] = (256, 128),
    latent_length: int = 60,
    dtype: Any = np.float32,
    init_std: float = 0.005,
    rng: Any = None,
) -> Generator:
    """The paper's sound network: Z of length 60, three 1-D deconvolutions up-sampling by 10.

    Kernel 25, stride 10, padding 8, output_padding 1 (so each layer multiplies the length
    by exactly 10): 1 -> 256 -> 128 -> 1 channels, BN + ReLU between, tanh at the output;
    60 -> 60,000 samples.
    """
    geom = {"kernel_size": 25, "stride": 10, "padding": 8, "output_padding": 1}
    return _deconv_stack(
        1,
        channels,
        1,
        (1, latent_length),
        "relu",
        dtype,
        init_std,
        rng,
        conv=ConvTranspose1d,
        bn=BatchNorm1d,
        geom=geom,
    )


def object_generator(
    latent_dim: int = 100,
    channels: Sequence[int] = (512, 256, 128, 64),
    out_channels: int = 3,
    activation: str = "leaky_relu",
    batch_norm: bool = False,
    dtype: Any = np.float32,
    init_std: float = 0.005,
    rng: Any = None,
    image_size: int | None = None,
) -> Generator:
    """The paper's objects / faces network: fc to 4 x 4 x 512, four doubling deconvolutions.

    d -> Linear -> (512, 4, 4) -> 256 -> 128 -> 64 -> 3 channels, 64 x 64 output, tanh.
    Hidden activation: leaky ReLU 0.2 without batch norm (the paper), or
    ``activation='relu', batch_norm=True`` (the later code).

    ``image_size`` (a power of two times 4, e.g. 16, 32, 64, 128) sets the number of
    doubling layers, log2(image_size / 4); ``channels`` must then list that many widths
    (its first ``log2(image_size / 4)`` entries are used). Default: ``4 * 2**len(channels)``.
    """
    dtype = check_float_dtype(dtype, "object_generator")
    if image_size is not None:
        n_up = int(round(np.log2(int(image_size) / 4))) if int(image_size) >= 8 else 0
        if n_up < 1 or 4 * 2**n_up != int(image_size):
            raise ValueError(
                f"object_generator: image_size must be 4 times a power of two (8, 16, 32, 64, "
                f"128 ...), got {image_size}"
            )
        if len(channels) < n_up:
            raise ValueError(
                f"object_generator: image_size {image_size} needs {n_up} channel widths, got "
                f"channels={tuple(channels)}"
            )
        channels = tuple(channels)[:n_up]
    rng = rng if rng is not None else np.random.default_rng()
    c0 = channels[0]
    layers: list[Layer] = [
        Linear(latent_dim, c0 * 16, dtype=dtype, init_std=init_std, rng=rng),
        Reshape((c0, 4, 4), dtype=dtype),
    ]
    if batch_norm:
        layers.append(BatchNorm2d(c0, dtype=dtype))
    layers.append(_activation(activation, dtype))
    g = _deconv_stack(
        c0,
        channels[1:],
        out_channels,
        (latent_dim,),
        activation,
        dtype,
        init_std,
        rng,
        conv=ConvTranspose2d,
        bn=BatchNorm2d if batch_norm else None,
        geom=_DOUBLE,
    )
    return Generator(layers + g.layers, (latent_dim,))


def linear_generator(
    latent_dim: int,
    image_shape: tuple[int, ...],
    rng: Any = None,
    dtype: Any = np.float32,
    init_std: float = 0.005,
) -> Generator:
    """The linear factor model ``y = W z + b`` as a generator: Linear, then Reshape (no tanh).

    ::

        f(z) = reshape(W z + b, image_shape),   W (D, d),  b (D,),  D = prod(image_shape)

    Probabilistic PCA's model (factor analysis with isotropic noise). Trained by the same ABP
    from the same data (e.g. per-example random projections,
    :class:`abp_np.observation.RandomProjections`), it is the fair linear baseline of the
    non-linear generators.

    Parameters
    ----------
    latent_dim : int
        ``d``, the dimension of z.
    image_shape : tuple of int
        Shape of one output, e.g. ``(1, 20, 20)``.
    rng : numpy.random.Generator, optional
        Draws the initial ``W``.
    dtype : float dtype
    init_std : float
        ``W`` starts from N(0, init_std^2) (the paper's 0.005); ``b`` from 0.
    """
    dtype = check_float_dtype(dtype, "linear_generator")
    shape = tuple(int(s) for s in image_shape)
    if not shape or any(s < 1 for s in shape):
        raise ValueError(
            f"linear_generator: image_shape must hold positive sizes, got {image_shape!r}"
        )
    rng = rng if rng is not None else np.random.default_rng()
    layers: list[Layer] = [
        Linear(latent_dim, int(np.prod(shape)), dtype=dtype, init_std=init_std, rng=rng),
        Reshape(shape, dtype=dtype),
    ]
    return Generator(layers, (int(latent_dim),))


def _activation(name: str, dtype: Any) -> Layer:
    if name == "relu":
        return ReLU(dtype=dtype)
    if name == "leaky_relu":
        return LeakyReLU(0.2, dtype=dtype)
    raise ValueError(f"unknown activation {name!r}: expected 'relu' or 'leaky_relu'")


def _deconv_stack(
    c_in, channels, out_channels, latent_shape, activation, dtype, init_std, rng, *, conv, bn, geom
) -> Generator:
    dtype = check_float_dtype(dtype, "generator")
    rng = rng if rng is not None else np.random.default_rng()
    layers: list[Layer] = []
    for c in channels:
        layers.append(conv(c_in, c, **geom, dtype=dtype, init_std=init_std, rng=rng))
        if bn is not None:
            layers.append(bn(c, dtype=dtype))
        layers.append(_activation(activation, dtype))
        c_in = c
    layers.append(conv(c_in, out_channels, **geom, dtype=dtype, init_std=init_std, rng=rng))
    layers.append(Tanh(dtype=dtype))
    return Generator(layers, latent_shape)


def build(kind: str, **kwargs: Any) -> Generator:
    """Build one of the paper's networks by name: 'texture', 'sound' or 'object'."""
    builders = {"texture": texture_generator, "sound": sound_generator, "object": object_generator}
    if kind not in builders:
        raise ValueError(f"unknown network {kind!r}: expected one of {sorted(builders)}")
    return builders[kind](**kwargs)
