"""Several threads (:mod:`abp_np.fast.threads`): the same numbers, bit for bit or within a bound.

Each split loop computes every index exactly as the single loop does, so the expected value of
every comparison here is the ONE-thread result (``using(threads=1)``: the single loop itself,
no worker, no split), and the check is ``np.array_equal``, not a tolerance. The thread counts
2 and 3 cut the loops at different places (3 also on a 2-core machine: the threads then take
turns, which changes the timing, never the values). The exceptions are GEMMs that the split
hands to OpenBLAS in other sizes (a stack's GEMMs on one BLAS thread each, the Winograd
route's GEMMs on part of the batch): OpenBLAS picks its kernels by size and may round the last
bits differently, so those tests state and check a bound instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from abp_np import functional as F
from abp_np.backend import using
from abp_np.fast import columns, elementwise, threads, winograd, winograd1d
from abp_np.fast import cpu as _cpu
from abp_np.generator import Generator
from abp_np.layers import BatchNorm1d, Linear
from abp_np.optim import SGD, Adam

from conftest import tiny_abp_iteration

needs_c = pytest.mark.skipif(not _cpu.available(), reason=f"CPU kernels not built: {_cpu.reason()}")


# --- the split itself -------------------------------------------------------------------------


@pytest.mark.parametrize("n, parts", [(0, 3), (1, 4), (5, 2), (7, 3), (100, 7), (3, 8)])
def test_ranges_cover_each_index_once_in_near_equal_parts(n, parts):
    rs = threads.ranges(n, parts)
    covered = [i for lo, hi in rs for i in range(lo, hi)]
    assert covered == list(range(n))
    sizes = [hi - lo for lo, hi in rs]
    assert max(sizes) - min(sizes) <= 1
    assert len(rs) == max(1, min(parts, n))


def test_parallel_for_runs_every_range_once_on_several_threads():
    seen, lock = [], threading.Lock()

    def fn(lo, hi):
        with lock:
            seen.append((lo, hi, threading.get_ident()))

    with using(threads=3):
        threads.parallel_for(fn, 10)
    assert sorted((lo, hi) for lo, hi, _ in seen) == [(0, 4), (4, 7), (7, 10)]
    assert len({t for *_, t in seen}) == 3
    assert (0, 4, threading.get_ident()) in seen  # the first range runs on the caller


def test_one_thread_and_small_work_run_the_single_loop_on_the_caller():
    calls = []
    with using(threads=1):
        threads.parallel_for(lambda lo, hi: calls.append((lo, hi, threading.get_ident())), 9)
    with using(threads=4):
        threads.parallel_for(
            lambda lo, hi: calls.append((lo, hi, threading.get_ident())), 9, work=100
        )
    assert calls == [(0, 9, threading.get_ident())] * 2


def test_an_error_in_a_range_is_raised_after_every_range_finished():
    done = []

    def fn(lo, hi):
        if lo == 0:
            raise RuntimeError("range 0 failed")
        threading.Event().wait(0.05)
        done.append(lo)

    with using(threads=3), pytest.raises(RuntimeError, match="range 0 failed"):
        threads.parallel_for(fn, 6)
    assert sorted(done) == [2, 4]  # the workers' ranges ran to their end before the raise


def test_no_nested_split_on_a_worker():
    inner = []

    def fn(lo, hi):
        inner.append(threads.count())

    with using(threads=2):
        threads.parallel_for(lambda lo, hi: threads.parallel_for(fn, 4) if lo else None, 2)
    assert inner == [1]


# --- how many threads -------------------------------------------------------------------------


def test_count_follows_using_then_the_environment_then_the_blas(monkeypatch):
    monkeypatch.setenv("ABP_NUM_THREADS", "5")
    assert threads.count() == 5
    with using(threads=2):
        assert threads.count() == 2
    monkeypatch.delenv("ABP_NUM_THREADS")
    blas = threads.blas_threads()
    assert threads.count() == (blas or len(os.sched_getaffinity(0)))


@pytest.mark.parametrize("value, message", [("0", "at least 1"), ("two", "whole number")])
def test_bad_abp_num_threads_says_what_to_set(monkeypatch, value, message):
    monkeypatch.setenv("ABP_NUM_THREADS", value)
    with pytest.raises(ValueError, match=message) as e:
        threads.count()
    assert "ABP_NUM_THREADS" in str(e.value)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_using_refuses_bad_thread_counts(bad):
    with pytest.raises(ValueError, match="threads"):
        with using(threads=bad):
            pass


def test_parallel_for_works_in_a_forked_child():
    """Threads do not survive fork: the child makes its own workers."""
    with using(threads=2):
        threads.parallel_for(lambda lo, hi: None, 4)  # the parent's pool exists
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            out = np.zeros(8)
            with using(threads=2):
                threads.parallel_for(lambda lo, hi: out.__setitem__(slice(lo, hi), 1), 8)
            code = 0 if out.sum() == 8 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0


# --- OpenBLAS' spin, set by `import abp_np` ---------------------------------------------------


def _spin_after_import(env: dict, first: str = "") -> str:
    code = f"{first}import abp_np, os; print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'))"
    base = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_THREAD_TIMEOUT",)}
    base.pop("ABP_NUM_THREADS", None)
    out = subprocess.run(
        [sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_import_shortens_openblas_spin_unless_told_otherwise():
    assert _spin_after_import({}) == "4"
    assert _spin_after_import({"OPENBLAS_THREAD_TIMEOUT": "20"}) == "20"  # yours is kept
    assert _spin_after_import({"ABP_NUM_THREADS": "1"}) == "None"  # one thread: as it was
    assert _spin_after_import({}, first="import numpy; ") == "None"  # too late: left alone


# --- the same numbers, kernel by kernel -------------------------------------------------------


def _by_threads(fn, counts=(1, 2, 3)):
    out = []
    for t in counts:
        with using(threads=t):
            out.append(fn())
    return out


def _assert_all_equal(results):
    first = results[0]
    for other in results[1:]:
        if isinstance(first, tuple):
            for a, b in zip(first, other, strict=True):
                assert (a is None and b is None) or np.array_equal(a, b)
        else:
            assert np.array_equal(first, other)


@needs_c
@pytest.mark.parametrize("pool", ["c", "python"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_c_kernels_give_the_same_bits_on_any_number_of_threads(dtype, pool, monkeypatch):
    # "c": the kernels' ranges on the C threads of kernels/pool_cpu.c; "python": on the
    # Python threads of parallel_for (ABP_C_POOL=0)
    monkeypatch.setattr(_cpu, "_C_POOL", pool == "c")
    rng = np.random.default_rng(0)
    n, C, H, W, m, nt = 3, 7, 8, 8, 4, (2, 2)
    x = rng.standard_normal((n, C, H, W)).astype(dtype)
    a2 = (m + 2) ** 2
    P = n * nt[0] * nt[1]

    def input_side():
        V = np.empty((a2, C, P), dtype)
        _cpu.winograd_input(x, V, -1, -1, m, nt)
        dx = np.empty_like(x)
        _cpu.winograd_input_adjoint(V, dx, -1, -1, m, nt)
        return V, dx

    Cout = 5
    M = rng.standard_normal((a2, 4 * Cout, P)).astype(dtype)
    bias = rng.standard_normal(Cout).astype(dtype)

    def output_side():
        y = np.empty((n, Cout, 2 * m * nt[0], 2 * m * nt[1]), dtype)
        _cpu.winograd_output(M, y, m, nt, bias)
        dM = np.empty_like(M)
        _cpu.winograd_output_adjoint(y, dM, m, nt)
        return y, dM

    xb = (rng.standard_normal((4, 9, 300)) * 2 + 1).astype(dtype)
    gamma, beta = (rng.uniform(0.5, 2, 9).astype(dtype), rng.standard_normal(9).astype(dtype))

    def batchnorm():
        y, cache = F.batchnorm_forward(xb, gamma, beta, 1e-5, (0, 2))
        assert cache.route == "c"
        dx, dg, db = F.batchnorm_backward(np.cos(y), cache)
        return y, cache.mean, cache.var, dx, dg, db

    s, L, nt1 = 10, 13, 4  # the 1-D route's kernels: 13 samples, stride 10, 4 tiles of F(4, 3)
    BT1, _, AT1 = winograd1d.transforms(4, dtype)
    x1 = rng.standard_normal((n, C, 1, L)).astype(dtype)
    M1 = rng.standard_normal((6, n * nt1, Cout * s)).astype(dtype)

    def one_d():
        V = np.empty((6, C, n * nt1), dtype)
        _cpu.winograd1d_input(x1, V, BT1, 4, nt1)
        dx = np.empty_like(x1)
        _cpu.winograd1d_input_adjoint(V, dx, BT1, 4, nt1)
        y = np.empty((n, Cout, 1, 150), dtype)
        _cpu.winograd1d_output(M1, y, AT1, s, nt1, 8, bias)
        dM = np.empty_like(M1)
        _cpu.winograd1d_output_adjoint(y, dM, AT1, s, nt1, 8)
        return V, dx, y, dM

    w = rng.standard_normal((C, Cout, 5, 5)).astype(dtype)

    def weights():  # U = G K G^T, output channels split
        U = np.empty((a2, 4 * Cout, C), dtype)
        _cpu.winograd_weights(w, U, winograd.transforms_1d(m, dtype)[1])
        return (U,)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(threads, "MIN_WORK", 1)  # split even these small arrays
        for fn in (input_side, output_side, batchnorm, one_d, weights):
            _assert_all_equal(_by_threads(fn))


@pytest.mark.parametrize("name", ["relu", "leaky_relu", "tanh"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_activations_give_the_same_bits_on_any_number_of_threads(name, overwrite):
    rng = np.random.default_rng(1)
    shape = (3, 7, 67, 101)  # 142,107 elements: ranges that do not fall on SIMD boundaries
    x = rng.standard_normal(shape).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    fwd = getattr(F, f"{name}_forward")
    bwd = getattr(F, f"{name}_backward")

    def run():
        y, cache = fwd(x, 0.2) if name == "leaky_relu" else fwd(x)
        g = dy.copy()
        dx = bwd(g, cache, out=g if overwrite else None)
        return y, dx

    split = "c" if name == "relu" and _cpu.pooled(x.dtype) else "threads"
    with using(threads=2):  # the split route is the one taken
        assert F.routes.choose(f"{name}_forward", x).name == split
    with using(threads=1):
        assert F.routes.choose(f"{name}_forward", x).name == "xp"
    _assert_all_equal(_by_threads(run))


@pytest.mark.parametrize(
    "optimizer, route",
    [("sgd", "c"), ("sgd", "threads"), ("adam", "threads")],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("piece", [elementwise.PIECE, 4099])
def test_optimizer_steps_give_the_same_bits_on_any_number_of_threads(
    optimizer, route, dtype, piece, monkeypatch
):
    # a 431 x 397 filter (171,107 elements: split, in ranges that do not fall on SIMD
    # boundaries), its bias and a batch norm's gain and bias; three steps, so that the momentum
    # and Adam's moments carry over; the gradients are scaled so that some tensors are clipped.
    # lr, weight decay and SGD's momentum 0.9 are not float32 numbers: rounded as NumPy does;
    # parameters, decayed parameters, gradients and steps of one size, so that every rounding
    # of the update shows in the result.
    # "c": SGD's compiled update on the pool's threads; "threads": _apply on pieces of elements
    if route == "c" and not _cpu.pooled(dtype):
        pytest.skip(f"CPU kernels not built or pooled: {_cpu.reason()}")
    monkeypatch.setattr(elementwise, "PIECE", piece)

    def make():
        if optimizer == "sgd":
            return SGD(lr=0.37, momentum=0.9, weight_decay=0.71, clip=30.0)
        return Adam(lr=0.37, clip=30.0, weight_decay=0.71)

    def run(steps=3):
        rng = np.random.default_rng(5)
        layers = [Linear(431, 397, dtype=dtype, rng=rng), BatchNorm1d(397, dtype=dtype)]
        g = Generator(layers, (431,))
        for _, p, _, _ in g.named_parameters():
            p[...] = 20 * rng.standard_normal(p.shape)
        opt = make()
        for step in range(steps):
            for _, p, grad, _ in g.named_parameters():
                grad[...] = rng.standard_normal(p.shape) * (10.0 if step != 1 else 50.0)
            with using(c=route == "c"):
                opt.step(g)
        return tuple(p.copy() for _, p, _, _ in g.named_parameters()) + tuple(
            b for kind in opt.state.values() for b in kind.values()
        )

    weight = np.zeros((431, 397), dtype)
    with using(threads=2, c=route == "c"):  # the route named is the one taken for the filter
        assert F.routes.choose("optimizer_update", make(), weight, weight, weight).name == route
        assert F.routes.choose("max_abs", weight).name == "threads"
    with using(threads=1):
        assert F.routes.choose("optimizer_update", make(), weight, weight, weight).name == "xp"
    results = _by_threads(run)
    assert not np.array_equal(results[0][0], run(steps=0)[0])  # the steps moved the filter
    _assert_all_equal(results)


def test_a_subclass_that_changes_sgd_s_arithmetic_does_not_take_the_compiled_update():
    class Nesterov(SGD):  # another rule: the compiled pass would ignore it
        def _update(self, p, g, state, lr):
            (v,) = state
            v *= self.momentum
            v += g
            p -= lr * (g + self.momentum * v)

    class Renamed(SGD):  # the same rule
        pass

    w = np.zeros((431, 397), np.float32)
    with using(threads=2):
        assert F.routes.choose("optimizer_update", Nesterov(), w, w, w).name == "threads"
        expected = "c" if _cpu.pooled(w.dtype) else "threads"
        assert F.routes.choose("optimizer_update", Renamed(), w, w, w).name == expected


def test_max_abs_on_threads_is_the_largest_magnitude_and_keeps_nan():
    rng = np.random.default_rng(6)
    x = rng.standard_normal(300_001).astype(np.float32)
    x[123_457] = -7.5  # the largest magnitude, negative, in the second range
    with using(threads=2):
        assert elementwise.max_abs(x) == np.float32(7.5)
        x[50_000] = np.inf  # and -inf: its magnitude
        assert elementwise.max_abs(-x) == np.inf
        x[250_000] = np.nan
        assert np.isnan(elementwise.max_abs(x))


@needs_c
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_c_relu_is_numpy_s_bit_for_bit_nan_signed_zeros_and_infinities_included(dtype):
    rng = np.random.default_rng(2)
    special = np.array([np.nan, -np.nan, 0.0, -0.0, np.inf, -np.inf, 1e-45, -1e-45], dtype)
    x = np.concatenate([special, rng.standard_normal(50_001).astype(dtype), special])
    dy = np.concatenate([special[::-1], rng.standard_normal(50_001).astype(dtype), special])
    with np.errstate(invalid="ignore"):  # inf * 0
        y_ref = np.maximum(x, 0)  # the reference's expressions (abp_np.functional)
        dx_ref = dy * (y_ref > 0)
    y_in = np.concatenate([special, special])  # the backward pass at special y as well
    dy_in = np.concatenate([special, special[::-1]])
    for t in (1, 2, 3):
        with using(threads=t):
            y = _cpu.relu_forward(x)
            dx = _cpu.relu_backward(dy, y_ref)
            out = np.empty_like(dy_in)
            dx_special = _cpu.relu_backward(dy_in, y_in, out=out)
        # the same bits: NaN payloads and the sign of zero included
        assert y.tobytes() == y_ref.tobytes()
        assert dx.tobytes() == dx_ref.tobytes()
        with np.errstate(invalid="ignore"):
            dx_special_ref = dy_in * (y_in > 0)
        assert dx_special is out and out.tobytes() == dx_special_ref.tobytes()


@needs_c
def test_the_c_pool_takes_one_caller_at_a_time_and_the_others_run_their_loop_whole():
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((4, 9, 300)).astype(np.float32) for _ in range(4)]

    def stats(x):
        xc, mean, var = np.empty_like(x), np.empty(9, np.float32), np.empty(9, np.float32)
        _cpu.bn_stats(x, xc, mean, var)
        return xc, mean, var

    with using(threads=1):
        expected = [stats(x) for x in xs]
    results, errors = {}, []

    def caller(k):
        try:
            for _ in range(200):  # callers overlap: the pool is often busy
                results[k] = stats(xs[k])
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    # using() sets the process's switches, which every thread reads: entered once, here (four
    # callers each entering and leaving it would restore each other's settings out of order)
    with pytest.MonkeyPatch.context() as mp, using(threads=2):
        mp.setattr(threads, "MIN_WORK", 1)
        ts = [threading.Thread(target=caller, args=(k,)) for k in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(timeout=60)
    assert not errors and not any(t.is_alive() for t in ts)
    for k in range(4):
        _assert_all_equal([expected[k], results[k]])


def _pool_in_child(queue):
    x = np.arange(4 * 9 * 300, dtype=np.float32).reshape(4, 9, 300)
    xc, mean, var = np.empty_like(x), np.empty(9, np.float32), np.empty(9, np.float32)
    with using(threads=2):
        _cpu.bn_stats(x, xc, mean, var)
    queue.put(bool(np.array_equal(mean, x.mean(axis=(0, 2)))))


@needs_c
def test_the_c_pool_works_in_a_forked_child():
    """Threads do not follow a fork: the child's pool makes its own, and its locks are free."""
    import multiprocessing

    with using(threads=2), pytest.MonkeyPatch.context() as mp:
        mp.setattr(threads, "MIN_WORK", 1)
        x = np.ones((2, 4, 8), np.float32)
        _cpu.bn_stats(x, np.empty_like(x), np.empty(4, np.float32), np.empty(4, np.float32))
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    child = ctx.Process(target=_pool_in_child, args=(q,))
    child.start()
    child.join(timeout=60)
    alive = child.is_alive()
    if alive:
        child.kill()
    assert not alive, "the child hung in the pool"
    assert child.exitcode == 0 and q.get(timeout=5)


@pytest.mark.parametrize("pool", ["c", "python"])
@pytest.mark.parametrize("cin, cout", [(6, 3), (3, 16)])  # both backward layouts
def test_column_forms_give_the_same_bits_on_any_number_of_threads(cin, cout, pool, monkeypatch):
    monkeypatch.setattr(_cpu, "_C_POOL", pool == "c")  # col2im / im2col on C or Python threads
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, cin, 9, 9)).astype(np.float32)
    w = rng.standard_normal((cin, cout, 5, 5)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    dy = rng.standard_normal((5, cout, 18, 18)).astype(np.float32)
    monkeypatch.setattr(threads, "MIN_WORK", 1)

    def run():
        y = columns.conv_transpose2d_columns(x, w, b, (2, 2), (2, 2), (18, 18))
        return (y, *columns.conv_transpose2d_backward(dy, x, w, True, (2, 2), (2, 2)))

    _assert_all_equal(_by_threads(run))
    # blocks of one example (rows in blocks): the channel splits of col2im and im2col
    monkeypatch.setattr(columns, "BLOCK_BYTES", 1)
    monkeypatch.setattr(columns, "LEARNING_BLOCK_BYTES", 1)
    monkeypatch.setattr(columns, "MIN_COLUMNS", 1)
    _assert_all_equal(_by_threads(run))


# --- stacks of GEMMs, one BLAS thread each -------------------------------------------------------

needs_openblas_set = pytest.mark.skipif(
    threads.blas_threads() is None or threads._blas_function("set") is None,
    reason="NumPy's BLAS is not an OpenBLAS whose thread count can be set at run time",
)


#: The stack of GEMMs on Python threads, and on the C kernels' pool where it can take it.
STACKED_MATMULS = [
    pytest.param(threads.stacked_matmul, id="python-threads"),
    pytest.param(_cpu.stacked_matmul, id="c-pool"),
]


def _stack(a_shape, b_shape, dtype):
    rng = np.random.default_rng(6)
    a = rng.standard_normal(a_shape).astype(dtype)
    b = rng.standard_normal(b_shape).astype(dtype).transpose(0, 2, 1).copy().transpose(0, 2, 1)
    return a, b


@needs_openblas_set
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "a_shape, b_shape",
    [
        ((36, 64, 48), (36, 48, 40)),  # the Winograd route's stack of a^2 GEMMs
        ((75, 24), (7, 24, 100)),  # the column form's GEMM per example: one a, a stack of b
        ((1, 8, 8), (1, 8, 8)),  # a stack of one
    ],
)
@pytest.mark.parametrize("stacked_matmul", STACKED_MATMULS)
def test_a_stack_of_small_gemms_gives_numpy_s_bits_on_any_number_of_threads(
    dtype, a_shape, b_shape, stacked_matmul
):
    """GEMMs small enough that OpenBLAS runs each on one thread anyway (M N K < 2^18): the
    expected value is NumPy's own ``matmul``, and the check is bit for bit."""
    a, b = _stack(a_shape, b_shape, dtype)
    expected = np.matmul(a, b)
    for t in (1, 2, 3):
        with using(threads=t):
            assert np.array_equal(stacked_matmul(a, b), expected)
            out = np.full_like(expected, np.nan)
            assert stacked_matmul(a, b, out=out) is out
            assert np.array_equal(out, expected)


@needs_openblas_set
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("stacked_matmul", STACKED_MATMULS)
def test_a_stack_of_large_gemms_is_within_the_gemm_rounding_bound(dtype, stacked_matmul):
    """GEMMs that OpenBLAS would split over its threads: its one-thread kernel may round
    float32 differently in the last bits. The stated bound: each result is within
    gamma_K sum_k |a_ik| |b_kj| of the exact product (gamma_K = K u / (1 - K u), u the unit
    roundoff), so two of them differ by at most twice that. One thread is NumPy's matmul itself."""
    a, b = _stack((5, 300, 200), (5, 200, 300), dtype)
    expected = np.matmul(a, b)
    K, u = a.shape[-1], np.finfo(dtype).eps / 2
    bound = 2 * (K * u / (1 - K * u)) * (np.abs(a.astype(np.float64)) @ np.abs(b))
    with using(threads=1):
        assert np.array_equal(stacked_matmul(a, b), expected)
    for t in (2, 3):
        with using(threads=t):
            got = stacked_matmul(a, b)
        assert np.all(np.abs(got.astype(np.float64) - expected) <= bound)


@needs_openblas_set
def test_single_threaded_blas_is_one_thread_inside_and_restored_after_errors_and_nesting():
    before = threads.blas_threads()
    with threads.single_threaded_blas() as single:
        assert single and threads.blas_threads() == 1
        with threads.single_threaded_blas():
            assert threads.blas_threads() == 1
        assert threads.blas_threads() == 1  # the inner block left, the outer still in
    assert threads.blas_threads() == before
    with pytest.raises(RuntimeError, match="boom"):
        with threads.single_threaded_blas():
            raise RuntimeError("boom")
    assert threads.blas_threads() == before


@needs_openblas_set
def test_single_threaded_blas_from_overlapping_threads_restores_the_count_once():
    """Two callers whose blocks overlap: the count is the BLAS' own again after the last."""
    before = threads.blas_threads()
    inside, release = threading.Barrier(2), threading.Event()
    seen = []

    def caller():
        with threads.single_threaded_blas():
            inside.wait()
            seen.append(threads.blas_threads())
            release.wait()

    t = threading.Thread(target=caller)
    t.start()
    with threads.single_threaded_blas():
        inside.wait()
        seen.append(threads.blas_threads())
    assert threads.blas_threads() == 1  # the other caller is still inside
    release.set()
    t.join()
    assert seen == [1, 1]
    assert threads.blas_threads() == before


def test_a_stack_of_gemms_is_numpy_s_matmul_where_the_blas_cannot_be_set(monkeypatch):
    monkeypatch.setattr(threads, "_blas_set", False)
    a = np.arange(24, dtype=np.float64).reshape(2, 3, 4)
    b = np.arange(40, dtype=np.float64).reshape(2, 4, 5)
    with using(threads=2):
        with threads.single_threaded_blas() as single:
            assert single is False
        np.testing.assert_array_equal(threads.stacked_matmul(a, b), a @ b)


@needs_openblas_set
@pytest.mark.parametrize("split", ["examples", "positions"])
@pytest.mark.parametrize("need_param_grads", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_winograd_route_on_threads_is_within_the_gemm_rounding(dtype, need_param_grads, split):
    """Several threads cut the Winograd route's batch (the inferential backward pass and the
    forward pass; the learning pass's dW keeps one order of sums), or, where U is larger than
    a block's product M, each step's GEMMs by position; each example is computed by the same
    transforms, its GEMMs on other columns or threads. Expected values: the one-thread path.
    Bound: float32 within 1e-5 of each array's largest magnitude, float64 within 1e-13."""
    from abp_np.fast import winograd
    from abp_np.layers import ConvTranspose2d

    rng = np.random.default_rng(7)
    # U (a^2, 4 Cout, Cin) against one example's M (a^2, 4 Cout, tiles): 16 input channels
    # and 4 tiles an example split the examples; 64 channels and one tile, the positions
    cin, cout, hw = (16, 8, 8) if split == "examples" else (64, 16, 4)
    layer = ConvTranspose2d(cin, cout, 5, 2, 2, 1, dtype=dtype, rng=rng)
    x = rng.standard_normal((6, cin, hw, hw)).astype(dtype)
    dy = rng.standard_normal((6, cout, 2 * hw, 2 * hw)).astype(dtype)
    p = winograd.plan(x.shape, layer.params["weight"].shape, (2, 2), (2, 2), (2 * hw, 2 * hw))
    tiling = winograd._tiling(p, x.shape, cout, x.itemsize)
    assert tiling.block == 6 and tiling.by_positions == (split == "positions")
    out = []
    for t in (1, 2, 3):
        with using(threads=t, winograd="on"):
            y = layer.forward(x)
            assert type(layer._cache).__name__ == "WinogradCache"
            dx = layer.backward(dy, need_param_grads=need_param_grads)
            out.append((y, dx, *(layer.grads.values() if need_param_grads else ())))
    rel = 1e-5 if dtype == np.float32 else 1e-13
    for other in out[1:]:
        for a, b in zip(out[0], other):
            assert np.abs(a - b).max() <= rel * np.abs(a).max()


# --- GEMMs called from the C kernels' threads -------------------------------------------------

needs_c_gemm = pytest.mark.skipif(
    not _cpu.available() or threads.blas_gemm(np.float32) is None,
    reason="the C kernels or NumPy's OpenBLAS GEMM are not at hand",
)


@needs_c
@needs_openblas_set
@needs_c_gemm
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "layout", ["a b", "a^T b", "a b^T", "a^T b^T", "one a", "a of a wider array"]
)
def test_a_stack_of_gemms_on_the_c_pool_is_numpy_s_matmul_bit_for_bit(dtype, layout):
    """Each GEMM of the stack is the cblas call NumPy's matmul makes for it, now made from the
    pool's threads: the expected value is NumPy's matmul with OpenBLAS on one thread (as each
    range's GEMMs run), whatever the layout of the operands, and the check is bit for bit."""
    rng = np.random.default_rng(11)
    K, M, L, P = 9, 130, 70, 150  # M N K above 2^18: OpenBLAS' large-GEMM kernels
    a = rng.standard_normal((K, M, L)).astype(dtype)
    b = rng.standard_normal((K, L, P)).astype(dtype)
    if "a^T" in layout:
        a = a.transpose(0, 2, 1).copy().transpose(0, 2, 1)
    if "b^T" in layout:
        b = b.transpose(0, 2, 1).copy().transpose(0, 2, 1)
    if layout == "one a":
        a = a[3]
    if layout == "a of a wider array":
        a = rng.standard_normal((K, M, L + 5)).astype(dtype)[:, :, 2 : L + 2]
    with threads.single_threaded_blas():
        expected = np.matmul(a, b)
    out = np.empty_like(expected)
    assert _cpu.gemm_stack_call(a, b, out) is not None  # the C pool takes it
    for t in (2, 3):
        with using(threads=t):
            out[...] = np.nan
            assert _cpu.stacked_matmul(a, b, out=out) is out
            assert np.array_equal(out, expected)


@needs_c
@needs_c_gemm
def test_the_c_pool_leaves_to_numpy_the_stacks_numpy_computes_otherwise():
    """gemv where M or P is 1, syrk where a and b are one array, and mixed dtypes: those stacks
    go to numpy.matmul on Python threads, whose bits they then are."""
    f = np.ones((4, 5, 5), dtype=np.float32)
    assert _cpu.gemm_stack_call(f, f, np.empty((4, 5, 5), np.float32)) is None  # same memory
    row, col = np.ones((4, 1, 5), np.float32), np.ones((4, 5, 1), np.float32)
    assert _cpu.gemm_stack_call(row, f.copy(), np.empty((4, 1, 5), np.float32)) is None
    assert _cpu.gemm_stack_call(f.copy(), col, np.empty((4, 5, 1), np.float32)) is None
    d = np.ones((4, 5, 5), dtype=np.float64)
    assert _cpu.gemm_stack_call(f.copy(), d, np.empty((4, 5, 5), np.float64)) is None
    strided = np.ones((4, 5, 10), np.float32)[:, :, ::2]  # neither rows nor columns contiguous
    assert _cpu.gemm_stack_call(strided, f.copy(), np.empty((4, 5, 5), np.float32)) is None
    assert _cpu.gemm_stack_call(f.copy(), f.copy(), np.empty((4, 5, 5), np.float32)) is not None


@needs_c_gemm
def test_the_blas_gemm_is_found_for_float32_and_float64_only():
    for dtype in (np.float32, np.float64):
        address, wide = threads.blas_gemm(dtype)
        assert isinstance(address, int) and address != 0 and isinstance(wide, bool)
    assert threads.blas_gemm(np.float32) != threads.blas_gemm(np.float64)
    assert threads.blas_gemm(np.int32) is None


@needs_c
@needs_openblas_set
@needs_c_gemm
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bias", [False, True])
def test_the_winograd_ranges_in_one_c_call_are_the_python_ranges_bit_for_bit(
    dtype, bias, monkeypatch
):
    """Ranges of examples through the three steps of the Winograd route: in one C call on the
    pool (:func:`abp_np.fast.cpu.winograd_examples`) against the same ranges on Python threads,
    step by step (the C transforms, NumPy's matmul), at 2 and 3 threads, forward and the
    inferential backward pass. The same calls on the same data: bit for bit."""
    from abp_np.layers import ConvTranspose2d

    rng = np.random.default_rng(5)
    layer = ConvTranspose2d(16, 8, 5, 2, 2, 1, bias=bias, dtype=dtype, rng=rng)
    x = rng.standard_normal((7, 16, 8, 8)).astype(dtype)
    dy = rng.standard_normal((7, 8, 16, 16)).astype(dtype)
    calls = []
    in_c = _cpu.winograd_examples
    monkeypatch.setattr(_cpu, "winograd_examples", lambda *a, **k: calls.append(1) or in_c(*a, **k))
    ready = _cpu.gemms_pooled
    for t in (2, 3):
        out = {}
        for arm in ("c", "python"):
            monkeypatch.setattr(_cpu, "gemms_pooled", ready if arm == "c" else lambda d: False)
            with using(threads=t, winograd="on"):
                y = layer.forward(x)
                assert type(layer._cache).__name__ == "WinogradCache"
                out[arm] = (y, layer.backward(dy, need_param_grads=False))
        assert np.array_equal(out["c"][0], out["python"][0])
        assert np.array_equal(out["c"][1], out["python"][1])
    assert len(calls) == 4  # forward and backward, at 2 and 3 threads: the C call was made


@needs_c
@needs_c_gemm
def test_the_winograd_ranges_in_c_refuse_arrays_that_do_not_fit():
    x = np.zeros((2, 4, 8, 8), np.float32)
    U = np.zeros((36, 8, 4), np.float32)  # 4 Cout = 8: Cout 2
    y = np.zeros((2, 2, 16, 16), np.float32)
    V, M = np.zeros((36, 4, 8), np.float32), np.zeros((36, 8, 8), np.float32)
    with threads.single_threaded_blas():
        _cpu.winograd_examples(x, U, y, V, M, -1, -1, 4, (2, 2), 2)  # fits
        with pytest.raises(ValueError, match="do not fit"):
            _cpu.winograd_examples(x, U, y, V[:, :, :4].copy(), M, -1, -1, 4, (2, 2), 2)
        with pytest.raises(ValueError, match="C-contiguous"):
            _cpu.winograd_examples(x, U, y[:, :, ::2], V, M, -1, -1, 4, (2, 2), 2)


# --- the same numbers, whole networks and a whole ABP iteration -----------------------------------


@pytest.mark.parametrize("winograd", ["on", "off"])
@pytest.mark.parametrize("net", ["object", "texture", "sound"])
def test_an_abp_iteration_on_any_number_of_threads(net, winograd):
    """Winograd off, and the sound network (the 1-D route, whose GEMMs are not split): the
    same bits on 1, 2 and 3 threads. The 2-D route on: within the bound below."""

    def run():
        z, f, params, stats = tiny_abp_iteration(net)
        return (z, f, *params), stats

    results = []
    for t in (1, 2, 3):
        with using(threads=t, winograd=winograd):
            results.append(run())
    if winograd == "off" or net == "sound":
        _assert_all_equal([r[0] for r in results])
        assert results[0][1] == results[1][1] == results[2][1]
        return
    # The Winograd route runs the examples of a batch on several threads, each thread's GEMMs
    # on its part of the columns, and OpenBLAS picks its kernels by a GEMM's size: the last bits
    # may differ. The stated bound, after a whole iteration (3 Langevin steps and a learning
    # step): every array within 1e-4 of its largest magnitude, plus 1e-6 (the biases of layers
    # before a batch norm have a true gradient of 0 and hold rounding noise only). Measured on
    # a 2-core machine: at most 6e-6 of the largest magnitude.
    for other in results[1:]:
        for a, b in zip(results[0][0], other[0]):
            assert np.abs(a - b).max() <= 1e-4 * np.abs(a).max() + 1e-6
