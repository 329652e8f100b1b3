"""End-to-end runs of the ``abp`` command on tiny data, in a subprocess."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from abp_command import TINY, abp, last_json, log_lines, ok

from conftest import release_data

pytest.importorskip("PIL")
pytest.importorskip("scipy")


def test_train_builtin_texture_then_synthesize_larger(tmp_path):
    out = tmp_path / "tex"
    ok(abp("train", "builtin:texture", "--out", out, "--quick", *TINY, cwd=tmp_path))
    for name in ("model.json", "checkpoint.npz", "log.jsonl", "samples.png", "reconstruction.png"):
        assert (out / name).is_file(), name
    log = log_lines(out / "log.jsonl")
    assert [r["iteration"] for r in log] == [1, 2]
    assert all(np.isfinite(r["recon_error"]) for r in log)

    before = sorted(p.name for p in out.iterdir())
    ok(abp("synthesize", out, "--n", "1", "--scale", "2", cwd=tmp_path))
    assert sorted(p.name for p in out.iterdir()) == before  # the run folder is left alone
    from PIL import Image

    with Image.open(out / "samples.png") as a, Image.open(tmp_path / "tex_synthesized_x2.png") as b:
        trained, bigger = a.size, b.size
    assert bigger[0] > trained[0] and bigger[1] > trained[1]


def test_train_refuses_to_overwrite_and_resumes(tmp_path):
    out = tmp_path / "run"
    args = ["train", "builtin:shapes", "--out", out, "--quick", *TINY]
    ok(abp(*args, cwd=tmp_path))
    again = abp(*args, cwd=tmp_path)
    assert again.returncode == 2
    err = again.stderr.strip().splitlines()
    assert len(err) == 1 and "--resume" in err[0]
    args[args.index("--iterations") + 1] = "3"
    ok(abp(*args, "--resume", cwd=tmp_path))
    assert [r["iteration"] for r in log_lines(out / "log.jsonl")] == [1, 2, 3]


def test_sound_run_writes_wav(tmp_path):
    soundfile = pytest.importorskip("soundfile")
    out = tmp_path / "snd"
    ok(abp("train", "builtin:sound", "--out", out, "--quick", *TINY, cwd=tmp_path))
    clip, rate = soundfile.read(out / "samples_0.wav")
    # --quick generates a built-in sound of 20,000 samples at 11,025 Hz
    assert rate == 11025 and clip.shape == (20000,)


def test_bad_input_is_one_line(tmp_path):
    r = abp("train", tmp_path / "nope", "--out", tmp_path / "o", cwd=tmp_path)
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(err) == 1 and "no such file" in err[0]
    empty = tmp_path / "empty"
    empty.mkdir()
    r = abp("train", empty, "--out", tmp_path / "o2", cwd=tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o2").exists()  # nothing written for data that cannot be read
    r = abp("synthesize", tmp_path, cwd=tmp_path)
    assert r.returncode == 2 and "not a run folder" in r.stderr
    r = abp("train", "builtin:texture", "--out", tmp_path / "o3", "--cuda-graph", cwd=tmp_path)
    assert r.returncode == 2 and "--device gpu" in r.stderr
    assert not (tmp_path / "o3").exists()  # refused before anything was written


@pytest.mark.slow
def test_real_images_train_reconstruct_interpolate_complete(tmp_path):
    root = release_data()
    if root is None:
        pytest.skip("the paper's release data is not here")
    data = tmp_path / "lion_tiger"
    data.mkdir()
    for f in sorted((root / "Image" / "lion_tiger").iterdir())[:6]:
        shutil.copy(f, data / f.name)
    out = tmp_path / "run"
    ok(abp("train", data, "--out", out, "--size", "16", "--latent-dim", "2", *TINY, cwd=tmp_path))
    r = ok(abp("reconstruct", out, data, "--langevin-steps", "3", cwd=tmp_path))
    result = last_json(r)
    assert result["examples"] == 6 and 0 <= result["mean_abs_error"] <= 1
    ok(abp("interpolate", out, "--method", "slerp", "--n", "4", cwd=tmp_path))
    assert (tmp_path / "run_interpolate_slerp_0-1.png").is_file()
    r = ok(abp("complete", out, data, "--occlusion", "P.5", "--langevin-steps", "3", cwd=tmp_path))
    assert 0 <= last_json(r)["mean_abs_error_occluded"] <= 1
