"""What a run promises, kept: no silent wrong result, a divergence that names its stage and
setting and leaves a good checkpoint, Ctrl-C that always saves, kills that never corrupt, no
litter, and errors that name the option or the file.

Each table row is a case that once went wrong: bad data or options that trained on nonsense or
failed deep inside, runs that blew up without a word or with the wrong culprit, checkpoints that
held the damage. The loops at the end kill and interrupt real processes at random moments (a
few of each, so that the module stays within CI's time).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from abp_np.abp import ABP, DivergenceError
from abp_np.generator import Generator
from abp_np.layers import BatchNorm1d, LeakyReLU, Linear, ReLU, Tanh
from abp_np.optim import SGD, Adam
from abp_np.tools.cli import main

from conftest import subprocess_env

PIL = pytest.importorskip("PIL.Image")
wavfile = pytest.importorskip("scipy.io.wavfile")

REPO = Path(__file__).resolve().parent.parent
#: A tiny image run: 8 x 8 images, the narrowest network, d = 2, one Langevin step.
IMG = ["--size", "8", "--width", "0.0625", "--latent-dim", "2", "--langevin-steps", "1"]


# --- data and runs made once ------------------------------------------------------------------------


def _wav(path, samples, rate=11025):
    wavfile.write(path, rate, np.asarray(samples, dtype=np.int16))
    return str(path)


def _images(folder, n, seed, side=8):
    folder.mkdir()
    rng = np.random.default_rng(seed)
    for i in range(n):
        pixels = rng.uniform(0, 255, (side, side, 3)).astype(np.uint8)
        PIL.fromarray(pixels).save(folder / f"{i}.png")
    return str(folder)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    t = np.arange(4000) / 11025
    tone = (0.5 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)
    f = {
        "imgs": _images(d / "imgs", 4, seed=0),
        "imgs2": _images(d / "imgs2", 4, seed=1),
        "sound": _wav(d / "tone.wav", tone),
        "silent": _wav(d / "silent.wav", np.zeros(4000)),
        "antiphase": _wav(d / "antiphase.wav", np.stack([tone, -tone], axis=1)),
        "one_sample": _wav(d / "one.wav", [16000]),
        "empty": _wav(d / "empty.wav", np.zeros(0)),
    }
    ghz = bytearray(Path(f["sound"]).read_bytes())  # a header that claims 2 GHz
    ghz[24:28], ghz[28:32] = struct.pack("<I", 2_000_000_000), struct.pack("<I", 4_000_000_000)
    (d / "ghz.wav").write_bytes(bytes(ghz))
    f["ghz"] = str(d / "ghz.wav")
    frame = PIL.fromarray(np.random.default_rng(2).uniform(0, 255, (8, 8, 3)).astype(np.uint8))
    frame.save(d / "one_frame.gif")
    f["gif"] = str(d / "one_frame.gif")
    texture = np.random.default_rng(3).uniform(0, 255, (32, 32, 3)).astype(np.uint8)
    PIL.fromarray(texture).save(d / "texture.png")
    f["texture"] = str(d / "texture.png")
    return f


@pytest.fixture(scope="module")
def texture_run(files, tmp_path_factory):
    """A trained texture run (latent 1 x 1), for synthesize and for damaged model.json files."""
    out = tmp_path_factory.mktemp("runs") / "tex"
    args = ["train", files["texture"], "--out", str(out), "--size", "32", "--width", "0.0625"]
    assert main([*args, "--langevin-steps", "1", "--iterations", "1"]) == 0
    return out


def _error(capsys):
    """The one line of the last command's error."""
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines, "no error printed"
    assert lines[-1].startswith("abp: error:"), lines[-1]
    return lines[-1]


def _log(folder):
    return [json.loads(line) for line in (Path(folder) / "log.jsonl").read_text().splitlines()]


def _checkpoint(folder):
    import abp_np.io.checkpoint as ckpt

    return ckpt.read_checkpoint(Path(folder) / "checkpoint.npz")


# --- bad data and options: one clear line, naming the option or the file, nothing trained -----------

TRAIN_ERRORS = {
    "silent sound": (["{silent}", "--iterations", "1", "--width", "0.0625"], "silent"),
    "stereo in opposite phase": (
        ["{antiphase}", "--iterations", "1", "--width", "0.0625"],
        "cancel",
    ),
    "one sample": (["{one_sample}", "--iterations", "1", "--width", "0.0625"], "mostly silence"),
    "empty sound": (["{empty}", "--iterations", "1", "--width", "0.0625"], "no samples"),
    "2 GHz header": (["{ghz}", "--iterations", "1", "--width", "0.0625"], "header is damaged"),
    "one GIF frame": (["{gif}", *IMG, "--iterations", "1"], "at least 2 frames"),
    "--iterations 0": (["{imgs}", *IMG, "--iterations", "0"], "--iterations must be"),
    "--width 0": (["{imgs}", *IMG, "--iterations", "1", "--width", "0"], "--width must be"),
    "--width -1": (["{imgs}", *IMG, "--iterations", "1", "--width", "-1"], "--width must be"),
    "--width nan": (["{imgs}", *IMG, "--iterations", "1", "--width", "nan"], "--width must be"),
    "--size -64": (["{imgs}", *IMG, "--iterations", "1", "--size", "-64"], "--size must be"),
    "--latent-dim 0": (["{imgs}", *IMG, "--iterations", "1", "--latent-dim", "0"], "--latent-dim"),
    "--seed -1": (["{imgs}", *IMG, "--iterations", "1", "--seed", "-1"], "--seed must be"),
    "--lr nan": (["{imgs}", *IMG, "--iterations", "1", "--lr", "nan"], "--lr must be"),
    "--sigma 0": (["{imgs}", *IMG, "--iterations", "1", "--sigma", "0"], "--sigma must be"),
    "--occlusion on a sound": (
        ["{sound}", "--iterations", "1", "--width", "0.0625", "--occlusion", "P.5"],
        "--occlusion",
    ),
}


@pytest.mark.parametrize("case", sorted(TRAIN_ERRORS))
def test_bad_training_input_is_one_clear_line(files, tmp_path, capsys, case):
    argv, words = TRAIN_ERRORS[case]
    out = tmp_path / "run"
    argv = [a.format(**files) for a in argv]
    assert main(["train", *argv, "--out", str(out)]) == 2
    assert words in _error(capsys)
    assert not (out / "checkpoint.npz").exists()


@pytest.mark.parametrize(
    "scale, words",
    [
        ("-2", "--scale must be"),
        ("nan", "--scale must be"),
        ("0", "--scale must be"),
        ("0.3", "--scale 0.3 shrinks"),
        ("1e9", "--scale 1e+09 asks for"),
    ],
)
def test_bad_scale_is_one_clear_line(texture_run, tmp_path, capsys, scale, words):
    assert main(["synthesize", str(texture_run), "--n", "1", "--scale", scale]) == 2
    assert words in _error(capsys)


@pytest.mark.parametrize(
    "damage, words",
    [
        (lambda meta: "{ not json", "unreadable"),
        (lambda meta: json.dumps({k: v for k, v in meta.items() if k != "spec"}), "'spec'"),
        (lambda meta: json.dumps({**meta, "spec": {**meta["spec"], "bogus": 1}}), "'spec'"),
        (lambda meta: json.dumps({**meta, "spec": {"builder": "blob"}}), "'spec'"),
        (lambda meta: json.dumps({**meta, "config": {}}), "'config'"),
    ],
)
def test_a_damaged_model_json_is_named(texture_run, tmp_path, capsys, damage, words):
    run = tmp_path / "run"
    shutil.copytree(texture_run, run)
    meta = json.loads((run / "model.json").read_text())
    (run / "model.json").write_text(damage(meta))
    assert main(["synthesize", str(run), "--n", "1", "--out", str(tmp_path)]) == 2
    line = _error(capsys)
    assert str(run / "model.json") in line and words in line


def test_load_audio_and_sample_name_their_bad_arguments(files):
    from abp_np.io.data import load_audio

    with pytest.raises(ValueError, match="rate .* >= 1, got 0"):
        load_audio(files["sound"], rate=0)
    with pytest.raises(ValueError, match="length .* >= 1, got -5"):
        load_audio(files["sound"], length=-5)
    with pytest.raises(ValueError, match="offset"):
        load_audio(files["sound"], offset=10**6)
    rng = np.random.default_rng(0)
    g = Generator([Linear(8, 12, rng=rng), Tanh()], (8,))
    with pytest.raises(ValueError, match=r"latent_shape \(3,\) does not fit .* \(8,\)"):
        ABP(g, seed=0).sample(2, latent_shape=(3,))
    with pytest.raises(ValueError, match="latent_shape must be"):
        ABP(g, seed=0).sample(2, latent_shape=(-1,))


# --- resuming: the run's own data and network; --lr, --step-size, --sigma applied -------------------


@pytest.fixture
def image_run(files, tmp_path):
    out = tmp_path / "run"
    argv = ["train", files["imgs"], "--out", str(out), *IMG, "--iterations", "2", "--seed", "3"]
    assert main([*argv, "--lr", "1e-3"]) == 0
    return out


def test_resume_applies_lr_step_size_and_sigma_and_records_them(files, image_run, capsys):
    capsys.readouterr()
    # nothing but the changes: the size, width, d, seed and steps are the run's
    argv = ["train", files["imgs"], "--out", str(image_run), "--resume", "--iterations", "3"]
    assert main([*argv, "--lr", "5e-4", "--step-size", "0.2", "--sigma", "0.4"]) == 0
    err = capsys.readouterr().err
    assert "--lr 0.0005 (was 0.001)" in err and "--step-size 0.2 (was 0.3)" in err
    log = _log(image_run)
    assert [r["iteration"] for r in log] == [1, 2, 3]
    assert [r["lr"] for r in log] == [1e-3, 1e-3, 5e-4]
    assert log[-1]["step_size"] == 0.2 and log[-1]["sigma"] == 0.4
    arrays = _checkpoint(image_run)
    settings = json.loads(str(arrays["settings"]))
    optim = json.loads(str(arrays["optim/config"]))
    assert settings["step_size"] == 0.2 and settings["sigma"] == 0.4
    assert optim["lr"] == optim["initial_lr"] == 5e-4
    config = json.loads((image_run / "model.json").read_text())["config"]
    assert (config["lr"], config["step_size"], config["sigma"]) == (5e-4, 0.2, 0.4)


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--seed", "7"], "--seed 7 differs from the run's --seed 3"),
        (["--size", "16"], "--size 16 differs"),
        (["--latent-dim", "3"], "--latent-dim 3 differs"),
        (["--width", "0.125"], "--width 0.125 differs"),
        (["--optimizer", "sgd"], "--optimizer sgd differs"),
        (["--occlusion", "M20"], "--occlusion M20 differs"),
        (["DATA2"], "the data differ from the run's"),
        (["--iterations", "2"], "already completed 2 iterations"),
    ],
)
def test_resume_refuses_other_data_or_network(files, image_run, capsys, extra, words):
    before = (image_run / "checkpoint.npz").read_bytes(), (image_run / "log.jsonl").read_bytes()
    data = files["imgs2"] if extra == ["DATA2"] else files["imgs"]
    extra = [] if extra == ["DATA2"] else extra
    argv = ["train", data, "--out", str(image_run), "--resume"]
    if "--iterations" not in extra:
        extra = [*extra, "--iterations", "3"]
    capsys.readouterr()
    assert main([*argv, *extra]) == 2
    assert words in _error(capsys)
    after = (image_run / "checkpoint.npz").read_bytes(), (image_run / "log.jsonl").read_bytes()
    assert after == before


def test_resume_of_built_in_data_keeps_its_seed_and_its_quick_settings(tmp_path, capsys):
    out = tmp_path / "run"
    tiny = ["--width", "0.0625", "--latent-dim", "2", "--langevin-steps", "1"]
    argv = ["train", "builtin:shapes", "--out", str(out), *tiny]
    assert main([*argv, "--quick", "--iterations", "1"]) == 0
    capsys.readouterr()
    resume = ["train", "builtin:shapes", "--out", str(out), "--resume", "--iterations", "2"]
    assert main([*resume, "--seed", "7"]) == 2  # other generated data
    assert "--seed 7 differs" in _error(capsys)
    assert main(resume) == 0  # without --quick: the run's settings
    assert [r["iteration"] for r in _log(out)] == [1, 2]


# --- divergence: the stage and its setting, a good checkpoint, every array checked -----------------


def _object_net(seed=0, dtype=np.float32):
    """fc -> leaky ReLU -> fc -> tanh, the paper's object network in miniature (no batch norm)."""
    rng = np.random.default_rng(seed)
    return Generator(
        [
            Linear(2, 16, dtype=dtype, init_std=0.005, rng=rng),
            LeakyReLU(0.2, dtype=dtype),
            Linear(16, 12, dtype=dtype, init_std=0.005, rng=rng),
            Tanh(dtype=dtype),
        ],
        (2,),
    )


def _bn_net(seed=0):
    rng = np.random.default_rng(seed)
    return Generator(
        [
            Linear(2, 8, dtype=np.float64, init_std=0.1, rng=rng),
            BatchNorm1d(8, dtype=np.float64),
            ReLU(np.float64),
            Linear(8, 12, dtype=np.float64, init_std=0.1, rng=rng),
            Tanh(np.float64),
        ],
        (2,),
    )


def _images_like(n=8, dtype=np.float32):
    return np.tanh(np.random.default_rng(5).standard_normal((n, 12))).astype(dtype)


@pytest.mark.parametrize(
    "optimizer, step_size, stage, setting",
    [
        (SGD(lr=1e2), 0.3, "learning", "lr"),  # finite but 1e4 times larger: once unseen
        (Adam(lr=1e3), 0.3, "learning", "lr"),  # likewise
        (SGD(lr=1e6), 0.3, "learning", "lr"),  # once blamed on the step size
        (Adam(lr=1e30), 0.3, "learning", "lr"),  # likewise
        (SGD(lr=1e-4), 50.0, "inference", "step_size"),
    ],
    ids=["sgd-1e2", "adam-1e3", "sgd-1e6", "adam-1e30", "delta-50"],
)
def test_divergence_names_the_stage_and_its_setting_and_saves_the_last_good_state(
    tmp_path, optimizer, step_size, stage, setting
):
    path = tmp_path / "run.npz"
    Y = _images_like()
    abp = ABP(_object_net(), optimizer=optimizer, langevin_steps=5, seed=1)
    abp.step_size = 0.3
    lr = optimizer.initial_lr
    optimizer.lr = optimizer.initial_lr = 1e-3
    abp.fit(Y, iterations=2, batch_size=4, checkpoint_path=path, checkpoint_every=100)
    optimizer.lr = optimizer.initial_lr = lr
    abp.step_size = step_size
    good = abp.generator.state_dict(), abp.Z.copy()
    with pytest.raises(DivergenceError) as info:
        abp.fit(Y, iterations=6, batch_size=4, checkpoint_path=path, checkpoint_every=100)
    err = info.value
    assert (err.stage, err.setting, err.iteration) == (stage, setting, 3)
    assert f"{setting}=" in str(err) and str(path) in str(err)
    assert err.option == {"lr": "--lr", "step_size": "--step-size"}[setting]
    assert err.suggestion < err.value
    assert abp.iteration == 2  # rolled back, and saved there
    for k, v in good[0].items():
        np.testing.assert_array_equal(abp.generator.state_dict()[k], v)
    np.testing.assert_array_equal(abp.Z, good[1])
    fresh = ABP(_object_net(seed=9), optimizer=type(optimizer)(), seed=0).load(path)
    assert fresh.iteration == 2


def _state_keys():
    """Every array of a BN network's state under Adam: weights, buffers, optimiser state, Z."""
    abp = ABP(_bn_net(), optimizer=Adam(lr=1e-3), init_z="normal", seed=0)
    abp.fit(_images_like(dtype=np.float64), iterations=1)
    keys = [f"model/{k}" for k in abp.generator.state_dict()]
    keys += [f"optim/{k}" for k in abp.optimizer.state_dict() if "/" in k]
    return [*keys, "Z"]


@pytest.mark.parametrize("key", _state_keys())
def test_every_array_of_the_state_is_checked_and_restored(tmp_path, key):
    Y = _images_like(dtype=np.float64)

    def make():
        return ABP(_bn_net(), optimizer=Adam(lr=1e-3), init_z="normal", langevin_steps=2, seed=0)

    reference = make()  # its state after iteration 2 of 4 (a run's end recomputes batch
    kept = []  # norm's statistics)
    reference.fit(Y, 4, batch_size=4, callback=lambda m, r: kept.append(copy.deepcopy(m)))
    reference = kept[1]

    abp = make()
    step, calls = abp.optimizer.step, {"n": 0}

    def poisoning_step(generator):
        step(generator)
        calls["n"] += 1
        if calls["n"] == 5:  # the first batch of the third iteration
            if key == "Z":
                target = abp.Z
            elif key.startswith("model/"):
                layer, name = key[len("model/") :].split(".")
                layer = abp.generator.layers[int(layer)]
                target = {**layer.params, **layer.buffers}[name]
            else:
                kind, name = key[len("optim/") :].split("/", 1)
                target = abp.optimizer.state[kind][name]
            if key == "Z":  # every chain: the batch's own are written back after the step
                target[...] = np.inf
            else:
                target.reshape(-1)[-1] = np.inf

    abp.optimizer.step = poisoning_step
    path = tmp_path / "run.npz"
    with pytest.raises(DivergenceError) as info:
        abp.fit(Y, iterations=4, batch_size=4, checkpoint_path=path, checkpoint_every=100)
    assert info.value.iteration == 3
    assert info.value.stage == ("inference" if key == "Z" else "learning")
    # everything back as it was after iteration 2, exactly; and saved so
    saved = ABP(_bn_net(seed=4), optimizer=Adam(), seed=1).load(path)
    for model in (abp, saved):
        assert model.iteration == 2
        np.testing.assert_array_equal(model.Z, reference.Z)
        for k, v in reference.generator.state_dict().items():
            np.testing.assert_array_equal(model.generator.state_dict()[k], v)
        want, got = reference.optimizer.state_dict(), model.optimizer.state_dict()
        assert sorted(want) == sorted(got)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])
        assert model.rng.bit_generator.state == reference.rng.bit_generator.state


def test_resume_after_a_divergence_with_a_smaller_lr(files, image_run, capsys):
    """The advice a divergence prints is followable: --resume with the setting it names."""
    from abp_np.io.data import load_images
    from abp_np.tools.cli import load_run

    abp, _ = load_run(str(image_run), "cpu")
    abp.optimizer.initial_lr = 1e3  # what `--lr 1e3` would do
    Y = load_images(files["imgs"], size=8)[0]
    with pytest.raises(DivergenceError) as info:
        abp.fit(
            Y,
            iterations=5,
            checkpoint_path=image_run / "checkpoint.npz",
            log_path=image_run / "log.jsonl",
        )
    assert info.value.option == "--lr" and int(_checkpoint(image_run)["iteration"]) == 2
    capsys.readouterr()
    argv = ["train", files["imgs"], "--out", str(image_run), "--resume", "--iterations", "4"]
    assert main([*argv, "--lr", f"{info.value.suggestion:g}"]) == 0
    log = _log(image_run)
    assert [r["iteration"] for r in log] == [1, 2, 3, 4]
    assert log[-1]["lr"] == info.value.suggestion


# --- files: the log holds each iteration once, no litter, Ctrl-C inside a write -------------------


def test_a_resumed_run_logs_each_iteration_once(tmp_path):
    Y = _images_like()
    path, log = tmp_path / "run.npz", tmp_path / "log.jsonl"

    def make():
        return ABP(_object_net(), optimizer=Adam(lr=1e-3), langevin_steps=1, seed=0)

    first = make()
    first.fit(Y, iterations=3, checkpoint_path=path, checkpoint_every=2, log_path=log)
    # a run killed after logging iterations 4 and 5 (and half of 6), before its next checkpoint
    extra = [
        json.dumps({**json.loads(log.read_text().splitlines()[-1]), "iteration": k}) for k in (4, 5)
    ]
    with open(log, "a") as fh:
        fh.write("\n".join(extra) + '\n{"iteration": 6, "recon')
    resumed = make().load(path)
    resumed.fit(Y, iterations=6, checkpoint_path=path, log_path=log)
    assert [r["iteration"] for r in _log(tmp_path)] == [1, 2, 3, 4, 5, 6]


def test_temporary_files_of_dead_writers_are_removed_at_the_next_start(files, tmp_path):
    out = tmp_path / "run"
    argv = ["train", files["imgs"], "--out", str(out), *IMG, "--iterations", "1"]
    assert main(argv) == 0
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its process id is free now
    old = time.time() - 3600
    litter = [
        f".checkpoint.npz.{dead.pid}.abc123.tmp",  # a writer killed in mid-write
        ".checkpoint.npz.x1y2z3.tmp",  # the same, from an older abp_np
        ".model.json.tmp",  # model.json's fixed temporary name of old
        f".log.jsonl.{dead.pid}.q9.tmp",
    ]
    for name in litter:
        (out / name).write_bytes(b"x" * 1000)
        os.utime(out / name, (old, old))
    alive = out / f".checkpoint.npz.{os.getpid()}.mine.tmp"  # a live writer's: kept
    alive.write_bytes(b"x")
    argv = ["train", files["imgs"], "--out", str(out), "--resume", "--iterations", "2"]
    assert main(argv) == 0
    assert sorted(p.name for p in out.glob(".*")) == [alive.name]


CTRL_C_IN_A_WRITE = """
import os, signal, sys
import numpy as np
import abp_np.io.checkpoint as ckpt
from abp_np.tools.cli import main

write = ckpt._write

class Interrupting:  # Ctrl-C arrives while np.savez is inside zipfile, mid-member
    def __init__(self, f):
        self.f, self.n = f, 0
    def write(self, b):
        self.n += 1
        if self.n == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return self.f.write(b)
    def __getattr__(self, name):
        return getattr(self.f, name)

ckpt._write = lambda fh, arrays: write(Interrupting(fh), arrays)
sys.exit(main(sys.argv[1:]))
"""


def test_ctrl_c_inside_a_checkpoint_write_saves_and_exits_130(files, tmp_path):
    out = tmp_path / "run"
    argv = ["train", files["imgs"], "--out", str(out), *IMG, "--iterations", "5"]
    proc = subprocess.run(
        [sys.executable, "-c", CTRL_C_IN_A_WRITE, *argv, "--checkpoint-every", "1"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=subprocess_env(),
    )
    assert proc.returncode == 130, proc.stderr
    assert "Traceback" not in proc.stderr and "ZIP" not in proc.stderr
    assert "checkpoint saved at iteration 1" in proc.stderr
    assert int(_checkpoint(out)["iteration"]) == 1
    assert [r["iteration"] for r in _log(out)] == [1]
    assert not list(out.glob(".*.tmp"))


# --- real processes killed and interrupted at random moments -----------------------------------------

CHILD = """
import os, sys
import numpy as np
from abp_np.abp import ABP
from abp_np.generator import Generator
from abp_np.layers import BatchNorm1d, Linear, ReLU, Tanh
from abp_np.optim import Adam

path, log, target = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = np.random.default_rng(0)
layers = [Linear(2, 8, dtype=np.float64, init_std=0.1, rng=rng), BatchNorm1d(8, dtype=np.float64),
          ReLU(np.float64), Linear(8, 12, dtype=np.float64, init_std=0.1, rng=rng),
          Tanh(np.float64)]
abp = ABP(Generator(layers, (2,)), optimizer=Adam(lr=1e-3), init_z="normal", langevin_steps=2,
          seed=0)
if os.path.exists(path):
    abp.load(path)
Y = np.tanh(np.random.default_rng(5).standard_normal((8, 12)))
print("ready", abp.iteration, flush=True)
abp.fit(Y, iterations=target, batch_size=4, checkpoint_path=path, checkpoint_every=1,
        log_path=log)
print("done", abp.iteration, flush=True)
"""


def test_sigkill_at_random_moments_never_corrupts_and_leaves_no_litter(tmp_path):
    import abp_np.io.checkpoint as ckpt

    path, log = tmp_path / "run.npz", tmp_path / "log.jsonl"
    env = subprocess_env()
    rng = np.random.default_rng(18)
    done = 0

    def start(target):
        return subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path), str(log), str(target)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
            env=env,
        )

    for _ in range(5):
        proc = start(10**9)
        assert proc.stdout.readline().startswith("ready"), proc.stderr.read()
        time.sleep(rng.uniform(0.05, 0.6))
        proc.kill()
        proc.wait(timeout=60)
        proc.stdout.close()
        proc.stderr.close()
        if path.exists():  # the last checkpoint is whole, and never goes back
            k = int(ckpt.read_checkpoint(path)["iteration"])
            assert k >= done
            done = k
    proc = start(done + 3)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert stdout.splitlines()[-1] == f"done {done + 3}"
    assert int(ckpt.read_checkpoint(path)["iteration"]) == done + 3
    assert [r["iteration"] for r in _log(tmp_path)] == list(range(1, done + 4))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.jsonl", "run.npz"]


def test_ctrl_c_at_random_moments_saves_and_exits_130(files, tmp_path):
    out = tmp_path / "run"
    rng = np.random.default_rng(130)
    for attempt in range(3):
        argv = ["train", files["imgs"], "--out", str(out), *IMG, "--iterations", "100000"]
        argv += ["--checkpoint-every", "1"] + (["--resume"] if attempt else [])
        proc = subprocess.Popen(
            [sys.executable, "-m", "abp_np.tools.cli", *argv],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
            env=subprocess_env(),
        )
        seen = []
        for line in proc.stderr:  # until training runs
            seen.append(line)
            if line.startswith("iteration "):
                break
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGINT)
        rest = proc.stderr.read()
        proc.wait(timeout=120)
        proc.stderr.close()
        text = "".join(seen) + rest
        assert proc.returncode == 130, text
        assert "Traceback" not in text, text
        k = int(_checkpoint(out)["iteration"])
        assert f"checkpoint saved at iteration {k}" in text
        iterations = [r["iteration"] for r in _log(out)]
        assert iterations == list(range(1, k + 1))
    assert not list(out.glob(".*.tmp"))
