"""Running out of GPU memory: a clear error that names the batch size to try, nothing lost.

No GPU is needed: CuPy's errors are recognised by their class name and module, so an exception
class made here with CuPy's names stands in for the real one, raised from inside the generator
at a chosen call.
"""

from __future__ import annotations

import numpy as np
import pytest

from abp_np import ABP
from abp_np.backend import DeviceOutOfMemoryError, is_device_out_of_memory
from abp_np.generator import Generator
from abp_np.layers import Linear, Tanh
from abp_np.tools.cli import main


def _cupy_error(module: str, name: str) -> type[Exception]:
    """An exception class that looks like CuPy's ``module.name``."""
    return type(name, (Exception,), {"__module__": module})


OutOfMemoryError = _cupy_error("cupy.cuda.memory", "OutOfMemoryError")
CUDARuntimeError = _cupy_error("cupy_backends.cuda.api.runtime", "CUDARuntimeError")


def test_recognises_cupys_out_of_memory_errors_and_nothing_else():
    assert is_device_out_of_memory(OutOfMemoryError("Out of memory allocating 1,024 bytes"))
    assert is_device_out_of_memory(CUDARuntimeError("cudaErrorMemoryAllocation: out of memory"))
    assert not is_device_out_of_memory(CUDARuntimeError("cudaErrorIllegalAddress"))
    assert not is_device_out_of_memory(MemoryError("host memory"))  # NumPy's: not the GPU's
    assert not is_device_out_of_memory(ValueError("out of memory"))  # not from CuPy


def _model(seed=0):
    rng = np.random.default_rng(seed)
    g = Generator([Linear(2, 6, dtype=np.float64, rng=rng), Tanh(np.float64)], (2,))
    return ABP(g, sigma=0.3, langevin_steps=2, step_size=0.1, seed=seed)


def _fail_on_call(monkeypatch, generator, k):
    """Make the k-th and later calls of generator.forward raise CuPy's out-of-memory error."""
    forward = generator.forward
    calls = {"n": 0}

    def failing(z):
        calls["n"] += 1
        if calls["n"] >= k:
            raise OutOfMemoryError("Out of memory allocating 123,456 bytes (allocated so far: 1)")
        return forward(z)

    monkeypatch.setattr(generator, "forward", failing)


def test_fit_rolls_back_saves_and_names_half_the_batch(tmp_path, monkeypatch):
    Y = np.random.default_rng(1).uniform(-0.5, 0.5, (8, 6))
    ckpt = tmp_path / "ckpt.npz"
    reference = _model()
    reference.fit(Y, iterations=1, batch_size=4)  # what one completed iteration leaves

    model = _model()
    # per iteration: 2 batches x (2 Langevin forwards + 1 learning forward) = 6 calls; fail in the
    # second iteration's second batch
    _fail_on_call(monkeypatch, model.generator, 6 + 4)
    with pytest.raises(DeviceOutOfMemoryError) as info:
        model.fit(Y, iterations=3, batch_size=4, checkpoint_path=ckpt)
    message = str(info.value)
    assert "ABP.fit" in message and "4 examples" in message and "batch_size=2" in message
    assert "--batch-size 2" in message
    assert model.iteration == 1  # back to the end of the last completed iteration
    np.testing.assert_array_equal(model.Z, reference.Z)
    for (_, w, _, _), (_, w_ref, _, _) in zip(
        model.generator.named_parameters(), reference.generator.named_parameters()
    ):
        np.testing.assert_array_equal(w, w_ref)
    saved = _model(seed=5).load(ckpt)
    assert saved.iteration == 1
    np.testing.assert_array_equal(saved.Z, reference.Z)


def test_one_example_at_a_time_says_so(monkeypatch):
    model = _model()
    _fail_on_call(monkeypatch, model.generator, 1)
    with pytest.raises(DeviceOutOfMemoryError, match="one example at a time does not fit"):
        model.fit(np.zeros((1, 6)), iterations=1)


def test_infer_names_fewer_examples(monkeypatch):
    model = _model()
    _fail_on_call(monkeypatch, model.generator, 1)
    with pytest.raises(DeviceOutOfMemoryError, match="infer on 3 examples at a time"):
        model.infer(np.zeros((6, 6)))


def test_other_errors_pass_through_unchanged(monkeypatch):
    model = _model()

    def broken(z):
        raise CUDARuntimeError("cudaErrorIllegalAddress: an illegal memory access")

    monkeypatch.setattr(model.generator, "forward", broken)
    with pytest.raises(CUDARuntimeError):
        model.fit(np.zeros((2, 6)), iterations=1)


def test_cli_prints_one_line(tmp_path, monkeypatch, capsys):
    real_fit = ABP.fit

    def fit_out_of_memory(self, *args, **kwargs):
        _fail_on_call(monkeypatch, self.generator, 1)
        return real_fit(self, *args, **kwargs)

    monkeypatch.setattr(ABP, "fit", fit_out_of_memory)
    out = tmp_path / "run"
    code = main(
        ["train", "builtin:shapes", "--out", str(out), "--quick", "--iterations", "1"]
        + ["--langevin-steps", "1", "--width", "0.0625", "--batch-size", "8"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("abp: error: ABP.fit: the GPU ran out of memory")
    assert "--batch-size 4" in err[-1]
