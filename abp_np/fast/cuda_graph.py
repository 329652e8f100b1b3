"""The Langevin loop of :meth:`ABP.langevin <abp_np.abp.ABP.langevin>` as one CUDA graph.

Why
---
On a GPU one Langevin step of the paper's networks is a few dozen short kernels (GEMMs,
``col2im`` / ``im2col``, batch norm's reductions, the fused update). Launched one by one
from Python, each costs some microseconds of interpreter and driver time, often more than
the kernel itself runs. CUDA can record a sequence of launches once, as a *graph*, and
replay the whole sequence with one call: the launch overhead goes, the arithmetic stays.

What is recorded is exactly the eager loop, :meth:`ABP._langevin_step
<abp_np.abp.ABP._langevin_step>` ``steps`` times (forward pass, ONE backward pass without
weight gradients, the update (5)); nothing is rewritten for the graph.

How (CuPy's stream capture)
---------------------------
1. **Fixed buffers.** A graph replays the same device addresses every time, so the loop
   runs on buffers that belong to the graph: ``z`` (N, *latent), ``y`` (N, *data), a copy
   of the observation model whose arrays (a mask, a shared projection matrix) are the graph's
   and, with noise, ``U`` (steps, N, *latent). A call copies its inputs into them,
   launches, and returns a copy of ``z``. So a new batch with its own masks replays the
   same graph.
2. **A private memory pool and a side stream.** Everything the loop allocates comes from a
   :class:`cupy.cuda.MemoryPool` of the graph's own, on a non-blocking stream of its own
   (capture cannot run on the default stream). The loop runs once eagerly there first:
   kernels get compiled, cuBLAS sets up, and the pool is left holding exactly the blocks
   the loop asks for, so the captured run allocates nothing new. The blocks that the
   captured loop frees go back to that pool, which nothing else draws on: no other array
   can be handed an address that a replay will write.
3. **Capture**: ``stream.begin_capture()``, the loop, ``stream.end_capture()``. Nothing
   runs; the launches are recorded. The loop must not copy anything to the host meanwhile
   (none of abp_np's passes does), nor call cuBLAS through CuPy, which refuses it during a
   capture: the GEMMs go to :func:`abp_np.fast.cublas.matmul`. An observation model whose
   products cannot be recorded (``graph_capturable`` False: one projection matrix per
   example) runs its loops eagerly.
4. **Replay**: ``graph.launch()`` on the current stream, after the copies into the buffers.

What the graph keeps fixed
--------------------------
Shapes, dtypes and every Python number in the loop (``steps``, ``delta``, ``sigma``, layer
settings such as batch norm's ``eps``) are baked in, and so are the *addresses* of the
weights and the batch-norm buffers; their *contents* are read afresh at every replay. So
the optimiser's in-place updates and :meth:`Generator.load_state_dict` (which copies in
place) need no new capture, while a new array in their place does: :func:`graph_key` lists all of this, and
:meth:`ABP.langevin` captures a new graph whenever the key changes (it keeps the
:data:`KEEP` latest).

Noise: the graph reads ``U`` from its buffer, filled before each launch from the same
generator as the eager loop, all ``steps`` draws at once. So graph and eager runs agree
exactly for the same ``noise_arrays``; from a generator they draw different (equally
distributed) numbers.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Sequence
from typing import Any

from ..backend import is_device_out_of_memory, switches

__all__ = ["KEEP", "CaptureError", "LangevinGraph", "graph_key"]

#: How many captured graphs an :class:`~abp_np.abp.ABP` keeps (e.g. the full batches and a
#: last, smaller batch of :meth:`ABP.fit <abp_np.abp.ABP.fit>`).
KEEP = 2


class CaptureError(RuntimeError):
    """The Langevin loop could not be recorded as a CUDA graph."""


def _arrays(obj: Any) -> list[tuple[str, Any]]:
    """The device arrays among ``obj``'s attributes and the values of its dict attributes."""
    out = []
    for name, v in sorted(vars(obj).items()):
        if isinstance(v, dict):
            out += [(f"{name}.{k}", a) for k, a in sorted(v.items()) if hasattr(a, "data")]
        elif hasattr(v, "data") and hasattr(v, "shape"):
            out.append((name, v))
    return out


def _address(a: Any) -> tuple:
    """Where an array lives and how it is laid out: what a recorded launch depends on."""
    ptr = getattr(a.data, "ptr", None)  # cupy.ndarray.data is a MemoryPointer
    if ptr is None:  # a NumPy-backed array
        ptr = a.__array_interface__["data"][0]
    return (int(ptr), tuple(a.shape), str(a.dtype), tuple(a.strides))


def graph_key(abp: Any, z: Any, y: Any, obs: Any, steps: int, delta: float, noise: bool) -> tuple:
    """Everything a captured Langevin loop depends on besides array contents.

    Two calls with equal keys can replay the same graph. The key holds the shapes and
    dtypes of ``z`` and ``y``; ``steps``, ``delta``, ``noise`` and ``sigma``; each layer's
    ``repr`` (its sizes and settings), mode, and the addresses of its weights and buffers
    (not its gradients, which the loop does not touch); the observation's type, the shapes
    and dtypes of its arrays and its other settings; the settings of the speed routes
    (:func:`abp_np.backend.using`); and the device.
    """
    layers = []
    for layer in abp.generator.layers:
        held = [  # not the gradients (the loop does not touch them) nor saved activations
            (name, _address(a))
            for name, a in _arrays(layer)
            if not name.startswith(("grads.", "_cache"))
        ]
        # its settings: every public number, flag or tuple (batch norm's eps and momentum, a
        # convolution's stride...), whether or not its repr shows it
        settings = tuple(
            (name, repr(v))
            for name, v in sorted(vars(layer).items())
            if not name.startswith("_") and isinstance(v, (bool, int, float, str, tuple))
        )
        layers.append((type(layer).__name__, repr(layer), settings, tuple(held)))
    # arrays held directly are copied into the graph at every call (their layout counts);
    # arrays inside a dict attribute are read where they are (their address counts)
    observed = tuple(
        (name, _address(a) if "." in name else _address(a)[1:]) for name, a in _arrays(obs)
    )
    observed += tuple(
        (name, repr(v))
        for name, v in sorted(vars(obs).items())
        if not hasattr(v, "shape") and not isinstance(v, dict)
    )
    return (
        tuple(z.shape),
        str(z.dtype),
        tuple(y.shape),
        str(y.dtype),
        int(steps),
        float(delta),
        bool(noise),
        float(abp.sigma),
        tuple(layers),
        (type(obs).__name__, observed),
        tuple(switches()),
        int(getattr(getattr(z, "device", None), "id", 0)),
    )


class LangevinGraph:
    """One captured Langevin loop: fixed buffers, a private pool, and the CUDA graph.

    Parameters
    ----------
    xp : module
        :mod:`cupy`.
    step : callable
        ``step(z, y, obs, U)``: one Langevin step on the buffer ``z`` in place, ``U`` one
        step's noise or None (:meth:`ABP._langevin_step <abp_np.abp.ABP._langevin_step>`
        with its step size and kernel bound).
    z : cupy.ndarray (N, *latent_shape)
    y : cupy.ndarray, the observed data of the N examples
    obs : Observation
        The observation model; the graph keeps a copy with arrays of its own.
    steps : int
    noise : bool
        Whether the loop reads a ``U`` buffer of shape (steps, N, *latent_shape).
    buffers : list of cupy.ndarray
        Arrays the loop updates in place as a side effect (batch norm's running
        statistics): restored after the eager warm-up, so that the first call changes
        them exactly as much as every later one.
    release : callable, optional
        Called when the warm-up or the capture fails part-way: lets the layers drop what
        a half-run pass saved (arrays of the private pool, freed with it).

    The inputs ``z``, ``y`` serve only as the shapes and dtypes of the buffers and as the
    warm-up's data.
    """

    def __init__(
        self,
        xp: Any,
        step: Callable[[Any, Any, Any, Any], None],
        z: Any,
        y: Any,
        obs: Any,
        steps: int,
        noise: bool,
        buffers: Sequence[Any] = (),
        release: Callable[[], None] | None = None,
    ) -> None:
        self.xp, self.steps, self.noise = xp, int(steps), bool(noise)
        # 1. the fixed buffers (from the default pool: they live as long as this object)
        self.z = xp.array(z, copy=True, order="C")
        self.y = xp.array(y, copy=True, order="C")
        self.obs = copy.copy(obs)
        self._obs_arrays = [name for name, _ in _arrays(obs) if "." not in name]
        for name in self._obs_arrays:
            setattr(self.obs, name, xp.array(getattr(obs, name), copy=True))
        self.U = xp.zeros((self.steps, *z.shape), dtype=z.dtype) if self.noise else None
        self.pool = xp.cuda.MemoryPool()  # 2. the private pool
        self.stream = xp.cuda.Stream(non_blocking=True)
        try:
            self.graph = self._capture(step, buffers)
        except BaseException:
            if release is not None:
                release()
            raise

    def _loop(self, step: Callable[[Any, Any, Any, Any], None]) -> None:
        for t in range(self.steps):
            step(self.z, self.y, self.obs, None if self.U is None else self.U[t])

    def _capture(self, step: Callable[[Any, Any, Any, Any], None], buffers: Sequence[Any]) -> Any:
        xp, stream = self.xp, self.stream
        kept = [b.copy() for b in buffers]
        xp.cuda.Device().synchronize()  # the buffers' copies (current stream) are done
        # The private pool cannot draw on blocks the default pool caches: hand those back to
        # CUDA first, or the warm-up could run out of memory where the eager loop would not.
        xp.get_default_memory_pool().free_all_blocks()
        with xp.cuda.using_allocator(self.pool.malloc), stream:
            self._loop(step)  # warm-up, eager: compiles, sets up, fills the private pool
            stream.synchronize()
            for b, k in zip(buffers, kept, strict=True):
                b[...] = k
            stream.synchronize()
            stream.begin_capture()  # 3. record, do not run
            try:
                self._loop(step)
            except BaseException as err:
                with contextlib.suppress(Exception):
                    stream.end_capture()  # leave the stream usable
                if is_device_out_of_memory(err):  # as it is: the caller advises a batch size
                    raise
                raise CaptureError(
                    f"the Langevin loop could not be captured as a CUDA graph ({err}); run "
                    "with ABP(..., cuda_graph=False)"
                ) from err
            try:
                graph = stream.end_capture()
            except Exception as err:  # e.g. a host copy invalidated the capture
                raise CaptureError(
                    f"CUDA rejected the captured Langevin loop ({err}); run with "
                    "ABP(..., cuda_graph=False)"
                ) from err
        return graph

    def __call__(self, z: Any, y: Any, obs: Any, U: Any = None) -> Any:
        """Copy the inputs in, replay the loop, return the final z (a fresh array).

        ``obs``: an observation model of the same type and array shapes as the one captured;
        ``U``: (steps, N, *latent_shape) noise, or None for a loop without noise.
        """
        self.z[...] = z
        self.y[...] = y
        for name in self._obs_arrays:
            getattr(self.obs, name)[...] = getattr(obs, name)
        if self.U is not None:
            self.U[...] = U
        self.graph.launch()  # 4. on the current stream, after the copies above
        return self.z.copy()

    @property
    def nbytes(self) -> int:
        """Device bytes this graph holds: its buffers and its private pool."""
        held = self.z.nbytes + self.y.nbytes + (0 if self.U is None else self.U.nbytes)
        held += sum(getattr(self.obs, name).nbytes for name in self._obs_arrays)
        return int(held + self.pool.total_bytes())
