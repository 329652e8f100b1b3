"""`abp train` left to its defaults: the plan, the data kept as they are, --quick and --paper."""

from __future__ import annotations

import json

import numpy as np
import pytest
from abp_command import TINY, abp, grey_images, log_lines, ok

pytest.importorskip("PIL")


def _plan_before_first_iteration(err: str) -> list[str]:
    lines = err.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("iteration 1/"))
    return lines[:first]


def test_defaults_choose_from_data_and_timed_steps_and_print_the_plan(tmp_path):
    data = grey_images(tmp_path / "digits", 12, 10)
    args = ["--minutes", "0.00001", "--langevin-steps", "1"]
    r = ok(abp("train", data, "--out", tmp_path / "run", *args, cwd=tmp_path))
    plan = "\n".join(_plan_before_first_iteration(r.stderr))
    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    cfg = meta["config"]
    # 10 px is nearest to 8 of the sides 8, 16, 32 ... on a log scale (10/8 < 16/10)
    assert cfg["size"] == 8 and "resized from 10 x 10 to 8 x 8" in plan
    assert cfg["channels"] == 1 and "(grey)" in plan  # grey images stay one channel
    assert cfg["optimizer"] == "adam" and cfg["lr"] == 0.002 and "Adam lr 0.002" in plan
    # 12 images: d is a tenth of the count, at least 2
    assert cfg["latent_dim"] == 2 and "d = 2" in plan
    # a budget far too short for anything: the thinnest width and the fewest iterations
    assert cfg["width"] == 0.0625 and cfg["iterations"] == 40
    assert "40 iterations" in plan and "one learning step took" in plan and "about" in plan
    assert "take longer than --minutes 1e-05" in plan  # the budget could not be kept: said so
    assert cfg.get("limit") is None
    assert len(log_lines(tmp_path / "run" / "log.jsonl")) == 40
    # every iteration prints a progress line
    lines = r.stderr.splitlines()
    assert sum(line.startswith("iteration ") and "error" in line for line in lines) == 40


def test_images_that_fit_keep_their_size_and_changes_are_printed_once(tmp_path):
    data = grey_images(tmp_path / "imgs", 6, 32)
    r = ok(abp("train", data, "--out", tmp_path / "run", *TINY, cwd=tmp_path))
    assert "changed:" not in r.stderr  # nothing was done to the data
    assert "learned as 6 x 1 x 32 x 32 (grey)" in r.stderr
    r = ok(abp("train", data, "--out", tmp_path / "rgb", "--channels", "3", *TINY, cwd=tmp_path))
    assert r.stderr.count("grey copied to 3 channels") == 1
    assert json.loads((tmp_path / "rgb" / "model.json").read_text())["config"]["channels"] == 3


def test_quick_keeps_all_the_images(tmp_path):
    data = grey_images(tmp_path / "imgs", 40, 16)
    r = ok(abp("train", data, "--out", tmp_path / "run", "--quick", *TINY, cwd=tmp_path))
    assert "learned as 40 x 1 x 16 x 16" in r.stderr
    with np.load(tmp_path / "run" / "checkpoint.npz") as ckpt:
        assert ckpt["Z"].shape[0] == 40  # one persistent chain per image: all of them
    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    assert meta["config"].get("limit") is None
    r = ok(abp("train", data, "--out", tmp_path / "some", "--limit", "10", *TINY, cwd=tmp_path))
    assert r.stderr.count("the first 10 of 40 images are used (--limit 10)") == 1


def test_paper_takes_the_papers_settings(tmp_path):
    data = grey_images(tmp_path / "imgs", 4, 20)
    args = ["--paper", "--iterations", "1", "--langevin-steps", "1", "--width", "0.0625"]
    r = ok(abp("train", data, "--out", tmp_path / "run", *args, cwd=tmp_path))
    cfg = json.loads((tmp_path / "run" / "model.json").read_text())["config"]
    assert (cfg["size"], cfg["latent_dim"], cfg["optimizer"], cfg["lr"]) == (64, 100, "sgd", 1e-4)
    assert cfg["batch_size"] is None and cfg["step_size"] == 0.3
    assert "resized from 20 x 20 to 64 x 64" in r.stderr


def test_help_explains_every_option_with_its_default(tmp_path):
    commands = ["train", "synthesize", "reconstruct", "interpolate", "complete"]
    top = ok(abp("--help", cwd=tmp_path)).stdout
    assert all(c in top for c in commands)
    train = " ".join(ok(abp("train", "--help", cwd=tmp_path)).stdout.split())
    assert "--checkpoint-every N write checkpoint.npz every N iterations (default: 10)" in train
    assert "--quick" in train and "on all the data" in train and "--paper" in train
    from abp_np.tools.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name in commands:
        text = " ".join(sub.choices[name].format_help().split())
        for action in sub.choices[name]._actions:
            if action.dest == "help":
                continue
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
            if action.default not in (None, False) and action.option_strings:
                assert f"(default: {action.default})" in text, (name, action.dest)
        assert "--steps" not in text  # one meaning per name: --langevin-steps, --n, --frames
        assert ("--skip-bad" in text) == (name in ("train", "reconstruct", "complete"))
    complete = " ".join(sub.choices["complete"].format_help().split())
    assert "64-pixel" in complete and "15 x 15 at 32 px" in complete


def test_unreadable_image_names_the_option(tmp_path):
    data = grey_images(tmp_path / "imgs", 4, 16)
    (data / "broken.png").write_bytes(b"not a picture")
    r = abp("train", data, "--out", tmp_path / "run", *TINY, cwd=tmp_path)
    assert r.returncode == 2 and "--skip-bad" in r.stderr and "skip_bad=True" not in r.stderr
    r = ok(abp("train", data, "--out", tmp_path / "run", "--skip-bad", *TINY, cwd=tmp_path))
    assert r.stderr.count("broken.png") == 1
