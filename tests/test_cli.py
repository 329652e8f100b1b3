"""End-to-end runs of the ``abp`` command on tiny data."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from abp_np.tools.cli import main

from conftest import release_data

pytest.importorskip("PIL")
pytest.importorskip("scipy")

TINY = ["--quick", "--iterations", "2", "--langevin-steps", "2", "--width", "0.0625"]


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_train_builtin_texture_then_synthesize_larger(tmp_path, capsys):
    out = tmp_path / "tex"
    assert main(["train", "builtin:texture", "--out", str(out), *TINY]) == 0
    for name in ("model.json", "checkpoint.npz", "log.jsonl", "samples.png", "reconstruction.png"):
        assert (out / name).is_file(), name
    log = _lines(out / "log.jsonl")
    assert [r["iteration"] for r in log] == [1, 2]
    assert all(np.isfinite(r["recon_error"]) for r in log)

    assert main(["synthesize", str(out), "--n", "1", "--scale", "2"]) == 0
    from PIL import Image

    with Image.open(out / "samples.png") as a, Image.open(out / "synthesized.png") as b:
        trained, bigger = a.size, b.size
    assert bigger[0] > trained[0] and bigger[1] > trained[1]


def test_train_refuses_to_overwrite_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "builtin:shapes", "--out", str(out), *TINY]) == 0
    capsys.readouterr()
    assert main(["train", "builtin:shapes", "--out", str(out), *TINY]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--resume" in err[0]
    args = ["train", "builtin:shapes", "--out", str(out), *TINY]
    args[args.index("--iterations") + 1] = "3"
    assert main([*args, "--resume"]) == 0
    assert [r["iteration"] for r in _lines(out / "log.jsonl")] == [1, 2, 3]


def test_sound_run_writes_wav(tmp_path):
    soundfile = pytest.importorskip("soundfile")
    out = tmp_path / "snd"
    assert main(["train", "builtin:sound", "--out", str(out), *TINY]) == 0

    clip, rate = soundfile.read(out / "samples_0.wav")
    assert rate == 11025 and clip.shape == (6000,)


def test_bad_input_is_one_line(tmp_path, capsys):
    assert main(["train", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such file" in err[0]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["train", str(empty), "--out", str(tmp_path / "o2")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert main(["synthesize", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err
    assert main(["train", "builtin:texture", "--out", str(tmp_path / "o3"), "--cuda-graph"]) == 2
    assert "--device gpu" in capsys.readouterr().err
    assert not (tmp_path / "o3").exists()  # refused before anything was written


@pytest.mark.slow
def test_real_images_train_reconstruct_interpolate_complete(tmp_path, capsys):
    root = release_data()
    if root is None:
        pytest.skip("the paper's release data is not here")
    data = tmp_path / "lion_tiger"
    data.mkdir()
    for f in sorted((root / "Image" / "lion_tiger").iterdir())[:6]:
        shutil.copy(f, data / f.name)
    out = tmp_path / "run"
    assert (
        main(["train", str(data), "--out", str(out), "--size", "16", "--latent-dim", "2", *TINY])
        == 0
    )
    capsys.readouterr()
    assert main(["reconstruct", str(out), str(data), "--steps", "3"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["images"] == 6 and 0 <= result["mean_abs_error"] <= 1
    assert main(["interpolate", str(out), "--method", "slerp", "--steps", "4"]) == 0
    assert (out / "interpolate_slerp.png").is_file()
    assert main(["complete", str(out), str(data), "--occlusion", "P.5", "--steps", "3"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0 <= result["mean_abs_error_occluded"] <= 1
