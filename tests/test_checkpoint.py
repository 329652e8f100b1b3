"""Checkpoints: bitwise resume on the CPU, atomic writes, plain arrays, clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import abp_np.io.checkpoint as ckpt
from abp_np.abp import ABP
from abp_np.generator import Generator
from abp_np.layers import BatchNorm1d, Linear, ReLU, Tanh
from abp_np.optim import SGD, Adam

from conftest import subprocess_env

REPO = Path(__file__).resolve().parent.parent


def net(seed=0, hidden=8):
    rng = np.random.default_rng(seed)
    layers = [
        Linear(3, hidden, dtype=np.float64, init_std=0.5, rng=rng),
        BatchNorm1d(hidden, dtype=np.float64),
        ReLU(np.float64),
        Linear(hidden, 12, dtype=np.float64, init_std=0.5, rng=rng),
        Tanh(np.float64),
    ]
    return Generator(layers, (3,))


def data(n=8, seed=1):
    return np.random.default_rng(seed).uniform(-1, 1, (n, 12))


def make(opt="sgd", seed=0, **kw):
    optimizer = SGD(lr=1e-3) if opt == "sgd" else Adam(lr=1e-3)
    settings = dict(langevin_steps=3, init_z="normal", lr_decay=0.9, seed=5)
    settings.update(kw)
    return ABP(net(seed), optimizer=optimizer, **settings)


def assert_same_state(a, b):
    np.testing.assert_array_equal(a.Z, b.Z)
    assert a.iteration == b.iteration
    for (k, x), (k2, y) in zip(
        a.generator.state_dict().items(), b.generator.state_dict().items(), strict=True
    ):
        assert k == k2
        np.testing.assert_array_equal(x, y)
    sa, sb = a.optimizer.state_dict(), b.optimizer.state_dict()
    assert sorted(sa) == sorted(sb)
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k])
    assert a.rng.bit_generator.state == b.rng.bit_generator.state


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_resume_is_bitwise_identical(tmp_path, opt):
    Y = data()
    path = tmp_path / "run.npz"
    straight = make(opt)
    h_straight = straight.fit(Y, iterations=5, batch_size=3)

    first = make(opt)
    first.fit(Y, iterations=2, batch_size=3, checkpoint_path=path)
    resumed = make(opt, seed=42, sigma=1.0, langevin_steps=7)  # other weights and settings
    resumed.load(path)
    assert resumed.sigma == straight.sigma and resumed.langevin_steps == 3
    h_resumed = resumed.fit(Y, iterations=5, batch_size=3)

    assert_same_state(straight, resumed)
    for r1, r2 in zip(h_straight[2:], h_resumed, strict=True):
        for key in ("iteration", "recon_error", "data_energy", "prior_energy", "lr"):
            assert r1[key] == r2[key]


def test_periodic_checkpoints_and_plain_arrays(tmp_path):
    path = tmp_path / "run.npz"
    abp = make()
    abp.fit(data(), iterations=3, checkpoint_path=path, checkpoint_every=2)
    with np.load(path, allow_pickle=False) as f:  # no pickle needed anywhere
        arrays = {k: f[k] for k in f.files}
    assert all(a.dtype != object for a in arrays.values())
    assert int(arrays["iteration"]) == 3  # the last one is always written
    assert arrays["Z"].shape == (8, 3)
    assert "model/1.running_mean" in arrays and "optim/momentum/0.weight" in arrays
    assert not [p for p in os.listdir(tmp_path) if p != "run.npz"]  # no temporary file left


def test_restore_settings_false_keeps_own_settings(tmp_path):
    path = tmp_path / "run.npz"
    make().save(path)
    other = make(sigma=0.7, langevin_steps=9)
    ckpt.load_checkpoint(path, other, restore_settings=False)
    assert other.sigma == 0.7 and other.langevin_steps == 9


def test_a_writer_failing_mid_write_leaves_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "run.npz"
    abp = make()
    abp.fit(data(), iterations=1, checkpoint_path=path)
    good = path.read_bytes()

    def broken(fh, arrays):
        fh.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "_write", broken)
    abp.fit(data(), iterations=2)
    with pytest.raises(OSError, match="disk full"):
        abp.save(path)
    assert path.read_bytes() == good
    assert os.listdir(tmp_path) == ["run.npz"]  # the temporary file was removed
    monkeypatch.undo()
    assert ABP(net(), optimizer=SGD(), seed=0).load(path).iteration == 1


def test_a_writer_killed_mid_write_leaves_the_old_checkpoint(tmp_path):
    """A process that dies inside the write (no cleanup at all) must not harm the old file."""
    path = tmp_path / "run.npz"
    abp = make()
    abp.fit(data(), iterations=1, checkpoint_path=path)
    good = path.read_bytes()
    script = textwrap.dedent(f"""
        import os, sys
        import abp_np.io.checkpoint as ckpt
        from test_checkpoint import make, data

        def dying(fh, arrays):
            fh.write(b"PK\\x03\\x04 partial")
            fh.flush()
            os._exit(1)  # killed: no exception handling, no cleanup

        abp = make()
        abp.fit(data(), iterations=2)
        ckpt._write = dying
        abp.save({str(path)!r})
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        timeout=120,
        cwd=tmp_path,
        env=subprocess_env(REPO / "tests"),
    )
    assert proc.returncode == 1, proc.stderr.decode()
    assert path.read_bytes() == good
    strays = [p for p in tmp_path.iterdir() if p.name != "run.npz"]
    assert len(strays) == 1 and strays[0].name.startswith(".run.npz.")
    with pytest.raises(ValueError, match="not a readable"):
        ckpt.read_checkpoint(strays[0])
    assert ABP(net(), optimizer=SGD(), seed=0).load(path).iteration == 1


def test_corrupt_truncated_and_foreign_files_give_value_errors(tmp_path):
    path = tmp_path / "run.npz"
    make().save(path)
    raw = path.read_bytes()
    cases = {
        "truncated.npz": raw[: len(raw) // 2],
        "garbage.npz": b"this is not a checkpoint at all" * 10,
        "empty.npz": b"",
        "flipped.npz": raw[:200] + bytes(b ^ 0xFF for b in raw[200:400]) + raw[400:],
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match="not a readable|not an abp_np|lacks"):
            ABP(net(), seed=0).load(tmp_path / name)
    np.savez(tmp_path / "foreign.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="not an abp_np checkpoint"):
        ABP(net(), seed=0).load(tmp_path / "foreign.npz")
    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(ValueError, match="not a readable"):
        ABP(net(), seed=0).load(tmp_path / "single.npy")
    np.savez(
        tmp_path / "pickled.npz",
        **{"abp_np_checkpoint": np.array(1), "settings": np.array([{"a": 1}], dtype=object)},
    )
    with pytest.raises(ValueError, match="not a readable"):
        ABP(net(), seed=0).load(tmp_path / "pickled.npz")
    with pytest.raises(FileNotFoundError):
        ABP(net(), seed=0).load(tmp_path / "missing.npz")


def test_architecture_mismatch_names_the_first_key_and_changes_nothing(tmp_path):
    path = tmp_path / "run.npz"
    make().save(path)
    other = ABP(net(seed=3, hidden=9), seed=0)
    before = other.generator.state_dict()
    with pytest.raises(ValueError, match=r"'0.weight'.*\(8, 3\).*\(9, 3\)"):
        other.load(path)
    for k, v in other.generator.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    shallow = ABP(Generator([Linear(3, 12, dtype=np.float64)], (3,)), seed=0)
    with pytest.raises(ValueError, match="architecture mismatch"):
        shallow.load(path)
    with pytest.raises(ValueError, match="optimiser is SGD"):
        ABP(net(), optimizer=Adam(), seed=0).load(path)


def test_dtype_mismatch_is_reported(tmp_path):
    path = tmp_path / "run.npz"
    make().save(path)
    rng = np.random.default_rng(0)
    layers = [
        Linear(3, 8, dtype=np.float32, rng=rng),
        BatchNorm1d(8, dtype=np.float32),
        ReLU(np.float32),
        Linear(8, 12, dtype=np.float32, rng=rng),
        Tanh(np.float32),
    ]
    with pytest.raises(ValueError, match="dtype mismatch at '0.weight'"):
        ABP(Generator(layers, (3,)), seed=0).load(path)


# --- a checkpoint is checked whole before anything is changed ----------------------------------------


def _altered(tmp_path, change):
    """A checkpoint of a trained model with ``change(arrays)`` applied, written as plain arrays."""
    path = tmp_path / "good.npz"
    trained = make("adam")
    trained.fit(data(), iterations=2, batch_size=4, checkpoint_path=path)
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    change(arrays)
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    return bad


def _settings(**changes):
    def change(arrays):
        import json

        s = json.loads(str(arrays["settings"]))
        s.update(changes)
        arrays["settings"] = np.array(json.dumps(s))

    return change


def _optim_config(drop=None, **changes):
    def change(arrays):
        import json

        c = json.loads(str(arrays["optim/config"]))
        c.update(changes)
        if drop:
            del c[drop]
        arrays["optim/config"] = np.array(json.dumps(c))

    return change


def _set(key, value):
    def change(arrays):
        arrays[key] = value(arrays[key]) if callable(value) else value

    return change


def _poison(key):
    def change(arrays):
        a = arrays[key].copy()
        a.flat[0] = np.inf
        arrays[key] = a

    return change


BAD_CHECKPOINTS = {
    "sigma -1": (_settings(sigma=-1), r"sigma = -1.*> 0"),
    "sigma nan": (_settings(sigma=float("nan")), "sigma"),
    "langevin_steps -5": (_settings(langevin_steps=-5), r"langevin_steps = -5"),
    "langevin_steps 2.5": (_settings(langevin_steps=2.5), "langevin_steps"),
    "step_size -0.1": (_settings(step_size=-0.1), "step_size"),
    "chains": (_settings(chains="warm"), "chains"),
    "iteration -7": (_set("iteration", np.array(-7)), r"iteration.*>= 0"),
    "iteration 2.5": (_set("iteration", np.array(2.5)), "iteration"),
    "optimiser config without initial_lr": (_optim_config(drop="initial_lr"), "initial_lr"),
    "optimiser lr -1": (_optim_config(lr=-1.0), "lr"),
    "optimiser beta1 2": (_optim_config(beta1=2.0), "beta1"),
    "optimiser steps -3": (_set("optim/steps", np.array(-3)), "step count"),
    "optimiser state of the wrong shape": (
        _set("optim/m/0.weight", np.zeros((2, 2))),
        r"'optim/m/0.weight'.*\(2, 2\)",
    ),
    "optimiser state of no parameter": (_set("optim/v/9.weight", np.zeros(3)), "no parameter"),
    "weights with inf": (_poison("model/0.weight"), "'model/0.weight' holds NaN or inf"),
    "running_var with inf": (_poison("model/1.running_var"), "running_var"),
    "optimiser state with inf": (_poison("optim/v/3.weight"), "optim/v/3.weight"),
    "Z with inf": (_poison("Z"), "'Z' holds NaN or inf"),
}


@pytest.mark.parametrize("case", sorted(BAD_CHECKPOINTS))
def test_a_bad_checkpoint_is_refused_and_changes_nothing(tmp_path, case):
    change, message = BAD_CHECKPOINTS[case]
    bad = _altered(tmp_path, change)
    other = make("adam", seed=7)
    other.fit(data(), iterations=1, batch_size=4)
    before = (
        other.generator.state_dict(),
        other.optimizer.state_dict(),
        other.Z.copy(),
        other.iteration,
        other.settings(),
        other.rng.bit_generator.state,
    )
    with pytest.raises(ValueError, match=message) as info:
        other.load(bad)
    assert str(bad) in str(info.value)  # the message names the file
    for k, v in before[0].items():
        np.testing.assert_array_equal(other.generator.state_dict()[k], v)
    after = other.optimizer.state_dict()
    assert sorted(after) == sorted(before[1])
    for k, v in before[1].items():
        np.testing.assert_array_equal(after[k], v)
    np.testing.assert_array_equal(other.Z, before[2])
    assert other.iteration == before[3] and other.settings() == before[4]
    assert other.rng.bit_generator.state == before[5]
    other.fit(data(), iterations=2, batch_size=4)  # still usable


def test_optimizer_load_state_dict_with_a_bad_config_changes_nothing():
    opt = Adam(lr=1e-3)
    state = opt.state_dict()
    import json

    cfg = json.loads(str(state["config"]))
    del cfg["eps"]
    state["config"] = np.array(json.dumps(cfg))
    other = Adam(lr=5e-3, beta1=0.9)
    with pytest.raises(ValueError, match="lacks 'eps'"):
        other.load_state_dict(state)
    assert other.lr == 5e-3 and other.initial_lr == 5e-3 and other.beta1 == 0.9


def test_a_full_disk_names_the_file_and_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    import errno

    path = tmp_path / "run.npz"
    abp = make()
    abp.fit(data(), iterations=1, checkpoint_path=path)
    good = path.read_bytes()

    def full(fh, arrays):
        fh.write(b"PK\x03\x04 part")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ckpt, "_write", full)
    abp.fit(data(), iterations=2)
    with pytest.raises(OSError) as info:
        abp.save(path)
    assert info.value.errno == errno.ENOSPC
    text = str(info.value)
    assert str(path) in text and "No space left" in text and "left as it was" in text
    assert path.read_bytes() == good
    assert os.listdir(tmp_path) == ["run.npz"]
