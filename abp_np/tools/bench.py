"""Benchmark of full ABP iterations, optionally side by side with PyTorch.

Run ``python -m abp_np.bench --help``. One *iteration* is what training repeats:

1. inferential back-propagation: ``steps`` Langevin steps (default 10, delta 0.3, with
   noise, sigma 0.3), each a forward pass and an input-only backward pass
   ``generator.backward(dy, need_param_grads=False)``;
2. learning back-propagation: one forward pass, one full backward pass and one update
   of the paper's SGD (momentum 0.5).

The abp_np side times the library's own :class:`abp_np.abp.ABP` methods (``langevin`` and
``learn``), so what is measured is what users run. ``--compare-torch`` runs the identical
network (weights copied from the abp_np generator, the outputs compared once) and the same
algorithm in PyTorch, interleaved with the abp_np iterations in the same process, and
prints the time ratio abp_np / torch. PyTorch is not a dependency of abp_np; without it
the comparison is skipped with a message.

What is reported
----------------
* seconds per iteration (median over ``--iterations``, after one warm-up iteration) and
  images per second; with ``--compare-torch`` the time ratio of the medians and of the
  best iterations (the latter is less sensitive to other jobs on a shared machine);
* achieved GFLOP/s, with FLOPs counted analytically from the layer shapes: 2 x the
  multiply-adds of every Linear / transposed-convolution GEMM in the forward,
  input-gradient and weight-gradient passes (``2 steps + 3`` passes per iteration);
* the machine's float32 GEMM ceiling (a large ``matmul`` measured in the same run) and the
  fraction of it reached;
* on the CPU, the share of an iteration spent in GEMMs (:func:`gemm_clock`, one more
  iteration after the timed ones) and so the share outside them;
* on the CPU, the process's CPU time over wall time per iteration (median): how many cores
  were busy on average (threads that spin while waiting count as busy; with 2 threads,
  ``2 - ratio`` is the share of the time one core was idle);
* peak memory: on the CPU, the peak resident set size (``VmHWM`` of ``/proc/self/status``)
  of a fresh subprocess running one warm-up and one timed iteration, minus its resident
  size just before (after building the model and the data, the high-water mark reset
  through ``/proc/self/clear_refs``). The same method for both libraries, so that the
  figures compare (the interpreter and the libraries' own code are left out). On the GPU:
  the CuPy memory pool's bytes after the run (an upper bound of the peak) and
  ``torch.cuda.max_memory_allocated``.

``--runs N`` repeats the whole run in N fresh processes and prints the median of their
ratios (:func:`runs`). Also ``--breakdown`` (per-layer forward / input-gradient / weight-gradient times, best of
``--repeats`` calls, both libraries side by side) and ``--sweep batch|steps|pixels`` (cost against batch size,
number of Langevin steps and image size, to show that it grows linearly; ``--plot FILE.png``
draws the curve).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

# Absolute imports: this module also runs as ``python -m abp_np.bench`` (its old name).
from abp_np import functional as F
from abp_np import layers as L
from abp_np.abp import ABP
from abp_np.backend import resolve_device, to_numpy
from abp_np.fast import columns, threads, winograd, winograd1d
from abp_np.fast import cpu as _cpu
from abp_np.generator import Generator, object_generator, sound_generator, texture_generator

SIGMA = 0.3
DELTA = 0.3
STEPS = 10


# --- workloads ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """One benchmark network: how to build it and its default batch size."""

    name: str
    description: str
    batch: int
    build: Callable[..., Generator]


def _small32(rng: Any, latent: Any = None) -> Generator:
    return object_generator(32, (128, 64, 32), 1, "relu", True, rng=rng)


def _faces64(rng: Any, latent: Any = None) -> Generator:
    return object_generator(100, (512, 256, 128, 64), 3, "relu", True, rng=rng)


def _texture224(rng: Any, latent: Any = None) -> Generator:
    return texture_generator(latent_size=latent or 7, rng=rng)


def _sound60k(rng: Any, latent: Any = None) -> Generator:
    return sound_generator(latent_length=latent or 60, rng=rng)


WORKLOADS = {
    w.name: w
    for w in (
        Workload("small32", "z 32 -> fc 128x4x4 -> 64 -> 32 -> 1, 32x32x1", 64, _small32),
        Workload("faces64", "z 100 -> fc 512x4x4 -> 256 -> 128 -> 64 -> 3, 64x64x3", 64, _faces64),
        Workload(
            "texture224", "Z 1x7x7 -> 512 -> 256 -> 128 -> 64 -> 3, 224x224x3", 1, _texture224
        ),
        Workload(
            "sound60k", "Z 1x60 -> 256 -> 128 -> 1 (1-D, x10 each), 60,000 samples", 1, _sound60k
        ),
    )
}

#: Workloads whose output size follows the latent size (for ``--sweep pixels``): default
#: latent size, and the sizes swept.
_FULLY_CONV = {"texture224": (7, (4, 7, 10, 14)), "sound60k": (60, (15, 30, 60, 120))}


def latent_shape(g: Generator, latent: int | None) -> tuple[int, ...]:
    """The generator's latent shape, or the fully convolutional one of size ``latent``."""
    if latent is None:
        return g.latent_shape
    return (*g.latent_shape[:-1], latent) if len(g.latent_shape) == 2 else (1, latent, latent)


# --- FLOPs ----------------------------------------------------------------------------------------


def gemm_macs(g: Generator, batch: int, latent: tuple[int, ...]) -> list[tuple[str, int]]:
    """Multiply-adds of one forward pass, per Linear / transposed-convolution layer.

    Linear: N in out. Transposed convolution: N Cin Cout kh kw H W (H, W of its input),
    the size of the GEMM ``W^T x`` that computes it. The input-gradient and the
    weight-gradient GEMMs have the same size.
    """
    shape: tuple[int, ...] = (batch, *latent)
    out = []
    for i, layer in enumerate(g.layers):
        if isinstance(layer, L.Linear):
            out.append((f"{i}:{layer!r}", batch * layer.in_features * layer.out_features))
        elif isinstance(layer, L.ConvTranspose2d):
            kh, kw = layer.kernel_size
            hw = int(np.prod(shape[2:]))
            macs = batch * layer.in_channels * layer.out_channels * kh * kw * hw
            out.append((f"{i}:{layer!r}", macs))
        shape = layer.output_shape(shape)
    return out


def iteration_flops(g: Generator, batch: int, latent: tuple[int, ...], steps: int) -> int:
    """FLOPs of one ABP iteration: 2 MACs x (steps (forward + dx) + forward + dx + dW)."""
    macs = sum(m for _, m in gemm_macs(g, batch, latent))
    return 2 * macs * (2 * steps + 3)


# --- threads, memory, the GEMM ceiling ---------------------------------------------------------


def _proc_status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            m = re.search(rf"^{key}:\s+(\d+)\s+kB", f.read(), re.MULTILINE)
        return int(m.group(1)) if m else None
    except OSError:
        return None


def _reset_peak_rss() -> int | None:
    """Give freed heap back to the OS, reset the RSS high-water mark; return RSS in KiB."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    return _proc_status_kib("VmRSS")


def gemm_ceiling(xp: Any = np, n: int = 2048, repeats: int = 5) -> float:
    """Best float32 GFLOP/s of an ``n x n`` matmul (``xp``: numpy or cupy)."""
    rng = np.random.default_rng(0)
    a = xp.asarray(rng.standard_normal((n, n), dtype=np.float32))
    b = xp.asarray(rng.standard_normal((n, n), dtype=np.float32))
    sync = _sync_for(xp)
    best = float("inf")
    for _ in range(repeats + 1):
        sync()
        t0 = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def _sync_for(xp: Any) -> Callable[[], None]:
    if xp is np:
        return lambda: None
    return lambda: xp.cuda.Device().synchronize()


# --- the abp_np side ----------------------------------------------------------------------------


class AbpRunner:
    """Times ABP iterations of the library on one generator and one batch of data."""

    def __init__(
        self,
        g: Generator,
        batch: int,
        latent: tuple[int, ...],
        steps: int,
        device: str,
        seed: int = 0,
        cuda_graph: bool = False,
    ) -> None:
        from abp_np.backend import default_rng

        xp = resolve_device(device)
        self.xp = xp
        self.g = g.to(device)
        rng = np.random.default_rng(seed)
        out_shape = (batch, *g.output_shape(latent))
        self.y = xp.asarray(rng.uniform(-1, 1, out_shape).astype(g.dtype))
        self.z = xp.asarray(rng.standard_normal((batch, *latent)).astype(g.dtype))
        self.rng = default_rng(seed + 1, device)
        self.steps = steps
        self.sync = _sync_for(xp)
        self.abp = ABP(
            g,
            sigma=SIGMA,
            langevin_steps=steps,
            step_size=DELTA,
            noise=True,
            cuda_graph=cuda_graph and device == "gpu",
        )
        self.source = "abp_np.abp.ABP.alternate (paper SGD)" + (
            ", the Langevin loop replayed as a CUDA graph" if self.abp.cuda_graph else ""
        )

    def iteration(self) -> None:
        """One ABP iteration: ``steps`` Langevin steps on z, then one learning step."""
        self.z, _ = self.abp.alternate(self.z, self.y, rng=self.rng)

    def timed(self) -> float:
        """Wall seconds of one iteration; its CPU seconds (all threads) go to ``cpu_seconds``."""
        self.sync()
        c0, t0 = time.process_time(), time.perf_counter()
        self.iteration()
        self.sync()
        self.cpu_seconds = time.process_time() - c0
        return time.perf_counter() - t0


# --- the PyTorch side -----------------------------------------------------------------------------


def import_torch() -> Any:
    """Import torch or return None (it is not a dependency of abp_np)."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def torch_model(g: Generator, torch: Any, device: str) -> Any:
    """The same network in PyTorch, with the abp_np generator's weights copied in."""
    nn = torch.nn
    mods = []
    for layer in g.layers:
        p = {k: torch.from_numpy(to_numpy(v).copy()) for k, v in layer.params.items()}
        if isinstance(layer, L.Linear):
            m = nn.Linear(layer.in_features, layer.out_features, bias="bias" in p)
        elif isinstance(layer, L.ConvTranspose1d):
            m = nn.ConvTranspose1d(
                layer.in_channels,
                layer.out_channels,
                layer.kernel_size[1],
                layer.stride[1],
                layer.padding[1],
                layer.output_padding[1],
                bias="bias" in p,
            )
        elif isinstance(layer, L.ConvTranspose2d):
            m = nn.ConvTranspose2d(
                layer.in_channels,
                layer.out_channels,
                layer.kernel_size,
                layer.stride,
                layer.padding,
                layer.output_padding,
                bias="bias" in p,
            )
        elif isinstance(layer, L.BatchNorm1d):
            m = nn.BatchNorm1d(layer.num_features, eps=layer.eps, affine=layer.affine)
        elif isinstance(layer, L.BatchNorm2d):
            m = nn.BatchNorm2d(layer.num_features, eps=layer.eps, affine=layer.affine)
        elif isinstance(layer, L.ReLU):
            m = nn.ReLU()
        elif isinstance(layer, L.LeakyReLU):
            m = nn.LeakyReLU(layer.negative_slope)
        elif isinstance(layer, L.Tanh):
            m = nn.Tanh()
        elif isinstance(layer, L.Reshape):
            m = nn.Unflatten(1, layer.shape)
        else:
            raise ValueError(f"bench: no PyTorch counterpart for layer {layer!r}")
        with torch.no_grad():
            for k, v in p.items():
                getattr(m, k).copy_(v.reshape(getattr(m, k).shape))
        mods.append(m)
    model = nn.Sequential(*mods).to("cuda" if device == "gpu" else "cpu")
    return model.train()


class TorchRunner:
    """The same ABP iteration in PyTorch: autograd w.r.t. z for Langevin, SGD for learning."""

    def __init__(
        self, torch: Any, g: Generator, abp: AbpRunner, device: str, seed: int = 0
    ) -> None:
        self.torch = torch
        self.dev = "cuda" if device == "gpu" else "cpu"
        self.model = torch_model(g, torch, device)
        self.y = torch.from_numpy(to_numpy(abp.y).copy()).to(self.dev)
        self.z = torch.from_numpy(to_numpy(abp.z).copy()).to(self.dev)
        self.steps = abp.steps
        self.gen = torch.Generator(device=self.dev).manual_seed(seed + 1)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=1e-4, momentum=0.5)
        self.sync = torch.cuda.synchronize if self.dev == "cuda" else (lambda: None)

    def iteration(self) -> None:
        torch, model, y = self.torch, self.model, self.y
        z = self.z
        for _ in range(self.steps):
            z = z.detach().requires_grad_(True)
            loglik = -((y - model(z)) ** 2).sum() / (2 * SIGMA**2)
            (grad,) = torch.autograd.grad(loglik, z)
            noise = torch.randn(z.shape, generator=self.gen, device=self.dev)
            with torch.no_grad():
                z = z + (DELTA**2 / 2) * (grad - z) + DELTA * noise
        self.z = z.detach()
        loss = ((y - model(self.z)) ** 2).sum() / (2 * SIGMA**2 * z.shape[0])
        self.opt.zero_grad(set_to_none=False)
        loss.backward()
        self.opt.step()

    def timed(self) -> float:
        """Wall seconds of one iteration; its CPU seconds (all threads) go to ``cpu_seconds``."""
        self.sync()
        c0, t0 = time.process_time(), time.perf_counter()
        self.iteration()
        self.sync()
        self.cpu_seconds = time.process_time() - c0
        return time.perf_counter() - t0


class _GemmClock:
    """Adds up the wall time of the calls it wraps (:func:`gemm_clock`), on the thread that made
    it: the worker threads run their share of the same steps at the same time."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.thread = threading.get_ident()

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() != self.thread:
                return fn(*args, **kwargs)
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0

        return timed


class _NumpyWithTimedMatmul:
    """NumPy for :mod:`abp_np.fast.columns`, its ``matmul`` timed."""

    def __init__(self, clock: _GemmClock) -> None:
        self.matmul = clock.wrap(np.matmul)

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)


@contextlib.contextmanager
def _winograd_steps_visible() -> Iterator[None]:
    """Inside the block the Winograd route's ranges of examples and stacks of GEMMs run step by
    step on Python threads, where each step's function can be timed, not as one C call on the
    pool (:func:`abp_np.fast.cpu.gemms_pooled` is False)."""
    ready = _cpu.gemms_pooled
    _cpu.gemms_pooled = lambda dtype: False
    try:
        yield
    finally:
        _cpu.gemms_pooled = ready


@contextlib.contextmanager
def gemm_clock() -> Iterator[_GemmClock]:
    """Inside the block, time every GEMM of a CPU iteration; ``clock.seconds`` adds them up.

    The GEMMs are: the Winograd paths' (``winograd._gemms``, ``winograd1d._mm``), the column
    and phase forms' (``numpy.matmul`` and ``stacked_matmul`` in :mod:`abp_np.fast.columns`)
    and the Linear layers' (the whole of ``linear_forward`` / ``linear_backward``, a GEMM and a bias). What is not in them is the
    time outside the GEMMs: transforms, batch norm, activations, ``col2im``, the updates.
    Only the calling thread's calls are timed: where the examples are split over threads
    (the Winograd route), each thread runs its share of every step, and the calling thread's
    time in GEMMs over the iteration's is the share that the GEMMs take. Inside the block
    those ranges run step by step (:func:`_winograd_steps_visible`).
    """
    clock = _GemmClock()
    saved = (
        winograd._gemms,
        winograd1d._mm,
        columns.np,
        columns.stacked_matmul,
        F.linear_forward,
        F.linear_backward,
    )
    winograd._gemms = clock.wrap(saved[0])
    winograd1d._mm = clock.wrap(saved[1])
    columns.np = _NumpyWithTimedMatmul(clock)
    columns.stacked_matmul = clock.wrap(saved[3])
    F.linear_forward, F.linear_backward = clock.wrap(saved[4]), clock.wrap(saved[5])
    try:
        with _winograd_steps_visible():
            yield clock
    finally:
        (
            winograd._gemms,
            winograd1d._mm,
            columns.np,
            columns.stacked_matmul,
            F.linear_forward,
            F.linear_backward,
        ) = saved


def forward_difference(abp: AbpRunner, tr: TorchRunner) -> float:
    """Max |abp_np f(z) - torch f(z)| on the same z: proof that the networks are identical."""
    a = to_numpy(abp.g.forward(abp.z))
    with tr.torch.no_grad():
        b = tr.model(tr.z).cpu().numpy()
    return float(np.max(np.abs(a - b)))


# --- the main measurement -------------------------------------------------------------------------


def setup(args: argparse.Namespace, latent: int | None = None) -> tuple[Generator, int, tuple]:
    w = WORKLOADS[args.workload]
    g = w.build(np.random.default_rng(args.seed), latent)
    batch = args.batch or w.batch
    return g, batch, latent_shape(g, latent)


def measure(
    args: argparse.Namespace,
    torch: Any,
    latent: int | None = None,
    steps: int | None = None,
    batch: int | None = None,
) -> dict[str, Any]:
    """Warm-up, then ``args.iterations`` interleaved iterations of abp_np (and torch)."""
    g, default_batch, lat = setup(args, latent)
    batch = batch or default_batch
    steps = STEPS if steps is None else steps
    abp = AbpRunner(g, batch, lat, steps, args.device, args.seed, args.cuda_graph)
    tr = TorchRunner(torch, g, abp, args.device, args.seed) if torch is not None else None
    res: dict[str, Any] = {"batch": batch, "steps": steps, "latent_shape": list(lat)}
    if tr is not None:
        res["max_abs_forward_difference"] = forward_difference(abp, tr)
    abp.timed()
    if tr is not None:
        tr.timed()
    ta, tt, ca, ct = [], [], [], []  # wall seconds; CPU seconds over wall seconds
    for k in range(args.iterations):
        ta.append(abp.timed())
        ca.append(abp.cpu_seconds / ta[-1])
        if tr is not None:
            tt.append(tr.timed())
            ct.append(tr.cpu_seconds / tt[-1])
        # progress on standard error (standard output keeps the results and the JSON line)
        done = f"abp_np {ta[-1]:.3f} s" + (f", torch {tt[-1]:.3f} s" if tt else "")
        print(f"  iteration {k + 1}/{args.iterations} (batch {batch}): {done}", file=sys.stderr)
    if args.device == "cpu":  # one more iteration, its GEMMs timed
        with gemm_clock() as clock:
            wall = abp.timed()
        res["gemm_share"] = clock.seconds / wall
    flops = iteration_flops(g, batch, lat, steps)
    res.update(abp_source=abp.source, gflop_per_iter=flops / 1e9)
    res.update(_summary("", ta, flops, batch))
    res["cpu_per_wall"] = statistics.median(ca)
    if tr is not None:
        res.update(_summary("torch_", tt, flops, batch))
        res["torch_cpu_per_wall"] = statistics.median(ct)
        res["ratio_abp_over_torch"] = res["sec_per_iter"] / res["torch_sec_per_iter"]
        # the ratio of the best iterations: less sensitive to other jobs on a shared machine
        res["ratio_best_abp_over_torch"] = res["sec_per_iter_min"] / res["torch_sec_per_iter_min"]
    return res


def _summary(prefix: str, times: list[float], flops: int, batch: int) -> dict[str, float]:
    s = statistics.median(times)
    return {
        f"{prefix}sec_per_iter": s,
        f"{prefix}sec_per_iter_min": min(times),
        f"{prefix}images_per_sec": batch / s,
        f"{prefix}gflops": flops / s / 1e9,
    }


def memory_probe(args: argparse.Namespace, which: str) -> dict[str, Any]:
    """Peak memory of one warm-up and one timed iteration of ``which`` ('abp' or 'torch')."""
    torch = import_torch() if which == "torch" else None
    if which == "torch" and torch is None:
        return {"peak_mib": None}
    if torch is not None:
        torch.set_num_threads(args.threads)
        _torch_float32_exact(torch)
    g, batch, lat = setup(args)
    abp = AbpRunner(g, batch, lat, STEPS, args.device, args.seed, args.cuda_graph)
    runner = TorchRunner(torch, g, abp, args.device, args.seed) if torch is not None else abp
    if torch is not None:  # keep only what the torch run needs
        abp = None
    if args.device == "gpu":
        if torch is not None:
            torch.cuda.reset_peak_memory_stats()
            runner.iteration()
            runner.iteration()
            return {"peak_mib": torch.cuda.max_memory_allocated() / 2**20}
        pool = runner.xp.get_default_memory_pool()
        runner.iteration()
        runner.iteration()
        graphs = sum(g.pool.total_bytes() for g in runner.abp._graphs.values())  # private pools
        return {"peak_mib": (pool.total_bytes() + graphs) / 2**20}
    base = _reset_peak_rss()
    runner.iteration()
    runner.iteration()
    peak = _proc_status_kib("VmHWM")
    if base is None or peak is None:
        return {"peak_mib": None}
    return {"peak_mib": (peak - base) / 1024}


def measure_memory(args: argparse.Namespace, which: str) -> float | None:
    """Run :func:`memory_probe` in a fresh interpreter; peak MiB or None."""
    cmd = [
        sys.executable,
        "-m",
        "abp_np.tools.bench",
        "--workload",
        args.workload,
        "--device",
        args.device,
        "--threads",
        str(args.threads),
        "--seed",
        str(args.seed),
        "--memory-probe",
        which,
        "--winograd",
        args.winograd,
    ]
    if args.cuda_graph:
        cmd.append("--cuda-graph")
    if args.batch:
        cmd += ["--batch", str(args.batch)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        print(f"memory probe ({which}) failed:\n{out.stderr.strip()}", file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]


# --- per-layer breakdown --------------------------------------------------------------------------


def _best_time(
    fn: Callable[[], Any],
    sync: Callable[[], None],
    repeats: int,
    around: Callable[[], Any] = contextlib.nullcontext,
) -> float:
    """Best of ``repeats`` timed calls after one warm-up call; each call inside a fresh
    ``around()`` context when given (entered and left outside the timing).

    The best, not the median: a layer call takes milliseconds, and on a shared machine
    other jobs only ever add time to it.
    """
    with around():
        fn()
    ts = []
    for _ in range(repeats):
        with around():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            ts.append(time.perf_counter() - t0)
    return min(ts)


#: The steps of the CPU Winograd path that ``--winograd-steps`` times, by their names in
#: :mod:`abp_np.fast.winograd`, and what the table calls them.
WINOGRAD_STEPS = {
    "_input_transform": "input transform",
    "_gemms": "GEMMs by U",
    "_output_transform": "output transform",
    "_output_transform_adjoint": "output adjoint",
    "_input_transform_adjoint": "input adjoint",
}


def winograd_steps(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Time each step of the CPU Winograd path inside real ABP iterations, by shape.

    ``--breakdown`` repeats each layer's call on the same data; inside an iteration the steps
    meet colder caches and the blocks of examples the batch is cut into. Here one warm-up and
    ``args.iterations`` iterations run with the functions of :data:`WINOGRAD_STEPS` timed per
    call (the ranges of examples step by step, :func:`_winograd_steps_visible`). Each row is
    one step and one set of operand shapes (for the GEMMs by U,
    (a^2, rows, inner) @ (a^2, inner, columns)): its number of calls, median and fastest
    milliseconds, and, for the GEMMs, GFLOP/s at the median.
    """
    if args.device != "cpu":
        raise SystemExit("--winograd-steps times the CPU Winograd path: use it with --device cpu")
    g, batch, lat = setup(args)
    abp = AbpRunner(g, batch, lat, STEPS, args.device, args.seed)
    abp.timed()  # warm-up, not recorded
    times: dict[tuple, list[float]] = {}
    inner = {name: getattr(winograd, name) for name in WINOGRAD_STEPS}

    def timer(name: str) -> Callable[..., Any]:
        fn = inner[name]

        def timed(a: Any, *rest: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            out = fn(a, *rest, **kw)
            shapes = (a.shape, rest[0].shape) if name == "_gemms" else (a.shape,)
            times.setdefault((name, shapes), []).append(time.perf_counter() - t0)
            return out

        return timed

    try:
        for name in WINOGRAD_STEPS:
            setattr(winograd, name, timer(name))
        with _winograd_steps_visible():
            for _ in range(args.iterations):
                abp.timed()
    finally:
        for name, fn in inner.items():
            setattr(winograd, name, fn)
    rows = []
    for (name, shapes), ts in times.items():
        med = statistics.median(ts)
        row = {
            "step": WINOGRAD_STEPS[name],
            "shapes": [list(sh) for sh in shapes],
            "calls": len(ts),
            "ms_median": 1e3 * med,
            "ms_min": 1e3 * min(ts),
            "ms_per_iteration": 1e3 * sum(ts) / args.iterations,
        }
        if name == "_gemms":
            (k, m, n), p = shapes[0], shapes[1][2]
            row["gflops_median"] = 2 * k * m * n * p / med / 1e9
        rows.append(row)
    return rows


def format_winograd_steps(rows: list[dict[str, Any]], ceiling: float) -> str:
    lines = [
        "steps of the Winograd path inside whole iterations (float32 GEMM ceiling "
        f"{ceiling:.1f} GFLOP/s)",
        f"{'step':<17} {'shapes':<34} {'calls':>6} {'ms median':>10} {'ms min':>8} "
        f"{'ms/iter':>8} {'GFLOP/s':>8}",
    ]
    for r in rows:
        shapes = " @ ".join(str(tuple(sh)) for sh in r["shapes"])
        gflops = f"{r['gflops_median']:>8.0f}" if "gflops_median" in r else ""
        lines.append(
            f"{r['step']:<17} {shapes:<34} {r['calls']:>6} {r['ms_median']:>10.2f} "
            f"{r['ms_min']:>8.2f} {r['ms_per_iteration']:>8.1f} {gflops}".rstrip()
        )
    if rows:
        per_step: dict[str, float] = {}
        for r in rows:
            per_step[r["step"]] = per_step.get(r["step"], 0.0) + r["ms_per_iteration"]
        lines.append("ms per iteration: " + ", ".join(f"{k} {v:.0f}" for k, v in per_step.items()))
    else:
        lines.append("(no layer took the Winograd path; see --winograd)")
    return "\n".join(lines)


def layer_clock(args: argparse.Namespace) -> dict[str, Any]:
    """Each layer's wall and CPU time inside real ABP iterations, and the idle core's share.

    ``--breakdown`` repeats each layer's call alone on the same data; here one warm-up and
    ``args.iterations`` iterations run with every layer's ``forward`` and ``backward`` timed
    per call: wall seconds, and the process's CPU seconds (all its threads) over the same
    call. CPU / wall is how many cores were busy on average (threads that spin count as
    busy); on a machine of ``cores`` cores, ``cores - CPU / wall`` cores sat idle, and
    ``(cores wall - CPU)`` is the core time left idle. What is not in a layer (the Langevin
    update, the loss, the optimiser, Python between layers) is the row "outside the layers".
    The kernel credits other threads' CPU time in steps, so a layer of short calls may show a
    little more than ``cores`` busy; the iteration's total is exact.
    """
    g, batch, lat = setup(args)
    abp = AbpRunner(g, batch, lat, STEPS, args.device, args.seed)
    abp.timed()  # warm-up, not recorded
    wall: dict[tuple[int, str], float] = {}
    cpu: dict[tuple[int, str], float] = {}
    calls: dict[tuple[int, str], int] = {}
    saved = [(layer, layer.forward, layer.backward) for layer in g.layers]

    def timer(k: int, kind: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*a: Any, **kw: Any) -> Any:
            c0, t0 = time.process_time(), time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                abp.sync()
                wall[k, kind] = wall.get((k, kind), 0.0) + time.perf_counter() - t0
                cpu[k, kind] = cpu.get((k, kind), 0.0) + time.process_time() - c0
                calls[k, kind] = calls.get((k, kind), 0) + 1

        return timed

    try:
        for k, (layer, fwd, bwd) in enumerate(saved):
            layer.forward = timer(k, "forward", fwd)  # instance attributes shadow the methods
            layer.backward = timer(k, "backward", bwd)
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(args.iterations):
            abp.iteration()
        abp.sync()
        total_wall, total_cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        for layer, _, _ in saved:
            del layer.forward, layer.backward
    n = args.iterations
    cores = threads._cores()
    rows = [
        {
            "layer": f"{k}: {g.layers[k]!r}",
            "pass": kind,
            "calls_per_iteration": calls[k, kind] / n,
            "ms_per_iteration": 1e3 * wall[k, kind] / n,
            "cpu_per_wall": cpu[k, kind] / wall[k, kind] if wall[k, kind] > 0 else 0.0,
            "idle_core_ms_per_iteration": 1e3 * (cores * wall[k, kind] - cpu[k, kind]) / n,
        }
        for k, kind in sorted(wall)
    ]
    out_wall = total_wall - sum(wall.values())
    out_cpu = total_cpu - sum(cpu.values())
    rows.append(
        {
            "layer": "outside the layers",
            "pass": "",
            "calls_per_iteration": 0.0,
            "ms_per_iteration": 1e3 * out_wall / n,
            "cpu_per_wall": out_cpu / out_wall if out_wall > 0 else 0.0,
            "idle_core_ms_per_iteration": 1e3 * (cores * out_wall - out_cpu) / n,
        }
    )
    return {
        "cores": cores,
        "ms_per_iteration": 1e3 * total_wall / n,
        "cpu_per_wall": total_cpu / total_wall,
        "rows": rows,
    }


def format_layer_clock(r: dict[str, Any]) -> str:
    lines = [
        f"layers inside whole iterations ({r['cores']} cores): wall milliseconds per iteration, "
        "cores busy (CPU / wall), idle core milliseconds per iteration",
        f"{'layer':<60} {'pass':<9} {'ms/iter':>8} {'CPU/wall':>9} {'idle ms':>8}",
    ]
    for row in r["rows"]:
        lines.append(
            f"{row['layer'][:60]:<60} {row['pass']:<9} {row['ms_per_iteration']:>8.1f} "
            f"{row['cpu_per_wall']:>9.2f} {row['idle_core_ms_per_iteration']:>8.1f}"
        )
    idle = sum(row["idle_core_ms_per_iteration"] for row in r["rows"])
    lines.append(
        f"iteration: {r['ms_per_iteration']:.1f} ms, {r['cpu_per_wall']:.2f} cores busy; "
        f"idle core time {idle:.1f} ms per iteration "
        f"({100 * idle / (r['cores'] * r['ms_per_iteration']):.0f} % of the cores' time)"
    )
    return "\n".join(lines)


#: The settings of :func:`abp_np.backend.using` that ``--ab`` takes, and how to read each value.
_AB_KEYS: dict[str, Callable[[str], Any]] = {
    "cuda": lambda v: _ab_bool(v),
    "c": lambda v: _ab_bool(v),
    "cpu_forms": lambda v: _ab_bool(v),
    "winograd": lambda v: v,
    "threads": int,
}


def _ab_bool(v: str) -> bool:
    if v.lower() in ("1", "on", "true", "yes"):
        return True
    if v.lower() in ("0", "off", "false", "no"):
        return False
    raise ValueError(f"{v!r} is not on/off")


def ab_settings(text: str) -> dict[str, Any]:
    """``"threads=1,winograd=off"`` -> ``{"threads": 1, "winograd": "off"}``; SystemExit saying
    what is wrong otherwise."""
    out: dict[str, Any] = {}
    for item in text.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep or key not in _AB_KEYS:
            raise SystemExit(
                f"--ab {text!r}: expected KEY=VALUE pairs with KEY one of "
                f"{', '.join(_AB_KEYS)} (abp_np.backend.using), e.g. --ab threads=1"
            )
        try:
            out[key] = _AB_KEYS[key](value)
        except ValueError as e:
            raise SystemExit(f"--ab {text!r}: bad value for {key}: {e}") from None
    return out


def ab(args: argparse.Namespace) -> dict[str, Any]:
    """A against B in one process: iterations alternate between the settings in force (A) and
    ``backend.using(**settings)`` (B), the order swapped every pair.

    On a shared or virtual machine, runs a minute apart can differ by more than a change being
    measured; iterations side by side see the same machine. Where the two settings use
    OpenBLAS' threads differently, each arm inherits them as the other left them: measure such
    settings process by process (:func:`ab_processes`). Returns both medians, their ratio
    B / A and the median of the pairs' ratios.
    """
    from abp_np.backend import using

    settings = ab_settings(args.ab)
    g, batch, lat = setup(args)
    runner = AbpRunner(g, batch, lat, STEPS, args.device, args.seed)
    with using(**settings):  # warm-up of both, not recorded
        runner.timed()
    runner.timed()
    a: list[float] = []
    b: list[float] = []
    for k in range(args.iterations):
        for first in (True, False) if k % 2 == 0 else (False, True):
            if first:
                a.append(runner.timed())
            else:
                with using(**settings):
                    b.append(runner.timed())
    return _ab_result(settings, a, b)


def _ab_result(settings: dict[str, Any], a: list[float], b: list[float]) -> dict[str, Any]:
    """Both arms' medians, their ratio B / A and the median of the pairs' ratios."""
    ma, mb = statistics.median(a), statistics.median(b)
    return {
        "settings": settings,
        "sec_per_iter_a": ma,
        "sec_per_iter_b": mb,
        "ratio_b_over_a": mb / ma,
        "pair_ratio_median": statistics.median(y / x for x, y in zip(a, b)),
        "seconds_a": a,
        "seconds_b": b,
    }


def _child_command(args: argparse.Namespace, *extra: str) -> list[str]:
    """``python -m abp_np.bench`` with this run's workload, iterations, device, threads, seed,
    batch, Winograd mode and CUDA-graph switch, then ``extra`` and ``--json``: a child process
    of :func:`ab_processes` or :func:`runs`."""
    cmd = [sys.executable, "-m", "abp_np.bench", "--workload", args.workload]
    cmd += ["--iterations", str(args.iterations), "--device", args.device]
    cmd += ["--threads", str(args.threads), "--seed", str(args.seed)]
    cmd += ["--winograd", args.winograd, *extra, "--json"]
    if args.batch is not None:
        cmd += ["--batch", str(args.batch)]
    if args.cuda_graph:
        cmd.append("--cuda-graph")
    return cmd


def _run_child(cmd: list[str], option: str) -> dict[str, Any]:
    """Run a child benchmark; its JSON line, or SystemExit with its error output."""
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{option}: a child failed ({' '.join(cmd)}):\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def ab_processes(args: argparse.Namespace) -> dict[str, Any]:
    """:func:`ab` with a fresh process for every measurement: ``args.processes`` pairs, A (the
    settings in force) and B (``--ab``'s) alternating, the order swapped every pair; each process
    times ``args.iterations`` iterations after its own warm-up and reports their median.

    Settings that change how OpenBLAS' threads are used (``threads``, or routes that split
    their GEMMs differently) are measured this way: alternating them in one process, each arm
    finds OpenBLAS' threads as the other left them, and the ratio measured that way differed in
    sign from the one measured process by process (BENCHMARKS.md, "Larger Winograd blocks").
    Returns what :func:`ab` returns; ``seconds_a`` and ``seconds_b`` hold per-process medians.
    """
    settings = ab_settings(args.ab)
    base = _child_command(args, "--no-memory")
    threads_of: dict[bool, list[int]] = {False: [], True: []}  # each child's own report

    def run(b: bool) -> float:
        child = _run_child(base + (["--using", args.ab] if b else []), "--processes")
        threads_of[b].append(child.get("abp_threads"))
        return float(child["sec_per_iter"])

    a: list[float] = []
    b: list[float] = []
    for k in range(args.processes):
        for first in (True, False) if k % 2 == 0 else (False, True):
            arm = a if first else b
            arm.append(run(not first))
            print(f"  pair {k + 1}/{args.processes}: {'A' if first else 'B'} {arm[-1]:.4f} s")
    return {
        **_ab_result(settings, a, b),
        "processes": args.processes,
        "abp_threads_a": threads_of[False],  # threads outside the GEMMs, as each child saw them
        "abp_threads_b": threads_of[True],
    }


def format_ab(r: dict[str, Any]) -> str:
    b = ", ".join(f"{k}={v}" for k, v in r["settings"].items())
    of = f"{r['processes']} processes' medians" if r.get("processes") else len(r["seconds_a"])
    return (
        f"A (settings in force): {r['sec_per_iter_a']:.3f} s per iteration (median of "
        f"{of})\nB (using {b}): {r['sec_per_iter_b']:.3f} s\n"
        f"B / A: {r['ratio_b_over_a']:.3f} (median of the pairs: {r['pair_ratio_median']:.3f})"
    )


def runs(args: argparse.Namespace) -> dict[str, Any]:
    """``args.runs`` plain runs, each a fresh process, and their summary.

    Each child is :func:`_child_command` with ``--compare-torch`` / ``--no-memory`` as given; its
    figures come back whole (``res["runs"]``). The summary: the median, least and largest of
    abp_np's seconds per iteration and, with PyTorch, of the ratios abp_np / PyTorch (each
    run's ratio of its own medians), and the range of both peaks. A fresh process per run
    samples what one run cannot: the host's load over minutes, and where the allocator and
    the threads start.
    """
    extra = ["--compare-torch"] * args.compare_torch + ["--no-memory"] * args.no_memory
    cmd = _child_command(args, *extra)
    children: list[dict[str, Any]] = []
    for k in range(args.runs):
        child = _run_child(cmd, "--runs")
        children.append(child)
        line = f"  run {k + 1}/{args.runs}: abp_np {child['sec_per_iter']:.4f} s/iter"
        if "ratio_abp_over_torch" in child:
            line += (
                f", torch {child['torch_sec_per_iter']:.4f}, "
                f"ratio {child['ratio_abp_over_torch']:.3f}"
            )
        if "peak_mib" in child:
            line += f", peak MiB {child['peak_mib']:.1f}"
            if "torch_peak_mib" in child:
                line += f" / {child['torch_peak_mib']:.1f}"
        print(line + f", GEMM ceiling {child['gemm_ceiling_gflops']:.0f} GFLOP/s", flush=True)
    res: dict[str, Any] = {"workload": args.workload, "runs": children}
    for key in ("sec_per_iter", "ratio_abp_over_torch"):
        values = [c[key] for c in children if key in c]
        if values:
            res[f"{key}_median"] = statistics.median(values)
            res[f"{key}_range"] = [min(values), max(values)]
    for key in ("peak_mib", "torch_peak_mib", "gemm_ceiling_gflops"):
        values = [c[key] for c in children if key in c]
        if values:
            res[f"{key}_range"] = [min(values), max(values)]
    print(format_runs(res))
    return res


def format_runs(r: dict[str, Any]) -> str:
    n = len(r["runs"])
    lo, hi = r["sec_per_iter_range"]
    lines = [
        f"{r['workload']}, {n} runs: abp_np {r['sec_per_iter_median']:.4f} s/iter "
        f"(median; {lo:.4f}-{hi:.4f})"
    ]
    if "ratio_abp_over_torch_median" in r:
        lo, hi = r["ratio_abp_over_torch_range"]
        lines.append(
            f"ratio abp_np / torch: {r['ratio_abp_over_torch_median']:.3f} "
            f"(median of the runs' ratios; {lo:.3f}-{hi:.3f})"
        )
    if "peak_mib_range" in r:
        text = "peak MiB abp_np {:.1f}-{:.1f}".format(*r["peak_mib_range"])
        if "torch_peak_mib_range" in r:
            text += ", torch {:.1f}-{:.1f}".format(*r["torch_peak_mib_range"])
        lines.append(text)
    lines.append("GEMM ceiling {:.0f}-{:.0f} GFLOP/s".format(*r["gemm_ceiling_gflops_range"]))
    return "\n".join(lines)


def breakdown(args: argparse.Namespace, torch: Any) -> list[dict[str, Any]]:
    """Forward, input-gradient and weight-gradient time of every layer, both libraries.

    Each layer is timed on its own, on the activations of one forward pass of the whole
    network, with a random upstream gradient, best of ``args.repeats`` calls. ``fwd`` and
    ``dx`` are timed twice: as in the Langevin loop (inside ``Generator.fixed_weights()``,
    where a layer reuses what it derived from the weights in the block's first pass) and as in
    the learning step of :meth:`ABP.alternate <abp_np.abp.ABP.alternate>` (``learn_fwd``,
    ``learn_dx``: in ``fixed_weights(learning=True)`` nested in the loop's block, so that the
    forward pass finds what a Langevin pass derived and the routes choose as in the learning
    step). The weight-gradient time is the learning step's full backward time minus its
    input-only one.
    """
    g, batch, lat = setup(args)
    abp = AbpRunner(g, batch, lat, STEPS, args.device, args.seed)
    xp, sync = abp.xp, abp.sync
    rng = np.random.default_rng(args.seed + 2)
    rows = []
    h = abp.z
    tmods = torch_model(g, torch, args.device) if torch is not None else None
    for i, layer in enumerate(g.layers):
        x = h
        h = layer.forward(x)
        dy = xp.asarray(rng.standard_normal(h.shape).astype(g.dtype))
        row: dict[str, Any] = {"layer": f"{i}: {layer!r}"}

        def fwd(layer: L.Layer = layer, x: Any = x) -> Any:
            return layer.forward(x)

        def bwd(full: bool, layer: L.Layer = layer, dy: Any = dy) -> Callable[[], Any]:
            return lambda: layer.backward(dy, full)

        @contextlib.contextmanager
        def after_the_loop(fwd: Callable[[], Any] = fwd) -> Iterator[None]:
            """As ABP.alternate's learning step: a Langevin pass has derived from W."""
            with g.fixed_weights():
                fwd()
                with g.fixed_weights(learning=True):
                    yield

        with g.fixed_weights():  # as in the Langevin loop: kept from the block's first pass
            row["fwd"] = _best_time(fwd, sync, args.repeats)
            fwd()
            row["dx"] = _best_time(bwd(False), sync, args.repeats)
        row["learn_fwd"] = _best_time(fwd, sync, args.repeats, after_the_loop)
        with after_the_loop():  # as in the learning step
            fwd()
            row["learn_dx"] = _best_time(bwd(False), sync, args.repeats)
            full = _best_time(bwd(True), sync, args.repeats)
        row["dW"] = max(full - row["learn_dx"], 0.0) if layer.params else 0.0
        if tmods is not None:
            row.update(_torch_layer_times(torch, tmods[i], x, dy, args))
        rows.append(row)
    return rows


def _torch_layer_times(torch: Any, m: Any, x: Any, dy: Any, args: argparse.Namespace) -> dict:
    dev = "cuda" if args.device == "gpu" else "cpu"
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    tx = torch.from_numpy(to_numpy(x).copy()).to(dev).requires_grad_(True)
    tdy = torch.from_numpy(to_numpy(dy).copy()).to(dev)
    params = [p for p in m.parameters() if p.requires_grad]
    out = {"torch_fwd": _best_time(lambda: m(tx), sync, args.repeats)}

    def backward(inputs: list) -> Callable[[], Any]:
        def run() -> Any:
            y = m(tx)
            return torch.autograd.grad(y, inputs, tdy)

        return run

    fwd = out["torch_fwd"]
    dx = _best_time(backward([tx]), sync, args.repeats) - fwd
    out["torch_dx"] = max(dx, 0.0)
    if params:
        full = _best_time(backward([tx, *params]), sync, args.repeats) - fwd
        out["torch_dW"] = max(full - dx, 0.0)
    else:
        out["torch_dW"] = 0.0
    return out


def format_breakdown(rows: list[dict[str, Any]], steps: int) -> str:
    has_torch = "torch_fwd" in rows[0]
    width = max(len(r["layer"]) for r in rows)
    cols = ["fwd", "dx", "learn_fwd", "learn_dx", "dW"]
    cols += ["torch_fwd", "torch_dx", "torch_dW"] if has_torch else []
    head = f"{'layer':<{width}}  " + "  ".join(f"{c:>9}" for c in cols)
    lines = ["milliseconds per call (best of --repeats)", head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['layer']:<{width}}  " + "  ".join(f"{r[c] * 1e3:9.2f}" for c in cols))
    tot = {c: sum(r[c] for r in rows) for c in cols}
    lines.append(f"{'total':<{width}}  " + "  ".join(f"{tot[c] * 1e3:9.2f}" for c in cols))

    per_iteration = {k: sum(v) / 1e3 for k, v in layer_ms_per_iteration(rows, steps).items()}
    ours = per_iteration["abp_np"]
    line = f"implied seconds per iteration (layers only): abp_np {ours:.3f}"
    if has_torch:
        theirs = per_iteration["PyTorch"]
        line += f", torch {theirs:.3f}, ratio {ours / theirs:.2f}"
    lines.append(line)
    return "\n".join(lines)


# --- linear scaling -------------------------------------------------------------------------------


def sweep(args: argparse.Namespace, torch: Any) -> list[dict[str, Any]]:
    """Seconds per iteration against batch size, Langevin steps or pixels (abp_np only)."""
    w = WORKLOADS[args.workload]
    if args.sweep == "pixels" and args.workload not in _FULLY_CONV:
        raise ValueError(
            f"--sweep pixels needs a fully convolutional workload ({sorted(_FULLY_CONV)}), "
            f"got {args.workload!r}"
        )
    rows = []
    if args.sweep == "batch":
        b = args.batch or w.batch
        values = sorted({max(2, b // 4), max(2, b // 2), b, 2 * b}) if b > 1 else [1, 2, 4, 8]
        for v in values:
            rows.append({"value": v, **measure(args, None, batch=v)})
    elif args.sweep == "steps":
        for v in (0, 2, 5, 10, 20):
            rows.append({"value": v, **measure(args, None, steps=v)})
    else:
        _, sizes = _FULLY_CONV[args.workload]
        for v in sizes:
            r = measure(args, None, latent=v)
            g, _, lat = setup(args, v)
            r["value"] = int(np.prod(g.output_shape(lat)))
            rows.append(r)
    x = np.array([r["value"] for r in rows], float)
    t = np.array([r["sec_per_iter"] for r in rows])
    slope, icpt = np.polyfit(x, t, 1)
    fit = slope * x + icpt
    for r, f in zip(rows, fit, strict=True):
        r["fit"] = float(f)
        r["deviation_from_fit"] = float((r["sec_per_iter"] - f) / f)
    return rows


def format_sweep(rows: list[dict[str, Any]], what: str) -> str:
    name = {"batch": "batch", "steps": "Langevin steps", "pixels": "output values"}[what]
    head = f"{name:>14}  {'sec/iter':>9}  {'GFLOP/s':>8}  {'linear fit':>10}  {'deviation':>9}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['value']:>14}  {r['sec_per_iter']:9.4f}  {r['gflops']:8.1f}  "
            f"{r['fit']:10.4f}  {100 * r['deviation_from_fit']:8.1f}%"
        )
    x = np.array([r["value"] for r in rows], float)
    t = np.array([r["sec_per_iter"] for r in rows])
    slope, icpt = np.polyfit(x, t, 1)
    lines.append(f"least-squares line: sec/iter = {icpt:.4g} + {slope:.4g} x {name}")
    return "\n".join(lines)


def save_sweep_chart(
    rows: list[dict[str, Any]], what: str, workload: str, device: str, path: str
) -> None:
    """Draw a sweep's seconds per iteration and its least-squares line; save as PNG."""
    from PIL import Image

    from abp_np.tools.plot import line_chart

    name = {"batch": "batch size", "steps": "Langevin steps", "pixels": "output values"}[what]
    x = [r["value"] for r in rows]
    picture = line_chart(
        {
            "measured": (x, [r["sec_per_iter"] for r in rows]),
            "least-squares line": (x, [r["fit"] for r in rows]),
        },
        title=f"{workload} on {device}: seconds per ABP iteration against {name}",
        xlabel=name,
        ylabel="s / iteration",
    )
    Image.fromarray(picture).save(path)


def layer_ms_per_iteration(rows: list[dict[str, Any]], steps: int) -> dict[str, list[float]]:
    """Each layer's milliseconds in one iteration, from a :func:`breakdown`.

    abp_np: ``steps`` x (fwd + dx) in the Langevin loop, then the learning step's
    fwd + dx + dW; PyTorch (when timed): (``steps`` + 1) x (fwd + dx) + dW.
    """
    out = {
        "abp_np": [
            1e3 * (steps * (r["fwd"] + r["dx"]) + r["learn_fwd"] + r["learn_dx"] + r["dW"])
            for r in rows
        ]
    }
    if rows and "torch_fwd" in rows[0]:
        out["PyTorch"] = [
            1e3 * ((steps + 1) * (r["torch_fwd"] + r["torch_dx"]) + r["torch_dW"]) for r in rows
        ]
    return out


def _short(label: str) -> str:
    """A layer's label without the settings every layer of the paper's networks shares."""
    label = re.sub(r", kernel_size=.*\)$", ")", label)
    return re.sub(r", eps=.*\)$", ")", label)


def save_breakdown_chart(
    rows: list[dict[str, Any]], steps: int, workload: str, device: str, path: str
) -> None:
    """Draw each layer's milliseconds per iteration (both libraries) as bars; save as PNG."""
    from PIL import Image

    from abp_np.tools.plot import bar_chart

    picture = bar_chart(
        [_short(r["layer"]) for r in rows],
        layer_ms_per_iteration(rows, steps),
        title=f"{workload} on {device}: milliseconds per ABP iteration, by layer "
        f"({steps} Langevin steps + 1 learning step)",
        xlabel="ms / iteration",
    )
    Image.fromarray(picture).save(path)


def _check_plot_target(args: argparse.Namespace) -> None:
    """Refuse ``--plot`` before anything is timed when it cannot be honoured."""
    if not (args.sweep or args.breakdown):
        raise SystemExit(
            "--plot draws a sweep or the breakdown: use it with --sweep batch|steps|pixels or "
            "--breakdown"
        )
    if not args.plot.lower().endswith(".png"):
        raise SystemExit(f"--plot writes a PNG: give a path ending in .png, got {args.plot!r}")
    folder = os.path.dirname(os.path.abspath(args.plot))
    if not os.path.isdir(folder):
        raise SystemExit(f"--plot: folder {folder!r} does not exist; create it first")
    try:
        import PIL  # noqa: F401
    except ImportError as err:
        raise SystemExit(
            "--plot draws with Pillow, which is not installed: pip install pillow (or abp_np[data])"
        ) from err


# --- command line ---------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m abp_np.bench",
        description="Time full ABP iterations (10 Langevin steps + 1 learning step).",
    )
    p.add_argument("--workload", default="faces64", choices=sorted(WORKLOADS))
    p.add_argument("--iterations", type=int, default=5, help="timed iterations (median)")
    p.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    p.add_argument("--batch", type=int, default=None, help="batch size (default: workload's)")
    p.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="BLAS / torch threads (default: all cores)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="last line: a JSON object of results")
    p.add_argument("--compare-torch", action="store_true", help="run PyTorch side by side")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--breakdown", action="store_true", help="per-layer time table")
    p.add_argument("--repeats", type=int, default=5, help="repeats per layer in --breakdown")
    p.add_argument(
        "--winograd-steps",
        action="store_true",
        help="time each step of the CPU Winograd path inside whole iterations, by shape",
    )
    p.add_argument(
        "--layer-clock",
        action="store_true",
        help="each layer's wall time and cores busy (CPU / wall) inside whole iterations, and "
        "the core time left idle",
    )
    p.add_argument(
        "--ab",
        metavar="KEY=VALUE[,KEY=VALUE]",
        help="alternate iterations in one process between the current settings and "
        "abp_np.backend.using(KEY=VALUE, ...), e.g. threads=1 or winograd=off,c=off; prints "
        "both medians and their ratio (--processes N: a fresh process per measurement)",
    )
    p.add_argument(
        "--processes",
        type=int,
        default=0,
        metavar="N",
        help="with --ab: N pairs of fresh processes instead, A and B alternating (the order "
        "swapped every pair), each timing --iterations iterations. Use it where the arms use "
        "OpenBLAS' threads differently: in one process each arm leaves them in a state that the "
        "other inherits",
    )
    p.add_argument(
        "--runs",
        type=int,
        default=0,
        metavar="N",
        help="N whole runs, each a fresh process (the plain run: --iterations iterations, "
        "with --compare-torch side by side), then the median of their time ratios and the "
        "range of their peak memory: the figures BENCHMARKS.md reports",
    )
    p.add_argument("--using", default=None, help=argparse.SUPPRESS)  # a --processes child's B
    p.add_argument(
        "--sweep",
        choices=["batch", "steps", "pixels"],
        default=None,
        help="show how the cost grows with batch, Langevin steps or pixels",
    )
    p.add_argument(
        "--plot",
        metavar="PNG",
        default=None,
        help="with --sweep: save the curve and its least-squares line as a PNG chart; with "
        "--breakdown: each layer's milliseconds per iteration as bars (Pillow)",
    )
    p.add_argument(
        "--winograd",
        default="auto",
        choices=["auto", "on", "off"],
        help="CPU Winograd path of the transposed convolutions (abp_np.fast.winograd.using)",
    )
    p.add_argument(
        "--cuda-graph",
        action="store_true",
        help="GPU: replay the Langevin loop as a captured CUDA graph (ABP(cuda_graph=True))",
    )
    p.add_argument("--memory-probe", choices=["abp", "torch"], default=None, help=argparse.SUPPRESS)
    return p


def _machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"^model name\s*:\s*(.+)$", f.read(), re.MULTILINE)
        cpu = m.group(1).strip() if m else cpu
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def _torch_float32_exact(torch: Any) -> None:
    """TF32 off in PyTorch (matmul and cuDNN convolutions), as it is in CuPy by default.

    PyTorch leaves cuDNN's TF32 on unless told, which would time lower-precision
    transposed convolutions against abp_np's float32 ones.
    """
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def _gpu(xp: Any, torch: Any) -> dict[str, Any]:
    """The GPU, CuPy and CUDA versions, and the TF32 settings of both libraries."""
    dev = xp.cuda.Device()
    props = xp.cuda.runtime.getDeviceProperties(dev.id)
    name = props["name"]
    out = {
        "gpu": name.decode() if isinstance(name, bytes) else str(name),
        "cupy": xp.__version__,
        "cuda_runtime": xp.cuda.runtime.runtimeGetVersion(),
        "cupy_tf32": os.environ.get("CUPY_TF32", "0") == "1",
    }
    if torch is not None:
        out["torch_tf32"] = bool(
            torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32
        )
        out["cudnn"] = torch.backends.cudnn.version()
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = _parser().parse_args(argv)
    from abp_np.backend import using

    settings = ab_settings(args.using) if args.using else {}
    with winograd.using(args.winograd), using(**settings):
        return _main(args)


def _main(args: argparse.Namespace) -> dict[str, Any]:
    if args.iterations < 1:
        raise SystemExit("--iterations must be >= 1")
    if args.batch is not None and args.batch < 1:
        raise SystemExit("--batch must be >= 1")
    if args.threads < 1:
        raise SystemExit("--threads must be >= 1")
    if args.processes < 0 or (args.processes and not args.ab):
        raise SystemExit("--processes N (N >= 1) goes with --ab KEY=VALUE: the pairs it runs")
    others = ("ab", "breakdown", "sweep", "layer_clock", "winograd_steps", "memory_probe")
    if args.runs < 0 or (args.runs and any(getattr(args, k) for k in others)):
        raise SystemExit(
            "--runs N (N >= 1) repeats the plain run (with --compare-torch or without); "
            "leave out --ab, --breakdown, --sweep, --layer-clock, --winograd-steps"
        )
    if args.runs:
        res = runs(args)
        if args.json:
            print(json.dumps(res))
        return res
    if args.cuda_graph and args.device != "gpu":
        raise SystemExit("--cuda-graph replays CUDA graphs: use it with --device gpu")
    if args.plot is not None:
        _check_plot_target(args)
    try:
        resolve_device(args.device)
    except (RuntimeError, ValueError) as err:
        raise SystemExit(str(err)) from err
    blas_set = threads.set_blas_threads(args.threads)

    if args.memory_probe:
        res = memory_probe(args, args.memory_probe)
        print(json.dumps(res))
        return res

    torch = None
    if args.compare_torch or args.breakdown:
        torch = import_torch()
        if torch is None:
            print(
                "PyTorch is not installed: the torch side is skipped "
                "(`pip install torch` to compare; abp_np itself does not need it)."
            )
        else:
            torch.set_num_threads(args.threads)
            _torch_float32_exact(torch)
    if args.breakdown and not args.compare_torch:
        torch = None

    res: dict[str, Any] = {
        "workload": args.workload,
        "device": args.device,
        "threads": args.threads,
        "blas_threads_set": blas_set,
        "winograd": args.winograd,
        "cpu_kernels": _cpu.available(),
        "cpu_kernels_level": _cpu.level(),
        **_machine(),
    }
    if torch is not None:
        res["torch"] = torch.__version__
    xp = resolve_device(args.device)
    if args.device == "gpu":
        res.update(_gpu(xp, torch))
        print(
            f"GPU: {res['gpu']}, CuPy {res['cupy']}, CUDA runtime {res['cuda_runtime']}; "
            f"TF32: {'on' if res['cupy_tf32'] else 'off'} in CuPy (CUPY_TF32)"
            + (
                f", {'on' if res['torch_tf32'] else 'off'} in PyTorch (matmul and cuDNN)"
                if torch is not None
                else ""
            )
            + (f"; the Langevin loop as a CUDA graph: {'yes' if args.cuda_graph else 'no'}")
        )
    print(
        f"abp_np benchmark: {args.workload} ({WORKLOADS[args.workload].description}) on "
        f"{args.device}, {res['cpu']}, {args.threads} threads, numpy {np.__version__}"
        + (f", torch {torch.__version__}" if torch is not None else "")
    )
    if args.device == "cpu":
        kernels = (
            f"compiled for {_cpu.level()}"
            + (f" ({_cpu.level_note()})" if _cpu.level_note() else "")
            if _cpu.available()
            else f"not available ({_cpu.reason()})"
        )
        print(f"CPU kernels: {kernels}; Winograd path: {args.winograd}")
        from abp_np import _blas_spin

        res["abp_threads"] = threads.count()
        res["blas_short_spin"] = _blas_spin.SHORT_SPIN
        print(
            f"threads outside the GEMMs: {res['abp_threads']} (ABP_NUM_THREADS); OpenBLAS' idle "
            f"threads: {'sleep at once' if _blas_spin.SHORT_SPIN else 'spin'} "
            f"(OPENBLAS_THREAD_TIMEOUT={os.environ.get('OPENBLAS_THREAD_TIMEOUT', 'unset')})"
        )
        from abp_np import _malloc

        res["malloc_thresholds_set"] = _malloc.SET
        print(
            "glibc malloc: "
            + (
                f"keeps freed memory (mmap threshold {_malloc.MMAP_THRESHOLD >> 20} MiB, trim "
                f"threshold {_malloc.TRIM_THRESHOLD >> 20} MiB)"
                if _malloc.SET
                else f"as it was ({_malloc.reason_to_leave() or 'mallopt refused'})"
            )
        )

    if args.sweep:
        rows = sweep(args, torch)
        print(format_sweep(rows, args.sweep))
        res["sweep"] = {"over": args.sweep, "rows": rows}
        if args.plot is not None:
            save_sweep_chart(rows, args.sweep, args.workload, args.device, args.plot)
            print(f"chart: {args.plot}")
    elif args.breakdown:
        rows = breakdown(args, torch)
        print(format_breakdown(rows, STEPS))
        res["breakdown"] = rows
        if args.plot is not None:
            save_breakdown_chart(rows, STEPS, args.workload, args.device, args.plot)
            print(f"chart: {args.plot}")
    elif args.ab:
        res["ab"] = ab_processes(args) if args.processes else ab(args)
        print(format_ab(res["ab"]))
    elif args.layer_clock:
        if args.device != "cpu":
            raise SystemExit("--layer-clock reads the process's CPU time: use it with --device cpu")
        res["layer_clock"] = layer_clock(args)
        print(format_layer_clock(res["layer_clock"]))
    elif args.winograd_steps:
        res["gemm_ceiling_gflops"] = gemm_ceiling(xp, n=2048 if args.device == "cpu" else 8192)
        rows = winograd_steps(args)
        print(format_winograd_steps(rows, res["gemm_ceiling_gflops"]))
        res["winograd_steps"] = rows
    else:
        res["gemm_ceiling_gflops"] = gemm_ceiling(xp, n=2048 if args.device == "cpu" else 8192)
        res.update(measure(args, torch))
        if not args.no_memory:
            res["peak_mib"] = measure_memory(args, "abp")
            if torch is not None:
                res["torch_peak_mib"] = measure_memory(args, "torch")
        print(format_result(res))
    if args.json:
        print(json.dumps(res))
    return res


def format_result(r: dict[str, Any]) -> str:
    ceil = r["gemm_ceiling_gflops"]
    lines = [
        f"timing: {r['abp_source']}",
        f"batch {r['batch']}, {r['steps']} Langevin steps + 1 learning step per iteration, "
        f"{r['gflop_per_iter']:.1f} GFLOP per iteration",
        f"float32 GEMM ceiling: {ceil:.1f} GFLOP/s",
    ]
    sides = [("abp_np", "")] + ([("torch", "torch_")] if "torch_sec_per_iter" in r else [])
    for name, p in sides:
        mem = r.get(f"{p}peak_mib")
        lines.append(
            f"{name:>7}: {r[p + 'sec_per_iter']:.4f} s/iter (median), "
            f"{r[p + 'images_per_sec']:.1f} images/s, {r[p + 'gflops']:.1f} GFLOP/s "
            f"({100 * r[p + 'gflops'] / ceil:.0f}% of ceiling)"
            + (f", peak memory {mem:.1f} MiB" if mem is not None else "")
        )
    if r["device"] == "cpu" and "cpu_per_wall" in r:
        share = r.get("gemm_share")
        if share is not None:
            lines.append(
                f" abp_np: GEMMs {100 * share:.0f}% of an iteration, everything else "
                f"{100 * (1 - share):.0f}% (one more iteration, its GEMM calls timed)"
            )
        for name, p in sides:
            busy = r[p + "cpu_per_wall"]
            idle = f"; with 2 threads, one core idle {100 * min(1.0, max(0.0, 2 - busy)):.0f}%"
            lines.append(
                f"{name:>7}: CPU time / wall time {busy:.2f} ({r['threads']} threads"
                + (idle if r["threads"] == 2 else "")
                + " of the time; time spent spinning counts as busy)"
            )
    if "ratio_abp_over_torch" in r:
        lines.append(
            f"ratio abp_np / torch (time): {r['ratio_abp_over_torch']:.3f} (medians), "
            f"{r['ratio_best_abp_over_torch']:.3f} (best iterations)"
            f"   (max |forward difference| {r['max_abs_forward_difference']:.2e})"
        )
        if r.get("peak_mib") and r.get("torch_peak_mib"):
            lines.append(
                f"ratio abp_np / torch (peak memory): {r['peak_mib'] / r['torch_peak_mib']:.3f}"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
